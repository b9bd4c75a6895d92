//! The one error type of the IoT Central client.
//!
//! A factory line needs to know three things about a failed call: what the service said
//! (status, `code`, `message`, `requestId` — the id Microsoft support asks for), whether trying
//! again can help ([`Error::is_retryable`]), and — for a call that is not idempotent — whether it
//! may have taken effect anyway ([`Error::outcome_unknown`]). Every variant names the operation
//! (the spec's operationId, for example `EnrollmentGroups_GenerateVerificationCodeX509`) so a
//! one-line message says what failed. No variant ever carries a token or a key.

use std::time::Duration;

/// An error of the IoT Central client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The service answered with an error status.
    #[error("{operation} failed: HTTP {status} {code}: {message}{}", request_id_suffix(.request_id))]
    Service {
        /// The operation (spec operationId).
        operation: &'static str,
        /// HTTP status.
        status: u16,
        /// The service's error code (`error.code` or the `x-ms-error-code` header).
        code: String,
        /// The service's message.
        message: String,
        /// The service's correlation id (`error.requestId` or a request-id header).
        request_id: Option<String>,
        /// What the service asked us to wait before trying again (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// The request could not be delivered or its answer could not be read.
    #[error("{operation} failed: {}", if *.outcome_unknown { "the connection failed after the request was sent, so it may have taken effect" } else { "could not reach the service" })]
    Transport {
        /// The operation.
        operation: &'static str,
        /// `true` when the request may have reached the service (the connection broke after
        /// it was sent); `false` when it provably did not (connection refused, TLS failure).
        outcome_unknown: bool,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// No answer within the per-request timeout.
    #[error("{operation} failed: no answer within {timeout:?}; the request may have taken effect")]
    Timeout {
        /// The operation.
        operation: &'static str,
        /// The per-request timeout.
        timeout: Duration,
    },
    /// A success answer whose body is not what the spec says.
    #[error("{operation} failed: unexpected response body (HTTP {status})")]
    Decode {
        /// The operation.
        operation: &'static str,
        /// HTTP status of the answer.
        status: u16,
        /// Why it did not parse.
        #[source]
        source: serde_json::Error,
    },
    /// A `nextLink` that points somewhere else than the application: never followed, because
    /// following it would send the credential to another host.
    #[error("{operation}: refusing to follow nextLink {next_link:?}: it is not on {origin}")]
    ForeignNextLink {
        /// The operation.
        operation: &'static str,
        /// The link the service sent.
        next_link: String,
        /// The application's origin.
        origin: String,
    },
    /// The application URL is not usable.
    #[error("invalid application URL {url:?}: {reason}")]
    InvalidAppUrl {
        /// What was given.
        url: String,
        /// Why it is refused.
        reason: String,
    },
    /// The extra trusted CA (PEM) could not be used.
    #[error("invalid trusted CA certificate: {reason}")]
    InvalidCa {
        /// Why.
        reason: String,
    },
    /// The credential could not produce a token.
    #[error("could not get a token for IoT Central: {reason}")]
    Credential {
        /// Why.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("could not build the HTTP client")]
    BuildClient {
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// A request argument is invalid (checked before anything is sent).
    #[error("{operation}: {reason}")]
    InvalidArgument {
        /// The operation.
        operation: &'static str,
        /// Why.
        reason: String,
    },
}

fn request_id_suffix(id: &Option<String>) -> String {
    match id {
        Some(id) => format!(" (requestId {id})"),
        None => String::new(),
    }
}

impl Error {
    /// Whether the same request may succeed if sent again: throttling (429), server errors
    /// (5xx), timeouts (408) and transport failures. Says nothing about whether resending is
    /// *safe*: see [`Error::outcome_unknown`].
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Service { status, .. } => *status == 429 || *status == 408 || *status >= 500,
            Error::Transport { .. } | Error::Timeout { .. } => true,
            _ => false,
        }
    }

    /// `true` when the request may have been applied by the service although no success answer
    /// came back (the connection broke after sending, or the timeout struck). A caller of a
    /// non-idempotent operation should read the resource's state before deciding to repeat it.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Error::Transport {
                outcome_unknown, ..
            } => *outcome_unknown,
            Error::Timeout { .. } => true,
            Error::Service { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// HTTP status, when the service answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Service { status, .. } | Error::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The service's error code, when the service answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Service { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The service's message, when the service answered with an error.
    pub fn message(&self) -> Option<&str> {
        match self {
            Error::Service { message, .. } => Some(message),
            _ => None,
        }
    }

    /// The service's request id, when it sent one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Error::Service { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }

    /// `true` for 404 answers (the resource does not exist).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// The operation that failed, when known.
    pub fn operation(&self) -> Option<&'static str> {
        match self {
            Error::Service { operation, .. }
            | Error::Transport { operation, .. }
            | Error::Timeout { operation, .. }
            | Error::Decode { operation, .. }
            | Error::ForeignNextLink { operation, .. }
            | Error::InvalidArgument { operation, .. } => Some(operation),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_error_is_one_line_with_request_id() {
        let e = Error::Service {
            operation: "Devices_Get",
            status: 404,
            code: "NotFound".into(),
            message: "Device 'x' not found".into(),
            request_id: Some("abc-123".into()),
            retry_after: None,
        };
        let s = e.to_string();
        assert_eq!(
            s,
            "Devices_Get failed: HTTP 404 NotFound: Device 'x' not found (requestId abc-123)"
        );
        assert!(!e.is_retryable());
        assert!(e.is_not_found());
        assert!(!e.outcome_unknown());
    }

    #[test]
    fn throttling_and_server_errors_are_retryable() {
        let mk = |status| Error::Service {
            operation: "Devices_List",
            status,
            code: "x".into(),
            message: "y".into(),
            request_id: None,
            retry_after: None,
        };
        assert!(mk(429).is_retryable());
        assert!(mk(503).is_retryable());
        assert!(!mk(429).outcome_unknown());
        assert!(mk(500).outcome_unknown());
        assert!(!mk(400).is_retryable());
    }
}
