//! Unit tests of the cert module (the openssl and webpki cross-checks live in tests/it/cert_*.rs).

use super::*;
use crate::ids::RegistrationId;
use time::{Duration, OffsetDateTime};

fn ext<'a>(info: &'a CertInfo, name: &str) -> Option<&'a ExtensionInfo> {
    info.extensions.iter().find(|e| e.name == name)
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

#[test]
fn root_and_intermediate_profiles() {
    let root = Authority::new_root(&CaOptions::default()).unwrap();
    let info = inspect(root.cert_der()).unwrap();
    assert_eq!(info.subject, "CN=iotc root CA");
    assert!(info.is_ca && info.self_issued);
    let bc = ext(&info, "basicConstraints").unwrap();
    assert!(bc.critical);
    assert_eq!(bc.value, "CA:TRUE, pathlen:1");
    let ku = ext(&info, "keyUsage").unwrap();
    assert!(ku.critical);
    assert_eq!(ku.value, "keyCertSign, cRLSign");
    assert!(ext(&info, "subjectKeyIdentifier").is_some());
    assert!(ext(&info, "authorityKeyIdentifier").is_none());
    assert!(ext(&info, "extendedKeyUsage").is_none());
    assert_eq!(info.serial.len(), 40);
    assert_eq!(info.key_type, "ec-p256");
    assert_eq!(info.sha1_thumbprint.len(), 40);
    assert_eq!(info.sha256_thumbprint.len(), 64);
    assert!(info
        .sha1_thumbprint
        .chars()
        .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));

    let inter = root
        .issue_intermediate(&CaOptions {
            cn: Some("inter".into()),
            key_type: KeyType::EcP384,
            days: Some(100_000),
            ..Default::default()
        })
        .unwrap();
    let i = inspect(inter.cert_der()).unwrap();
    assert_eq!(
        ext(&i, "basicConstraints").unwrap().value,
        "CA:TRUE, pathlen:0"
    );
    let root_skid = &ext(&info, "subjectKeyIdentifier").unwrap().value;
    assert_eq!(
        ext(&i, "authorityKeyIdentifier").unwrap().value,
        format!("keyid:{root_skid}")
    );
    // Clamped to the root's notAfter.
    assert_eq!(i.not_after, info.not_after);
    assert_eq!(i.key_type, "ec-p384");
    assert_eq!(i.signature_algorithm, "ecdsa-with-SHA256"); // signed by the P-256 root
                                                            // pathlen 0: no CA below the intermediate.
    assert!(matches!(
        inter.issue_intermediate(&CaOptions::default()),
        Err(CertError::PathLen { .. })
    ));
    // The intermediate's chain is itself (root excluded).
    assert_eq!(
        parse_pem_certs(inter.issued().chain_pem.as_bytes()).unwrap(),
        vec![inter.cert_der().to_vec()]
    );
}

#[test]
fn device_and_verification_profiles() {
    let root = Authority::new_root(&CaOptions::default()).unwrap();
    let inter = root.issue_intermediate(&CaOptions::default()).unwrap();
    let id = RegistrationId::new("dev:01").unwrap();
    for kt in [KeyType::EcP256, KeyType::Rsa2048] {
        let dev = inter
            .issue_device(
                &id,
                &LeafOptions {
                    key_type: kt,
                    ..Default::default()
                },
            )
            .unwrap();
        let info = inspect(&dev.cert_der).unwrap();
        assert_eq!(
            info.common_name.as_deref(),
            Some("dev:01"),
            "never rewritten"
        );
        let bc = ext(&info, "basicConstraints").unwrap();
        assert!(bc.critical);
        assert_eq!(bc.value, "CA:FALSE");
        let ku = ext(&info, "keyUsage").unwrap();
        assert!(ku.critical);
        let want = if kt.is_rsa() {
            "digitalSignature, keyEncipherment"
        } else {
            "digitalSignature"
        };
        assert_eq!(ku.value, want);
        assert_eq!(ext(&info, "extendedKeyUsage").unwrap().value, "clientAuth");
        assert!(ext(&info, "subjectKeyIdentifier").is_some());
        assert!(ext(&info, "authorityKeyIdentifier").is_some());
        assert_eq!(dev.key.as_ref().unwrap().key_type(), kt);
        let chain = dev.chain_der().unwrap();
        assert_eq!(chain, vec![dev.cert_der.clone(), inter.cert_der().to_vec()]);
        verify_chain(
            &dev.cert_der,
            &chain[1..],
            &[root.cert_der().to_vec()],
            now(),
        )
        .unwrap();
    }
    let v = inter
        .issue_verification("0A1B2C3D4E5F", &LeafOptions::default())
        .unwrap();
    let info = inspect(&v.cert_der).unwrap();
    assert_eq!(info.common_name.as_deref(), Some("0A1B2C3D4E5F"));
    assert_eq!(ext(&info, "keyUsage").unwrap().value, "digitalSignature");
    assert_eq!(ext(&info, "extendedKeyUsage").unwrap().value, "clientAuth");
    verify_signed_by(&v.cert_der, inter.cert_der()).unwrap();
    assert!(inter
        .issue_verification("", &LeafOptions::default())
        .is_err());
    assert!(inter
        .issue_verification("a b", &LeafOptions::default())
        .is_err());
}

#[test]
fn server_certificate_has_sans_and_server_auth() {
    let root = Authority::new_root(&CaOptions::default()).unwrap();
    let s = root
        .issue_server(
            &["localhost"],
            &["127.0.0.1".parse().unwrap()],
            &LeafOptions::default(),
        )
        .unwrap();
    let info = inspect(&s.cert_der).unwrap();
    assert_eq!(ext(&info, "extendedKeyUsage").unwrap().value, "serverAuth");
    assert_eq!(
        ext(&info, "subjectAltName").unwrap().value,
        "DNS:localhost, IP:127.0.0.1"
    );
}

#[test]
fn verify_chain_names_each_failure() {
    let root = Authority::new_root(&CaOptions::default()).unwrap();
    let inter = root.issue_intermediate(&CaOptions::default()).unwrap();
    let dev = inter
        .issue_device(&"d1".parse().unwrap(), &LeafOptions::default())
        .unwrap();
    let anchors = [root.cert_der().to_vec()];
    let chain = [inter.cert_der().to_vec()];
    // Missing intermediate.
    assert!(matches!(
        verify_chain(&dev.cert_der, &[], &anchors, now()),
        Err(ChainError::UnknownIssuer { .. })
    ));
    // Intermediate as anchor.
    let p = verify_chain(&dev.cert_der, &[], &chain, now()).unwrap();
    assert_eq!(p.anchor_index, 0);
    // Another root with the same name: wrong issuer.
    let other = Authority::new_root(&CaOptions::default()).unwrap();
    assert!(matches!(
        verify_chain(&dev.cert_der, &chain, &[other.cert_der().to_vec()], now()),
        Err(ChainError::WrongIssuer { .. })
    ));
    // Expired / not yet valid.
    assert!(matches!(
        verify_chain(&dev.cert_der, &chain, &anchors, now() + Duration::days(400)),
        Err(ChainError::Expired { .. })
    ));
    assert!(matches!(
        verify_chain(&dev.cert_der, &chain, &anchors, now() - Duration::days(1)),
        Err(ChainError::NotYetValid { .. })
    ));
    // A device certificate is not a CA.
    let dev_as_ca_child = {
        // Sign a certificate whose issuer is the device: build it with rcgen directly.
        let kp = KeyType::EcP256.generate().unwrap();
        let dev_key = dev.key.as_ref().unwrap();
        let (_, dev_kp) = PrivateKey::from_pkcs8_der(dev_key.pkcs8_der()).unwrap();
        let issuer =
            rcgen::Issuer::from_ca_cert_der(&dev.cert_der.as_slice().into(), dev_kp).unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.use_authority_key_identifier_extension = true;
        p.signed_by(&kp, &issuer).unwrap().der().to_vec()
    };
    assert!(matches!(
        verify_chain(
            &dev_as_ca_child,
            &[dev.cert_der.clone(), chain[0].clone()],
            &anchors,
            now()
        ),
        Err(ChainError::IssuerNotCa { .. })
    ));
    // Tampered signature.
    let mut bad = dev.cert_der.clone();
    let n = bad.len();
    bad[n - 3] ^= 0x55;
    assert!(matches!(
        verify_chain(&bad, &chain, &anchors, now()),
        Err(ChainError::BadSignature { .. }) | Err(ChainError::Parse { .. })
    ));
    // Path length: root pathlen 0 with an intermediate below it.
    let tight = Authority::new_root(&CaOptions {
        cn: Some("tight".into()),
        path_len: Some(1),
        ..Default::default()
    })
    .unwrap();
    let i1 = tight
        .issue_intermediate(&CaOptions {
            path_len: Some(0),
            ..Default::default()
        })
        .unwrap();
    let leaf = i1
        .issue_device(&"d2".parse().unwrap(), &LeafOptions::default())
        .unwrap();
    verify_chain(
        &leaf.cert_der,
        &[i1.cert_der().to_vec()],
        &[tight.cert_der().to_vec()],
        now(),
    )
    .unwrap();
}

#[test]
fn path_length_exceeded_is_reported() {
    // root pathlen 0 -> rcgen-made intermediate (bypassing our own refusal) -> leaf.
    let root = Authority::new_root(&CaOptions {
        path_len: Some(0),
        ..Default::default()
    })
    .unwrap();
    assert!(root.issue_intermediate(&CaOptions::default()).is_err());
    let (_, root_kp) =
        PrivateKey::from_pkcs8_der(root.issued().key.as_ref().unwrap().pkcs8_der()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(&root.cert_der().into(), root_kp).unwrap();
    let ikp = KeyType::EcP256.generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "rogue");
    let inter_der = p.signed_by(&ikp, &issuer).unwrap().der().to_vec();
    let inter = Authority::from_pem(
        &key::pem_encode("CERTIFICATE", &inter_der),
        PrivateKey::from_key_pair(&ikp, KeyType::EcP256)
            .pkcs8_pem()
            .expose(),
        None,
        None,
    )
    .unwrap();
    let leaf = inter
        .issue_device(&"d3".parse().unwrap(), &LeafOptions::default())
        .unwrap();
    assert!(matches!(
        verify_chain(
            &leaf.cert_der,
            &[inter_der],
            &[root.cert_der().to_vec()],
            now()
        ),
        Err(ChainError::PathLenExceeded {
            path_len: 0,
            found: 1,
            ..
        })
    ));
}

#[test]
fn from_pem_refuses_bad_cas() {
    let root = Authority::new_root(&CaOptions::default()).unwrap();
    let key = root.issued().key.as_ref().unwrap().pkcs8_pem();
    // Round trip, with an encrypted key.
    let enc = root
        .issued()
        .key
        .as_ref()
        .unwrap()
        .encrypted_pkcs8_pem("s3cret", 1000)
        .unwrap();
    let back = Authority::from_pem(root.cert_pem(), enc.expose(), Some("s3cret"), None).unwrap();
    assert_eq!(back.cert_der(), root.cert_der());
    assert!(matches!(
        Authority::from_pem(root.cert_pem(), enc.expose(), Some("nope"), None),
        Err(CertError::DecryptKey)
    ));
    // Key of another CA.
    let other = Authority::new_root(&CaOptions::default()).unwrap();
    let other_key = other.issued().key.as_ref().unwrap().pkcs8_pem();
    assert!(matches!(
        Authority::from_pem(root.cert_pem(), other_key.expose(), None, None),
        Err(CertError::KeyMismatch { .. })
    ));
    // A device certificate is not a CA.
    let dev = root
        .issue_device(&"d".parse().unwrap(), &LeafOptions::default())
        .unwrap();
    let dkey = dev.key.as_ref().unwrap().pkcs8_pem();
    assert!(matches!(
        Authority::from_pem(&dev.cert_pem, dkey.expose(), None, None),
        Err(CertError::NotACa { .. })
    ));
    // Empty / corrupt PEM.
    assert!(matches!(
        Authority::from_pem("", key.expose(), None, None),
        Err(CertError::ParsePem { .. })
    ));
    assert!(Authority::from_pem(
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        key.expose(),
        None,
        None
    )
    .is_err());
    // An expired CA loads (it can be inspected) but refuses to issue.
    let old = Authority::new_root(&CaOptions {
        not_before: Some(now() - Duration::days(10)),
        not_after: Some(now() - Duration::days(1)),
        ..Default::default()
    })
    .unwrap();
    assert!(matches!(
        old.issue_device(&"d".parse().unwrap(), &LeafOptions::default()),
        Err(CertError::CaExpired { .. })
    ));
}

#[test]
fn csr_is_checked_and_signed() {
    let root = Authority::new_root(&CaOptions::default()).unwrap();
    let kp = KeyType::EcP256.generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "csr-dev:7");
    let csr = p.serialize_request(&kp).unwrap();
    let pem = csr.pem().unwrap();
    let issued = root
        .sign_csr(pem.as_bytes(), &LeafOptions::default())
        .unwrap();
    assert!(issued.key.is_none());
    let info = inspect(&issued.cert_der).unwrap();
    assert_eq!(info.common_name.as_deref(), Some("csr-dev:7"));
    assert_eq!(ext(&info, "extendedKeyUsage").unwrap().value, "clientAuth");
    // Same key as the CSR.
    use rcgen::PublicKeyData;
    let c = inspect::parse_cert(&issued.cert_der).unwrap();
    assert_eq!(c.public_key().raw, kp.subject_public_key_info().as_slice());
    // DER works too.
    root.sign_csr(csr.der(), &LeafOptions::default()).unwrap();
    // Tampered CSR: the signature no longer verifies.
    let mut der = csr.der().to_vec();
    let pos = der.windows(9).position(|w| w == b"csr-dev:7").unwrap();
    der[pos] = b'X';
    assert!(matches!(
        root.sign_csr(&der, &LeafOptions::default()),
        Err(CertError::Csr { .. })
    ));
    // Bad CN.
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "dev 01");
    let csr = p.serialize_request(&kp).unwrap();
    assert!(matches!(
        root.sign_csr(csr.der(), &LeafOptions::default()),
        Err(CertError::InvalidRegistrationId(_))
    ));
    assert!(root.sign_csr(b"", &LeafOptions::default()).is_err());
}

#[test]
fn certificate_strings_round_trip() {
    let root = Authority::new_root(&CaOptions::default()).unwrap();
    let s = certificate_string(root.cert_pem());
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&s)
        .unwrap();
    assert_eq!(decoded, root.cert_pem().as_bytes());
    assert_eq!(decode_certificate_string(&s).unwrap(), root.cert_der());
    let der_b64 = base64::engine::general_purpose::STANDARD.encode(root.cert_der());
    assert_eq!(
        decode_certificate_string(&der_b64).unwrap(),
        root.cert_der()
    );
    assert!(decode_certificate_string("").is_err());
    assert!(decode_certificate_string("!!!").is_err());
    assert!(decode_certificate_string("aGVsbG8=").is_err());
}

#[test]
fn parse_pem_certs_reads_all_and_refuses_garbage() {
    let root = Authority::new_root(&CaOptions::default()).unwrap();
    let inter = root.issue_intermediate(&CaOptions::default()).unwrap();
    let text = format!("junk before\n{}{}", inter.cert_pem(), root.cert_pem());
    assert_eq!(parse_pem_certs(text.as_bytes()).unwrap().len(), 2);
    assert!(parse_pem_certs(b"").is_err());
    assert!(parse_pem_certs(b"not pem").is_err());
    assert!(
        parse_pem_certs(b"-----BEGIN CERTIFICATE-----\n@@@\n-----END CERTIFICATE-----\n").is_err()
    );
    assert_eq!(
        sha1_thumbprint(b"abc"),
        "A9993E364706816ABA3E25717850C26C9CD0D89D"
    );
    assert_eq!(
        sha256_thumbprint(b"abc"),
        "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"
    );
}

#[test]
fn write_bundle_is_atomic_private_and_refuses_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let root = Authority::new_root(&CaOptions::default()).unwrap();
    let dev = root
        .issue_device(&"dev-1".parse().unwrap(), &LeafOptions::default())
        .unwrap();
    let opts = WriteOptions {
        password: Some(crate::secret::Secret::new("pw")),
        pfx: true,
        kdf_iterations: 1000,
        ..Default::default()
    };
    let files = write_bundle(dir.path(), "dev-1", &dev, &opts).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(files.key.as_ref().unwrap()), 0o600);
        assert_eq!(mode(files.pfx.as_ref().unwrap()), 0o600);
        assert_eq!(mode(&files.cert), 0o644);
    }
    let key_pem = std::fs::read_to_string(files.key.as_ref().unwrap()).unwrap();
    assert!(key_pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    let chain = std::fs::read_to_string(files.fullchain.as_ref().unwrap()).unwrap();
    assert_eq!(chain, dev.chain_pem);
    assert!(!chain.contains("null"));
    // PKCS#12 reads back with the password and holds the key.
    let p12 = std::fs::read(files.pfx.as_ref().unwrap()).unwrap();
    let ks =
        p12_keystore::KeyStore::from_pkcs12(&p12, "pw", p12_keystore::Pkcs12ImportPolicy::Relaxed)
            .unwrap();
    let (_, chain) = ks.private_key_chain().unwrap();
    assert_eq!(chain.key().as_der(), dev.key.as_ref().unwrap().pkcs8_der());
    // Refused without force; nothing changed; no temp files left.
    let before = std::fs::read(&files.cert).unwrap();
    let dev2 = root
        .issue_device(&"dev-1".parse().unwrap(), &LeafOptions::default())
        .unwrap();
    assert!(matches!(
        write_bundle(dir.path(), "dev-1", &dev2, &opts),
        Err(CertError::AlreadyExists { .. })
    ));
    assert_eq!(std::fs::read(&files.cert).unwrap(), before);
    write_bundle(
        dir.path(),
        "dev-1",
        &dev2,
        &WriteOptions {
            force: true,
            ..opts.clone()
        },
    )
    .unwrap();
    assert_ne!(std::fs::read(&files.cert).unwrap(), before);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    // PFX without password is refused; bad names are refused.
    assert!(write_bundle(
        dir.path(),
        "x",
        &dev,
        &WriteOptions {
            pfx: true,
            ..Default::default()
        }
    )
    .is_err());
    assert!(write_bundle(dir.path(), "../x", &dev, &WriteOptions::default()).is_err());
}
