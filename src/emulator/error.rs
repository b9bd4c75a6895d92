//! The API error of the emulator: a status, the service's error code and a message.
//!
//! Handlers return [`ApiError`]; its response carries the details in an extension, and the
//! request middleware writes the service's body `{"error": {code, message, requestId, time}}`
//! and the `x-ms-error-code` header, because only the middleware knows the request id. Any
//! other 4xx/5xx (an unknown method from the router, say) is given the same shape there.

use crate::central::models::ErrorDetails;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error answered to an API caller.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Error code (also the `x-ms-error-code` header).
    pub code: String,
    /// Message for people.
    pub message: String,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
    /// A `WWW-Authenticate` header (401 to a bearer token: why it was refused).
    pub www_authenticate: Option<String>,
}

/// The result type of the emulator's API logic.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.to_owned(),
            message: message.into(),
            retry_after: None,
            www_authenticate: None,
        }
    }
    /// 400 with a code.
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    /// 400 `InvalidBody`.
    pub fn invalid_body(message: impl Into<String>) -> Self {
        Self::bad_request("InvalidBody", message)
    }
    /// 404 `NotFound` for a resource kind and id.
    pub fn not_found(kind: &str, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{kind} {id:?} was not found"),
        )
    }
    /// 409 `Conflict`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "Conflict", message)
    }
    /// 401 `Unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)
    }
    /// 403 `Forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", message)
    }
    /// 412 `PreconditionFailed` (stale etag).
    pub fn stale_etag(kind: &str, id: &str) -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            format!("the etag does not match the current version of {kind} {id:?}; read it again and retry"),
        )
    }
    /// 501 `NotSupportedByEmulator`.
    pub fn not_supported(what: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_IMPLEMENTED,
            "NotSupportedByEmulator",
            format!("{} is not supported by the emulator", what.into()),
        )
    }
    /// 500 `InternalError` (storage failures); the cause goes to the log, not the caller.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {cause}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "the emulator failed to process the request",
        )
    }
    /// 429 `TooManyRequests` with `Retry-After`.
    pub fn throttled(retry_after: u64, message: impl Into<String>) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", message)
        }
    }
    /// The wire details (without request id and time).
    pub fn details(&self) -> ErrorDetails {
        ErrorDetails {
            code: self.code.clone(),
            message: self.message.clone(),
            request_id: None,
            time: None,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = self.status.into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = http::HeaderValue::from_str(&s.to_string()) {
                resp.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
        }
        if let Some(v) = self
            .www_authenticate
            .as_deref()
            .and_then(|v| http::HeaderValue::from_str(v).ok())
        {
            resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
        }
        resp.extensions_mut().insert(self);
        resp
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        ApiError::internal(e)
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(e: serde_json::Error) -> Self {
        ApiError::internal(e)
    }
}

/// Formats a time as RFC 1123 (`Mon, 23 Nov 2026 14:50:14 GMT`), the spec's `time` format.
pub fn rfc1123(t: time::OffsetDateTime) -> String {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_default()
}
