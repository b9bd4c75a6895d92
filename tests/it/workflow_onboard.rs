//! `iotc onboard` end to end against the emulator, through the real binary: X.509 via a root,
//! via an intermediate (proof of possession on the intermediate), symmetric key, and a rerun
//! that changes nothing. Certificates are cross-checked with the openssl CLI.

use crate::common_workflow;

use common_workflow::{bundles, openssl_verify, Emu};
use iotc::central::CertificateEntry;
use iotc::emulator::stats::counter;

fn stdout(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stdout).into_owned()
}

/// `iotc onboard x509 --group GROUP --ca CA --no-password`, to be completed and run.
fn onboard_x509(emu: &Emu, group: &str, ca: &str) -> assert_cmd::Command {
    let mut c = emu.cmd();
    c.args([
        "onboard",
        "x509",
        "--group",
        group,
        "--ca",
        ca,
        "--no-password",
    ]);
    c
}

/// The primary CA certificate of `group`, as IoT Central holds it.
fn primary_ca(emu: &Emu, group: &str) -> iotc::central::models::SigningX509Certificate {
    let c = emu.client();
    emu.rt
        .block_on(c.get_enrollment_group_certificate(group, CertificateEntry::Primary))
        .unwrap()
}

/// Asserts the emulator issued `n` verification codes for the primary certificate of
/// `group`, accepted `n` proofs of possession for it, and saw no proof for any other.
fn assert_pop_calls(emu: &Emu, group: &str, n: u64) {
    let stats = emu.stats();
    let key = format!("{group}/primary");
    let expected: std::collections::BTreeMap<String, u64> =
        (n > 0).then(|| (key.clone(), n)).into_iter().collect();
    assert_eq!(
        stats.of(counter::VERIFICATION_CODES),
        expected,
        "generateVerificationCode calls"
    );
    assert_eq!(stats.of(counter::VERIFICATIONS), expected, "verify calls");
}

#[test]
fn x509_via_root_registers_devices_with_verified_ca() {
    let emu = Emu::start(None);
    let a = onboard_x509(&emu, "g-root", "pki/root")
        .args(["--count", "3", "--prefix", "r-", "--out", "out"])
        .assert()
        .success();
    let text = stdout(&a);
    assert!(
        text.contains("root CA") && text.contains("created"),
        "{text}"
    );
    // Proof of possession, as the emulator saw it: one verification code, one accepted proof
    // (the self-attested upload prints "proof of possession" too, so the output proves nothing).
    assert_pop_calls(&emu, "g-root", 1);

    let cert = primary_ca(&emu, "g-root");
    assert!(cert.verified, "the CA was verified by proof of possession");
    let root_pem = std::fs::read_to_string(emu.path("pki/root_cert.pem")).unwrap();
    let root_der = iotc::cert::parse_pem_certs(root_pem.as_bytes())
        .unwrap()
        .remove(0);
    assert_eq!(
        cert.info.unwrap().sha1_thumbprint,
        iotc::cert::sha1_thumbprint(&root_der)
    );

    let b = bundles(&emu.path("out"));
    assert_eq!(b.keys().collect::<Vec<_>>(), ["r-1", "r-2", "r-3"]);
    for (id, json) in &b {
        assert_eq!(json.id_scope, emu.info.id_scope);
        assert_eq!(json.registration_id, *id);
        assert!(!json.assigned_hub.is_empty());
        let (ok, out) = openssl_verify(
            &emu.path("pki/root_cert.pem"),
            None,
            &emu.path(&format!("out/{id}/{id}_cert.pem")),
        );
        assert!(ok, "openssl verify {id}: {out}");
    }
    let devices = emu.devices();
    for id in ["r-1", "r-2", "r-3"] {
        let d = devices
            .iter()
            .find(|d| d.id.as_deref() == Some(id))
            .unwrap_or_else(|| panic!("device {id} in IoT Central"));
        assert_eq!(d.provisioned, Some(true), "{id} provisioned");
    }
}

#[test]
fn x509_via_intermediate_proves_possession_of_the_intermediate() {
    let emu = Emu::start(None);
    onboard_x509(&emu, "g-int", "pki/root")
        .args([
            "--intermediate",
            "pki/inter",
            "--device",
            "dev-i1",
            "--out",
            "out",
        ])
        .assert()
        .success();
    assert_pop_calls(&emu, "g-int", 1);
    let cert = primary_ca(&emu, "g-int");
    assert!(cert.verified);
    let inter_pem = std::fs::read_to_string(emu.path("pki/inter_cert.pem")).unwrap();
    let inter_der = iotc::cert::parse_pem_certs(inter_pem.as_bytes())
        .unwrap()
        .remove(0);
    assert_eq!(
        cert.info.unwrap().sha1_thumbprint,
        iotc::cert::sha1_thumbprint(&inter_der),
        "the intermediate, not the root, is the group's CA"
    );
    let (ok, out) = openssl_verify(
        &emu.path("pki/root_cert.pem"),
        Some(&emu.path("out/dev-i1/dev-i1_fullchain.pem")),
        &emu.path("out/dev-i1/dev-i1_cert.pem"),
    );
    assert!(ok, "{out}");
    // The device presents leaf + intermediate.
    let chain = std::fs::read_to_string(emu.path("out/dev-i1/dev-i1_fullchain.pem")).unwrap();
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
    assert_eq!(bundles(&emu.path("out")).len(), 1);
}

#[test]
fn symmetric_key_devices_get_keys_derived_from_the_group_key() {
    let emu = Emu::start(None);
    emu.cmd()
        .args(["onboard", "symmetric-key", "--group", "g-sk"])
        .args(["--count", "2", "--prefix", "sk-", "--out", "out"])
        .assert()
        .success();
    let c = emu.client();
    let g = emu.rt.block_on(c.get_enrollment_group("g-sk")).unwrap();
    let group_key = match g.attestation {
        iotc::central::models::GroupAttestation::SymmetricKey {
            symmetric_key: Some(k),
        } => k.primary_key,
        other => panic!("{other:?}"),
    };
    for id in ["sk-1", "sk-2"] {
        let key =
            std::fs::read_to_string(emu.path(&format!("out/{id}/{id}_device_key.txt"))).unwrap();
        // Independent derivation with openssl: HMAC-SHA256(base64decode(group key), id).
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(group_key.expose())
            .unwrap();
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "printf %s '{id}' | openssl dgst -sha256 -mac HMAC -macopt hexkey:{hex} -binary | openssl base64 -A"
            ))
            .output()
            .unwrap();
        assert_eq!(
            key.trim(),
            String::from_utf8_lossy(&out.stdout).trim(),
            "{id}"
        );
    }
    assert_eq!(bundles(&emu.path("out")).len(), 2);
}

#[test]
fn an_onboarding_rerun_changes_nothing() {
    let emu = Emu::start(None);
    let run = |count: &str| {
        onboard_x509(&emu, "g-re", "pki/root")
            .args([
                "--intermediate",
                "pki/inter",
                "--count",
                count,
                "--prefix",
                "re-",
            ])
            .args(["--out", "out"])
            .assert()
            .success()
    };
    run("2");
    let snapshot = |emu: &Emu| {
        let mut files = std::collections::BTreeMap::new();
        for dir in ["pki", "out/re-1", "out/re-2"] {
            for e in std::fs::read_dir(emu.path(dir)).unwrap() {
                let p = e.unwrap().path();
                files.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
        files
    };
    let before = snapshot(&emu);
    let devices_before = emu.devices().len();
    let text = stdout(&run("2"));
    for step in [
        "root CA",
        "intermediate CA",
        "enrollment group",
        "CA upload",
        "devices",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(step))
            .unwrap_or_else(|| panic!("no line for {step} in:\n{text}"));
        assert!(line.contains("reused"), "{line}");
    }
    assert_pop_calls(&emu, "g-re", 1);
    assert_eq!(snapshot(&emu), before, "no file rewritten");
    assert_eq!(emu.devices().len(), devices_before);
    // Adding a device to the selection registers only that one.
    run("3");
    assert_pop_calls(&emu, "g-re", 1);
    assert_eq!(bundles(&emu.path("out")).len(), 3);
    for (p, bytes) in before {
        assert_eq!(std::fs::read(&p).unwrap(), bytes, "{}", p.display());
    }
}

#[test]
fn a_self_attested_upload_makes_no_proof_of_possession() {
    let emu = Emu::start(None);
    onboard_x509(&emu, "g-self", "pki/root")
        .arg("--verified-upload")
        .assert()
        .success();
    assert_pop_calls(&emu, "g-self", 0);
    let cert = primary_ca(&emu, "g-self");
    assert!(cert.verified, "uploaded as verified");
}

#[test]
fn a_group_with_another_ca_is_not_overwritten() {
    let emu = Emu::start(None);
    onboard_x509(&emu, "g-x", "pki/a").assert().success();
    onboard_x509(&emu, "g-x", "pki/b")
        .assert()
        .code(2)
        .stderr(predicates::str::contains("already has another primary CA"));
}

#[test]
fn private_keys_are_encrypted_unless_the_user_opts_out() {
    let emu = Emu::start(None);
    // No password and no opt-out: refused before anything is made.
    let refused = emu
        .cmd()
        .env_remove("IOTC_KEY_PASSWORD")
        .env_remove("IOTC_CA_PASSWORD")
        .args(["onboard", "x509", "--group", "g-enc", "--ca", "pki/enc"])
        .args(["--device", "enc-1", "--out", "out"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("--no-password"), "{err}");
    assert!(!emu.path("pki/enc_key.pem").exists());
    assert!(!emu.path("out/enc-1").exists());

    // With passwords: the CA key and the bundle key are encrypted PKCS#8, 0600, and openssl
    // decrypts the bundle key with the password and only with it.
    std::fs::write(emu.path("key.pw"), "bundle-secret\n").unwrap();
    emu.cmd()
        .env("IOTC_CA_PASSWORD", "ca-secret")
        .args(["onboard", "x509", "--group", "g-enc", "--ca", "pki/enc"])
        .args([
            "--device",
            "enc-1",
            "--out",
            "out",
            "--key-password-file",
            "key.pw",
        ])
        .assert()
        .success();
    let ca_key = std::fs::read_to_string(emu.path("pki/enc_key.pem")).unwrap();
    assert!(ca_key.contains("BEGIN ENCRYPTED PRIVATE KEY"));
    let key = emu.path("out/enc-1/enc-1_key.pem");
    let text = std::fs::read_to_string(&key).unwrap();
    assert!(text.contains("BEGIN ENCRYPTED PRIVATE KEY"), "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let pkey = |pass: &str| {
        std::process::Command::new("openssl")
            .args(["pkey", "-noout", "-in"])
            .arg(&key)
            .args(["-passin", &format!("pass:{pass}")])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(pkey("bundle-secret"));
    assert!(!pkey("wrong"));
}
