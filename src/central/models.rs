//! Wire models of the IoT Central data-plane API (2022-07-31, plus the fields the
//! 2022-10-31-preview adds), defined once and shared by the client and the emulator so the
//! two cannot drift apart.
//!
//! Field names, optionality and discriminators follow `shared/spec/iotcentral-2022-07-31.json`.
//! Read-only fields are `Option` and skipped when absent, so the same type serves requests
//! (where the service ignores them) and responses. Secrets (symmetric keys, token values) are
//! [`Secret`]s: they serialize as plain strings but never print.

use crate::secret::Secret;
use serde::{Deserialize, Serialize};

/// The API version this crate speaks by default.
pub const API_VERSION: &str = "2022-07-31";
/// The preview API version, needed for `filter`, `orderby` and `maxpagesize` on lists.
pub const API_VERSION_PREVIEW: &str = "2022-10-31-preview";

/// Built-in role ids of every IoT Central application.
pub mod roles {
    /// Administrator (application scope).
    pub const ADMINISTRATOR: &str = "ca310b8d-2f4a-44e0-a36e-957c202cd8d4";
    /// Operator (application scope).
    pub const OPERATOR: &str = "ae2c9854-393b-4f97-8c42-479d70ce626e";
    /// Builder (application scope).
    pub const BUILDER: &str = "344138e9-8de4-4497-8c54-5237e96d6aaf";
    /// Org Admin (organization scope).
    pub const ORG_ADMIN: &str = "c495eb57-eb18-489e-9802-62c474e5645c";
    /// Org Operator (organization scope).
    pub const ORG_OPERATOR: &str = "b4935647-30e4-4ed3-9074-dcac66c2f8ef";
    /// Org Viewer (organization scope).
    pub const ORG_VIEWER: &str = "84cc62c1-dabe-49d3-b16e-8b291232b285";
}

/// One page of a list: `{ value, nextLink? }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    /// The items of this page.
    pub value: Vec<T>,
    /// Full URL of the next page, absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
}

/// The service's error body: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error details.
    pub error: ErrorDetails,
}

/// Error details as the service sends them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetails {
    /// Error code, also sent in the `x-ms-error-code` header.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Correlation id of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// When the request failed (RFC 1123).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

/// An organization.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Organization {
    /// Unique id (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Id of the parent organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// A role (read-only resource).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    /// Unique id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// A role, optionally scoped to an organization.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleAssignment {
    /// Role id.
    pub role: String,
    /// Organization the role applies to; absent means the whole application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
}

/// The kind of a user, the `type` discriminator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum UserKind {
    /// A user identified by email.
    #[serde(rename = "email")]
    Email {
        /// Email address.
        email: String,
    },
    /// An Azure AD service principal.
    #[serde(rename = "servicePrincipal", rename_all = "camelCase")]
    ServicePrincipal {
        /// AAD tenant id.
        tenant_id: String,
        /// AAD object id.
        object_id: String,
    },
    /// An Azure AD group.
    #[serde(rename = "adGroup", rename_all = "camelCase")]
    AdGroup {
        /// AAD tenant id.
        tenant_id: String,
        /// AAD object id.
        object_id: String,
    },
}

/// A user of the application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// Unique id (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Email, service principal or AD group.
    #[serde(flatten)]
    pub kind: UserKind,
    /// Role assignments (at least one).
    pub roles: Vec<RoleAssignment>,
}

/// An API token. `token` is only present in the answer to its creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiToken {
    /// Unique id (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Role assignments (at least one).
    pub roles: Vec<RoleAssignment>,
    /// The token value, `SharedAccessSignature sr=...` (read-only, returned once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// When the token expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<String>,
}

/// A device.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// Unique id (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// ETag used to prevent conflicting updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Device template id (a DTMI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Whether the device may connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Whether the device has been provisioned (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned: Option<bool>,
    /// Whether the device is simulated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulated: Option<bool>,
    /// Organizations the device belongs to (one today).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organizations: Option<Vec<String>>,
    /// Preview: `["iotEdge"]` for edge devices.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub device_type: Option<Vec<String>>,
}

/// A pair of symmetric keys (base64).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SymmetricKey {
    /// Primary key.
    pub primary_key: Secret,
    /// Secondary key.
    pub secondary_key: Secret,
}

/// Information about a certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509CertificateInfo {
    /// SHA-1 thumbprint, 40 uppercase hex characters.
    pub sha1_thumbprint: String,
}

/// A device's X.509 certificate.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509Certificate {
    /// The certificate (base64 of the PEM file, or of DER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// Certificate information (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<X509CertificateInfo>,
}

/// Primary and secondary client certificates of a device.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509Certificates {
    /// Primary certificate.
    pub primary: X509Certificate,
    /// Secondary certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary: Option<X509Certificate>,
}

/// X.509 credentials of a device.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509 {
    /// Client certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificates: Option<X509Certificates>,
}

/// TPM credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tpm {
    /// The endorsement key.
    pub endorsement_key: String,
}

/// A device's individual attestation (discriminated by `type`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Attestation {
    /// Symmetric key attestation.
    #[serde(rename = "symmetricKey", rename_all = "camelCase")]
    SymmetricKey {
        /// The keys.
        symmetric_key: SymmetricKey,
    },
    /// X.509 attestation.
    #[serde(rename = "x509")]
    X509 {
        /// The certificates.
        x509: X509,
    },
    /// TPM attestation.
    #[serde(rename = "tpm")]
    Tpm {
        /// The TPM.
        tpm: Tpm,
    },
}

/// What a device needs to connect: id scope and its credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceCredentials {
    /// The application's DPS ID scope.
    pub id_scope: String,
    /// Symmetric keys, when the device uses them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symmetric_key: Option<SymmetricKey>,
    /// X.509 credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x509: Option<X509>,
    /// TPM credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<Tpm>,
}

/// A device group.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceGroup {
    /// Unique id (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Display name (required).
    pub display_name: String,
    /// The query selecting the group's devices (required).
    pub filter: String,
    /// Short description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// ETag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Organizations the group belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organizations: Option<Vec<String>>,
}

/// A device template. Its body is kept as JSON: the emulator stores templates, it does not
/// interpret DTDL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceTemplate {
    /// Template id, a DTMI (read-only).
    #[serde(rename = "@id", default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// JSON-LD types.
    #[serde(rename = "@type")]
    pub types: Vec<String>,
    /// ETag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Display name.
    #[serde(
        rename = "displayName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub display_name: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The DTDL capability model.
    #[serde(rename = "capabilityModel")]
    pub capability_model: serde_json::Value,
}

/// Whether an enrollment group admits IoT devices or IoT Edge devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnrollmentGroupType {
    /// IoT devices.
    #[serde(rename = "iot")]
    Iot,
    /// IoT Edge devices.
    #[serde(rename = "iotEdge")]
    IotEdge,
}

/// One signing (CA) certificate of an x509 enrollment group.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SigningX509Certificate {
    /// Whether proof of possession was done (or the upload self-attested).
    #[serde(default)]
    pub verified: bool,
    /// The certificate: base64 of the PEM file (as the docs' convert.js makes it) or of DER.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// Thumbprint (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<X509CertificateInfo>,
    /// ETag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

/// Primary and secondary signing certificates.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SigningX509Certificates {
    /// Primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<SigningX509Certificate>,
    /// Secondary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary: Option<SigningX509Certificate>,
}

/// The X.509 part of a group attestation.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SigningX509 {
    /// The signing certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_certificates: Option<SigningX509Certificates>,
}

/// How devices of an enrollment group attest (discriminated by `type`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum GroupAttestation {
    /// Group symmetric keys; the service generates them.
    #[serde(rename = "symmetricKey", rename_all = "camelCase")]
    SymmetricKey {
        /// The group keys (read back after creation).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        symmetric_key: Option<SymmetricKey>,
    },
    /// X.509 CA certificates.
    #[serde(rename = "x509")]
    X509 {
        /// The signing certificates.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        x509: Option<SigningX509>,
    },
}

/// An enrollment group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentGroup {
    /// Unique id (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Display name (required).
    pub display_name: String,
    /// Whether devices of the group may connect (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// iot or iotEdge.
    #[serde(rename = "type")]
    pub group_type: EnrollmentGroupType,
    /// How devices attest.
    pub attestation: GroupAttestation,
    /// ETag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Preview: the application's ID scope (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_scope: Option<String>,
}

/// The answer to generateVerificationCode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509VerificationCode {
    /// The code, to be the CN of the verification certificate.
    pub verification_code: String,
}

/// The body of verify.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509VerificationCertificate {
    /// The verification certificate, encoded like [`SigningX509Certificate::certificate`].
    pub certificate: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn user_discriminator_round_trips() {
        let v = json!({"id":"u1","type":"email","email":"a@b.c","roles":[{"role":"r"}]});
        let u: User = serde_json::from_value(v.clone()).unwrap();
        assert!(matches!(u.kind, UserKind::Email { .. }));
        assert_eq!(serde_json::to_value(&u).unwrap(), v);
        let sp = json!({"type":"servicePrincipal","tenantId":"t","objectId":"o","roles":[{"role":"r","organization":"seattle"}]});
        let u: User = serde_json::from_value(sp.clone()).unwrap();
        assert_eq!(serde_json::to_value(&u).unwrap(), sp);
    }

    #[test]
    fn enrollment_group_examples_parse() {
        let req = json!({"displayName":"My group","enabled":true,"type":"iot","attestation":{"type":"symmetricKey"}});
        let g: EnrollmentGroup = serde_json::from_value(req.clone()).unwrap();
        assert_eq!(serde_json::to_value(&g).unwrap(), req);
        let x = json!({"displayName":"g","type":"iotEdge","attestation":{"type":"x509","x509":{"signingCertificates":{}}}});
        let g: EnrollmentGroup = serde_json::from_value(x).unwrap();
        assert_eq!(g.group_type, EnrollmentGroupType::IotEdge);
    }

    #[test]
    fn keys_never_print() {
        let k = SymmetricKey {
            primary_key: Secret::new("AAAA"),
            secondary_key: Secret::new("BBBB"),
        };
        let dbg = format!("{k:?}");
        assert!(!dbg.contains("AAAA") && !dbg.contains("BBBB"));
    }
}
