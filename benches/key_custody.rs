//! Benchmark: the key-custody batches of the factory guide, through the real `iotc provision`
//! binary against the emulator (in this process, HTTPS on loopback).
//!
//! - `csr`: a CSR batch (the devices made their keys; the station checks and signs every CSR,
//!   creates the IoT Central device and writes a certificate-only bundle), rate limit off,
//!   next to a batch of the same size where the station makes the keys and registers the
//!   devices (the same manifest, so both create every device in IoT Central).
//! - `stations`: several `iotc provision` processes at once against one application with
//!   IoT Central's limit of 20 requests/s, each creating its devices there: their rate
//!   together (share of the limit), each station's rate next to the mean, failures and 429s.
//!
//! Run: `cargo bench --bench key_custody`. Environment: `KC_BENCH=csr,stations` (default
//! both), `KC_BENCH_CSR_N` (default 10000), `KC_BENCH_STATIONS` (default 4) and
//! `KC_BENCH_STATION_N` devices per station (default 300), `KC_BENCH_CONCURRENCY` (default 64
//! for the CSR batch; 32 per station). Under `cargo test --all-targets` it runs a small smoke
//! pass.

mod common;

use common::{bench_dir, env_or, full_run, setup_group};
use iotc::emulator::{Emulator, EmulatorConfig, ReadyInfo};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

fn main() {
    let full = full_run();
    let which = std::env::var("KC_BENCH").unwrap_or_else(|_| "csr,stations".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "machine: {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    if which.contains("csr") {
        let n: usize = env_or("KC_BENCH_CSR_N", if full { 10_000 } else { 30 });
        let concurrency: u32 = env_or("KC_BENCH_CONCURRENCY", 64);
        for csr in [true, false] {
            let (seconds, report) = csr_or_station_keys(&rt, n, csr, concurrency);
            println!(
                "{} (rate limit off, concurrency {concurrency}): {n} devices in {seconds:.1}s = {:.0} devices/s end to end ({} devices/s in the run), failed {}",
                if csr {
                    "CSR batch: check + sign + IoT Central device + certificate bundle"
                } else {
                    "station-made keys, same manifest: key + certificate + IoT Central device + DPS registration + bundle"
                },
                n as f64 / seconds,
                report["devicesPerSecond"],
                report["failed"]
            );
        }
    }
    if which.contains("stations") {
        let stations: usize = env_or("KC_BENCH_STATIONS", 4);
        let per: usize = env_or("KC_BENCH_STATION_N", if full { 300 } else { 10 });
        stations_sharing_the_limit(&rt, stations, per);
    }
}

/// An emulator with this IoT Central rate limit (answering registrations at once), and an
/// x509 group `bench` whose intermediate `pki/line` signs the devices.
fn emulator(rt: &tokio::runtime::Runtime, dir: &Path, rate_limit: Option<u32>) -> Emulator {
    let mut config = EmulatorConfig::new(dir.join("emulator")).rate_limit(rate_limit);
    config.settings.dps_assigning_polls = 0;
    config.settings.dps_retry_after_seconds = 0;
    let emu = rt.block_on(Emulator::start(config)).expect("emulator");
    setup_group(rt, emu.info(), dir);
    emu
}

/// `iotc provision ...` in `dir`, pointed at the emulator.
fn provision(dir: &Path, info: &ReadyInfo, rate_limit: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iotc"));
    cmd.arg("provision")
        .args(args)
        .args(["--group", "bench", "--ca", "pki/line", "--no-progress"])
        .args(["--output", "json"])
        .current_dir(dir)
        .env("IOTC_APP_URL", &info.api_url)
        .env("IOTC_API_TOKEN", info.admin_token.expose())
        .env("IOTC_CA_FILE", &info.ca_cert)
        .env("IOTC_ID_SCOPE", &info.id_scope)
        .env("IOTC_DPS_ENDPOINT", &info.dps_endpoint)
        .env("HOME", dir)
        .env("IOTC_RATE_LIMIT", rate_limit)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn report_of(out: std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "no report; iotc said:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// One batch of `n` devices with a display name each: from CSRs the "devices" made (with
/// rcgen, before the clock starts), or with keys the station makes.
fn csr_or_station_keys(
    rt: &tokio::runtime::Runtime,
    n: usize,
    csr: bool,
    concurrency: u32,
) -> (f64, serde_json::Value) {
    let dir = bench_dir();
    let emu = emulator(rt, dir.path(), None);
    let mut manifest = String::from("deviceId,displayName\n");
    for i in 1..=n {
        manifest.push_str(&format!("k-{i:06},Bench device {i}\n"));
    }
    std::fs::write(dir.path().join("m.csv"), manifest).expect("manifest");
    let concurrency = concurrency.to_string();
    let mut args = vec![
        "--manifest",
        "m.csv",
        "--journal",
        "j.sqlite",
        "--out",
        "out",
        "--concurrency",
        &concurrency,
    ];
    if csr {
        let csrs = dir.path().join("csrs");
        std::fs::create_dir_all(&csrs).expect("csr folder");
        for i in 1..=n {
            let id = format!("k-{i:06}");
            let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name.push(rcgen::DnType::CommonName, &id);
            let req = p.serialize_request(&kp).expect("csr");
            std::fs::write(csrs.join(format!("{id}.csr")), req.der()).expect("write csr");
        }
        args.extend(["--csr-dir", "csrs"]);
    } else {
        args.push("--no-password");
    }
    let clock = Instant::now();
    let out = provision(dir.path(), emu.info(), "0", &args)
        .output()
        .expect("iotc runs");
    let seconds = clock.elapsed().as_secs_f64();
    rt.block_on(emu.shutdown());
    (seconds, report_of(out))
}

/// `stations` processes at once, `per` devices each, against the 20 requests/s limit.
fn stations_sharing_the_limit(rt: &tokio::runtime::Runtime, stations: usize, per: usize) {
    let dir = bench_dir();
    let emu = emulator(rt, dir.path(), Some(20));
    for s in 0..stations {
        let mut m = String::from("deviceId,displayName\n");
        for i in 1..=per {
            m.push_str(&format!("s{s}-{i:05},Station {s} device {i}\n"));
        }
        std::fs::write(dir.path().join(format!("s{s}.csv")), m).expect("manifest");
    }
    let clock = Instant::now();
    let children: Vec<_> = (0..stations)
        .map(|s| {
            let (m, j, o) = (
                format!("s{s}.csv"),
                format!("s{s}.journal"),
                format!("out{s}"),
            );
            let args = [
                "--manifest",
                &m,
                "--journal",
                &j,
                "--out",
                &o,
                "--no-password",
                "--concurrency",
                "32",
            ];
            provision(dir.path(), emu.info(), "20", &args)
                .spawn()
                .expect("iotc runs")
        })
        .collect();
    let reports: Vec<serde_json::Value> = children
        .into_iter()
        .map(|c| report_of(c.wait_with_output().expect("iotc ends")))
        .collect();
    let seconds = clock.elapsed().as_secs_f64();
    rt.block_on(emu.shutdown());
    let total = (stations * per) as f64;
    let rates: Vec<f64> = reports
        .iter()
        .map(|r| r["devicesPerSecond"].as_f64().unwrap_or(0.0))
        .collect();
    let mean = rates.iter().sum::<f64>() / stations as f64;
    let spread = rates
        .iter()
        .map(|r| (r - mean).abs() / mean * 100.0)
        .fold(0.0, f64::max);
    let failed: u64 = reports.iter().filter_map(|r| r["failed"].as_u64()).sum();
    let (requests, throttled) = reports.iter().fold((0, 0), |(a, b), r| {
        (
            a + r["iotCentral"]["requests"].as_u64().unwrap_or(0),
            b + r["iotCentral"]["throttled"].as_u64().unwrap_or(0),
        )
    });
    println!(
        "{stations} stations sharing the 20 req/s limit, {per} devices each: {total} devices in {seconds:.1}s = {:.2} devices/s = {:.1}% of the limit, failed {failed}; per station {rates:.2?} devices/s (mean {mean:.2}, farthest {spread:.0}% from it); {throttled} of {requests} requests throttled",
        total / seconds,
        total / seconds / 20.0 * 100.0,
    );
}
