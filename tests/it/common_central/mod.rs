//! Test helpers of the IoT Central client tests: an in-process emulator over TLS on loopback
//! (its own runtime, so sync tests can drive the real binary while it serves), clients that
//! trust its CA, the admin settings endpoint, and the `iotc` binary wired to it.
#![allow(dead_code)]

pub mod proxy;

use iotc::central::{Client, ClientOptions, Credential, RetryOptions};
use iotc::emulator::{Emulator, EmulatorConfig};
use std::path::PathBuf;
use std::time::Duration;

/// A running emulator.
pub struct Emu {
    pub rt: tokio::runtime::Runtime,
    emu: Option<Emulator>,
    pub dir: tempfile::TempDir,
    pub api_url: String,
    pub admin_token: String,
    pub ca_path: PathBuf,
    pub ca_pem: Vec<u8>,
}

impl Emu {
    /// Starts an emulator with no rate limit.
    pub fn start() -> Emu {
        Emu::start_with(None)
    }

    /// Starts an emulator with this rate limit (requests/s).
    pub fn start_with(rate_limit: Option<u32>) -> Emu {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let loopback: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let config = EmulatorConfig::new(dir.path().join("emu"))
            .api_listen(loopback)
            .dps_listen(loopback)
            .rate_limit(rate_limit);
        let emu = rt
            .block_on(Emulator::start(config))
            .expect("emulator starts");
        let info = emu.info();
        let ca_path = info.ca_cert.clone();
        let ca_pem = std::fs::read(&ca_path).expect("emulator CA");
        Emu {
            api_url: info.api_url.clone(),
            admin_token: info.admin_token.expose().to_owned(),
            ca_path,
            ca_pem,
            emu: Some(emu),
            rt,
            dir,
        }
    }

    /// Options trusting the emulator's CA, pacing off, quick retries.
    pub fn options(&self) -> ClientOptions {
        ClientOptions {
            rate_limit: None,
            retry: RetryOptions {
                max_retries: 8,
                initial_delay: Duration::from_millis(50),
                max_delay: Duration::from_secs(2),
                ..RetryOptions::default()
            },
            timeout: Duration::from_secs(20),
            ..ClientOptions::default()
        }
        .with_ca_pem(self.ca_pem.clone())
    }

    /// An admin client.
    pub fn client(&self) -> Client {
        self.client_with(self.options())
    }

    /// An admin client with these options.
    pub fn client_with(&self, options: ClientOptions) -> Client {
        Client::new(
            &self.api_url,
            Credential::api_token(self.admin_token.clone()),
            Some(options),
        )
        .expect("client")
    }

    /// Runs a future on the emulator's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Merges `settings` into the emulator's behaviour settings (PUT /emulator/settings).
    pub fn set(&self, settings: serde_json::Value) {
        let cert = reqwest::Certificate::from_pem(&self.ca_pem).unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_merge([cert])
            .build()
            .unwrap();
        let url = format!("{}/emulator/settings", self.api_url.trim_end_matches('/'));
        let resp = self
            .rt
            .block_on(
                http.put(url)
                    .header("authorization", &self.admin_token)
                    .json(&settings)
                    .send(),
            )
            .expect("settings request");
        let status = resp.status();
        let body = self.rt.block_on(resp.text()).unwrap_or_default();
        assert!(status.is_success(), "settings refused: {status} {body}");
    }

    /// What the emulator counted (the snapshot `GET /emulator/stats` gives): injected
    /// faults, rate-limit refusals, verification codes and proofs of possession.
    pub fn stats(&self) -> iotc::emulator::stats::Stats {
        self.emu.as_ref().expect("running").stats().expect("stats")
    }

    /// The `iotc` binary, pointed at this emulator through the environment.
    pub fn iotc(&self) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::new(env!("CARGO_BIN_EXE_iotc"));
        cmd.env("IOTC_APP_URL", &self.api_url)
            .env("IOTC_API_TOKEN", &self.admin_token)
            .env("IOTC_CA_FILE", &self.ca_path)
            .env("IOTC_CONFIG", self.dir.path().join("config.json"))
            .env_remove("IOTC_PROFILE")
            .env_remove("IOTC_BEARER_TOKEN")
            .env_remove("RUST_LOG");
        cmd
    }

    /// The `iotc` binary with no connection settings at all.
    pub fn bare_iotc(&self) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::new(env!("CARGO_BIN_EXE_iotc"));
        cmd.env("IOTC_CONFIG", self.dir.path().join("config.json"))
            .env_remove("IOTC_APP_URL")
            .env_remove("IOTC_API_TOKEN")
            .env_remove("IOTC_CA_FILE")
            .env_remove("IOTC_PROFILE")
            .env_remove("IOTC_BEARER_TOKEN")
            .env_remove("RUST_LOG");
        cmd
    }
}

impl Drop for Emu {
    fn drop(&mut self) {
        if let Some(emu) = self.emu.take() {
            self.rt.block_on(emu.shutdown());
        }
    }
}

/// A CA and a proof-of-possession certificate, written as PEM files.
pub fn root_ca() -> iotc::cert::Authority {
    iotc::cert::Authority::new_root(&iotc::cert::CaOptions::default()).expect("root CA")
}
