//! Benchmark: factory batches through the real `iotc provision` binary against the emulator
//! (in this process, HTTPS on loopback), with everything a line does per device: key +
//! certificate, journal commits (WAL, synchronous=FULL), DPS X.509 registration over a fresh
//! TLS connection with the device's chain, and the bundle folder.
//!
//! Run: `cargo bench --bench workflow_batch` (release), or `cargo test --bench workflow_batch`
//! (test profile: dependencies optimized, this crate not). Environment:
//! - `WF_BENCH=throughput|ratelimit|memory` (default all three);
//! - `WF_BENCH_N` devices for throughput (default 5000), `WF_BENCH_RL_N` for the rate-limited
//!   run (default 600), `WF_BENCH_MEM_N` comma-separated sizes for memory (default
//!   `1000,10000,100000`);
//! - `WF_BENCH_CONCURRENCY` (default 64).
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it runs a small smoke pass with
//! tiny defaults, so CI proves the benchmark works without spending minutes on it.
//!
//! Peak memory is the child's maximum resident set size from `/usr/bin/time -v`. The
//! emulator answers registrations at once (`dpsAssigningPolls` 0) in the throughput and
//! memory runs, so the figure measures the line, not an artificial wait.

use iotc::central::{Client, ClientOptions, Credential};
use iotc::emulator::{Emulator, EmulatorConfig, ReadyInfo};
use iotc::workflow::onboard::{self, CaSpec};
use std::path::Path;
use std::time::Instant;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Run {
    seconds: f64,
    max_rss_kb: u64,
    report: serde_json::Value,
}

fn main() {
    // `cargo bench` passes --bench; `cargo test` does not: then a smoke pass.
    let full = std::env::args().any(|a| a == "--bench");
    let which = std::env::var("WF_BENCH").unwrap_or_else(|_| "throughput,ratelimit,memory".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let concurrency: u32 = env_or("WF_BENCH_CONCURRENCY", 64);
    println!(
        "machine: {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    if which.contains("throughput") {
        let n: u64 = env_or("WF_BENCH_N", if full { 5000 } else { 40 });
        let r = batch(&rt, None, n, false, concurrency);
        println!(
            "throughput (rate limit off): {n} devices in {:.1}s = {:.0} devices/s, failed {}, peak RSS {:.1} MB",
            r.seconds,
            n as f64 / r.seconds,
            r.report["failed"],
            r.max_rss_kb as f64 / 1024.0
        );
    }
    if which.contains("ratelimit") {
        let n: u64 = env_or("WF_BENCH_RL_N", if full { 600 } else { 20 });
        let r = batch(&rt, Some(20), n, true, concurrency);
        let rate = n as f64 / r.seconds;
        println!(
            "rate limit 20 req/s (one IoT Central device creation per device): {n} devices in {:.1}s = {:.2} devices/s = {:.1}% of the limit, failed {}",
            r.seconds,
            rate,
            rate / 20.0 * 100.0,
            r.report["failed"]
        );
    }
    if which.contains("memory") {
        let sizes = std::env::var("WF_BENCH_MEM_N")
            .unwrap_or_else(|_| if full { "1000,10000,100000" } else { "100" }.into());
        for n in sizes
            .split(',')
            .filter_map(|s| s.trim().parse::<u64>().ok())
        {
            let r = batch(&rt, None, n, true, concurrency);
            println!(
                "memory: {n}-device manifest: peak RSS {:.1} MB ({:.1}s, {:.0} devices/s, failed {})",
                r.max_rss_kb as f64 / 1024.0,
                r.seconds,
                n as f64 / r.seconds,
                r.report["failed"]
            );
        }
    }
}

fn batch(
    rt: &tokio::runtime::Runtime,
    rate_limit: Option<u32>,
    n: u64,
    manifest: bool,
    concurrency: u32,
) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = EmulatorConfig::new(dir.path().join("emulator")).rate_limit(rate_limit);
    config.settings.dps_assigning_polls = 0;
    config.settings.dps_retry_after_seconds = 0;
    let emu = rt.block_on(Emulator::start(config)).expect("emulator");
    let info = emu.info().clone();
    setup_group(rt, &info, dir.path());
    let mut cmd = std::process::Command::new("/usr/bin/time");
    cmd.arg("-v").arg(env!("CARGO_BIN_EXE_iotc"));
    cmd.args([
        "provision",
        "--journal",
        "j.sqlite",
        "--out",
        "out",
        "--group",
        "bench",
    ])
    .args([
        "--ca",
        "pki/line",
        "--no-password",
        "--no-progress",
        "--concurrency",
        &concurrency.to_string(),
    ]);
    if manifest {
        let p = dir.path().join("m.csv");
        let mut s = String::with_capacity(n as usize * 40);
        s.push_str("deviceId,displayName\n");
        for i in 1..=n {
            s.push_str(&format!("b-{i:07},Bench device {i}\n"));
        }
        std::fs::write(&p, s).expect("manifest");
        cmd.args(["--manifest", "m.csv"]);
    } else {
        cmd.args(["--count", &n.to_string(), "--prefix", "b-"]);
    }
    cmd.current_dir(dir.path())
        .env("IOTC_APP_URL", &info.api_url)
        .env("IOTC_API_TOKEN", info.admin_token.expose())
        .env("IOTC_CA_FILE", &info.ca_cert)
        .env("IOTC_ID_SCOPE", &info.id_scope)
        .env("IOTC_DPS_ENDPOINT", &info.dps_endpoint)
        .env("HOME", dir.path())
        .env(
            "IOTC_RATE_LIMIT",
            rate_limit
                .map(|r| r.to_string())
                .unwrap_or_else(|| "0".into()),
        );
    let clock = Instant::now();
    let out = cmd.output().expect("iotc runs");
    let seconds = clock.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let max_rss_kb = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let report: serde_json::Value = std::fs::read(dir.path().join("out/report.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| panic!("no report; iotc said:\n{stderr}"));
    rt.block_on(emu.shutdown());
    Run {
        seconds,
        max_rss_kb,
        report,
    }
}

fn setup_group(rt: &tokio::runtime::Runtime, info: &ReadyInfo, dir: &Path) {
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
