//! A raw MQTT 3.1.1 test client for the emulator's DPS MQTT listener: TLS (1.2 or 1.3, with or
//! without a client certificate) and single packets in and out through `rumqttc`'s codec, so a
//! test can send exactly what a device SDK (or a broken device) sends and see exactly what
//! comes back, down to the connection being closed.
#![allow(dead_code)]

use bytes::BytesMut;
use iotc::dps::wire::mqtt::{POLL_TOPIC, REGISTER_TOPIC, RESPONSE_FILTER};
use rumqttc::mqttbytes::v4::{Connect, Packet, Publish, Subscribe};
use rumqttc::mqttbytes::QoS;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Raw {
    pub tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    buffer: BytesMut,
}

/// What reading from the listener gave.
#[derive(Debug, PartialEq)]
pub enum Read {
    Packet(Packet),
    /// The listener closed the connection.
    Closed,
}

pub struct Tls<'a> {
    pub ca_pem: &'a [u8],
    /// Leaf first, then the chain (DER), and the PKCS#8 key.
    pub identity: Option<(Vec<Vec<u8>>, Vec<u8>)>,
    pub tls12_only: bool,
    /// Offer ALPN `mqtt` (as some device stacks do) in the handshake.
    pub offer_alpn_mqtt: bool,
}

impl<'a> Tls<'a> {
    /// TLS 1.2 or 1.3, no client certificate, no ALPN.
    pub fn plain(ca_pem: &'a [u8]) -> Tls<'a> {
        Tls {
            ca_pem,
            identity: None,
            tls12_only: false,
            offer_alpn_mqtt: false,
        }
    }
}

impl Raw {
    pub async fn connect(host: &str, tls: Tls<'_>) -> Raw {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(tls.ca_pem) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = if tls.tls12_only {
            &[&rustls::version::TLS12]
        } else {
            rustls::DEFAULT_VERSIONS
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match tls.identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(
                    chain.into_iter().map(CertificateDer::from).collect(),
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        if tls.offer_alpn_mqtt {
            config.alpn_protocols = vec![b"mqtt".to_vec()];
        }
        let (ip, port) = host.rsplit_once(':').unwrap();
        let tcp = tokio::net::TcpStream::connect((ip, port.parse::<u16>().unwrap()))
            .await
            .expect("TCP connect to the MQTT listener");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from(ip.to_owned()).unwrap(), tcp)
            .await
            .expect("TLS handshake with the MQTT listener");
        Raw {
            tls,
            buffer: BytesMut::new(),
        }
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        // A write may fail once the listener has closed: the test reads what happened next.
        let _ = self.tls.write_all(bytes).await;
        let _ = self.tls.flush().await;
    }

    pub async fn send(&mut self, packet: Packet) {
        self.send_bytes(&encode(&packet)).await;
    }

    /// The next packet, or `Closed`; panics when nothing comes within 20 s.
    pub async fn read(&mut self) -> Read {
        loop {
            match Packet::read(&mut self.buffer, 1024 * 1024) {
                Ok(p) => return Read::Packet(p),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("the listener sent an unreadable packet: {e}"),
            }
            // Longer than the listener's own 10 s CONNECT timeout, so a test sees its verdict.
            let n =
                tokio::time::timeout(Duration::from_secs(20), self.tls.read_buf(&mut self.buffer))
                    .await
                    .expect("the listener answers or closes within 20 s");
            match n {
                Ok(0) | Err(_) => return Read::Closed,
                Ok(_) => {}
            }
        }
    }

    /// The next PUBLISH from the listener (acknowledging nothing), or panics.
    pub async fn answer(&mut self) -> Publish {
        loop {
            match self.read().await {
                Read::Packet(Packet::Publish(p)) => return p,
                Read::Packet(Packet::PubAck(_)) => continue,
                other => panic!("expected an answer, got {other:?}"),
            }
        }
    }

    /// CONNECT as `rid` with `password` (empty: none), expecting CONNACK accepted, then
    /// SUBSCRIBE to the answers at QoS 1.
    pub async fn register_session(&mut self, scope: &str, rid: &str, password: &str) {
        self.send(connect(scope, rid, password, true)).await;
        match self.read().await {
            Read::Packet(Packet::ConnAck(a)) => {
                assert_eq!(a.code, rumqttc::ConnectReturnCode::Success, "{a:?}");
                assert!(!a.session_present, "DPS keeps no session");
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
        self.send(subscribe(1)).await;
        assert!(matches!(self.read().await, Read::Packet(Packet::SubAck(_))));
    }
}

pub fn encode(packet: &Packet) -> Vec<u8> {
    let mut b = BytesMut::new();
    packet.write(&mut b, 4 * 1024 * 1024).unwrap();
    b.to_vec()
}

pub fn connect(scope: &str, rid: &str, password: &str, clean: bool) -> Packet {
    let mut c = Connect::new(rid);
    c.clean_session = clean;
    c.keep_alive = 60;
    c.set_login(
        format!("{scope}/registrations/{rid}/api-version=2019-03-31"),
        password,
    );
    Packet::Connect(c)
}

/// `SUBSCRIBE $dps/registrations/res/#` at QoS 1.
pub fn subscribe(pkid: u16) -> Packet {
    let mut sub = Subscribe::new(RESPONSE_FILTER, QoS::AtLeastOnce);
    sub.pkid = pkid;
    Packet::Subscribe(sub)
}

pub fn register(rid: u16, body: &str) -> Packet {
    let mut p = Publish::new(
        format!("{REGISTER_TOPIC}?$rid={rid}"),
        QoS::AtLeastOnce,
        body.as_bytes().to_vec(),
    );
    p.pkid = rid;
    Packet::Publish(p)
}

pub fn poll(rid: u16, operation_id: &str) -> Packet {
    let mut p = Publish::new(
        format!("{POLL_TOPIC}?$rid={rid}&operationId={operation_id}"),
        QoS::AtLeastOnce,
        b" ".to_vec(),
    );
    p.pkid = rid;
    Packet::Publish(p)
}

/// The status of an answer's topic (`$dps/registrations/res/{status}/?...`).
pub fn status(p: &Publish) -> u16 {
    p.topic
        .strip_prefix("$dps/registrations/res/")
        .and_then(|t| t.split('/').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an answer topic: {}", p.topic))
}

pub fn json(p: &Publish) -> serde_json::Value {
    serde_json::from_slice(&p.payload).expect("answers are JSON")
}
