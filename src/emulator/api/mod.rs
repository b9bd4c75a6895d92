//! The IoT Central routes of the emulator and the request pipeline around them.
//!
//! Every `/api/...` request goes through one middleware in this order: request id, fault
//! injection (latency, dropped connection, 503, 429 bursts), the rate limit (429 +
//! Retry-After), the `api-version` check, and authentication (401). Handlers then check
//! authorization per resource (403), parse input themselves (so malformed JSON, ids and
//! queries are 400s with a message, never a framework default), and call the resource logic
//! in the sibling modules, which runs in one store transaction. The stored resources share
//! one generic set of handlers (`resource.rs`); each is a declaration in its area's file.
//! On the way out the middleware writes the service's error body and `x-ms-error-code` for
//! any failure.

mod devices;
mod directory;
mod enrollment;
mod groups;
mod paging;
mod resource;

pub(crate) use paging::{list_params, page_of, ListOptions, ListParams, PageBuilder};
pub use paging::{GA_PAGE_SIZE, MAX_PAGE_SIZE, PREVIEW_PAGE_SIZE};

use super::app::AppFacts;
use super::auth::{self, Principal};
use super::error::{rfc1123, ApiError, ApiResult};
use super::settings::{Fault, SettingsHandle};
use super::store::Store;
use super::tls::DropConnection;
use crate::central::models::{ErrorResponse, API_VERSION, API_VERSION_PREVIEW};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;

/// Everything the handlers share.
#[derive(Debug)]
pub struct Shared {
    /// The database.
    pub store: Arc<Store>,
    /// Behaviour settings.
    pub settings: Arc<SettingsHandle>,
    /// Base URL of the API listener (for `nextLink`).
    pub api_url: String,
    /// Application facts.
    pub facts: AppFacts,
    /// The Entra authority (its routes, and the bearer tokens of API callers).
    pub entra: Arc<super::entra::Authority>,
    /// Successful calls per method and path (see [`Emulator::successes`](super::Emulator::successes)).
    pub tally: Tally,
}

/// Counts the calls that succeeded (2xx) per method and path: what a test of exactly-once
/// needs, since a set of the ids that were changed cannot show a change made twice.
#[derive(Debug, Default)]
pub struct Tally(std::sync::Mutex<std::collections::HashMap<(String, String), u64>>);

impl Tally {
    fn add(&self, method: &str, path: &str) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((method.to_owned(), path.to_owned())).or_default() += 1;
    }

    /// How many `method` calls of `path` succeeded.
    pub fn get(&self, method: &str, path: &str) -> u64 {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&(method.to_owned(), path.to_owned()))
            .copied()
            .unwrap_or(0)
    }
}

/// The handlers' state.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// Wraps the shared state.
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The api-version of the IoT Central API: each behaves as its own spec says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    /// `2022-06-30-preview`: the GA shapes, with OData `$filter`, `$orderby`, `$top` on
    /// some lists (what the Azure CLI's IoT extension sends).
    Preview0630,
    /// `2022-07-31` (GA).
    Ga,
    /// `2022-10-31-preview`: `filter`, `orderby`, `maxpagesize`, device `type`, group
    /// `idScope`.
    Preview1031,
}

/// `2022-06-30-preview`.
pub const API_VERSION_PREVIEW_0630: &str = "2022-06-30-preview";

impl ApiVersion {
    /// Every version the emulator serves, oldest first.
    pub const ALL: [ApiVersion; 3] = [
        ApiVersion::Preview0630,
        ApiVersion::Ga,
        ApiVersion::Preview1031,
    ];

    /// Its `api-version` text.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::Preview0630 => API_VERSION_PREVIEW_0630,
            ApiVersion::Ga => API_VERSION,
            ApiVersion::Preview1031 => API_VERSION_PREVIEW,
        }
    }

    fn parse(s: &str) -> Option<ApiVersion> {
        ApiVersion::ALL.into_iter().find(|v| v.as_str() == s)
    }

    fn supported() -> String {
        ApiVersion::ALL.map(ApiVersion::as_str).join(", ")
    }
}

/// Per-request facts the middleware found: the api-version and the query string pairs.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The request's api-version.
    pub version: ApiVersion,
    /// Whether it is 2022-10-31-preview (the version with device `type` and group `idScope`).
    pub preview: bool,
    /// The decoded query parameters.
    pub query: Vec<(String, String)>,
    /// The path (for `nextLink`).
    pub path: String,
}

impl Ctx {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The router of the API listener. The stored resources are declarations (see
/// `api/resource.rs`); what is not one of them (built-in roles, sub-resources, actions) is
/// routed by hand.
pub fn router(state: AppState) -> Router {
    let stored = [
        resource::crud::<directory::Organizations>,
        resource::crud::<directory::Users>,
        resource::read_delete::<directory::ApiTokens>,
        resource::crud::<devices::Devices>,
        resource::crud::<groups::DeviceGroups>,
        resource::crud::<groups::DeviceTemplates>,
        resource::crud::<enrollment::EnrollmentGroups>,
    ];
    let stored = stored
        .into_iter()
        .fold(Router::new(), |router, mount| mount(router));
    stored
        // Tokens are made once and never changed: PUT is their own, PATCH is 405.
        .route("/api/apiTokens/{id}", put(directory::put_token))
        .route("/api/roles", get(directory::list_roles))
        .route("/api/roles/{id}", get(directory::get_role))
        .route("/api/devices/{id}/credentials", get(devices::credentials))
        .route(
            "/api/devices/{id}/attestation",
            get(devices::get_attestation)
                .put(devices::put_attestation)
                .patch(devices::patch_attestation)
                .delete(devices::delete_attestation),
        )
        .route("/api/deviceGroups/{id}/devices", get(groups::devices))
        .route(
            "/api/enrollmentGroups/{id}/certificates/{entry}",
            get(enrollment::get_cert)
                .put(enrollment::put_cert)
                .delete(enrollment::delete_cert),
        )
        .route(
            "/api/enrollmentGroups/{id}/certificates/{entry}/generateVerificationCode",
            post(enrollment::generate_code),
        )
        .route(
            "/api/enrollmentGroups/{id}/certificates/{entry}/verify",
            post(enrollment::verify),
        )
        .route("/emulator/settings", get(get_settings).put(put_settings))
        .route("/emulator/stats", get(super::stats::get_stats))
        .merge(super::entra::routes())
        .fallback(fallback)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            pipeline,
        ))
        .with_state(state)
}

/// The top-level resources of the official spec (GA and preview): paths under them that the
/// emulator does not route are "not supported", anything else is "not found".
const SPEC_RESOURCES: &[&str] = &[
    "apiTokens",
    "dashboards",
    "dataExport",
    "deploymentManifests",
    "deviceGroups",
    "deviceTemplates",
    "devices",
    "enrollmentGroups",
    "fileUploads",
    "jobs",
    "organizations",
    "query",
    "roles",
    "scheduledJobs",
    "users",
];

async fn fallback(req: Request) -> ApiError {
    let path = req.uri().path();
    let first = path
        .strip_prefix("/api/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default();
    if SPEC_RESOURCES.contains(&first) {
        ApiError::not_supported(format!("{} {}", req.method(), path))
    } else if path.starts_with("/api") {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no IoT Central resource at {path:?}"),
        )
    } else {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no such path {path:?}; the IoT Central API lives under /api"),
        )
    }
}

async fn pipeline(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let path = req.uri().path().to_owned();
    let resp = if path.starts_with("/api/") || path == "/api" {
        match admit(&st, &mut req, true).await {
            Ok(()) => {
                let method = req.method().as_str().to_owned();
                let resp = next.run(req).await;
                if resp.status().is_success() {
                    st.tally.add(&method, &path);
                }
                resp
            }
            Err(Admission::Drop) => {
                let mut r = StatusCode::SERVICE_UNAVAILABLE.into_response();
                r.extensions_mut().insert(DropConnection);
                return r;
            }
            Err(Admission::Refuse(e)) => e.into_response(),
        }
    } else if path.starts_with("/emulator/") {
        match admit(&st, &mut req, false).await {
            Ok(()) => next.run(req).await,
            Err(Admission::Refuse(e)) => e.into_response(),
            Err(Admission::Drop) => ApiError::internal("unexpected drop").into_response(),
        }
    } else {
        next.run(req).await
    };
    finish(resp, &request_id)
}

enum Admission {
    Drop,
    Refuse(ApiError),
}

impl From<ApiError> for Admission {
    fn from(e: ApiError) -> Self {
        Admission::Refuse(e)
    }
}

async fn admit(st: &AppState, req: &mut Request, api: bool) -> Result<(), Admission> {
    if api {
        let latency = st.settings.latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let fault = st.settings.draw_fault();
        super::stats::fault(&st.store, "api", fault);
        match fault {
            Fault::None => {}
            Fault::Drop => return Err(Admission::Drop),
            Fault::ServerError => {
                let mut e = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "the service is temporarily unavailable (injected fault)",
                );
                e.retry_after = Some(1);
                return Err(e.into());
            }
            Fault::Throttle => {
                return Err(
                    ApiError::throttled(1, "too many requests (injected throttling)").into(),
                )
            }
        }
        if let Err(wait) = st.settings.take_token() {
            super::stats::record(&st.store, super::stats::counter::RATE_LIMITED, "api");
            return Err(ApiError::throttled(
                wait,
                "the application's request rate limit was exceeded; retry after the Retry-After delay",
            )
            .into());
        }
    }
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let version = if api {
        let versions: Vec<&str> = query
            .iter()
            .filter(|(k, _)| k == "api-version")
            .map(|(_, v)| v.as_str())
            .collect();
        match versions.as_slice() {
            [] => {
                return Err(ApiError::bad_request(
                    "MissingApiVersionParameter",
                    format!(
                        "the api-version query parameter is required (supported: {})",
                        ApiVersion::supported()
                    ),
                )
                .into())
            }
            [v] => ApiVersion::parse(v).ok_or_else(|| {
                ApiError::bad_request(
                    "InvalidApiVersionParameter",
                    format!(
                        "api-version {v:?} is not supported (supported: {})",
                        ApiVersion::supported()
                    ),
                )
            })?,
            _ => {
                return Err(ApiError::bad_request(
                    "InvalidApiVersionParameter",
                    "api-version is given more than once",
                )
                .into())
            }
        }
    } else {
        ApiVersion::Ga
    };
    let header =
        match req.headers().get(http::header::AUTHORIZATION) {
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| {
                ApiError::unauthorized("the Authorization header is not valid text")
            })?),
        };
    let app_id = st.facts.app_id.clone();
    let principal = st
        .store
        .read(|c| auth::authenticate(c, &app_id, &st.entra, header))?;
    let ctx = Ctx {
        version,
        preview: version == ApiVersion::Preview1031,
        query,
        path: req.uri().path().to_owned(),
    };
    req.extensions_mut().insert(principal);
    req.extensions_mut().insert(ctx);
    Ok(())
}

fn finish(mut resp: Response, request_id: &str) -> Response {
    let status = resp.status();
    let authority = resp
        .extensions()
        .get::<super::entra::token::AuthorityResponse>()
        .is_some();
    if !(status.is_client_error() || status.is_server_error()) || authority {
        return resp;
    }
    let err = resp
        .extensions_mut()
        .remove::<ApiError>()
        .unwrap_or_else(|| {
            let (code, message) = match status {
                StatusCode::METHOD_NOT_ALLOWED => (
                    "MethodNotAllowed",
                    "this method is not defined for this path".to_owned(),
                ),
                StatusCode::PAYLOAD_TOO_LARGE => (
                    "RequestTooLarge",
                    "the request body is too large".to_owned(),
                ),
                s => (
                    "BadRequest",
                    format!("the request was refused ({})", s.as_u16()),
                ),
            };
            ApiError::new(status, code, message)
        });
    let mut details = err.details();
    details.request_id = Some(request_id.to_owned());
    details.time = Some(rfc1123(time::OffsetDateTime::now_utc()));
    let body = ErrorResponse { error: details };
    let mut out = (status, Json(body)).into_response();
    for (k, v) in resp.headers() {
        if k == http::header::RETRY_AFTER || k == http::header::WWW_AUTHENTICATE {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    if let Ok(v) = http::HeaderValue::from_str(&err.code) {
        out.headers_mut().insert("x-ms-error-code", v);
    }
    if let Ok(v) = http::HeaderValue::from_str(request_id) {
        out.headers_mut().insert("x-ms-request-id", v);
    }
    out
}

async fn get_settings(
    State(st): State<AppState>,
    axum::Extension(p): axum::Extension<Principal>,
) -> ApiResult<Json<super::settings::Settings>> {
    require_admin(&p)?;
    Ok(Json(st.settings.get()))
}

async fn put_settings(
    State(st): State<AppState>,
    axum::Extension(p): axum::Extension<Principal>,
    body: Bytes,
) -> ApiResult<Json<super::settings::Settings>> {
    require_admin(&p)?;
    let patch: serde_json::Value = json_body(&body)?;
    let s = st.settings.merge(&patch).map_err(ApiError::invalid_body)?;
    Ok(Json(s))
}

/// Refuses a caller without an application-wide Administrator role (the `/emulator/` calls).
pub(crate) fn require_admin(p: &Principal) -> ApiResult<()> {
    if p.grants
        .iter()
        .any(|g| g.role == crate::central::models::roles::ADMINISTRATOR && g.reach.is_none())
    {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "the emulator's own calls (/emulator/...) need an application-wide Administrator token",
        ))
    }
}

/// Parses a JSON body; empty or malformed bodies are 400 `InvalidBody` with serde's message.
pub(crate) fn json_body<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::invalid_body("the request needs a JSON body"));
    }
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid_body(format!("the request body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::invalid_body(
            "the request body must be a JSON object",
        ));
    }
    serde_json::from_value(v)
        .map_err(|e| ApiError::invalid_body(format!("the request body is not valid: {e}")))
}

/// Parses a JSON merge-patch body (an object).
pub(crate) fn patch_body(body: &Bytes) -> ApiResult<serde_json::Value> {
    let v: serde_json::Value = json_body(body)?;
    if !v.is_object() {
        return Err(ApiError::invalid_body(
            "a PATCH body is a JSON merge patch: a JSON object",
        ));
    }
    Ok(v)
}

/// RFC 7396 JSON merge patch.
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match patch {
        serde_json::Value::Object(p) => {
            if !target.is_object() {
                *target = serde_json::Value::Object(serde_json::Map::new());
            }
            if let serde_json::Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Applies a merge patch to a wire value and reads the result back as `T`.
pub(crate) fn apply_patch<T: Serialize + DeserializeOwned>(
    current: &T,
    patch: &serde_json::Value,
) -> ApiResult<T> {
    let mut v = serde_json::to_value(current)?;
    merge_patch(&mut v, patch);
    serde_json::from_value(v)
        .map_err(|e| ApiError::invalid_body(format!("the patched resource is not valid: {e}")))
}

/// Checks a client's etag (body field or `If-Match`) against the current one.
pub(crate) fn check_etag(
    given: Option<&str>,
    if_match: Option<&str>,
    current: Option<&str>,
    kind: &str,
    id: &str,
) -> ApiResult<()> {
    let norm = |s: &str| {
        s.trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_owned()
    };
    for g in [given, if_match].into_iter().flatten() {
        if g.trim() == "*" {
            continue;
        }
        if current.map(norm) != Some(norm(g)) {
            return Err(ApiError::stale_etag(kind, id));
        }
    }
    Ok(())
}

/// The `If-Match` header, if any.
pub(crate) fn if_match(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get(http::header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// 200 with a JSON body.
pub(crate) fn ok<T: Serialize>(v: T) -> Response {
    (StatusCode::OK, Json(v)).into_response()
}

/// 204 without a body.
pub(crate) fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// Refuses query parameters on operations that take none but api-version.
pub(crate) fn no_params(ctx: &Ctx) -> ApiResult<()> {
    for (k, _) in &ctx.query {
        if k != "api-version" {
            return Err(ApiError::bad_request(
                "InvalidQueryParameter",
                format!("query parameter {k:?} is not supported by this operation"),
            ));
        }
    }
    Ok(())
}

/// Validates an id with one of the `crate::ids` newtypes, as a 400 `InvalidId`.
pub(crate) fn valid_id<T>(r: Result<T, crate::ids::InvalidId>) -> ApiResult<T> {
    r.map_err(|e| ApiError::bad_request("InvalidId", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc7396() {
        let mut t = serde_json::json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(
            &mut t,
            &serde_json::json!({"a": "z", "c": {"f": null}, "n": [1]}),
        );
        assert_eq!(t, serde_json::json!({"a": "z", "c": {"d": "e"}, "n": [1]}));
    }

    #[test]
    fn etag_comparison() {
        assert!(check_etag(Some("abc"), None, Some("abc"), "device", "d").is_ok());
        assert!(check_etag(None, Some("\"abc\""), Some("abc"), "device", "d").is_ok());
        assert!(check_etag(Some("old"), None, Some("abc"), "device", "d").is_err());
        assert!(check_etag(None, Some("*"), Some("abc"), "device", "d").is_ok());
    }
}
