//! Reading certificate signing requests: the device keeps its key, we check and sign.
//!
//! A CSR is accepted only when its self-signature verifies (the requester holds the key) and
//! its subject CN is a valid registration id (it becomes the device id; never rewritten).

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use super::key::pem_decode_first;
use super::{CertError, KeyType};
use crate::ids::RegistrationId;

/// What a checked CSR gives the signer.
pub(crate) struct CheckedCsr {
    pub id: RegistrationId,
    pub key_type: KeyType,
    pub spki: rcgen::SubjectPublicKeyInfo,
}

fn refused(reason: impl Into<String>) -> CertError {
    CertError::Csr {
        reason: reason.into(),
    }
}

/// Parses (PEM or DER), verifies the self-signature, validates the CN.
pub(crate) fn read_csr(input: &[u8]) -> Result<CheckedCsr, CertError> {
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
    let (_, req) = X509CertificationRequest::from_der(&der)
        .map_err(|e| refused(format!("not a valid CSR: {e}")))?;
    req.verify_signature().map_err(|_| {
        refused("its signature does not verify (corrupt, or not signed by its own key)")
    })?;
    let info = &req.certification_request_info;
    let cn = info
        .subject
        .iter_common_name()
        .next()
        .ok_or_else(|| refused("its subject has no CN (the CN must be the registration id)"))?
        .as_str()
        .map_err(|_| refused("its CN is not a readable string"))?;
    let id = RegistrationId::new(cn)?;
    let spki_der = info.subject_pki.raw;
    let key_type = KeyType::from_spki(spki_der).ok_or_else(|| {
        refused("unsupported key type (supported: EC P-256/P-384, RSA 2048/3072/4096)")
    })?;
    let spki =
        rcgen::SubjectPublicKeyInfo::from_der(spki_der).map_err(|e| refused(e.to_string()))?;
    Ok(CheckedCsr { id, key_type, spki })
}
