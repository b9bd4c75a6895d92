//! Enrollment groups and their X.509 signing certificates, including proof of possession.
//!
//! `generateVerificationCode` mints a new code each time it runs, and a code replaces the
//! previous one, so the client never resends it after the request may have reached the service
//! (see the retry rules in [`crate::central::client`]). `verify` is not resent blindly either,
//! but its outcome can be read back: when it ends with an unknown outcome, the client reads the
//! certificate and reports success if it is now verified.

use super::client::{Call, Client};
use super::error::Error;
use super::models::{
    EnrollmentGroup, SigningX509Certificate, X509VerificationCertificate, X509VerificationCode,
};
use super::pager::{ListOptions, Pager};
use reqwest::Method;
use std::fmt;
use std::str::FromStr;

/// Which signing certificate of a group: `primary` or `secondary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertificateEntry {
    /// The primary certificate.
    Primary,
    /// The secondary certificate.
    Secondary,
}

impl CertificateEntry {
    /// The path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateEntry::Primary => "primary",
            CertificateEntry::Secondary => "secondary",
        }
    }
}

impl fmt::Display for CertificateEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CertificateEntry {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "primary" => Ok(CertificateEntry::Primary),
            "secondary" => Ok(CertificateEntry::Secondary),
            other => Err(format!(
                "certificate entry must be primary or secondary, not {other:?}"
            )),
        }
    }
}

impl Client {
    /// Lists the enrollment groups (`EnrollmentGroups_List`).
    pub fn list_enrollment_groups(&self) -> Pager<EnrollmentGroup> {
        Pager::new(
            self,
            "EnrollmentGroups_List",
            &["enrollmentGroups"],
            &ListOptions::default(),
            None,
        )
    }

    /// Gets one enrollment group (`EnrollmentGroups_Get`).
    pub async fn get_enrollment_group(&self, id: &str) -> Result<EnrollmentGroup, Error> {
        let op = "EnrollmentGroups_Get";
        let url = self.url(op, &["enrollmentGroups", id], false)?;
        self.json(Call::new(op, Method::GET, url)).await
    }

    /// Creates (or replaces) an enrollment group (`EnrollmentGroups_Create`).
    ///
    /// ```no_run
    /// # async fn demo(client: iotc::central::Client) -> Result<(), iotc::central::Error> {
    /// use iotc::central::models::{EnrollmentGroup, EnrollmentGroupType, GroupAttestation};
    /// let group = EnrollmentGroup {
    ///     id: None, etag: None, id_scope: None, enabled: Some(true),
    ///     display_name: "Line 1".into(),
    ///     group_type: EnrollmentGroupType::Iot,
    ///     attestation: GroupAttestation::X509 { x509: None },
    /// };
    /// client.create_enrollment_group("line-1", &group).await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_enrollment_group(
        &self,
        id: &str,
        group: &EnrollmentGroup,
    ) -> Result<EnrollmentGroup, Error> {
        let op = "EnrollmentGroups_Create";
        let url = self.url(op, &["enrollmentGroups", id], false)?;
        self.json(Call::new(op, Method::PUT, url).json(group)?)
            .await
    }

    /// Updates an enrollment group with a JSON merge patch (`EnrollmentGroups_Update`; the
    /// service accepts only `application/merge-patch+json` here).
    pub async fn update_enrollment_group(
        &self,
        id: &str,
        patch: &serde_json::Value,
    ) -> Result<EnrollmentGroup, Error> {
        let op = "EnrollmentGroups_Update";
        let url = self.url(op, &["enrollmentGroups", id], false)?;
        self.json(Call::new(op, Method::PATCH, url).merge_patch(patch)?)
            .await
    }

    /// Deletes an enrollment group (`EnrollmentGroups_Remove`).
    pub async fn delete_enrollment_group(&self, id: &str) -> Result<(), Error> {
        let op = "EnrollmentGroups_Remove";
        let url = self.url(op, &["enrollmentGroups", id], false)?;
        self.empty(Call::new(op, Method::DELETE, url)).await
    }

    /// Gets a signing certificate of a group (`EnrollmentGroups_GetX509`).
    pub async fn get_enrollment_group_certificate(
        &self,
        id: &str,
        entry: CertificateEntry,
    ) -> Result<SigningX509Certificate, Error> {
        let op = "EnrollmentGroups_GetX509";
        let url = self.url(
            op,
            &["enrollmentGroups", id, "certificates", entry.as_str()],
            false,
        )?;
        self.json(Call::new(op, Method::GET, url)).await
    }

    /// Sets a signing certificate of a group (`EnrollmentGroups_CreateX509`). `certificate`
    /// is base64 of the PEM file (see `crate::cert::certificate_string`); `verified: true`
    /// self-attests possession instead of proving it.
    pub async fn set_enrollment_group_certificate(
        &self,
        id: &str,
        entry: CertificateEntry,
        certificate: &SigningX509Certificate,
    ) -> Result<SigningX509Certificate, Error> {
        let op = "EnrollmentGroups_CreateX509";
        let url = self.url(
            op,
            &["enrollmentGroups", id, "certificates", entry.as_str()],
            false,
        )?;
        self.json(Call::new(op, Method::PUT, url).json(certificate)?)
            .await
    }

    /// Removes a signing certificate of a group (`EnrollmentGroups_RemoveX509`).
    pub async fn delete_enrollment_group_certificate(
        &self,
        id: &str,
        entry: CertificateEntry,
    ) -> Result<(), Error> {
        let op = "EnrollmentGroups_RemoveX509";
        let url = self.url(
            op,
            &["enrollmentGroups", id, "certificates", entry.as_str()],
            false,
        )?;
        self.empty(Call::new(op, Method::DELETE, url)).await
    }

    /// Generates a verification code for proof of possession
    /// (`EnrollmentGroups_GenerateVerificationCodeX509`). Never resent once it may have reached
    /// the service: on [`Error::outcome_unknown`] call it again yourself (the newest code wins).
    pub async fn generate_verification_code(
        &self,
        id: &str,
        entry: CertificateEntry,
    ) -> Result<X509VerificationCode, Error> {
        let op = "EnrollmentGroups_GenerateVerificationCodeX509";
        let url = self.url(
            op,
            &[
                "enrollmentGroups",
                id,
                "certificates",
                entry.as_str(),
                "generateVerificationCode",
            ],
            false,
        )?;
        self.json(Call::new(op, Method::POST, url).not_idempotent())
            .await
    }

    /// Proves possession of the CA key with a certificate whose CN is the verification code
    /// (`EnrollmentGroups_VerifyX509`; 200 and 204 both mean success). When the outcome is
    /// unknown (timeout, broken connection, 5xx), the certificate is read back: if it is now
    /// verified, the call succeeded.
    pub async fn verify_enrollment_group_certificate(
        &self,
        id: &str,
        entry: CertificateEntry,
        verification: &X509VerificationCertificate,
    ) -> Result<(), Error> {
        let op = "EnrollmentGroups_VerifyX509";
        let url = self.url(
            op,
            &[
                "enrollmentGroups",
                id,
                "certificates",
                entry.as_str(),
                "verify",
            ],
            false,
        )?;
        let call = Call::new(op, Method::POST, url)
            .json(verification)?
            .not_idempotent();
        match self.empty(call).await {
            Ok(()) => Ok(()),
            Err(e) if e.outcome_unknown() => {
                match self.get_enrollment_group_certificate(id, entry).await {
                    Ok(cert) if cert.verified => {
                        tracing::info!(
                            operation = op,
                            "outcome was unknown; the certificate is verified"
                        );
                        Ok(())
                    }
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }
}
