//! `iotc renew` against the emulator, through the real binary: 1,000 devices re-issued and
//! re-registered with the IoT Central device count unchanged, each DPS record holding the new
//! certificate, new bundles beside the untouched old ones; the `--expiring-within` selection;
//! renewal from the devices' CSRs (the devices keep their keys, nothing registers).

use crate::common_workflow::{bundles, openssl_verify, Emu};
use iotc::workflow::journal::Journal;
use iotc::workflow::ledger::{self, RenewState};
use std::collections::BTreeMap;

/// `iotc renew` of the batch with pki/line, plus `extra`.
fn renew(emu: &Emu, extra: &[&str]) -> std::process::Output {
    emu.cmd()
        .args([
            "renew",
            "--journal",
            "line.journal",
            "--out",
            "out",
            "--ca",
            "pki/line",
        ])
        .args(extra)
        .output()
        .unwrap()
}

fn provision(emu: &Emu, n: u64, prefix: &str) {
    emu.cmd()
        .args([
            "onboard",
            "x509",
            "--group",
            "line",
            "--ca",
            "pki/root",
            "--no-password",
        ])
        .args(["--intermediate", "pki/line"])
        .assert()
        .success();
    emu.cmd()
        .args(["provision", "--count", &n.to_string(), "--prefix", prefix])
        .args([
            "--journal",
            "line.journal",
            "--out",
            "out",
            "--group",
            "line",
        ])
        .args([
            "--ca",
            "pki/line",
            "--no-password",
            "--no-progress",
            "--concurrency",
            "64",
        ])
        .assert()
        .success();
}

/// Every file under `dir` with its content.
fn snapshot(dir: &std::path::Path) -> BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut m = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if !p
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("renewal-")
                {
                    stack.push(p);
                }
            } else {
                m.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    m
}

fn sha1_of_pem(path: &std::path::Path) -> String {
    let der = iotc::cert::parse_pem_certs(&std::fs::read(path).unwrap()).unwrap();
    iotc::cert::sha1_thumbprint(&der[0])
}

#[test]
fn a_thousand_devices_are_renewed_and_reregistered_as_the_same_devices() {
    let n = 1000;
    let emu = Emu::start(None);
    emu.settings(serde_json::json!({"dpsAssigningPolls": 0, "dpsRetryAfterSeconds": 0}));
    provision(&emu, n, "r-");
    let before: Vec<String> = emu.devices().into_iter().filter_map(|d| d.id).collect();
    assert_eq!(before.len(), n as usize);
    let old_files = snapshot(&emu.path("out"));

    let started = std::time::Instant::now();
    let out = renew(
        &emu,
        &["--no-password", "--no-progress", "--concurrency", "64"],
    );
    assert!(out.status.success(), "{out:?}");
    eprintln!("renewed {n} devices in {:?}", started.elapsed());

    // One IoT Central device per id, the same ids.
    let mut after: Vec<String> = emu.devices().into_iter().filter_map(|d| d.id).collect();
    let mut before = before;
    before.sort();
    after.sort();
    assert_eq!(after, before, "IoT Central keeps one device per id");
    // The old bundles are untouched; the new ones are whole, one per device.
    assert_eq!(
        snapshot(&emu.path("out")),
        old_files,
        "old bundles untouched"
    );
    let renewed = bundles(&emu.path("out/renewal-1"));
    assert_eq!(renewed.len(), n as usize);
    // The journal: every device renewed, each re-registered exactly once, keys erased.
    let j = Journal::open(&emu.path("line.journal")).unwrap();
    let rows = ledger::round_renewals(&j, 1).unwrap();
    assert_eq!(rows.len(), n as usize);
    for r in &rows {
        assert_eq!(r.state, RenewState::BundleWritten, "{}", r.device_id);
        assert_eq!(r.register_calls, 1, "{}", r.device_id);
        assert!(r.secret.is_none(), "{} key erased", r.device_id);
    }
    // DPS's record holds the new certificate (a sample: each lookup is a TLS handshake).
    for i in (1..=n).step_by(97) {
        let id = format!("r-{i:04}");
        let old_sha1 = sha1_of_pem(&emu.path(&format!("out/{id}/{id}_cert.pem")));
        let new_sha1 = sha1_of_pem(&emu.path(&format!("out/renewal-1/{id}/{id}_cert.pem")));
        assert_ne!(old_sha1, new_sha1);
        let r = emu.registration_state(&emu.path("out/renewal-1"), &id);
        let recorded = r.x509.unwrap().certificate_info.unwrap().sha1_thumbprint;
        assert_eq!(
            recorded, new_sha1,
            "{id}: DPS records the renewed certificate"
        );
        assert_eq!(r.device_id.as_deref(), Some(id.as_str()));
    }
    let (ok, out) = openssl_verify(
        &emu.path("pki/root_cert.pem"),
        Some(&emu.path("out/renewal-1/r-0001/r-0001_fullchain.pem")),
        &emu.path("out/renewal-1/r-0001/r-0001_cert.pem"),
    );
    assert!(ok, "{out}");
    // Freshly renewed certificates do not expire within 30 days: nothing to renew.
    let out = renew(&emu, &["--no-password", "--expiring-within", "30"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to renew"));
}

#[test]
fn expiring_within_selects_and_csrs_renew_without_the_station_holding_keys() {
    let emu = Emu::start(None);
    emu.settings(serde_json::json!({"dpsAssigningPolls": 0, "dpsRetryAfterSeconds": 0}));
    provision(&emu, 4, "c-");
    // Device certificates last 365 days: within 400 days every one expires, so a dry run
    // plans all four; it writes nothing.
    let out = renew(
        &emu,
        &["--no-password", "--expiring-within", "400", "--dry-run"],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("would renew 4 device(s)"), "{text}");
    assert!(!emu.path("out/renewal-1").exists());
    // CSRs: each device made its own key; one CSR names another device and is refused.
    std::fs::create_dir_all(emu.path("csrs")).unwrap();
    let mut keys = Vec::new();
    for (i, cn) in ["c-1", "c-2", "c-3", "someone-else"].iter().enumerate() {
        let key = emu.path(&format!("csrs/k{i}.pem"));
        let csr = emu.path(&format!("csrs/c-{}.csr", i + 1));
        let ok = std::process::Command::new("openssl")
            .args([
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr)
            .args(["-subj", &format!("/CN={cn}")])
            .output()
            .unwrap();
        assert!(ok.status.success(), "{ok:?}");
        keys.push(key);
    }
    let out = renew(&emu, &["--csr-dir", "csrs", "--no-progress"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "one device failed: {text}");
    assert!(text.contains("the CN must be the device id"), "{text}");
    let cert = emu.path("out/renewal-1/c-1/c-1_cert.pem");
    let (ok, v) = openssl_verify(
        &emu.path("pki/root_cert.pem"),
        Some(&emu.path("out/renewal-1/c-1/c-1_fullchain.pem")),
        &cert,
    );
    assert!(ok, "{v}");
    assert!(
        !emu.path("out/renewal-1/c-1/c-1_key.pem").exists(),
        "the device keeps its key"
    );
    // The certificate is for the device's own key.
    let pubkey = |args: &[&str], path: &std::path::Path| {
        let o = std::process::Command::new("openssl")
            .args(args)
            .arg(path)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(
        pubkey(&["x509", "-noout", "-pubkey", "-in"], &cert),
        pubkey(&["pkey", "-pubout", "-in"], &keys[0])
    );
    // The failed device's CSR is replaced; rerunning resumes the round and finishes it.
    let fixed = std::process::Command::new("openssl")
        .args(["req", "-new", "-key"])
        .arg(&keys[3])
        .arg("-out")
        .arg(emu.path("csrs/c-4.csr"))
        .args(["-subj", "/CN=c-4"])
        .output()
        .unwrap();
    assert!(fixed.status.success());
    let out = renew(&emu, &["--csr-dir", "csrs", "--no-progress"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("resuming, left: 1"), "{text}");
    assert!(emu.path("out/renewal-1/c-4/c-4_cert.pem").exists());
    assert!(
        !emu.path("out/renewal-2").exists(),
        "the same round, not a new one"
    );
}

#[test]
fn renew_killed_9_mid_way_and_rerun_reregisters_every_device_once_with_its_new_certificate() {
    let n = 40;
    let emu = Emu::start(None);
    emu.settings(serde_json::json!({"dpsAssigningPolls": 0, "dpsRetryAfterSeconds": 0}));
    provision(&emu, n, "k-");
    // Every request delayed: the round takes seconds, so the kill lands mid-way, with
    // devices between their commit of `registering` and DPS's answer.
    emu.settings(serde_json::json!({"faults": {"latencyMs": 150}}));
    let mut child = emu
        .iotc()
        .args([
            "renew",
            "--journal",
            "line.journal",
            "--out",
            "out",
            "--ca",
            "pki/line",
        ])
        .args(["--no-password", "--no-progress", "--concurrency", "8"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(900));
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    let states: BTreeMap<String, usize> = {
        let j = Journal::open(&emu.path("line.journal")).unwrap();
        let mut m = BTreeMap::new();
        for r in ledger::round_renewals(&j, 1).unwrap_or_default() {
            *m.entry(r.state.as_str().to_owned()).or_default() += 1;
        }
        m
    };
    eprintln!("killed with {states:?}");
    emu.settings(serde_json::json!({"faults": {"latencyMs": 0}}));
    let out = renew(&emu, &["--no-password", "--no-progress"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("resuming"),
        "the rerun resumes round 1: {out:?}"
    );
    assert_eq!(emu.devices().len(), n as usize);
    let j = Journal::open(&emu.path("line.journal")).unwrap();
    for r in ledger::round_renewals(&j, 1).unwrap() {
        let id = r.device_id.as_str();
        assert_eq!(r.state, RenewState::BundleWritten, "{id}");
        let new_sha1 = sha1_of_pem(&emu.path(&format!("out/renewal-1/{id}/{id}_cert.pem")));
        let state = emu.registration_state(&emu.path("out/renewal-1"), id);
        let recorded = state
            .x509
            .unwrap()
            .certificate_info
            .unwrap()
            .sha1_thumbprint;
        assert_eq!(
            recorded, new_sha1,
            "{id}: DPS holds the renewed certificate"
        );
    }
    assert!(!emu.path("out/renewal-2").exists());
}

#[test]
fn a_csr_batch_is_renewed_only_from_new_csrs() {
    let emu = Emu::start(None);
    emu.cmd()
        .args(["onboard", "x509", "--group", "line", "--ca", "pki/root"])
        .args(["--intermediate", "pki/line", "--no-password"])
        .assert()
        .success();
    std::fs::create_dir_all(emu.path("csrs")).unwrap();
    crate::common_cert::ossl_csr(emu.dir.path(), "d-1.key", "d-1", "csrs/d-1.csr");
    emu.cmd()
        .args([
            "provision",
            "--csr-dir",
            "csrs",
            "--journal",
            "line.journal",
        ])
        .args(["--out", "out", "--group", "line", "--ca", "pki/line"])
        .assert()
        .success();
    // Without --csr-dir the station would make the device a key: refused, nothing planned.
    let out = renew(&emu, &["--no-password", "--no-progress"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("is a CSR batch") && err.contains("--csr-dir"),
        "{err}"
    );
    assert!(!emu.path("out/renewal-1").exists());
    let out = renew(&emu, &["--csr-dir", "csrs", "--no-progress"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(emu.path("out/renewal-1/d-1/d-1_cert.pem").exists());
    assert!(!emu.path("out/renewal-1/d-1/d-1_key.pem").exists());
}
