//! Benchmark: the lifecycle of a batch through the real binary against the emulator (in this
//! process, HTTPS on loopback): `iotc renew` (new key + certificate, journal commits, DPS
//! re-registration over a fresh TLS connection, the new bundle) and `iotc revoke` (one paced
//! PATCH `enabled: false` per device, journal commits), each with IoT Central's 20 req/s
//! limit on (emulator and client) and off. Every run starts from a batch provisioned with
//! the limit off (not timed).
//!
//! Run: `cargo bench --bench lifecycle`. Environment: `LC_BENCH=renew,revoke` (default both),
//! `LC_BENCH_N` devices (default 10000; a smoke pass of 20 under `cargo test`),
//! `LC_BENCH_CONCURRENCY` (default 64).
//!
//! Renewal sends no IoT Central request (DPS has its own quotas, not emulated), so the limit
//! does not bound it; revocation sends one request per device, so at 20 req/s its ceiling is
//! 20 devices/s and the figure to read is its share of that ceiling.

mod common;

use common::{bench_dir, env_or, full_run};
use iotc::emulator::{Emulator, EmulatorConfig, ReadyInfo};
use std::path::Path;
use std::time::Instant;

fn main() {
    let full = full_run();
    let which = std::env::var("LC_BENCH").unwrap_or_else(|_| "renew,revoke".into());
    let n: u64 = env_or("LC_BENCH_N", if full { 10_000 } else { 20 });
    let concurrency: u32 = env_or("LC_BENCH_CONCURRENCY", 64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for limit in [Some(20), None] {
        let label = match limit {
            Some(l) => format!("rate limit {l} req/s"),
            None => "rate limit off".into(),
        };
        if which.contains("renew") {
            let (s, report) = run(&rt, limit, n, concurrency, "renew");
            let rate = n as f64 / s;
            println!(
                "renew, {label}: {n} devices in {s:.1}s = {rate:.0} devices/s, renewed {}, failed {}",
                report["renewed"], report["failedThisRun"]
            );
        }
        if which.contains("revoke") {
            let (s, report) = run(&rt, limit, n, concurrency, "revoke");
            let rate = n as f64 / s;
            let share = limit
                .map(|l| format!(" = {:.1}% of the limit", rate / f64::from(l) * 100.0))
                .unwrap_or_default();
            println!(
                "revoke, {label}: {n} devices in {s:.1}s = {rate:.1} devices/s{share}, blocked {}, failed {}",
                report["done"], report["failedThisRun"]
            );
        }
    }
}

fn iotc(info: &ReadyInfo, dir: &Path, limit: Option<u32>) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_iotc"));
    cmd.current_dir(dir)
        .env("IOTC_APP_URL", &info.api_url)
        .env("IOTC_API_TOKEN", info.admin_token.expose())
        .env("IOTC_CA_FILE", &info.ca_cert)
        .env("IOTC_ID_SCOPE", &info.id_scope)
        .env("IOTC_DPS_ENDPOINT", &info.dps_endpoint)
        .env("HOME", dir)
        .env(
            "IOTC_RATE_LIMIT",
            limit.map(|r| r.to_string()).unwrap_or_else(|| "0".into()),
        );
    cmd
}

fn ok(cmd: &mut std::process::Command) {
    let out = cmd.output().expect("iotc runs");
    assert!(
        out.status.success(),
        "{:?}: {}{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Provisions `n` devices (limit off), then times `what` with `limit`; returns the seconds
/// and the command's JSON report.
fn run(
    rt: &tokio::runtime::Runtime,
    limit: Option<u32>,
    n: u64,
    concurrency: u32,
    what: &str,
) -> (f64, serde_json::Value) {
    let dir = bench_dir();
    let mut config = EmulatorConfig::new(dir.path().join("emulator")).rate_limit(None);
    config.settings.dps_assigning_polls = 0;
    config.settings.dps_retry_after_seconds = 0;
    let emu = rt.block_on(Emulator::start(config)).expect("emulator");
    let info = emu.info().clone();
    let c = concurrency.to_string();
    ok(iotc(&info, dir.path(), None).args([
        "onboard",
        "x509",
        "--group",
        "bench",
        "--ca",
        "pki/root",
        "--intermediate",
        "pki/line",
        "--no-password",
    ]));
    ok(iotc(&info, dir.path(), None)
        .args(["provision", "--count", &n.to_string(), "--prefix", "b-"])
        .args([
            "--journal",
            "j.sqlite",
            "--out",
            "out",
            "--group",
            "bench",
            "--ca",
            "pki/line",
        ])
        .args(["--no-password", "--no-progress", "--concurrency", &c]));
    emu.settings()
        .merge(&serde_json::json!({ "rateLimit": limit }))
        .expect("settings");
    let mut cmd = iotc(&info, dir.path(), limit);
    match what {
        "renew" => cmd
            .args([
                "renew",
                "--journal",
                "j.sqlite",
                "--out",
                "out",
                "--ca",
                "pki/line",
            ])
            .args(["--no-password", "--no-progress", "--concurrency", &c]),
        _ => cmd
            .args(["revoke", "--journal", "j.sqlite", "--no-progress"])
            .args(["--concurrency", &c]),
    };
    cmd.args(["--output", "json"]);
    let clock = Instant::now();
    let out = cmd.output().expect("iotc runs");
    let seconds = clock.elapsed().as_secs_f64();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "no report; iotc said:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    rt.block_on(emu.shutdown());
    (seconds, report)
}
