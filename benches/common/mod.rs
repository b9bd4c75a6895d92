//! What every benchmark of `benches/` shares: sizes from the environment, the smoke/full
//! switch, temporary folders that a benchmark suite can keep until its end, and the x509
//! group the batch benchmarks provision into.
#![allow(dead_code)] // each benchmark uses what it needs

/// The value of environment variable `name`, or `default` when unset or unparsable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `cargo bench` passes `--bench`; `cargo test` does not, and then a bench runs a quick smoke
/// pass with tiny sizes.
pub fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// A temporary folder, kept after the run when `IOTC_BENCH_KEEP` is set: on ext4 without a
/// journal, deleting many files slows every file creation for the next minutes, which would
/// skew the next benchmark of a suite (scripts/bench-all.sh keeps everything, then cleans up).
pub fn bench_dir() -> tempfile::TempDir {
    let mut dir = tempfile::tempdir().expect("tempdir");
    dir.disable_cleanup(std::env::var_os("IOTC_BENCH_KEEP").is_some());
    dir
}

/// Makes the x509 enrollment group `bench` on the emulator: a root CA in `dir/pki/root`, the
/// intermediate `dir/pki/line` that signs the devices, uploaded and proved.
pub fn setup_group(
    rt: &tokio::runtime::Runtime,
    info: &iotc::emulator::ReadyInfo,
    dir: &std::path::Path,
) {
    use iotc::central::{Client, ClientOptions, Credential};
    use iotc::workflow::onboard::{self, CaSpec};
    let pem = std::fs::read(&info.ca_cert).expect("ca");
    let client = Client::new(
        &info.api_url,
        Credential::api_token(info.admin_token.expose()),
        Some(ClientOptions::default().with_ca_pem(pem)),
    )
    .expect("client");
    let mut steps = Vec::new();
    let cas = onboard::ensure_ca(
        &CaSpec {
            root: dir.join("pki/root"),
            intermediate: Some(dir.join("pki/line")),
            password: None,
            name: "bench".into(),
            root_key: None,
            intermediate_key: None,
        },
        &mut steps,
    )
    .expect("CA");
    rt.block_on(onboard::ensure_x509_group(
        &client,
        "bench",
        cas.signing(),
        false,
        &mut steps,
    ))
    .expect("group");
}
