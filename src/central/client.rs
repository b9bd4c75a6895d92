//! The client: one place for auth, api-version, pacing, retries, timeouts and error mapping.
//!
//! Every operation of every resource goes through one private `execute` method, so the
//! resilience rules are written once:
//!
//! * **Pacing.** Requests leave spaced to a rate shared by all clones of a client. It starts
//!   at the configured rate (default 20 requests/s, IoT Central's per-application limit) and
//!   adapts to the application's other callers (see `pacing`): a 429 halves it, successes
//!   probe back up. Several stations on one application so share its limit with no
//!   coordinator, and a long run meets few 429s instead of hammering the service.
//! * **Retries.** 429, 408, 5xx and transport failures are retried with exponential backoff and
//!   jitter; a `Retry-After` (or `retry-after-ms` / `x-ms-retry-after-ms`) from the service
//!   replaces the computed delay.
//! * **Idempotency.** Only idempotent requests (GET, PUT of a whole resource, PATCH with a merge
//!   patch, DELETE) are retried blindly. A non-idempotent request (generateVerificationCode,
//!   verify, creating an API token whose value is shown once) is resent only when it provably did
//!   not take effect: the connection could not be opened (nothing was sent), or the service
//!   answered 429 (a throttled request is rejected before it is processed). After a timeout, a
//!   broken connection or a 5xx it is *not* resent; the error says the outcome is unknown
//!   ([`Error::outcome_unknown`]) and the caller decides, typically by reading the state first.
//! * **DELETE after an unknown outcome.** If a DELETE attempt broke after sending and the retry
//!   gets 404, the first attempt did the work: the call succeeds.
//! * **An expired Entra token.** A 401 to a request whose Entra token has expired (by our
//!   clock, or by the service's `WWW-Authenticate`) drops the token and sends the request once
//!   more with a fresh one, at once: a refused request did nothing, so this is safe for every
//!   operation. Any other 401 is returned as it is.

use super::credential::Credential;
use super::error::Error;
use super::models::{ErrorResponse, API_VERSION, API_VERSION_PREVIEW};
use super::pacing::Pacer;
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The domain of IoT Central applications: a bare subdomain `myapp` means
/// `https://myapp.azureiotcentral.com`.
pub const BASE_DOMAIN: &str = "azureiotcentral.com";

/// Retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryOptions {
    /// How many times a failed request is resent (0 = never).
    pub max_retries: u32,
    /// Backoff before the first retry; doubles each time (with jitter).
    pub initial_delay: Duration,
    /// Upper bound of the computed backoff.
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is not waited for: the error is returned instead.
    pub max_retry_after: Duration,
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions {
            max_retries: 6,
            initial_delay: Duration::from_millis(400),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

/// Options of a [`Client`]. Start from `ClientOptions::default()` and change what you need.
///
/// ```
/// use iotc::central::ClientOptions;
/// let opts = ClientOptions { rate_limit: None, ..ClientOptions::default() }
///     .with_timeout(std::time::Duration::from_secs(10));
/// assert_eq!(opts.api_version, "2022-07-31");
/// ```
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// api-version of ordinary calls (default `2022-07-31`).
    pub api_version: String,
    /// api-version of list calls that use `filter`, `orderby` or `maxpagesize`
    /// (default `2022-10-31-preview`).
    pub preview_api_version: String,
    /// Extra CA certificates (PEM) to trust besides the system's, for example the emulator's.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Retry policy.
    pub retry: RetryOptions,
    /// Client-side pacing in requests per second: the rate a client starts at and never
    /// exceeds; 429s from the service lower it for a while (see the module documentation).
    /// `None` disables pacing. Default 20.
    pub rate_limit: Option<NonZeroU32>,
    /// Per-request timeout (each attempt). Default 30 s.
    pub timeout: Duration,
    /// TCP + TLS connect timeout. Default 10 s.
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            api_version: API_VERSION.to_owned(),
            preview_api_version: API_VERSION_PREVIEW.to_owned(),
            extra_ca_pem: None,
            retry: RetryOptions::default(),
            rate_limit: NonZeroU32::new(20),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl ClientOptions {
    /// Trusts the CA certificate(s) of this PEM text in addition to the system roots.
    pub fn with_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.extra_ca_pem = Some(pem.into());
        self
    }

    /// Sets the pacing rate (requests per second); 0 disables pacing.
    pub fn with_rate_limit(mut self, per_second: u32) -> Self {
        self.rate_limit = NonZeroU32::new(per_second);
        self
    }

    /// Sets the per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the number of retries.
    pub fn with_max_retries(mut self, n: u32) -> Self {
        self.retry.max_retries = n;
        self
    }
}

/// Counters of what a client did (shared by its clones), for reports and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Requests handed to the network (every attempt counts).
    pub attempts: u64,
    /// Attempts that were retries.
    pub retries: u64,
    /// 429 answers received.
    pub throttled: u64,
}

#[derive(Default)]
struct Counters {
    attempts: AtomicU64,
    retries: AtomicU64,
    throttled: AtomicU64,
}

/// An IoT Central application client. Cheap to clone; clones share the connection pool, the
/// pacing bucket and the counters.
///
/// ```no_run
/// # async fn demo() -> Result<(), iotc::central::Error> {
/// use iotc::central::{Client, Credential};
/// let client = Client::new("myapp", Credential::api_token("SharedAccessSignature sr=…"), None)?;
/// let devices = client.list_devices(&Default::default()).collect_all().await?;
/// println!("{} devices", devices.len());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    credential: Credential,
    options: ClientOptions,
    pacer: Option<Pacer>,
    counters: Counters,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.inner.base.as_str())
            .field("credential", &self.inner.credential)
            .finish_non_exhaustive()
    }
}

/// Turns an application URL, a host name or a bare subdomain into the API base URL
/// (`https://host[:port]/api`).
///
/// ```
/// use iotc::central::api_base_url;
/// assert_eq!(api_base_url("myapp").unwrap().as_str(), "https://myapp.azureiotcentral.com/api");
/// assert_eq!(api_base_url("https://127.0.0.1:8443").unwrap().as_str(), "https://127.0.0.1:8443/api");
/// ```
pub fn api_base_url(app: &str) -> Result<Url, Error> {
    let bad = |reason: &str| Error::InvalidAppUrl {
        url: app.to_owned(),
        reason: reason.to_owned(),
    };
    let app = app.trim();
    if app.is_empty() {
        return Err(bad("empty"));
    }
    let text = if app.contains("://") {
        app.to_owned()
    } else if app.contains('.') || app.contains(':') {
        format!("https://{app}")
    } else {
        let ok = app.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            return Err(bad("a subdomain has only letters, digits and '-'"));
        }
        format!("https://{}.{BASE_DOMAIN}", app.to_ascii_lowercase())
    };
    let mut url = Url::parse(&text).map_err(|e| bad(&e.to_string()))?;
    let host = url.host_str().ok_or_else(|| bad("no host"))?.to_owned();
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&host) => {}
        "http" => return Err(bad("plain http would send the token in clear; use https")),
        _ => return Err(bad("the scheme must be https")),
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("no query or fragment expected"));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    let path = path.strip_suffix("/api").unwrap_or(&path);
    if !path.is_empty() {
        return Err(bad("expected the application's root URL, without a path"));
    }
    url.set_path("/api");
    Ok(url)
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// Content type of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    Json,
    MergePatch,
}

/// One operation, ready to send.
pub(crate) struct Call {
    pub operation: &'static str,
    pub method: Method,
    pub url: Url,
    pub body: Option<(BodyKind, Vec<u8>)>,
    /// Safe to resend whatever happened to a previous attempt.
    pub idempotent: bool,
}

impl Call {
    pub fn new(operation: &'static str, method: Method, url: Url) -> Call {
        let idempotent = method != Method::POST;
        Call {
            operation,
            method,
            url,
            body: None,
            idempotent,
        }
    }

    pub fn json<B: Serialize + ?Sized>(mut self, body: &B) -> Result<Call, Error> {
        let bytes = serde_json::to_vec(body).map_err(|e| Error::InvalidArgument {
            operation: self.operation,
            reason: format!("cannot serialize the body: {e}"),
        })?;
        self.body = Some((BodyKind::Json, bytes));
        Ok(self)
    }

    pub fn merge_patch(mut self, patch: &serde_json::Value) -> Result<Call, Error> {
        if !patch.is_object() {
            return Err(Error::InvalidArgument {
                operation: self.operation,
                reason: "a merge patch must be a JSON object".into(),
            });
        }
        let bytes = serde_json::to_vec(patch).map_err(|e| Error::InvalidArgument {
            operation: self.operation,
            reason: e.to_string(),
        })?;
        self.body = Some((BodyKind::MergePatch, bytes));
        Ok(self)
    }

    pub fn not_idempotent(mut self) -> Call {
        self.idempotent = false;
        self
    }
}

/// A successful answer.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

impl Client {
    /// Builds a client for the application at `app` (URL, host name or bare subdomain).
    ///
    /// Fails on an unusable URL or CA PEM; sends nothing.
    pub fn new(
        app: &str,
        credential: Credential,
        options: Option<ClientOptions>,
    ) -> Result<Client, Error> {
        let options = options.unwrap_or_default();
        let base = api_base_url(app)?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .user_agent(concat!("iotc/", env!("CARGO_PKG_VERSION")))
            .https_only(!is_loopback(base.host_str().unwrap_or_default()));
        if let Some(pem) = &options.extra_ca_pem {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| Error::InvalidCa {
                    reason: e.to_string(),
                })?;
            if certs.is_empty() {
                return Err(Error::InvalidCa {
                    reason: "no CERTIFICATE block in the PEM".into(),
                });
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|source| Error::BuildClient { source })?;
        let pacer = options.rate_limit.map(Pacer::new);
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                credential,
                options,
                pacer,
                counters: Counters::default(),
            }),
        })
    }

    /// The pacing rate in force (requests per second), `None` when pacing is off: the
    /// configured rate, or less while the application's limit is shared with other callers.
    pub fn pacing_rate(&self) -> Option<f64> {
        self.inner.pacer.as_ref().map(Pacer::rate)
    }

    /// The API base URL (`https://host/api`).
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// The options in force.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// What this client (and its clones) did so far.
    pub fn stats(&self) -> ClientStats {
        let c = &self.inner.counters;
        ClientStats {
            attempts: c.attempts.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            throttled: c.throttled.load(Ordering::Relaxed),
        }
    }

    /// `https://host/api/<segments…>?api-version=…` with each segment percent-encoded.
    pub(crate) fn url(
        &self,
        operation: &'static str,
        segments: &[&str],
        preview: bool,
    ) -> Result<Url, Error> {
        let mut url = self.inner.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|_| Error::InvalidArgument {
                    operation,
                    reason: "the base URL cannot have a path".into(),
                })?;
            for s in segments {
                if s.is_empty() {
                    return Err(Error::InvalidArgument {
                        operation,
                        reason: "an id must not be empty".into(),
                    });
                }
                path.push(s);
            }
        }
        let version = if preview {
            &self.inner.options.preview_api_version
        } else {
            &self.inner.options.api_version
        };
        url.query_pairs_mut().append_pair("api-version", version);
        Ok(url)
    }

    /// `scheme://host:port` of the application, to check `nextLink`s against.
    pub(crate) fn origin(&self) -> String {
        self.inner.base.origin().ascii_serialization()
    }

    pub(crate) fn api_version(&self) -> &str {
        &self.inner.options.api_version
    }

    /// Sends `call` and decodes a JSON answer.
    pub(crate) async fn json<T: DeserializeOwned>(&self, call: Call) -> Result<T, Error> {
        let operation = call.operation;
        let answer = self.execute(call).await?;
        serde_json::from_slice(&answer.body).map_err(|source| Error::Decode {
            operation,
            status: answer.status.as_u16(),
            source,
        })
    }

    /// Sends `call` and ignores the answer's body (204, or a 200 with `{}`).
    pub(crate) async fn empty(&self, call: Call) -> Result<(), Error> {
        self.execute(call).await.map(|_| ())
    }

    /// Sends a call with pacing and the retry rules of the module documentation.
    pub(crate) async fn execute(&self, call: Call) -> Result<Answer, Error> {
        let inner = &self.inner;
        let retry = &inner.options.retry;
        let mut attempt: u32 = 0;
        let mut outcome_was_unknown = false;
        let mut token_refreshed = false;
        loop {
            let ticket = match &inner.pacer {
                Some(pacer) => Some(pacer.ready().await),
                None => None,
            };
            let auth = inner
                .credential
                .header_value()
                .await
                .map_err(|reason| Error::Credential { reason })?;
            let mut auth_value =
                reqwest::header::HeaderValue::from_str(auth.expose()).map_err(|_| {
                    Error::Credential {
                        reason: "the token has characters not allowed in a header".into(),
                    }
                })?;
            auth_value.set_sensitive(true);
            let mut req = inner
                .http
                .request(call.method.clone(), call.url.clone())
                .header(AUTHORIZATION, auth_value)
                .timeout(inner.options.timeout);
            if let Some((kind, bytes)) = &call.body {
                let ct = match kind {
                    BodyKind::Json => "application/json",
                    BodyKind::MergePatch => "application/merge-patch+json",
                };
                req = req.header(CONTENT_TYPE, ct).body(bytes.clone());
            }
            inner.counters.attempts.fetch_add(1, Ordering::Relaxed);
            if attempt > 0 {
                inner.counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            tracing::debug!(operation = call.operation, method = %call.method, url = %call.url, attempt, "sending");
            let (error, may_retry, retry_after) = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    // A request the service processed (answered or refused on its merits) is
                    // room to probe; a 429 is handled below, a 5xx says nothing of the limit.
                    let processed = status.is_success()
                        || (status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS);
                    if processed {
                        if let Some(pacer) = &inner.pacer {
                            pacer.succeeded();
                        }
                    }
                    if status.is_success()
                        || (status == StatusCode::NOT_FOUND
                            && call.method == Method::DELETE
                            && outcome_was_unknown)
                    {
                        match resp.bytes().await {
                            Ok(body) => {
                                return Ok(Answer {
                                    status,
                                    body: body.to_vec(),
                                })
                            }
                            Err(e) => {
                                // The service did the work; only its answer got lost.
                                let unknown = Error::Transport {
                                    operation: call.operation,
                                    outcome_unknown: true,
                                    source: e,
                                };
                                outcome_was_unknown = true;
                                (unknown, call.idempotent, None)
                            }
                        }
                    } else if status == StatusCode::UNAUTHORIZED
                        && !token_refreshed
                        && inner
                            .credential
                            .unauthorized(&auth, says_token_expired(&headers))
                            .await
                    {
                        tracing::info!(
                            operation = call.operation,
                            "the token expired; retrying with a fresh one"
                        );
                        token_refreshed = true;
                        continue;
                    } else {
                        let body = resp.bytes().await.unwrap_or_default();
                        let retry_after = retry_after(&headers);
                        let err =
                            service_error(call.operation, status, &headers, &body, retry_after);
                        let may_retry = if status == StatusCode::TOO_MANY_REQUESTS {
                            inner.counters.throttled.fetch_add(1, Ordering::Relaxed);
                            if let (Some(pacer), Some(ticket)) = (&inner.pacer, ticket) {
                                pacer.throttled(ticket);
                            }
                            true
                        } else if status == StatusCode::REQUEST_TIMEOUT || status.is_server_error()
                        {
                            if call.idempotent {
                                true
                            } else {
                                outcome_was_unknown = true;
                                false
                            }
                        } else {
                            false
                        };
                        (err, may_retry, retry_after)
                    }
                }
                Err(e) => {
                    let not_sent = e.is_connect() && !is_tls_rejection(&e);
                    let permanent = is_tls_rejection(&e) || e.is_builder();
                    let err = if e.is_timeout() && !e.is_connect() {
                        Error::Timeout {
                            operation: call.operation,
                            timeout: inner.options.timeout,
                        }
                    } else {
                        Error::Transport {
                            operation: call.operation,
                            outcome_unknown: !e.is_connect(),
                            source: e,
                        }
                    };
                    if !not_sent {
                        outcome_was_unknown = true;
                    }
                    (err, !permanent && (not_sent || call.idempotent), None)
                }
            };
            if !may_retry || attempt >= retry.max_retries {
                return Err(error);
            }
            let delay = match retry_after {
                Some(d) if d > retry.max_retry_after => return Err(error),
                Some(d) => d,
                None => backoff(retry, attempt),
            };
            tracing::info!(operation = call.operation, attempt, ?delay, error = %error, "retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

/// Whether a 401's `WWW-Authenticate` says the bearer token expired (RFC 6750 `invalid_token`
/// with a description naming expiry, as Entra-protected APIs send it).
fn says_token_expired(headers: &HeaderMap) -> bool {
    headers
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("invalid_token") && v.to_ascii_lowercase().contains("expired"))
}

/// Exponential backoff with "equal jitter": half the step fixed, half random.
fn backoff(retry: &RetryOptions, attempt: u32) -> Duration {
    let step = retry
        .initial_delay
        .saturating_mul(1u32 << attempt.min(16))
        .min(retry.max_delay);
    let half = step / 2;
    let jitter_ms = rand::random_range(0..=half.as_millis().max(1) as u64);
    half + Duration::from_millis(jitter_ms)
}

/// A TLS failure (bad or untrusted certificate) is permanent: retrying cannot fix it.
fn is_tls_rejection(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        // io::Error hides its payload from `source()`; unwrap nested io errors by hand.
        let mut io = s.downcast_ref::<std::io::Error>();
        while let Some(inner) = io.and_then(|e| e.get_ref()) {
            if inner.downcast_ref::<rustls::Error>().is_some() {
                return true;
            }
            io = inner.downcast_ref::<std::io::Error>();
        }
        source = s.source();
    }
    false
}

/// `retry-after-ms`, `x-ms-retry-after-ms` (milliseconds) or `Retry-After` (seconds or an
/// HTTP date).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = text(name).and_then(|v| v.parse::<f64>().ok()) {
            if ms.is_finite() && ms >= 0.0 {
                return Some(Duration::from_millis(ms as u64));
            }
        }
    }
    let v = text("retry-after")?;
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs));
        }
        return None;
    }
    let when =
        time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
    let now = time::OffsetDateTime::now_utc();
    let secs = (when - now).whole_milliseconds().max(0) as u64;
    Some(Duration::from_millis(secs))
}

fn service_error(
    operation: &'static str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Error {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let parsed: Option<ErrorResponse> = serde_json::from_slice(body).ok();
    let (code, message, request_id) = match parsed {
        Some(r) => (r.error.code, r.error.message, r.error.request_id),
        None => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let message = if text.is_empty() {
                status.canonical_reason().unwrap_or("error").to_owned()
            } else {
                text.chars().take(300).collect()
            };
            (
                header("x-ms-error-code").unwrap_or_else(|| {
                    status
                        .canonical_reason()
                        .unwrap_or("Error")
                        .replace(' ', "")
                }),
                message,
                None,
            )
        }
    };
    let request_id = request_id
        .or_else(|| header("x-ms-request-id"))
        .or_else(|| header("x-request-id"));
    Error::Service {
        operation,
        status: status.as_u16(),
        code,
        message,
        request_id,
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_urls() {
        let ok = |s: &str| api_base_url(s).unwrap().to_string();
        assert_eq!(ok("MyApp"), "https://myapp.azureiotcentral.com/api");
        assert_eq!(
            ok("myapp.azureiotcentral.com"),
            "https://myapp.azureiotcentral.com/api"
        );
        assert_eq!(
            ok("https://myapp.azureiotcentral.com/"),
            "https://myapp.azureiotcentral.com/api"
        );
        assert_eq!(
            ok("https://127.0.0.1:9443/api"),
            "https://127.0.0.1:9443/api"
        );
        assert_eq!(ok("http://127.0.0.1:9080"), "http://127.0.0.1:9080/api");
        assert!(api_base_url("http://example.com").is_err());
        assert!(api_base_url("https://x.com/other").is_err());
        assert!(api_base_url("my app").is_err());
        assert!(api_base_url("").is_err());
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let r = RetryOptions {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            ..RetryOptions::default()
        };
        for attempt in 0..20 {
            let d = backoff(&r, attempt);
            let step = (100u64 << attempt.min(16)).min(1000);
            assert!(d >= Duration::from_millis(step / 2), "{attempt}: {d:?}");
            assert!(d <= Duration::from_millis(step + 1), "{attempt}: {d:?}");
        }
    }

    #[test]
    fn error_body_and_headers_are_kept() {
        let mut h = HeaderMap::new();
        h.insert("x-ms-request-id", "hdr-id".parse().unwrap());
        let body = br#"{"error":{"code":"Conflict","message":"exists","requestId":"body-id"}}"#;
        let e = service_error("Devices_Create", StatusCode::CONFLICT, &h, body, None);
        assert_eq!(e.code(), Some("Conflict"));
        assert_eq!(e.request_id(), Some("body-id"));
        let e = service_error("Devices_Create", StatusCode::BAD_GATEWAY, &h, b"", None);
        assert_eq!(e.code(), Some("BadGateway"));
        assert_eq!(e.request_id(), Some("hdr-id"));
        assert!(e.is_retryable());
    }
}
