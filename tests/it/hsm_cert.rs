//! CA keys in a real PKCS#11 token (SoftHSM2), through the real `iotc` binary: roots and
//! intermediates generated inside the token, every kind of certificate signed through it and
//! verified by the openssl CLI, the key objects checked sensitive and non-extractable by
//! OpenSC's pkcs11-tool, and every named failure (module, token, PIN, object, key type, full
//! token) reported without a PIN in sight.

use crate::common_hsm;
use common_hsm::*;

const ROOT: &str = "pkcs11:token=line-1;object=line-1-root";
const INTER: &str = "pkcs11:token=line-1;object=line-1-ca";

/// A root and an intermediate, both generated in token `line-1`.
fn token_cas(h: &SoftHsm) {
    h.init_token("line-1");
    h.iotc(&[
        "cert",
        "root",
        "--name",
        "root",
        "--key-store",
        ROOT,
        "--out",
        "certs",
    ])
    .ok();
    h.iotc(&[
        "cert",
        "intermediate",
        "--name",
        "inter",
        "--ca",
        "certs/root",
        "--key-store",
        INTER,
        "--key-type",
        "ec-p384",
        "--out",
        "certs",
    ])
    .ok();
}

/// Asserts the certificate's EC public key is the one of token object `label`: the point's
/// coordinates appear in the CKA_EC_POINT that pkcs11-tool lists for the public key object.
#[track_caller]
fn assert_key_in_token(h: &SoftHsm, cert: &str, label: &str, coordinate_bytes: usize) {
    h.openssl(&["x509", "-in", cert, "-pubkey", "-noout", "-out", "pub.pem"])
        .ok();
    h.openssl(&[
        "pkey", "-pubin", "-in", "pub.pem", "-outform", "DER", "-out", "pub.der",
    ])
    .ok();
    let spki = std::fs::read(h.path().join("pub.der")).unwrap();
    let xy: String = spki[spki.len() - 2 * coordinate_bytes..]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let listing = h
        .pkcs11_tool(&[
            "--token-label",
            "line-1",
            "--list-objects",
            "--type",
            "pubkey",
        ])
        .ok()
        .stdout;
    let section = listing
        .split("Public Key Object")
        .find(|s| {
            s.lines()
                .any(|l| l.trim() == format!("label:      {label}"))
        })
        .unwrap_or_else(|| panic!("no public key {label:?} in:\n{listing}"));
    assert!(
        section.contains(&xy),
        "{cert}: its key is not {label}:\n{section}"
    );
}

/// Runs `iotc ARGS` (signing with the intermediate in the token), then `openssl verify` of
/// `cert` up to the root through the intermediate.
#[track_caller]
fn signed_by_inter(h: &SoftHsm, args: &[&str], cert: &str) {
    h.iotc(args).ok();
    h.openssl_verify("certs/root_cert.pem", Some("certs/inter_cert.pem"), cert);
}

#[test]
fn token_cas_sign_every_kind_of_certificate_and_openssl_verifies_them() {
    let Some(h) = softhsm() else { return };
    token_cas(&h);
    // Only the certificate, the chain and the URI: no key file.
    assert_eq!(h.read("certs/root_key.uri"), format!("{ROOT}\n"));
    assert_eq!(h.read("certs/inter_key.uri"), format!("{INTER}\n"));
    assert!(!h.exists("certs/root_key.pem") && !h.exists("certs/inter_key.pem"));
    // The certificates carry the token's keys: the keys were made in the token.
    assert_key_in_token(&h, "certs/root_cert.pem", "line-1-root", 32);
    assert_key_in_token(&h, "certs/inter_cert.pem", "line-1-ca", 48);
    h.openssl_verify("certs/root_cert.pem", None, "certs/inter_cert.pem");

    signed_by_inter(
        &h,
        &[
            "cert",
            "device",
            "dev-01",
            "--ca",
            "certs/inter",
            "--out",
            "certs",
            "--no-password",
        ],
        "certs/dev-01_cert.pem",
    );

    // A batch on four workers: each worker signs through its own session.
    h.iotc(&[
        "cert",
        "device",
        "--count",
        "24",
        "--prefix",
        "d-",
        "--threads",
        "4",
        "--ca",
        "certs/inter",
        "--out",
        "bulk",
        "--no-password",
    ])
    .ok();
    let mut args = vec![
        "verify",
        "-x509_strict",
        "-CAfile",
        "certs/root_cert.pem",
        "-untrusted",
        "certs/inter_cert.pem",
    ];
    let files: Vec<String> = (1..=24)
        .map(|i| format!("bulk/d-{i:02}_cert.pem"))
        .collect();
    args.extend(files.iter().map(String::as_str));
    let run = h.openssl(&args).ok();
    assert_eq!(run.stdout.matches(": OK").count(), 24, "{}", run.stdout);

    signed_by_inter(
        &h,
        &[
            "cert",
            "verification",
            "5A1B2C3D",
            "--ca",
            "certs/inter",
            "--out",
            "certs",
            "--no-password",
        ],
        "certs/verification_cert.pem",
    );

    ossl_csr(h.path(), "csr.key", "csr-01", "csr.pem");
    signed_by_inter(
        &h,
        &[
            "cert",
            "sign-csr",
            "csr.pem",
            "--ca",
            "certs/inter",
            "--out",
            "certs",
        ],
        "certs/csr-01_cert.pem",
    );

    for label in ["line-1-root", "line-1-ca"] {
        assert_non_extractable(&h.private_key_listing("line-1", label));
    }
}

#[test]
fn an_rsa_root_in_the_token_signs_pkcs1_chains() {
    let Some(h) = softhsm() else { return };
    h.init_token("rsa");
    let uri = "pkcs11:token=rsa;object=rsa-root";
    let run = h
        .iotc(&[
            "--output",
            "json",
            "cert",
            "root",
            "--name",
            "rsa",
            "--key-type",
            "rsa-2048",
            "--key-store",
            uri,
            "--out",
            "certs",
        ])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["keyUri"], uri, "{v}");
    assert!(
        v["files"]["keyUri"]
            .as_str()
            .unwrap()
            .ends_with("rsa_key.uri"),
        "{v}"
    );
    assert!(v["files"]["key"].is_null(), "{v}");
    h.iotc(&[
        "cert",
        "device",
        "r-1",
        "--ca",
        "certs/rsa",
        "--out",
        "certs",
        "--no-password",
    ])
    .ok();
    h.openssl_verify("certs/rsa_cert.pem", None, "certs/r-1_cert.pem");
    let text = h
        .openssl(&["x509", "-in", "certs/r-1_cert.pem", "-noout", "-text"])
        .ok()
        .stdout;
    assert!(text.contains("sha256WithRSAEncryption"), "{text}");
    assert_non_extractable(&h.private_key_listing("rsa", "rsa-root"));
}

#[test]
fn ca_key_names_the_token_key_and_stray_key_files_are_refused() {
    let Some(h) = softhsm() else { return };
    token_cas(&h);
    // A copy of the certificate alone, with the key named on the command line.
    std::fs::create_dir_all(h.path().join("copy")).unwrap();
    std::fs::copy(
        h.path().join("certs/inter_cert.pem"),
        h.path().join("copy/inter_cert.pem"),
    )
    .unwrap();
    h.iotc(&[
        "cert",
        "device",
        "x-1",
        "--ca",
        "copy/inter",
        "--out",
        "o",
        "--no-password",
    ])
    .fails_with("copy/inter_key.pem");
    h.iotc(&[
        "cert",
        "device",
        "x-1",
        "--ca",
        "copy/inter",
        "--ca-key",
        INTER,
        "--out",
        "o",
        "--no-password",
    ])
    .ok();
    h.openssl_verify(
        "certs/root_cert.pem",
        Some("certs/inter_cert.pem"),
        "o/x-1_cert.pem",
    );
    // The root's token key does not belong to the intermediate's certificate.
    h.iotc(&[
        "cert",
        "device",
        "x-2",
        "--ca",
        "copy/inter",
        "--ca-key",
        ROOT,
        "--out",
        "o",
        "--no-password",
    ])
    .fails_with("does not match the certificate CN=inter");
    // A key of the same type, but not the certificate's: caught by a signature check.
    h.keypairgen("line-1", "other-p384", "EC:secp384r1");
    h.iotc(&[
        "cert",
        "device",
        "x-2",
        "--ca",
        "copy/inter",
        "--ca-key",
        "pkcs11:token=line-1;object=other-p384",
        "--out",
        "o",
        "--no-password",
    ])
    .fails_with("does not match the certificate CN=inter");
    // A key file next to the key URI: which one is meant? Refused, not guessed.
    h.iotc(&[
        "cert",
        "root",
        "--name",
        "stray",
        "--out",
        "tmp",
        "--no-password",
    ])
    .ok();
    std::fs::copy(
        h.path().join("tmp/stray_key.pem"),
        h.path().join("certs/inter_key.pem"),
    )
    .unwrap();
    h.iotc(&[
        "cert",
        "device",
        "x-3",
        "--ca",
        "certs/inter",
        "--out",
        "o",
        "--no-password",
    ])
    .fails_with("a CA key is in a file or in a token, not both");
    assert!(!h.exists("o/x-2_cert.pem") && !h.exists("o/x-3_cert.pem"));
}

#[test]
fn every_token_failure_is_named_and_no_pin_is_shown() {
    let Some(h) = softhsm() else { return };
    token_cas(&h);
    fn dev<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec![
            "cert",
            "device",
            "f-1",
            "--ca",
            "certs/inter",
            "--out",
            "fail",
            "--no-password",
        ];
        a.extend_from_slice(extra);
        a
    }
    // Module not loadable.
    h.iotc_with(&dev(&[]), |c| {
        c.env("IOTC_PKCS11_MODULE", "/nonexistent/libpkcs11.so");
    })
    .fails_with("PKCS#11 module /nonexistent/libpkcs11.so could not be loaded");
    h.iotc_with(&dev(&[]), |c| {
        c.env("IOTC_PKCS11_MODULE", h.path().join("pin.txt"));
    })
    .fails_with("could not be loaded");
    h.iotc_with(&dev(&[]), |c| {
        c.env_remove("IOTC_PKCS11_MODULE");
    })
    .fails_with("no PKCS#11 module");
    // Token not found.
    h.iotc(&dev(&["--ca-key", "pkcs11:token=line-9;object=line-1-ca"]))
        .fails_with("token not found: no token matches token=line-9");
    // Wrong PIN, and the PIN is not repeated.
    let run = h
        .iotc_with(&dev(&[]), |c| {
            c.env("IOTC_PKCS11_PIN", "11112222");
        })
        .fails_with("wrong PIN for token \"line-1\"");
    assert!(
        !run.stderr.contains("11112222") && !run.stderr.contains(PIN),
        "{}",
        run.stderr
    );
    // No PIN at all.
    h.iotc_with(&dev(&[]), |c| {
        c.env_remove("IOTC_PKCS11_PIN");
    })
    .fails_with("needs its user PIN");
    // The PIN from pin-source= instead of the environment works.
    let with_pin_file = format!("{INTER}?pin-source=file:pin.txt");
    h.iotc_with(&dev(&["--ca-key", &with_pin_file]), |c| {
        c.env_remove("IOTC_PKCS11_PIN");
    })
    .ok();
    std::fs::remove_file(h.path().join("fail/f-1_cert.pem")).unwrap();
    std::fs::remove_file(h.path().join("fail/f-1_key.pem")).unwrap();
    std::fs::remove_file(h.path().join("fail/f-1_fullchain.pem")).unwrap();
    // pin-value is refused, and its value not echoed.
    let run = h
        .iotc(&dev(&[
            "--ca-key",
            "pkcs11:token=line-1;object=line-1-ca?pin-value=55556666",
        ]))
        .fails_with("pin-value is refused");
    assert!(!run.stderr.contains("55556666"), "{}", run.stderr);
    // Object missing: the message lists what the token holds.
    h.iotc(&dev(&["--ca-key", "pkcs11:token=line-1;object=nope"]))
        .fails_with("object missing: no private key object \"nope\" in token \"line-1\"");
    // Key type unsupported: an RSA-1024 key made by pkcs11-tool.
    h.keypairgen("line-1", "weak", "rsa:1024");
    h.iotc(&dev(&["--ca-key", "pkcs11:token=line-1;object=weak"]))
        .fails_with(
            "key type unsupported: object \"weak\" in token \"line-1\" is an RSA 1024-bit key",
        );
    // A label already taken is not made twice.
    h.iotc(&[
        "cert",
        "root",
        "--name",
        "again",
        "--key-store",
        ROOT,
        "--out",
        "fail",
    ])
    .fails_with("already holds an object");
    // Password flags have no key to act on.
    h.iotc(&[
        "cert",
        "root",
        "--name",
        "pw",
        "--key-store",
        "pkcs11:token=line-1;object=pw",
        "--password-file",
        "pin.txt",
        "--out",
        "fail",
    ])
    .fails_with("--key-store keeps the key in the token");
    let left: Vec<_> = std::fs::read_dir(h.path().join("fail"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "failed commands wrote {left:?}");
}

/// A token whose store has no room: SoftHSM's files on a full tmpfs, mounted in a mount
/// namespace of the test's own (root only; CI runs as root).
#[test]
fn a_full_token_is_named() {
    let Some(h) = softhsm() else { return };
    let can_mount = std::process::Command::new("unshare")
        .args(["-m", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !can_mount {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and can unshare -m"
        );
        eprintln!("SKIPPED: unshare -m needs root");
        return;
    }
    let script = format!(
        r#"set -e
mount -t tmpfs -o size=48k tmpfs "{tokens}"
softhsm2-util --init-token --free --label full --so-pin {SO_PIN} --pin {PIN} >/dev/null
dd if=/dev/zero of="{tokens}/filler" bs=1k count=200 2>/dev/null || true
exec "{iotc}" cert root --name r --key-store 'pkcs11:token=full;object=r' --out out
"#,
        tokens = h.token_dir().display(),
        iotc = env!("CARGO_BIN_EXE_iotc"),
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "bash", "-c", &script])
        .current_dir(h.path())
        .env("SOFTHSM2_CONF", h.conf())
        .env("IOTC_PKCS11_MODULE", &h.module)
        .env("IOTC_PKCS11_PIN", PIN)
        .output()
        .expect("unshare");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("token full: token \"full\" could not store the new key"),
        "{stderr}"
    );
    assert!(!h.exists("out/r_cert.pem"), "nothing written");
}

#[test]
fn the_token_bench_measures_the_token_next_to_a_file_key() {
    let Some(h) = softhsm() else { return };
    token_cas(&h);
    let run = h
        .iotc(&[
            "--output",
            "json",
            "cert",
            "bench",
            "--hsm-ca",
            "certs/inter",
            "--count",
            "20",
            "--signatures",
            "40",
            "--openssl-count",
            "0",
        ])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(v["keyUri"], INTER, "{v}");
    let whats: Vec<&str> = v["figures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["what"].as_str().unwrap())
        .collect();
    assert_eq!(whats.len(), 10, "{whats:?}");
    assert!(
        whats.iter().any(|w| w.contains("one session shared")),
        "{whats:?}"
    );
    assert!(v["tokenVsFileBundles"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["sessionsOpen"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(
        v["sessionsOpenShared"], 1,
        "the shared measurement used one session: {v}"
    );
    // A CA whose key is a file is not a token CA.
    h.iotc(&[
        "cert",
        "root",
        "--name",
        "file",
        "--out",
        "f",
        "--no-password",
    ])
    .ok();
    h.iotc(&["cert", "bench", "--hsm-ca", "f/file", "--count", "1"])
        .fails_with("this CA's key is not in a token");
}

/// At trace level, with the PIN from the environment and then from a pin-source file, the
/// output of a token CA's whole life (made, signing a batch) never holds the PIN.
#[test]
fn trace_logs_never_show_the_pin() {
    let Some(h) = softhsm() else { return };
    h.init_token("line-1");
    let trace = |c: &mut std::process::Command| {
        c.env("RUST_LOG", "trace");
    };
    let mut all = String::new();
    for args in [
        &[
            "cert",
            "root",
            "--name",
            "root",
            "--key-store",
            ROOT,
            "--out",
            "certs",
        ][..],
        &[
            "cert",
            "device",
            "--count",
            "4",
            "--prefix",
            "t-",
            "--ca",
            "certs/root",
            "--out",
            "devs",
            "--no-password",
        ][..],
    ] {
        let run = h.iotc_with(args, trace).ok();
        all.push_str(&run.stdout);
        all.push_str(&run.stderr);
    }
    let from_file = format!("{ROOT}?pin-source=file:pin.txt");
    let run = h
        .iotc_with(
            &[
                "cert",
                "device",
                "t-9",
                "--ca",
                "certs/root",
                "--ca-key",
                &from_file,
                "--out",
                "devs",
                "--no-password",
            ],
            |c| {
                trace(c);
                c.env_remove("IOTC_PKCS11_PIN");
            },
        )
        .ok();
    all.push_str(&run.stdout);
    all.push_str(&run.stderr);
    assert!(all.contains("DEBUG"), "the log is at trace level:\n{all}");
    assert!(all.contains("PKCS#11 session opened"), "{all}");
    assert!(!all.contains(PIN), "the PIN leaked:\n{all}");
}
