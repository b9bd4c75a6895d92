//! Loading X.509 device identities from what the openssl CLI writes: plain PKCS#8, SEC1,
//! encrypted PKCS#8, PKCS#12 with its chain; a key that is not the certificate's is refused.

use iotc::dps::{IdentityError, X509Identity};
use std::path::Path;
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A root CA and a device cert signed by it, made by openssl.
fn make(dir: &Path) {
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ca_sec1.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-x509",
            "-key",
            "ca_sec1.pem",
            "-subj",
            "/CN=test root",
            "-days",
            "2",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "dev_sec1.pem",
        ],
    );
    openssl(
        dir,
        &[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            "dev_sec1.pem",
            "-out",
            "dev_pkcs8.pem",
        ],
    );
    openssl(
        dir,
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-passout",
            "pass:s3cret",
            "-in",
            "dev_sec1.pem",
            "-out",
            "dev_enc.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "dev_sec1.pem",
            "-subj",
            "/CN=dev-1",
            "-out",
            "dev.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "dev.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca_sec1.pem",
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            "dev.pem",
        ],
    );
    openssl(
        dir,
        &[
            "pkcs12",
            "-export",
            "-in",
            "dev.pem",
            "-inkey",
            "dev_sec1.pem",
            "-certfile",
            "ca.pem",
            "-passout",
            "pass:p12pw",
            "-out",
            "dev.pfx",
        ],
    );
    let chain = [
        std::fs::read(dir.join("dev.pem")).unwrap(),
        std::fs::read(dir.join("ca.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(dir.join("dev_fullchain.pem"), chain).unwrap();
}

#[test]
fn loads_every_key_form_openssl_writes() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    make(d);
    let read = |n: &str| std::fs::read(d.join(n)).unwrap();
    for key in ["dev_sec1.pem", "dev_pkcs8.pem"] {
        let id = X509Identity::from_pem(&read("dev_fullchain.pem"), &read(key), None).unwrap();
        assert_eq!(id.common_name().as_deref(), Some("dev-1"));
        assert_eq!(id.chain_der().len(), 2, "{key}");
    }
    let id =
        X509Identity::from_pem(&read("dev.pem"), &read("dev_enc.pem"), Some("s3cret")).unwrap();
    assert_eq!(id.chain_der().len(), 1);
    assert!(!format!("{id:?}").contains("BEGIN"));

    assert!(matches!(
        X509Identity::from_pem(&read("dev.pem"), &read("dev_enc.pem"), None),
        Err(IdentityError::PasswordNeeded)
    ));
    assert!(matches!(
        X509Identity::from_pem(&read("dev.pem"), &read("dev_enc.pem"), Some("wrong")),
        Err(IdentityError::DecryptKey)
    ));
    // The CA's key with the device's certificate.
    assert!(matches!(
        X509Identity::from_pem(&read("dev.pem"), &read("ca_sec1.pem"), None),
        Err(IdentityError::KeyMismatch(_))
    ));
    assert!(matches!(
        X509Identity::from_pem(b"nothing here", &read("dev_sec1.pem"), None),
        Err(IdentityError::ReadCertificates(_))
    ));
}

#[test]
fn loads_pkcs12_with_its_chain_leaf_first() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    make(d);
    let pfx = std::fs::read(d.join("dev.pfx")).unwrap();
    let id = X509Identity::from_pkcs12(&pfx, "p12pw").unwrap();
    assert_eq!(id.common_name().as_deref(), Some("dev-1"));
    assert_eq!(id.chain_der().len(), 2);
    assert!(matches!(
        X509Identity::from_pkcs12(&pfx, "nope"),
        Err(IdentityError::ReadPkcs12(_))
    ));
}
