//! The authority's endpoints: OpenID configuration, JWKS, and the token endpoint.
//!
//! The token endpoint takes what Entra takes for the client-credentials grant (a form with
//! `grant_type`, `client_id`, `scope` and either `client_secret` or a `client_assertion`)
//! and refuses the way Entra does: the OAuth error (`invalid_client`, `invalid_scope`, …),
//! an `AADSTS…` description and `error_codes`, with the status Entra uses (401 for a bad
//! client credential, 400 otherwise), which the Azure SDKs turn into their error messages.
//! Client assertions are checked fully: the thumbprint names a registered certificate
//! (`x5t` with RS256, `x5t#S256` with PS256), the signature verifies against it (jsonwebtoken
//! on aws-lc-rs), and jsonwebtoken's claim checks: `aud` is this token endpoint, `iss` = `sub`
//! = the client id, and the time claims (integers or, as MSAL sends them, floats) hold now
//! within five minutes of skew.

use super::apps::{by_client_id, sha256_hex, AppRecord};
use super::Authority;
use crate::emulator::api::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

/// Marks a response of the authority: the API's error formatting leaves it as it is.
#[derive(Debug, Clone, Copy)]
pub struct AuthorityResponse;

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Seconds of clock skew allowed on a client assertion's time claims.
const ASSERTION_SKEW: u64 = 300;

fn answer(status: StatusCode, body: Value) -> Response {
    let mut r = (status, Json(body)).into_response();
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store, no-cache"),
    );
    r.extensions_mut().insert(AuthorityResponse);
    r
}

/// An Entra error: the OAuth error, the AADSTS code and its description.
struct EntraError {
    status: StatusCode,
    error: &'static str,
    code: u32,
    description: String,
}

fn fail(
    status: StatusCode,
    error: &'static str,
    code: u32,
    description: impl Into<String>,
) -> EntraError {
    EntraError {
        status,
        error,
        code,
        description: description.into(),
    }
}

impl IntoResponse for EntraError {
    fn into_response(self) -> Response {
        let trace = uuid::Uuid::new_v4().to_string();
        let now = time::OffsetDateTime::now_utc();
        let timestamp = now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        answer(
            self.status,
            json!({
                "error": self.error,
                "error_description": format!(
                    "AADSTS{}: {} Trace ID: {trace} Correlation ID: {trace} Timestamp: {timestamp}",
                    self.code, self.description
                ),
                "error_codes": [self.code],
                "timestamp": timestamp,
                "trace_id": trace,
                "correlation_id": trace,
            }),
        )
    }
}

fn check_tenant(a: &Authority, tenant: &str) -> Result<(), EntraError> {
    if tenant.eq_ignore_ascii_case(a.tenant_id()) {
        Ok(())
    } else {
        Err(fail(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant}' not found. The emulator's authority has one tenant, {} \
                 (tenantId in emulator.json).",
                a.tenant_id()
            ),
        ))
    }
}

pub(super) async fn openid_configuration(
    State(st): State<AppState>,
    Path(tenant): Path<String>,
) -> Response {
    let a = &st.entra;
    if let Err(e) = check_tenant(a, &tenant) {
        return e.into_response();
    }
    let base = format!("{}/{}", a.authority_host(), a.tenant_id());
    answer(
        StatusCode::OK,
        json!({
            "issuer": a.issuer(),
            "token_endpoint": a.token_endpoint(),
            "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
            "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
            "jwks_uri": format!("{base}/discovery/v2.0/keys"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
            "grant_types_supported": ["client_credentials"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid"],
            "claims_supported": ["aud", "iss", "iat", "nbf", "exp", "tid", "oid", "sub", "appid", "azp", "groups", "ver"],
            "tenant_region_scope": null,
            "cloud_instance_name": "iotc-emulator",
        }),
    )
}

pub(super) async fn jwks(State(st): State<AppState>, Path(tenant): Path<String>) -> Response {
    match check_tenant(&st.entra, &tenant) {
        Ok(()) => answer(StatusCode::OK, st.entra.jwks.clone()),
        Err(e) => e.into_response(),
    }
}

/// Interactive and device-code sign-in: refused, loudly.
pub(super) async fn interactive() -> Response {
    fail(
        StatusCode::BAD_REQUEST,
        "unsupported_grant_type",
        70003,
        "The emulator's Entra authority supports only the client-credentials grant (client \
         secret or certificate); interactive, device-code and authorization-code sign-in are \
         not supported.",
    )
    .into_response()
}

/// The v1 token endpoint: refused, naming the v2.0 one.
pub(super) async fn v1_endpoint() -> Response {
    fail(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        900144,
        "The emulator's Entra authority serves only the v2.0 endpoints: POST \
         /{tenant}/oauth2/v2.0/token with a scope ending in /.default.",
    )
    .into_response()
}

pub(super) async fn token(
    State(st): State<AppState>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    match issue(&st, &tenant, &body) {
        Ok(v) => answer(StatusCode::OK, v),
        Err(e) => e.into_response(),
    }
}

fn issue(st: &AppState, tenant: &str, body: &[u8]) -> Result<Value, EntraError> {
    let a = &st.entra;
    check_tenant(a, tenant)?;
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let field = |name: &str| -> Result<Option<&str>, EntraError> {
        let mut values = form
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                format!("The request body has '{name}' more than once."),
            ));
        }
        Ok(first)
    };
    let required = |name: &str| -> Result<&str, EntraError> {
        field(name)?.filter(|v| !v.is_empty()).ok_or_else(|| {
            fail(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                format!("The request body must contain the following parameter: '{name}'."),
            )
        })
    };
    let grant = required("grant_type")?;
    let client_id = required("client_id")?;
    a.count(client_id, false);
    if grant != "client_credentials" {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            format!(
                "The grant type '{grant}' is not supported by the emulator's Entra authority; \
                 it supports only client_credentials (no interactive, device-code, password, \
                 refresh-token or on-behalf-of sign-in)."
            ),
        ));
    }
    let app: AppRecord = st
        .store
        .read(|c| by_client_id(c, client_id))
        .map_err(|e| {
            fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                50000,
                e.message,
            )
        })?
        .ok_or_else(|| {
            fail(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700016,
                format!(
                    "Application with identifier '{client_id}' was not found in the directory \
                     '{}'.",
                    a.tenant_id()
                ),
            )
        })?;
    let scope = required("scope")?;
    let resource = match scope.split_whitespace().collect::<Vec<_>>().as_slice() {
        [one] if one.ends_with("/.default") && one.len() > "/.default".len() => {
            one.trim_end_matches("/.default").to_owned()
        }
        _ => {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                1002012,
                format!(
                    "The provided value for scope {scope} is not valid. Client credential flows \
                     must have a scope value with /.default suffixed to the resource identifier \
                     (application ID URI)."
                ),
            ))
        }
    };
    let acr = match (field("client_secret")?, field("client_assertion")?) {
        (Some(_), Some(_)) => {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "Only one client credential may be given: client_secret or client_assertion.",
            ))
        }
        (None, None) => {
            return Err(fail(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' \
                 or 'client_secret'.",
            ))
        }
        (Some(secret), None) => {
            let same: bool = sha256_hex(secret.as_bytes())
                .as_bytes()
                .ct_eq(app.secret_sha256.as_bytes())
                .into();
            if !same {
                return Err(fail(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    7000215,
                    format!(
                        "Invalid client secret provided. Ensure the secret being sent in the \
                         request is the client secret value, not the client secret ID, for a \
                         secret added to app '{}'.",
                        app.client_id
                    ),
                ));
            }
            "1"
        }
        (None, Some(assertion)) => {
            if field("client_assertion_type")? != Some(ASSERTION_TYPE) {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    900144,
                    format!("client_assertion_type must be '{ASSERTION_TYPE}'."),
                ));
            }
            check_assertion(a, &app, assertion)?;
            "2"
        }
    };
    let token = a
        .sign(&app, &resource, acr)
        .map_err(|e| fail(StatusCode::INTERNAL_SERVER_ERROR, "server_error", 50000, e))?;
    a.count(client_id, true);
    Ok(json!({
        "token_type": "Bearer",
        "expires_in": app.token_lifetime_seconds,
        "ext_expires_in": app.token_lifetime_seconds,
        "access_token": token,
    }))
}

fn bad_assertion(code: u32, description: impl Into<String>) -> EntraError {
    fail(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        code,
        description,
    )
}

fn check_assertion(a: &Authority, app: &AppRecord, assertion: &str) -> Result<(), EntraError> {
    use jsonwebtoken::Algorithm;
    let header = jsonwebtoken::decode_header(assertion).map_err(|e| {
        bad_assertion(
            50027,
            format!("The client assertion is not a valid JWT: {e}."),
        )
    })?;
    let thumbprint = match header.alg {
        Algorithm::RS256 => header.x5t.clone().map(|t| (t, false)),
        Algorithm::PS256 => header.x5t_s256.clone().map(|t| (t, true)),
        other => {
            return Err(bad_assertion(
                5002738,
                format!("The client assertion is signed with {other:?}; Entra accepts RS256 (with x5t) or PS256 (with x5t#S256)."),
            ))
        }
    };
    let (thumbprint, sha256) = thumbprint.ok_or_else(|| {
        bad_assertion(
            700027,
            "Client assertion contains an invalid signature. [Reason - The key was not found.: \
             the header names no certificate thumbprint (x5t for RS256, x5t#S256 for PS256)]",
        )
    })?;
    let cert = app
        .certificates
        .iter()
        .find(|c| {
            if sha256 {
                c.x5t_s256 == thumbprint
            } else {
                c.x5t == thumbprint
            }
        })
        .ok_or_else(|| {
            bad_assertion(
                700027,
                format!(
                    "Client assertion contains an invalid signature. [Reason - The key was not \
                     found., Thumbprint of key used by client: '{thumbprint}']"
                ),
            )
        })?;
    let key = jsonwebtoken::DecodingKey::from_rsa_components(&cert.n, &cert.e).map_err(|e| {
        bad_assertion(
            700027,
            format!("The registered certificate is unusable: {e}"),
        )
    })?;
    // jsonwebtoken checks the claims too: times (integers or, as MSAL sends them, floats)
    // within the skew, the audience, and the issuer and subject, both the client id.
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.leeway = ASSERTION_SKEW;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    validation.set_audience(&[a.token_endpoint()]);
    validation.set_issuer(&[&app.client_id]);
    validation.sub = Some(app.client_id.clone());
    jsonwebtoken::decode::<Value>(assertion, &key, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => bad_assertion(
                700024,
                format!("Client assertion is not within its valid time range ({e})."),
            ),
            ErrorKind::InvalidAudience => bad_assertion(
                700212,
                format!(
                    "The client assertion's audience claim does not match the token endpoint '{}'.",
                    a.token_endpoint()
                ),
            ),
            ErrorKind::InvalidIssuer | ErrorKind::InvalidSubject => bad_assertion(
                700021,
                format!(
                    "The client assertion's iss and sub claims must be the client id '{}'.",
                    app.client_id
                ),
            ),
            ErrorKind::MissingRequiredClaim(c) => {
                bad_assertion(50027, format!("The client assertion has no {c} claim."))
            }
            _ => bad_assertion(
                700027,
                format!("Client assertion contains an invalid signature. [Reason - {e}]"),
            ),
        }
    })?;
    Ok(())
}

impl Authority {
    /// Signs an access token for `app` and `resource`; `acr` is how the client authenticated
    /// ("1" secret, "2" certificate).
    fn sign(&self, app: &AppRecord, resource: &str, acr: &str) -> Result<String, String> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut claims = json!({
            "aud": resource,
            "iss": self.issuer(),
            "iat": now,
            "nbf": now,
            "exp": now + i64::from(app.token_lifetime_seconds),
            "tid": self.tenant_id(),
            "oid": app.object_id,
            "sub": app.object_id,
            "appid": app.client_id,
            "azp": app.client_id,
            "appidacr": acr,
            "azpacr": acr,
            "idtyp": "app",
            "ver": "2.0",
            "uti": uuid::Uuid::new_v4().simple().to_string(),
        });
        if !app.groups.is_empty() {
            claims["groups"] = json!(app.groups);
        }
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(self.kid().to_owned());
        jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(|e| e.to_string())
    }
}
