//! A TLS-terminating, request-counting proxy in front of the emulator that can lose answers.
//!
//! The emulator injects its faults *before* it handles a request. The dangerous case for a
//! non-idempotent call is the other one: the service did the work and the answer got lost. This
//! proxy forwards a request, lets the emulator do the work, and then — when told to — closes the
//! connection instead of answering. It logs every request it forwarded, so a test can count how
//! many times the emulator really received a call, and the `Authorization` headers it carried
//! (the SAS tokens a DPS client sends, in front of the emulator's DPS).

use super::Emu;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Request, Response, Uri};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    log: Vec<(String, String)>,
    authorizations: Vec<String>,
    lose: Vec<(String, String)>,
}

#[derive(Clone)]
struct LoseAnswer;

/// The running proxy.
pub struct Proxy {
    /// Its base URL (https://127.0.0.1:PORT).
    pub url: String,
    /// The CA that signed its TLS certificate.
    pub ca_pem: Vec<u8>,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Starts a proxy in front of `emu`'s IoT Central API, on its runtime.
    pub fn start(emu: &Emu) -> Proxy {
        emu.rt
            .block_on(Proxy::spawn(emu.api_url.trim_end_matches('/'), &emu.ca_pem))
    }

    /// Starts a proxy in front of `upstream` (a base URL whose TLS certificate `upstream_ca`
    /// signed), on the current runtime.
    pub async fn spawn(upstream: &str, upstream_ca: &[u8]) -> Proxy {
        let ca = iotc::cert::Authority::new_root(&Default::default()).unwrap();
        let server = ca
            .issue_server(
                &["localhost"],
                &["127.0.0.1".parse().unwrap()],
                &Default::default(),
            )
            .unwrap();
        let cert = rustls_pki_types::CertificateDer::from(server.cert_der.clone());
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(
            server.key.as_ref().unwrap().pkcs8_der().to_vec().into(),
        );
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let http = reqwest::Client::builder()
            .tls_certs_merge([reqwest::Certificate::from_pem(upstream_ca).unwrap()])
            .build()
            .unwrap();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let state = ProxyState {
            upstream: upstream.to_owned(),
            http,
            inner: inner.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let app = app.clone();
                            async move {
                                use tower::ServiceExt;
                                let resp = app
                                    .oneshot(req.map(Body::new))
                                    .await
                                    .unwrap_or_else(|e| match e {});
                                if resp.extensions().get::<LoseAnswer>().is_some() {
                                    Err(std::io::Error::other("answer lost on purpose"))
                                } else {
                                    Ok(resp)
                                }
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Proxy {
            url: format!("https://{addr}"),
            ca_pem: ca.cert_pem().as_bytes().to_vec(),
            inner,
            task,
        }
    }

    /// The answer to the next `method` request whose path ends with `suffix` will be lost
    /// (after the emulator handled the request).
    pub fn lose_next_answer(&self, method: &str, suffix: &str) {
        self.inner
            .lock()
            .unwrap()
            .lose
            .push((method.to_owned(), suffix.to_owned()));
    }

    /// The `Authorization` headers received, in order.
    pub fn authorizations(&self) -> Vec<String> {
        self.inner.lock().unwrap().authorizations.clone()
    }

    /// How many `method` requests with a path ending in `suffix` reached the emulator.
    pub fn count(&self, method: &str, suffix: &str) -> usize {
        self.inner
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|(m, p)| m == method && p.ends_with(suffix))
            .count()
    }
}

async fn forward(
    State(st): State<ProxyState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let path = uri.path().to_owned();
    let target = format!(
        "{}{}",
        st.upstream,
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let mut req = st.http.request(method.clone(), target).body(body.to_vec());
    for name in ["authorization", "content-type"] {
        if let Some(v) = headers.get(name) {
            req = req.header(name, v.clone());
        }
    }
    let upstream = req.send().await;
    let lose = {
        let mut g = st.inner.lock().unwrap();
        g.log.push((method.to_string(), path.clone()));
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        g.authorizations.push(auth.to_owned());
        let hit = g
            .lose
            .iter()
            .position(|(m, s)| *m == method.as_str() && path.ends_with(s.as_str()));
        hit.map(|i| g.lose.remove(i)).is_some()
    };
    let mut resp = match upstream {
        Ok(r) => {
            let mut b = Response::builder().status(r.status());
            for (k, v) in r.headers() {
                if k != "content-length" && k != "transfer-encoding" && k != "connection" {
                    b = b.header(k, v);
                }
            }
            let bytes = r.bytes().await.unwrap_or_default();
            b.body(Body::from(bytes)).unwrap()
        }
        Err(_) => Response::builder().status(502).body(Body::empty()).unwrap(),
    };
    if lose {
        resp.extensions_mut().insert(LoseAnswer);
    }
    resp
}
