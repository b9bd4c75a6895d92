//! The Device Provisioning Service, device side: registering a device over HTTPS.
//!
//! DPS is where a device learns which hub it belongs to, and where onboarding fails in the
//! field (wrong chain, unverified CA, CN that is not the registration id, bad SAS). This
//! module holds the wire schema ([`wire`], shared with the emulator's DPS listener), the
//! symmetric-key rules ([`sas`]: group-key derivation, SAS signing and verification), the
//! device identities ([`identity`]: X.509 leaf + chain + key, or a symmetric key) and the
//! [`Client`] that runs a registration as DPS's long-running operation.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use iotc::dps::{Attestation, Client, ClientOptions};
//! let key = iotc::dps::derive_device_key("<group key base64>", "dev-1")?;
//! let client = Client::new("0ne0000000A".parse()?, Attestation::SymmetricKey(key), ClientOptions::default())?;
//! let state = client.register(&"dev-1".parse()?, None).await?;
//! println!("{:?} on {:?}", state.device_id, state.assigned_hub);
//! # Ok(()) }
//! ```

pub mod client;
pub mod identity;
pub mod sas;
mod token;
pub mod wire;

pub use client::{register, Client, ClientOptions, Registration};
pub use identity::{Attestation, IdentityError, X509Identity};
pub use sas::{derive_device_key, sas_token, ParsedSas, SasError};
pub use wire::{EnrollmentStatus, RegistrationOutcome};

use std::time::Duration;

/// Why a DPS operation failed. The service's numeric `errorCode`, message and `trackingId`
/// are kept as it sent them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DpsError {
    /// A key or SAS token could not be made.
    #[error(transparent)]
    Sas(#[from] SasError),
    /// The device identity (certificate, key, PKCS#12) could not be loaded.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The endpoint URL is unusable.
    #[error("invalid DPS endpoint {0}")]
    InvalidEndpoint(String),
    /// The HTTP/TLS client could not be built.
    #[error("could not set up the HTTPS client: {0}")]
    BuildClient(String),
    /// The request did not get an answer (connection refused or dropped, TLS failure,
    /// timeout).
    #[error("DPS {operation} failed to get an answer: {detail}")]
    Send {
        /// Which operation.
        operation: &'static str,
        /// The transport error and its causes.
        detail: String,
    },
    /// DPS answered with an error status.
    #[error(
        "DPS refused {operation}: HTTP {status}{}{}{}",
        error_code.map(|c| format!(", errorCode {c}")).unwrap_or_default(),
        message.as_deref().map(|m| format!(": {m}")).unwrap_or_default(),
        tracking_id.as_deref().map(|t| format!(" (trackingId {t})")).unwrap_or_default()
    )]
    Service {
        /// Which operation.
        operation: &'static str,
        /// HTTP status.
        status: u16,
        /// DPS's numeric error code.
        error_code: Option<i32>,
        /// DPS's message.
        message: Option<String>,
        /// DPS's tracking id (quote it to support).
        tracking_id: Option<String>,
        /// What Retry-After said (capped).
        retry_after: Option<Duration>,
    },
    /// The answer could not be decoded.
    #[error("DPS {operation} answered something unreadable: {detail}")]
    Decode {
        /// Which operation.
        operation: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The registration finished in a state other than `assigned`.
    #[error(
        "registration of {registration_id} ended {status}{}{}",
        error_code.map(|c| format!(", errorCode {c}")).unwrap_or_default(),
        error_message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
    )]
    RegistrationFailed {
        /// The registration id.
        registration_id: String,
        /// The final status (failed, disabled, unassigned, ...).
        status: EnrollmentStatus,
        /// DPS's numeric error code.
        error_code: Option<i32>,
        /// DPS's message.
        error_message: Option<String>,
    },
    /// The registration was still not assigned when the deadline passed.
    #[error(
        "registration of {registration_id} not finished within {deadline:?}{}",
        operation_id.as_deref().map(|o| format!(" (operation {o})")).unwrap_or_default()
    )]
    DeadlineExceeded {
        /// The registration id.
        registration_id: String,
        /// The operation still running, if DPS accepted the request.
        operation_id: Option<String>,
        /// The deadline.
        deadline: Duration,
    },
}

impl DpsError {
    /// Whether trying again later may succeed: throttling, server errors, transport
    /// failures and deadlines. Authentication and validation refusals are not retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            DpsError::Send { .. } | DpsError::DeadlineExceeded { .. } => true,
            DpsError::Service { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// DPS's numeric error code, when the service sent one.
    pub fn error_code(&self) -> Option<i32> {
        match self {
            DpsError::Service { error_code, .. }
            | DpsError::RegistrationFailed { error_code, .. } => *error_code,
            _ => None,
        }
    }
}
