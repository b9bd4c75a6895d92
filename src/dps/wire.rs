//! Wire schema of the DPS device runtime API (`shared/spec/dps-device-2021-10-01.json`),
//! defined once and shared by the [`crate::dps`] client and the emulator's DPS listener so
//! the two cannot drift apart.
//!
//! Every field the spec marks optional is an `Option` skipped when absent. The status enums
//! are "modelAsString" in the spec (the service may add values), so each keeps an `Other`
//! variant instead of failing to parse an answer it does not know.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;

/// The api-version this crate sends by default (the version of the saved spec).
pub const API_VERSION: &str = "2021-10-01";
/// Every api-version the official device SDKs send, all accepted by the emulator.
pub const SUPPORTED_API_VERSIONS: &[&str] = &["2019-03-31", "2021-06-01", "2021-10-01"];
/// The public global device endpoint.
pub const GLOBAL_ENDPOINT: &str = "https://global.azure-devices-provisioning.net";

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $wire:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
            /// A value this crate does not know (the spec allows new ones).
            Other(String),
        }

        impl $name {
            /// The wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $wire,)*
                    $name::Other(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($wire => $name::$variant,)*
                    other => $name::Other(other.to_owned()),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Ok($name::from(s.as_str()))
            }
        }
    };
}

string_enum!(
    /// `EnrollmentStatus`: where a registration stands.
    EnrollmentStatus {
        /// Not assigned.
        Unassigned = "unassigned",
        /// The service is still working: poll again.
        Assigning = "assigning",
        /// Done: see the registration state.
        Assigned = "assigned",
        /// Failed: see `errorCode` / `errorMessage`.
        Failed = "failed",
        /// The enrollment is disabled.
        Disabled = "disabled",
    }
);

string_enum!(
    /// `AssignedDeviceSubstatus`: how an assigned device got where it is.
    AssignedDeviceSubstatus {
        /// First assignment to a hub.
        InitialAssignment = "initialAssignment",
        /// Moved to another hub, data migrated.
        DeviceDataMigrated = "deviceDataMigrated",
        /// Moved to another hub, data reset from the enrollment.
        DeviceDataReset = "deviceDataReset",
        /// Re-provisioned to a previously assigned hub.
        ReprovisionedToInitialAssignment = "reprovisionedToInitialAssignment",
    }
);

/// `DeviceRegistration`: the body of register and of the status lookup.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRegistration {
    /// The registration id (the SDKs always send it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_id: Option<String>,
    /// TPM attestation (not supported by this crate, kept for fidelity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<TpmAttestation>,
    /// Custom payload; IoT Central reads `modelId` from it to pick the device template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
}

/// `TpmAttestation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TpmAttestation {
    /// The endorsement key.
    pub endorsement_key: String,
    /// The storage root key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_root_key: Option<String>,
}

/// `RegistrationOperationStatus`: what register and the operation poll answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationOperationStatus {
    /// The operation id to poll (required, non-empty).
    pub operation_id: String,
    /// Where the operation stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<EnrollmentStatus>,
    /// The result, once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_state: Option<DeviceRegistrationResult>,
}

/// The typed reading of a [`RegistrationOperationStatus`]: one variant per state, each
/// carrying exactly what that state means.
#[derive(Debug, Clone, PartialEq)]
pub enum RegistrationOutcome {
    /// Still assigning: poll `operation_id` again.
    Assigning {
        /// The operation to poll.
        operation_id: String,
    },
    /// Assigned to a hub.
    Assigned(Box<DeviceRegistrationResult>),
    /// The registration failed; DPS's numeric code and message when it sent them.
    Failed {
        /// DPS error code (for example 401002).
        error_code: Option<i32>,
        /// DPS error message.
        error_message: Option<String>,
    },
    /// The enrollment is disabled.
    Disabled {
        /// DPS error message, if any.
        error_message: Option<String>,
    },
    /// Not assigned (no hub could be chosen).
    Unassigned {
        /// DPS error message, if any.
        error_message: Option<String>,
    },
    /// A status this crate does not know.
    Unknown(String),
}

impl RegistrationOperationStatus {
    /// A status still being worked on.
    pub fn assigning(operation_id: impl Into<String>) -> Self {
        RegistrationOperationStatus {
            operation_id: operation_id.into(),
            status: Some(EnrollmentStatus::Assigning),
            registration_state: None,
        }
    }

    /// The effective status: the top-level one, else the registration state's, else
    /// `assigning` (a 202 without a status means "not done yet").
    pub fn effective_status(&self) -> EnrollmentStatus {
        self.status
            .clone()
            .or_else(|| {
                self.registration_state
                    .as_ref()
                    .and_then(|s| s.status.clone())
            })
            .unwrap_or(EnrollmentStatus::Assigning)
    }

    /// Reads the status as a typed [`RegistrationOutcome`].
    pub fn outcome(&self) -> RegistrationOutcome {
        let state = self.registration_state.as_ref();
        let message = || state.and_then(|s| s.error_message.clone());
        match self.effective_status() {
            EnrollmentStatus::Assigning => RegistrationOutcome::Assigning {
                operation_id: self.operation_id.clone(),
            },
            EnrollmentStatus::Assigned => {
                RegistrationOutcome::Assigned(Box::new(state.cloned().unwrap_or_default()))
            }
            EnrollmentStatus::Failed => RegistrationOutcome::Failed {
                error_code: state.and_then(|s| s.error_code),
                error_message: message(),
            },
            EnrollmentStatus::Disabled => RegistrationOutcome::Disabled {
                error_message: message(),
            },
            EnrollmentStatus::Unassigned => RegistrationOutcome::Unassigned {
                error_message: message(),
            },
            EnrollmentStatus::Other(s) => RegistrationOutcome::Unknown(s),
        }
    }
}

/// `DeviceRegistrationResult`: the registration state of a device. Every field is optional.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRegistrationResult {
    /// TPM result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<TpmRegistrationResult>,
    /// X.509 result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x509: Option<X509RegistrationResult>,
    /// Symmetric-key result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symmetric_key: Option<SymmetricKeyRegistrationResult>,
    /// The registration id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_id: Option<String>,
    /// When the registration was created (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date_time_utc: Option<String>,
    /// The hub the device was assigned to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_hub: Option<String>,
    /// The device id on that hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Status of the registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<EnrollmentStatus>,
    /// Substatus of an assigned device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substatus: Option<AssignedDeviceSubstatus>,
    /// DPS error code of a failed registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i32>,
    /// Error message of a failed registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Last update (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_date_time_utc: Option<String>,
    /// ETag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Custom payload returned by the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
}

/// `TpmRegistrationResult`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TpmRegistrationResult {
    /// Encrypted authentication key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_key: Option<String>,
}

/// `X509RegistrationResult`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509RegistrationResult {
    /// The device's (leaf) certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_info: Option<X509CertificateInfo>,
    /// The enrollment group that admitted the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment_group_id: Option<String>,
    /// The group's signing certificate the chain led to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_certificate_info: Option<X509CertificateInfo>,
}

/// `SymmetricKeyRegistrationResult`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SymmetricKeyRegistrationResult {
    /// The enrollment group whose key the device's key derives from (absent for an
    /// individual enrollment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment_group_id: Option<String>,
}

/// `X509CertificateInfo` (DPS's: every field required).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509CertificateInfo {
    /// Subject distinguished name.
    pub subject_name: String,
    /// SHA-1 thumbprint, uppercase hex.
    pub sha1_thumbprint: String,
    /// SHA-256 thumbprint, uppercase hex.
    pub sha256_thumbprint: String,
    /// Issuer distinguished name.
    pub issuer_name: String,
    /// Start of validity (RFC 3339, UTC).
    pub not_before_utc: String,
    /// End of validity (RFC 3339, UTC).
    pub not_after_utc: String,
    /// Serial number, hex.
    pub serial_number: String,
    /// X.509 version (3).
    pub version: i32,
}

/// `ProvisioningServiceErrorDetails`: DPS's error body. No field is required.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningServiceErrorDetails {
    /// Numeric DPS error code, such as 401002 (the HTTP status times 1000 plus a detail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i32>,
    /// Correlation id of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_id: Option<String>,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Extra information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<BTreeMap<String, String>>,
    /// When the error happened (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_utc: Option<String>,
}

/// The topics of DPS over MQTT 3.1.1 (MicrosoftDocs "Communicate with DPS using the MQTT
/// protocol"; the official SDKs send exactly these), shared by the device client and the
/// emulator's MQTT listener. A request's topic ends in `?$rid={request id}` (a poll adds
/// `&operationId={id}`); an answer comes on `res/{status}/?$rid={request id}`, with
/// `&retry-after={seconds}` while the operation is assigning.
pub mod mqtt {
    /// The port of DPS over MQTT (TLS) on the public service.
    pub const PORT: u16 = 8883;
    /// The one topic filter a device subscribes to.
    pub const RESPONSE_FILTER: &str = "$dps/registrations/res/#";
    /// Prefix of every answer's topic (then `{status}/?$rid=...`).
    pub const RESPONSE_PREFIX: &str = "$dps/registrations/res/";
    /// The topic name of a registration request (before `?`).
    pub const REGISTER_TOPIC: &str = "$dps/registrations/PUT/iotdps-register/";
    /// The topic name of an operation status poll (before `?`).
    pub const POLL_TOPIC: &str = "$dps/registrations/GET/iotdps-get-operationstatus/";
}

/// Numeric DPS error codes used by this crate and the emulator (HTTP status × 1000 + detail,
/// the convention of the codes DPS is observed to send; the spec does not list them).
pub mod error_codes {
    /// Malformed request (bad body, bad registration id, bad api-version).
    pub const BAD_REQUEST: i32 = 400_004;
    /// Authentication failed (bad SAS, no or unacceptable certificate).
    pub const UNAUTHORIZED: i32 = 401_002;
    /// The enrollment or device is disabled/blocked.
    pub const FORBIDDEN: i32 = 403_001;
    /// The device is blocked (or waiting for approval) in IoT Central: the sub-code IoT
    /// Central's troubleshooting page gives with 401 ("The device is either waiting for
    /// approval by an operator or has been blocked by an operator").
    pub const DEVICE_BLOCKED: i32 = 400_209;
    /// Unknown id scope, registration or operation.
    pub const NOT_FOUND: i32 = 404_201;
    /// Throttled.
    pub const THROTTLED: i32 = 429_001;
    /// Internal error.
    pub const INTERNAL: i32 = 500_000;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_status_round_trip_and_outcomes() {
        let text = r#"{"operationId":"4.65f62b2644c85bb1.331ffb1b","status":"assigning"}"#;
        let s: RegistrationOperationStatus = serde_json::from_str(text).unwrap();
        assert_eq!(
            s.outcome(),
            RegistrationOutcome::Assigning {
                operation_id: "4.65f62b2644c85bb1.331ffb1b".into()
            }
        );
        assert_eq!(serde_json::to_string(&s).unwrap(), text);

        let assigned = r#"{"operationId":"op","status":"assigned","registrationState":{
            "x509":{"enrollmentGroupId":"g1"},"registrationId":"dev-1",
            "createdDateTimeUtc":"2024-01-01T00:00:00Z","assignedHub":"hub.azure-devices.net",
            "deviceId":"dev-1","status":"assigned","substatus":"initialAssignment"}}"#;
        let s: RegistrationOperationStatus = serde_json::from_str(assigned).unwrap();
        match s.outcome() {
            RegistrationOutcome::Assigned(r) => {
                assert_eq!(r.device_id.as_deref(), Some("dev-1"));
                assert_eq!(
                    r.substatus,
                    Some(AssignedDeviceSubstatus::InitialAssignment)
                );
                assert_eq!(r.x509.unwrap().enrollment_group_id.as_deref(), Some("g1"));
            }
            other => panic!("unexpected {other:?}"),
        }

        let failed = r#"{"operationId":"op","status":"failed","registrationState":{
            "status":"failed","errorCode":400207,"errorMessage":"Custom allocation failed"}}"#;
        let s: RegistrationOperationStatus = serde_json::from_str(failed).unwrap();
        assert_eq!(
            s.outcome(),
            RegistrationOutcome::Failed {
                error_code: Some(400207),
                error_message: Some("Custom allocation failed".into())
            }
        );
    }

    #[test]
    fn unknown_status_is_kept_not_refused() {
        let s: RegistrationOperationStatus =
            serde_json::from_str(r#"{"operationId":"op","status":"quarantined"}"#).unwrap();
        assert_eq!(
            s.outcome(),
            RegistrationOutcome::Unknown("quarantined".into())
        );
        assert_eq!(serde_json::to_string(&s.status).unwrap(), "\"quarantined\"");
    }

    #[test]
    fn error_details_parse_with_missing_fields() {
        let e: ProvisioningServiceErrorDetails = serde_json::from_str(
            r#"{"errorCode":401002,"trackingId":"t-1","message":"Unauthorized","timestampUtc":"2024-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(e.error_code, Some(401002));
        assert_eq!(e.tracking_id.as_deref(), Some("t-1"));
        let empty: ProvisioningServiceErrorDetails = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, ProvisioningServiceErrorDetails::default());
    }
}
