//! A local emulator of Azure IoT Central (data plane, api-version 2022-07-31 and the
//! 2022-10-31-preview list options) and of its Device Provisioning Service, so the whole
//! enrollment and provisioning flow runs and is tested on one machine with no cloud account.
//!
//! [`Emulator::start`] binds two HTTPS listeners (the IoT Central API and DPS) with server
//! certificates from a CA kept in the data folder, opens the SQLite store there, rotates the
//! administrator API token, and returns a [`ReadyInfo`] with everything a client needs. The
//! service's rules are kept where a client could otherwise be wrong and still pass: paths,
//! api-version, status codes, the error body, etags, paging, id patterns, authorization with
//! organization scopes, and real proof-of-possession checks. What the emulator does not do
//! is refused with `NotSupportedByEmulator`, never approximated. `docs/emulator.md` lists
//! each divergence.
//!
//! Layout: [`tls`] (CA, acceptor, accept loop), [`store`] + [`records`] (durable state),
//! [`auth`] (tokens, roles, organization reach), [`query`] (list filters and device-group
//! queries), [`settings`] (rate limit, faults), [`api`] (the IoT Central routes), [`app`]
//! (application facts and what DPS reads), [`dps`] (the DPS listeners: HTTPS, and MQTT when
//! asked for), [`stats`] (counters of what it did, for tests), [`entra`] (the local Microsoft
//! Entra authority and the bearer-token checks).

pub mod api;
pub mod app;
pub mod auth;
pub mod certs;
pub mod dps;
pub mod entra;
pub mod error;
pub mod query;
pub mod records;
pub mod settings;
pub mod stats;
pub mod store;
pub mod tls;

use crate::secret::Secret;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// File name of the ready record in the data folder.
pub const READY_FILE: &str = "emulator.json";

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmulatorError {
    /// A file or folder of the data folder.
    #[error("{0}")]
    Io(String, #[source] std::io::Error),
    /// Binding a listener.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Making or loading the CA or the server certificate.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// Opening or initializing the database.
    #[error("database: {0}")]
    Store(String),
}

/// How to run the emulator.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Folder of the database, the CA and `emulator.json` (created if missing).
    pub data_dir: PathBuf,
    /// Address of the IoT Central API listener (port 0: any free port).
    pub api_listen: SocketAddr,
    /// Address of the DPS listener (port 0: any free port).
    pub dps_listen: SocketAddr,
    /// Address of the DPS MQTT listener (MQTT 3.1.1 over TLS); `None` (the default): no
    /// MQTT listener.
    pub dps_mqtt_listen: Option<SocketAddr>,
    /// Requests per second per application; `None` = off. Default `Some(20)`.
    pub rate_limit: Option<u32>,
    /// Initial behaviour settings (faults, DPS polls); `rate_limit` above overrides its field.
    pub settings: settings::Settings,
    /// Names the server certificate of every listener holds besides `localhost` and
    /// `127.0.0.1` (`--tls-name`: the bench host's LAN name and address).
    pub tls_names: Vec<tls::TlsName>,
}

impl EmulatorConfig {
    /// A configuration for `data_dir` with both listeners on 127.0.0.1, port 0.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        EmulatorConfig {
            data_dir: data_dir.into(),
            ..EmulatorConfig::default()
        }
    }

    /// Sets the rate limit (`None` = off).
    pub fn rate_limit(mut self, limit: Option<u32>) -> Self {
        self.rate_limit = limit;
        self
    }

    /// Sets the API listen address.
    pub fn api_listen(mut self, addr: SocketAddr) -> Self {
        self.api_listen = addr;
        self
    }

    /// Sets the DPS listen address.
    pub fn dps_listen(mut self, addr: SocketAddr) -> Self {
        self.dps_listen = addr;
        self
    }

    /// Serves DPS over MQTT too, on `addr` (port 0: any free port).
    pub fn dps_mqtt_listen(mut self, addr: SocketAddr) -> Self {
        self.dps_mqtt_listen = Some(addr);
        self
    }

    /// Adds names to the server certificate.
    pub fn tls_names(mut self, names: impl IntoIterator<Item = tls::TlsName>) -> Self {
        self.tls_names.extend(names);
        self
    }
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            data_dir: PathBuf::from("emulator-data"),
            api_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            dps_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            dps_mqtt_listen: None,
            rate_limit: Some(20),
            settings: settings::Settings::default(),
            tls_names: Vec::new(),
        }
    }
}

/// What a client needs to use a running emulator (printed as one JSON line and written to
/// `<data-dir>/emulator.json`, which `iotc config set --emulator` reads back).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadyInfo {
    /// Base URL of the IoT Central API (the client appends `/api/...`).
    pub api_url: String,
    /// Base URL of DPS.
    pub dps_endpoint: String,
    /// The application's ID scope.
    pub id_scope: String,
    /// An API token with the Administrator role (rotated at every start).
    pub admin_token: Secret,
    /// Path of the PEM of the CA that signed the TLS server certificates.
    pub ca_cert: PathBuf,
    /// `host:port` of DPS over MQTT (TLS), when the emulator serves it (`--dps-mqtt-listen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dps_mqtt_host: Option<String>,
    /// The Entra authority (`AZURE_AUTHORITY_HOST`): https on the API listener.
    #[serde(default)]
    pub authority_host: String,
    /// The authority's tenant (directory) id (`AZURE_TENANT_ID`).
    #[serde(default)]
    pub tenant_id: String,
}

/// A running emulator.
#[derive(Debug)]
pub struct Emulator {
    info: ReadyInfo,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    state: api::AppState,
}

fn base_url(addr: SocketAddr) -> String {
    format!("https://{}", host_port(addr))
}

/// `host:port` of a bound address, an unspecified address read as loopback.
fn host_port(addr: SocketAddr) -> String {
    let ip = addr.ip();
    let host = if ip.is_unspecified() {
        if ip.is_ipv4() {
            "127.0.0.1".to_owned()
        } else {
            "[::1]".to_owned()
        }
    } else if ip.is_ipv6() {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    format!("{host}:{}", addr.port())
}

impl Emulator {
    /// Starts the emulator: prepares the data folder, binds both listeners and serves them
    /// until [`Emulator::shutdown`]. Prints nothing.
    pub async fn start(config: EmulatorConfig) -> Result<Emulator, EmulatorError> {
        let dir = &config.data_dir;
        // A folder the emulator makes is its own (0700): it holds the CA key, the database
        // and the admin token. A folder the user gave keeps its mode; the files in it are
        // 0600 each.
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(dir)
            .map_err(|e| EmulatorError::Io(format!("create {}", dir.display()), e))?;
        let pki = tls::load_or_create(dir, &config.tls_names)?;
        let store = Arc::new(store::Store::open(&dir.join(store::DB_FILE))?);
        let facts = app::init(&store).map_err(|e| EmulatorError::Store(e.message))?;
        let admin_token =
            app::rotate_admin_token(&store, &facts).map_err(|e| EmulatorError::Store(e.message))?;

        let api_listener = tokio::net::TcpListener::bind(config.api_listen)
            .await
            .map_err(|source| EmulatorError::Bind {
                addr: config.api_listen,
                source,
            })?;
        let dps_listener = tokio::net::TcpListener::bind(config.dps_listen)
            .await
            .map_err(|source| EmulatorError::Bind {
                addr: config.dps_listen,
                source,
            })?;
        let api_addr = api_listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind {
                addr: config.api_listen,
                source,
            })?;
        let dps_addr = dps_listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind {
                addr: config.dps_listen,
                source,
            })?;
        let api_url = base_url(api_addr);
        let dps_endpoint = base_url(dps_addr);

        let mut initial = config.settings.clone();
        initial.rate_limit = config.rate_limit;
        initial
            .validate()
            .map_err(|e| EmulatorError::Store(format!("settings: {e}")))?;
        let settings = Arc::new(settings::SettingsHandle::new(initial));

        let entra = Arc::new(entra::Authority::load_or_create(dir, &store, &api_url)?);
        let state = api::AppState::new(api::Shared {
            store: store.clone(),
            settings: settings.clone(),
            api_url: api_url.clone(),
            facts: facts.clone(),
            tally: api::Tally::default(),
            entra: entra.clone(),
        });
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(tls::serve(
            api_listener,
            pki.server_config.clone(),
            api::router(state.clone()),
            rx.clone(),
        )));
        let dps = dps::Dps::new(dps::DpsContext {
            store,
            settings,
            id_scope: facts.id_scope.clone(),
            dps_endpoint: dps_endpoint.clone(),
        })?;
        // Bound before anything is served, so a busy port fails the start, not a task.
        let mut dps_mqtt_host = None;
        if let Some(addr) = config.dps_mqtt_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| EmulatorError::Bind { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| EmulatorError::Bind { addr, source })?;
            dps_mqtt_host = Some(host_port(bound));
            tasks.push(tokio::spawn(dps::mqtt::serve(
                dps.clone(),
                listener,
                pki.server_config.clone(),
                rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(dps::serve(
            dps,
            dps_listener,
            pki.server_config.clone(),
            rx,
        )));

        let info = ReadyInfo {
            authority_host: entra.authority_host().to_owned(),
            tenant_id: entra.tenant_id().to_owned(),
            api_url,
            dps_endpoint,
            id_scope: facts.id_scope.clone(),
            admin_token,
            ca_cert: std::path::absolute(&pki.ca_cert_path).unwrap_or(pki.ca_cert_path.clone()),
            dps_mqtt_host,
        };
        let json = serde_json::to_string(&info)
            .map_err(|e| EmulatorError::Store(format!("ready record: {e}")))?;
        tls::write_private(&dir.join(READY_FILE), format!("{json}\n").as_bytes())?;
        Ok(Emulator {
            info,
            shutdown: tx,
            tasks,
            state,
        })
    }

    /// The ready record.
    pub fn info(&self) -> &ReadyInfo {
        &self.info
    }

    /// The shared behaviour settings (the same object `PUT /emulator/settings` changes).
    pub fn settings(&self) -> &settings::SettingsHandle {
        &self.state.settings
    }

    /// The Entra authority (its tenant, its token-endpoint counters).
    pub fn entra(&self) -> &entra::Authority {
        &self.state.entra
    }

    /// How many `method` calls of `path` (e.g. `/api/devices/d1`) succeeded since the start:
    /// tests count side effects with it (exactly once means 1, not "in the set").
    pub fn successes(&self, method: &str, path: &str) -> u64 {
        self.state.tally.get(method, path)
    }

    /// The store (for in-process tests and tools).
    pub fn store(&self) -> &Arc<store::Store> {
        &self.state.store
    }

    /// Every counter of what the emulator did (the same snapshot `GET /emulator/stats` gives).
    pub fn stats(&self) -> Result<stats::Stats, EmulatorError> {
        stats::snapshot(&self.state.store).map_err(|e| EmulatorError::Store(e.message))
    }

    /// Stops accepting, lets open requests finish (up to 5 s), and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
