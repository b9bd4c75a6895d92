//! DPS over MQTT 3.1.1 (over TLS), as Microsoft documents it ("Communicate with DPS using the
//! MQTT protocol") and as the official SDKs speak it, on its own listener beside the HTTPS one.
//!
//! Devices that register over MQTT are the same registrations as over HTTPS: every request
//! goes through the functions of [`super`] (the one attestation check, the one registry), so
//! only the framing differs. A connection carries:
//! - `CONNECT` with client id = registration id and user name
//!   `{idScope}/registrations/{registrationId}/api-version={v}` (anything after `&` is the
//!   SDK's client version, ignored); the password, when there is one, is a SAS token; an
//!   X.509 device presents leaf + chain in the TLS handshake instead. Clean session on or off
//!   are both accepted and every session is new (`sessionPresent` 0), as DPS does;
//! - `SUBSCRIBE $dps/registrations/res/#` (QoS 0 or 1; QoS 2 is granted as 1, other filters
//!   are refused in the `SUBACK`);
//! - `PUBLISH $dps/registrations/PUT/iotdps-register/?$rid={rid}` with a `DeviceRegistration`
//!   body, and `PUBLISH $dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={op}`
//!   whose payload is ignored (the Node SDK sends a blank), QoS 0 or 1;
//! - answers on `$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]` with the body
//!   the HTTPS listener would send for that status.
//!
//! What ends a connection: a first packet that is not `CONNECT` (closed without `CONNACK`, as
//! MQTT says), a user name or client id DPS would not take (`CONNACK` 4 or 2, the reason in the
//! emulator's log), a packet the codec refuses or larger than [`MAX_PACKET_SIZE`], a topic
//! other than the two above, QoS 2, a second `CONNECT`, keep-alive silence, and a refused
//! credential, which is first answered `401` with DPS's error body (real DPS accepts the
//! `CONNECT` of a device whose token it later refuses: MicrosoftDocs/azure-docs#43157) and
//! leaves the device a moment to read it and unsubscribe. Each ends that connection only; the
//! listener goes on serving the others.
//!
//! The protocol logic is the sans-I/O [`Session`] (bytes in, [`Step`]s out), so the packet path
//! is fuzzed (`fuzz/fuzz_targets/dps_mqtt.rs`) and tested without sockets; the packets are
//! read and written by the codec of `rumqttc` (`mqttbytes::v4`), not by hand.

use super::attest::Attested;
use super::{Dps, DpsError, FaultAnswer};
use crate::dps::wire::mqtt::{POLL_TOPIC, REGISTER_TOPIC, RESPONSE_FILTER, RESPONSE_PREFIX};
use crate::dps::wire::RegistrationOperationStatus;
use crate::secret::Secret;
use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{Error as PacketError, Protocol, QoS};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest packet a device may send (bytes, fixed header included). A register body is a
/// registration id and a small custom payload; anything near this size is not a device.
pub const MAX_PACKET_SIZE: usize = 64 * 1024;
/// Largest packet the listener writes (an assigned registration state is about 2 KB).
const MAX_OUTGOING_SIZE: usize = 1024 * 1024;
/// Time a client has for the TLS handshake and its `CONNECT`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a refused client gets to read the refusal (and unsubscribe, disconnect) before the
/// connection is closed.
const LINGER: Duration = Duration::from_secs(2);
/// Silence allowed when the client asked for no keep-alive (MQTT: keep alive 0).
const IDLE_WITHOUT_KEEP_ALIVE: Duration = Duration::from_secs(30 * 60);

/// Who a connection said it is in its `CONNECT`.
#[derive(Clone)]
pub struct Identity {
    /// The registration id (client id and user name agree on it).
    pub registration_id: String,
    /// The api-version of the user name.
    pub api_version: String,
    /// The password: a SAS token, or `None` for an X.509 device.
    password: Option<Secret>,
    /// The keep-alive the client asked for (seconds; 0 = none).
    pub keep_alive: u16,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("registration_id", &self.registration_id)
            .field("api_version", &self.api_version)
            .field("password", &self.password.as_ref().map(|_| "[elided]"))
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

/// A device request read from a `PUBLISH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `PUT iotdps-register`: the `DeviceRegistration` body as sent.
    Register {
        /// The request id to answer to (`$rid`, as sent).
        rid: String,
        /// The payload.
        body: Bytes,
    },
    /// `GET iotdps-get-operationstatus`.
    Poll {
        /// The request id to answer to (`$rid`, as sent).
        rid: String,
        /// The operation polled.
        operation_id: String,
    },
}

impl Request {
    /// The request id to answer to.
    pub fn rid(&self) -> &str {
        match self {
            Request::Register { rid, .. } | Request::Poll { rid, .. } => rid,
        }
    }
}

/// What the connection must do next, in order.
#[derive(Debug)]
pub enum Step {
    /// Write this packet.
    Send(Packet),
    /// Serve this request and write its answer ([`Session::answer`]).
    Serve(Request),
    /// Close the connection (after writing what came before); the reason is for the log.
    Close(String),
    /// The device sent `DISCONNECT`: close the connection, nothing went wrong.
    End,
}

#[derive(Debug)]
enum State {
    AwaitingConnect,
    Connected(Identity),
    Closed,
}

/// One MQTT connection's protocol state: bytes in, [`Step`]s out, no I/O.
#[derive(Debug)]
pub struct Session {
    id_scope: String,
    state: State,
    buffer: BytesMut,
    /// The QoS granted on [`RESPONSE_FILTER`]; `None` while not subscribed.
    response_qos: Option<QoS>,
    next_packet_id: u16,
}

impl Session {
    /// A new connection to the DPS instance of `id_scope`.
    pub fn new(id_scope: &str) -> Session {
        Session {
            id_scope: id_scope.to_owned(),
            state: State::AwaitingConnect,
            buffer: BytesMut::new(),
            response_qos: None,
            next_packet_id: 0,
        }
    }

    /// The identity of an accepted `CONNECT`.
    pub fn identity(&self) -> Option<&Identity> {
        match &self.state {
            State::Connected(id) => Some(id),
            _ => None,
        }
    }

    /// Reads `input` (any split of the byte stream) and returns what to do for every packet
    /// it completes. After a [`Step::Close`] or [`Step::End`] nothing more is read.
    pub fn feed(&mut self, input: &[u8]) -> Vec<Step> {
        let mut steps = Vec::new();
        if matches!(self.state, State::Closed) {
            return steps;
        }
        self.buffer.extend_from_slice(input);
        // The first byte tells a CONNECT (type 1, no flags) from anything else, so a stream
        // that cannot be MQTT (an HTTP request, TLS inside TLS) ends now, not at the timeout.
        if matches!(self.state, State::AwaitingConnect)
            && self.buffer.first().is_some_and(|b| *b != 0x10)
        {
            self.state = State::Closed;
            self.buffer.clear();
            steps.push(Step::Close("the first packet is not CONNECT".into()));
            return steps;
        }
        loop {
            match Packet::read(&mut self.buffer, MAX_PACKET_SIZE) {
                Ok(packet) => {
                    let done = self.on_packet(packet, &mut steps);
                    if done {
                        self.state = State::Closed;
                        self.buffer.clear();
                        return steps;
                    }
                }
                Err(PacketError::InsufficientBytes(_)) => return steps,
                Err(e) => {
                    self.state = State::Closed;
                    self.buffer.clear();
                    steps.push(Step::Close(format!("unreadable packet: {e}")));
                    return steps;
                }
            }
        }
    }

    /// Handles one packet; true when the connection must close.
    fn on_packet(&mut self, packet: Packet, steps: &mut Vec<Step>) -> bool {
        let close = |steps: &mut Vec<Step>, why: String| {
            steps.push(Step::Close(why));
            true
        };
        let identity = match &self.state {
            State::AwaitingConnect => {
                let Packet::Connect(connect) = packet else {
                    return close(steps, "the first packet is not CONNECT".into());
                };
                if connect.protocol != Protocol::V4 {
                    steps.push(connack(ConnectReturnCode::RefusedProtocolVersion));
                    return close(steps, "not MQTT 3.1.1 (protocol level 4)".into());
                }
                let login = connect.login.unwrap_or_else(|| rumqttc::Login::new("", ""));
                let parsed = match parse_username(&login.username, &self.id_scope) {
                    Ok(p) => p,
                    Err(why) => {
                        steps.push(connack(ConnectReturnCode::BadUserNamePassword));
                        return close(steps, why);
                    }
                };
                if connect.client_id != parsed.registration_id {
                    steps.push(connack(ConnectReturnCode::BadClientId));
                    return close(
                        steps,
                        format!(
                            "the client id {:?} is not the registration id {:?} of the user name",
                            connect.client_id, parsed.registration_id
                        ),
                    );
                }
                self.state = State::Connected(Identity {
                    registration_id: parsed.registration_id,
                    api_version: parsed.api_version,
                    password: (!login.password.is_empty()).then(|| Secret::new(login.password)),
                    keep_alive: connect.keep_alive,
                });
                // DPS keeps no session, whatever the clean-session flag says.
                steps.push(connack(ConnectReturnCode::Success));
                return false;
            }
            State::Connected(identity) => identity,
            State::Closed => return true,
        };
        match packet {
            Packet::Subscribe(sub) => {
                let codes = sub
                    .filters
                    .iter()
                    .map(|f| {
                        if f.path == RESPONSE_FILTER {
                            let granted = match f.qos {
                                QoS::AtMostOnce => QoS::AtMostOnce,
                                _ => QoS::AtLeastOnce,
                            };
                            self.response_qos = Some(granted);
                            SubscribeReasonCode::Success(granted)
                        } else {
                            SubscribeReasonCode::Failure
                        }
                    })
                    .collect();
                steps.push(Step::Send(Packet::SubAck(SubAck::new(sub.pkid, codes))));
                false
            }
            Packet::Unsubscribe(unsub) => {
                if unsub.topics.iter().any(|t| t == RESPONSE_FILTER) {
                    self.response_qos = None;
                }
                steps.push(Step::Send(Packet::UnsubAck(UnsubAck::new(unsub.pkid))));
                false
            }
            Packet::Publish(publish) => {
                if publish.qos == QoS::ExactlyOnce {
                    return close(steps, "QoS 2 publishes are not supported by DPS".into());
                }
                let request = match parse_request(&publish.topic, publish.payload) {
                    Ok(r) => r,
                    Err(why) => {
                        return close(
                            steps,
                            format!(
                                "{why} (registration {:?}): DPS serves only {REGISTER_TOPIC}?$rid={{rid}} \
                                 and {POLL_TOPIC}?$rid={{rid}}&operationId={{id}}",
                                identity.registration_id
                            ),
                        )
                    }
                };
                if publish.qos == QoS::AtLeastOnce {
                    steps.push(Step::Send(Packet::PubAck(PubAck::new(publish.pkid))));
                }
                steps.push(Step::Serve(request));
                false
            }
            // The device acknowledging an answer: nothing is kept to be sent again.
            Packet::PubAck(_) => false,
            Packet::PingReq => {
                steps.push(Step::Send(Packet::PingResp));
                false
            }
            Packet::Disconnect => {
                steps.push(Step::End);
                true
            }
            Packet::Connect(_) => close(steps, "a second CONNECT on one connection".into()),
            other => close(
                steps,
                format!("a client does not send {:?} packets to DPS", kind(&other)),
            ),
        }
    }

    /// The `PUBLISH` that answers request `rid` with `status` and `body` (and `retry-after`
    /// seconds), at the QoS granted on [`RESPONSE_FILTER`]. `None` when the device has not
    /// subscribed: like a broker, DPS has nobody to deliver it to.
    pub fn answer(
        &mut self,
        rid: &str,
        status: u16,
        body: &[u8],
        retry_after: Option<u64>,
    ) -> Option<Packet> {
        let qos = self.response_qos?;
        let mut topic = format!("{RESPONSE_PREFIX}{status}/?$rid={rid}");
        if let Some(s) = retry_after {
            topic.push_str(&format!("&retry-after={s}"));
        }
        let mut publish = Publish::new(topic, qos, body.to_vec());
        if qos == QoS::AtLeastOnce {
            // Packet ids run 1..=65535; 0 is not a packet id.
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            publish.pkid = self.next_packet_id;
        }
        Some(Packet::Publish(publish))
    }
}

fn connack(code: ConnectReturnCode) -> Step {
    Step::Send(Packet::ConnAck(ConnAck::new(code, false)))
}

fn kind(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

struct Username {
    registration_id: String,
    api_version: String,
}

/// Reads `{idScope}/registrations/{registrationId}/api-version={v}[&...]`, with the checks
/// the HTTPS listener makes on the path and the query.
fn parse_username(username: &str, id_scope: &str) -> Result<Username, String> {
    let shape = || {
        format!(
            "the user name {username:?} is not {{idScope}}/registrations/{{registrationId}}/api-version={{version}}"
        )
    };
    let mut parts = username.splitn(4, '/');
    let (Some(scope), Some("registrations"), Some(registration_id), Some(params)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(shape());
    };
    if !scope.eq_ignore_ascii_case(id_scope) {
        return Err(format!("ID scope {scope:?} is not this DPS instance's"));
    }
    super::check_registration_id(registration_id).map_err(|e| e.message)?;
    let api_version = params
        .split('&')
        .find_map(|p| p.strip_prefix("api-version="))
        .ok_or_else(shape)?;
    super::api_version_ok(Some(api_version)).map_err(|e| e.message)?;
    Ok(Username {
        registration_id: registration_id.to_owned(),
        api_version: api_version.to_owned(),
    })
}

/// Reads a request topic: one of the two topic names, then `?` and `&`-separated parameters
/// (`$rid` always, `operationId` for a poll), values kept as sent.
fn parse_request(topic: &str, payload: Bytes) -> Result<Request, String> {
    let (name, query) = topic
        .split_once('?')
        .ok_or_else(|| format!("the topic {topic:?} has no ?$rid= parameter"))?;
    let param = |key: &str| {
        query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_owned())
            .filter(|v| !v.is_empty())
    };
    let rid = param("$rid").ok_or_else(|| format!("the topic {topic:?} has no $rid"))?;
    match name {
        REGISTER_TOPIC => Ok(Request::Register { rid, body: payload }),
        POLL_TOPIC => {
            let operation_id = param("operationId")
                .ok_or_else(|| format!("the poll topic {topic:?} has no operationId"))?;
            Ok(Request::Poll { rid, operation_id })
        }
        _ => Err(format!("unknown topic {topic:?}")),
    }
}

/// Serves DPS over MQTT on `listener` until `shutdown` turns true, then stops accepting and
/// gives open connections up to 5 s to end.
pub async fn serve(
    dps: Arc<Dps>,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    // The HTTP listeners' ALPN list would refuse a device that offers "mqtt"; MQTT on 8883
    // negotiates no application protocol.
    let mut config = (*tls).clone();
    config.alpn_protocols.clear();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!("DPS MQTT accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        tasks.spawn(connection(
            dps.clone(),
            acceptor.clone(),
            tcp,
            shutdown.clone(),
        ));
        while tasks.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

type Tls = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// What serving one request gives.
enum Outcome {
    /// Answer with this status, body and retry-after; close afterwards when `last`.
    Answer {
        status: u16,
        body: Vec<u8>,
        retry_after: Option<u64>,
        last: bool,
    },
    /// Drop the connection without an answer (fault injection).
    Drop,
}

async fn connection(
    dps: Arc<Dps>,
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let mut tls = match tokio::time::timeout(CONNECT_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!("DPS MQTT TLS handshake failed: {e}");
            return;
        }
        Err(_) => return,
    };
    let chain: Vec<Vec<u8>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.as_ref().to_vec()).collect())
        .unwrap_or_default();
    let mut session = Session::new(&dps.ctx.id_scope);
    // The attestation of this connection, once a request proved it: its credentials cannot
    // change while it lasts, so polls on it are not checked again.
    let mut attested: Option<Attested> = None;
    let mut read = vec![0u8; 16 * 1024];
    // Set once a credential was refused: until then the device may still read the refusal
    // and unsubscribe or disconnect (the SDKs do, and wait for the UNSUBACK), but no request
    // is served any more.
    let mut refused_at: Option<tokio::time::Instant> = None;
    loop {
        let idle = match (refused_at, session.identity()) {
            (Some(at), _) => (at + LINGER).saturating_duration_since(tokio::time::Instant::now()),
            (None, None) => CONNECT_TIMEOUT,
            (None, Some(id)) if id.keep_alive == 0 => IDLE_WITHOUT_KEEP_ALIVE,
            // MQTT: the server may close after one and a half keep-alive periods of silence.
            (None, Some(id)) => Duration::from_millis(u64::from(id.keep_alive) * 1500),
        };
        let n = tokio::select! {
            r = tokio::time::timeout(idle, tls.read(&mut read)) => match r {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => n,
                Err(_) => {
                    tracing::debug!("DPS MQTT connection silent for {idle:?}: closed");
                    return close(tls).await;
                }
            },
            _ = shutdown.changed() => return close(tls).await,
        };
        // What the packets of this read call for is written in one go, after them.
        let mut out = BytesMut::new();
        for step in session.feed(&read[..n]) {
            match step {
                Step::Send(packet) => encode(&packet, &mut out),
                Step::End => {
                    let _ = write(&mut tls, &out).await;
                    return close(tls).await;
                }
                Step::Close(why) => {
                    tracing::info!("DPS MQTT connection closed: {why}");
                    let _ = write(&mut tls, &out).await;
                    return close(tls).await;
                }
                Step::Serve(_) if refused_at.is_some() => {
                    tracing::info!("DPS MQTT connection closed: a request after a refusal");
                    let _ = write(&mut tls, &out).await;
                    return close(tls).await;
                }
                Step::Serve(request) => {
                    let Some(identity) = session.identity().cloned() else {
                        return;
                    };
                    let rid = request.rid().to_owned();
                    match serve_request(&dps, &identity, &chain, request, &mut attested).await {
                        Outcome::Drop => return,
                        Outcome::Answer {
                            status,
                            body,
                            retry_after,
                            last,
                        } => {
                            match session.answer(&rid, status, &body, retry_after) {
                                Some(packet) => encode(&packet, &mut out),
                                None => tracing::debug!(
                                    "DPS MQTT answer {status} to {:?} dropped: it has not \
                                     subscribed to {RESPONSE_FILTER}",
                                    identity.registration_id
                                ),
                            }
                            if last {
                                tracing::info!(
                                    "DPS MQTT connection of {:?} refused ({status}): closing",
                                    identity.registration_id
                                );
                                refused_at = Some(tokio::time::Instant::now());
                            }
                        }
                    }
                }
            }
        }
        if !out.is_empty() && write(&mut tls, &out).await.is_err() {
            return;
        }
    }
}

/// Appends `packet` to `out`. Every packet the session makes is within MQTT's limits and
/// [`MAX_OUTGOING_SIZE`], so a failure is a bug: logged, the packet left out.
fn encode(packet: &Packet, out: &mut BytesMut) {
    if let Err(e) = packet.write(out, MAX_OUTGOING_SIZE) {
        tracing::error!("DPS MQTT cannot encode {}: {e}", kind(packet));
    }
}

async fn write(tls: &mut Tls, out: &[u8]) -> std::io::Result<()> {
    tls.write_all(out).await?;
    tls.flush().await
}

async fn close(mut tls: Tls) {
    let _ = tokio::time::timeout(Duration::from_secs(1), tls.shutdown()).await;
}

async fn serve_request(
    dps: &Arc<Dps>,
    identity: &Identity,
    chain: &[Vec<u8>],
    request: Request,
    attested: &mut Option<Attested>,
) -> Outcome {
    if let Some(fault) = super::draw_fault(&dps.ctx).await {
        return match fault {
            FaultAnswer::Refuse(e) => refusal(e),
            FaultAnswer::Drop => Outcome::Drop,
        };
    }
    let registration_id = identity.registration_id.as_str();
    let authenticate = || {
        super::authenticate_with(
            dps,
            identity.password.as_ref().map(|p| p.expose().to_owned()),
            chain.to_vec(),
            registration_id,
        )
    };
    let result: Result<(u16, RegistrationOperationStatus), DpsError> = async {
        match request {
            Request::Register { body, .. } => {
                let reg = super::parse_body(&body, registration_id)?;
                let who = authenticate().await?;
                *attested = Some(who.clone());
                let op_id = super::begin_registration(dps, registration_id, reg, who).await?;
                Ok((202, RegistrationOperationStatus::assigning(op_id)))
            }
            Request::Poll { operation_id, .. } => {
                if attested.is_none() {
                    *attested = Some(authenticate().await?);
                }
                let (status, body) = super::poll_operation(dps, registration_id, &operation_id)?;
                Ok((status.as_u16(), body))
            }
        }
    }
    .await;
    match result {
        Ok((status, body)) => Outcome::Answer {
            status,
            body: serde_json::to_vec(&body).unwrap_or_default(),
            retry_after: (status == 202).then(|| super::retry_after_seconds(&dps.ctx.settings)),
            last: false,
        },
        Err(e) => refusal(e),
    }
}

/// An error as an answer; a refused credential is the connection's last answer.
fn refusal(e: DpsError) -> Outcome {
    Outcome::Answer {
        status: e.status.as_u16(),
        body: serde_json::to_vec(&e.body()).unwrap_or_default(),
        retry_after: e.retry_after,
        last: e.status == http::StatusCode::UNAUTHORIZED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::v4::{Connect, Subscribe};

    const SCOPE: &str = "0ne00000A0A";

    fn bytes(p: Packet) -> Vec<u8> {
        let mut b = BytesMut::new();
        p.write(&mut b, MAX_OUTGOING_SIZE).unwrap();
        b.to_vec()
    }

    fn subscribe(filter: &str, qos: QoS) -> Packet {
        let mut s = Subscribe::new(filter, qos);
        s.pkid = 1;
        Packet::Subscribe(s)
    }

    fn connect(client_id: &str, user: &str, password: &str) -> Vec<u8> {
        let mut c = Connect::new(client_id);
        c.set_login(user, password);
        bytes(Packet::Connect(c))
    }

    fn user(rid: &str) -> String {
        format!("{SCOPE}/registrations/{rid}/api-version=2019-03-31&ClientVersion=azure-iot-provisioning-device%2F1.9.1")
    }

    fn sent(steps: &[Step]) -> Vec<&Packet> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Send(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    fn closed(steps: &[Step]) -> Option<&str> {
        steps.iter().find_map(|s| match s {
            Step::Close(why) => Some(why.as_str()),
            _ => None,
        })
    }

    #[test]
    fn a_register_and_a_poll_as_the_node_sdk_sends_them() {
        let mut s = Session::new(SCOPE);
        let mut input = connect(
            "dev-1",
            &user("dev-1"),
            "SharedAccessSignature sr=x&sig=y&se=1",
        );
        input.extend(bytes(subscribe(RESPONSE_FILTER, QoS::AtLeastOnce)));
        let mut register = Publish::new(
            format!("{REGISTER_TOPIC}?$rid=7"),
            QoS::AtLeastOnce,
            br#"{"registrationId":"dev-1"}"#.to_vec(),
        );
        register.pkid = 3;
        input.extend(bytes(Packet::Publish(register)));
        // Fed one byte at a time: framing must not depend on how reads split the stream.
        let steps: Vec<Step> = input.iter().flat_map(|b| s.feed(&[*b])).collect();
        assert!(closed(&steps).is_none(), "{steps:?}");
        let packets = sent(&steps);
        assert_eq!(
            packets[0],
            &Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false))
        );
        assert_eq!(
            packets[1],
            &Packet::SubAck(SubAck::new(
                1,
                vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
            ))
        );
        assert_eq!(packets[2], &Packet::PubAck(PubAck::new(3)));
        assert!(matches!(
            steps.last(),
            Some(Step::Serve(Request::Register { rid, .. })) if rid == "7"
        ));
        let id = s.identity().unwrap();
        assert_eq!(id.registration_id, "dev-1");
        assert_eq!(id.api_version, "2019-03-31");
        assert!(!format!("{id:?}").contains("SharedAccessSignature"));

        let Some(Packet::Publish(answer)) = s.answer("7", 202, b"{}", Some(3)) else {
            panic!("subscribed, so answered");
        };
        assert_eq!(
            answer.topic,
            "$dps/registrations/res/202/?$rid=7&retry-after=3"
        );
        assert_eq!(answer.qos, QoS::AtLeastOnce);
        assert_ne!(answer.pkid, 0);

        // The poll's payload is a blank, not JSON.
        let poll = Publish::new(
            format!("{POLL_TOPIC}?$rid=8&operationId=4.abc.def"),
            QoS::AtMostOnce,
            b" ".to_vec(),
        );
        let steps = s.feed(&bytes(Packet::Publish(poll)));
        assert!(matches!(
            &steps[..],
            [Step::Serve(Request::Poll { rid, operation_id })] if rid == "8" && operation_id == "4.abc.def"
        ));
    }

    #[test]
    fn connect_refusals_name_their_reason() {
        let cases = [
            (
                connect(
                    "dev-1",
                    "other/registrations/dev-1/api-version=2019-03-31",
                    "",
                ),
                ConnectReturnCode::BadUserNamePassword,
                "ID scope",
            ),
            (
                connect("dev-1", &format!("{SCOPE}/registrations/dev-1"), ""),
                ConnectReturnCode::BadUserNamePassword,
                "is not {idScope}",
            ),
            (
                connect(
                    "dev-1",
                    &format!("{SCOPE}/registrations/dev-1/api-version=2001-01-01"),
                    "",
                ),
                ConnectReturnCode::BadUserNamePassword,
                "not supported",
            ),
            (
                connect("dev 1", &user("dev 1"), ""),
                ConnectReturnCode::BadUserNamePassword,
                "registration id",
            ),
            (
                connect("dev-2", &user("dev-1"), ""),
                ConnectReturnCode::BadClientId,
                "client id",
            ),
        ];
        for (input, code, why) in cases {
            let mut s = Session::new(SCOPE);
            let steps = s.feed(&input);
            assert_eq!(
                sent(&steps),
                vec![&Packet::ConnAck(ConnAck::new(code, false))],
                "{why}"
            );
            assert!(closed(&steps).unwrap().contains(why), "{steps:?}");
            assert!(s.feed(&input).is_empty(), "closed sessions read nothing");
        }
    }

    #[test]
    fn protocol_violations_close_without_serving() {
        let connected = || {
            let mut s = Session::new(SCOPE);
            s.feed(&connect("dev-1", &user("dev-1"), ""));
            s
        };
        let publish = |topic: &str, qos| {
            let mut p = Publish::new(topic, qos, vec![]);
            p.pkid = 1;
            bytes(Packet::Publish(p))
        };
        let cases: Vec<(Session, Vec<u8>, &str)> = vec![
            (
                Session::new(SCOPE),
                publish(&format!("{REGISTER_TOPIC}?$rid=1"), QoS::AtMostOnce),
                "not CONNECT",
            ),
            (
                connected(),
                publish("devices/dev-1/messages/events/", QoS::AtMostOnce),
                "no ?$rid",
            ),
            (
                connected(),
                publish("$dps/registrations/PUT/other/?$rid=1", QoS::AtMostOnce),
                "unknown topic",
            ),
            (
                connected(),
                publish(&format!("{POLL_TOPIC}?$rid=1"), QoS::AtMostOnce),
                "no operationId",
            ),
            (
                connected(),
                publish(&format!("{REGISTER_TOPIC}?$rid=1"), QoS::ExactlyOnce),
                "QoS 2",
            ),
            (
                connected(),
                connect("dev-1", &user("dev-1"), ""),
                "second CONNECT",
            ),
            (connected(), vec![0xff, 0x00], "unreadable"),
            (
                Session::new(SCOPE),
                b"GET / HTTP/1.1\r\n".to_vec(),
                "not CONNECT",
            ),
            (
                connected(),
                vec![0x30, 0xff, 0xff, 0xff, 0x7f],
                "unreadable",
            ),
        ];
        for (mut s, input, why) in cases {
            let steps = s.feed(&input);
            assert!(
                !steps.iter().any(|s| matches!(s, Step::Serve(_))),
                "{steps:?}"
            );
            let reason = closed(&steps).unwrap_or_else(|| panic!("{why}: {steps:?}"));
            assert!(reason.contains(why), "{reason}");
        }
    }

    #[test]
    fn oversized_packets_are_refused_from_their_header() {
        let mut s = Session::new(SCOPE);
        s.feed(&connect("dev-1", &user("dev-1"), ""));
        let big = Publish::new(
            format!("{REGISTER_TOPIC}?$rid=1"),
            QoS::AtMostOnce,
            vec![b' '; MAX_PACKET_SIZE],
        );
        let all = bytes(Packet::Publish(big));
        // The fixed header alone announces the size: no need to buffer the body.
        let steps = s.feed(&all[..8]);
        assert!(
            closed(&steps).is_some_and(|w| w.contains("size limit")),
            "{steps:?}"
        );
    }

    #[test]
    fn other_filters_are_refused_and_no_subscription_means_no_answer() {
        let mut s = Session::new(SCOPE);
        s.feed(&connect("dev-1", &user("dev-1"), ""));
        assert!(s.answer("1", 202, b"{}", None).is_none());
        let steps = s.feed(&bytes(subscribe(
            "$dps/registrations/res/200/#",
            QoS::AtLeastOnce,
        )));
        assert_eq!(
            sent(&steps),
            vec![&Packet::SubAck(SubAck::new(
                1,
                vec![SubscribeReasonCode::Failure]
            ))]
        );
        s.feed(&bytes(subscribe(RESPONSE_FILTER, QoS::ExactlyOnce)));
        let Some(Packet::Publish(p)) = s.answer("1", 200, b"{}", None) else {
            panic!("subscribed");
        };
        assert_eq!(p.qos, QoS::AtLeastOnce, "QoS 2 is granted as 1");
        assert_eq!(p.topic, "$dps/registrations/res/200/?$rid=1");
    }
}
