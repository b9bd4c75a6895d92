//! Several stations, one application: four real `iotc provision` processes at once against
//! one emulator with IoT Central's real limit (20 requests/s per application, shared by every
//! caller), each creating its devices in IoT Central (one request per device) and registering
//! them with DPS. With no coordinator, their adaptive pacing must keep them together near the
//! limit, fair to each other, with few 429s and no failed device.

use crate::common_workflow::Emu;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Instant;

const STATIONS: usize = 4;
const PER_STATION: usize = 150;
const LIMIT: f64 = 20.0;

#[test]
fn four_stations_share_the_application_limit_with_no_failed_device() {
    let emu = Emu::start(Some(20));
    emu.cmd()
        .args(["onboard", "x509", "--group", "line-s", "--ca", "pki/root"])
        .args(["--intermediate", "pki/line", "--no-password"])
        .assert()
        .success();
    // Registrations answered at once: the IoT Central limit, not DPS, sets the pace.
    emu.settings(serde_json::json!({"dpsAssigningPolls": 0, "dpsRetryAfterSeconds": 0}));
    for s in 0..STATIONS {
        let mut m = String::from("deviceId,displayName\n");
        for i in 1..=PER_STATION {
            m.push_str(&format!("s{s}-{i:04},Station {s} device {i}\n"));
        }
        std::fs::write(emu.path(&format!("s{s}.csv")), m).unwrap();
    }
    let start = Instant::now();
    let children: Vec<_> = (0..STATIONS)
        .map(|s| {
            emu.iotc()
                .args(["provision", "--manifest", &format!("s{s}.csv")])
                .args([
                    "--journal",
                    &format!("s{s}.journal"),
                    "--out",
                    &format!("out{s}"),
                ])
                .args(["--group", "line-s", "--ca", "pki/line", "--no-password"])
                .args(["--no-progress", "--concurrency", "32", "--output", "json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let reports: Vec<serde_json::Value> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice(&out.stdout).unwrap()
        })
        .collect();
    let elapsed = start.elapsed().as_secs_f64();
    let total = (STATIONS * PER_STATION) as f64;
    let rates: Vec<f64> = reports
        .iter()
        .map(|r| r["devicesPerSecond"].as_f64().unwrap())
        .collect();
    let mean = rates.iter().sum::<f64>() / STATIONS as f64;
    eprintln!(
        "{total} devices in {elapsed:.1}s = {:.1} devices/s ({:.0} % of the limit); per station {rates:.2?}; IoT Central per station {:?}",
        total / elapsed,
        total / elapsed / LIMIT * 100.0,
        reports.iter().map(|r| &r["iotCentral"]).collect::<Vec<_>>()
    );
    for (s, r) in reports.iter().enumerate() {
        assert_eq!(
            (r["failed"].as_u64(), r["succeeded"].as_u64()),
            (Some(0), Some(PER_STATION as u64)),
            "station {s}: {r}"
        );
        // Few requests were wasted on 429s: the stations found their shares.
        let c = &r["iotCentral"];
        let (requests, throttled) = (
            c["requests"].as_f64().unwrap(),
            c["throttled"].as_f64().unwrap(),
        );
        assert!(
            throttled <= 0.15 * requests,
            "station {s}: {throttled} of {requests} requests throttled"
        );
        // None starved: each station at 40 % of the mean rate or more. A station's rate is
        // over its own lifetime, so one that starts late on a loaded machine finishes with
        // fewer rivals at a higher rate (seen: 9.3/s against a mean of 6.2/s with the test
        // binary's 12 threads busy); the fairness target (each within 25 % of the
        // mean) is measured by benches/key_custody.rs on a quiet machine (docs/benchmarks.md),
        // not asserted here.
        assert!(
            rates[s] >= 0.4 * mean,
            "station {s} at {:.2}/s, mean {mean:.2}/s: {rates:?}",
            rates[s]
        );
    }
    // Together near the limit: the whole run, from the first start to the last exit
    // (process start-up and the group lookup included), at 75 % of it or more.
    assert!(
        total / elapsed >= 0.75 * LIMIT,
        "{total} devices in {elapsed:.1}s"
    );
    // The emulator's side: every device once, provisioned, with its station's display name,
    // and registered with DPS exactly once.
    let devices = emu.devices();
    let mut by_id: BTreeMap<String, (usize, bool, Option<String>)> = BTreeMap::new();
    for d in devices {
        let e = by_id.entry(d.id.clone().unwrap()).or_default();
        e.0 += 1;
        e.1 = d.provisioned == Some(true);
        e.2 = d.display_name;
    }
    assert_eq!(by_id.len(), STATIONS * PER_STATION);
    for s in 0..STATIONS {
        for i in 1..=PER_STATION {
            let id = format!("s{s}-{i:04}");
            let (n, provisioned, name) = &by_id[&id];
            assert_eq!((*n, *provisioned), (1, true), "{id}");
            assert_eq!(
                name.as_deref(),
                Some(format!("Station {s} device {i}").as_str())
            );
            emu.assert_registered_once(&emu.path(&format!("out{s}")), &id);
        }
    }
}
