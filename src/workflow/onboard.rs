//! One-command onboarding: from nothing to a verified enrollment group, ready for devices.
//!
//! Every step first looks at what exists and reuses it, so a rerun does nothing twice: an
//! existing CA is loaded (never regenerated), an existing group is kept (its attestation must
//! match), an uploaded CA with the same thumbprint is not uploaded again, and proof of
//! possession is only done while the CA is unverified. A group that holds a *different*
//! primary CA is an error, not something to overwrite. Each step is recorded as a
//! [`Step`] so the command can tell the user what it did and what it found.

use crate::central::models::{
    EnrollmentGroup, EnrollmentGroupType, GroupAttestation, SigningX509Certificate,
    X509VerificationCertificate,
};
use crate::central::{CertificateEntry, Client};
use crate::cert::{self, Authority, CaOptions, LeafOptions, WriteOptions};
use crate::pkcs11::KeyUri;
use crate::secret::Secret;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What one onboarding step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// It made something new.
    Created,
    /// What it needed was already there.
    Reused,
    /// It performed an action (upload, proof of possession).
    Done,
}

/// One onboarding step, for the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Which step.
    pub step: &'static str,
    /// What happened.
    pub outcome: Outcome,
    /// Details (paths, thumbprints, ids).
    pub detail: String,
}

/// Onboarding failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OnboardError {
    /// A certificate operation failed.
    #[error("{what}")]
    Cert {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: cert::CertError,
    },
    /// An IoT Central call failed.
    #[error("{what}")]
    Central {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: Box<crate::central::Error>,
    },
    /// A folder could not be made.
    #[error("cannot create {path}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The CA files are half there.
    #[error("{0}")]
    IncompleteCa(String),
    /// The intermediate was not issued by the root given.
    #[error("intermediate {intermediate} was not issued by root {root}")]
    WrongIssuer {
        /// The intermediate prefix.
        intermediate: PathBuf,
        /// The root prefix.
        root: PathBuf,
    },
    /// The group exists with another attestation.
    #[error("enrollment group {group} exists with {found} attestation, not {wanted}")]
    AttestationMismatch {
        /// The group.
        group: String,
        /// What it has.
        found: &'static str,
        /// What was asked.
        wanted: &'static str,
    },
    /// The group's primary CA is another certificate.
    #[error(
        "enrollment group {group} already has another primary CA certificate (SHA-1 {found}, \
         ours is {ours}); remove it first (iotc enrollment-group cert delete) or use another group"
    )]
    ForeignCa {
        /// The group.
        group: String,
        /// Thumbprint found.
        found: String,
        /// Thumbprint of our CA.
        ours: String,
    },
    /// The service did not return the group's keys.
    #[error("enrollment group {0} returned no symmetric keys")]
    NoGroupKey(String),
    /// Verification did not stick.
    #[error("the CA of group {0} is still unverified after proof of possession")]
    NotVerified(String),
}

fn cert_err(what: impl Into<String>) -> impl FnOnce(cert::CertError) -> OnboardError {
    let what = what.into();
    move |source| OnboardError::Cert { what, source }
}

fn central_err(what: impl Into<String>) -> impl FnOnce(crate::central::Error) -> OnboardError {
    let what = what.into();
    move |source| OnboardError::Central {
        what,
        source: Box::new(source),
    }
}

/// The CA files to use (or make) for a group.
#[derive(Debug, Clone)]
pub struct CaSpec {
    /// `PREFIX` of the root: `PREFIX_cert.pem`, `PREFIX_key.pem`.
    pub root: PathBuf,
    /// `PREFIX` of an intermediate that signs devices and is uploaded instead of the root.
    pub intermediate: Option<PathBuf>,
    /// Password of the CA keys (encrypts new ones, decrypts existing ones).
    pub password: Option<Secret>,
    /// Subject prefix for new CAs (e.g. the group id).
    pub name: String,
    /// The root's key in a PKCS#11 token, overriding `PREFIX_key.pem` / `PREFIX_key.uri`
    /// (the root's certificate must then exist: a token key is never made here).
    pub root_key: Option<KeyUri>,
    /// The intermediate's key in a PKCS#11 token, likewise.
    pub intermediate_key: Option<KeyUri>,
}

/// The CAs of a group: the root and, when used, the intermediate.
pub struct CaSet {
    /// The root.
    pub root: Authority,
    /// The intermediate.
    pub intermediate: Option<Authority>,
}

impl CaSet {
    /// The CA that signs devices and is uploaded to the group: the intermediate when there is
    /// one, else the root.
    pub fn signing(&self) -> &Authority {
        self.intermediate.as_ref().unwrap_or(&self.root)
    }

    /// Splits into (root, signing CA).
    pub fn into_signing(self) -> Authority {
        match self.intermediate {
            Some(i) => i,
            None => self.root,
        }
    }
}

/// Whether the CA's certificate and its key exist; the key is a file or, with
/// `PREFIX_key.uri`, a token object ([`Authority::load`] tells which).
fn ca_state(prefix: &Path) -> (bool, bool) {
    (
        cert::prefixed_path(prefix, "_cert.pem").exists(),
        cert::prefixed_path(prefix, "_key.pem").exists()
            || cert::prefixed_path(prefix, "_key.uri").exists(),
    )
}

fn write_ca(prefix: &Path, ca: &Authority, password: Option<&Secret>) -> Result<(), OnboardError> {
    let dir = match prefix.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = prefix
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::fs::create_dir_all(&dir).map_err(|source| OnboardError::Io {
        path: dir.clone(),
        source,
    })?;
    let opts = WriteOptions {
        password: password.cloned(),
        ..WriteOptions::default()
    };
    cert::write_bundle(&dir, &name, ca.issued(), &opts).map_err(cert_err(format!(
        "cannot write the CA {}",
        prefix.display()
    )))?;
    Ok(())
}

fn load_or_create(
    prefix: &Path,
    key: Option<&KeyUri>,
    password: Option<&Secret>,
    steps: &mut Vec<Step>,
    step: &'static str,
    create: impl FnOnce() -> Result<Authority, cert::CertError>,
) -> Result<Authority, OnboardError> {
    let (cert_there, key_there) = ca_state(prefix);
    match (cert_there, key_there || key.is_some()) {
        (true, true) => {
            let loaded = match key {
                Some(uri) => Authority::load_with_key_uri(prefix, uri),
                None => Authority::load(prefix, password.map(Secret::expose)),
            };
            let ca =
                loaded.map_err(cert_err(format!("cannot load the CA {}", prefix.display())))?;
            steps.push(Step {
                step,
                outcome: Outcome::Reused,
                detail: format!(
                    "{} (SHA-1 {})",
                    cert::prefixed_path(prefix, "_cert.pem").display(),
                    cert::sha1_thumbprint(ca.cert_der())
                ),
            });
            Ok(ca)
        }
        (false, false) => {
            let ca = create().map_err(cert_err(format!("cannot make the CA {}", prefix.display())))?;
            write_ca(prefix, &ca, password)?;
            steps.push(Step {
                step,
                outcome: Outcome::Created,
                detail: format!(
                    "{} (SHA-1 {})",
                    cert::prefixed_path(prefix, "_cert.pem").display(),
                    cert::sha1_thumbprint(ca.cert_der())
                ),
            });
            Ok(ca)
        }
        (false, true) if key.is_some() => Err(OnboardError::IncompleteCa(format!(
            "{} does not exist: a CA whose key is in a token needs its certificate (make it with \
             iotc cert root/intermediate --key-store)",
            cert::prefixed_path(prefix, "_cert.pem").display(),
        ))),
        (cert_there, _) => Err(OnboardError::IncompleteCa(format!(
            "{} exists but {} does not; refusing to guess (restore the missing file or use another prefix)",
            cert::prefixed_path(prefix, if cert_there { "_cert.pem" } else { "_key.pem" }).display(),
            cert::prefixed_path(prefix, if cert_there { "_key.pem" } else { "_cert.pem" }).display(),
        ))),
    }
}

/// Loads the CAs, or makes and writes the ones that do not exist yet.
pub fn ensure_ca(spec: &CaSpec, steps: &mut Vec<Step>) -> Result<CaSet, OnboardError> {
    let pw = spec.password.as_ref();
    let root = load_or_create(
        &spec.root,
        spec.root_key.as_ref(),
        pw,
        steps,
        "root CA",
        || {
            Authority::new_root(&CaOptions {
                cn: Some(format!("{} root CA", spec.name)),
                ..CaOptions::default()
            })
        },
    )?;
    let intermediate = match &spec.intermediate {
        None => None,
        Some(prefix) => {
            let key = spec.intermediate_key.as_ref();
            let inter = load_or_create(prefix, key, pw, steps, "intermediate CA", || {
                root.issue_intermediate(&CaOptions {
                    cn: Some(format!("{} intermediate CA", spec.name)),
                    ..CaOptions::default()
                })
            })?;
            if cert::verify_signed_by(inter.cert_der(), root.cert_der()).is_err() {
                return Err(OnboardError::WrongIssuer {
                    intermediate: prefix.clone(),
                    root: spec.root.clone(),
                });
            }
            Some(inter)
        }
    };
    Ok(CaSet { root, intermediate })
}

fn attestation_name(a: &GroupAttestation) -> &'static str {
    match a {
        GroupAttestation::X509 { .. } => "x509",
        GroupAttestation::SymmetricKey { .. } => "symmetricKey",
    }
}

async fn ensure_group(
    client: &Client,
    group: &str,
    wanted: GroupAttestation,
    steps: &mut Vec<Step>,
) -> Result<EnrollmentGroup, OnboardError> {
    match client.get_enrollment_group(group).await {
        Ok(g) => {
            if attestation_name(&g.attestation) != attestation_name(&wanted) {
                return Err(OnboardError::AttestationMismatch {
                    group: group.to_owned(),
                    found: attestation_name(&g.attestation),
                    wanted: attestation_name(&wanted),
                });
            }
            steps.push(Step {
                step: "enrollment group",
                outcome: Outcome::Reused,
                detail: format!("{group} ({})", attestation_name(&g.attestation)),
            });
            Ok(g)
        }
        Err(e) if e.is_not_found() => {
            let body = EnrollmentGroup {
                id: None,
                display_name: group.to_owned(),
                enabled: Some(true),
                group_type: EnrollmentGroupType::Iot,
                attestation: wanted,
                etag: None,
                id_scope: None,
            };
            let g = client
                .create_enrollment_group(group, &body)
                .await
                .map_err(central_err(format!(
                    "cannot create enrollment group {group}"
                )))?;
            steps.push(Step {
                step: "enrollment group",
                outcome: Outcome::Created,
                detail: format!("{group} ({})", attestation_name(&g.attestation)),
            });
            Ok(g)
        }
        Err(e) => Err(central_err(format!("cannot read enrollment group {group}"))(e)),
    }
}

/// Makes sure `group` is an x509 enrollment group whose primary CA is `signing` and is
/// verified: creates the group, uploads the CA, and proves possession of its key (unless
/// `verified_upload`, which self-attests on upload) — each only when needed.
pub async fn ensure_x509_group(
    client: &Client,
    group: &str,
    signing: &Authority,
    verified_upload: bool,
    steps: &mut Vec<Step>,
) -> Result<(), OnboardError> {
    ensure_group(client, group, GroupAttestation::X509 { x509: None }, steps).await?;
    let ours = cert::sha1_thumbprint(signing.cert_der());
    let entry = CertificateEntry::Primary;
    let existing = match client.get_enrollment_group_certificate(group, entry).await {
        Ok(c) if c.info.is_some() => Some(c),
        Ok(_) => None,
        Err(e) if e.is_not_found() => None,
        Err(e) => {
            return Err(central_err(format!("cannot read the CA of group {group}"))(
                e,
            ))
        }
    };
    let verified = match existing {
        Some(c) => {
            let found = c.info.map(|i| i.sha1_thumbprint).unwrap_or_default();
            if !found.eq_ignore_ascii_case(&ours) {
                return Err(OnboardError::ForeignCa {
                    group: group.to_owned(),
                    found,
                    ours,
                });
            }
            steps.push(Step {
                step: "CA upload",
                outcome: Outcome::Reused,
                detail: format!(
                    "primary CA SHA-1 {ours} already on the group ({})",
                    if c.verified { "verified" } else { "unverified" }
                ),
            });
            c.verified
        }
        None => {
            let verified = upload_ca(client, group, entry, signing, verified_upload).await?;
            steps.push(Step {
                step: "CA upload",
                outcome: Outcome::Done,
                detail: format!(
                    "primary CA SHA-1 {ours}{}",
                    if verified_upload {
                        " uploaded as verified (--verified-upload: no proof of possession)"
                    } else {
                        " uploaded"
                    }
                ),
            });
            verified
        }
    };
    if verified {
        return Ok(());
    }
    steps.push(prove_possession(client, group, entry, signing).await?);
    Ok(())
}

/// Puts `ca` into the `entry` slot of `group` (replacing what is there), self-attested as
/// verified when `verified_upload`; returns whether the slot is verified now.
pub async fn upload_ca(
    client: &Client,
    group: &str,
    entry: CertificateEntry,
    ca: &Authority,
    verified_upload: bool,
) -> Result<bool, OnboardError> {
    let body = SigningX509Certificate {
        verified: verified_upload,
        certificate: Some(cert::certificate_string(ca.cert_pem())),
        info: None,
        etag: None,
    };
    let c = client
        .set_enrollment_group_certificate(group, entry, &body)
        .await
        .map_err(central_err(format!(
            "cannot upload the CA to the {entry} slot of group {group}"
        )))?;
    Ok(c.verified)
}

/// Proves possession of the key of the CA in the `entry` slot of `group`: a verification
/// code, a certificate with that CN signed by `ca`, verify, and a read-back that the slot is
/// verified now.
pub async fn prove_possession(
    client: &Client,
    group: &str,
    entry: CertificateEntry,
    ca: &Authority,
) -> Result<Step, OnboardError> {
    let code = client
        .generate_verification_code(group, entry)
        .await
        .map_err(central_err(format!(
            "cannot get a verification code for the {entry} CA of group {group}"
        )))?
        .verification_code;
    let proof = ca
        .issue_verification(&code, &LeafOptions::default())
        .map_err(cert_err("cannot make the verification certificate"))?;
    client
        .verify_enrollment_group_certificate(
            group,
            entry,
            &X509VerificationCertificate {
                certificate: cert::certificate_string(&proof.cert_pem),
            },
        )
        .await
        .map_err(central_err(format!(
            "proof of possession for the {entry} CA of group {group} was refused"
        )))?;
    let now = client
        .get_enrollment_group_certificate(group, entry)
        .await
        .map_err(central_err(format!("cannot read the CA of group {group}")))?;
    if !now.verified {
        return Err(OnboardError::NotVerified(group.to_owned()));
    }
    Ok(Step {
        step: "proof of possession",
        outcome: Outcome::Done,
        detail: format!(
            "verification certificate CN={code} signed by {}; {entry} CA verified",
            ca.subject()
        ),
    })
}

/// Makes sure `group` is a symmetric-key enrollment group and returns its primary key.
pub async fn ensure_symmetric_group(
    client: &Client,
    group: &str,
    steps: &mut Vec<Step>,
) -> Result<Secret, OnboardError> {
    let g = ensure_group(
        client,
        group,
        GroupAttestation::SymmetricKey {
            symmetric_key: None,
        },
        steps,
    )
    .await?;
    match g.attestation {
        GroupAttestation::SymmetricKey {
            symmetric_key: Some(k),
        } => Ok(k.primary_key),
        _ => Err(OnboardError::NoGroupKey(group.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_are_made_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let spec = CaSpec {
            root: dir.path().join("ca/root"),
            intermediate: Some(dir.path().join("ca/inter")),
            password: None,
            name: "line-1".into(),
            root_key: None,
            intermediate_key: None,
        };
        let mut steps = Vec::new();
        let first = ensure_ca(&spec, &mut steps).unwrap();
        assert_eq!(
            steps.iter().map(|s| s.outcome).collect::<Vec<_>>(),
            [Outcome::Created, Outcome::Created]
        );
        assert!(dir.path().join("ca/root_key.pem").exists());
        let mut again = Vec::new();
        let second = ensure_ca(&spec, &mut again).unwrap();
        assert_eq!(
            again.iter().map(|s| s.outcome).collect::<Vec<_>>(),
            [Outcome::Reused, Outcome::Reused]
        );
        assert_eq!(first.root.cert_der(), second.root.cert_der());
        assert_eq!(first.signing().cert_der(), second.signing().cert_der());
        assert!(!second.signing().is_root());
    }

    #[test]
    fn half_a_ca_and_a_foreign_intermediate_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let spec = |root: &str, inter: Option<&str>| CaSpec {
            root: dir.path().join(root),
            intermediate: inter.map(|i| dir.path().join(i)),
            password: None,
            name: "g".into(),
            root_key: None,
            intermediate_key: None,
        };
        ensure_ca(&spec("a", None), &mut Vec::new()).unwrap();
        ensure_ca(&spec("b", Some("b-inter")), &mut Vec::new()).unwrap();
        let e = ensure_ca(&spec("a", Some("b-inter")), &mut Vec::new())
            .err()
            .unwrap();
        assert!(matches!(e, OnboardError::WrongIssuer { .. }), "{e}");
        std::fs::remove_file(dir.path().join("a_key.pem")).unwrap();
        let e = ensure_ca(&spec("a", None), &mut Vec::new()).err().unwrap();
        assert!(matches!(e, OnboardError::IncompleteCa(_)), "{e}");
        assert!(
            !dir.path().join("a_key.pem").exists(),
            "nothing regenerated"
        );
    }
}
