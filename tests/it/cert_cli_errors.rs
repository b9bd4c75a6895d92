//! Bad input to `iotc cert`: every case ends with exit code 2, one `error:` line that names
//! the reason, and nothing written. Odd certificates (CA without keyCertSign, a leaf used as
//! issuer, a pathlen-0 root above an intermediate, leaves with the wrong purpose) are made
//! with the openssl CLI.

use crate::common_cert;
use common_cert::*;

#[test]
fn no_password_choice_and_pfx_without_password_are_refused() {
    let d = workdir();
    let dir = d.path();
    refused(dir, &words("cert root --name root --out c"), "no password");
    refused(
        dir,
        &words("cert root --name root --out c --no-password --pfx"),
        "--pfx needs a password",
    );
    write_secret(&dir.join("empty.txt"), "");
    refused(
        dir,
        &words("cert root --name root --out c --password-file empty.txt"),
        "empty",
    );
    refused(
        dir,
        &words("cert root --name root --out c --password-file missing.txt"),
        "could not read",
    );
    // The environment variable works as documented.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_iotc"))
        .args(["cert", "root", "--name", "envroot", "--out", "c", "--pfx"])
        .env("IOTC_KEY_PASSWORD", "from-env")
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    openssl(
        dir,
        &words("pkcs12 -in c/envroot.pfx -passin pass:from-env -noout"),
    )
    .ok();
}

#[test]
fn invalid_registration_ids_are_refused_not_rewritten() {
    let d = workdir();
    let dir = d.path();
    root(dir, "root", "c", &[]);
    for bad in ["dev 01", "dev.", "dev_", "dév", &"a".repeat(65), "a/b"] {
        refused(
            dir,
            &[
                "cert",
                "device",
                bad,
                "--ca",
                "c/root",
                "--out",
                "c",
                "--no-password",
            ],
            "invalid registration id",
        );
    }
    std::fs::write(dir.join("ids.txt"), "ok-1\nok-2\nbad id\n").unwrap();
    refused(
        dir,
        &words("cert device --ids ids.txt --ca c/root --out devs --no-password"),
        "ids.txt:3",
    );
    std::fs::write(dir.join("dup.txt"), "ok-1\nOK-1\n").unwrap();
    refused(
        dir,
        &words("cert device --ids dup.txt --ca c/root --out devs --no-password"),
        "duplicate",
    );
    refused(
        dir,
        &[
            "cert",
            "device",
            "--count",
            "3",
            "--prefix",
            "bad prefix",
            "--ca",
            "c/root",
            "--out",
            "devs",
            "--no-password",
        ],
        "invalid registration id",
    );
    // A CSR whose CN is not a registration id.
    ossl_csr(dir, "k.pem", "dev 01", "bad.csr");
    refused(
        dir,
        &words("cert sign-csr bad.csr --ca c/root --out c"),
        "invalid registration id",
    );
    std::fs::write(
        dir.join("garbage.csr"),
        "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n",
    )
    .unwrap();
    refused(
        dir,
        &words("cert sign-csr garbage.csr --ca c/root --out c"),
        "not a valid CSR",
    );
}

#[test]
fn existing_files_are_not_overwritten_without_force() {
    let d = workdir();
    let dir = d.path();
    root(dir, "root", "c", &[]);
    let before = std::fs::read(dir.join("c/root_cert.pem")).unwrap();
    refused(
        dir,
        &words("cert root --name root --out c --no-password"),
        "already exists",
    );
    assert_eq!(std::fs::read(dir.join("c/root_cert.pem")).unwrap(), before);
    device(dir, "", "c/root", "devs", &words("--count 3 --prefix d"));
    // One existing bundle among a batch: the whole batch is refused before anything is made.
    std::fs::remove_dir_all(dir.join("devs")).unwrap();
    std::fs::create_dir(dir.join("devs")).unwrap();
    std::fs::write(dir.join("devs/d4_key.pem"), "x").unwrap();
    refused(
        dir,
        &words("cert device --count 5 --prefix d --ca c/root --out devs --no-password"),
        "d4_key.pem already exists",
    );
    // --force overwrites.
    root(dir, "root", "c", &["--force"]);
    assert_ne!(std::fs::read(dir.join("c/root_cert.pem")).unwrap(), before);
}

#[test]
fn bad_ca_material_is_refused() {
    let d = workdir();
    let dir = d.path();
    root(dir, "root", "c", &["--password-file", "pw.txt"]);
    let dev = |ca: &str, extra: &[&str]| {
        let mut v = words("cert device dev-1 --ca");
        v.push(ca);
        v.extend(words("--out out --no-password"));
        v.extend_from_slice(extra);
        v.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>, needle: &str| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(dir, &a, needle)
    };
    // Wrong and missing CA password.
    write_secret(&dir.join("wrong.txt"), "nope\n");
    run(
        dev("c/root", &["--ca-password-file", "wrong.txt"]),
        "wrong password",
    );
    run(dev("c/root", &[]), "password is required");
    // Missing CA files.
    run(dev("c/nothere", &[]), "could not read");
    // Empty and corrupt CA certificate.
    std::fs::create_dir(dir.join("e")).unwrap();
    std::fs::copy(dir.join("c/root_key.pem"), dir.join("e/empty_key.pem")).unwrap();
    std::fs::write(dir.join("e/empty_cert.pem"), "").unwrap();
    run(dev("e/empty", &["--ca-password-file", "pw.txt"]), "empty");
    std::fs::copy(dir.join("c/root_key.pem"), dir.join("e/corrupt_key.pem")).unwrap();
    let pem = std::fs::read_to_string(dir.join("c/root_cert.pem")).unwrap();
    std::fs::write(
        dir.join("e/corrupt_cert.pem"),
        pem.replacen("MII", "M*I", 1),
    )
    .unwrap();
    run(
        dev("e/corrupt", &["--ca-password-file", "pw.txt"]),
        "could not read certificates",
    );
    // Corrupt key.
    std::fs::copy(dir.join("c/root_cert.pem"), dir.join("e/badkey_cert.pem")).unwrap();
    std::fs::write(
        dir.join("e/badkey_key.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    run(dev("e/badkey", &[]), "private key");
    // Key of another CA.
    root(dir, "other", "o", &[]);
    std::fs::copy(dir.join("c/root_cert.pem"), dir.join("e/mismatch_cert.pem")).unwrap();
    std::fs::copy(dir.join("o/other_key.pem"), dir.join("e/mismatch_key.pem")).unwrap();
    run(dev("e/mismatch", &[]), "does not match");
    // CA without keyCertSign, and a leaf used as CA (both made by openssl).
    ossl_cert(
        &dir.join("e"),
        "noku",
        None,
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,digitalSignature",
    );
    run(dev("e/noku", &[]), "lacks keyCertSign");
    device(dir, "leafca", "o/other", "e", &[]);
    run(dev("e/leafca", &[]), "CA:TRUE");
    // Expired CA (made by iotc with explicit dates).
    root(
        dir,
        "old",
        "x",
        &words("--not-before 2020-01-01T00:00:00Z --not-after 2021-01-01T00:00:00Z"),
    );
    run(dev("x/old", &[]), "expired");
    run(
        words("cert verification ABC --ca x/old --out out --no-password")
            .into_iter()
            .map(str::to_owned)
            .collect(),
        "expired",
    );
    // A pathlen-0 intermediate cannot issue an intermediate.
    intermediate(dir, "inter", "o/other", "o", &[]);
    refused(
        dir,
        &words("cert intermediate --name sub --ca o/inter --out o --no-password"),
        "pathlen 0",
    );
    // Bad --days / dates.
    refused(
        dir,
        &words("cert root --name z --out z --no-password --days 0"),
        "--days",
    );
    refused(
        dir,
        &words(
            "cert root --name z --out z --no-password \
             --not-before 2030-01-01T00:00:00Z --not-after 2029-01-01T00:00:00Z",
        ),
        "not after",
    );
    // Bad verification code.
    refused(
        dir,
        &[
            "cert",
            "verification",
            "a b",
            "--ca",
            "o/other",
            "--out",
            "out",
            "--no-password",
        ],
        "whitespace",
    );
}

#[test]
fn inspect_and_base64_refuse_non_certificates() {
    let d = workdir();
    let dir = d.path();
    std::fs::write(dir.join("empty.pem"), "").unwrap();
    std::fs::write(dir.join("text.pem"), "hello\n").unwrap();
    std::fs::write(
        dir.join("corrupt.pem"),
        "-----BEGIN CERTIFICATE-----\n%%%%\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::write(dir.join("baddr.der"), [0x30u8, 0x03, 0x01, 0x01, 0xff]).unwrap();
    for cmd in ["inspect", "base64"] {
        refused(dir, &["cert", cmd, "empty.pem"], "empty");
        refused(dir, &["cert", cmd, "text.pem"], "no CERTIFICATE block");
        refused(dir, &["cert", cmd, "corrupt.pem"], "corrupt.pem");
        refused(
            dir,
            &["cert", cmd, "baddr.der"],
            "not a valid X.509 certificate",
        );
        refused(dir, &["cert", cmd, "missing.pem"], "could not read");
    }
}

#[test]
fn verify_names_each_failure_reason() {
    let d = workdir();
    let dir = d.path();
    root(dir, "root", "c", &[]);
    intermediate(dir, "inter", "c/root", "c", &[]);
    device(dir, "dev-1", "c/inter", "c", &["--days", "10"]);
    let ok = iotc(
        dir,
        &words("cert verify c/dev-1_fullchain.pem --ca-cert c/root_cert.pem"),
    )
    .ok();
    assert!(
        ok.stdout.contains("OK (CN=dev-1 <- CN=inter <- CN=root)"),
        "{}",
        ok.stdout
    );
    iotc(
        dir,
        &words(
            "cert verify c/dev-1_cert.pem --ca-cert c/root_cert.pem --untrusted c/inter_cert.pem",
        ),
    )
    .ok();
    // A verified intermediate as the only anchor.
    iotc(
        dir,
        &words("cert verify c/dev-1_cert.pem --ca-cert c/inter_cert.pem"),
    )
    .ok();

    refused(
        dir,
        &words(
            "cert verify c/dev-1_fullchain.pem --ca-cert c/root_cert.pem \
             --at 2100-01-01T00:00:00Z",
        ),
        "certificate expired",
    );
    refused(
        dir,
        &words(
            "cert verify c/dev-1_fullchain.pem --ca-cert c/root_cert.pem \
             --at 2000-01-01T00:00:00Z",
        ),
        "not yet valid",
    );
    refused(
        dir,
        &words("cert verify c/dev-1_cert.pem --ca-cert c/root_cert.pem"),
        "unknown issuer",
    );
    // Another root with the same name.
    root(dir, "root", "other", &[]);
    refused(
        dir,
        &words("cert verify c/dev-1_fullchain.pem --ca-cert other/root_cert.pem"),
        "wrong issuer",
    );
    // Bad signature: flip a bit in the device certificate's signature.
    openssl(
        dir,
        &words("x509 -in c/dev-1_cert.pem -outform DER -out dev.der"),
    )
    .ok();
    let mut bytes = std::fs::read(dir.join("dev.der")).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0x01;
    std::fs::write(dir.join("tampered.der"), &bytes).unwrap();
    refused(
        dir,
        &words("cert verify tampered.der --ca-cert c/root_cert.pem --untrusted c/inter_cert.pem"),
        "bad signature",
    );
    // Issuer not a CA: openssl signs a certificate with the device's key.
    std::fs::copy(dir.join("c/dev-1_cert.pem"), dir.join("dev-1_cert.pem")).unwrap();
    std::fs::copy(dir.join("c/dev-1_key.pem"), dir.join("dev-1_key.pem")).unwrap();
    ossl_cert(
        dir,
        "below-leaf",
        Some("dev-1"),
        "basicConstraints=critical,CA:FALSE",
    );
    refused(
        dir,
        &words(
            "cert verify below-leaf_cert.pem --ca-cert c/root_cert.pem \
             --untrusted c/dev-1_fullchain.pem",
        ),
        "issuer not a CA",
    );
    // Path length exceeded: openssl root with pathlen 0 above an intermediate.
    ossl_cert(
        dir,
        "pl0",
        None,
        &CA_EXT.replace("CA:TRUE", "CA:TRUE,pathlen:0"),
    );
    ossl_cert(dir, "mid", Some("pl0"), CA_EXT);
    ossl_cert(
        dir,
        "leaf",
        Some("mid"),
        "basicConstraints=critical,CA:FALSE",
    );
    refused(
        dir,
        &words("cert verify leaf_cert.pem --ca-cert pl0_cert.pem --untrusted mid_cert.pem"),
        "path length exceeded",
    );
    // openssl agrees that this chain is bad.
    assert_ne!(
        openssl(
            dir,
            &words("verify -CAfile pl0_cert.pem -untrusted mid_cert.pem leaf_cert.pem")
        )
        .code,
        0
    );
}

#[test]
fn verify_checks_the_purpose_and_names_each_failure() {
    let d = workdir();
    let dir = d.path();
    root(dir, "root", "c", &[]);
    intermediate(dir, "inter", "c/root", "c", &[]);
    std::fs::copy(dir.join("c/root_cert.pem"), dir.join("root_cert.pem")).unwrap();
    std::fs::copy(dir.join("c/root_key.pem"), dir.join("root_key.pem")).unwrap();
    let verify = |file: &str, extra: &str| {
        let mut v = words("cert verify --ca-cert root_cert.pem");
        v.push(file);
        v.extend(words(extra));
        v.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let refused_verify = |file: &str, extra: &str, needles: &[&str]| {
        let args = verify(file, extra);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        for needle in needles {
            refused(dir, &a, needle);
        }
    };
    let ok_verify = |file: &str, extra: &str| {
        let args = verify(file, extra);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        iotc(dir, &a).ok().stdout
    };

    // A serverAuth-only leaf: the chain is fine (openssl agrees, for a TLS server), but it is
    // no device certificate; nothing but the chain with --purpose any.
    ossl_cert(
        dir,
        "srv",
        Some("root"),
        &leaf_ext(false, "digitalSignature", "serverAuth"),
    );
    openssl(
        dir,
        &words("verify -purpose sslserver -CAfile root_cert.pem srv_cert.pem"),
    )
    .ok();
    assert_ne!(
        openssl(
            dir,
            &words("verify -purpose sslclient -CAfile root_cert.pem srv_cert.pem")
        )
        .code,
        0
    );
    refused_verify(
        "srv_cert.pem",
        "",
        &[
            "extendedKeyUsage lacks clientAuth: CN=srv has extendedKeyUsage serverAuth",
            "checked as a device certificate",
        ],
    );
    refused_verify(
        "srv_cert.pem",
        "--purpose device",
        &["extendedKeyUsage lacks clientAuth"],
    );
    let any = ok_verify("srv_cert.pem", "--purpose any");
    assert!(
        any.contains("OK (CN=srv <- CN=root); purpose not checked"),
        "{any}"
    );

    // No extendedKeyUsage at all, and a keyUsage without digitalSignature.
    ossl_cert(
        dir,
        "noeku",
        Some("root"),
        &leaf_ext(false, "digitalSignature", ""),
    );
    refused_verify("noeku_cert.pem", "", &["has no extendedKeyUsage extension"]);
    ossl_cert(
        dir,
        "kaonly",
        Some("root"),
        &leaf_ext(false, "keyAgreement", "clientAuth"),
    );
    refused_verify(
        "kaonly_cert.pem",
        "",
        &["keyUsage lacks digitalSignature: CN=kaonly has keyUsage keyAgreement"],
    );

    // A CN that no registration id can match: the rule it breaks is named. openssl accepts the
    // certificate for client auth: only the CN is wrong.
    ossl_cert_cn(
        dir,
        "spaced",
        "dev 01",
        Some("root"),
        &leaf_ext(false, "digitalSignature", "clientAuth"),
    );
    openssl(
        dir,
        &words("verify -purpose sslclient -CAfile root_cert.pem spaced_cert.pem"),
    )
    .ok();
    refused_verify(
        "spaced_cert.pem",
        "",
        &["CN not a valid registration id: \"dev 01\": character ' ' is not allowed"],
    );

    // A CA checked as a device: every failure on the one line, chain included.
    refused_verify(
        "c/inter_cert.pem",
        "--purpose device --at 2100-01-01T00:00:00Z",
        &[
            "certificate expired",
            "CA:TRUE on a device certificate",
            "extendedKeyUsage lacks clientAuth",
            "keyUsage lacks digitalSignature: CN=inter has keyUsage keyCertSign, cRLSign",
        ],
    );
    // CA:TRUE picks `ca` by default; a device is not a CA.
    let ca = ok_verify("c/inter_cert.pem", "");
    assert!(ca.contains("OK (CN=inter <- CN=root); purpose ca"), "{ca}");
    device(dir, "dev-1", "c/root", "c", &[]);
    let dev = ok_verify("c/dev-1_cert.pem", "");
    assert!(dev.contains("; purpose device"), "{dev}");
    refused_verify(
        "c/dev-1_cert.pem",
        "--purpose ca",
        &["not a CA: CN=dev-1 has basicConstraints CA:FALSE"],
    );

    // A proof-of-possession certificate as the docs' openssl recipe makes it (no
    // extendedKeyUsage) fails the device default, with a hint, and passes as verification.
    ossl_cert_cn(
        dir,
        "pop",
        "5A1B2C3D",
        Some("root"),
        "basicConstraints=critical,CA:FALSE",
    );
    refused_verify("pop_cert.pem", "", &["--purpose verification"]);
    let pop = ok_verify("pop_cert.pem", "--purpose verification");
    assert!(pop.contains("; purpose verification"), "{pop}");
    refused_verify(
        "c/inter_cert.pem",
        "--purpose verification",
        &["CA:TRUE on a verification certificate"],
    );
    let bad = iotc(
        dir,
        &words("cert verify c/dev-1_cert.pem --ca-cert root_cert.pem --purpose server"),
    );
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("invalid value 'server'") && bad.stderr.contains("verification"),
        "{}",
        bad.stderr
    );
}
