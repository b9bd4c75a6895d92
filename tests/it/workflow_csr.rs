//! CSR batches end to end, through the real binary against the emulator: devices (played by
//! the openssl CLI) make their keys and hand over CSRs; `iotc provision --csr-dir` checks them
//! all, signs them, creates the IoT Central devices and writes bundles with certificates only;
//! the devices register themselves; `iotc provision status` follows them. No private key may
//! appear in the journal (file and -wal, dumped), the bundles, the out folder or the temp dir.

use crate::common_cert::{openssl, ossl_csr};
use crate::common_workflow::{bundles, openssl_verify, per_device, Emu};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn make_group(emu: &Emu, group: &str) {
    emu.cmd()
        .args(["onboard", "x509", "--group", group, "--ca", "pki/root"])
        .args(["--intermediate", "pki/line", "--no-password"])
        .assert()
        .success();
}

/// Devices `c-0001`...: each "device" makes its key (kept in `device-keys/`, never shown to
/// iotc) and its CSR in `csrs/`; every third CSR is DER.
fn device_csrs(emu: &Emu, n: usize) -> Vec<String> {
    for d in ["csrs", "device-keys"] {
        std::fs::create_dir_all(emu.path(d)).unwrap();
    }
    (1..=n)
        .map(|i| {
            let id = format!("c-{i:04}");
            ossl_csr(
                emu.dir.path(),
                &format!("device-keys/{id}.key"),
                &id,
                &format!("csrs/{id}.csr"),
            );
            if i % 3 == 0 {
                let csr = format!("csrs/{id}.csr");
                openssl(
                    emu.dir.path(),
                    &["req", "-in", &csr, "-outform", "DER", "-out", &csr],
                )
                .ok();
            }
            id
        })
        .collect()
}

fn provision(group: &str) -> Vec<String> {
    [
        "provision",
        "--csr-dir",
        "csrs",
        "--journal",
        "csr.journal",
        "--out",
        "out",
        "--group",
        group,
        "--ca",
        "pki/line",
        "--no-progress",
        "--concurrency",
        "8",
    ]
    .map(String::from)
    .to_vec()
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Asserts no file under `dir` holds a PEM private key (of any kind: `PRIVATE KEY`,
/// `EC PRIVATE KEY`, `ENCRYPTED PRIVATE KEY`).
fn assert_no_private_key(dir: &Path) {
    for f in files_under(dir) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(11).any(|w| w == b"PRIVATE KEY"),
            "{} holds a private key",
            f.display()
        );
    }
}

/// The journal's rows as text, every column the library stores (a dump, as `sqlite3 .dump`
/// would give).
fn dump_journal(path: &Path) -> String {
    let j = iotc::workflow::journal::Journal::open(path).unwrap();
    let mut s = String::new();
    for r in j.all().unwrap() {
        s.push_str(&format!(
            "{} {} {:?} {:?} {:?} {:?}\n",
            r.device_id,
            r.state,
            r.secret.as_ref().map(|k| k.expose().to_owned()),
            r.cert_pem,
            r.chain_pem,
            r.csr_sha256
        ));
    }
    assert!(
        s.contains("BEGIN CERTIFICATE"),
        "the dump has the certificates"
    );
    s
}

/// What the device registers with: its certificate chain from the bundle, its own key.
fn register_as_device(emu: &Emu, id: &str) -> iotc::dps::Registration {
    let client = emu.dps_client(
        &emu.path(&format!("out/{id}/{id}_fullchain.pem")),
        &emu.path(&format!("device-keys/{id}.key")),
    );
    emu.rt
        .block_on(client.register(&id.parse().unwrap(), None))
        .unwrap()
}

fn status_json(emu: &Emu) -> serde_json::Value {
    let out = emu
        .cmd()
        .args(["provision", "status", "--journal", "csr.journal"])
        .args(["--output", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn statuses(v: &serde_json::Value) -> BTreeMap<String, String> {
    per_device(v, "status").into_iter().collect()
}

#[test]
fn a_csr_batch_signs_creates_and_bundles_with_no_private_key_anywhere() {
    let emu = Emu::start(None);
    make_group(&emu, "csr-a");
    let ids = device_csrs(&emu, 12);
    // The manifest gives the IoT Central fields; the CSRs come from the folder.
    let mut m = String::from("deviceId,displayName\n");
    for id in &ids {
        m.push_str(&format!("{id},Sensor {id}\n"));
    }
    std::fs::write(emu.path("m.csv"), m).unwrap();
    let tmp = emu.path("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let mut args = provision("csr-a");
    args.extend(["--manifest".into(), "m.csv".into()]);
    // The dry run's plan: every CSR signed, every IoT Central device created, none
    // registered by the station; nothing done.
    let out = emu.cmd().args(&args).arg("--dry-run").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("would sign 12 CSR(s) and create 12 IoT Central device(s)"),
        "{text}"
    );
    let out = emu
        .cmd()
        .args(&args)
        .args(["--dry-run", "--output", "json"])
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["csr"], true, "{plan}");
    for d in plan["devices"].as_array().unwrap() {
        assert_eq!(
            (&d["createDevice"], &d["register"]),
            (&true.into(), &false.into()),
            "{d}"
        );
    }
    assert!(!emu.path("csr.journal").exists() && !emu.path("out").exists());
    // No key password and no --no-password: there is no key to protect.
    let out = emu.cmd().args(&args).env("TMPDIR", &tmp).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("iotc provision status --journal"),
        "{stdout}"
    );

    // IoT Central has every device once, with its manifest fields, not provisioned yet.
    let devices = emu.devices();
    assert_eq!(devices.len(), ids.len());
    for d in &devices {
        let id = d.id.clone().unwrap();
        assert_eq!(
            d.display_name.as_deref(),
            Some(format!("Sensor {id}").as_str())
        );
        assert_eq!(d.provisioned, Some(false), "{id} registers itself later");
    }
    // Each bundle: the certificate and the chain, nothing else; the certificate is for the
    // device's own key and chains to the root (openssl says so).
    let b = bundles(&emu.path("out"));
    assert_eq!(b.len(), ids.len());
    for id in &ids {
        let json = &b[id];
        assert_eq!(
            json.files.keys().collect::<Vec<_>>(),
            ["cert", "fullchain"],
            "{id}"
        );
        assert!(json.assigned_hub.is_none() && json.csr_sha256.is_some());
        let mut names: Vec<String> = std::fs::read_dir(emu.path(&format!("out/{id}")))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "bundle.json".to_string(),
                format!("{id}_cert.pem"),
                format!("{id}_fullchain.pem")
            ]
        );
        let (ok, why) = openssl_verify(
            &emu.path("pki/root_cert.pem"),
            Some(&emu.path(&format!("out/{id}/{id}_fullchain.pem"))),
            &emu.path(&format!("out/{id}/{id}_cert.pem")),
        );
        assert!(ok, "{why}");
        let cert_key = openssl(
            emu.dir.path(),
            &[
                "x509",
                "-in",
                &format!("out/{id}/{id}_cert.pem"),
                "-noout",
                "-pubkey",
            ],
        )
        .ok()
        .stdout;
        let device_key = openssl(
            emu.dir.path(),
            &["pkey", "-in", &format!("device-keys/{id}.key"), "-pubout"],
        )
        .ok()
        .stdout;
        assert_eq!(
            cert_key, device_key,
            "{id}: the certificate is for the device's key"
        );
    }
    // The journal: the CSR's SHA-256 and the certificate, never a key, in its rows and in
    // the raw bytes of the file and its -wal; nor in the out folder or the temp dir.
    let dump = dump_journal(&emu.path("csr.journal"));
    assert!(!dump.contains("PRIVATE KEY"), "{dump}");
    for f in ["csr.journal", "csr.journal-wal"] {
        let path = emu.path(f);
        if path.exists() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(!bytes.windows(11).any(|w| w == b"PRIVATE KEY"), "{f}");
        }
    }
    let j = iotc::workflow::journal::Journal::open(&emu.path("csr.journal")).unwrap();
    assert!(j.meta().csr);
    for r in j.all().unwrap() {
        assert!(
            r.secret.is_none() && r.register_calls == 0,
            "{}",
            r.device_id
        );
        let csr = std::fs::read(emu.path(&format!("csrs/{}.csr", r.device_id))).unwrap();
        let der = iotc::cert::DeviceCsr::parse(&csr).unwrap();
        assert_eq!(r.csr_sha256.as_deref(), Some(der.sha256_hex().as_str()));
        assert_eq!(
            r.cert_pem.as_deref(),
            Some(
                std::fs::read_to_string(emu.path(&format!("out/{0}/{0}_cert.pem", r.device_id)))
                    .unwrap()
                    .as_str()
            )
        );
    }
    assert_no_private_key(&emu.path("out"));
    assert_no_private_key(&tmp);

    // The devices register themselves; status follows them.
    let v = status_json(&emu);
    assert_eq!(v["counts"]["issued"], 12, "{v}");
    for id in &ids[..3] {
        let r = register_as_device(&emu, id);
        assert_eq!(r.status, Some(iotc::dps::EnrollmentStatus::Assigned));
    }
    emu.cmd()
        .args(["device", "delete", &ids[11]])
        .assert()
        .success();
    let v = status_json(&emu);
    let s = statuses(&v);
    assert_eq!(s[&ids[0]], "registered");
    assert_eq!(s[&ids[3]], "issued");
    assert_eq!(s[&ids[11]], "neverSeen");
    assert_eq!(
        (
            &v["counts"]["registered"],
            &v["counts"]["issued"],
            &v["counts"]["neverSeen"],
            &v["counts"]["pending"]
        ),
        (&3.into(), &8.into(), &1.into(), &0.into()),
        "{v}"
    );
    let table = emu
        .cmd()
        .args(["provision", "status", "--journal", "csr.journal"])
        .output()
        .unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&ids[11]) && l.contains("never seen")),
        "{table}"
    );
    assert!(
        table.contains("12 device(s): 3 registered, 8 issued, 1 never seen, 0 pending"),
        "{table}"
    );
    // A resume has nothing to do; without the batch's manifest it is refused, by name.
    let mut resume = args.clone();
    resume.push("--resume".into());
    emu.cmd().args(&resume).assert().success();
    let mut other = provision("csr-a");
    other.push("--resume".into());
    emu.cmd()
        .args(&other)
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "the journal was planned from manifest m.csv",
        ));
}

#[test]
fn every_bad_csr_is_reported_before_anything_is_sent() {
    let emu = Emu::start(None);
    make_group(&emu, "csr-b");
    std::fs::create_dir_all(emu.path("csrs")).unwrap();
    std::fs::create_dir_all(emu.path("k")).unwrap();
    let dir = emu.dir.path();
    ossl_csr(dir, "k/good.key", "good-1", "csrs/good-1.csr");
    ossl_csr(dir, "k/case.key", "Case-1", "csrs/case-1.csr");
    let req = |out: &str, args: &[&str]| {
        let mut a = vec!["req", "-new", "-nodes", "-out", out];
        a.extend(args);
        openssl(dir, &a).ok();
    };
    req(
        "csrs/rsa-1.csr",
        &[
            "-newkey",
            "rsa:1024",
            "-keyout",
            "k/rsa.key",
            "-subj",
            "/CN=rsa-1",
        ],
    );
    req(
        "csrs/k1-1.csr",
        &[
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:secp256k1",
            "-keyout",
            "k/k1.key",
            "-subj",
            "/CN=k1-1",
        ],
    );
    req(
        "csrs/ca-1.csr",
        &[
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-keyout",
            "k/ca.key",
            "-subj",
            "/CN=ca-1",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
        ],
    );
    req(
        "csrs/two-1.csr",
        &[
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-keyout",
            "k/two.key",
            "-subj",
            "/CN=two-1/CN=two-2",
            "-multivalue-rdn",
        ],
    );
    req(
        "csrs/san-1.csr",
        &[
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-keyout",
            "k/san.key",
            "-subj",
            "/CN=san-1",
            "-addext",
            "subjectAltName=DNS:san-1.example",
        ],
    );
    // A CSR whose signature no longer verifies.
    ossl_csr(dir, "k/bad.key", "sig-1", "csrs/sig-1.csr");
    openssl(
        dir,
        &[
            "req",
            "-in",
            "csrs/sig-1.csr",
            "-outform",
            "DER",
            "-out",
            "csrs/sig-1.csr",
        ],
    )
    .ok();
    let mut der = std::fs::read(emu.path("csrs/sig-1.csr")).unwrap();
    let last = der.len() - 1;
    der[last] ^= 0x01; // a bit of the signature itself
    std::fs::write(emu.path("csrs/sig-1.csr"), der).unwrap();
    std::fs::write(
        emu.path("csrs/junk-1.csr"),
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    )
    .unwrap();
    std::fs::write(
        emu.path("m.csv"),
        "deviceId,displayName\ngood-1,G\ncase-1,C\nrsa-1,R\nk1-1,K\nca-1,A\ntwo-1,T\nsig-1,S\njunk-1,J\nnone-1,N\n",
    )
    .unwrap();
    let mut args = provision("csr-b");
    args.extend(["--manifest".into(), "m.csv".into()]);
    let out = emu.cmd().args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("8 of 9 CSR(s) cannot be used, nothing was done"),
        "{stderr}"
    );
    for (file, line, why) in [
        ("case-1.csr", 3, "not the device id"),
        ("rsa-1.csr", 4, "RSA 1024-bit"),
        ("k1-1.csr", 5, "EC secp256k1"),
        ("ca-1.csr", 6, "CA:TRUE"),
        ("two-1.csr", 7, "more than one CN"),
        ("sig-1.csr", 8, "signature does not verify"),
        ("junk-1.csr", 9, "not a valid CSR"),
        ("none-1.csr", 10, "cannot read it"),
    ] {
        assert!(
            stderr.lines().any(|l| l.contains(file)
                && l.contains(why)
                && l.contains(&format!("manifest line {line},"))),
            "{file} ({why}) on line {line}:\n{stderr}"
        );
    }
    assert!(!stderr.contains("good-1.csr"), "{stderr}");
    // Nothing was done: no journal, no out folder, no device in IoT Central.
    assert!(!emu.path("csr.journal").exists());
    assert!(!emu.path("out").exists());
    assert!(emu.devices().is_empty());

    // With the bad ones gone, the batch runs; what the SAN CSR asked for is named as not
    // copied, and its certificate has no SAN.
    std::fs::write(
        emu.path("m.csv"),
        "deviceId,csr\ngood-1,\nsan-1,csrs/san-1.csr\n",
    )
    .unwrap();
    let out = emu.cmd().args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("subjectAltName (1)"), "{stderr}");
    let text = openssl(
        dir,
        &["x509", "-in", "out/san-1/san-1_cert.pem", "-noout", "-text"],
    )
    .ok()
    .stdout;
    assert!(!text.contains("Subject Alternative Name"), "{text}");
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
}

#[test]
fn key_flags_and_symmetric_groups_are_refused_in_a_csr_batch() {
    let emu = Emu::start(None);
    make_group(&emu, "csr-c");
    device_csrs(&emu, 1);
    std::fs::write(emu.path("pw.txt"), "pw\n").unwrap();
    for flag in ["--key-password-file", "--pfx-password-file"] {
        let mut args = provision("csr-c");
        args.extend([flag.into(), "pw.txt".into()]);
        emu.cmd()
            .args(&args)
            .assert()
            .code(2)
            .stderr(predicates::str::contains(format!(
                "{flag} does not apply to a CSR batch"
            )));
    }
    emu.cmd()
        .args(["onboard", "symmetric-key", "--group", "sk-c"])
        .assert()
        .success();
    let args: Vec<String> = provision("sk-c")
        .into_iter()
        .filter(|a| a != "--ca" && a != "pki/line")
        .collect();
    emu.cmd()
        .args(&args)
        .assert()
        .code(2)
        .stderr(predicates::str::contains("a CSR batch needs an x509 group"));
    assert!(emu.devices().is_empty());
}

#[test]
fn kill_9_during_a_csr_batch_then_resume_signs_and_creates_each_device_once() {
    let n = 24;
    let mut mid_batch = 0;
    for trial in 0..4 {
        let emu = Emu::start(None);
        make_group(&emu, "csr-k");
        let ids = device_csrs(&emu, n);
        // Every request delayed, so the batch lasts long enough to be killed inside it.
        let (delay, running) = emu.kill_9_at_random(&provision("csr-k"), 100, 200..900);
        if running {
            mid_batch += 1;
        }
        let mut resume = provision("csr-k");
        if emu.path("csr.journal").exists() {
            resume.push("--resume".into());
        }
        let out = emu.cmd().args(&resume).output().unwrap();
        assert!(out.status.success(), "trial {trial} ({delay:?}): {out:?}");
        // Every device once in IoT Central; its one certificate in the journal is the one in
        // its bundle, for its own key; still no key anywhere.
        let devices = emu.devices();
        assert_eq!(devices.len(), n, "trial {trial}");
        let j = iotc::workflow::journal::Journal::open(&emu.path("csr.journal")).unwrap();
        assert_eq!(j.counts().unwrap().done, n as u64);
        for (r, id) in j.all().unwrap().iter().zip(&ids) {
            assert_eq!(&r.device_id, id);
            let bundled =
                std::fs::read_to_string(emu.path(&format!("out/{id}/{id}_cert.pem"))).unwrap();
            assert_eq!(r.cert_pem.as_deref(), Some(bundled.as_str()), "{id}");
            assert!(r.secret.is_none());
        }
        assert_no_private_key(&emu.path("out"));
    }
    assert!(mid_batch >= 2, "most kills land mid-batch ({mid_batch})");
}
