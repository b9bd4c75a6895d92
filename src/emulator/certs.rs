//! The certificate checks the IoT Central API needs: decoding the `certificate` strings of
//! the certificate APIs, thumbprints, and the proof-of-possession check of `verify`.
//!
//! They wrap `crate::cert` (decoding, thumbprints, signature checks) and turn its errors into
//! the messages the API answers with; the validity check of `verify` is added here.

/// Decodes a `certificate` string: base64 of a PEM file (what the docs' convert.js makes)
/// or base64 of DER. Returns the first certificate's DER.
pub fn decode_certificate_string(s: &str) -> Result<Vec<u8>, String> {
    crate::cert::decode_certificate_string(s).map_err(|e| e.to_string())
}

fn parse(der: &[u8]) -> Result<x509_parser::certificate::X509Certificate<'_>, String> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], c)) => Ok(c),
        Ok(_) => Err("the certificate has trailing bytes after its DER".into()),
        Err(e) => Err(format!(
            "the certificate is not a valid X.509 certificate: {e}"
        )),
    }
}

/// SHA-1 of the DER, 40 uppercase hex characters.
pub fn sha1_thumbprint(der: &[u8]) -> String {
    crate::cert::sha1_thumbprint(der)
}

/// The subject common name.
pub fn common_name(der: &[u8]) -> Result<Option<String>, String> {
    let c = parse(der)?;
    let cn = c
        .subject()
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_owned);
    Ok(cn)
}

/// Checks that `cert_der` is signed by the key of `issuer_der` and is valid now.
pub fn verify_signed_by(cert_der: &[u8], issuer_der: &[u8]) -> Result<(), String> {
    let cert = parse(cert_der)?;
    let issuer = parse(issuer_der)?;
    cert.verify_signature(Some(issuer.public_key()))
        .map_err(|_| {
            "the certificate is not signed by the uploaded certificate's key".to_owned()
        })?;
    if !cert.validity().is_valid() {
        return Err("the certificate is outside its validity period".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn make(
        cn: &str,
        issuer: Option<(&rcgen::Certificate, &rcgen::KeyPair)>,
    ) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = match issuer {
            None => p.self_signed(&key).unwrap(),
            Some((ic, ik)) => {
                let iss = rcgen::Issuer::from_ca_cert_der(ic.der(), ik).unwrap();
                p.signed_by(&key, &iss).unwrap()
            }
        };
        (cert, key)
    }

    #[test]
    fn decodes_pem_and_der_forms() {
        let (c, _) = make("root", None);
        let b64 = base64::engine::general_purpose::STANDARD;
        let from_pem = decode_certificate_string(&b64.encode(c.pem())).unwrap();
        let from_der = decode_certificate_string(&b64.encode(c.der())).unwrap();
        assert_eq!(from_pem, c.der().to_vec());
        assert_eq!(from_der, c.der().to_vec());
        assert!(decode_certificate_string("not base64!").is_err());
        assert!(decode_certificate_string(&b64.encode(b"hello")).is_err());
        assert_eq!(sha1_thumbprint(&from_der).len(), 40);
    }

    #[test]
    fn signature_check_tells_the_right_key() {
        let (root, rk) = make("root", None);
        let (other, _) = make("other", None);
        let (leaf, _) = make("CODE", Some((&root, &rk)));
        assert!(verify_signed_by(leaf.der(), root.der()).is_ok());
        assert!(verify_signed_by(leaf.der(), other.der()).is_err());
        assert_eq!(common_name(leaf.der()).unwrap().as_deref(), Some("CODE"));
    }
}
