//! What a certificate is *for*: the checks a chain walk does not make.
//!
//! A chain can be flawless and the certificate still useless where it is going: a
//! serverAuth-only leaf cannot authenticate a device to DPS, a leaf with CA:TRUE is not a
//! device, a CN that is not a registration id can never match one. [`check_purpose`] names
//! *every* such failure of one certificate for one [`Purpose`] (a user fixing a profile wants
//! the whole list, not one reason per attempt). [`Purpose::of`] picks the purpose a
//! certificate claims by its own basicConstraints, CA:TRUE → [`Purpose::Ca`], anything else
//! → [`Purpose::Device`]: a verification certificate has the device profile and a code that
//! is usually a valid registration id too, so only the caller can say it holds one. The
//! device rules are what Azure DPS demands of a client certificate (sources in
//! docs/emulator.md); the emulator's DPS applies this same function to every certificate a
//! device presents, so `iotc cert verify` and the emulator cannot disagree.

use std::fmt;
use std::str::FromStr;

use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::inspect::{eku_names, key_usage_names};
use super::ChainError;
use crate::ids::RegistrationId;

/// What a certificate must be good for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// A device's DPS client certificate: CA:FALSE, extendedKeyUsage with clientAuth, keyUsage
    /// (when present) with digitalSignature, CN a valid registration id.
    Device,
    /// A CA that may issue certificates: CA:TRUE, keyUsage (when present) with keyCertSign.
    Ca,
    /// A proof-of-possession certificate: CA:FALSE, CN a verification code (no whitespace).
    Verification,
    /// No purpose: the chain alone.
    Any,
}

impl Purpose {
    /// Every purpose, in the order `--help` lists them.
    pub const ALL: [Purpose; 4] = [
        Purpose::Device,
        Purpose::Ca,
        Purpose::Verification,
        Purpose::Any,
    ];

    /// The name used on the command line and in JSON (`device`, `ca`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Device => "device",
            Purpose::Ca => "ca",
            Purpose::Verification => "verification",
            Purpose::Any => "any",
        }
    }

    /// The purpose a certificate claims: [`Purpose::Ca`] when its basicConstraints say
    /// CA:TRUE, otherwise [`Purpose::Device`].
    pub fn of(cert_der: &[u8]) -> Result<Purpose, ChainError> {
        let c = parse(cert_der)?;
        Ok(if is_ca(&c) {
            Purpose::Ca
        } else {
            Purpose::Device
        })
    }

    /// What the CN of a certificate of this purpose holds (for messages).
    pub(crate) fn cn_role(self) -> &'static str {
        match self {
            Purpose::Device => "registration id",
            Purpose::Verification => "verification code",
            Purpose::Ca | Purpose::Any => "name",
        }
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A purpose name that is not one of `device`, `ca`, `verification`, `any`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown purpose {0:?}: use device, ca, verification or any")]
pub struct UnknownPurpose(pub String);

impl FromStr for Purpose {
    type Err = UnknownPurpose;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Purpose::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPurpose(s.to_owned()))
    }
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, ChainError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| ChainError::Parse {
            what: "certificate".into(),
            reason: e.to_string(),
        })
}

fn is_ca(c: &X509Certificate<'_>) -> bool {
    matches!(c.basic_constraints(), Ok(Some(bc)) if bc.value.ca)
}

/// Why `c` cannot issue certificates, or `None` when it can: CA:TRUE is required, and
/// keyCertSign when a keyUsage is present. Shared by the chain walk (for issuers) and
/// [`Purpose::Ca`] (for the certificate itself).
pub(crate) fn ca_defect(c: &X509Certificate<'_>) -> Option<&'static str> {
    match c.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {}
        Ok(Some(_)) => return Some("has basicConstraints CA:FALSE"),
        Ok(None) => return Some("has no basicConstraints CA:TRUE"),
        Err(_) => return Some("has more than one basicConstraints extension"),
    }
    match c.key_usage() {
        Ok(Some(ku)) if !ku.value.key_cert_sign() => Some("has a keyUsage without keyCertSign"),
        Err(_) => Some("has more than one keyUsage extension"),
        _ => None,
    }
}

/// The subject CN as text, when there is one.
fn common_name(c: &X509Certificate<'_>) -> Option<String> {
    c.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}

/// Every way `cert_der` falls short of `purpose` (empty when it is fit for it). A certificate
/// that cannot be parsed gives one [`ChainError::Parse`].
///
/// ```
/// use iotc::cert::{check_purpose, Authority, CaOptions, LeafOptions, Purpose};
/// let root = Authority::new_root(&CaOptions::default())?;
/// let dev = root.issue_device(&"dev-01".parse()?, &LeafOptions::default())?;
/// assert!(check_purpose(&dev.cert_der, Purpose::Device).is_empty());
/// // The root is not a device: CA:TRUE, no clientAuth, and its CN is not a registration id.
/// let why = check_purpose(root.cert_der(), Purpose::Device);
/// assert!(why.iter().any(|e| e.code() == "caOnEndEntity"));
/// assert!(check_purpose(root.cert_der(), Purpose::Ca).is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn check_purpose(cert_der: &[u8], purpose: Purpose) -> Vec<ChainError> {
    let c = match parse(cert_der) {
        Ok(c) => c,
        Err(e) => return vec![e],
    };
    let subject = c.subject().to_string();
    let mut failures = Vec::new();
    match purpose {
        Purpose::Any => {}
        Purpose::Ca => {
            if let Some(reason) = ca_defect(&c) {
                failures.push(ChainError::NotCa {
                    subject,
                    reason: reason.into(),
                });
            }
        }
        Purpose::Device | Purpose::Verification => {
            if is_ca(&c) {
                failures.push(ChainError::CaOnEndEntity {
                    subject: subject.clone(),
                    purpose,
                });
            }
            if purpose == Purpose::Device {
                device_usages(&c, &subject, &mut failures);
            }
            match common_name(&c) {
                None => failures.push(ChainError::NoCommonName { subject, purpose }),
                Some(cn) => {
                    if let Some(e) = cn_defect(&cn, purpose) {
                        failures.push(e);
                    }
                }
            }
        }
    }
    failures
}

/// The key usages a DPS client certificate needs: clientAuth (an absent extendedKeyUsage is
/// refused too: DPS requires the extension, see docs/emulator.md) and, when keyUsage is
/// present, digitalSignature.
fn device_usages(c: &X509Certificate<'_>, subject: &str, failures: &mut Vec<ChainError>) {
    let found = match c.extended_key_usage() {
        Ok(Some(eku)) if eku.value.client_auth => None,
        Ok(Some(eku)) => Some(format!("extendedKeyUsage {}", eku_names(eku.value))),
        Ok(None) => Some("no extendedKeyUsage extension".to_owned()),
        Err(_) => Some("more than one extendedKeyUsage extension".to_owned()),
    };
    if let Some(found) = found {
        failures.push(ChainError::NoClientAuth {
            subject: subject.to_owned(),
            found,
        });
    }
    match c.key_usage() {
        Ok(Some(ku)) if !ku.value.digital_signature() => {
            failures.push(ChainError::NoDigitalSignature {
                subject: subject.to_owned(),
                found: key_usage_names(ku.value),
            })
        }
        Err(_) => failures.push(ChainError::NoDigitalSignature {
            subject: subject.to_owned(),
            found: "(more than one keyUsage extension)".into(),
        }),
        _ => {}
    }
}

fn cn_defect(cn: &str, purpose: Purpose) -> Option<ChainError> {
    match purpose {
        Purpose::Device => RegistrationId::new(cn)
            .err()
            .map(|e| ChainError::CnNotRegistrationId {
                cn: cn.to_owned(),
                reason: e.reason,
            }),
        Purpose::Verification => {
            cn.chars()
                .find(|c| c.is_whitespace())
                .map(|c| ChainError::CnNotVerificationCode {
                    cn: cn.to_owned(),
                    reason: format!("a verification code has no whitespace (found {c:?})"),
                })
        }
        Purpose::Ca | Purpose::Any => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::{Authority, CaOptions, LeafOptions};

    fn codes(der: &[u8], p: Purpose) -> Vec<&'static str> {
        check_purpose(der, p).iter().map(ChainError::code).collect()
    }

    #[test]
    fn each_profile_fits_its_purpose_and_not_the_others() {
        let root = Authority::new_root(&CaOptions::default()).unwrap();
        let inter = root.issue_intermediate(&CaOptions::default()).unwrap();
        let dev = inter
            .issue_device(&"dev-01".parse().unwrap(), &LeafOptions::default())
            .unwrap();
        let ver = inter
            .issue_verification("1A2B3C", &LeafOptions::default())
            .unwrap();
        let server = inter
            .issue_server(&["localhost"], &[], &LeafOptions::default())
            .unwrap();
        assert_eq!(codes(&dev.cert_der, Purpose::Device), Vec::<&str>::new());
        assert_eq!(
            codes(&ver.cert_der, Purpose::Verification),
            Vec::<&str>::new()
        );
        assert_eq!(codes(inter.cert_der(), Purpose::Ca), Vec::<&str>::new());
        assert_eq!(codes(root.cert_der(), Purpose::Ca), Vec::<&str>::new());
        assert_eq!(codes(&dev.cert_der, Purpose::Ca), ["notCa"]);
        // A CA used as a device fails on every count, each named.
        assert_eq!(
            codes(inter.cert_der(), Purpose::Device),
            [
                "caOnEndEntity",
                "noClientAuth",
                "noDigitalSignature",
                "cnNotRegistrationId"
            ]
        );
        assert_eq!(codes(&server.cert_der, Purpose::Device), ["noClientAuth"]);
        assert!(check_purpose(&server.cert_der, Purpose::Device)[0]
            .to_string()
            .contains("has extendedKeyUsage serverAuth"));
        assert_eq!(codes(inter.cert_der(), Purpose::Any), Vec::<&str>::new());
    }

    #[test]
    fn the_default_purpose_follows_basic_constraints() {
        let root = Authority::new_root(&CaOptions::default()).unwrap();
        let dev = root
            .issue_device(&"dev-01".parse().unwrap(), &LeafOptions::default())
            .unwrap();
        assert_eq!(Purpose::of(root.cert_der()).unwrap(), Purpose::Ca);
        assert_eq!(Purpose::of(&dev.cert_der).unwrap(), Purpose::Device);
        assert!(Purpose::of(b"junk").is_err());
    }

    #[test]
    fn purpose_names_round_trip() {
        for p in Purpose::ALL {
            assert_eq!(p.as_str().parse::<Purpose>().unwrap(), p);
        }
        assert!("server".parse::<Purpose>().is_err());
    }
}
