//! The certificate profiles of DESIGN.md, as rcgen parameters.
//!
//! | profile | basicConstraints | keyUsage (critical) | EKU | SKID/AKID |
//! |---|---|---|---|---|
//! | root | critical CA:TRUE, pathlen 1 | keyCertSign, cRLSign | none | SKID |
//! | intermediate | critical CA:TRUE, pathlen 0 | keyCertSign, cRLSign | none | both |
//! | device | critical CA:FALSE | digitalSignature (+keyEncipherment for RSA) | clientAuth | both |
//! | verification | critical CA:FALSE | digitalSignature | clientAuth | both |
//! | server (emulator TLS) | critical CA:FALSE | digitalSignature (+keyEncipherment for RSA) | serverAuth | both |
//!
//! Serial numbers are 20 bytes from the OS CSPRNG (at least 152 random bits); validity starts
//! five minutes in the past (clock skew) and is clamped to the issuer's notAfter.

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use super::{CertError, KeyType};

/// Default validity of a root CA, in days (10 years).
pub const ROOT_DAYS: u32 = 3650;
/// Default validity of an intermediate CA, in days (5 years, clamped to the issuer).
pub const INTERMEDIATE_DAYS: u32 = 1825;
/// Default validity of a device certificate, in days.
pub const DEVICE_DAYS: u32 = 365;
/// Default validity of a verification (proof-of-possession) certificate, in days.
pub const VERIFICATION_DAYS: u32 = 30;

/// Options of a CA certificate (root or intermediate).
#[derive(Debug, Clone, Default)]
pub struct CaOptions {
    /// Subject CN; default "iotc root CA" / "iotc intermediate CA".
    pub cn: Option<String>,
    /// Key type; default EC P-256.
    pub key_type: KeyType,
    /// Validity in days from now; default [`ROOT_DAYS`] / [`INTERMEDIATE_DAYS`].
    pub days: Option<u32>,
    /// Explicit notBefore (overrides "now minus five minutes").
    pub not_before: Option<OffsetDateTime>,
    /// Explicit notAfter (overrides `days`).
    pub not_after: Option<OffsetDateTime>,
    /// pathLenConstraint; default 1 for a root, 0 for an intermediate.
    pub path_len: Option<u8>,
}

/// Options of an end-entity certificate (device, verification, server, CSR).
#[derive(Debug, Clone, Default)]
pub struct LeafOptions {
    /// Key type of the generated key (ignored by `sign_csr`); default EC P-256.
    pub key_type: KeyType,
    /// Validity in days; default [`DEVICE_DAYS`] ([`VERIFICATION_DAYS`] for verification).
    pub days: Option<u32>,
    /// Explicit notBefore.
    pub not_before: Option<OffsetDateTime>,
    /// Explicit notAfter (overrides `days`).
    pub not_after: Option<OffsetDateTime>,
}

/// What kind of certificate is being made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Profile {
    Root { path_len: u8 },
    Intermediate { path_len: u8 },
    Device,
    Verification,
    Server,
}

/// A random positive serial number of 20 bytes.
pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f).max(1);
    SerialNumber::from_slice(&bytes)
}

/// Checks a CN: 1..=64 characters, no control characters.
pub(crate) fn check_cn(cn: &str) -> Result<(), CertError> {
    let bad = |reason: &str| CertError::InvalidName {
        cn: cn.to_owned(),
        reason: reason.to_owned(),
    };
    if cn.trim().is_empty() {
        return Err(bad("must not be empty"));
    }
    if cn.chars().count() > 64 {
        return Err(bad(
            "longer than 64 characters (the X.509 upper bound for a CN)",
        ));
    }
    if cn.chars().any(|c| c.is_control()) {
        return Err(bad("contains a control character"));
    }
    Ok(())
}

/// Computes (notBefore, notAfter) from the options, clamped to the issuer's notAfter.
pub(crate) fn validity(
    days: Option<u32>,
    default_days: u32,
    not_before: Option<OffsetDateTime>,
    not_after: Option<OffsetDateTime>,
    issuer_not_after: Option<OffsetDateTime>,
) -> Result<(OffsetDateTime, OffsetDateTime), CertError> {
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or(OffsetDateTime::now_utc());
    let nb = not_before.unwrap_or(now - Duration::minutes(5));
    let days = days.unwrap_or(default_days);
    if days == 0 && not_after.is_none() {
        return Err(CertError::Validity {
            reason: "--days must be at least 1".into(),
        });
    }
    let mut na = not_after.unwrap_or(now + Duration::days(i64::from(days)));
    if let Some(limit) = issuer_not_after {
        if na > limit {
            na = limit;
        }
    }
    if na <= nb {
        return Err(CertError::Validity {
            reason: format!(
                "notAfter {} is not after notBefore {}",
                rfc3339(na),
                rfc3339(nb)
            ),
        });
    }
    Ok((nb, na))
}

/// Builds rcgen parameters for a profile.
pub(crate) fn params(
    profile: Profile,
    cn: &str,
    key_type: KeyType,
    (not_before, not_after): (OffsetDateTime, OffsetDateTime),
) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.serial_number = Some(random_serial());
    p.not_before = not_before;
    p.not_after = not_after;
    p.key_identifier_method = rcgen::KeyIdMethod::Sha256;
    let leaf_usages = |p: &mut CertificateParams, rsa_encipher: bool| {
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if rsa_encipher && key_type.is_rsa() {
            p.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        p.use_authority_key_identifier_extension = true;
    };
    match profile {
        Profile::Root { path_len } | Profile::Intermediate { path_len } => {
            p.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            p.use_authority_key_identifier_extension =
                matches!(profile, Profile::Intermediate { .. });
        }
        Profile::Device => {
            leaf_usages(&mut p, true);
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        Profile::Verification => {
            leaf_usages(&mut p, false);
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        Profile::Server => {
            leaf_usages(&mut p, true);
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        }
    }
    p
}

/// RFC 3339 text of a time (for messages and JSON).
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_long_positive_and_distinct() {
        let a = random_serial().to_bytes();
        let b = random_serial().to_bytes();
        assert_eq!(a.len(), 20);
        assert!(a[0] >= 1 && a[0] < 0x80);
        assert_ne!(a, b);
    }

    #[test]
    fn validity_is_clamped_to_the_issuer() {
        let limit = OffsetDateTime::now_utc() + Duration::days(10);
        let (_, na) = validity(Some(365), 1, None, None, Some(limit)).unwrap();
        assert_eq!(na, limit);
        let past = OffsetDateTime::now_utc() - Duration::days(1);
        assert!(validity(None, 30, None, None, Some(past)).is_err());
        assert!(validity(Some(0), 30, None, None, None).is_err());
    }

    #[test]
    fn common_names_are_checked() {
        assert!(check_cn("dev:01").is_ok());
        assert!(check_cn("").is_err());
        assert!(check_cn(&"a".repeat(65)).is_err());
        assert!(check_cn("a\nb").is_err());
    }
}
