//! `iotc revoke` of a lost station against the emulator, through the real binary: killed
//! with SIGKILL mid-way and resumed, every device is blocked with exactly one successful
//! PATCH (counted by the emulator per device: a set of ids could not see a second one); the
//! CRLs verify with openssl and make `openssl verify -crl_check` refuse the station's devices
//! and its intermediate; DPS refuses the blocked devices; and the command says that the group,
//! which trusts the root above the stolen intermediate, still accepts new certificates from it.

use crate::common_workflow::Emu;
use std::process::Stdio;
use std::time::Duration;

/// A root-trusting group `line-r` whose devices are signed by the intermediate pki/line.
fn station(emu: &Emu, n: u64) {
    emu.cmd()
        .args([
            "onboard",
            "x509",
            "--group",
            "setup",
            "--ca",
            "pki/root",
            "--no-password",
        ])
        .args(["--intermediate", "pki/line"])
        .assert()
        .success();
    emu.cmd()
        .args([
            "onboard",
            "x509",
            "--group",
            "line-r",
            "--ca",
            "pki/root",
            "--no-password",
        ])
        .assert()
        .success();
    emu.cmd()
        .args(["provision", "--count", &n.to_string(), "--prefix", "s-"])
        .args([
            "--journal",
            "station.journal",
            "--out",
            "out",
            "--group",
            "line-r",
        ])
        .args(["--ca", "pki/line", "--no-password", "--no-progress"])
        .assert()
        .success();
}

fn openssl(args: &[&str], emu: &Emu) -> (bool, String) {
    let o = std::process::Command::new("openssl")
        .args(args)
        .current_dir(emu.dir.path())
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn patches(emu: &Emu, id: &str) -> u64 {
    emu.emulator
        .as_ref()
        .unwrap()
        .successes("PATCH", &format!("/api/devices/{id}"))
}

#[test]
fn revoke_killed_9_mid_way_and_resumed_blocks_every_device_exactly_once() {
    let n = 40;
    let mut mid_way = 0;
    for trial in 0..3 {
        let emu = Emu::start(None);
        emu.settings(serde_json::json!({"dpsAssigningPolls": 0, "dpsRetryAfterSeconds": 0}));
        station(&emu, n);
        // Every request delayed: the revocation takes seconds, so the kill lands mid-way.
        emu.settings(serde_json::json!({"faults": {"latencyMs": 100}}));
        let mut child = emu
            .iotc()
            .args([
                "revoke",
                "--journal",
                "station.journal",
                "--concurrency",
                "4",
                "--no-progress",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rand::random_range(400..1200)));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let blocked_before: u64 = (1..=n).map(|i| patches(&emu, &format!("s-{i:02}"))).sum();
        eprintln!("trial {trial}: killed with {blocked_before} of {n} blocked");
        if blocked_before > 0 && blocked_before < n {
            mid_way += 1;
        }
        emu.settings(serde_json::json!({"faults": {"latencyMs": 0}}));
        let out = emu
            .cmd()
            .args(["revoke", "--journal", "station.journal", "--no-progress"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for i in 1..=n {
            let id = format!("s-{i:02}");
            assert_eq!(patches(&emu, &id), 1, "{id}: exactly one PATCH");
        }
        assert!(emu.devices().iter().all(|d| d.enabled == Some(false)));
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(emu.path("station-revocation.json")).unwrap())
                .unwrap();
        let devices = report["devices"].as_array().unwrap();
        assert_eq!(devices.len(), n as usize, "{report}");
        assert!(
            devices.iter().all(|d| d["outcome"] == "blocked"),
            "{report}"
        );
        // Run again: nothing left, nothing sent.
        emu.cmd()
            .args(["revoke", "--journal", "station.journal", "--no-progress"])
            .assert()
            .success();
        assert!((1..=n).all(|i| patches(&emu, &format!("s-{i:02}")) == 1));
    }
    assert!(mid_way >= 1, "at least one kill must land mid-way");
}

#[test]
fn crls_verify_and_refuse_the_station_and_the_group_is_said_to_trust_the_root_above_it() {
    let emu = Emu::start(None);
    emu.settings(serde_json::json!({"dpsAssigningPolls": 0, "dpsRetryAfterSeconds": 0}));
    station(&emu, 5);
    let out = emu
        .cmd()
        .args([
            "revoke",
            "--journal",
            "station.journal",
            "--reason",
            "cACompromise",
        ])
        .args([
            "--ca",
            "pki/line",
            "--issuer-ca",
            "pki/root",
            "--out",
            "rev",
            "--no-progress",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("a CA above the stolen one"), "{text}");
    assert!(
        text.contains("iotc rollover stage --group line-r"),
        "{text}"
    );

    // The CRLs are signed by their CAs.
    let (ok, v) = openssl(
        &[
            "crl",
            "-in",
            "rev/station-devices.crl.pem",
            "-CAfile",
            "pki/line_cert.pem",
            "-noout",
        ],
        &emu,
    );
    assert!(ok && v.contains("verify OK"), "{v}");
    let (ok, v) = openssl(
        &[
            "crl",
            "-in",
            "rev/station-ca.crl.pem",
            "-CAfile",
            "pki/root_cert.pem",
            "-noout",
        ],
        &emu,
    );
    assert!(ok && v.contains("verify OK"), "{v}");
    let (_, listing) = openssl(
        &[
            "crl",
            "-in",
            "rev/station-devices.crl.pem",
            "-noout",
            "-text",
        ],
        &emu,
    );
    assert_eq!(listing.matches("Serial Number:").count(), 5, "{listing}");
    assert!(listing.contains("CA Compromise"), "{listing}");
    // A revoked device is refused by a relying party checking the CRL; a certificate of the
    // same CA that the journal does not hold is not.
    let dev = ["-untrusted", "pki/line_cert.pem", "out/s-3/s-3_cert.pem"];
    let base = ["verify", "-CAfile", "pki/root_cert.pem"];
    let (ok, v) = openssl(&[&base[..], &dev].concat(), &emu);
    assert!(ok, "without the CRL the chain is good: {v}");
    let (ok, v) = openssl(
        &[
            &base[..],
            &["-crl_check", "-CRLfile", "rev/station-devices.crl.pem"],
            &dev,
        ]
        .concat(),
        &emu,
    );
    assert!(!ok && v.contains("certificate revoked"), "{v}");
    emu.cmd()
        .args([
            "cert",
            "device",
            "--ca",
            "pki/line",
            "--out",
            "other",
            "--no-password",
        ])
        .arg("stranger")
        .assert()
        .success();
    let stranger = ["-untrusted", "pki/line_cert.pem", "other/stranger_cert.pem"];
    let (ok, v) = openssl(
        &[
            &base[..],
            &["-crl_check", "-CRLfile", "rev/station-devices.crl.pem"],
            &stranger,
        ]
        .concat(),
        &emu,
    );
    assert!(ok, "a certificate the CRL does not list passes: {v}");
    // With the CA's CRL too, the whole chain is refused: the intermediate is revoked.
    let (ok, v) = openssl(
        &[
            &base[..],
            &[
                "-crl_check_all",
                "-CRLfile",
                "rev/station-devices.crl.pem",
                "-CRLfile",
                "rev/station-ca.crl.pem",
            ],
            &stranger,
        ]
        .concat(),
        &emu,
    );
    assert!(!ok && v.contains("revoked"), "{v}");

    // DPS refuses a blocked device (IoT Central's 400209), while a new id the stolen
    // intermediate signs still registers: what the warning above says.
    let out = emu
        .cmd()
        .args(["dps", "register", "--registration-id", "s-2"])
        .args([
            "--cert",
            "out/s-2/s-2_fullchain.pem",
            "--key",
            "out/s-2/s-2_key.pem",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "a blocked device is refused");
    assert!(err.contains("400209") && err.contains("blocked"), "{err}");
    let out = emu
        .cmd()
        .args(["dps", "register", "--registration-id", "stranger"])
        .args([
            "--cert",
            "other/stranger_fullchain.pem",
            "--key",
            "other/stranger_key.pem",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the root-trusting group still accepts the intermediate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
