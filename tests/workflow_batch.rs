//! `iotc provision` end to end against the emulator, through the real binary: a clean batch
//! with IoT Central device creation, a batch under injected faults (throttling, 5xx, dropped
//! connections) that ends with every device registered once, kill -9 at random points
//! followed by `--resume`, and `--dry-run`.

mod common_workflow;

use common_workflow::{bundles, openssl_verify, Emu};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

fn manifest(emu: &Emu, n: usize) -> std::path::PathBuf {
    let p = emu.path("line.csv");
    let mut s = String::from("deviceId,displayName,simulated\n");
    for i in 1..=n {
        s.push_str(&format!("m-{i:04},Machine {i},false\n"));
    }
    std::fs::write(&p, s).unwrap();
    p
}

fn make_group(emu: &Emu, group: &str) {
    emu.cmd()
        .args([
            "onboard",
            "x509",
            "--group",
            group,
            "--ca",
            "pki/root",
            "--no-password",
        ])
        .args(["--intermediate", "pki/line"])
        .assert()
        .success();
}

fn provision_args(group: &str) -> Vec<String> {
    [
        "provision",
        "--manifest",
        "line.csv",
        "--journal",
        "line.journal",
        "--out",
        "out",
        "--group",
        group,
        "--ca",
        "pki/line",
        "--no-password",
        "--concurrency",
        "8",
        "--no-progress",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn report(emu: &Emu) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(emu.path("out/report.json")).unwrap()).unwrap()
}

/// Every manifest device is in IoT Central once, provisioned, with the manifest's display
/// name, and has a whole bundle whose certificate chains to the root.
fn assert_batch_complete(emu: &Emu, n: usize) {
    let devices = emu.devices();
    let mut by_id: BTreeMap<String, usize> = BTreeMap::new();
    for d in &devices {
        *by_id.entry(d.id.clone().unwrap_or_default()).or_default() += 1;
    }
    let b = bundles(&emu.path("out"));
    assert_eq!(b.len(), n, "one bundle per device");
    for i in 1..=n {
        let id = format!("m-{i:04}");
        assert_eq!(by_id.get(&id), Some(&1), "{id} exists once in IoT Central");
        let d = devices
            .iter()
            .find(|d| d.id.as_deref() == Some(&id))
            .unwrap();
        assert_eq!(d.provisioned, Some(true), "{id} provisioned");
        assert_eq!(
            d.display_name.as_deref(),
            Some(format!("Machine {i}").as_str())
        );
        assert!(b.contains_key(&id), "bundle of {id}");
        emu.assert_registered_once(&emu.path("out"), &id);
    }
    let (ok, out) = openssl_verify(
        &emu.path("pki/root_cert.pem"),
        Some(&emu.path("out/m-0001/m-0001_fullchain.pem")),
        &emu.path("out/m-0001/m-0001_cert.pem"),
    );
    assert!(ok, "{out}");
}

/// Exactly-once registration, from the journal's side: no device went through more than one
/// registration that DPS accepted (register_calls counts attempts started, and a resumed
/// device is looked up first).
fn assert_journal_done(emu: &Emu, n: usize) {
    let j = iotc::workflow::journal::Journal::open(&emu.path("line.journal")).unwrap();
    let c = j.counts().unwrap();
    assert_eq!((c.total, c.done, c.failed), (n as u64, n as u64, 0));
    for r in j.all().unwrap() {
        assert!(
            r.secret.is_none(),
            "key erased from the journal once bundled"
        );
        assert!(r.assigned_hub.is_some());
    }
}

#[test]
fn a_clean_batch_creates_registers_and_bundles_every_device() {
    let emu = Emu::start(None);
    make_group(&emu, "line-a");
    manifest(&emu, 30);
    emu.cmd().args(provision_args("line-a")).assert().success();
    assert_batch_complete(&emu, 30);
    assert_journal_done(&emu, 30);
    let r = report(&emu);
    assert_eq!(r["succeeded"], 30);
    assert_eq!(r["failed"], 0);
    // A second run refuses to reuse the journal without --resume; with it, nothing to do.
    emu.cmd().args(provision_args("line-a")).assert().code(2);
    let mut resume = provision_args("line-a");
    resume.push("--resume".into());
    emu.cmd().args(&resume).assert().success();
    assert_eq!(report(&emu)["completedThisRun"], 0);
    assert_batch_complete(&emu, 30);
    // Resuming with another CA than the one the batch started with is refused.
    let other_ca: Vec<String> = resume
        .iter()
        .map(|a| {
            if a == "pki/line" {
                "pki/root".into()
            } else {
                a.clone()
            }
        })
        .collect();
    emu.cmd()
        .args(&other_ca)
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "the journal's device certificates are signed by the CA",
        ));
}

#[test]
fn a_dry_run_does_nothing() {
    let emu = Emu::start(None);
    make_group(&emu, "line-d");
    manifest(&emu, 5);
    let mut args = provision_args("line-d");
    args.push("--dry-run".into());
    emu.cmd()
        .args(&args)
        .assert()
        .success()
        .stdout(predicates::str::contains("would provision 5 device(s)"));
    assert!(!emu.path("line.journal").exists());
    assert!(!emu.path("out").exists());
    assert!(emu.devices().is_empty());
}

#[test]
fn a_batch_under_injected_faults_ends_with_every_device_registered_once() {
    let emu = Emu::start(None);
    make_group(&emu, "line-f");
    manifest(&emu, 40);
    emu.settings(serde_json::json!({
        "faults": {"seed": 7, "errorRate": 0.15, "throttleRate": 0.15, "throttleBurst": 2, "dropRate": 0.05}
    }));
    let first = emu.cmd().args(provision_args("line-f")).output().unwrap();
    let code = first.status.code();
    assert!(matches!(code, Some(0) | Some(1)), "{first:?}");
    if code == Some(1) {
        // Failures are data: listed in the report with reason and attempts.
        let r = report(&emu);
        let failures = r["failures"].as_array().unwrap();
        assert!(!failures.is_empty());
        for f in failures {
            assert!(f["reason"].as_str().unwrap().len() > 3);
            assert!(f["attempts"].as_u64().unwrap() >= 1);
        }
    }
    emu.settings(
        serde_json::json!({"faults": {"errorRate": 0.0, "throttleRate": 0.0, "dropRate": 0.0}}),
    );
    let mut resume = provision_args("line-f");
    resume.push("--resume".into());
    emu.cmd().args(&resume).assert().success();
    assert_batch_complete(&emu, 40);
    assert_journal_done(&emu, 40);
}

#[test]
fn kill_9_at_random_points_then_resume_registers_every_device_exactly_once() {
    let trials = 12;
    let n = 40;
    let mut killed_mid_batch = 0;
    let mut spread = 0;
    for trial in 0..trials {
        let emu = Emu::start(None);
        make_group(&emu, "line-k");
        manifest(&emu, n);
        // Registrations answered at once, every request delayed: the delay, not the speed of
        // the machine, sets a floor of about two seconds on the batch (5 waves of 8 devices,
        // several requests each), so the kills below land in every phase of it on an idle
        // machine as on a loaded one.
        emu.settings(serde_json::json!({"dpsAssigningPolls": 0, "dpsRetryAfterSeconds": 0, "faults": {"latencyMs": 120}}));
        let mut child = emu
            .iotc()
            .args(provision_args("line-k"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // A random point: 150 ms .. 1.8 s.
        let delay = Duration::from_millis(rand::random_range(150..1800));
        std::thread::sleep(delay);
        let finished_early = child.try_wait().unwrap().is_some();
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        if !finished_early {
            killed_mid_batch += 1;
        }
        // Where the kill left the devices, for the record.
        if let Ok(j) = iotc::workflow::journal::Journal::open(&emu.path("line.journal")) {
            let mut states: BTreeMap<String, usize> = BTreeMap::new();
            for r in j.all().unwrap() {
                *states.entry(r.state.to_string()).or_default() += 1;
            }
            eprintln!("trial {trial}: killed after {delay:?}: {states:?}");
            if states.len() > 1 {
                spread += 1;
            }
        } else {
            eprintln!("trial {trial}: killed after {delay:?}: no journal yet");
        }
        emu.settings(serde_json::json!({"faults": {"latencyMs": 0}}));
        let mut resume = provision_args("line-k");
        resume.push("--resume".into());
        let out = emu.cmd().args(&resume).output().unwrap();
        if !emu.path("line.journal").exists() {
            // Killed before the journal was even created: nothing happened, start again.
            emu.cmd().args(provision_args("line-k")).assert().success();
        } else {
            assert_eq!(
                out.status.code(),
                Some(0),
                "trial {trial} ({delay:?}): {out:?}"
            );
        }
        assert_batch_complete(&emu, n);
        assert_journal_done(&emu, n);
    }
    assert!(
        killed_mid_batch >= trials / 2,
        "most kills must land mid-batch ({killed_mid_batch})"
    );
    assert!(
        spread >= 3,
        "kills must leave devices in several states ({spread} trials did)"
    );
}

#[test]
fn ctrl_c_stops_cleanly_with_a_report_and_resume_finishes_the_batch() {
    let n = 40;
    let emu = Emu::start(None);
    make_group(&emu, "line-c");
    manifest(&emu, n);
    // Every request delayed: the batch takes seconds, so the interrupt lands mid-batch.
    emu.settings(serde_json::json!({"dpsAssigningPolls": 0, "dpsRetryAfterSeconds": 0, "faults": {"latencyMs": 150}}));
    let child = emu
        .iotc()
        .args(provision_args("line-c"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(900));
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    // The report is written and says the batch is not finished.
    let r = report(&emu);
    assert!(r["pending"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    // --resume finishes the batch: every device registered once, every bundle whole.
    emu.settings(serde_json::json!({"faults": {"latencyMs": 0}}));
    let mut resume = provision_args("line-c");
    resume.push("--resume".into());
    emu.cmd().args(&resume).assert().success();
    assert_batch_complete(&emu, n);
    assert_journal_done(&emu, n);
}
