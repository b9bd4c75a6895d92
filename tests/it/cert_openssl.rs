//! The certificates `iotc cert` writes, checked by the real openssl CLI: chains verify through
//! root and intermediate, every extension of every profile is what DESIGN.md says, the PFX
//! opens with its password and holds the chain, the encrypted key decrypts.

use crate::common_cert;
use common_cert::*;

fn text(dir: &std::path::Path, file: &str) -> String {
    openssl(dir, &["x509", "-in", file, "-noout", "-text"])
        .ok()
        .stdout
}

/// The lines after an extension header in `openssl x509 -text`.
fn ext_block(text: &str, header: &str) -> Option<(bool, String)> {
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        let t = l.trim();
        if let Some(rest) = t.strip_prefix(header) {
            let critical = rest.contains("critical");
            let value = lines.next().unwrap_or("").trim().to_owned();
            return Some((critical, value));
        }
    }
    None
}

fn check_profiles(key_type: &str) {
    let d = workdir();
    let dir = d.path();
    make_cas(dir, key_type);
    device(
        dir,
        "dev:01",
        "c/inter",
        "c",
        &["--key-type", key_type, "--password-file", "pw.txt", "--pfx"],
    );
    device(
        dir,
        "rootdev",
        "c/root",
        "c",
        &["--ca-password-file", "pw.txt", "--key-type", key_type],
    );
    verification(dir, "C0FFEE00", "c/inter", "c", &["--key-type", key_type]);
    verification(
        dir,
        "BADC0DE1",
        "c/root",
        "c",
        &words("--name rootver --ca-password-file pw.txt"),
    );

    // openssl verify: through the intermediate to the root, and with the fullchain file.
    let v = openssl(
        dir,
        &words("verify -CAfile c/root_cert.pem -untrusted c/inter_cert.pem c/dev:01_cert.pem"),
    )
    .ok();
    assert!(v.stdout.contains("c/dev:01_cert.pem: OK"), "{}", v.stdout);
    openssl(
        dir,
        &words(
            "verify -CAfile c/root_cert.pem -untrusted c/dev:01_fullchain.pem c/dev:01_cert.pem",
        ),
    )
    .ok();
    openssl(
        dir,
        &words(
            "verify -CAfile c/root_cert.pem -untrusted c/inter_cert.pem c/verification_cert.pem",
        ),
    )
    .ok();
    openssl(
        dir,
        &words(
            "verify -CAfile c/root_cert.pem c/rootdev_cert.pem c/rootver_cert.pem c/inter_cert.pem",
        ),
    )
    .ok();
    // The verification certificate proves possession of the intermediate's key on its own.
    openssl(
        dir,
        &words("verify -partial_chain -CAfile c/inter_cert.pem c/verification_cert.pem"),
    )
    .ok();
    // Client-auth purpose holds for device and verification certificates.
    openssl(
        dir,
        &words(
            "verify -purpose sslclient -CAfile c/root_cert.pem -untrusted c/inter_cert.pem \
             c/dev:01_cert.pem",
        ),
    )
    .ok();
    // Without the intermediate the device does not verify (the check can fail).
    let bad = openssl(
        dir,
        &words("verify -CAfile c/root_cert.pem c/dev:01_cert.pem"),
    );
    assert_ne!(bad.code, 0);

    // Root profile.
    let t = text(dir, "c/root_cert.pem");
    assert_eq!(
        ext_block(&t, "X509v3 Basic Constraints:"),
        Some((true, "CA:TRUE, pathlen:1".into()))
    );
    assert_eq!(
        ext_block(&t, "X509v3 Key Usage:"),
        Some((true, "Certificate Sign, CRL Sign".into()))
    );
    assert!(ext_block(&t, "X509v3 Subject Key Identifier:").is_some());
    assert!(ext_block(&t, "X509v3 Authority Key Identifier:").is_none());
    assert!(ext_block(&t, "X509v3 Extended Key Usage:").is_none());
    assert!(t.contains("Subject: CN = root"), "{t}");
    // Intermediate profile.
    let t = text(dir, "c/inter_cert.pem");
    assert_eq!(
        ext_block(&t, "X509v3 Basic Constraints:"),
        Some((true, "CA:TRUE, pathlen:0".into()))
    );
    assert_eq!(
        ext_block(&t, "X509v3 Key Usage:"),
        Some((true, "Certificate Sign, CRL Sign".into()))
    );
    assert!(ext_block(&t, "X509v3 Subject Key Identifier:").is_some());
    assert!(ext_block(&t, "X509v3 Authority Key Identifier:").is_some());
    // Device profile.
    let t = text(dir, "c/dev:01_cert.pem");
    assert!(
        t.contains("Subject: CN = dev:01"),
        "CN never rewritten: {t}"
    );
    assert_eq!(
        ext_block(&t, "X509v3 Basic Constraints:"),
        Some((true, "CA:FALSE".into()))
    );
    let ku = if key_type.starts_with("rsa") {
        "Digital Signature, Key Encipherment"
    } else {
        "Digital Signature"
    };
    assert_eq!(ext_block(&t, "X509v3 Key Usage:"), Some((true, ku.into())));
    assert_eq!(
        ext_block(&t, "X509v3 Extended Key Usage:"),
        Some((false, "TLS Web Client Authentication".into()))
    );
    assert!(ext_block(&t, "X509v3 Subject Key Identifier:").is_some());
    assert!(ext_block(&t, "X509v3 Authority Key Identifier:").is_some());
    let want_key = match key_type {
        "ec-p256" => "Public-Key: (256 bit)",
        "ec-p384" => "Public-Key: (384 bit)",
        "rsa-2048" => "Public-Key: (2048 bit)",
        "rsa-3072" => "Public-Key: (3072 bit)",
        _ => "Public-Key: (4096 bit)",
    };
    assert!(t.contains(want_key), "{key_type}: {t}");
    let want_sig = match key_type {
        "ec-p256" => "ecdsa-with-SHA256",
        "ec-p384" => "ecdsa-with-SHA384",
        _ => "sha256WithRSAEncryption",
    };
    assert!(
        t.contains(&format!("Signature Algorithm: {want_sig}")),
        "{t}"
    );
    // Serial: 20 bytes (>= 128 random bits).
    let serial = openssl(dir, &words("x509 -in c/dev:01_cert.pem -noout -serial"))
        .ok()
        .stdout;
    assert_eq!(
        serial.trim().trim_start_matches("serial=").len(),
        40,
        "{serial}"
    );
    // Verification profile.
    let t = text(dir, "c/verification_cert.pem");
    assert!(t.contains("Subject: CN = C0FFEE00"));
    assert!(t.contains("Issuer: CN = inter"));
    assert_eq!(
        ext_block(&t, "X509v3 Basic Constraints:"),
        Some((true, "CA:FALSE".into()))
    );
    assert_eq!(
        ext_block(&t, "X509v3 Key Usage:"),
        Some((true, "Digital Signature".into()))
    );
    assert_eq!(
        ext_block(&t, "X509v3 Extended Key Usage:"),
        Some((false, "TLS Web Client Authentication".into()))
    );
    assert!(ext_block(&t, "X509v3 Authority Key Identifier:").is_some());

    // Fullchain: device + intermediate, nothing else (no root, no stray lines).
    let chain = std::fs::read_to_string(dir.join("c/dev:01_fullchain.pem")).unwrap();
    let dev = std::fs::read_to_string(dir.join("c/dev:01_cert.pem")).unwrap();
    let inter = std::fs::read_to_string(dir.join("c/inter_cert.pem")).unwrap();
    assert_eq!(chain, format!("{dev}{inter}"));

    // Encrypted key: openssl pkey decrypts it with the password, and it matches the cert.
    let key = std::fs::read_to_string(dir.join("c/dev:01_key.pem")).unwrap();
    assert!(key.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    let pubkey = openssl(
        dir,
        &words("pkey -in c/dev:01_key.pem -passin file:pw.txt -pubout"),
    )
    .ok()
    .stdout;
    let cert_pub = openssl(dir, &words("x509 -in c/dev:01_cert.pem -noout -pubkey"))
        .ok()
        .stdout;
    assert_eq!(pubkey, cert_pub);
    assert_ne!(
        openssl(
            dir,
            &words("pkey -in c/dev:01_key.pem -passin pass:wrong -noout")
        )
        .code,
        0
    );
    // The root key is encrypted too; the --no-password intermediate key is plain PKCS#8.
    openssl(
        dir,
        &words("pkey -in c/root_key.pem -passin file:pw.txt -noout"),
    )
    .ok();
    assert!(std::fs::read_to_string(dir.join("c/inter_key.pem"))
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in [
            "c/dev:01_key.pem",
            "c/inter_key.pem",
            "c/root_key.pem",
            "c/dev:01.pfx",
        ] {
            let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
    }

    // PKCS#12: opens with the password, holds the key, the device and the intermediate.
    let p12 = openssl(
        dir,
        &words("pkcs12 -in c/dev:01.pfx -passin file:pw.txt -nokeys"),
    )
    .ok()
    .stdout;
    assert_eq!(
        p12.matches("-----BEGIN CERTIFICATE-----").count(),
        2,
        "{p12}"
    );
    assert!(
        p12.contains("subject=CN = dev:01") && p12.contains("subject=CN = inter"),
        "{p12}"
    );
    let p12key = openssl(
        dir,
        &words("pkcs12 -in c/dev:01.pfx -passin file:pw.txt -nocerts -nodes"),
    )
    .ok()
    .stdout;
    assert!(p12key.contains("-----BEGIN PRIVATE KEY-----"));
    assert_ne!(
        openssl(
            dir,
            &words("pkcs12 -in c/dev:01.pfx -passin pass:1234 -noout")
        )
        .code,
        0
    );
}

#[test]
fn ec_p256_profiles_verify_with_openssl() {
    check_profiles("ec-p256");
}

#[test]
fn ec_p384_profiles_verify_with_openssl() {
    check_profiles("ec-p384");
}

#[test]
fn rsa_2048_profiles_verify_with_openssl() {
    check_profiles("rsa-2048");
}

#[test]
fn rsa_3072_profiles_verify_with_openssl() {
    check_profiles("rsa-3072");
}

#[test]
fn rsa_4096_profiles_verify_with_openssl() {
    check_profiles("rsa-4096");
}

#[test]
fn mixed_key_types_chain() {
    // An EC root signing an RSA intermediate signing a P-384 device.
    let d = workdir();
    let dir = d.path();
    root(dir, "root", "c", &[]);
    intermediate(dir, "inter", "c/root", "c", &["--key-type", "rsa-2048"]);
    device(dir, "d-1", "c/inter", "c", &["--key-type", "ec-p384"]);
    openssl(
        dir,
        &words("verify -CAfile c/root_cert.pem -untrusted c/d-1_fullchain.pem c/d-1_cert.pem"),
    )
    .ok();
}

#[test]
fn bulk_devices_all_verify_and_thumbprints_match_openssl() {
    let d = workdir();
    let dir = d.path();
    make_cas(dir, "ec-p256");
    let r = device(
        dir,
        "",
        "c/inter",
        "devs",
        &words("--count 40 --prefix line1-"),
    );
    // No progress bar when stderr is not a terminal.
    assert_eq!(r.stderr, "");
    assert!(
        r.stdout.contains("wrote 40 device bundle(s)"),
        "{}",
        r.stdout
    );
    let mut files: Vec<String> = (1..=40)
        .map(|i| format!("devs/line1-{i:02}_cert.pem"))
        .collect();
    assert_eq!(listing(&dir.join("devs")).len(), 120);
    let mut args = vec![
        "verify",
        "-CAfile",
        "c/root_cert.pem",
        "-untrusted",
        "c/inter_cert.pem",
    ];
    args.extend(files.iter().map(String::as_str));
    let v = openssl(dir, &args).ok();
    assert_eq!(v.stdout.matches(": OK").count(), 40);
    // Serial numbers are all distinct.
    let mut serials: Vec<String> = files
        .iter()
        .map(|f| {
            openssl(dir, &["x509", "-in", f, "-noout", "-serial"])
                .ok()
                .stdout
        })
        .collect();
    serials.sort();
    serials.dedup();
    assert_eq!(serials.len(), 40);
    // --ids file, with comments; ids kept verbatim.
    std::fs::write(dir.join("ids.txt"), "# line 2\nA:b.c_d-1\n\nzz-9\n").unwrap();
    device(
        dir,
        "",
        "c/inter",
        "devs2",
        &words("--ids ids.txt --threads 1"),
    );
    let t = openssl(
        dir,
        &words("x509 -in devs2/A:b.c_d-1_cert.pem -noout -subject"),
    )
    .ok()
    .stdout;
    assert_eq!(t.trim(), "subject=CN = A:b.c_d-1");
    // Thumbprints printed by inspect equal openssl's fingerprints without colons.
    files.truncate(1);
    let info = iotc(dir, &["cert", "inspect", &files[0], "--json"])
        .ok()
        .stdout;
    let json: serde_json::Value = serde_json::from_str(&info).unwrap();
    for (alg, key) in [("-sha1", "sha1Thumbprint"), ("-sha256", "sha256Thumbprint")] {
        let fp = openssl(
            dir,
            &["x509", "-in", &files[0], "-noout", "-fingerprint", alg],
        )
        .ok()
        .stdout;
        let hex = fp.trim().split('=').nth(1).unwrap().replace(':', "");
        assert_eq!(json[0][key].as_str().unwrap(), hex);
    }
}

#[test]
fn signed_csr_keeps_the_device_key_and_verifies() {
    let d = workdir();
    let dir = d.path();
    make_cas(dir, "ec-p256");
    ossl_csr(dir, "dev.key", "csr-dev:01", "dev.csr");
    iotc(dir, &words("cert sign-csr dev.csr --ca c/inter --out out")).ok();
    assert_eq!(
        listing(&dir.join("out")),
        vec![
            std::path::PathBuf::from("csr-dev:01_cert.pem"),
            "csr-dev:01_fullchain.pem".into()
        ]
    );
    openssl(
        dir,
        &words(
            "verify -CAfile c/root_cert.pem -untrusted out/csr-dev:01_fullchain.pem \
             out/csr-dev:01_cert.pem",
        ),
    )
    .ok();
    let a = openssl(dir, &words("pkey -in dev.key -pubout")).ok().stdout;
    let b = openssl(
        dir,
        &words("x509 -in out/csr-dev:01_cert.pem -noout -pubkey"),
    )
    .ok()
    .stdout;
    assert_eq!(a, b);
    let t = text(dir, "out/csr-dev:01_cert.pem");
    assert_eq!(
        ext_block(&t, "X509v3 Extended Key Usage:"),
        Some((false, "TLS Web Client Authentication".into()))
    );
    // RSA CSR (DER) gets keyEncipherment.
    openssl(
        dir,
        &words(
            "req -new -newkey rsa:2048 -nodes -keyout r.key -subj /CN=rsa-dev \
             -outform DER -out r.csr",
        ),
    )
    .ok();
    iotc(dir, &words("cert sign-csr r.csr --ca c/inter --out out")).ok();
    let t = text(dir, "out/rsa-dev_cert.pem");
    assert_eq!(
        ext_block(&t, "X509v3 Key Usage:"),
        Some((true, "Digital Signature, Key Encipherment".into()))
    );
}

#[test]
fn base64_is_the_pem_file_and_inspect_lists_extensions() {
    let d = workdir();
    let dir = d.path();
    root(dir, "root", "c", &[]);
    let s = iotc(dir, &["cert", "base64", "c/root_cert.pem"])
        .ok()
        .stdout;
    // Same as the docs' convert.js: base64 of the file bytes.
    let via_openssl = openssl(dir, &words("base64 -A -in c/root_cert.pem"))
        .ok()
        .stdout;
    assert_eq!(s.trim(), via_openssl.trim());
    let out = iotc(dir, &["cert", "inspect", "c/root_cert.pem"])
        .ok()
        .stdout;
    for needle in [
        "subject:      CN=root",
        "basicConstraints (critical): CA:TRUE, pathlen:1",
        "keyUsage (critical): keyCertSign, cRLSign",
        "subjectKeyIdentifier:",
        "SHA-1:",
        "SHA-256:",
        "key type:     ec-p256",
    ] {
        assert!(out.contains(needle), "{needle:?} missing in\n{out}");
    }
    // DER input works for inspect.
    openssl(
        dir,
        &words("x509 -in c/root_cert.pem -outform DER -out root.der"),
    )
    .ok();
    let der = iotc(dir, &words("cert inspect root.der --json"))
        .ok()
        .stdout;
    assert!(der.contains("\"subject\": \"CN=root\""));
}
