//! `iotc dps register` with the device key in a real PKCS#11 token (SoftHSM2), against the
//! emulator's DPS over real TLS, through the real binary: the key is generated in the token
//! (`iotc cert device --key-store`), never written to a file, and signs the TLS handshake
//! from there (ECDSA P-256, and RSA-PSS under TLS 1.3).

use crate::common_hsm;
use crate::common_workflow;

use common_hsm::{assert_non_extractable, softhsm, SoftHsm, PIN};
use common_workflow::Emu;

fn with_token(emu: &Emu, h: &SoftHsm) -> assert_cmd::Command {
    let mut c = emu.cmd();
    c.env("SOFTHSM2_CONF", h.conf())
        .env("IOTC_PKCS11_MODULE", &h.module)
        .env("IOTC_PKCS11_PIN", PIN);
    c
}

fn stdout(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stdout).into_owned()
}

/// A group `g-tok` with a verified root CA in `pki/root` (a file CA: the device keys are the
/// point here).
fn group(emu: &Emu) {
    emu.cmd()
        .args([
            "onboard",
            "x509",
            "--group",
            "g-tok",
            "--ca",
            "pki/root",
            "--no-password",
        ])
        .assert()
        .success();
}

/// A device whose key is generated in token `station`.
fn token_device(emu: &Emu, h: &SoftHsm, id: &str, key_type: &str) {
    let uri = format!("pkcs11:token=station;object={id}");
    with_token(emu, h)
        .args(["cert", "device", id, "--ca", "pki/root", "--out", "dev"])
        .args(["--key-type", key_type, "--key-store", &uri])
        .assert()
        .success();
    assert!(
        !emu.path(&format!("dev/{id}_key.pem")).exists(),
        "no key file"
    );
    assert_eq!(
        std::fs::read_to_string(emu.path(&format!("dev/{id}_key.uri"))).unwrap(),
        format!("{uri}\n")
    );
}

fn register(emu: &Emu, h: &SoftHsm, id: &str, key: &str) -> assert_cmd::assert::Assert {
    with_token(emu, h)
        .args([
            "--output",
            "json",
            "dps",
            "register",
            "--registration-id",
            id,
        ])
        .args(["--cert", &format!("dev/{id}_fullchain.pem"), "--key", key])
        .assert()
}

fn assert_assigned(a: &assert_cmd::assert::Assert, id: &str) {
    let v: serde_json::Value = serde_json::from_str(&stdout(a)).expect("JSON");
    assert_eq!(v["status"], "assigned", "{v}");
    assert_eq!(v["registrationId"], id, "{v}");
    assert!(!v["assignedHub"].as_str().unwrap_or("").is_empty(), "{v}");
}

#[test]
fn a_device_key_in_the_token_registers_over_tls() {
    let Some(h) = softhsm() else { return };
    let emu = Emu::start(None);
    h.init_token("station");
    group(&emu);
    token_device(&emu, &h, "tok-ec", "ec-p256");
    // The .uri file that cert device wrote, then the URI itself.
    let a = register(&emu, &h, "tok-ec", "dev/tok-ec_key.uri").success();
    assert_assigned(&a, "tok-ec");
    let a = register(&emu, &h, "tok-ec", "pkcs11:token=station;object=tok-ec").success();
    assert_assigned(&a, "tok-ec");
    assert_non_extractable(&h.private_key_listing("station", "tok-ec"));

    // RSA: TLS 1.3 allows only RSA-PSS, signed in the token.
    token_device(&emu, &h, "tok-rsa", "rsa-2048");
    let a = register(&emu, &h, "tok-rsa", "dev/tok-rsa_key.uri").success();
    assert_assigned(&a, "tok-rsa");
}

#[test]
fn a_token_key_that_is_not_the_certificates_is_refused_before_connecting() {
    let Some(h) = softhsm() else { return };
    let emu = Emu::start(None);
    h.init_token("station");
    group(&emu);
    token_device(&emu, &h, "tok-a", "ec-p256");
    token_device(&emu, &h, "tok-b", "ec-p256");
    register(&emu, &h, "tok-a", "pkcs11:token=station;object=tok-b")
        .failure()
        .stderr(predicates::str::contains(
            "the token key object \"tok-b\" in token \"station\" does not match the certificate CN=tok-a",
        ));
    // A wrong PIN stops it too, and is not shown.
    let a = with_token(&emu, &h)
        .env("IOTC_PKCS11_PIN", "24682468")
        .args(["dps", "register", "--registration-id", "tok-a"])
        .args([
            "--cert",
            "dev/tok-a_fullchain.pem",
            "--key",
            "dev/tok-a_key.uri",
        ])
        .assert()
        .failure()
        .stderr(predicates::str::contains("wrong PIN for token \"station\""));
    let err = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
    assert!(!err.contains("24682468") && !err.contains(PIN), "{err}");
}
