//! DPS over MQTT 3.1.1 (over TLS), device side: the path most device SDKs and firmware take,
//! so a station can check it before its devices do.
//!
//! One connection carries the whole registration, as the SDKs do it: `CONNECT` (client id =
//! registration id, user name `{idScope}/registrations/{registrationId}/api-version=...`,
//! password = a SAS token for a symmetric-key device; an X.509 device presents leaf + chain
//! in the TLS handshake), `SUBSCRIBE` to the answers, `PUBLISH` the register request (the
//! three in one write, as MQTT allows), then
//! the operation polls, each after the `retry-after` of the answer before (capped), and
//! `DISCONNECT`. Answers are read with the same rules as over HTTPS ([`super::client`]):
//! 429 and 5xx are retried on the same connection, a dropped connection starts over on a new
//! one, everything within the overall deadline.
//!
//! Packets are encoded and decoded by `rumqttc`'s MQTT 3.1.1 codec. Its event loop is not
//! used: it cannot take a stream connected here, and its own TLS features bring a second
//! crypto backend (ring); the TLS here is tokio-rustls on aws-lc-rs, like every other
//! connection of this crate.

use super::client::{
    backoff, error_chain, next_step, rustls_config, service_error, snippet, ClientOptions, Next,
    Registration,
};
use super::identity::{Attestation, X509Identity};
use super::wire::mqtt::{POLL_TOPIC, PORT, REGISTER_TOPIC, RESPONSE_FILTER, RESPONSE_PREFIX};
use super::wire::{DeviceRegistration, RegistrationOperationStatus};
use super::{sas, DpsError};
use crate::ids::{IdScope, RegistrationId};
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    Connect, ConnectReturnCode, Packet, PubAck, Publish, Subscribe, SubscribeReasonCode,
};
use rumqttc::mqttbytes::{Error as PacketError, QoS};
use rustls_pki_types::ServerName;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest answer read (an assigned registration state is about 2 KB).
const MAX_PACKET_SIZE: usize = 1024 * 1024;
/// The keep-alive asked for, as the Node SDK does (the Azure load balancer's idle timeout is
/// 4 minutes); no wait of a registration comes near it.
const KEEP_ALIVE_SECONDS: u16 = 180;

/// Where and how to open MQTT connections to DPS.
pub(crate) struct Connector {
    tls: tokio_rustls::TlsConnector,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Splits `host:port` (`[v6]:port` for an IPv6 address).
fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = port.parse().ok()?;
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

impl Connector {
    /// The connector for `mqtt_host` (`host:port`), else the host of `endpoint` on the
    /// public MQTT port.
    pub(crate) fn new(
        endpoint: &url::Url,
        mqtt_host: Option<&str>,
        ca_pem: Option<&[u8]>,
        identity: Option<&X509Identity>,
    ) -> Result<Connector, DpsError> {
        let (host, port) = match mqtt_host {
            Some(h) => split_host_port(h).ok_or_else(|| {
                DpsError::InvalidEndpoint(format!(
                    "{h}: the DPS MQTT host is host:port (for example \
                     global.azure-devices-provisioning.net:8883)"
                ))
            })?,
            None => {
                let host = endpoint.host_str().ok_or_else(|| {
                    DpsError::InvalidEndpoint(format!("{endpoint}: the endpoint has no host"))
                })?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                (host.to_owned(), PORT)
            }
        };
        let server_name = ServerName::try_from(host.clone()).map_err(|e| {
            DpsError::InvalidEndpoint(format!("{host}: not a host name or address: {e}"))
        })?;
        let config = rustls_config(ca_pem, identity)?;
        Ok(Connector {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            host,
            port,
            server_name,
        })
    }

    /// Registers `registration_id` over MQTT and waits until DPS assigns it (or refuses).
    pub(crate) async fn register(
        &self,
        id_scope: &IdScope,
        registration_id: &RegistrationId,
        attestation: &Attestation,
        opts: &ClientOptions,
        payload: Option<serde_json::Value>,
    ) -> Result<Registration, DpsError> {
        let deadline = Instant::now() + opts.deadline;
        let body = serde_json::to_vec(&DeviceRegistration {
            registration_id: Some(registration_id.to_string()),
            tpm: None,
            payload,
        })
        .map_err(|e| DpsError::Decode {
            operation: "register",
            detail: e.to_string(),
        })?;
        let mut run = Run {
            registration_id,
            opts,
            deadline,
            attempts: 0,
            operation_id: None,
        };
        loop {
            let attempt = async {
                let mut conn = self
                    .connect(id_scope, registration_id, attestation, opts)
                    .await?;
                let result = run.registration(&mut conn, &body).await;
                if result.is_ok() {
                    conn.disconnect().await;
                }
                result
            };
            let err = match tokio::time::timeout_at(deadline.into(), attempt).await {
                Ok(Ok(state)) => return Ok(state),
                Ok(Err(e)) => e,
                Err(_) => return Err(run.deadline_exceeded()),
            };
            run.attempts += 1;
            if !err.is_retryable() || run.attempts > opts.max_retries {
                return Err(err);
            }
            let pause = backoff(run.attempts);
            if Instant::now() + pause > deadline {
                return Err(err);
            }
            tracing::debug!(attempt = run.attempts, ?pause, error = %err, "reconnecting to DPS over MQTT");
            tokio::time::sleep(pause).await;
        }
    }

    /// TCP and TLS, then `CONNECT` and `SUBSCRIBE` queued: they leave with the first request,
    /// and [`Conn::finish_handshake`] reads their acknowledgements.
    async fn connect(
        &self,
        id_scope: &IdScope,
        registration_id: &RegistrationId,
        attestation: &Attestation,
        opts: &ClientOptions,
    ) -> Result<Conn, DpsError> {
        let send_err = |detail: String| DpsError::Send {
            operation: "connect",
            detail,
        };
        let tcp = tokio::time::timeout(
            opts.request_timeout,
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| {
            send_err(format!(
                "{}:{} did not answer in time",
                self.host, self.port
            ))
        })?
        .map_err(|e| send_err(format!("{}:{}: {}", self.host, self.port, error_chain(&e))))?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio::time::timeout(
            opts.request_timeout,
            self.tls.connect(self.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| send_err("the TLS handshake timed out".into()))?
        .map_err(|e| send_err(format!("TLS: {}", error_chain(&e))))?;
        let mut conn = Conn {
            tls,
            // Room for an assigned registration state (about 2 KB) in one read.
            buffer: BytesMut::with_capacity(4096),
            out: BytesMut::new(),
            next_packet_id: 0,
            timeout: opts.request_timeout,
            handshake: None,
        };

        let mut connect = Connect::new(registration_id.as_str());
        connect.keep_alive = KEEP_ALIVE_SECONDS;
        connect.clean_session = true;
        let username = format!(
            "{id_scope}/registrations/{registration_id}/api-version={}&ClientVersion={}",
            opts.api_version,
            percent_encoding::utf8_percent_encode(
                concat!("iotc/", env!("CARGO_PKG_VERSION")),
                percent_encoding::NON_ALPHANUMERIC
            )
        );
        let password = match attestation {
            Attestation::SymmetricKey(key) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                sas::sas_token(
                    id_scope.as_str(),
                    registration_id.as_str(),
                    key,
                    now + opts.sas_ttl.as_secs().max(1),
                )?
                .expose()
                .to_owned()
            }
            Attestation::X509(_) => String::new(),
        };
        let password = zeroize::Zeroizing::new(password);
        connect.set_login(username, password.as_str());
        conn.queue(Packet::Connect(connect), "connect")?;
        // MQTT lets a client go on without waiting for the CONNACK (3.1.1 §3.1.4): the
        // SUBSCRIBE and the first request leave in the same write, and their acknowledgements
        // are read before the first answer ([`Conn::finish_handshake`]).
        let pkid = conn.packet_id();
        let mut subscribe = Subscribe::new(RESPONSE_FILTER, QoS::AtLeastOnce);
        subscribe.pkid = pkid;
        conn.queue(Packet::Subscribe(subscribe), "subscribe")?;
        conn.handshake = Some(Handshake {
            registration_id: registration_id.to_string(),
            subscribe_pkid: pkid,
        });
        Ok(conn)
    }
}

/// The state of one registration across its connections.
struct Run<'a> {
    registration_id: &'a RegistrationId,
    opts: &'a ClientOptions,
    deadline: Instant,
    attempts: u32,
    /// The operation being polled, for the deadline error.
    operation_id: Option<String>,
}

impl Run<'_> {
    fn deadline_exceeded(&self) -> DpsError {
        DpsError::DeadlineExceeded {
            registration_id: self.registration_id.to_string(),
            operation_id: self.operation_id.clone(),
            deadline: self.opts.deadline,
        }
    }

    /// Register, then poll until the operation ends, on one connection.
    async fn registration(
        &mut self,
        conn: &mut Conn,
        body: &[u8],
    ) -> Result<Registration, DpsError> {
        let mut poll: Option<String> = None;
        loop {
            let rid = conn.packet_id();
            let (operation, topic, payload): (&'static str, String, &[u8]) = match &poll {
                None => ("register", format!("{REGISTER_TOPIC}?$rid={rid}"), body),
                Some(op) => (
                    "poll operation",
                    format!("{POLL_TOPIC}?$rid={rid}&operationId={op}"),
                    &[],
                ),
            };
            let mut publish = Publish::new(topic, QoS::AtLeastOnce, payload.to_vec());
            publish.pkid = rid;
            conn.queue(Packet::Publish(publish), operation)?;
            conn.flush(operation).await?;
            conn.finish_handshake().await?;
            let answer = conn.answer(operation, &rid.to_string()).await?;
            let retry_after = answer
                .retry_after
                .map(|s| Duration::from_secs(s).min(self.opts.max_retry_after));
            if !(200..300).contains(&answer.status) {
                let err = service_error(operation, answer.status, &answer.body, retry_after);
                self.attempts += 1;
                if !err.is_retryable() || self.attempts > self.opts.max_retries {
                    return Err(err);
                }
                let pause = retry_after.unwrap_or_else(|| backoff(self.attempts));
                if Instant::now() + pause > self.deadline {
                    return Err(err);
                }
                tracing::debug!(operation, attempt = self.attempts, ?pause, error = %err, "retrying DPS request");
                tokio::time::sleep(pause).await;
                continue;
            }
            let status: RegistrationOperationStatus = serde_json::from_slice(&answer.body)
                .map_err(|e| DpsError::Decode {
                    operation,
                    detail: format!("{e} in {}", snippet(&answer.body)),
                })?;
            match next_step(self.registration_id, &status)? {
                Next::Done(state) => return Ok(*state),
                Next::Poll(op) => {
                    let pause = retry_after.unwrap_or(self.opts.default_poll_interval);
                    self.operation_id = Some(op.clone());
                    if Instant::now() + pause > self.deadline {
                        return Err(self.deadline_exceeded());
                    }
                    tokio::time::sleep(pause).await;
                    poll = Some(op);
                }
            }
        }
    }
}

/// An answer of DPS: the status of its topic, its `retry-after`, its body.
struct Answer {
    status: u16,
    retry_after: Option<u64>,
    body: bytes::Bytes,
}

/// One MQTT connection: packets in and out through the codec.
struct Conn {
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    buffer: BytesMut,
    /// Packets encoded, not yet written.
    out: BytesMut,
    next_packet_id: u16,
    timeout: Duration,
    /// The CONNECT and SUBSCRIBE sent whose acknowledgements are still to be read.
    handshake: Option<Handshake>,
}

/// What [`Conn::finish_handshake`] checks.
struct Handshake {
    registration_id: String,
    subscribe_pkid: u16,
}

impl Conn {
    /// The next packet id (1..=65535; 0 is not one), also used as the request id.
    fn packet_id(&mut self) -> u16 {
        self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
        self.next_packet_id
    }

    async fn send(&mut self, packet: Packet, operation: &'static str) -> Result<(), DpsError> {
        self.queue(packet, operation)?;
        self.flush(operation).await
    }

    /// Encodes `packet` to be written by the next [`Conn::flush`].
    fn queue(&mut self, packet: Packet, operation: &'static str) -> Result<(), DpsError> {
        packet
            .write(&mut self.out, MAX_PACKET_SIZE)
            .map(|_| ())
            .map_err(|e| DpsError::Decode {
                operation,
                detail: format!("cannot encode the packet: {e}"),
            })
    }

    /// Writes what was queued, in one go.
    async fn flush(&mut self, operation: &'static str) -> Result<(), DpsError> {
        let out = self.out.split();
        let io = async {
            self.tls.write_all(&out).await?;
            self.tls.flush().await
        };
        match tokio::time::timeout(self.timeout, io).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(DpsError::Send {
                operation,
                detail: error_chain(&e),
            }),
            Err(_) => Err(DpsError::Send {
                operation,
                detail: "writing to DPS timed out".into(),
            }),
        }
    }

    /// The next packet from DPS.
    async fn recv(&mut self, operation: &'static str) -> Result<Packet, DpsError> {
        loop {
            match Packet::read(&mut self.buffer, MAX_PACKET_SIZE) {
                Ok(p) => return Ok(p),
                Err(PacketError::InsufficientBytes(_)) => {}
                Err(e) => {
                    return Err(DpsError::Decode {
                        operation,
                        detail: format!("unreadable MQTT packet: {e}"),
                    })
                }
            }
            let read = tokio::time::timeout(self.timeout, self.tls.read_buf(&mut self.buffer));
            match read.await {
                Ok(Ok(0)) => {
                    return Err(DpsError::Send {
                        operation,
                        detail: "DPS closed the MQTT connection before answering".into(),
                    })
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(DpsError::Send {
                        operation,
                        detail: error_chain(&e),
                    })
                }
                Err(_) => {
                    return Err(DpsError::Send {
                        operation,
                        detail: format!("no answer from DPS within {:?}", self.timeout),
                    })
                }
            }
        }
    }

    /// Reads the CONNACK (a refusal is [`DpsError::MqttConnectRefused`]) and the SUBACK of
    /// the handshake, once.
    async fn finish_handshake(&mut self) -> Result<(), DpsError> {
        let Some(handshake) = self.handshake.take() else {
            return Ok(());
        };
        match self.recv("connect").await? {
            Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => {}
            Packet::ConnAck(ack) => {
                return Err(DpsError::MqttConnectRefused {
                    registration_id: handshake.registration_id,
                    reason: connack_reason(ack.code).to_owned(),
                })
            }
            other => return Err(unexpected("connect", &other)),
        }
        loop {
            match self.recv("subscribe").await? {
                Packet::SubAck(ack) if ack.pkid == handshake.subscribe_pkid => {
                    if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                        return Err(DpsError::Decode {
                            operation: "subscribe",
                            detail: format!("DPS refused the subscription to {RESPONSE_FILTER}"),
                        });
                    }
                    return Ok(());
                }
                Packet::PingResp => {}
                other => return Err(unexpected("subscribe", &other)),
            }
        }
    }

    /// Waits for the answer to request `rid`, acknowledging what DPS publishes.
    async fn answer(&mut self, operation: &'static str, rid: &str) -> Result<Answer, DpsError> {
        loop {
            let publish = match self.recv(operation).await? {
                Packet::Publish(p) => p,
                Packet::PubAck(_) | Packet::PingResp => continue,
                other => return Err(unexpected(operation, &other)),
            };
            if publish.qos == QoS::AtLeastOnce {
                // Leaves with the next request (or the DISCONNECT).
                self.queue(Packet::PubAck(PubAck::new(publish.pkid)), operation)?;
            }
            let Some((status, answer_rid, retry_after)) = parse_answer_topic(&publish.topic) else {
                tracing::debug!(topic = %publish.topic, "ignoring a DPS message on an unknown topic");
                continue;
            };
            if answer_rid == rid {
                return Ok(Answer {
                    status,
                    retry_after,
                    body: publish.payload,
                });
            }
        }
    }

    /// `DISCONNECT` and TLS close; errors do not matter any more.
    async fn disconnect(&mut self) {
        let _ = self.send(Packet::Disconnect, "disconnect").await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.tls.shutdown()).await;
    }
}

/// Reads `$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]`.
fn parse_answer_topic(topic: &str) -> Option<(u16, String, Option<u64>)> {
    let (status, query) = topic.strip_prefix(RESPONSE_PREFIX)?.split_once("/?")?;
    let status = status.parse().ok()?;
    let mut rid = None;
    let mut retry_after = None;
    for (k, v) in query.split('&').filter_map(|p| p.split_once('=')) {
        match k {
            "$rid" => rid = Some(v.to_owned()),
            "retry-after" => retry_after = v.parse().ok(),
            _ => {}
        }
    }
    Some((status, rid?, retry_after))
}

fn connack_reason(code: ConnectReturnCode) -> &'static str {
    match code {
        ConnectReturnCode::Success => "accepted",
        ConnectReturnCode::RefusedProtocolVersion => "unacceptable protocol version (1)",
        ConnectReturnCode::BadClientId => {
            "identifier rejected (2): the client id must be the registration id"
        }
        ConnectReturnCode::ServiceUnavailable => "server unavailable (3)",
        ConnectReturnCode::BadUserNamePassword => {
            "bad user name or password (4): check the ID scope, the registration id and the api-version"
        }
        ConnectReturnCode::NotAuthorized => "not authorized (5)",
    }
}

fn unexpected(operation: &'static str, packet: &Packet) -> DpsError {
    DpsError::Decode {
        operation,
        detail: format!("unexpected MQTT packet {packet:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_topics() {
        assert_eq!(
            parse_answer_topic("$dps/registrations/res/202/?$rid=3&retry-after=2"),
            Some((202, "3".into(), Some(2)))
        );
        assert_eq!(
            parse_answer_topic("$dps/registrations/res/401/?$rid=abc"),
            Some((401, "abc".into(), None))
        );
        assert_eq!(
            parse_answer_topic("$dps/registrations/res/xx/?$rid=1"),
            None
        );
        assert_eq!(
            parse_answer_topic("$dps/registrations/res/200/?retry-after=1"),
            None
        );
        assert_eq!(parse_answer_topic("devices/x/messages"), None);
    }

    #[test]
    fn host_ports() {
        assert_eq!(
            split_host_port("127.0.0.1:8883"),
            Some(("127.0.0.1".into(), 8883))
        );
        assert_eq!(split_host_port("[::1]:1"), Some(("::1".into(), 1)));
        assert_eq!(split_host_port("example.net"), None);
        assert_eq!(split_host_port(":1"), None);
        assert_eq!(split_host_port("h:99999"), None);
        let endpoint = url::Url::parse("https://global.azure-devices-provisioning.net").unwrap();
        let c = Connector::new(&endpoint, None, None, None).unwrap();
        assert_eq!(
            (c.host.as_str(), c.port),
            ("global.azure-devices-provisioning.net", 8883)
        );
        assert!(matches!(
            Connector::new(&endpoint, Some("nohost"), None, None),
            Err(DpsError::InvalidEndpoint(_))
        ));
    }
}
