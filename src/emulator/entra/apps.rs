//! App registrations of the emulator's Entra authority: the admin call that makes them and
//! the record the token endpoint checks credentials against.
//!
//! `PUT /emulator/entra/applications/{name}` (application-wide Administrator) creates the
//! registration `name` or replaces it: a new registration gets a client id and a service
//! principal object id (the `oid` of its tokens, what an IoT Central user of type
//! `servicePrincipal` names); a replaced one keeps both. Either way a new client secret is
//! made and shown once in the answer (only its SHA-256 is stored, so the previous one stops
//! working), and the certificate and group memberships become those of the body.
//! `GET` shows the registration (never a secret) with the token endpoint's counters.

use super::{rsa_components, Counts};
use crate::emulator::api::{json_body, AppState};
use crate::emulator::auth::Principal;
use crate::emulator::error::{ApiError, ApiResult};
use crate::emulator::store;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Extension;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// Store kind of app registrations.
pub const KIND: &str = "entraApplication";
/// The default lifetime of issued tokens, in seconds (Entra's app tokens live about an hour).
pub const DEFAULT_TOKEN_LIFETIME: u32 = 3600;

/// A registered certificate: its thumbprints and its RSA public key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRecord {
    /// base64url SHA-1 of the certificate (the `x5t` of RS256 assertions).
    pub x5t: String,
    /// base64url SHA-256 of the certificate (the `x5t#S256` of PS256 assertions).
    pub x5t_s256: String,
    /// RSA modulus, base64url.
    pub n: String,
    /// RSA exponent, base64url.
    pub e: String,
}

/// What the store keeps of an app registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppRecord {
    /// The registration's name (the path segment).
    pub name: String,
    /// Application (client) id.
    pub client_id: String,
    /// Object id of its service principal (the tokens' `oid`).
    pub object_id: String,
    /// SHA-256 (hex) of the current client secret.
    pub secret_sha256: String,
    /// Registered certificates.
    pub certificates: Vec<CertificateRecord>,
    /// Object ids of the AD groups it is a member of (the tokens' `groups`).
    pub groups: Vec<String>,
    /// Lifetime of issued tokens, in seconds.
    pub token_lifetime_seconds: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PutBody {
    #[serde(default)]
    certificate: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    token_lifetime_seconds: Option<u32>,
}

fn valid_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "InvalidId",
            format!("app registration name {name:?}: 1 to 64 letters, digits, '-', '_' or '.'"),
        ))
    }
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The certificate of a PUT body: base64 of a PEM or DER certificate with an RSA key.
fn certificate(text: &str) -> ApiResult<CertificateRecord> {
    let bad = |reason: String| ApiError::invalid_body(format!("certificate: {reason}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| bad(format!("not base64: {e}")))?;
    let der = if bytes.starts_with(b"-----BEGIN") {
        crate::cert::parse_pem_certs(&bytes)
            .map_err(|e| bad(e.to_string()))?
            .into_iter()
            .next()
            .ok_or_else(|| bad("the PEM holds no CERTIFICATE block".into()))?
    } else {
        bytes
    };
    let (n, e) = rsa_components(&der).map_err(bad)?;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    Ok(CertificateRecord {
        x5t: b64.encode(sha1::Sha1::digest(&der)),
        x5t_s256: b64.encode(sha2::Sha256::digest(&der)),
        n: b64.encode(n),
        e: b64.encode(e),
    })
}

pub(crate) async fn put_app(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    crate::emulator::api::require_admin(&p)?;
    valid_name(&name)?;
    let body: PutBody = if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::invalid_body(
            "the request needs a JSON body ({} for an app with a client secret only)",
        ));
    } else {
        json_body(&body)?
    };
    let certificates = match &body.certificate {
        Some(c) => vec![certificate(c)?],
        None => Vec::new(),
    };
    let mut groups = Vec::new();
    for g in &body.groups {
        let id = uuid::Uuid::parse_str(g).map_err(|_| {
            ApiError::invalid_body(format!(
                "groups: {g:?} is not an AD group object id (a GUID)"
            ))
        })?;
        groups.push(id.to_string());
    }
    let lifetime = body
        .token_lifetime_seconds
        .unwrap_or(DEFAULT_TOKEN_LIFETIME);
    if !(1..=86_400).contains(&lifetime) {
        return Err(ApiError::invalid_body(
            "tokenLifetimeSeconds must be between 1 and 86400",
        ));
    }
    let mut raw = [0u8; 30];
    rand::fill(&mut raw);
    let secret =
        crate::secret::Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw));
    let tenant_id = st.entra.tenant_id().to_owned();
    let record = st.store.write(|c| {
        let existing: Option<AppRecord> = store::get(c, KIND, &name)?;
        let (client_id, object_id) = match existing {
            Some(e) => (e.client_id, e.object_id),
            None => (
                uuid::Uuid::new_v4().to_string(),
                uuid::Uuid::new_v4().to_string(),
            ),
        };
        let record = AppRecord {
            name: name.clone(),
            client_id,
            object_id,
            secret_sha256: sha256_hex(secret.expose().as_bytes()),
            certificates,
            groups,
            token_lifetime_seconds: lifetime,
        };
        store::put(c, KIND, &name, &record)?;
        Ok(record)
    })?;
    Ok(crate::emulator::api::ok(serde_json::json!({
        "tenantId": tenant_id,
        "clientId": record.client_id,
        "objectId": record.object_id,
        "clientSecret": secret,
    })))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AppView {
    name: String,
    tenant_id: String,
    client_id: String,
    object_id: String,
    groups: Vec<String>,
    certificates: Vec<String>,
    token_lifetime_seconds: u32,
    #[serde(flatten)]
    counts: Counts,
}

pub(crate) async fn get_app(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    crate::emulator::api::require_admin(&p)?;
    let record: AppRecord = st
        .store
        .read(|c| store::get(c, KIND, &name))?
        .ok_or_else(|| ApiError::not_found("app registration", &name))?;
    Ok(crate::emulator::api::ok(AppView {
        counts: st.entra.counts(&record.client_id),
        name: record.name,
        tenant_id: st.entra.tenant_id().to_owned(),
        client_id: record.client_id,
        object_id: record.object_id,
        groups: record.groups,
        certificates: record.certificates.into_iter().map(|c| c.x5t).collect(),
        token_lifetime_seconds: record.token_lifetime_seconds,
    }))
}

/// The registration with client id `client_id`, if any.
pub(crate) fn by_client_id(
    c: &rusqlite::Connection,
    client_id: &str,
) -> ApiResult<Option<AppRecord>> {
    let all: Vec<AppRecord> = store::list(c, KIND)?;
    Ok(all
        .into_iter()
        .find(|a| a.client_id.eq_ignore_ascii_case(client_id)))
}
