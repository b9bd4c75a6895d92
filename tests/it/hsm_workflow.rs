//! `iotc onboard x509` and `iotc provision` with CA keys in a real PKCS#11 token (SoftHSM2),
//! against the emulator, through the real binary: the proof of possession is signed in the
//! token, the devices' certificates too, and they register with DPS. openssl verifies every
//! chain.

use crate::common_cert::{openssl, ossl_csr};
use crate::common_hsm;
use crate::common_workflow;

use common_hsm::{softhsm, SoftHsm, PIN};
use common_workflow::{bundles, openssl_verify, Emu};
use iotc::central::CertificateEntry;

fn with_token(emu: &Emu, h: &SoftHsm) -> assert_cmd::Command {
    let mut c = emu.cmd();
    c.env("SOFTHSM2_CONF", h.conf())
        .env("IOTC_PKCS11_MODULE", &h.module)
        .env("IOTC_PKCS11_PIN", PIN);
    c
}

/// `iotc provision` of `count` devices `prefix`N into `out`, signed by the token intermediate.
fn provision(emu: &Emu, h: &SoftHsm, count: u32, prefix: &str, out: &str) -> assert_cmd::Command {
    let mut c = with_token(emu, h);
    c.args([
        "provision",
        "--count",
        &count.to_string(),
        "--prefix",
        prefix,
    ])
    .args(["--journal", &format!("{out}.journal"), "--out", out])
    .args(["--group", "g-hsm", "--ca", "pki/inter", "--no-password"]);
    c
}

#[test]
fn onboard_and_provision_sign_with_the_token() {
    let Some(h) = softhsm() else { return };
    let emu = Emu::start(None);
    h.init_token("line-1");
    let pki = emu.path("pki");
    let pki = pki.to_str().unwrap();
    with_token(&emu, &h)
        .args(["cert", "root", "--name", "root", "--out", pki])
        .args(["--key-store", "pkcs11:token=line-1;object=root"])
        .assert()
        .success();
    with_token(&emu, &h)
        .args(["cert", "intermediate", "--name", "inter", "--out", pki])
        .args([
            "--ca",
            "pki/root",
            "--key-store",
            "pkcs11:token=line-1;object=inter",
        ])
        .assert()
        .success();

    // No CA password: the CA keys are in the token; the device keys get one.
    std::fs::write(emu.path("pw.txt"), "device keys\n").unwrap();
    // The intermediate is uploaded and proved: its verification certificate is signed in
    // the token.
    let a = with_token(&emu, &h)
        .args(["onboard", "x509", "--group", "g-hsm", "--ca", "pki/root"])
        .args([
            "--intermediate",
            "pki/inter",
            "--key-password-file",
            "pw.txt",
        ])
        .args(["--count", "2", "--prefix", "o-", "--out", "out"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&a.get_output().stdout).into_owned();
    assert!(text.contains("proof of possession"), "{text}");
    assert!(
        text.contains("reused"),
        "the token CAs were loaded, not made: {text}"
    );
    assert!(!emu.path("pki/inter_key.pem").exists());
    let c = emu.client();
    let cert = emu
        .rt
        .block_on(c.get_enrollment_group_certificate("g-hsm", CertificateEntry::Primary))
        .unwrap();
    assert!(
        cert.verified,
        "proof of possession through the token verified the CA"
    );

    provision(&emu, &h, 3, "p-", "out2").assert().success();
    for (out, ids) in [
        ("out", vec!["o-1", "o-2"]),
        ("out2", vec!["p-1", "p-2", "p-3"]),
    ] {
        let b = bundles(&emu.path(out));
        assert_eq!(b.keys().cloned().collect::<Vec<_>>(), ids);
        for id in ids {
            assert!(
                b[id].assigned_hub.as_deref().is_some_and(|h| !h.is_empty()),
                "{id} registered"
            );
            let (ok, why) = openssl_verify(
                &emu.path("pki/root_cert.pem"),
                Some(&emu.path("pki/inter_cert.pem")),
                &emu.path(&format!("{out}/{id}/{id}_cert.pem")),
            );
            assert!(ok, "openssl verify {id}: {why}");
        }
    }

    // A CSR batch signed by the token: the devices' keys stay with the devices, the CA key in
    // the token; the certificates carry the devices' own public keys.
    std::fs::create_dir_all(emu.path("csrs")).unwrap();
    for id in ["s-1", "s-2"] {
        ossl_csr(
            emu.dir.path(),
            &format!("{id}.key"),
            id,
            &format!("csrs/{id}.csr"),
        );
    }
    with_token(&emu, &h)
        .args(["provision", "--csr-dir", "csrs", "--journal", "csr.journal"])
        .args(["--out", "out4", "--group", "g-hsm", "--ca", "pki/inter"])
        .assert()
        .success();
    for id in ["s-1", "s-2"] {
        let (ok, why) = openssl_verify(
            &emu.path("pki/root_cert.pem"),
            Some(&emu.path("pki/inter_cert.pem")),
            &emu.path(&format!("out4/{id}/{id}_cert.pem")),
        );
        assert!(ok, "openssl verify {id}: {why}");
        let cert = format!("out4/{id}/{id}_cert.pem");
        let csr = format!("csrs/{id}.csr");
        let of_cert = openssl(emu.dir.path(), &["x509", "-in", &cert, "-noout", "-pubkey"]);
        let of_csr = openssl(emu.dir.path(), &["req", "-in", &csr, "-noout", "-pubkey"]);
        assert!(
            of_cert.code == 0 && of_csr.code == 0,
            "{}{}",
            of_cert.stderr,
            of_csr.stderr
        );
        assert_eq!(
            of_cert.stdout, of_csr.stdout,
            "{id}: the certificate carries the CSR's key"
        );
    }

    // Renewal signs through the token too; --ca-key names the key when the prefix has no
    // PREFIX_key.uri beside its certificate.
    std::fs::create_dir_all(emu.path("pki2")).unwrap();
    std::fs::copy(
        emu.path("pki/inter_cert.pem"),
        emu.path("pki2/inter_cert.pem"),
    )
    .unwrap();
    with_token(&emu, &h)
        .args(["renew", "--journal", "out2.journal", "--out", "out2"])
        .args([
            "--ca",
            "pki2/inter",
            "--ca-key",
            "pkcs11:token=line-1;object=inter",
        ])
        .args(["--no-password", "--no-progress"])
        .assert()
        .success();
    for id in ["p-1", "p-2", "p-3"] {
        let (ok, why) = openssl_verify(
            &emu.path("pki/root_cert.pem"),
            Some(&emu.path("pki/inter_cert.pem")),
            &emu.path(&format!("out2/renewal-1/{id}/{id}_cert.pem")),
        );
        assert!(ok, "openssl verify renewed {id}: {why}");
    }

    // onboard takes the token keys by URI as well: pki2 holds only the certificates.
    std::fs::copy(
        emu.path("pki/root_cert.pem"),
        emu.path("pki2/root_cert.pem"),
    )
    .unwrap();
    let a = with_token(&emu, &h)
        .args(["onboard", "x509", "--group", "g-hsm2", "--ca", "pki2/root"])
        .args(["--intermediate", "pki2/inter", "--no-password"])
        .args(["--ca-key", "pkcs11:token=line-1;object=root"])
        .args(["--intermediate-key", "pkcs11:token=line-1;object=inter"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&a.get_output().stdout).into_owned();
    assert!(text.contains("reused"), "the token CAs were loaded: {text}");
    let cert = emu
        .rt
        .block_on(c.get_enrollment_group_certificate("g-hsm2", CertificateEntry::Primary))
        .unwrap();
    assert!(
        cert.verified,
        "proof of possession signed by the named token key"
    );

    // Without the PIN nothing starts.
    provision(&emu, &h, 1, "n-", "out3")
        .env_remove("IOTC_PKCS11_PIN")
        .assert()
        .failure()
        .stderr(predicates::str::contains("needs its user PIN"));
    assert!(!emu.path("out3/n-1").exists());
}
