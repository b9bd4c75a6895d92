//! Who is registering: the emulator's reading of DPS attestation.
//!
//! X.509: the TLS layer has already checked that the client holds the leaf's private key
//! (CertificateVerify); here the presented chain must lead to a *verified* signing
//! certificate of an x509 enrollment group (root or intermediate), every certificate on the
//! path must be within its validity dates, the leaf must be fit to be a device's client
//! certificate ([`crate::cert::check_purpose`] with [`Purpose::Device`]: CA:FALSE, clientAuth,
//! digitalSignature, a CN that is a valid registration id) and its CN must be the registration
//! id. A chain that stops below every group CA is told apart from a foreign one: the device
//! is told its chain is incomplete and to present the full chain.
//! Symmetric key: the SAS token must be signed with the device's individual key, a key derived
//! from a symmetric-key enrollment group, or a key derived from the application's own SAS
//! groups (the credentials IoT Central shows for a device). Each refusal has its own message.

use super::super::app::{self, AppFacts};
use super::super::records::{DeviceRecord, GroupAttestationRecord, GroupRecord};
use crate::central::models::{Attestation as DeviceAttestation, EnrollmentGroupType};
use crate::cert::{check_purpose, Purpose};
use crate::dps::wire::X509CertificateInfo;
use crate::dps::ParsedSas;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

/// Name IoT Central gives its built-in SAS enrollment group for IoT devices.
pub const APP_SAS_GROUP: &str = "SAS-IoT-Devices";
/// Name IoT Central gives its built-in SAS enrollment group for IoT Edge devices.
pub const APP_SAS_EDGE_GROUP: &str = "SAS-IoT-Edge-Devices";

/// How an accepted device attested.
#[derive(Debug, Clone)]
pub enum Method {
    /// X.509 through an enrollment group.
    X509 {
        /// The group.
        group_id: String,
        /// The leaf.
        certificate: X509CertificateInfo,
        /// The group's signing certificate the chain reached.
        signing: X509CertificateInfo,
    },
    /// X.509 through the device's individual attestation.
    X509Individual {
        /// The leaf.
        certificate: X509CertificateInfo,
    },
    /// Symmetric key, from a group (`Some`) or the device's own key (`None`).
    SymmetricKey {
        /// The group whose key the device key derives from.
        group_id: Option<String>,
    },
}

/// An authenticated registration.
#[derive(Debug, Clone)]
pub struct Attested {
    /// How it attested.
    pub method: Method,
    /// Whether the device is an IoT Edge device.
    pub edge: bool,
    /// Set when authentication succeeded but the enrollment (or device) is disabled: the
    /// registration then ends with status `disabled` and this message.
    pub disabled: Option<String>,
}

/// Why a registration was refused before any operation started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no or bad credentials; the message says which check failed.
    Unauthorized(String),
    /// 400: malformed request.
    BadRequest(String),
    /// 401 with sub-code 400209: the device authenticated, but it is blocked (or waiting
    /// for approval) in IoT Central.
    Blocked(String),
}

/// Everything the attestation needs to know about the application.
pub struct Directory<'a> {
    /// Application facts (app-level SAS keys).
    pub facts: &'a AppFacts,
    /// Every enrollment group.
    pub groups: &'a [GroupRecord],
    /// The device of this registration id, if it exists.
    pub device: Option<&'a DeviceRecord>,
}

impl Directory<'_> {
    /// Refuses a device that IoT Central blocks (`enabled: false`), as the service does: the
    /// registration is answered 401 with sub-code 400209 (see docs/emulator.md).
    fn check_not_blocked(&self) -> Result<(), Refusal> {
        match self.device {
            Some(d) if d.device.enabled == Some(false) => Err(Refusal::Blocked(format!(
                "Device is blocked from connecting to IoT Central application. Unblock the \
                 device in IoT Central and retry (device {:?})",
                d.id()
            ))),
            _ => Ok(()),
        }
    }
}

/// Authenticates a SAS token (the `Authorization` header) for `registration_id`.
pub fn sas(
    dir: &Directory<'_>,
    header: &str,
    id_scope: &str,
    registration_id: &str,
    now_unix: u64,
) -> Result<Attested, Refusal> {
    let token = ParsedSas::parse(header).map_err(|e| Refusal::Unauthorized(e.to_string()))?;
    token
        .check_resource(id_scope, registration_id)
        .map_err(|e| Refusal::Unauthorized(e.to_string()))?;
    token
        .check_expiry(now_unix)
        .map_err(|e| Refusal::Unauthorized(e.to_string()))?;
    // Most specific first: the device's individual key.
    if let Some(DeviceAttestation::SymmetricKey { symmetric_key }) =
        dir.device.and_then(|d| d.attestation.as_ref())
    {
        if token.signed_by(symmetric_key.primary_key.expose())
            || token.signed_by(symmetric_key.secondary_key.expose())
        {
            let edge = dir
                .device
                .and_then(|d| d.device.device_type.as_ref())
                .is_some_and(|t| t.iter().any(|t| t == "iotEdge"));
            dir.check_not_blocked()?;
            return Ok(Attested {
                method: Method::SymmetricKey { group_id: None },
                edge,
                disabled: None,
            });
        }
    }
    // Then the enrollment groups with symmetric keys.
    for g in dir.groups {
        let GroupAttestationRecord::SymmetricKey { keys } = &g.attestation else {
            continue;
        };
        if signed_by_derived(&token, keys.primary_key.expose(), registration_id)
            || signed_by_derived(&token, keys.secondary_key.expose(), registration_id)
        {
            let disabled = if !g.enabled {
                Some(format!(
                    "enrollment group {:?} is disabled: enable it to let its devices register",
                    g.id
                ))
            } else {
                dir.check_not_blocked()?;
                None
            };
            return Ok(Attested {
                method: Method::SymmetricKey {
                    group_id: Some(g.id.clone()),
                },
                edge: g.group_type == EnrollmentGroupType::IotEdge,
                disabled,
            });
        }
    }
    // Then the application's own SAS groups (the keys of `device credentials`).
    for (keys, edge, name) in [
        (&dir.facts.sas_keys, false, APP_SAS_GROUP),
        (&dir.facts.sas_edge_keys, true, APP_SAS_EDGE_GROUP),
    ] {
        if signed_by_derived(&token, keys.primary_key.expose(), registration_id)
            || signed_by_derived(&token, keys.secondary_key.expose(), registration_id)
        {
            dir.check_not_blocked()?;
            return Ok(Attested {
                method: Method::SymmetricKey {
                    group_id: Some(name.to_owned()),
                },
                edge,
                disabled: None,
            });
        }
    }
    Err(Refusal::Unauthorized(format!(
        "the SAS token signature does not match any key of registration {registration_id:?} \
         (its individual key, a key derived from a symmetric-key enrollment group, or the \
         application's device keys)"
    )))
}

fn signed_by_derived(token: &ParsedSas, group_key: &str, registration_id: &str) -> bool {
    app::derive_key(group_key, registration_id).is_some_and(|k| token.signed_by(k.expose()))
}

/// What one group made of a presented chain.
enum GroupCheck {
    /// The chain leads to this verified signing certificate (index into the verified list,
    /// path length).
    Verified(Vec<u8>, usize),
    /// The chain leads to a signing certificate of the group that is not verified.
    Unverified(String),
    /// The chain leads to the group, but a certificate is outside its validity dates.
    OutOfDate(String),
    /// Unrelated.
    No,
}

/// Authenticates the TLS client chain (leaf first) for `registration_id`.
pub fn x509(
    dir: &Directory<'_>,
    chain: &[Vec<u8>],
    registration_id: &str,
    now: time::OffsetDateTime,
) -> Result<Attested, Refusal> {
    let Some(leaf_der) = chain.first() else {
        return Err(Refusal::Unauthorized(
            "no credentials: send a SAS token (the HTTPS Authorization header, the MQTT \
             password) or a client certificate in the TLS handshake"
                .into(),
        ));
    };
    let untrusted = &chain[1..];
    let (_, leaf) = X509Certificate::from_der(leaf_der).map_err(|e| {
        Refusal::Unauthorized(format!("the client certificate cannot be parsed: {e}"))
    })?;
    let leaf_info = cert_info(leaf_der, &leaf);

    // The device's individual X.509 attestation, most specific.
    if let Some(DeviceAttestation::X509 { x509 }) = dir.device.and_then(|d| d.attestation.as_ref())
    {
        let thumb = crate::dps::identity::sha1_hex(leaf_der);
        let registered = x509
            .client_certificates
            .iter()
            .flat_map(|c| std::iter::once(&c.primary).chain(c.secondary.as_ref()))
            .any(|c| {
                c.info
                    .as_ref()
                    .is_some_and(|i| i.sha1_thumbprint.eq_ignore_ascii_case(&thumb))
                    || c.certificate
                        .as_deref()
                        .and_then(crate::dps::identity::decode_certificate_string)
                        .is_some_and(|der| der == *leaf_der)
            });
        if registered {
            check_validity_all(chain, now)?;
            check_device_purpose(leaf_der)?;
            check_cn(&leaf, registration_id)?;
            dir.check_not_blocked()?;
            return Ok(Attested {
                method: Method::X509Individual {
                    certificate: leaf_info,
                },
                edge: false,
                disabled: None,
            });
        }
    }

    let mut best: Option<(&GroupRecord, Vec<u8>, usize)> = None;
    let mut unverified: Option<String> = None;
    let mut out_of_date: Option<String> = None;
    for g in dir.groups {
        match check_group(g, leaf_der, &leaf, untrusted, now) {
            GroupCheck::Verified(anchor, depth) => {
                // The most specific group: the one whose certificate is closest to the leaf.
                if best.as_ref().is_none_or(|(_, _, d)| depth < *d) {
                    best = Some((g, anchor, depth));
                }
            }
            GroupCheck::Unverified(m) => {
                unverified.get_or_insert(m);
            }
            GroupCheck::OutOfDate(m) => {
                out_of_date.get_or_insert(m);
            }
            GroupCheck::No => {}
        }
    }
    let Some((group, anchor, _)) = best else {
        if let Some(m) = out_of_date {
            return Err(Refusal::Unauthorized(m));
        }
        if let Some(m) = unverified {
            return Err(Refusal::Unauthorized(m));
        }
        return Err(no_group(dir.groups, leaf_der, untrusted, &leaf_info));
    };
    check_device_purpose(leaf_der)?;
    check_cn(&leaf, registration_id)?;
    let signing = match X509Certificate::from_der(&anchor) {
        Ok((_, c)) => cert_info(&anchor, &c),
        Err(e) => return Err(Refusal::Unauthorized(format!("group certificate: {e}"))),
    };
    let disabled = if !group.enabled {
        Some(format!(
            "enrollment group {:?} is disabled: enable it to let its devices register",
            group.id
        ))
    } else {
        dir.check_not_blocked()?;
        None
    };
    Ok(Attested {
        method: Method::X509 {
            group_id: group.id.clone(),
            certificate: leaf_info,
            signing,
        },
        edge: group.group_type == EnrollmentGroupType::IotEdge,
        disabled,
    })
}

fn check_group(
    g: &GroupRecord,
    leaf_der: &[u8],
    leaf: &X509Certificate<'_>,
    untrusted: &[Vec<u8>],
    now: time::OffsetDateTime,
) -> GroupCheck {
    let GroupAttestationRecord::X509 { primary, secondary } = &g.attestation else {
        return GroupCheck::No;
    };
    let certs: Vec<(Vec<u8>, bool)> = [primary, secondary]
        .into_iter()
        .flatten()
        .map(|c| (c.der(), c.verified))
        .filter(|(d, _)| !d.is_empty())
        .collect();
    let verified: Vec<Vec<u8>> = certs.iter().filter(|c| c.1).map(|c| c.0.clone()).collect();
    let pending: Vec<Vec<u8>> = certs.iter().filter(|c| !c.1).map(|c| c.0.clone()).collect();
    if !verified.is_empty() {
        match crate::cert::verify_chain(leaf_der, untrusted, &verified, now) {
            Ok(path) => {
                let anchor = verified[path.anchor_index].clone();
                return GroupCheck::Verified(anchor, path.subjects.len());
            }
            Err(
                e @ (crate::cert::ChainError::Expired { .. }
                | crate::cert::ChainError::NotYetValid { .. }),
            ) => {
                // Does the chain lead here once time is set aside? Try within the leaf's validity.
                if leads_to(leaf_der, leaf, untrusted, &verified) {
                    return GroupCheck::OutOfDate(format!("{e} (enrollment group {:?})", g.id));
                }
            }
            Err(_) => {}
        }
    }
    if !pending.is_empty()
        && (crate::cert::verify_chain(leaf_der, untrusted, &pending, now).is_ok()
            || leads_to(leaf_der, leaf, untrusted, &pending))
    {
        let subject = X509Certificate::from_der(&pending[0])
            .map(|(_, c)| c.subject().to_string())
            .unwrap_or_default();
        return GroupCheck::Unverified(format!(
            "unverified CA: the chain leads to {subject:?} of enrollment group {:?}, which has \
             not been verified (finish proof of possession first)",
            g.id
        ));
    }
    GroupCheck::No
}

/// Whether the chain leads to one of `anchors` at some instant within the leaf's validity
/// (used only to tell "expired" and "unverified" apart from "foreign").
fn leads_to(
    leaf_der: &[u8],
    leaf: &X509Certificate<'_>,
    untrusted: &[Vec<u8>],
    anchors: &[Vec<u8>],
) -> bool {
    let v = leaf.validity();
    let (a, b) = (v.not_before.to_datetime(), v.not_after.to_datetime());
    let mid = a + (b - a) / 2;
    [
        a + time::Duration::seconds(1),
        mid,
        b - time::Duration::seconds(1),
    ]
    .into_iter()
    .any(|t| crate::cert::verify_chain(leaf_der, untrusted, anchors, t).is_ok())
}

/// The refusal of a chain that reaches no group: *incomplete* when the topmost presented
/// certificate is not a root and its issuer is neither presented nor named by any group's
/// certificate while some group has a verified CA (the usual cause: the device sent its leaf
/// without the intermediates); *foreign* otherwise (the chain ends at a root no group holds,
/// at a CA whose name a group's certificate has but with another key, or no group has a
/// verified CA at all). DPS answers both with 401002; only the message differs.
fn no_group(
    groups: &[GroupRecord],
    leaf_der: &[u8],
    untrusted: &[Vec<u8>],
    leaf_info: &X509CertificateInfo,
) -> Refusal {
    let foreign = || {
        Refusal::Unauthorized(format!(
            "foreign CA: the certificate chain of {:?} (issued by {:?}) does not lead to a \
             signing certificate of any x509 enrollment group",
            leaf_info.subject_name, leaf_info.issuer_name
        ))
    };
    // Climb the presented chain as far as it goes.
    let mut top = leaf_der;
    for _ in 0..crate::cert::MAX_CHAIN {
        match untrusted
            .iter()
            .find(|c| c.as_slice() != top && crate::cert::verify_signed_by(top, c).is_ok())
        {
            Some(issuer) => top = issuer,
            None => break,
        }
    }
    let Ok((_, top_cert)) = X509Certificate::from_der(top) else {
        return foreign();
    };
    let issuer = top_cert.issuer();
    if issuer.as_raw() == top_cert.subject().as_raw() {
        return foreign();
    }
    let mut any_verified = false;
    for g in groups {
        let GroupAttestationRecord::X509 { primary, secondary } = &g.attestation else {
            continue;
        };
        for c in [primary, secondary].into_iter().flatten() {
            let der = c.der();
            any_verified |= c.verified && !der.is_empty();
            if X509Certificate::from_der(&der)
                .is_ok_and(|(_, gc)| gc.subject().as_raw() == issuer.as_raw())
            {
                return foreign();
            }
        }
    }
    if !any_verified {
        return foreign();
    }
    let whose = if top == leaf_der {
        "the leaf's issuer".to_owned()
    } else {
        format!("the issuer of {:?}", top_cert.subject().to_string())
    };
    Refusal::Unauthorized(format!(
        "the chain is incomplete: {whose} {:?} is not in the presented chain or a verified \
         enrollment group CA; present the full chain (leaf + intermediates, as in a \
         _fullchain.pem) in the TLS handshake",
        issuer.to_string()
    ))
}

/// Refuses a leaf that is not a device certificate, naming every reason.
fn check_device_purpose(leaf_der: &[u8]) -> Result<(), Refusal> {
    let failures = check_purpose(leaf_der, Purpose::Device);
    if failures.is_empty() {
        return Ok(());
    }
    let reasons: Vec<String> = failures.iter().map(ToString::to_string).collect();
    Err(Refusal::Unauthorized(format!(
        "not a device certificate: {}",
        reasons.join("; ")
    )))
}

fn check_cn(leaf: &X509Certificate<'_>, registration_id: &str) -> Result<(), Refusal> {
    let cn = leaf
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .map(str::to_owned);
    match cn {
        Some(cn) if cn == registration_id => Ok(()),
        Some(cn) => Err(Refusal::Unauthorized(format!(
            "CN mismatch: the certificate's CN is {cn:?} but the registration id is \
             {registration_id:?}; they must be equal"
        ))),
        None => Err(Refusal::Unauthorized(format!(
            "CN mismatch: the certificate has no CN; it must be the registration id {registration_id:?}"
        ))),
    }
}

fn check_validity_all(chain: &[Vec<u8>], now: time::OffsetDateTime) -> Result<(), Refusal> {
    for der in chain {
        let Ok((_, c)) = X509Certificate::from_der(der) else {
            continue;
        };
        let v = c.validity();
        if now > v.not_after.to_datetime() {
            return Err(Refusal::Unauthorized(format!(
                "certificate expired: {} was valid until {}",
                c.subject(),
                rfc3339(v.not_after.to_datetime())
            )));
        }
        if now < v.not_before.to_datetime() {
            return Err(Refusal::Unauthorized(format!(
                "certificate not yet valid: {} is valid from {}",
                c.subject(),
                rfc3339(v.not_before.to_datetime())
            )));
        }
    }
    Ok(())
}

/// RFC 3339 text of a time (UTC).
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// DPS's `X509CertificateInfo` of a certificate.
pub fn cert_info(der: &[u8], c: &X509Certificate<'_>) -> X509CertificateInfo {
    use sha2::Digest;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02X}")).collect::<String>();
    X509CertificateInfo {
        subject_name: c.subject().to_string(),
        sha1_thumbprint: crate::dps::identity::sha1_hex(der),
        sha256_thumbprint: hex(&sha2::Sha256::digest(der)),
        issuer_name: c.issuer().to_string(),
        not_before_utc: rfc3339(c.validity().not_before.to_datetime()),
        not_after_utc: rfc3339(c.validity().not_after.to_datetime()),
        serial_number: hex(c.raw_serial()),
        version: c.version().0 as i32 + 1,
    }
}
