//! `iotc provision` end to end against the emulator, through the real binary: a clean batch
//! with IoT Central device creation, a batch under injected faults (throttling, 5xx, dropped
//! connections) that ends with every device registered once, kill -9 at random points
//! followed by `--resume`, and `--dry-run`.

use crate::common_workflow;

use common_workflow::{bundles, openssl_verify, Emu};
use iotc::emulator::stats::counter;
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
/// name, was registered by DPS exactly once (DPS's own count), and has a whole bundle whose
/// certificate chains to the root.
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
    let once: BTreeMap<String, u64> = (1..=n).map(|i| (format!("m-{i:04}"), 1)).collect();
    assert_eq!(
        emu.stats().of(counter::DPS_REGISTRATIONS),
        once,
        "DPS registered every device exactly once, and no other"
    );
    let (ok, out) = openssl_verify(
        &emu.path("pki/root_cert.pem"),
        Some(&emu.path("out/m-0001/m-0001_fullchain.pem")),
        &emu.path("out/m-0001/m-0001_cert.pem"),
    );
    assert!(ok, "{out}");
}

/// The journal's side of a finished batch: every device done, none failed, each with its
/// assigned hub and its key erased once bundled. (Exactly-once registration is DPS's count, in
/// [`assert_batch_complete`].)
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

/// Every file of the scratch folder (but the emulator's own data folder) with its length and
/// modification time.
fn tree(emu: &Emu) -> BTreeMap<std::path::PathBuf, (u64, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![emu.dir.path().to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.path() == emu.path("emulator") {
                continue;
            }
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                todo.push(e.path());
            }
            out.insert(e.path(), (meta.len(), meta.modified().unwrap()));
        }
    }
    out
}

#[test]
fn a_dry_run_prints_the_plan_of_every_device_and_does_nothing() {
    let emu = Emu::start(None);
    make_group(&emu, "line-d");
    manifest(&emu, 5);
    let before = tree(&emu);
    let mut args = provision_args("line-d");
    args.push("--dry-run".into());
    let out = emu.cmd().args(&args).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("would provision 5 device(s)"), "{table}");
    assert!(table.contains("nothing was done"), "{table}");
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("m-")).collect();
    assert_eq!(rows.len(), 5, "one row per device: {table}");
    for row in rows {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            &cells[1..],
            ["provision", "planned", "issue", "create", "register"],
            "{row}"
        );
    }
    args.extend(["--output".into(), "json".into()]);
    let out = emu.cmd().args(&args).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["dryRun"], true);
    assert_eq!(plan["groupId"], "line-d");
    let devices = plan["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 5);
    assert_eq!(devices[4]["deviceId"], "m-0005");
    for d in devices {
        assert_eq!(d["action"], "provision", "{d}");
        assert_eq!(d["createDevice"], true, "{d}");
        assert_eq!(d["register"], true, "{d}");
    }
    // Nothing was done: no file written or touched, nothing in the emulator.
    assert_eq!(tree(&emu), before, "a dry run writes no file");
    assert!(!emu.path("line.journal").exists());
    assert!(!emu.path("out").exists());
    assert!(emu.devices().is_empty());
}

#[test]
fn the_report_lists_every_device_with_its_outcome_across_runs() {
    let emu = Emu::start(None);
    make_group(&emu, "line-r");
    // m-0003 names an organization that does not exist yet: IoT Central refuses the device
    // (a permanent error), the others go through.
    std::fs::write(
        emu.path("line.csv"),
        "deviceId,displayName,organization\nm-0001,A,\nm-0002,B,\nm-0003,C,nowhere\nm-0004,D,\n",
    )
    .unwrap();
    let out = emu.cmd().args(provision_args("line-r")).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let summary = String::from_utf8(out.stdout).unwrap();
    assert!(
        summary.contains(&format!(
            "every device and its outcome: {}",
            std::path::Path::new("out").join("report.json").display()
        )),
        "the summary says where the full list is: {summary}"
    );
    assert!(
        !summary.contains("m-0001"),
        "the summary stays short: {summary}"
    );
    let outcomes = |r: &serde_json::Value| -> Vec<(String, String)> {
        r["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["deviceId"].as_str().unwrap().to_owned(),
                    d["outcome"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let r = report(&emu);
    assert_eq!(
        outcomes(&r),
        pairs(&[
            ("m-0001", "done"),
            ("m-0002", "done"),
            ("m-0003", "failed"),
            ("m-0004", "done")
        ])
    );
    let failed = &r["devices"][2];
    assert!(
        failed["reason"].as_str().unwrap().contains("nowhere"),
        "{failed}"
    );
    assert_eq!(failed["attempts"], 1, "a permanent error is not retried");
    assert_eq!(failed["state"], "cert_issued");

    // The plan of the resume: done devices skipped, m-0003 picks up where it stopped.
    let mut resume = provision_args("line-r");
    resume.push("--resume".into());
    let mut dry = resume.clone();
    dry.extend(["--dry-run".into(), "--output".into(), "json".into()]);
    let out = emu.cmd().args(&dry).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let actions: Vec<&str> = plan["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["skip", "skip", "resume", "skip"]);
    let d3 = &plan["devices"][2];
    assert_eq!(
        (
            &d3["from"],
            &d3["issueCredential"],
            &d3["createDevice"],
            &d3["register"]
        ),
        (
            &"cert_issued".into(),
            &false.into(),
            &true.into(),
            &true.into()
        ),
        "{d3}"
    );
    assert!(
        d3["lastError"].as_str().unwrap().contains("nowhere"),
        "{d3}"
    );
    let table = emu.cmd().args(&resume).arg("--dry-run").output().unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("m-0001") && l.contains("skip (done)")),
        "{table}"
    );

    // With the organization in place the resume finishes m-0003 and skips the others; the
    // report printed with --output json is the same document as the file.
    emu.cmd()
        .args(["org", "create", "nowhere", "--display-name", "Nowhere"])
        .assert()
        .success();
    let out = emu
        .cmd()
        .args(&resume)
        .args(["--output", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        outcomes(&printed),
        pairs(&[
            ("m-0001", "skipped"),
            ("m-0002", "skipped"),
            ("m-0003", "done"),
            ("m-0004", "skipped")
        ])
    );
    assert_eq!(outcomes(&report(&emu)), outcomes(&printed));
    assert_eq!(printed["outcome"], "complete");
}

#[test]
fn a_batch_under_injected_faults_ends_with_every_device_registered_once() {
    let emu = Emu::start(None);
    make_group(&emu, "line-f");
    // m-0013 names an organization that does not exist yet: IoT Central refuses it (a
    // permanent failure), so the first run ends as a partial batch whatever the faults do, and
    // its failure report is checked on every run, not only when a fault happens to win.
    let mut csv = String::from("deviceId,displayName,organization\n");
    for i in 1..=40 {
        let org = if i == 13 { "later" } else { "" };
        csv.push_str(&format!("m-{i:04},Machine {i},{org}\n"));
    }
    std::fs::write(emu.path("line.csv"), csv).unwrap();
    emu.settings(serde_json::json!({
        "faults": {"seed": 7, "errorRate": 0.15, "throttleRate": 0.15, "throttleBurst": 2, "dropRate": 0.05}
    }));
    let first = emu.cmd().args(provision_args("line-f")).output().unwrap();
    // The faults really hit the batch, on both services.
    let stats = emu.stats();
    eprintln!("faults injected: {:?}", stats.of(counter::FAULTS));
    for kind in ["503", "429", "drop"] {
        assert!(
            stats.get(counter::FAULTS, &format!("api.{kind}")) > 0,
            "no {kind} injected on IoT Central: {stats:?}"
        );
    }
    assert!(
        stats.get(counter::FAULTS, "dps.503") + stats.get(counter::FAULTS, "dps.429") > 0,
        "no fault injected on DPS: {stats:?}"
    );
    assert_eq!(first.status.code(), Some(1), "{first:?}");
    // Failures are data: each listed in the report with its reason and attempts, and the
    // counts add up.
    let r = report(&emu);
    let count = |k: &str| r[k].as_u64().unwrap();
    assert_eq!(
        count("succeeded") + count("failed") + count("pending"),
        40,
        "{r}"
    );
    let failures = r["failures"].as_array().unwrap();
    assert_eq!(failures.len() as u64, count("failed"), "{r}");
    for f in failures {
        assert!(f["reason"].as_str().unwrap().len() > 3, "{f}");
        assert!(f["attempts"].as_u64().unwrap() >= 1, "{f}");
    }
    let m13 = failures
        .iter()
        .find(|f| f["deviceId"] == "m-0013")
        .unwrap_or_else(|| panic!("m-0013 is listed as failed: {r}"));
    assert!(m13["reason"].as_str().unwrap().contains("later"), "{m13}");

    emu.settings(
        serde_json::json!({"faults": {"errorRate": 0.0, "throttleRate": 0.0, "dropRate": 0.0}}),
    );
    emu.cmd()
        .args(["org", "create", "later", "--display-name", "Later"])
        .assert()
        .success();
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
    // The report is written and says the batch is not finished; it lists every device, the
    // ones the interrupt left out as pending.
    let r = report(&emu);
    assert!(r["pending"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    let devices = r["devices"].as_array().unwrap();
    assert_eq!(devices.len(), n, "{r}");
    let count = |o: &str| devices.iter().filter(|d| d["outcome"] == o).count() as u64;
    assert_eq!(count("pending"), r["pending"].as_u64().unwrap(), "{r}");
    assert_eq!(
        count("done"),
        r["completedThisRun"].as_u64().unwrap(),
        "{r}"
    );
    // --resume finishes the batch: every device registered once, every bundle whole.
    emu.settings(serde_json::json!({"faults": {"latencyMs": 0}}));
    let mut resume = provision_args("line-c");
    resume.push("--resume".into());
    emu.cmd().args(&resume).assert().success();
    assert_batch_complete(&emu, n);
    assert_journal_done(&emu, n);
}
