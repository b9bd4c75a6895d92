//! Benchmark: IoT Central API throughput of the in-process emulator over HTTPS with the
//! rate limit off — simple GETs (`GET /devices/{id}`) and device creates
//! (`PUT /devices/{id}`, each a SQLite write transaction) per second — and device lists of
//! fleet size: the latency of a page (first, middle and last pages of the whole list) and
//! the time of a full list, at each fleet size, plus pages ordered by display name.
//!
//! Run: `cargo bench --bench emulator_api` (env: `EMU_BENCH_N` requests per measurement,
//! default 4000; `EMU_BENCH_CONCURRENCY`, comma-separated, default `1,8,32`;
//! `EMU_BENCH_LIST_SIZES`, comma-separated fleet sizes, default `1000,20000,100000`). The
//! fleets are written straight into the store in one transaction (what is measured is the
//! list, not the creates). Clients share
//! one reqwest client (HTTP/2 over one TLS connection per concurrent worker is up to
//! reqwest's pool) and the machine with the emulator. Prints one line per measurement.

mod common;

use common::{bench_dir, env_or, full_run};
use futures::StreamExt;
use iotc::central::models::Device;
use iotc::emulator::records::DeviceRecord;
use iotc::emulator::store::{self, kind};
use iotc::emulator::{Emulator, EmulatorConfig};
use std::time::{Duration, Instant};

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

    let sizes: Vec<usize> = std::env::var("EMU_BENCH_LIST_SIZES")
        .unwrap_or_else(|_| if full { "1000,20000,100000" } else { "300" }.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!("device lists: pages of 100 (2022-07-31), one client, rate limit off");
    for n in sizes {
        lists(n).await;
    }
}

/// Seeds `n` devices and walks the whole list, timing every page; then 20 pages ordered by
/// display name (2022-10-31-preview, `maxpagesize=100`).
async fn lists(n: usize) {
    let dir = bench_dir();
    let emu = Emulator::start(EmulatorConfig::new(dir.path()).rate_limit(None))
        .await
        .expect("emulator");
    let seed = Instant::now();
    emu.store()
        .write(|c| {
            for i in 0..n {
                let id = format!("dev-{i:06}");
                let rec = DeviceRecord {
                    device: Device {
                        id: Some(id.clone()),
                        etag: Some(format!("e{i}")),
                        // Names out of creation order, so the ordered list is another walk.
                        display_name: Some(format!("Device {:06}", (i * 7919) % n)),
                        template: Some("dtmi:bench:t;1".into()),
                        enabled: Some(true),
                        provisioned: Some(false),
                        simulated: Some(false),
                        organizations: None,
                        device_type: None,
                    },
                    attestation: None,
                };
                store::put(c, kind::DEVICE, &id, &rec)?;
            }
            Ok(())
        })
        .expect("seed");
    let seeded = seed.elapsed();
    let info = emu.info().clone();
    let ca =
        reqwest::Certificate::from_pem(&std::fs::read(&info.ca_cert).expect("ca")).expect("pem");
    let http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .expect("client");
    let token = info.admin_token.expose().to_owned();
    let page = |url: String| {
        let http = http.clone();
        let token = token.clone();
        async move {
            let start = Instant::now();
            let v: serde_json::Value = http
                .get(url)
                .header("Authorization", token)
                .send()
                .await
                .expect("page")
                .json()
                .await
                .expect("json");
            let took = start.elapsed();
            let count = v["value"].as_array().map_or(0, Vec::len);
            (took, count, v["nextLink"].as_str().map(str::to_owned))
        }
    };

    let mut times: Vec<Duration> = Vec::new();
    let mut seen = 0;
    let start = Instant::now();
    let mut next = Some(format!(
        "{}/api/devices?api-version=2022-07-31",
        info.api_url
    ));
    while let Some(url) = next {
        let (took, count, link) = page(url).await;
        times.push(took);
        seen += count;
        next = link;
    }
    let full = start.elapsed();
    assert_eq!(seen, n, "the whole list, once");
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mid = times.len() / 2;
    let mut sorted = times.clone();
    sorted.sort();
    println!(
        "devices {n:>7}: page first {:>6.2} ms, middle {:>6.2} ms, last {:>6.2} ms, median {:>6.2} ms; \
         full list {} pages in {:.2} s (seeded in {:.1} s)",
        ms(times[0]),
        ms(times[mid]),
        ms(times[times.len() - 1]),
        ms(sorted[sorted.len() / 2]),
        times.len(),
        full.as_secs_f64(),
        seeded.as_secs_f64()
    );

    let mut ordered = Vec::new();
    let mut next = Some(format!(
        "{}/api/devices?api-version=2022-10-31-preview&orderby=displayName&maxpagesize=100",
        info.api_url
    ));
    while let Some(url) = next.take() {
        let (took, _, link) = page(url).await;
        ordered.push(took);
        if ordered.len() < 20 {
            next = link;
        }
    }
    ordered.sort();
    println!(
        "devices {n:>7}: orderby displayName, {} pages of 100: median {:.2} ms, max {:.2} ms",
        ordered.len(),
        ms(ordered[ordered.len() / 2]),
        ms(ordered[ordered.len() - 1])
    );
    emu.shutdown().await;
}
