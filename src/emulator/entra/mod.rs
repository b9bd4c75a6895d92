//! A local Microsoft Entra authority, so service principals and AD groups can act on the
//! emulated application with real bearer tokens, and the client's Entra sign-in is tested
//! against an authority that checks what Entra checks.
//!
//! It is served on the API listener (its `authorityHost` is the listener's base URL), for one
//! tenant made with the data folder (`tenantId`), and it speaks the part of Entra's OAuth 2.0
//! v2.0 endpoints that MSAL-based clients use for a custom authority: the OpenID
//! configuration, the JWKS, and the token endpoint for the client-credentials grant with a
//! client secret or a certificate-signed client assertion. Interactive, device-code,
//! password, refresh-token and on-behalf-of sign-in are refused with an error that says so.
//!
//! App registrations are made by the emulator-only admin call `PUT
//! /emulator/entra/applications/{name}` ([`apps`]). Tokens are RS256 JWTs with Entra's claims,
//! signed by one RSA key made once per data folder (`entra_signing_key.pem`, 0600) that
//! survives restarts; the API checks them in [`bearer`]. Like Entra, the authority issues a
//! token for any resource's `.default` scope: a token for another audience gets this far and
//! is refused by the API.
//!
//! The requests its token endpoint receives are counted per client id ([`Authority::counts`],
//! shown by `GET /emulator/entra/applications/{name}`), so a test can prove how often a
//! client asked for a token without trusting the client.

pub mod apps;
pub mod bearer;
pub mod token;

use super::store::{self, Store};
use super::EmulatorError;
use crate::cert::{Authority as CertAuthority, CaOptions, KeyType, PrivateKey};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use sha1::Digest;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

/// File name of the authority's signing key in the data folder (PKCS#8 PEM, mode 0600).
pub const SIGNING_KEY_FILE: &str = "entra_signing_key.pem";
/// File name of the signing key's self-signed certificate (published in the JWKS as `x5c`).
pub const SIGNING_CERT_FILE: &str = "entra_signing_cert.pem";
/// The resource of IoT Central tokens: the audience the API accepts.
pub const IOT_CENTRAL_RESOURCE: &str = "https://apps.azureiotcentral.com";

const TENANT_META_KEY: &str = "entraTenantId";

/// Token-endpoint counters of one client id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Requests that named this client id, whatever the outcome.
    pub token_requests: u64,
    /// Tokens issued.
    pub tokens_issued: u64,
}

/// The authority of one emulator: its tenant, its signing key and its counters.
pub struct Authority {
    tenant_id: String,
    authority_host: String,
    kid: String,
    encoding: jsonwebtoken::EncodingKey,
    decoding: jsonwebtoken::DecodingKey,
    jwks: serde_json::Value,
    counts: Mutex<HashMap<String, Counts>>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("tenant_id", &self.tenant_id)
            .field("authority_host", &self.authority_host)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> EmulatorError {
    EmulatorError::Tls(format!("Entra authority: {what}: {e}"))
}

impl Authority {
    /// Loads the tenant id and the signing key of `data_dir` (making them on first start)
    /// for an authority served at `authority_host` (`https://host:port`).
    pub fn load_or_create(
        data_dir: &Path,
        store: &Store,
        authority_host: &str,
    ) -> Result<Authority, EmulatorError> {
        let tenant_id = store
            .write(|c| match store::meta_get(c, TENANT_META_KEY)? {
                Some(t) => Ok(t),
                None => {
                    let t = uuid::Uuid::new_v4().to_string();
                    store::meta_set(c, TENANT_META_KEY, &t)?;
                    Ok(t)
                }
            })
            .map_err(|e| EmulatorError::Store(e.message))?;
        let (key, cert_der) = signing_key(data_dir)?;
        let key_pem = key.pkcs8_pem();
        let encoding = jsonwebtoken::EncodingKey::from_rsa_pem(key_pem.expose().as_bytes())
            .map_err(|e| tls_err("signing key", e))?;
        let (n, e) = rsa_components(&cert_der).map_err(|e| tls_err("signing certificate", e))?;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let kid = b64.encode(sha1::Sha1::digest(&cert_der));
        let decoding = jsonwebtoken::DecodingKey::from_rsa_raw_components(&n, &e);
        let issuer = issuer(authority_host, &tenant_id);
        let jwks = serde_json::json!({"keys": [{
            "kty": "RSA",
            "use": "sig",
            "kid": kid,
            "x5t": kid,
            "n": b64.encode(&n),
            "e": b64.encode(&e),
            "x5c": [base64::engine::general_purpose::STANDARD.encode(&cert_der)],
            "issuer": issuer,
        }]});
        Ok(Authority {
            tenant_id,
            authority_host: authority_host.trim_end_matches('/').to_owned(),
            kid,
            encoding,
            decoding,
            jwks,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// The tenant (directory) id.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// The authority host (`https://host:port`), what `AZURE_AUTHORITY_HOST` is set to.
    pub fn authority_host(&self) -> &str {
        &self.authority_host
    }

    /// The issuer of its tokens, `{authorityHost}/{tenantId}/v2.0`.
    pub fn issuer(&self) -> String {
        issuer(&self.authority_host, &self.tenant_id)
    }

    /// The token endpoint, also the audience client assertions must name.
    pub fn token_endpoint(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.authority_host, self.tenant_id
        )
    }

    /// The `kid` of the signing key (the base64url SHA-1 of its certificate, as Entra's).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The counters of `client_id`.
    pub fn counts(&self, client_id: &str) -> Counts {
        self.lock_counts()
            .get(&client_id.to_ascii_lowercase())
            .copied()
            .unwrap_or_default()
    }

    fn lock_counts(&self) -> std::sync::MutexGuard<'_, HashMap<String, Counts>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, client_id: &str, issued: bool) {
        let mut counts = self.lock_counts();
        let c = counts.entry(client_id.to_ascii_lowercase()).or_default();
        if issued {
            c.tokens_issued += 1;
        } else {
            c.token_requests += 1;
        }
    }
}

fn issuer(authority_host: &str, tenant_id: &str) -> String {
    format!("{}/{tenant_id}/v2.0", authority_host.trim_end_matches('/'))
}

/// The signing key and its certificate (DER), made once per data folder.
fn signing_key(dir: &Path) -> Result<(PrivateKey, Vec<u8>), EmulatorError> {
    let key_path = dir.join(SIGNING_KEY_FILE);
    let cert_path = dir.join(SIGNING_CERT_FILE);
    if key_path.exists() && cert_path.exists() {
        let (cert_pem, key_pem) = super::tls::read_kept_pair(&cert_path, &key_path)?;
        let (key, _) =
            PrivateKey::from_pem(&key_pem, None).map_err(|e| tls_err(SIGNING_KEY_FILE, e))?;
        let certs = crate::cert::parse_pem_certs(cert_pem.as_bytes())
            .map_err(|e| tls_err(SIGNING_CERT_FILE, e))?;
        let cert = certs
            .into_iter()
            .next()
            .ok_or_else(|| tls_err(SIGNING_CERT_FILE, "no certificate"))?;
        return Ok((key, cert));
    }
    // The key signs tokens, not certificates; a self-signed certificate carries it in the
    // JWKS (`x5c`, `x5t`) as Entra's keys are published.
    let ca = CertAuthority::new_root(&CaOptions {
        cn: Some("iotc emulator Entra token signing".into()),
        key_type: KeyType::Rsa2048,
        path_len: Some(0),
        ..CaOptions::default()
    })
    .map_err(|e| tls_err("signing key", e))?;
    let key = ca
        .issued()
        .key
        .clone()
        .ok_or_else(|| tls_err("signing key", "no private key"))?;
    super::tls::write_private(&key_path, key.pkcs8_pem().expose().as_bytes())?;
    std::fs::write(&cert_path, ca.cert_pem())
        .map_err(|e| EmulatorError::Io(format!("write {}", cert_path.display()), e))?;
    Ok((key, ca.cert_der().to_vec()))
}

/// The RSA modulus and exponent (big-endian bytes) of a certificate's key.
pub(crate) fn rsa_components(cert_der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    use x509_parser::prelude::FromDer;
    use x509_parser::public_key::PublicKey;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    match cert.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let trim = |b: &[u8]| {
                let i = b.iter().position(|x| *x != 0).unwrap_or(b.len());
                b[i..].to_vec()
            };
            Ok((trim(rsa.modulus), trim(rsa.exponent)))
        }
        Ok(_) => Err("its key is not RSA (Entra accepts only RSA certificates)".into()),
        Err(e) => Err(format!("its public key does not parse: {e}")),
    }
}

/// The authority's routes (outside `/api`: no API token, no rate limit, no faults).
pub fn routes() -> Router<super::api::AppState> {
    Router::new()
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(token::openid_configuration),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(token::jwks))
        .route("/{tenant}/oauth2/v2.0/token", post(token::token))
        .route(
            "/{tenant}/oauth2/v2.0/authorize",
            get(token::interactive).post(token::interactive),
        )
        .route("/{tenant}/oauth2/v2.0/devicecode", post(token::interactive))
        .route("/{tenant}/oauth2/token", post(token::v1_endpoint))
        .route(
            "/emulator/entra/applications/{name}",
            get(apps::get_app).put(apps::put_app),
        )
}
