//! A second verifier in Rust: rustls-webpki (aws-lc-rs) path building with the client-auth
//! (or server-auth) usage, plus x509-parser (aws-lc-rs) signature checks, over certificates made
//! by the library and by the real CLI, for every key type.

use crate::common_cert;
use common_cert::*;

use iotc::cert::{parse_pem_certs, Authority, CaOptions, KeyType, LeafOptions};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

fn webpki_client(leaf: &[u8], chain: &[Vec<u8>], root: &[u8]) -> Result<(), webpki::Error> {
    let root = CertificateDer::from(root.to_vec());
    let anchors = [webpki::anchor_from_trusted_cert(&root)?];
    let inters: Vec<CertificateDer<'_>> = chain
        .iter()
        .map(|d| CertificateDer::from(d.clone()))
        .collect();
    let leaf = CertificateDer::from(leaf.to_vec());
    let ee = webpki::EndEntityCert::try_from(&leaf)?;
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &inters,
        UnixTime::now(),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map(|_| ())
}

fn x509_parser_signed_by(cert: &[u8], issuer: &[u8]) -> bool {
    let (_, c) = X509Certificate::from_der(cert).unwrap();
    let (_, i) = X509Certificate::from_der(issuer).unwrap();
    c.verify_signature(Some(i.public_key())).is_ok()
}

#[test]
fn library_chains_pass_webpki_for_every_key_type() {
    for kt in KeyType::ALL {
        let root = Authority::new_root(&CaOptions {
            key_type: kt,
            ..Default::default()
        })
        .unwrap();
        let inter = root
            .issue_intermediate(&CaOptions {
                key_type: kt,
                ..Default::default()
            })
            .unwrap();
        let opts = LeafOptions {
            key_type: kt,
            ..Default::default()
        };
        let dev = inter
            .issue_device(&"dev:01".parse().unwrap(), &opts)
            .unwrap();
        let ver = inter.issue_verification("5EED", &opts).unwrap();
        let chain = dev.chain_der().unwrap();
        webpki_client(&dev.cert_der, &chain[1..], root.cert_der())
            .unwrap_or_else(|e| panic!("{kt}: {e:?}"));
        webpki_client(&ver.cert_der, &[inter.cert_der().to_vec()], root.cert_der()).unwrap();
        assert!(x509_parser_signed_by(&dev.cert_der, inter.cert_der()));
        assert!(x509_parser_signed_by(inter.cert_der(), root.cert_der()));
        assert!(x509_parser_signed_by(root.cert_der(), root.cert_der()));
        assert!(!x509_parser_signed_by(&dev.cert_der, root.cert_der()));
        // Without the intermediate, or against another root, webpki refuses.
        assert!(webpki_client(&dev.cert_der, &[], root.cert_der()).is_err());
        let other = Authority::new_root(&CaOptions {
            key_type: kt,
            ..Default::default()
        })
        .unwrap();
        assert!(webpki_client(&dev.cert_der, &chain[1..], other.cert_der()).is_err());
    }
}

#[test]
fn device_certificates_are_not_server_certificates_and_server_ones_are() {
    let root = Authority::new_root(&CaOptions::default()).unwrap();
    let dev = root
        .issue_device(&"dev-1".parse().unwrap(), &LeafOptions::default())
        .unwrap();
    let server = root
        .issue_server(
            &["localhost"],
            &["127.0.0.1".parse().unwrap()],
            &LeafOptions::default(),
        )
        .unwrap();
    let root_der = CertificateDer::from(root.cert_der().to_vec());
    let anchors = [webpki::anchor_from_trusted_cert(&root_der).unwrap()];
    let check = |der: &[u8]| {
        let c = CertificateDer::from(der.to_vec());
        let ee = webpki::EndEntityCert::try_from(&c).unwrap();
        let ok = ee
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &anchors,
                &[],
                UnixTime::now(),
                webpki::KeyUsage::server_auth(),
                None,
                None,
            )
            .is_ok();
        let name_ok = ee
            .verify_is_valid_for_subject_name(&ServerName::try_from("localhost").unwrap())
            .is_ok();
        (ok, name_ok)
    };
    assert_eq!(check(&server.cert_der), (true, true));
    assert!(
        !check(&dev.cert_der).0,
        "a clientAuth-only device cert must not pass as a server"
    );
    // And the server certificate is not a client certificate.
    assert!(webpki_client(&server.cert_der, &[], root.cert_der()).is_err());
}

#[test]
fn cli_output_passes_webpki() {
    for kt in ["ec-p256", "rsa-2048"] {
        let d = workdir();
        let dir = d.path();
        make_cas(dir, kt);
        iotc(
            dir,
            &[
                "cert",
                "device",
                "--count",
                "5",
                "--prefix",
                "w-",
                "--ca",
                "c/inter",
                "--out",
                "devs",
                "--key-type",
                kt,
                "--no-password",
            ],
        )
        .ok();
        let root = parse_pem_certs(&std::fs::read(dir.join("c/root_cert.pem")).unwrap())
            .unwrap()
            .remove(0);
        for i in 1..=5 {
            let chain = parse_pem_certs(
                &std::fs::read(dir.join(format!("devs/w-{i}_fullchain.pem"))).unwrap(),
            )
            .unwrap();
            assert_eq!(chain.len(), 2);
            webpki_client(&chain[0], &chain[1..], &root).unwrap();
            assert!(x509_parser_signed_by(&chain[0], &chain[1]));
            assert!(x509_parser_signed_by(&chain[1], &root));
        }
    }
}
