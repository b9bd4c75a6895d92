//! Benchmark: IoT Central API throughput of the in-process emulator over HTTPS with the
//! rate limit off — simple GETs (`GET /devices/{id}`) and device creates
//! (`PUT /devices/{id}`, each a SQLite write transaction) per second.
//!
//! Run: `cargo bench --bench emulator_api` (env: `EMU_BENCH_N` requests per measurement,
//! default 4000; `EMU_BENCH_CONCURRENCY`, comma-separated, default `1,8,32`). Clients share
//! one reqwest client (HTTP/2 over one TLS connection per concurrent worker is up to
//! reqwest's pool) and the machine with the emulator. Prints one line per measurement.

mod common;

use common::{bench_dir, env_or, full_run};
use futures::StreamExt;
use iotc::emulator::{Emulator, EmulatorConfig};
use std::time::Instant;

fn main() {
    let full = full_run();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(full));
}

async fn run(full: bool) {
    let n: usize = env_or("EMU_BENCH_N", if full { 4000 } else { 100 });
    let levels: Vec<usize> = std::env::var("EMU_BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "1,8,32".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let dir = bench_dir();
    let emu = Emulator::start(EmulatorConfig::new(dir.path()).rate_limit(None))
        .await
        .expect("emulator");
    let info = emu.info().clone();
    let ca =
        reqwest::Certificate::from_pem(&std::fs::read(&info.ca_cert).expect("ca")).expect("pem");
    let http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .expect("client");
    let token = info.admin_token.expose().to_owned();
    let url = |p: &str| format!("{}/api{p}?api-version=2022-07-31", info.api_url);

    // One device to read.
    let r = http
        .put(url("/devices/bench-read"))
        .header("Authorization", &token)
        .json(&serde_json::json!({"displayName": "bench"}))
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), 200);

    println!("emulator API benchmark: {n} requests per measurement, rate limit off");
    for &c in &levels {
        for kind in ["GET /devices/{id}", "PUT /devices/{id} (create)"] {
            let start = Instant::now();
            let ok = futures::stream::iter(0..n)
                .map(|i| {
                    let http = http.clone();
                    let token = token.clone();
                    let req = if kind.starts_with("GET") {
                        http.get(url("/devices/bench-read"))
                    } else {
                        http.put(url(&format!("/devices/c{c}-{i}")))
                            .json(&serde_json::json!({"displayName": format!("Device {i}"), "template": "dtmi:bench:t;1"}))
                    };
                    async move {
                        req.header("Authorization", token)
                            .send()
                            .await
                            .map(|r| r.status().as_u16() == 200)
                            .unwrap_or(false)
                    }
                })
                .buffer_unordered(c)
                .filter(|ok| futures::future::ready(*ok))
                .count()
                .await;
            let secs = start.elapsed().as_secs_f64();
            assert_eq!(ok, n, "every request succeeded");
            println!(
                "{kind:<28} concurrency {c:>3}: {:>8.0} req/s ({n} in {secs:.2} s)",
                n as f64 / secs
            );
        }
    }
    emu.shutdown().await;
}
