//! Helpers of the workflow integration tests: an emulator running in the test process (on
//! loopback, port 0, its own data folder) and the real `iotc` binary pointed at it through
//! the environment, the way a user would run it.
#![allow(dead_code)]

use iotc::central::{Client, ClientOptions, Credential};
use iotc::emulator::{Emulator, EmulatorConfig, ReadyInfo};
use std::path::{Path, PathBuf};

/// A running emulator and a scratch folder.
pub struct Emu {
    pub rt: tokio::runtime::Runtime,
    pub emulator: Option<Emulator>,
    pub info: ReadyInfo,
    pub dir: tempfile::TempDir,
}

impl Emu {
    /// Starts an emulator with the given IoT Central rate limit (None = off).
    pub fn start(rate_limit: Option<u32>) -> Emu {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let emulator = rt
            .block_on(Emulator::start(
                EmulatorConfig::new(dir.path().join("emulator")).rate_limit(rate_limit),
            ))
            .expect("emulator starts");
        let info = emulator.info().clone();
        Emu {
            rt,
            emulator: Some(emulator),
            info,
            dir,
        }
    }

    /// A path in the scratch folder.
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// The real binary, configured for this emulator by environment variables.
    pub fn iotc(&self) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_iotc"));
        self.configure(&mut c);
        c
    }

    /// The same, as an assert_cmd command.
    pub fn cmd(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::new(env!("CARGO_BIN_EXE_iotc"));
        c.env("IOTC_APP_URL", &self.info.api_url)
            .env("IOTC_API_TOKEN", self.info.admin_token.expose())
            .env("IOTC_CA_FILE", &self.info.ca_cert)
            .env("IOTC_ID_SCOPE", &self.info.id_scope)
            .env("IOTC_DPS_ENDPOINT", &self.info.dps_endpoint)
            .env("HOME", self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path())
            .env_remove("IOTC_PROFILE")
            .env_remove("IOTC_RATE_LIMIT")
            .current_dir(self.dir.path())
            .timeout(std::time::Duration::from_secs(300));
        c
    }

    fn configure(&self, c: &mut std::process::Command) {
        c.env("IOTC_APP_URL", &self.info.api_url)
            .env("IOTC_API_TOKEN", self.info.admin_token.expose())
            .env("IOTC_CA_FILE", &self.info.ca_cert)
            .env("IOTC_ID_SCOPE", &self.info.id_scope)
            .env("IOTC_DPS_ENDPOINT", &self.info.dps_endpoint)
            .env("HOME", self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path())
            .env_remove("IOTC_PROFILE")
            .env_remove("IOTC_RATE_LIMIT")
            .current_dir(self.dir.path());
    }

    /// A library client (admin token), for checking what the emulator holds.
    pub fn client(&self) -> Client {
        let pem = std::fs::read(&self.info.ca_cert).unwrap();
        Client::new(
            &self.info.api_url,
            Credential::api_token(self.info.admin_token.expose()),
            Some(ClientOptions::default().with_ca_pem(pem).with_rate_limit(0)),
        )
        .unwrap()
    }

    /// Merges settings (rate limit, faults) into the emulator's, as the admin endpoint does.
    pub fn settings(&self, patch: serde_json::Value) {
        self.emulator
            .as_ref()
            .unwrap()
            .settings()
            .merge(&patch)
            .expect("valid settings");
    }

    /// What the emulator counted (the snapshot `GET /emulator/stats` gives): DPS
    /// registrations per device, verification codes and proofs of possession per group
    /// certificate, injected faults.
    pub fn stats(&self) -> iotc::emulator::stats::Stats {
        self.emulator.as_ref().unwrap().stats().expect("stats")
    }

    /// Every device the application has, by id.
    pub fn devices(&self) -> Vec<iotc::central::models::Device> {
        let c = self.client();
        self.rt
            .block_on(c.list_devices(&Default::default()).collect_all())
            .unwrap()
    }
}

impl Drop for Emu {
    fn drop(&mut self) {
        if let Some(e) = self.emulator.take() {
            self.rt.block_on(e.shutdown());
        }
    }
}

/// Runs `openssl verify` on a device certificate; returns its stdout+stderr and success.
pub fn openssl_verify(root: &Path, untrusted: Option<&Path>, cert: &Path) -> (bool, String) {
    let mut c = std::process::Command::new("openssl");
    c.arg("verify").arg("-CAfile").arg(root);
    if let Some(u) = untrusted {
        c.arg("-untrusted").arg(u);
    }
    let out = c.arg(cert).output().expect("openssl runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Every bundle folder of `out`, checked whole; returns their bundle.json, by device id.
pub fn bundles(
    out: &Path,
) -> std::collections::BTreeMap<String, iotc::workflow::bundle::BundleJson> {
    let mut m = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(out).unwrap() {
        let e = e.unwrap();
        if !e.file_type().unwrap().is_dir() || e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let b = iotc::workflow::bundle::check(&e.path())
            .unwrap_or_else(|err| panic!("bundle {} damaged: {err}", e.path().display()));
        m.insert(b.device_id.clone(), b);
    }
    m
}

impl Emu {
    /// DPS's registration record of a bundled X.509 device, read with the device's own
    /// credential through the status lookup (which does not register it again).
    pub fn registration_state(&self, out: &Path, id: &str) -> iotc::dps::Registration {
        let dir = out.join(id);
        let chain = std::fs::read(dir.join(format!("{id}_fullchain.pem"))).unwrap();
        let key = std::fs::read(dir.join(format!("{id}_key.pem"))).unwrap();
        let identity = iotc::dps::X509Identity::from_pem(&chain, &key, None).unwrap();
        let client = iotc::dps::Client::new(
            self.info.id_scope.parse().unwrap(),
            iotc::dps::Attestation::X509(identity),
            iotc::dps::ClientOptions {
                endpoint: self.info.dps_endpoint.clone(),
                ca_pem: Some(std::fs::read(&self.info.ca_cert).unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
        self.rt
            .block_on(client.status_lookup(&id.parse().unwrap()))
            .unwrap()
    }

    /// Asserts DPS registered the device exactly once: its record was never updated after
    /// it was created (a second registration keeps `createdDateTimeUtc` and moves
    /// `lastUpdatedDateTimeUtc`).
    pub fn assert_registered_once(&self, out: &Path, id: &str) {
        let r = self.registration_state(out, id);
        assert_eq!(
            r.status,
            Some(iotc::dps::EnrollmentStatus::Assigned),
            "{id} assigned"
        );
        assert!(
            r.created_date_time_utc.is_some(),
            "{id} has a creation time"
        );
        assert_eq!(
            r.created_date_time_utc, r.last_updated_date_time_utc,
            "{id} was registered more than once"
        );
    }
}
