fn main() {
    std::process::exit(iotc::cli::main());
}
