//! Chain validation: does this leaf lead, through the given intermediates, to a trusted CA?
//!
//! The walk goes up from the leaf: each certificate must be inside its validity period, its
//! issuer must be among the given certificates (same name, same key identifier), be a CA
//! (CA:TRUE, and keyCertSign when keyUsage is present), respect its pathLenConstraint, and
//! its key must verify the signature. Anchors may be intermediates (an IoT Central enrollment
//! group can hold a verified intermediate): the path is complete as soon as it reaches a
//! certificate byte-equal to an anchor or signed by one. Signatures are checked by
//! x509-parser on aws-lc-rs (its `verify-aws` feature: the build's one crypto backend); the
//! tests cross-check with openssl and rustls-webpki.

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;

use super::profile::rfc3339;
use super::purpose::ca_defect;
use super::ChainError;

/// The longest chain we follow.
pub const MAX_CHAIN: usize = 8;

/// A validated path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainPath {
    /// Index (in `anchors`) of the anchor the path ends at.
    pub anchor_index: usize,
    /// Subjects from the leaf up to and including the anchor.
    pub subjects: Vec<String>,
}

fn parse<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, ChainError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| ChainError::Parse {
            what: what.to_owned(),
            reason: e.to_string(),
        })
}

fn check_time(c: &X509Certificate<'_>, now: OffsetDateTime) -> Result<(), ChainError> {
    let nb = c.validity().not_before.to_datetime();
    let na = c.validity().not_after.to_datetime();
    if now < nb {
        return Err(ChainError::NotYetValid {
            subject: c.subject().to_string(),
            not_before: rfc3339(nb),
        });
    }
    if now > na {
        return Err(ChainError::Expired {
            subject: c.subject().to_string(),
            not_after: rfc3339(na),
        });
    }
    Ok(())
}

fn skid<'a>(c: &X509Certificate<'a>) -> Option<&'a [u8]> {
    c.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0),
            _ => None,
        })
}

fn akid<'a>(c: &X509Certificate<'a>) -> Option<&'a [u8]> {
    c.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| k.0),
            _ => None,
        })
}

/// Checks that `issuer` can issue certificates (CA:TRUE; keyCertSign when keyUsage present)
/// and returns its pathLenConstraint.
fn check_is_ca(issuer: &X509Certificate<'_>) -> Result<Option<u32>, ChainError> {
    if let Some(reason) = ca_defect(issuer) {
        return Err(ChainError::IssuerNotCa {
            subject: issuer.subject().to_string(),
            reason: reason.into(),
        });
    }
    Ok(issuer
        .basic_constraints()
        .ok()
        .flatten()
        .and_then(|bc| bc.value.path_len_constraint))
}

/// Checks that `cert` names `issuer` as issuer and carries its signature (no CA checks).
pub fn verify_signed_by(cert_der: &[u8], issuer_der: &[u8]) -> Result<(), ChainError> {
    let c = parse(cert_der, "certificate")?;
    let i = parse(issuer_der, "issuer")?;
    signed_by(&c, &i)
}

fn signed_by(c: &X509Certificate<'_>, i: &X509Certificate<'_>) -> Result<(), ChainError> {
    if c.issuer().as_raw() != i.subject().as_raw() {
        return Err(ChainError::UnknownIssuer {
            subject: c.subject().to_string(),
            issuer: c.issuer().to_string(),
        });
    }
    if let (Some(a), Some(s)) = (akid(c), skid(i)) {
        if a != s {
            return Err(ChainError::WrongIssuer {
                subject: c.subject().to_string(),
                issuer: c.issuer().to_string(),
            });
        }
    }
    c.verify_signature(Some(i.public_key()))
        .map_err(|_| ChainError::BadSignature {
            subject: c.subject().to_string(),
            issuer: i.subject().to_string(),
        })
}

/// Validates `leaf` up to one of `anchors`, using `untrusted` as candidate intermediates.
///
/// ```
/// use iotc::cert::{verify_chain, Authority, CaOptions, LeafOptions};
/// let root = Authority::new_root(&CaOptions::default())?;
/// let inter = root.issue_intermediate(&CaOptions::default())?;
/// let dev = inter.issue_device(&"dev-01".parse()?, &LeafOptions::default())?;
/// // Trusting the root, with the intermediate as untrusted chain:
/// let path = verify_chain(&dev.cert_der, &[inter.cert_der().to_vec()], &[root.cert_der().to_vec()],
///                         time::OffsetDateTime::now_utc())?;
/// assert_eq!(path.subjects.len(), 3);
/// // Trusting the intermediate alone (a verified intermediate in an enrollment group):
/// verify_chain(&dev.cert_der, &[], &[inter.cert_der().to_vec()], time::OffsetDateTime::now_utc())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn verify_chain(
    leaf_der: &[u8],
    untrusted: &[Vec<u8>],
    anchors: &[Vec<u8>],
    now: OffsetDateTime,
) -> Result<ChainPath, ChainError> {
    let leaf = parse(leaf_der, "leaf")?;
    let anchor_certs = anchors
        .iter()
        .enumerate()
        .map(|(i, d)| parse(d, &format!("CA certificate #{}", i + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    let untrusted_certs = untrusted
        .iter()
        .enumerate()
        .map(|(i, d)| parse(d, &format!("chain certificate #{}", i + 1)))
        .collect::<Result<Vec<_>, _>>()?;

    let mut subjects = vec![leaf.subject().to_string()];
    // A leaf that is itself an anchor is trusted as is.
    if let Some(idx) = anchors.iter().position(|a| a.as_slice() == leaf_der) {
        check_time(&leaf, now)?;
        return Ok(ChainPath {
            anchor_index: idx,
            subjects,
        });
    }
    let mut current: X509Certificate<'_> = leaf;
    let mut current_der: &[u8] = leaf_der;
    // CA certificates between the leaf and the issuer being checked.
    let mut cas_below: u32 = 0;
    for _ in 0..MAX_CHAIN {
        check_time(&current, now)?;
        // Candidates: anchors first (the path can end there), then the untrusted ones.
        let mut first_error: Option<ChainError> = None;
        let mut found: Option<(bool, usize)> = None;
        let candidates = anchor_certs
            .iter()
            .enumerate()
            .map(|(i, c)| (true, i, c))
            .chain(
                untrusted_certs
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (false, i, c)),
            );
        for (is_anchor, idx, cand) in candidates {
            let cand_der = if is_anchor {
                &anchors[idx]
            } else {
                &untrusted[idx]
            };
            if cand_der.as_slice() == current_der {
                continue;
            }
            match signed_by(&current, cand) {
                Ok(()) => {
                    found = Some((is_anchor, idx));
                    break;
                }
                Err(ChainError::UnknownIssuer { .. }) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let Some((is_anchor, idx)) = found else {
            return Err(first_error.unwrap_or_else(|| ChainError::UnknownIssuer {
                subject: current.subject().to_string(),
                issuer: current.issuer().to_string(),
            }));
        };
        let (issuer, issuer_der) = if is_anchor {
            (anchor_certs[idx].clone(), anchors[idx].as_slice())
        } else {
            (untrusted_certs[idx].clone(), untrusted[idx].as_slice())
        };
        let path_len = check_is_ca(&issuer)?;
        if let Some(pl) = path_len {
            if cas_below > pl {
                return Err(ChainError::PathLenExceeded {
                    subject: issuer.subject().to_string(),
                    path_len: pl,
                    found: cas_below,
                });
            }
        }
        check_time(&issuer, now)?;
        subjects.push(issuer.subject().to_string());
        if is_anchor {
            return Ok(ChainPath {
                anchor_index: idx,
                subjects,
            });
        }
        if subjects.len() > 1 {
            cas_below += 1;
        }
        current = issuer;
        current_der = issuer_der;
    }
    Err(ChainError::TooLong {
        subject: subjects.first().cloned().unwrap_or_default(),
        max: MAX_CHAIN,
    })
}
