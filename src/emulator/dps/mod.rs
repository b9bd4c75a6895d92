//! The emulator's Device Provisioning Service: the device runtime API of
//! `shared/spec/dps-device-2021-10-01.json` on its own HTTPS listener.
//!
//! Registration is where onboarding fails in the field, so this listener accepts what DPS
//! accepts and refuses what it refuses, each refusal with its own message:
//! - `PUT /{idScope}/registrations/{registrationId}/register` authenticates the device
//!   ([`attest`]: X.509 chain to a verified group CA with CN = registration id, or a SAS
//!   token), assigns it (the device exists in IoT Central, provisioned) and answers 202
//!   `assigning` with an `operationId` and `Retry-After`;
//! - `GET .../operations/{operationId}` answers `assigning` for `dpsAssigningPolls` polls,
//!   then `assigned` with the registration state (or `disabled` for a disabled enrollment or a
//!   blocked device);
//! - `POST /{idScope}/registrations/{registrationId}` looks the registration state up.
//!
//! api-versions 2019-03-31, 2021-06-01 and 2021-10-01 are accepted. Errors use DPS's body
//! (`ProvisioningServiceErrorDetails`) and the `x-ms-error-code` header. Fault injection and
//! added latency come from the shared settings; the IoT Central rate limit does not apply
//! here (DPS has its own quotas, not emulated).

pub mod attest;
pub mod registry;

use super::settings::{Fault, SettingsHandle};
use super::store::Store;
use super::tls::{DropConnection, PeerCertificates};
use crate::dps::wire::{
    error_codes, DeviceRegistration, DeviceRegistrationResult, EnrollmentStatus,
    ProvisioningServiceErrorDetails, RegistrationOperationStatus, SUPPORTED_API_VERSIONS,
};
use attest::{Directory, Refusal};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use registry::{OpResult, Registry};
use std::collections::HashMap;
use std::sync::Arc;

/// What the DPS listener gets from the emulator.
#[derive(Debug, Clone)]
pub struct DpsContext {
    /// The emulator's database (enrollment groups, devices: see `emulator::app`).
    pub store: Arc<Store>,
    /// The shared behaviour settings (rate limit, faults, `dpsAssigningPolls`).
    pub settings: Arc<SettingsHandle>,
    /// The application's ID scope.
    pub id_scope: String,
    /// Base URL of this listener.
    pub dps_endpoint: String,
}

struct Dps {
    ctx: DpsContext,
    facts: super::app::AppFacts,
    registry: Registry,
}

/// Serves DPS on `listener` with the emulator's TLS configuration (client certificates are
/// requested, not required; see [`super::tls::PeerCertificates`]) until `shutdown`.
pub async fn serve(
    ctx: DpsContext,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let facts = match super::app::init(&ctx.store) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("DPS listener cannot read the application facts: {e}");
            return;
        }
    };
    let state = Arc::new(Dps {
        registry: Registry::new(ctx.store.clone()),
        ctx,
        facts,
    });
    super::tls::serve(listener, tls, router(state), shutdown).await;
}

fn router(state: Arc<Dps>) -> axum::Router {
    axum::Router::new()
        .route(
            "/{scope}/registrations/{registration_id}/register",
            axum::routing::put(register),
        )
        .route(
            "/{scope}/registrations/{registration_id}/operations/{operation_id}",
            axum::routing::get(operation),
        )
        .route(
            "/{scope}/registrations/{registration_id}",
            axum::routing::post(status_lookup),
        )
        .fallback(|| async {
            DpsError::new(
                StatusCode::NOT_FOUND,
                error_codes::NOT_FOUND,
                "no such DPS device API path (expected /{idScope}/registrations/{registrationId}/register, \
                 .../operations/{operationId} or POST /{idScope}/registrations/{registrationId})",
            )
        })
        .method_not_allowed_fallback(|| async {
            DpsError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                405_000,
                "method not allowed on this DPS path (register is PUT, the operation poll GET, \
                 the status lookup POST)",
            )
        })
        .with_state(state)
}

/// An error answered in DPS's shape.
#[derive(Debug, Clone)]
struct DpsError {
    status: StatusCode,
    code: i32,
    message: String,
    retry_after: Option<u64>,
}

impl DpsError {
    fn new(status: StatusCode, code: i32, message: impl Into<String>) -> Self {
        DpsError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, error_codes::UNAUTHORIZED, message)
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error_codes::BAD_REQUEST, message)
    }
    fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!("DPS internal error: {cause}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            error_codes::INTERNAL,
            "the emulator failed to process the registration",
        )
    }
}

impl From<Refusal> for DpsError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Unauthorized(m) => DpsError::unauthorized(m),
            Refusal::BadRequest(m) => DpsError::bad_request(m),
        }
    }
}

impl IntoResponse for DpsError {
    fn into_response(self) -> Response {
        let body = ProvisioningServiceErrorDetails {
            error_code: Some(self.code),
            tracking_id: Some(uuid::Uuid::new_v4().to_string()),
            message: Some(self.message),
            info: None,
            timestamp_utc: Some(attest::rfc3339(time::OffsetDateTime::now_utc())),
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Ok(v) = http::HeaderValue::from_str(&self.code.to_string()) {
            resp.headers_mut().insert("x-ms-error-code", v);
        }
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(s));
        }
        resp
    }
}

type DpsResult<T> = Result<T, DpsError>;

/// Fault injection and latency, as on the API listener.
async fn faults(ctx: &DpsContext) -> Option<Response> {
    let latency = ctx.settings.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let fault = ctx.settings.draw_fault();
    super::stats::fault(&ctx.store, "dps", fault);
    match fault {
        Fault::None => None,
        Fault::ServerError => Some(
            DpsError {
                retry_after: Some(1),
                ..DpsError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    503_000,
                    "service unavailable (fault injection)",
                )
            }
            .into_response(),
        ),
        Fault::Throttle => Some(
            DpsError {
                retry_after: Some(1),
                ..DpsError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    error_codes::THROTTLED,
                    "too many requests (fault injection)",
                )
            }
            .into_response(),
        ),
        Fault::Drop => {
            let mut r = StatusCode::INTERNAL_SERVER_ERROR.into_response();
            r.extensions_mut().insert(DropConnection);
            Some(r)
        }
    }
}

fn check_api_version(q: &HashMap<String, String>) -> DpsResult<()> {
    match q.get("api-version") {
        None => Err(DpsError::bad_request(
            "the api-version query parameter is required",
        )),
        Some(v) if SUPPORTED_API_VERSIONS.contains(&v.as_str()) => Ok(()),
        Some(v) => Err(DpsError::bad_request(format!(
            "api-version {v:?} is not supported; use one of {}",
            SUPPORTED_API_VERSIONS.join(", ")
        ))),
    }
}

fn check_scope(dps: &Dps, scope: &str) -> DpsResult<()> {
    if scope.eq_ignore_ascii_case(&dps.ctx.id_scope) {
        Ok(())
    } else {
        Err(DpsError::new(
            StatusCode::NOT_FOUND,
            error_codes::NOT_FOUND,
            format!("ID scope {scope:?} is not this DPS instance's"),
        ))
    }
}

fn check_registration_id(id: &str) -> DpsResult<()> {
    crate::ids::RegistrationId::new(id)
        .map(|_| ())
        .map_err(|e| DpsError::bad_request(e.to_string()))
}

fn parse_body(body: &[u8], registration_id: &str) -> DpsResult<DeviceRegistration> {
    let reg: DeviceRegistration = if body.iter().all(u8::is_ascii_whitespace) {
        DeviceRegistration::default()
    } else {
        serde_json::from_slice(body).map_err(|e| {
            DpsError::bad_request(format!("the body is not a DeviceRegistration: {e}"))
        })?
    };
    if let Some(id) = &reg.registration_id {
        if id != registration_id {
            return Err(DpsError::bad_request(format!(
                "the body's registrationId {id:?} is not the path's {registration_id:?}"
            )));
        }
    }
    if reg.tpm.is_some() {
        return Err(DpsError::new(
            StatusCode::NOT_IMPLEMENTED,
            501_000,
            "TPM attestation is not supported by the emulator",
        ));
    }
    Ok(reg)
}

/// Authenticates the request: SAS when an Authorization header is present, else the TLS
/// client chain.
async fn authenticate(
    dps: &Arc<Dps>,
    headers: &HeaderMap,
    peer: &PeerCertificates,
    registration_id: &str,
) -> DpsResult<attest::Attested> {
    let auth = headers
        .get(http::header::AUTHORIZATION)
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| DpsError::unauthorized("the Authorization header is not text"))
        })
        .transpose()?;
    let chain = peer.0.clone();
    let dps2 = dps.clone();
    let rid = registration_id.to_owned();
    // Chain checks parse and verify signatures: keep them off the async workers.
    tokio::task::spawn_blocking(move || {
        let groups = super::app::enrollment_groups(&dps2.ctx.store).map_err(DpsError::internal)?;
        let device = super::app::device(&dps2.ctx.store, &rid).map_err(DpsError::internal)?;
        let dir = Directory {
            facts: &dps2.facts,
            groups: &groups,
            device: device.as_ref(),
        };
        let now = time::OffsetDateTime::now_utc();
        let r = match auth {
            Some(h) => attest::sas(
                &dir,
                &h,
                &dps2.ctx.id_scope,
                &rid,
                now.unix_timestamp().max(0) as u64,
            ),
            None => attest::x509(&dir, &chain, &rid, now),
        };
        r.map_err(DpsError::from)
    })
    .await
    .map_err(DpsError::internal)?
}

async fn register(
    State(dps): State<Arc<Dps>>,
    Path((scope, registration_id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    peer: Option<axum::Extension<PeerCertificates>>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = faults(&dps.ctx).await {
        return r;
    }
    let peer = peer.map(|p| p.0).unwrap_or_default();
    match register_inner(&dps, &scope, &registration_id, &q, &headers, &peer, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

#[allow(clippy::too_many_arguments)]
async fn register_inner(
    dps: &Arc<Dps>,
    scope: &str,
    registration_id: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    peer: &PeerCertificates,
    body: &[u8],
) -> DpsResult<Response> {
    check_api_version(q)?;
    check_scope(dps, scope)?;
    check_registration_id(registration_id)?;
    let reg = parse_body(body, registration_id)?;
    let who = authenticate(dps, headers, peer, registration_id).await?;
    let op_id = registry::new_operation_id();
    let result = match &who.disabled {
        Some(message) => OpResult::Disabled {
            registration_id: registration_id.to_owned(),
            message: message.clone(),
        },
        None => {
            let template = reg
                .payload
                .as_ref()
                .and_then(|p| p.get("modelId"))
                .and_then(|m| m.as_str())
                .map(str::to_owned);
            let hub = format!("iotc-{}.azure-devices.net", dps.facts.app_id);
            let store = dps.ctx.store.clone();
            let rid = registration_id.to_owned();
            let payload = reg.payload.clone();
            let op = op_id.clone();
            let state = tokio::task::spawn_blocking(move || {
                let device =
                    super::app::provision_device(&store, &rid, template.as_deref(), who.edge)
                        .map_err(|e| DpsError::bad_request(e.message))?;
                registry::record_assignment(&store, &op, &rid, &device, &hub, &who.method, payload)
                    .map_err(DpsError::internal)
            })
            .await
            .map_err(DpsError::internal)??;
            OpResult::Assigned(Box::new(state))
        }
    };
    let polls = dps.ctx.settings.get().dps_assigning_polls;
    dps.registry.start(&op_id, registration_id, polls, result);
    let status = RegistrationOperationStatus::assigning(op_id.clone());
    let mut resp = (StatusCode::ACCEPTED, axum::Json(status)).into_response();
    let location = format!(
        "{}/{}/registrations/{}/operations/{}",
        dps.ctx.dps_endpoint, dps.ctx.id_scope, registration_id, op_id
    );
    if let Ok(v) = http::HeaderValue::from_str(&location) {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    resp.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from(retry_after_seconds(&dps.ctx.settings)),
    );
    Ok(resp)
}

/// Seconds sent in `Retry-After` while a registration is assigning.
fn retry_after_seconds(settings: &SettingsHandle) -> u64 {
    u64::from(settings.get().dps_retry_after_seconds)
}

async fn operation(
    State(dps): State<Arc<Dps>>,
    Path((scope, registration_id, operation_id)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    peer: Option<axum::Extension<PeerCertificates>>,
) -> Response {
    if let Some(r) = faults(&dps.ctx).await {
        return r;
    }
    let peer = peer.map(|p| p.0).unwrap_or_default();
    let r = async {
        check_api_version(&q)?;
        check_scope(&dps, &scope)?;
        check_registration_id(&registration_id)?;
        authenticate(&dps, &headers, &peer, &registration_id).await?;
        let Some(step) = dps.registry.poll(&operation_id, &registration_id) else {
            return Err(DpsError::new(
                StatusCode::NOT_FOUND,
                error_codes::NOT_FOUND,
                format!(
                    "operation {operation_id:?} of registration {registration_id:?} was not found"
                ),
            ));
        };
        let mut resp = match step {
            registry::Poll::Assigning => (
                StatusCode::ACCEPTED,
                axum::Json(RegistrationOperationStatus::assigning(operation_id.clone())),
            )
                .into_response(),
            registry::Poll::Done(result) => {
                let (status, state) = match result {
                    OpResult::Assigned(state) => (EnrollmentStatus::Assigned, *state),
                    OpResult::Disabled {
                        registration_id,
                        message,
                    } => (
                        EnrollmentStatus::Disabled,
                        DeviceRegistrationResult {
                            registration_id: Some(registration_id),
                            status: Some(EnrollmentStatus::Disabled),
                            error_code: Some(error_codes::FORBIDDEN),
                            error_message: Some(message),
                            last_updated_date_time_utc: Some(attest::rfc3339(
                                time::OffsetDateTime::now_utc(),
                            )),
                            ..Default::default()
                        },
                    ),
                };
                (
                    StatusCode::OK,
                    axum::Json(RegistrationOperationStatus {
                        operation_id: operation_id.clone(),
                        status: Some(status),
                        registration_state: Some(state),
                    }),
                )
                    .into_response()
            }
        };
        if resp.status() == StatusCode::ACCEPTED {
            resp.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from(retry_after_seconds(&dps.ctx.settings)),
            );
        }
        Ok::<_, DpsError>(resp)
    }
    .await;
    r.unwrap_or_else(IntoResponse::into_response)
}

async fn status_lookup(
    State(dps): State<Arc<Dps>>,
    Path((scope, registration_id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    peer: Option<axum::Extension<PeerCertificates>>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = faults(&dps.ctx).await {
        return r;
    }
    let peer = peer.map(|p| p.0).unwrap_or_default();
    let r = async {
        check_api_version(&q)?;
        check_scope(&dps, &scope)?;
        check_registration_id(&registration_id)?;
        parse_body(&body, &registration_id)?;
        authenticate(&dps, &headers, &peer, &registration_id).await?;
        let store = dps.ctx.store.clone();
        let rid = registration_id.clone();
        let state = tokio::task::spawn_blocking(move || registry::lookup(&store, &rid))
            .await
            .map_err(DpsError::internal)?
            .map_err(DpsError::internal)?;
        match state {
            Some(s) => Ok((StatusCode::OK, axum::Json(s)).into_response()),
            None => Err(DpsError::new(
                StatusCode::NOT_FOUND,
                error_codes::NOT_FOUND,
                format!("registration {registration_id:?} has never been assigned"),
            )),
        }
    }
    .await;
    r.unwrap_or_else(IntoResponse::into_response)
}
