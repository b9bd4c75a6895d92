//! TLS for the emulator's listeners: the CA kept in the data folder, the server certificate
//! it signs for `localhost`, `127.0.0.1` and the names given with `--tls-name` ([`TlsName`]:
//! DNS names as dNSName, addresses as iPAddress SANs), and one accept loop shared by the IoT
//! Central and the DPS listeners (every listener serves the one certificate, so a device on
//! the LAN checks the same names whichever it talks to).
//!
//! The CA survives restarts (clients keep trusting the same `caCert`); the server certificate
//! is re-issued at every start. The acceptor asks for a client certificate but does not
//! require one and does not judge the chain: rustls still checks that the client proved
//! possession of the leaf's key in the handshake, and the accept loop hands the presented
//! chain to the request handlers as [`PeerCertificates`], where DPS decides against its
//! enrollment groups (the IoT Central API ignores it).

use super::EmulatorError;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use zeroize::Zeroizing;

/// File name of the CA certificate in the data folder (`caCert` of the ready record).
pub const CA_CERT_FILE: &str = "ca_cert.pem";
/// File name of the CA private key in the data folder (mode 0600).
pub const CA_KEY_FILE: &str = "ca_key.pem";

/// A name the server certificate holds besides `localhost` and `127.0.0.1`: a DNS name (a
/// dNSName SAN) or an IP address (an iPAddress SAN, never a DNS name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsName {
    /// A DNS name (`bench-host.lan`).
    Dns(String),
    /// An IPv4 or IPv6 address (`192.0.2.10`, `fd00::10`).
    Ip(std::net::IpAddr),
}

impl std::str::FromStr for TlsName {
    type Err = String;

    /// Reads an address, else a DNS name as TLS clients check it (no wildcard, no port, no
    /// scheme, no trailing dot).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(ip) = s.parse::<std::net::IpAddr>() {
            return Ok(TlsName::Ip(ip));
        }
        let bracketed = s.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
        if let Some(ip) = bracketed.and_then(|r| r.parse::<std::net::Ipv6Addr>().ok()) {
            return Ok(TlsName::Ip(ip.into()));
        }
        let dns_ok = !s.ends_with('.')
            && matches!(
                rustls::pki_types::ServerName::try_from(s),
                Ok(rustls::pki_types::ServerName::DnsName(_))
            );
        if dns_ok {
            Ok(TlsName::Dns(s.to_ascii_lowercase()))
        } else {
            Err(format!(
                "{s:?} is neither an IP address nor a DNS name (letters, digits, '-' and '.', \
                 no wildcard, port or scheme)"
            ))
        }
    }
}

impl std::fmt::Display for TlsName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsName::Dns(d) => f.write_str(d),
            TlsName::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// The certificate chain a TLS client presented (leaf first), empty when it sent none.
/// Inserted into every request's extensions by [`serve`].
#[derive(Debug, Clone, Default)]
pub struct PeerCertificates(pub Vec<Vec<u8>>);

/// The emulator's TLS material: the CA (PEM, path) and the current server certificate.
pub struct Pki {
    /// Path of the CA certificate PEM.
    pub ca_cert_path: PathBuf,
    /// The CA certificate PEM.
    pub ca_cert_pem: String,
    /// The TLS acceptor configuration (server cert chain, optional client certificates).
    pub server_config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("ca_cert_path", &self.ca_cert_path)
            .finish_non_exhaustive()
    }
}

fn pki_err(what: &str, e: impl std::fmt::Display) -> EmulatorError {
    EmulatorError::Tls(format!("{what}: {e}"))
}

/// Loads the CA from `data_dir` (or makes one with `crate::cert`), issues a fresh server
/// certificate for `localhost`, `127.0.0.1` and `names`, and builds the acceptor
/// configuration.
pub fn load_or_create(data_dir: &Path, names: &[TlsName]) -> Result<Pki, EmulatorError> {
    use crate::cert::{Authority, CaOptions, LeafOptions};
    let cert_path = data_dir.join(CA_CERT_FILE);
    let key_path = data_dir.join(CA_KEY_FILE);
    let ca = if cert_path.exists() && key_path.exists() {
        let (cert_pem, key_pem) = read_kept_pair(&cert_path, &key_path)?;
        Authority::from_pem(&cert_pem, &key_pem, None, None)
            .map_err(|e| pki_err("the CA in the data folder", e))?
    } else {
        let ca = Authority::new_root(&CaOptions {
            cn: Some("iotc emulator CA".into()),
            path_len: Some(0),
            ..CaOptions::default()
        })
        .map_err(|e| pki_err("CA", e))?;
        let key = ca
            .issued()
            .key
            .as_ref()
            .ok_or_else(|| pki_err("CA", "no private key"))?;
        write_private(&key_path, key.pkcs8_pem().expose().as_bytes())?;
        std::fs::write(&cert_path, ca.cert_pem())
            .map_err(|e| EmulatorError::Io(format!("write {}", cert_path.display()), e))?;
        ca
    };
    let mut dns = vec!["localhost"];
    let mut ips = vec![std::net::IpAddr::from([127, 0, 0, 1])];
    for n in names {
        match n {
            TlsName::Dns(d) if !dns.contains(&d.as_str()) => dns.push(d),
            TlsName::Ip(ip) if !ips.contains(ip) => ips.push(*ip),
            _ => {}
        }
    }
    let server = ca
        .issue_server(&dns, &ips, &LeafOptions::default())
        .map_err(|e| pki_err("server certificate", e))?;
    let server_key = server
        .key
        .as_ref()
        .ok_or_else(|| pki_err("server certificate", "no private key"))?;
    let chain: Vec<CertificateDer<'static>> = vec![
        CertificateDer::from(server.cert_der.clone()),
        CertificateDer::from(ca.cert_der().to_vec()),
    ];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.pkcs8_der().to_vec()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(AnyClientCert {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| pki_err("TLS versions", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| pki_err("TLS server configuration", e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Pki {
        ca_cert_path: cert_path,
        ca_cert_pem: ca.cert_pem().to_owned(),
        server_config: Arc::new(config),
    })
}

/// Reads a certificate and its private key kept in the data folder (PEM text), narrowing the
/// key file to 0600 first: an earlier version, a copied data folder or an old umask may have
/// left it readable by others.
pub(crate) fn read_kept_pair(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(String, Zeroizing<String>), EmulatorError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(key_path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| EmulatorError::Io(format!("chmod {}", key_path.display()), e))?;
    }
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map_err(|e| EmulatorError::Io(format!("read {}", p.display()), e))
    };
    Ok((read(cert_path)?, Zeroizing::new(read(key_path)?)))
}

/// Writes a private file: mode 0600 before the first byte is written, whether the file is new
/// (created with that mode) or left by an earlier version with a wider one (narrowed first).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), EmulatorError> {
    use std::io::Write;
    let mut f = open_private(path, true)
        .map_err(|e| EmulatorError::Io(format!("create {}", path.display()), e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| EmulatorError::Io(format!("write {}", path.display()), e))
}

/// Opens (creating if missing) a file that holds secrets, with mode 0600 set on the open file
/// before anything is written to it: the creation mode covers a new file whatever the umask
/// (a umask only takes bits away), the `fchmod` narrows a file that already existed.
pub(crate) fn open_private(path: &Path, truncate: bool) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(truncate);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let f = opts.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(f)
}

/// Asks for a client certificate, accepts any chain (DPS judges it per request), but keeps
/// rustls's check of the handshake signature, so a presented leaf is always proven.
#[derive(Debug)]
struct AnyClientCert {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Marker a handler puts in a response's extensions to make the accept loop drop the
/// connection instead of answering (fault injection).
#[derive(Debug, Clone, Copy)]
pub struct DropConnection;

/// The largest request body read (well above what any handler accepts, so the handlers'
/// own limits answer first, in the service's error shape); a larger one ends the connection.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Serves `app` over TLS on `listener` until `shutdown` turns true, then stops accepting and
/// lets open connections finish their current request.
pub async fn serve(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    app: axum::Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (tcp, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let mut conn_shutdown = shutdown.clone();
        tasks.spawn(async move {
            let _ = tcp.set_nodelay(true);
            let tls = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(tcp),
            )
            .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!("TLS handshake failed: {e}");
                    return;
                }
                Err(_) => return,
            };
            let peer = PeerCertificates(
                tls.get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| c.iter().map(|c| c.as_ref().to_vec()).collect())
                    .unwrap_or_default(),
            );
            let service = hyper::service::service_fn(move |mut req: http::Request<_>| {
                req.extensions_mut().insert(peer.clone());
                let app = app.clone();
                async move {
                    use tower::ServiceExt;
                    // The whole body is read before the app answers. A handler that refuses a
                    // request early (a bad api-version, a failed check) would otherwise leave
                    // it unread, and hyper then closes the keep-alive connection after the
                    // answer, racing the client's next request on it (seen as "connection
                    // closed without response" by schemathesis and python-requests).
                    let (parts, body) = req.into_parts();
                    let body = axum::body::to_bytes(axum::body::Body::new(body), MAX_BODY)
                        .await
                        .map_err(|e| std::io::Error::other(format!("request body: {e}")))?;
                    let req = http::Request::from_parts(parts, axum::body::Body::from(body));
                    let resp = match app.oneshot(req).await {
                        Ok(r) => r,
                        Err(e) => match e {},
                    };
                    if resp.extensions().get::<DropConnection>().is_some() {
                        return Err(std::io::Error::other(
                            "connection dropped (fault injection)",
                        ));
                    }
                    Ok::<_, std::io::Error>(resp)
                }
            });
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let conn =
                builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = conn_shutdown.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn).await;
                }
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}
