//! What every benchmark of `benches/` shares: sizes from the environment, the smoke/full
//! switch, and temporary folders that a benchmark suite can keep until its end.

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
