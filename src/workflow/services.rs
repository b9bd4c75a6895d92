//! The production side of the batch engine's seams: credentials from [`crate::cert`] (X.509)
//! or [`crate::dps::derive_device_key`] (symmetric key), IoT Central through
//! [`crate::central::Client`] and DPS through [`crate::dps::Client`].
//!
//! Errors are turned into [`StepError`]s that keep the service's message (and never a secret)
//! and say whether a retry may help, using each client's own `is_retryable`.

use super::journal::DeviceRecord;
use super::provision::{
    chain, Assignment, Issuer, NewCredential, Services, StepError, StoredCredential,
};
use crate::central::models::Device;
use crate::cert::{Authority, LeafOptions};
use crate::ids::{IdScope, RegistrationId};
use crate::secret::Secret;
use std::sync::Arc;

/// Issues device certificates signed by a CA (root or intermediate).
pub struct X509Issuer {
    authority: Arc<Authority>,
    options: LeafOptions,
}

impl X509Issuer {
    /// Device certificates from `authority` with `options`.
    pub fn new(authority: Arc<Authority>, options: LeafOptions) -> X509Issuer {
        X509Issuer { authority, options }
    }
}

impl Issuer for X509Issuer {
    fn issue(&self, id: &RegistrationId) -> Result<NewCredential, StepError> {
        let issued = self
            .authority
            .issue_device(id, &self.options)
            .map_err(|e| StepError::permanent(chain(&e)))?;
        let key = issued
            .key
            .as_ref()
            .ok_or_else(|| StepError::permanent("the certificate module returned no key"))?;
        Ok(NewCredential::X509 {
            key_pem: key.pkcs8_pem(),
            cert_pem: issued.cert_pem.clone(),
            chain_pem: issued.chain_pem.clone(),
        })
    }

    fn sign(&self, id: &RegistrationId, csr: &[u8]) -> Result<NewCredential, StepError> {
        let csr = crate::cert::DeviceCsr::for_device(csr, id)
            .map_err(|e| StepError::permanent(format!("CSR of {id}: {}", chain(&e))))?;
        let issued = self
            .authority
            .sign_device_csr(&csr, &self.options)
            .map_err(|e| StepError::permanent(chain(&e)))?;
        Ok(NewCredential::Certificate {
            cert_pem: issued.cert_pem,
            chain_pem: issued.chain_pem,
        })
    }
}

/// Derives device keys from an enrollment group's symmetric key.
pub struct SymmetricKeyIssuer {
    group_key: Secret,
}

impl SymmetricKeyIssuer {
    /// Device keys derived from `group_key` (base64).
    pub fn new(group_key: Secret) -> SymmetricKeyIssuer {
        SymmetricKeyIssuer { group_key }
    }
}

impl Issuer for SymmetricKeyIssuer {
    fn issue(&self, id: &RegistrationId) -> Result<NewCredential, StepError> {
        crate::dps::derive_device_key(self.group_key.expose(), id.as_str())
            .map(NewCredential::SymmetricKey)
            .map_err(|e| StepError::permanent(chain(&e)))
    }
}

/// IoT Central + DPS over HTTPS.
#[derive(Clone)]
pub struct RealServices {
    central: crate::central::Client,
    dps: crate::dps::ClientOptions,
    id_scope: IdScope,
}

impl RealServices {
    /// Services over these clients; `dps` carries the endpoint, trusted CA and deadlines.
    pub fn new(
        central: crate::central::Client,
        dps: crate::dps::ClientOptions,
        id_scope: IdScope,
    ) -> RealServices {
        RealServices {
            central,
            dps,
            id_scope,
        }
    }

    fn dps_client(&self, cred: &StoredCredential) -> Result<crate::dps::Client, StepError> {
        let attestation = match cred {
            StoredCredential::X509 { key_pem, chain_pem } => {
                let id = crate::dps::X509Identity::from_pem(
                    chain_pem.as_bytes(),
                    key_pem.expose().as_bytes(),
                    None,
                )
                .map_err(|e| StepError::permanent(chain(&e)))?;
                crate::dps::Attestation::X509(id)
            }
            StoredCredential::SymmetricKey(k) => crate::dps::Attestation::SymmetricKey(k.clone()),
        };
        crate::dps::Client::new(self.id_scope.clone(), attestation, self.dps.clone())
            .map_err(|e| StepError::permanent(chain(&e)))
    }
}

fn registration_id(rec: &DeviceRecord) -> Result<RegistrationId, StepError> {
    RegistrationId::new(rec.device_id.clone()).map_err(|e| StepError::permanent(e.to_string()))
}

fn dps_error(e: &crate::dps::DpsError) -> StepError {
    StepError {
        message: chain(e),
        retryable: e.is_retryable(),
    }
}

fn assignment(r: crate::dps::Registration, rec: &DeviceRecord) -> Result<Assignment, StepError> {
    let hub = r
        .assigned_hub
        .ok_or_else(|| StepError::permanent("DPS assigned the device but named no hub"))?;
    Ok(Assignment {
        assigned_hub: hub,
        device_id: r.device_id.unwrap_or_else(|| rec.device_id.clone()),
    })
}

impl Services for RealServices {
    fn central(&self) -> Option<crate::central::Client> {
        Some(self.central.clone())
    }

    async fn create_device(&self, rec: &DeviceRecord) -> Result<(), StepError> {
        let device = Device {
            display_name: rec.display_name.clone(),
            template: rec.template.clone(),
            simulated: rec.simulated,
            enabled: Some(true),
            organizations: rec.organization.clone().map(|o| vec![o]),
            ..Device::default()
        };
        self.central
            .create_device(&rec.device_id, &device)
            .await
            .map(|_| ())
            .map_err(|e| StepError {
                message: chain(&e),
                retryable: e.is_retryable(),
            })
    }

    async fn register(
        &self,
        rec: &DeviceRecord,
        cred: &StoredCredential,
    ) -> Result<Assignment, StepError> {
        let client = self.dps_client(cred)?;
        let payload = rec
            .template
            .as_ref()
            .map(|t| serde_json::json!({ "modelId": t }));
        let r = client
            .register(&registration_id(rec)?, payload)
            .await
            .map_err(|e| dps_error(&e))?;
        assignment(r, rec)
    }

    async fn lookup(
        &self,
        rec: &DeviceRecord,
        cred: &StoredCredential,
    ) -> Result<Option<Assignment>, StepError> {
        let client = self.dps_client(cred)?;
        match client.status_lookup(&registration_id(rec)?).await {
            Ok(r) if r.status == Some(crate::dps::EnrollmentStatus::Assigned) => {
                assignment(r, rec).map(Some)
            }
            Ok(r) if r.status == Some(crate::dps::EnrollmentStatus::Assigning) => Err(
                StepError::transient("DPS is still assigning the device; will look again"),
            ),
            Ok(_) => Ok(None),
            Err(crate::dps::DpsError::Service { status: 404, .. }) => Ok(None),
            Err(e) => Err(dps_error(&e)),
        }
    }
}

impl super::renew::CertificateLookup for RealServices {
    async fn registered_with(
        &self,
        rec: &DeviceRecord,
        cred: &StoredCredential,
        sha1: &str,
    ) -> Result<Option<Assignment>, StepError> {
        let client = self.dps_client(cred)?;
        match client.status_lookup(&registration_id(rec)?).await {
            Ok(r) if r.status == Some(crate::dps::EnrollmentStatus::Assigned) => {
                let holds = r
                    .x509
                    .as_ref()
                    .and_then(|x| x.certificate_info.as_ref())
                    .is_some_and(|c| c.sha1_thumbprint.eq_ignore_ascii_case(sha1));
                if holds {
                    assignment(r, rec).map(Some)
                } else {
                    Ok(None)
                }
            }
            Ok(r) if r.status == Some(crate::dps::EnrollmentStatus::Assigning) => Err(
                StepError::transient("DPS is still assigning the device; will look again"),
            ),
            Ok(_) => Ok(None),
            Err(crate::dps::DpsError::Service { status: 404, .. }) => Ok(None),
            Err(e) => Err(dps_error(&e)),
        }
    }
}

/// Blocks devices through [`crate::central::Client`] (its pacing keeps a revocation within the
/// application's request rate).
#[derive(Clone)]
pub struct CentralBlocker(pub crate::central::Client);

fn central_error(e: &crate::central::Error) -> StepError {
    StepError {
        message: chain(e),
        retryable: e.is_retryable(),
    }
}

impl super::revoke::Blocker for CentralBlocker {
    async fn block(&self, device_id: &str) -> Result<super::ledger::BlockOutcome, StepError> {
        match self
            .0
            .update_device(device_id, &serde_json::json!({ "enabled": false }))
            .await
        {
            Ok(_) => Ok(super::ledger::BlockOutcome::Blocked),
            Err(e) if e.is_not_found() => Ok(super::ledger::BlockOutcome::Absent),
            Err(e) => Err(central_error(&e)),
        }
    }

    async fn enabled(&self, device_id: &str) -> Result<Option<bool>, StepError> {
        match self.0.get_device(device_id).await {
            Ok(d) => Ok(Some(d.enabled != Some(false))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(central_error(&e)),
        }
    }
}
