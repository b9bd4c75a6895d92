//! Reading certificate signing requests: the device keeps its key, we check and sign.
//!
//! A CSR is accepted only when its self-signature verifies (the requester holds the key), its
//! key is of a type the device profile allows (EC P-256/P-384, RSA 2048/3072/4096), and its
//! subject has exactly one CN, a valid registration id (it becomes the device id; never
//! rewritten). The certificate is the device profile, whatever the CSR asks for: requested
//! extensions and subject attributes other than the CN are never copied ([`DeviceCsr::not_copied`]
//! names them, so a caller can say so), and a CSR that asks to be a CA (basicConstraints
//! CA:TRUE, keyCertSign or cRLSign, nameConstraints) is refused: a device asking for that is
//! misconfigured or hostile, and signing it as a device would hide the fact.

use sha2::{Digest, Sha256};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::extensions::ParsedExtension;
use x509_parser::objects::{oid2sn, oid_registry};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::key::pem_decode_first;
use super::{CertError, KeyType};
use crate::ids::RegistrationId;

/// A device's certificate signing request, checked (see the module documentation).
#[derive(Debug, Clone)]
pub struct DeviceCsr {
    id: RegistrationId,
    key_type: KeyType,
    der: Vec<u8>,
    spki_der: Vec<u8>,
    not_copied: Vec<String>,
}

fn refused(reason: impl Into<String>) -> CertError {
    CertError::Csr {
        reason: reason.into(),
    }
}

impl DeviceCsr {
    /// Parses a CSR (PEM or DER) and checks it: signature, key type, one CN that is a valid
    /// registration id, no CA request.
    pub fn parse(input: &[u8]) -> Result<DeviceCsr, CertError> {
        let der = match std::str::from_utf8(input) {
            Ok(text) if text.contains("-----BEGIN") => {
                let (label, der) = pem_decode_first(text).map_err(refused)?;
                if label != "CERTIFICATE REQUEST" && label != "NEW CERTIFICATE REQUEST" {
                    return Err(refused(format!(
                        "expected a CERTIFICATE REQUEST PEM block, found {label:?}"
                    )));
                }
                der
            }
            _ => input.to_vec(),
        };
        if der.is_empty() {
            return Err(refused("empty input"));
        }
        let (id, key_type, spki_der, not_copied) = check(&der)?;
        Ok(DeviceCsr {
            id,
            key_type,
            spki_der,
            der,
            not_copied,
        })
    }

    /// [`parse`](Self::parse), and the CN must be `expected` exactly (same case too: the
    /// CN is not rewritten to match).
    pub fn for_device(input: &[u8], expected: &RegistrationId) -> Result<DeviceCsr, CertError> {
        let csr = DeviceCsr::parse(input)?;
        if csr.id.as_str() != expected.as_str() {
            return Err(refused(format!(
                "its CN is {:?}, not the device id {:?} (the CN must be the device id exactly)",
                csr.id.as_str(),
                expected.as_str()
            )));
        }
        Ok(csr)
    }

    /// The CN: the device id the certificate will carry.
    pub fn id(&self) -> &RegistrationId {
        &self.id
    }

    /// The type of the requester's key.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The CSR, DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// SHA-256 of the DER, lowercase hex: names this request in journals and bundles.
    pub fn sha256_hex(&self) -> String {
        Sha256::digest(&self.der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// What the CSR asks for that the certificate does not carry, because the device profile
    /// decides it: requested extensions (`subjectAltName`, `extendedKeyUsage`, ...) and subject
    /// attributes other than the CN (`subject organizationName`, ...).
    pub fn not_copied(&self) -> &[String] {
        &self.not_copied
    }

    pub(crate) fn spki(&self) -> Result<rcgen::SubjectPublicKeyInfo, CertError> {
        rcgen::SubjectPublicKeyInfo::from_der(&self.spki_der).map_err(|e| refused(e.to_string()))
    }
}

/// The checks of [`DeviceCsr::parse`] on a CSR's DER: its CN, key type, public key and
/// what it asks for that is not copied.
fn check(der: &[u8]) -> Result<(RegistrationId, KeyType, Vec<u8>, Vec<String>), CertError> {
    let (_, req) = X509CertificationRequest::from_der(der)
        .map_err(|e| refused(format!("not a valid CSR: {e}")))?;
    let info = &req.certification_request_info;
    let spki = &info.subject_pki;
    let key_type = KeyType::from_spki(spki.raw).ok_or_else(|| {
        refused(format!(
            "its key is {}, which the device profile does not allow \
             (allowed: EC P-256/P-384, RSA 2048/3072/4096)",
            describe_key(spki)
        ))
    })?;
    req.verify_signature().map_err(|_| {
        refused("its signature does not verify (corrupt, or not signed by its own key)")
    })?;
    let mut cns = info.subject.iter_common_name();
    let cn = cns
        .next()
        .ok_or_else(|| refused("its subject has no CN (the CN must be the device id)"))?
        .as_str()
        .map_err(|_| refused("its CN is not a readable string"))?;
    if cns.next().is_some() {
        return Err(refused(
            "its subject has more than one CN (the CN must be the device id, once)",
        ));
    }
    let id = RegistrationId::new(cn)?;
    let mut not_copied: Vec<String> = info
        .subject
        .iter_attributes()
        .filter(|a| a.attr_type().to_id_string() != "2.5.4.3")
        .map(|a| format!("subject {}", name_of(a.attr_type())))
        .collect();
    for attr in info.iter_attributes() {
        let ParsedCriAttribute::ExtensionRequest(request) = attr.parsed_attribute() else {
            continue;
        };
        for ext in &request.extensions {
            let name = name_of(&ext.oid);
            match ext.parsed_extension() {
                ParsedExtension::BasicConstraints(bc) if bc.ca => {
                    return Err(refused(
                        "it requests a CA certificate (basicConstraints CA:TRUE); a device \
                         certificate is never a CA",
                    ))
                }
                ParsedExtension::KeyUsage(ku) if ku.key_cert_sign() || ku.crl_sign() => {
                    return Err(refused(
                        "it requests the CA key usages keyCertSign/cRLSign; a device \
                         certificate never signs certificates",
                    ))
                }
                ParsedExtension::NameConstraints(_) => {
                    return Err(refused(
                        "it requests nameConstraints, an extension of CA certificates",
                    ))
                }
                ParsedExtension::ParseError { .. } => {
                    return Err(refused(format!(
                        "its requested extension {name} is unreadable"
                    )))
                }
                _ => not_copied.push(name),
            }
        }
    }
    Ok((id, key_type, spki.raw.to_vec(), not_copied))
}

/// The registry's short name of an OID (`subjectAltName`), else its dotted form.
fn name_of(oid: &x509_parser::der_parser::oid::Oid<'_>) -> String {
    oid2sn(oid, oid_registry())
        .map(str::to_owned)
        .unwrap_or_else(|_| oid.to_id_string())
}

/// A key the device profile does not allow, named: `EC secp256k1`, `RSA 1024-bit`, `Ed25519`.
fn describe_key(spki: &SubjectPublicKeyInfo<'_>) -> String {
    use x509_parser::public_key::PublicKey;
    let alg = spki.algorithm.algorithm.to_id_string();
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => format!("RSA {}-bit", rsa.key_size()),
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| match oid.to_id_string().as_str() {
                    "1.3.132.0.35" => "P-521".to_owned(),
                    "1.3.132.0.10" => "secp256k1".to_owned(),
                    "1.3.36.3.3.2.8.1.1.7" => "brainpoolP256r1".to_owned(),
                    _ => format!("curve {}", name_of(&oid)),
                })
                .unwrap_or_else(|| "with no named curve".into());
            format!("EC {curve}")
        }
        _ => match alg.as_str() {
            "1.3.101.112" => "Ed25519".into(),
            "1.3.101.113" => "Ed448".into(),
            "1.2.840.10040.4.1" => "DSA".into(),
            _ => format!("of algorithm {}", name_of(&spki.algorithm.algorithm)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
        KeyUsagePurpose, SanType,
    };

    fn params(cns: &[&str]) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        for cn in cns {
            p.distinguished_name.push(DnType::CommonName, *cn);
        }
        p
    }

    fn csr(p: &CertificateParams, alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let kp = rcgen::KeyPair::generate_for(alg).unwrap();
        p.serialize_request(&kp).unwrap().der().to_vec()
    }

    fn reason(r: Result<DeviceCsr, CertError>) -> String {
        match r {
            Err(CertError::Csr { reason }) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_device_csr_is_read_and_what_it_asks_beyond_the_profile_is_named() {
        let mut p = params(&["sn-1"]);
        p.distinguished_name
            .push(DnType::OrganizationName, "Contoso");
        p.subject_alt_names = vec![SanType::DnsName("sn-1.example".try_into().unwrap())];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.is_ca = IsCa::ExplicitNoCa;
        let der = csr(&p, &rcgen::PKCS_ECDSA_P384_SHA384);
        let c = DeviceCsr::for_device(&der, &"sn-1".parse().unwrap()).unwrap();
        assert_eq!(c.id().as_str(), "sn-1");
        assert_eq!(c.key_type(), KeyType::EcP384);
        assert_eq!(c.der(), der.as_slice());
        assert_eq!(c.sha256_hex().len(), 64);
        let named = c.not_copied().join(",");
        for what in [
            "subject organizationName",
            "subjectAltName",
            "extendedKeyUsage",
            "basicConstraints",
        ] {
            assert!(named.contains(what), "{what} in {named}");
        }
        // A plain CSR asks for nothing more.
        let plain = DeviceCsr::parse(&csr(&params(&["sn-2"]), &rcgen::PKCS_ECDSA_P256_SHA256));
        assert!(plain.unwrap().not_copied().is_empty());
    }

    #[test]
    fn a_csr_that_asks_to_be_a_ca_is_refused() {
        let mut p = params(&["sn-1"]);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let r = reason(DeviceCsr::parse(&csr(&p, &rcgen::PKCS_ECDSA_P256_SHA256)));
        assert!(r.contains("CA:TRUE"), "{r}");
        let mut p = params(&["sn-1"]);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
        ];
        let r = reason(DeviceCsr::parse(&csr(&p, &rcgen::PKCS_ECDSA_P256_SHA256)));
        assert!(r.contains("keyCertSign"), "{r}");
        let mut p = params(&["sn-1"]);
        p.key_usages = vec![KeyUsagePurpose::CrlSign];
        let r = reason(DeviceCsr::parse(&csr(&p, &rcgen::PKCS_ECDSA_P256_SHA256)));
        assert!(r.contains("cRLSign"), "{r}");
    }

    #[test]
    fn the_cn_is_the_device_id_once_and_exactly() {
        let der = csr(&params(&["sn-1"]), &rcgen::PKCS_ECDSA_P256_SHA256);
        for other in ["SN-1", "sn-2"] {
            let r = reason(DeviceCsr::for_device(&der, &other.parse().unwrap()));
            assert!(r.contains("not the device id"), "{r}");
        }
        // (Two CNs: rcgen keeps one CN per name, so openssl makes that CSR in the integration
        // tests, tests/it/workflow_csr.rs.)
        let none = csr(&params(&[]), &rcgen::PKCS_ECDSA_P256_SHA256);
        assert!(reason(DeviceCsr::parse(&none)).contains("no CN"));
    }

    #[test]
    fn keys_the_profile_does_not_allow_are_refused_by_name() {
        for (alg, name) in [
            (&rcgen::PKCS_ED25519, "Ed25519"),
            (&rcgen::PKCS_ECDSA_P521_SHA512, "EC P-521"),
        ] {
            let r = reason(DeviceCsr::parse(&csr(&params(&["sn-1"]), alg)));
            assert!(r.contains(name) && r.contains("allowed: EC P-256"), "{r}");
        }
    }
}
