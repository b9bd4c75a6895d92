//! Test helpers for the emulator: start it in-process on loopback with a temporary data
//! folder, and talk to it over real TLS with reqwest trusting only the emulator's CA.
#![allow(dead_code)]

use iotc::emulator::{Emulator, EmulatorConfig};
use serde_json::Value;

pub const GA: &str = "2022-07-31";
pub const PREVIEW: &str = "2022-10-31-preview";

pub struct Emu {
    pub emu: Option<Emulator>,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    pub url: String,
    pub token: String,
}

pub fn client_for(ca_pem: &[u8]) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem).expect("CA PEM");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .expect("client")
}

impl Emu {
    pub async fn start() -> Emu {
        Self::start_with(|c| c.rate_limit(None)).await
    }

    pub async fn start_with(f: impl FnOnce(EmulatorConfig) -> EmulatorConfig) -> Emu {
        let dir = tempfile::tempdir().expect("tempdir");
        let emu = Emulator::start(f(EmulatorConfig::new(dir.path())))
            .await
            .expect("emulator starts");
        Self::wrap(emu, dir)
    }

    pub fn wrap(emu: Emulator, dir: tempfile::TempDir) -> Emu {
        let info = emu.info().clone();
        let ca = std::fs::read(&info.ca_cert).expect("caCert readable");
        Emu {
            http: client_for(&ca),
            url: info.api_url.clone(),
            token: info.admin_token.expose().to_owned(),
            emu: Some(emu),
            dir,
        }
    }

    /// Stops the emulator and starts it again on the same data folder.
    pub async fn restart(mut self) -> Emu {
        let emu = self.emu.take().expect("running");
        emu.shutdown().await;
        let emu = Emulator::start(EmulatorConfig::new(self.dir.path()).rate_limit(None))
            .await
            .expect("restart");
        Self::wrap(emu, self.dir)
    }

    pub fn api(&self, path: &str, version: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{}/api{}{}api-version={}", self.url, path, sep, version)
    }

    /// Sends a request with a token (None: no Authorization header); returns status, headers
    /// and the JSON body (Null when empty).
    pub async fn call_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        self.call_v(token, method, path, GA, body).await
    }

    pub async fn call_v(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        version: &str,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let url = if path.starts_with("https://") {
            path.to_owned()
        } else {
            self.api(path, version)
        };
        self.raw(token, method, &url, body.map(|b| b.to_string()), None)
            .await
    }

    pub async fn raw(
        &self,
        token: Option<&str>,
        method: &str,
        url: &str,
        body: Option<String>,
        headers: Option<&[(&str, &str)]>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(m, url);
        if let Some(t) = token {
            req = req.header("Authorization", t);
        }
        for (k, v) in headers.unwrap_or(&[]) {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON body, got {text:?}"))
        };
        if status >= 400 {
            assert_error_shape(status, &headers, &v);
        }
        (status, headers, v)
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (s, _, v) = self
            .call_as(Some(&self.token.clone()), method, path, body)
            .await;
        (s, v)
    }

    /// Creates an API token with these roles; returns its value.
    pub async fn token_with(&self, id: &str, roles: Value) -> String {
        let (s, v) = self
            .call(
                "PUT",
                &format!("/apiTokens/{id}"),
                Some(serde_json::json!({"roles": roles})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v["token"].as_str().expect("token returned").to_owned()
    }
}

/// Every failure carries the service's error body and the x-ms-error-code header.
pub fn assert_error_shape(status: u16, headers: &reqwest::header::HeaderMap, v: &Value) {
    let e = &v["error"];
    let code = e["code"]
        .as_str()
        .unwrap_or_else(|| panic!("error.code in {v}"));
    assert!(
        !e["message"].as_str().unwrap_or_default().is_empty(),
        "error.message in {v}"
    );
    assert!(e["requestId"].as_str().is_some(), "requestId in {v}");
    assert!(
        e["time"].as_str().is_some_and(|t| t.ends_with("GMT")),
        "time in {v}"
    );
    assert_eq!(
        headers.get("x-ms-error-code").and_then(|h| h.to_str().ok()),
        Some(code),
        "x-ms-error-code for {status}"
    );
    assert!(
        status < 500 || status == 503 || status == 501,
        "unexpected {status}: {v}"
    );
}

/// Runs `iotc emulator --data-dir DIR ARGS...` and returns it with its ready line, checked to
/// be what it wrote to `emulator.json`.
pub async fn spawn_binary(
    dir: &std::path::Path,
    args: &[&str],
) -> (std::process::Child, serde_json::Value) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_iotc"))
        .args(["emulator", "--data-dir"])
        .arg(dir)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ready = ready_line(&mut child).await;
    let file: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(dir.join("emulator.json"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(ready, file);
    (child, ready)
}

/// Sends SIGTERM to an emulator from [`spawn_binary`] and checks that it exits cleanly.
pub async fn stop_binary(mut child: std::process::Child) {
    let st = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// The first line `iotc emulator` prints on stdout, which must be one JSON object.
pub async fn ready_line(child: &mut std::process::Child) -> serde_json::Value {
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        line
    })
    .await
    .unwrap();
    serde_json::from_str(line.trim()).expect("one JSON line")
}
