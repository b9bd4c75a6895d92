//! The DPS device client: registration as a long-running operation.
//!
//! `register` sends `PUT {idScope}/registrations/{registrationId}/register`, gets 202 with an
//! `operationId`, then polls `operations/{operationId}` until the status leaves `assigning`,
//! sleeping what `Retry-After` says (capped), all within an overall deadline. 429 and 5xx
//! answers and dropped connections are retried the same way. X.509 devices present leaf +
//! chain in the TLS handshake; symmetric-key devices sign a SAS token per request.
//!
//! The same registration runs over MQTT when [`ClientOptions::transport`] says so
//! ([`super::mqtt`]); both transports read the service's answers with `next_step`, so a
//! status means the same thing whichever way it came.

use super::identity::{Attestation, X509Identity};
use super::sas;
use super::wire::{
    DeviceRegistration, DeviceRegistrationResult, EnrollmentStatus,
    ProvisioningServiceErrorDetails, RegistrationOperationStatus, RegistrationOutcome, API_VERSION,
    GLOBAL_ENDPOINT,
};
use super::DpsError;
use crate::ids::{IdScope, RegistrationId};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Options of a [`Client`]. `Default` targets the public global endpoint.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Base URL of DPS (default `https://global.azure-devices-provisioning.net`).
    pub endpoint: String,
    /// api-version sent with every request (default 2021-10-01).
    pub api_version: String,
    /// Extra CA certificate(s) (PEM) to trust, for example the emulator's. When given, the
    /// server must chain to one of them (the system roots are not consulted): this is for
    /// the emulator or a private endpoint.
    pub ca_pem: Option<Vec<u8>>,
    /// Overall deadline of one registration, polls included (default 120 s).
    pub deadline: Duration,
    /// Longest wait honoured from a `Retry-After` header (default 30 s).
    pub max_retry_after: Duration,
    /// Wait between polls when the service sends no `Retry-After` (default 2 s).
    pub default_poll_interval: Duration,
    /// Timeout of each HTTP request (default 30 s).
    pub request_timeout: Duration,
    /// Validity of the SAS tokens signed for symmetric-key devices (default 1 h).
    pub sas_ttl: Duration,
    /// Retries of a request refused with 429/5xx or a dropped connection (default 5).
    pub max_retries: u32,
    /// Keep connections open between requests (default true). Off, every request makes a
    /// new TLS connection (what the benchmark measures).
    pub reuse_connections: bool,
    /// How [`Client::register`] talks to DPS (default HTTPS). The status lookup is HTTPS
    /// whatever this says: DPS has no MQTT topic for it.
    pub transport: Transport,
    /// `host:port` of DPS over MQTT (TLS), for [`Transport::Mqtt`]. Default: the host of
    /// `endpoint` on port 8883, where the public service listens.
    pub mqtt_host: Option<String>,
}

/// The transport of a registration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// HTTPS: one request per step (register, each poll).
    #[default]
    Https,
    /// MQTT 3.1.1 over TLS: one connection carries the register and the polls.
    Mqtt,
}

impl Transport {
    /// The name used on the command line and in reports (`https`, `mqtt`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Transport::Https => "https",
            Transport::Mqtt => "mqtt",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            endpoint: GLOBAL_ENDPOINT.to_owned(),
            api_version: API_VERSION.to_owned(),
            ca_pem: None,
            deadline: Duration::from_secs(120),
            max_retry_after: Duration::from_secs(30),
            default_poll_interval: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
            sas_ttl: Duration::from_secs(3600),
            max_retries: 5,
            reuse_connections: true,
            transport: Transport::Https,
            mqtt_host: None,
        }
    }
}

/// A DPS device client for one ID scope and one device identity.
#[derive(Clone)]
pub struct Client {
    http: std::sync::OnceLock<reqwest::Client>,
    id_scope: IdScope,
    attestation: Attestation,
    opts: Arc<ClientOptions>,
    base: String,
    mqtt: Option<Arc<super::mqtt::Connector>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.base)
            .field("id_scope", &self.id_scope)
            .field("attestation", &self.attestation)
            .finish_non_exhaustive()
    }
}

/// What a finished registration gives back: the registration state DPS assigned.
pub type Registration = DeviceRegistrationResult;

impl Client {
    /// Builds a client. For X.509 the identity goes into the TLS configuration.
    pub fn new(
        id_scope: IdScope,
        attestation: Attestation,
        opts: ClientOptions,
    ) -> Result<Client, DpsError> {
        let base = opts.endpoint.trim_end_matches('/').to_owned();
        let parsed = url::Url::parse(&base)
            .map_err(|e| DpsError::InvalidEndpoint(format!("{base}: {e}")))?;
        if parsed.scheme() != "https" {
            return Err(DpsError::InvalidEndpoint(format!(
                "{base}: the DPS endpoint is an https:// URL (MQTT goes to `mqtt_host`)"
            )));
        }
        let mqtt = match opts.transport {
            Transport::Https => None,
            Transport::Mqtt => Some(Arc::new(super::mqtt::Connector::new(
                &parsed,
                opts.mqtt_host.as_deref(),
                opts.ca_pem.as_deref(),
                match &attestation {
                    Attestation::X509(id) => Some(id),
                    Attestation::SymmetricKey(_) => None,
                },
            )?)),
        };
        // Over MQTT the HTTPS client serves only a status lookup: made when one is asked for,
        // not with every client (a registration over MQTT would pay for a second TLS
        // configuration and an HTTP client it never uses).
        let http = std::sync::OnceLock::new();
        if mqtt.is_none() {
            let _ = http.set(https_client(&opts, &attestation)?);
        }
        Ok(Client {
            http,
            id_scope,
            attestation,
            opts: Arc::new(opts),
            base,
            mqtt,
        })
    }

    /// The HTTPS client, made on first use when the transport is MQTT.
    fn http(&self) -> Result<&reqwest::Client, DpsError> {
        if let Some(c) = self.http.get() {
            return Ok(c);
        }
        let c = https_client(&self.opts, &self.attestation)?;
        Ok(self.http.get_or_init(|| c))
    }

    /// The ID scope.
    pub fn id_scope(&self) -> &IdScope {
        &self.id_scope
    }

    /// Registers `registration_id` and waits until DPS assigns it (or refuses).
    ///
    /// `payload` is sent as the registration's custom payload (IoT Central reads
    /// `{"modelId": "dtmi:..."}` from it to pick the device template).
    pub async fn register(
        &self,
        registration_id: &RegistrationId,
        payload: Option<serde_json::Value>,
    ) -> Result<Registration, DpsError> {
        if let Some(mqtt) = &self.mqtt {
            return mqtt
                .register(
                    &self.id_scope,
                    registration_id,
                    &self.attestation,
                    &self.opts,
                    payload,
                )
                .await;
        }
        let started = Instant::now();
        let deadline = started + self.opts.deadline;
        let body = DeviceRegistration {
            registration_id: Some(registration_id.to_string()),
            tpm: None,
            payload,
        };
        let url = format!(
            "{}/{}/registrations/{}/register",
            self.base,
            self.id_scope,
            path_segment(registration_id.as_str())
        );
        let http = self.http()?;
        let (mut status, mut wait): (RegistrationOperationStatus, _) = self
            .send_with_retries("register", registration_id, deadline, || {
                http.put(&url).json(&body)
            })
            .await?;
        loop {
            let operation_id = match next_step(registration_id, &status)? {
                Next::Done(result) => return Ok(*result),
                Next::Poll(operation_id) => operation_id,
            };
            let pause = wait.unwrap_or(self.opts.default_poll_interval);
            if Instant::now() + pause > deadline {
                return Err(DpsError::DeadlineExceeded {
                    registration_id: registration_id.to_string(),
                    operation_id: Some(operation_id),
                    deadline: self.opts.deadline,
                });
            }
            tokio::time::sleep(pause).await;
            let poll_url = format!(
                "{}/{}/registrations/{}/operations/{}",
                self.base,
                self.id_scope,
                path_segment(registration_id.as_str()),
                path_segment(&operation_id)
            );
            (status, wait) = self
                .send_with_retries("poll operation", registration_id, deadline, || {
                    http.get(&poll_url)
                })
                .await?;
        }
    }

    /// `POST {idScope}/registrations/{registrationId}`: the current registration state of
    /// the device, without registering it again.
    pub async fn status_lookup(
        &self,
        registration_id: &RegistrationId,
    ) -> Result<DeviceRegistrationResult, DpsError> {
        let deadline = Instant::now() + self.opts.deadline;
        let url = format!(
            "{}/{}/registrations/{}",
            self.base,
            self.id_scope,
            path_segment(registration_id.as_str())
        );
        let body = DeviceRegistration {
            registration_id: Some(registration_id.to_string()),
            ..Default::default()
        };
        let http = self.http()?;
        let (result, _) = self
            .send_with_retries("status lookup", registration_id, deadline, || {
                http.post(&url).json(&body)
            })
            .await?;
        Ok(result)
    }

    /// Sends one request (rebuilt for every attempt), retrying 429/5xx and dropped
    /// connections, and decodes the JSON answer. Returns the body and the Retry-After.
    async fn send_with_retries<T: serde::de::DeserializeOwned>(
        &self,
        operation: &'static str,
        registration_id: &RegistrationId,
        deadline: Instant,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<(T, Option<Duration>), DpsError> {
        let mut attempt = 0u32;
        loop {
            let mut req = build()
                .query(&[("api-version", self.opts.api_version.as_str())])
                .header("Content-Encoding", "utf-8");
            if let Attestation::SymmetricKey(key) = &self.attestation {
                req = req.header(
                    reqwest::header::AUTHORIZATION,
                    self.sas_header(registration_id, key)?,
                );
            }
            let err = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = retry_after(resp.headers(), self.opts.max_retry_after);
                    let bytes = resp.bytes().await.map_err(|e| DpsError::Send {
                        operation,
                        detail: error_chain(&e),
                    });
                    match bytes {
                        Ok(bytes) if status.is_success() => {
                            let value =
                                serde_json::from_slice(&bytes).map_err(|e| DpsError::Decode {
                                    operation,
                                    detail: format!("{e} in {}", snippet(&bytes)),
                                })?;
                            return Ok((value, retry_after));
                        }
                        Ok(bytes) => service_error(operation, status.as_u16(), &bytes, retry_after),
                        Err(e) => e,
                    }
                }
                Err(e) => DpsError::Send {
                    operation,
                    detail: error_chain(&e),
                },
            };
            attempt += 1;
            if !err.is_retryable() || attempt > self.opts.max_retries {
                return Err(err);
            }
            let pause = match &err {
                DpsError::Service {
                    retry_after: Some(d),
                    ..
                } => *d,
                _ => backoff(attempt),
            };
            if Instant::now() + pause > deadline {
                return Err(err);
            }
            tracing::debug!(operation, attempt, ?pause, error = %err, "retrying DPS request");
            tokio::time::sleep(pause).await;
        }
    }

    fn sas_header(
        &self,
        registration_id: &RegistrationId,
        key: &crate::secret::Secret,
    ) -> Result<reqwest::header::HeaderValue, DpsError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let token = sas::sas_token(
            self.id_scope.as_str(),
            registration_id.as_str(),
            key,
            now + self.opts.sas_ttl.as_secs().max(1),
        )?;
        let mut value = reqwest::header::HeaderValue::from_str(token.expose())
            .map_err(|_| DpsError::Sas(sas::SasError::ParseToken))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// Registers one device: builds a [`Client`] and calls [`Client::register`].
pub async fn register(
    id_scope: IdScope,
    registration_id: &RegistrationId,
    attestation: Attestation,
    opts: ClientOptions,
    payload: Option<serde_json::Value>,
) -> Result<Registration, DpsError> {
    Client::new(id_scope, attestation, opts)?
        .register(registration_id, payload)
        .await
}

/// What a registration does after an answer.
pub(super) enum Next {
    /// Assigned: the registration state.
    Done(Box<Registration>),
    /// Still assigning: poll this operation.
    Poll(String),
}

/// Reads an operation status (of register or of a poll), whatever the transport: assigned,
/// poll again, or the typed refusal of a registration that ended in another state.
pub(super) fn next_step(
    registration_id: &RegistrationId,
    status: &RegistrationOperationStatus,
) -> Result<Next, DpsError> {
    let failed = |status, error_code, error_message| DpsError::RegistrationFailed {
        registration_id: registration_id.to_string(),
        status,
        error_code,
        error_message,
    };
    match status.outcome() {
        RegistrationOutcome::Assigned(result) => Ok(Next::Done(result)),
        RegistrationOutcome::Assigning { operation_id } if operation_id.is_empty() => {
            Err(DpsError::Decode {
                operation: "register",
                detail: "the service answered `assigning` without an operationId".into(),
            })
        }
        RegistrationOutcome::Assigning { operation_id } => Ok(Next::Poll(operation_id)),
        RegistrationOutcome::Failed {
            error_code,
            error_message,
        } => Err(failed(EnrollmentStatus::Failed, error_code, error_message)),
        RegistrationOutcome::Disabled { error_message } => {
            Err(failed(EnrollmentStatus::Disabled, None, error_message))
        }
        RegistrationOutcome::Unassigned { error_message } => {
            Err(failed(EnrollmentStatus::Unassigned, None, error_message))
        }
        RegistrationOutcome::Unknown(s) => Err(failed(EnrollmentStatus::Other(s), None, None)),
    }
}

/// The error of a refused request: DPS's error body when it sent one, else the text.
pub(super) fn service_error(
    operation: &'static str,
    status: u16,
    bytes: &[u8],
    retry_after: Option<Duration>,
) -> DpsError {
    let details: ProvisioningServiceErrorDetails =
        serde_json::from_slice(bytes).unwrap_or_default();
    DpsError::Service {
        operation,
        status,
        error_code: details.error_code,
        message: details
            .message
            .or_else(|| (!bytes.is_empty()).then(|| snippet(bytes))),
        tracking_id: details.tracking_id,
        retry_after,
    }
}

pub(super) fn backoff(attempt: u32) -> Duration {
    let base = 200u64.saturating_mul(1 << attempt.min(6));
    let jitter = rand::random::<u64>() % (base / 2 + 1);
    Duration::from_millis(base + jitter)
}

fn retry_after(headers: &reqwest::header::HeaderMap, cap: Duration) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let secs: f64 = v.parse().ok()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(secs).min(cap))
}

fn path_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
        .to_string()
        .replace("%2D", "-")
        .replace("%2E", ".")
        .replace("%5F", "_")
}

pub(super) fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut s: String = text.chars().take(300).collect();
    if text.chars().count() > 300 {
        s.push('…');
    }
    s
}

pub(super) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

fn reqwest_identity(id: &X509Identity) -> Result<reqwest::Identity, DpsError> {
    use base64::Engine as _;
    let mut pem = String::new();
    let key = id
        .rustls_key()
        .ok_or_else(|| DpsError::BuildClient("the device key is in a token".into()))?;
    let label = match key {
        rustls_pki_types::PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        rustls_pki_types::PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    let b64 =
        zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(key.secret_der()));
    for cert in id.chain_der() {
        pem_block(
            &mut pem,
            "CERTIFICATE",
            &base64::engine::general_purpose::STANDARD.encode(cert),
        );
    }
    let mut pem = zeroize::Zeroizing::new(pem);
    pem_block(&mut pem, label, &b64);
    reqwest::Identity::from_pem(pem.as_bytes()).map_err(|e| DpsError::BuildClient(error_chain(&e)))
}

fn pem_block(out: &mut String, label: &str, b64: &str) {
    out.push_str(&format!("-----BEGIN {label}-----\n"));
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
}

/// [`rustls_config`] for the HTTPS transport (ALPN `http/1.1`).
fn https_config(
    ca_pem: Option<&[u8]>,
    identity: Option<&X509Identity>,
) -> Result<rustls::ClientConfig, DpsError> {
    let mut config = rustls_config(ca_pem, identity)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The TLS configuration of a DPS connection (aws-lc-rs, TLS 1.2 and 1.3): trusting only
/// `ca_pem` when given, else the platform's roots (as reqwest does), and presenting the
/// X.509 `identity` when there is one, its key from memory or through its token. No ALPN:
/// the caller sets what its protocol needs.
/// The HTTPS client of one device: its identity in the TLS handshake, the CA to trust.
fn https_client(
    opts: &ClientOptions,
    attestation: &Attestation,
) -> Result<reqwest::Client, DpsError> {
    let mut builder = reqwest::Client::builder()
        .timeout(opts.request_timeout)
        .connect_timeout(opts.request_timeout)
        .user_agent(concat!("iotc/", env!("CARGO_PKG_VERSION")));
    if !opts.reuse_connections {
        builder = builder.pool_max_idle_per_host(0);
    }
    let identity = match attestation {
        Attestation::X509(id) => Some(id),
        Attestation::SymmetricKey(_) => None,
    };
    let in_token = identity.is_some_and(|id| id.token_signing_key().is_some());
    builder = match (&opts.ca_pem, identity) {
        (Some(ca), _) => builder.tls_backend_preconfigured(https_config(Some(ca), identity)?),
        // A key in a token signs through our own rustls configuration (reqwest's
        // identity wants the key's bytes), trusting what reqwest would: the platform.
        (None, Some(id)) if in_token => {
            builder.tls_backend_preconfigured(https_config(None, Some(id))?)
        }
        (None, Some(id)) => builder.identity(reqwest_identity(id)?),
        (None, None) => builder,
    };
    builder
        .build()
        .map_err(|e| DpsError::BuildClient(error_chain(&e)))
}

pub(super) fn rustls_config(
    ca_pem: Option<&[u8]>,
    identity: Option<&X509Identity>,
) -> Result<rustls::ClientConfig, DpsError> {
    use rustls_pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DpsError::BuildClient(e.to_string()))?;
    let builder = match ca_pem {
        Some(ca_pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem) {
                let cert = cert.map_err(|e| DpsError::BuildClient(format!("CA file: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| DpsError::BuildClient(format!("CA file: {e}")))?;
            }
            if roots.is_empty() {
                return Err(DpsError::BuildClient(
                    "the CA file holds no certificate".into(),
                ));
            }
            builder.with_root_certificates(roots)
        }
        None => {
            use rustls_platform_verifier::BuilderVerifierExt;
            builder
                .with_platform_verifier()
                .map_err(|e| DpsError::BuildClient(format!("platform roots: {e}")))?
        }
    };
    let client_cert = |e: rustls::Error| DpsError::BuildClient(format!("client certificate: {e}"));
    let config = match identity {
        Some(id) => match (id.token_signing_key(), id.rustls_key()) {
            (Some(key), _) => {
                let certified = rustls::sign::CertifiedKey::new(id.rustls_chain(), key);
                builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
                    certified,
                )))
            }
            (None, Some(der)) => builder
                .with_client_auth_cert(id.rustls_chain(), der)
                .map_err(client_cert)?,
            (None, None) => builder.with_no_client_auth(),
        },
        None => builder.with_no_client_auth(),
    };
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_capped_and_tolerant() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h, Duration::from_secs(5)), None);
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(
            retry_after(&h, Duration::from_secs(5)),
            Some(Duration::from_secs(3))
        );
        h.insert("retry-after", "3600".parse().unwrap());
        assert_eq!(
            retry_after(&h, Duration::from_secs(5)),
            Some(Duration::from_secs(5))
        );
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h, Duration::from_secs(5)), None);
    }

    #[test]
    fn path_segments_keep_registration_id_characters() {
        assert_eq!(path_segment("dev-1.a_b"), "dev-1.a_b");
        assert_eq!(path_segment("dev:1"), "dev%3A1");
    }

    #[test]
    fn http_endpoint_is_refused() {
        let opts = ClientOptions {
            endpoint: "http://127.0.0.1:1".into(),
            ..Default::default()
        };
        let err = Client::new(
            IdScope::new("0ne0000000A").unwrap(),
            Attestation::SymmetricKey(crate::secret::Secret::new("AAAA")),
            opts,
        )
        .unwrap_err();
        assert!(matches!(err, DpsError::InvalidEndpoint(_)), "{err}");
    }
}
