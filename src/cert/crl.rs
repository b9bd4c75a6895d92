//! Certificate revocation lists, for the relying parties that read them (a gateway, an MQTT
//! broker, an own verification service): when a station is lost, the serials of every
//! device certificate it issued, signed by its CA while that key is at hand, and the
//! station's intermediate, signed by the CA above it. rcgen makes the CRL; this module adds
//! what a CRL needs to be found and checked: the issuer's own key identifier in the
//! authority key identifier (so `openssl verify -crl_check` matches it to the CA), a CRL
//! number, and the reason of each entry.

use super::inspect::parse_cert;
use super::{Authority, CertError};
use rcgen::{
    CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams, SerialNumber,
};
use std::str::FromStr;
use time::{Duration, OffsetDateTime};
use x509_parser::extensions::ParsedExtension;

/// Why certificates are revoked (RFC 5280 §5.3.1), as the CLI names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No reason given.
    Unspecified,
    /// The device's key is compromised.
    KeyCompromise,
    /// The CA's key is compromised (a stolen station).
    CaCompromise,
    /// The device changed hands.
    AffiliationChanged,
    /// Replaced by a new certificate.
    Superseded,
    /// The device is out of service.
    CessationOfOperation,
}

impl Reason {
    /// Every reason, in the order `--help` lists them.
    pub const ALL: [Reason; 6] = [
        Reason::KeyCompromise,
        Reason::CaCompromise,
        Reason::AffiliationChanged,
        Reason::Superseded,
        Reason::CessationOfOperation,
        Reason::Unspecified,
    ];

    /// The RFC 5280 name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unspecified => "unspecified",
            Reason::KeyCompromise => "keyCompromise",
            Reason::CaCompromise => "cACompromise",
            Reason::AffiliationChanged => "affiliationChanged",
            Reason::Superseded => "superseded",
            Reason::CessationOfOperation => "cessationOfOperation",
        }
    }

    fn rcgen(self) -> RevocationReason {
        match self {
            Reason::Unspecified => RevocationReason::Unspecified,
            Reason::KeyCompromise => RevocationReason::KeyCompromise,
            Reason::CaCompromise => RevocationReason::CaCompromise,
            Reason::AffiliationChanged => RevocationReason::AffiliationChanged,
            Reason::Superseded => RevocationReason::Superseded,
            Reason::CessationOfOperation => RevocationReason::CessationOfOperation,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Reason {
    type Err = String;
    fn from_str(s: &str) -> Result<Reason, String> {
        Reason::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
                format!(
                    "unknown revocation reason {s:?}: use one of {}",
                    names.join(", ")
                )
            })
    }
}

/// The serial number of a certificate (DER), as its bytes.
pub fn serial_of(cert_der: &[u8]) -> Result<Vec<u8>, CertError> {
    Ok(parse_cert(cert_der)?.raw_serial().to_vec())
}

/// The failure of signing or encoding a CRL of `ca`.
pub(super) fn sign_err(ca: &Authority) -> impl Fn(rcgen::Error) -> CertError + '_ {
    move |e| CertError::Sign {
        subject: ca.subject().to_owned(),
        reason: format!("CRL: {e}"),
    }
}

/// The parameters of a CRL of `ca` revoking `serials` for `reason`, numbered `number`, valid
/// from now for `days` days ([`Authority::issue_crl`] signs them).
pub(super) fn params(
    ca: &Authority,
    serials: &[Vec<u8>],
    reason: Reason,
    number: u64,
    days: u32,
) -> Result<CertificateRevocationListParams, CertError> {
    let now = OffsetDateTime::now_utc();
    let c = parse_cert(ca.cert_der())?;
    // The CRL's authority key identifier must be the CA's own subject key identifier.
    let skid = c
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        });
    Ok(CertificateRevocationListParams {
        this_update: now - Duration::minutes(5),
        next_update: now + Duration::days(i64::from(days.max(1))),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from_slice(s),
                revocation_time: now - Duration::minutes(5),
                reason_code: Some(reason.rcgen()),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: skid.map_or(KeyIdMethod::Sha256, KeyIdMethod::PreSpecified),
    })
}
