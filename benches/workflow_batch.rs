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
//! - `WF_BENCH_CONCURRENCY` (default `1,64`): a comma-separated list runs the throughput
//!   measurement once per level (`1,64`: sequential next to concurrent); the other runs use
//!   the last level;
//! - `WF_BENCH_SEQ_N` devices for a sequential (concurrency 1) line (default: N / 10).
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it runs a small smoke pass with
//! tiny defaults, so CI proves the benchmark works without spending minutes on it. Every run,
//! smoke or full, fails unless `iotc provision` exits 0, its report says every device
//! succeeded, and DPS's own count shows every device registered exactly once.
//!
//! Peak memory is the child's maximum resident set size from `/usr/bin/time -v`. The
//! emulator answers registrations at once (`dpsAssigningPolls` 0) in the throughput and
//! memory runs, so the figure measures the line, not an artificial wait.

mod common;

use common::{bench_dir, env_or, full_run};
use iotc::central::{Client, ClientOptions, Credential};
use iotc::emulator::{Emulator, EmulatorConfig, ReadyInfo};
use iotc::workflow::onboard::{self, CaSpec};
use std::path::Path;
use std::time::Instant;

struct Run {
    seconds: f64,
    max_rss_kb: u64,
    /// CPU seconds of the `iotc provision` process (user + system), from `time -v`.
    client_cpu: f64,
    /// CPU seconds of this process (the emulator) during the batch.
    emulator_cpu: f64,
    report: serde_json::Value,
}

fn main() {
    let full = full_run();
    let which = std::env::var("WF_BENCH").unwrap_or_else(|_| "throughput,ratelimit,memory".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let levels: Vec<u32> = std::env::var("WF_BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "1,64".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let concurrency = levels.last().copied().unwrap_or(64);
    println!(
        "machine: {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    if which.contains("throughput") {
        let n: u64 = env_or("WF_BENCH_N", if full { 5000 } else { 40 });
        for &level in &levels {
            // A sequential line is slow by nature: it gets fewer devices.
            let count = if level == 1 {
                env_or("WF_BENCH_SEQ_N", (n / 10).max(10))
            } else {
                n
            };
            let r = batch(&rt, None, count, false, level);
            println!(
                "throughput (rate limit off), concurrency {level}: {count} devices in {:.1}s = {:.0} devices/s, failed {}, peak RSS {:.1} MB, CPU per device: iotc {:.0} µs, emulator {:.0} µs",
                r.seconds,
                count as f64 / r.seconds,
                r.report["failed"],
                r.max_rss_kb as f64 / 1024.0,
                r.client_cpu * 1e6 / count as f64,
                r.emulator_cpu * 1e6 / count as f64,
            );
        }
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
    let dir = bench_dir();
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
    let own_cpu = own_cpu_seconds();
    let out = cmd.output().expect("iotc runs");
    let seconds = clock.elapsed().as_secs_f64();
    let emulator_cpu = own_cpu_seconds() - own_cpu;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let max_rss_kb = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let time_field = |name: &str| -> f64 {
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let client_cpu = time_field("User time (seconds): ") + time_field("System time (seconds): ");
    let report: serde_json::Value = std::fs::read(dir.path().join("out/report.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| panic!("no report; iotc said:\n{stderr}"));
    // A figure of a batch that did not finish measures failures: the run fails instead.
    assert!(
        out.status.success(),
        "iotc provision exited {:?}:\n{stderr}",
        out.status.code()
    );
    assert_eq!(report["succeeded"], n, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    // DPS's own count: every device registered exactly once.
    let registered = emu
        .stats()
        .expect("stats")
        .of(iotc::emulator::stats::counter::DPS_REGISTRATIONS);
    assert_eq!(registered.len() as u64, n, "every device registered");
    assert!(
        registered.values().all(|&c| c == 1),
        "a device was registered more than once"
    );
    rt.block_on(emu.shutdown());
    Run {
        seconds,
        max_rss_kb,
        client_cpu,
        emulator_cpu,
        report,
    }
}

/// CPU seconds (user + system) of this process so far, from /proc/self/stat.
fn own_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // utime and stime are fields 14 and 15 (1-based; field 3 is the first after the name).
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
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
