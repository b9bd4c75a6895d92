//! Named profiles, and where every connection value of a command comes from.
//!
//! Typing the application URL and a year-long API token on every command is both tedious and
//! leaky (shell history, the process list), so `iotc config set NAME --app … --token-file …`
//! stores them in a JSON file under the user's config directory (`$IOTC_CONFIG`, else
//! `$XDG_CONFIG_HOME/iotc/config.json`, else `~/.config/iotc/config.json`); `iotc config set
//! NAME --emulator DIR` takes all of them from a running emulator. The file is written
//! atomically and, because it may hold a token, with mode 0600.
//!
//! Every value a command connects with (application, sign-in method, token, CA file, DPS
//! endpoint, ID scope) is resolved here, the same way: the flag, else its environment variable, else the selected
//! profile (`--profile`, else the file's default), else the built-in default (only the DPS
//! endpoint has one, the global endpoint). clap is deliberately not told about these
//! environment variables: the parsed flags then hold exactly what was typed, which is all that
//! `config set` may store. A token exported for one application must never end up in the
//! profile of another.
//!
//! The sign-in method (`--auth`, `IOTC_AUTH`, the profile's `auth`; `api-token` by default)
//! decides where the credential comes from: the token chain above, or a Microsoft Entra
//! credential made from the Azure SDK's usual variables (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
//! `AZURE_CLIENT_SECRET`, `AZURE_CLIENT_CERTIFICATE_PATH` and `_PASSWORD`,
//! `AZURE_AUTHORITY_HOST`, `AZURE_FEDERATED_TOKEN_FILE`), which are never stored in a profile.

use super::{output, CliError, CliResult, GlobalArgs, EXIT_OK};
use crate::central::credential::{ENV_API_TOKEN, ENV_BEARER_TOKEN};
use crate::central::entra;
use crate::central::{AuthMethod, Client, ClientOptions, Credential, EntraSettings, RetryOptions};
use crate::ids::IdScope;
use crate::secret::Secret;
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The environment variable naming the config file.
pub const ENV_CONFIG: &str = "IOTC_CONFIG";
/// The environment variable of the application (`--app`).
pub const ENV_APP: &str = "IOTC_APP_URL";
/// The environment variable of the extra trusted CA (`--ca-file`).
pub const ENV_CA_FILE: &str = "IOTC_CA_FILE";
/// The environment variable of the DPS endpoint (`--dps-endpoint`, `dps register --endpoint`).
pub const ENV_DPS_ENDPOINT: &str = "IOTC_DPS_ENDPOINT";
/// The environment variable of DPS over MQTT (`dps register --mqtt-host`).
pub const ENV_DPS_MQTT_HOST: &str = "IOTC_DPS_MQTT_HOST";
/// The environment variable of the DPS ID scope (`--id-scope`).
pub const ENV_ID_SCOPE: &str = "IOTC_ID_SCOPE";
/// The environment variable naming the profile to use.
pub const ENV_PROFILE: &str = "IOTC_PROFILE";
/// The environment variable of the sign-in method (`--auth`).
pub const ENV_AUTH: &str = "IOTC_AUTH";

/// One named profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// Application URL or subdomain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// API token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// Extra trusted CA (PEM path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// DPS endpoint (base URL) for `onboard`, `provision` and `dps register`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dps_endpoint: Option<String>,
    /// DPS ID scope of the application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_scope: Option<IdScope>,
    /// `host:port` of DPS over MQTT for `dps register --transport mqtt` (from an emulator
    /// started with `--dps-mqtt-listen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dps_mqtt_host: Option<String>,
    /// How to sign in (`--auth`); `None`: with the API token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthMethod>,
}

/// The config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigFile {
    /// The profile used when `--profile` is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// The profiles by name.
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// Where the config file lives.
pub fn config_path() -> Result<PathBuf, CliError> {
    if let Some(p) = std::env::var_os(ENV_CONFIG).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(x).join("iotc").join("config.json"));
    }
    match std::env::var_os("HOME").filter(|p| !p.is_empty()) {
        Some(h) => Ok(PathBuf::from(h)
            .join(".config")
            .join("iotc")
            .join("config.json")),
        None => Err(format!("cannot find the config directory: set {ENV_CONFIG} or HOME").into()),
    }
}

impl ConfigFile {
    /// Reads the file; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<ConfigFile, CliError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("config file {} is not valid: {e}", path.display()).into()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
            Err(e) => Err(format!("cannot read config file {}: {e}", path.display()).into()),
        }
    }

    /// Writes the file atomically; mode 0600 when any profile holds a token.
    pub fn save(&self, path: &Path) -> Result<(), CliError> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
        let has_token = self.profiles.values().any(|p| p.token.is_some());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = if has_token { 0o600 } else { 0o644 };
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))?;
        }
        #[cfg(not(unix))]
        let _ = has_token;
        use std::io::Write;
        tmp.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        tmp.write_all(b"\n")?;
        tmp.as_file().sync_all()?;
        tmp.persist(path)
            .map_err(|e| format!("cannot write {}: {}", path.display(), e.error))?;
        Ok(())
    }
}

/// Looks up an environment variable (injected, so the order of the sources can be unit-tested).
type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment; a variable set to an empty value counts as unset.
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The profile a command uses: `--profile` (which must exist), else the file's default, else
/// none.
pub fn selected_profile(global: &GlobalArgs) -> Result<Profile, CliError> {
    let path = config_path().ok();
    let file = match &path {
        Some(p) => ConfigFile::load(p)?,
        None => ConfigFile::default(),
    };
    let chosen = global.profile.clone().or_else(|| process_env(ENV_PROFILE));
    match chosen.as_deref().or(file.default.as_deref()) {
        Some(name) => match file.profiles.get(name) {
            Some(p) => Ok(p.clone()),
            None if chosen.is_some() => Err(format!(
                "no profile {name:?} in {} (see `iotc config list`)",
                path.as_deref().unwrap_or(Path::new("?")).display()
            )
            .into()),
            None => Ok(Profile::default()),
        },
        None => Ok(Profile::default()),
    }
}

/// The values a command talks to IoT Central with, after flags, environment and profile.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Application URL or subdomain.
    pub app: String,
    /// The credential.
    pub credential: Credential,
    /// Extra trusted CA file.
    pub ca_file: Option<PathBuf>,
}

/// Resolves the application, the credential and the CA file.
pub fn resolve(global: &GlobalArgs) -> Result<Resolved, CliError> {
    resolve_with(global, &selected_profile(global)?, &process_env)
}

fn resolve_with(global: &GlobalArgs, profile: &Profile, env: Env) -> Result<Resolved, CliError> {
    let app = global
        .app
        .clone()
        .or_else(|| env(ENV_APP))
        .or_else(|| profile.app.clone())
        .ok_or(
            "no application: give --app URL, set IOTC_APP_URL, or use a profile \
             (`iotc config set NAME --app URL --token-file FILE`)",
        )?;
    let ca_file = ca_file(global, profile, env);
    let method = match (global.auth, env(ENV_AUTH)) {
        (Some(m), _) => m,
        (None, Some(m)) => m.trim().parse().map_err(|e| format!("{ENV_AUTH}: {e}"))?,
        (None, None) => profile.auth.unwrap_or(AuthMethod::ApiToken),
    };
    if method != AuthMethod::ApiToken {
        if global.token_file.is_some() {
            return Err(format!(
                "--token-file holds an API token; it does not go with --auth {method} \
                 (give --auth api-token, or drop --token-file)"
            )
            .into());
        }
        let mut settings = entra_settings(env)?;
        if let Some(path) = &ca_file {
            settings.extra_ca_pem = Some(read_ca_file(path)?);
        }
        return Ok(Resolved {
            app,
            credential: settings.credential(method)?,
            ca_file,
        });
    }
    let credential = if let Some(file) = &global.token_file {
        Credential::api_token(super::cert::read_password_file(file, "token")?.expose())
    } else if let Some(t) = env(ENV_API_TOKEN) {
        Credential::api_token(t)
    } else if let Some(t) = env(ENV_BEARER_TOKEN) {
        Credential::bearer(t)
    } else if let Some(t) = &profile.token {
        Credential::api_token(t.expose())
    } else {
        return Err(
            "no credential: give --token-file FILE, set IOTC_API_TOKEN (or \
                    IOTC_BEARER_TOKEN for an Azure AD token), or use a profile that holds a \
                    token (`iotc config set NAME --token-file FILE`)"
                .into(),
        );
    };
    Ok(Resolved {
        app,
        credential,
        ca_file,
    })
}

/// The Entra values from the Azure SDK's environment variables; the client certificate, when
/// one is named, is read here (a PEM with the certificate and its key, or a PKCS#12 file).
fn entra_settings(env: Env) -> Result<EntraSettings, CliError> {
    let certificate = match env(entra::ENV_CLIENT_CERTIFICATE_PATH) {
        None => None,
        Some(path) => {
            let password = env(entra::ENV_CLIENT_CERTIFICATE_PASSWORD).map(Secret::new);
            Some(client_certificate(Path::new(&path), password.as_ref())?)
        }
    };
    Ok(EntraSettings {
        tenant_id: env(entra::ENV_TENANT_ID),
        client_id: env(entra::ENV_CLIENT_ID),
        client_secret: env(entra::ENV_CLIENT_SECRET).map(Secret::new),
        client_certificate: certificate,
        authority_host: env(entra::ENV_AUTHORITY_HOST),
        federated_token_file: env(entra::ENV_FEDERATED_TOKEN_FILE).map(PathBuf::from),
        extra_ca_pem: None,
    })
}

/// Reads a service principal's certificate file: PEM (a CERTIFICATE block and a `PRIVATE
/// KEY` or `ENCRYPTED PRIVATE KEY` block) or PKCS#12.
fn client_certificate(
    path: &Path,
    password: Option<&Secret>,
) -> Result<entra::ClientCertificate, CliError> {
    let what = format!(
        "{} ({})",
        entra::ENV_CLIENT_CERTIFICATE_PATH,
        path.display()
    );
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {what}: {e}"))?;
    let pw = password.map(Secret::expose);
    let (cert_der, key) = if bytes.starts_with(b"-----")
        || bytes.windows(11).any(|w| w == b"-----BEGIN ")
    {
        let text = String::from_utf8(bytes).map_err(|_| format!("{what} is not PEM text"))?;
        let cert = crate::cert::parse_pem_certs(text.as_bytes())
            .map_err(|e| format!("{what}: {e}"))?
            .into_iter()
            .next()
            .ok_or_else(|| format!("{what} holds no CERTIFICATE block"))?;
        let key_block = ["ENCRYPTED PRIVATE KEY", "PRIVATE KEY"]
            .iter()
            .find_map(|label| {
                let begin = format!("-----BEGIN {label}-----");
                let end = format!("-----END {label}-----");
                let start = text.find(&begin)?;
                let stop = text[start..].find(&end)? + start + end.len();
                Some(&text[start..stop])
            })
            .ok_or_else(|| {
                format!("{what} holds no PRIVATE KEY block: put the certificate and its key in one PEM file")
            })?;
        let (key, _) = crate::cert::PrivateKey::from_pem(key_block, pw).map_err(|e| {
            format!(
                "{what}: {e} (the password comes from {})",
                entra::ENV_CLIENT_CERTIFICATE_PASSWORD
            )
        })?;
        (cert, key.pkcs8_der().to_vec())
    } else {
        let store = p12_keystore::KeyStore::from_pkcs12(
            &bytes,
            pw.unwrap_or_default(),
            p12_keystore::Pkcs12ImportPolicy::Relaxed,
        )
        .map_err(|e| {
            format!(
                "{what} is neither PEM nor a PKCS#12 file it can open: {e} (its password comes \
                 from {})",
                entra::ENV_CLIENT_CERTIFICATE_PASSWORD
            )
        })?;
        let (_, chain) = store
            .private_key_chain()
            .ok_or_else(|| format!("{what}: the PKCS#12 file holds no private key"))?;
        let cert = chain
            .certs()
            .first()
            .ok_or_else(|| format!("{what}: the PKCS#12 file holds no certificate"))?;
        (cert.as_der().to_vec(), chain.key().as_der().to_vec())
    };
    let key = zeroize::Zeroizing::new(key);
    Ok(entra::ClientCertificate::from_der(&cert_der, &key)?)
}

fn ca_file(global: &GlobalArgs, profile: &Profile, env: Env) -> Option<PathBuf> {
    global
        .ca_file
        .clone()
        .or_else(|| env(ENV_CA_FILE).map(PathBuf::from))
        .or_else(|| profile.ca_file.clone())
}

/// Where devices register, after flags, environment, profile and default.
#[derive(Debug, Clone)]
pub struct DpsResolved {
    /// DPS endpoint (base URL).
    pub endpoint: String,
    /// The ID scope, when one was given somewhere (else the caller may read it from the group).
    pub id_scope: Option<IdScope>,
    /// Extra trusted CA file (the same one as for IoT Central).
    pub ca_file: Option<PathBuf>,
    /// `host:port` of DPS over MQTT, from the environment or the profile (a flag, where a
    /// command has one, comes first).
    pub mqtt_host: Option<String>,
}

/// Resolves the DPS endpoint, the ID scope and the CA file from the command's flags.
pub fn resolve_dps(
    global: &GlobalArgs,
    id_scope: Option<&IdScope>,
    endpoint: Option<&str>,
) -> Result<DpsResolved, CliError> {
    resolve_dps_with(
        global,
        id_scope,
        endpoint,
        &selected_profile(global)?,
        &process_env,
    )
}

fn resolve_dps_with(
    global: &GlobalArgs,
    id_scope: Option<&IdScope>,
    endpoint: Option<&str>,
    profile: &Profile,
    env: Env,
) -> Result<DpsResolved, CliError> {
    let id_scope = match (id_scope, env(ENV_ID_SCOPE)) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(s)) => Some(
            IdScope::new(s.trim())
                .map_err(|e| format!("{ENV_ID_SCOPE} is not an ID scope: {e}"))?,
        ),
        (None, None) => profile.id_scope.clone(),
    };
    let endpoint = endpoint
        .map(str::to_owned)
        .or_else(|| env(ENV_DPS_ENDPOINT))
        .or_else(|| profile.dps_endpoint.clone())
        .unwrap_or_else(|| crate::dps::wire::GLOBAL_ENDPOINT.to_owned());
    Ok(DpsResolved {
        endpoint,
        id_scope,
        ca_file: ca_file(global, profile, env),
        mqtt_host: env(ENV_DPS_MQTT_HOST).or_else(|| profile.dps_mqtt_host.clone()),
    })
}

/// Builds a client from the global options (used by every command that talks to IoT Central).
pub fn client(global: &GlobalArgs) -> Result<Client, CliError> {
    let r = resolve(global)?;
    let mut options = ClientOptions::default();
    if let Some(path) = &r.ca_file {
        options = options.with_ca_pem(read_ca_file(path)?);
    }
    if let Ok(rate) = std::env::var("IOTC_RATE_LIMIT") {
        let rate: u32 = rate
            .parse()
            .map_err(|_| format!("IOTC_RATE_LIMIT must be a number, not {rate:?}"))?;
        options = options.with_rate_limit(rate);
    }
    Ok(Client::new(&r.app, r.credential, Some(options))?)
}

/// Reads a CA file named by `--ca-file`, `IOTC_CA_FILE` or a profile.
pub fn read_ca_file(path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| format!("cannot read CA file {}: {e}", path.display()).into())
}

/// `iotc config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Create or change a profile: from the global --app, --token-file and --ca-file and the
    /// DPS options given here, or all at once from a running emulator (--emulator). Only what
    /// is given to this command is stored, never a value from the environment.
    #[command(after_help = "Examples:\n  \
iotc config set prod --app myapp --token-file token.txt --id-scope 0ne00000000 --default\n  \
iotc emulator --data-dir emu > /dev/null &\n  \
iotc config set local --emulator emu --default\n\n\
--emulator DIR reads DIR/emulator.json (application URL, admin token, CA, DPS endpoint, ID \
scope), waiting up to --wait seconds for a running emulator to write it and to answer with \
that token. The admin token changes at every start of the emulator: run it again after a \
restart.")]
    Set {
        /// Profile name.
        name: String,
        /// Make it the default profile.
        #[arg(long)]
        default: bool,
        /// DPS endpoint (base URL) for onboard, provision and dps register.
        #[arg(long, value_name = "URL")]
        dps_endpoint: Option<String>,
        /// DPS ID scope of the application.
        #[arg(long, value_name = "SCOPE")]
        id_scope: Option<IdScope>,
        /// Take the application, token, CA, DPS endpoint and ID scope from the emulator
        /// running with this data folder.
        #[arg(long, value_name = "DATA_DIR", conflicts_with_all = ["dps_endpoint", "id_scope"])]
        emulator: Option<PathBuf>,
        /// Seconds to wait for the emulator to be ready.
        #[arg(
            long,
            value_name = "SECONDS",
            default_value_t = 30,
            requires = "emulator"
        )]
        wait: u64,
    },
    /// List the profiles (tokens are never shown).
    #[command(after_help = "Example:\n  iotc config list")]
    List,
    /// Show one profile (the token is never shown).
    #[command(after_help = "Example:\n  iotc config show prod")]
    Show {
        /// Profile name (default: the default profile).
        name: Option<String>,
    },
    /// Make a profile the default.
    #[command(after_help = "Example:\n  iotc config use prod")]
    Use {
        /// Profile name.
        name: String,
    },
    /// Delete a profile.
    #[command(after_help = "Example:\n  iotc config delete old")]
    Delete {
        /// Profile name.
        name: String,
    },
    /// Print the config file's path.
    #[command(after_help = "Example:\n  iotc config path")]
    Path,
}

const COLUMNS: [&str; 6] = [
    "PROFILE",
    "APP",
    "TOKEN",
    "CA FILE",
    "DPS ENDPOINT",
    "ID SCOPE",
];

fn profile_row(name: &str, p: &Profile, default: bool) -> Vec<String> {
    vec![
        if default {
            format!("{name} *")
        } else {
            name.to_owned()
        },
        p.app.clone().unwrap_or_default(),
        if p.token.is_some() { "set" } else { "-" }.to_owned(),
        p.ca_file
            .as_ref()
            .map(|c| c.display().to_string())
            .unwrap_or_default(),
        p.dps_endpoint.clone().unwrap_or_default(),
        p.id_scope
            .as_ref()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default(),
    ]
}

fn redacted(p: &Profile) -> serde_json::Value {
    serde_json::json!({
        "app": p.app,
        "token": p.token.as_ref().map(|_| "[set]"),
        "caFile": p.ca_file,
        "dpsEndpoint": p.dps_endpoint,
        "idScope": p.id_scope,
        "dpsMqttHost": p.dps_mqtt_host,
        "auth": p.auth,
    })
}

/// What `config set` was given: the global connection flags and its own.
struct SetArgs<'a> {
    global: &'a GlobalArgs,
    dps_endpoint: Option<String>,
    id_scope: Option<IdScope>,
    emulator: Option<(PathBuf, Duration)>,
}

/// The profile values `config set` stores: only what it was given.
fn given_values(args: SetArgs) -> Result<Profile, CliError> {
    let global = args.global;
    if let Some((dir, wait)) = args.emulator {
        let typed: Vec<&str> = [
            global.app.as_ref().map(|_| "--app"),
            global.token_file.as_ref().map(|_| "--token-file"),
            global.ca_file.as_ref().map(|_| "--ca-file"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !typed.is_empty() {
            return Err(format!(
                "--emulator takes the application, token and CA file from {}; do not also \
                 give {}",
                dir.join(crate::emulator::READY_FILE).display(),
                typed.join(", ")
            )
            .into());
        }
        let mut p = wait_for_emulator(&dir, wait)?;
        p.auth = global.auth;
        return Ok(p);
    }
    let mut p = Profile::default();
    if let Some(app) = &global.app {
        crate::central::api_base_url(app)?;
        p.app = Some(app.clone());
    }
    if let Some(f) = &global.token_file {
        p.token = Some(super::cert::read_password_file(f, "token")?);
    }
    if let Some(c) = &global.ca_file {
        p.ca_file = Some(std::path::absolute(c).unwrap_or_else(|_| c.clone()));
    }
    p.auth = global.auth;
    if let Some(e) = args.dps_endpoint {
        url::Url::parse(&e).map_err(|err| format!("--dps-endpoint {e:?} is not a URL: {err}"))?;
        p.dps_endpoint = Some(e);
    }
    p.id_scope = args.id_scope;
    Ok(p)
}

/// Waits until the emulator with data folder `dir` has written its ready record and answers
/// with the admin token in it: a record left by an earlier run names a port nobody listens on
/// any more, or a token the emulator rotated away, so reading the file alone proves nothing.
fn wait_for_emulator(dir: &Path, wait: Duration) -> Result<Profile, CliError> {
    let path = dir.join(crate::emulator::READY_FILE);
    let deadline = Instant::now() + wait;
    let rt = super::runtime()?;
    loop {
        let problem = match rt.block_on(probe_emulator(&path)) {
            Ok(p) => return Ok(p),
            Err(problem) => problem,
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "no running emulator in {} after {} s: {problem}; start it first \
                 (`iotc emulator --data-dir {} > /dev/null &`) or wait longer with --wait SECONDS",
                dir.display(),
                wait.as_secs(),
                dir.display()
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One look at the ready record: the profile it makes, or what is not right yet.
async fn probe_emulator(path: &Path) -> Result<Profile, String> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("{} does not exist", path.display()))
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    // A record being written is not whole yet: it is read again on the next try.
    let info: crate::emulator::ReadyInfo = serde_json::from_slice(&text)
        .map_err(|e| format!("{} is not a ready record (yet): {e}", path.display()))?;
    let id_scope = IdScope::new(info.id_scope.as_str())
        .map_err(|e| format!("{}: idScope: {e}", path.display()))?;
    let pem = std::fs::read(&info.ca_cert)
        .map_err(|e| format!("cannot read its CA {}: {e}", info.ca_cert.display()))?;
    let options = ClientOptions {
        retry: RetryOptions {
            max_retries: 0,
            ..RetryOptions::default()
        },
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    }
    .with_ca_pem(pem)
    .with_rate_limit(0);
    let client = Client::new(
        &info.api_url,
        Credential::api_token(info.admin_token.expose()),
        Some(options),
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(Err(e)) = client.list_roles().next_page().await {
        return Err(format!(
            "{} names {}, which does not answer with its admin token: {e}",
            path.display(),
            info.api_url
        ));
    }
    Ok(Profile {
        app: Some(info.api_url),
        token: Some(info.admin_token),
        ca_file: Some(info.ca_cert),
        dps_endpoint: Some(info.dps_endpoint),
        id_scope: Some(id_scope),
        dps_mqtt_host: info.dps_mqtt_host,
        auth: None,
    })
}

/// Runs `iotc config …`.
pub fn run(cmd: ConfigCommand, global: &GlobalArgs) -> CliResult {
    let path = config_path()?;
    let mut file = ConfigFile::load(&path)?;
    match cmd {
        ConfigCommand::Set {
            name,
            default,
            dps_endpoint,
            id_scope,
            emulator,
            wait,
        } => {
            if name.trim().is_empty() {
                return Err("a profile name must not be empty".into());
            }
            let given = given_values(SetArgs {
                global,
                dps_endpoint,
                id_scope,
                emulator: emulator.map(|d| (d, Duration::from_secs(wait))),
            })?;
            let entry = file.profiles.entry(name.clone()).or_default();
            merge(entry, given);
            if default || file.default.is_none() {
                file.default = Some(name.clone());
            }
            file.save(&path)?;
            eprintln!("profile {name:?} saved in {}", path.display());
        }
        ConfigCommand::List => match global.output {
            output::OutputFormat::Json => {
                let map: BTreeMap<_, _> = file
                    .profiles
                    .iter()
                    .map(|(k, p)| (k, redacted(p)))
                    .collect();
                output::print_json(&serde_json::json!({"default": file.default, "profiles": map}))?;
            }
            output::OutputFormat::Table => {
                let rows: Vec<_> = file
                    .profiles
                    .iter()
                    .map(|(k, p)| profile_row(k, p, file.default.as_deref() == Some(k)))
                    .collect();
                output::print_table(&COLUMNS, &rows);
            }
        },
        ConfigCommand::Show { name } => {
            let name = name
                .or(global.profile.clone())
                .or_else(|| process_env(ENV_PROFILE))
                .or(file.default.clone())
                .ok_or("no profile given and no default profile")?;
            let p = file
                .profiles
                .get(&name)
                .ok_or_else(|| format!("no profile {name:?}"))?;
            match global.output {
                output::OutputFormat::Json => output::print_json(&redacted(p))?,
                output::OutputFormat::Table => output::print_table(
                    &COLUMNS,
                    &[profile_row(
                        &name,
                        p,
                        file.default.as_deref() == Some(&name),
                    )],
                ),
            }
        }
        ConfigCommand::Use { name } => {
            if !file.profiles.contains_key(&name) {
                return Err(format!("no profile {name:?}").into());
            }
            file.default = Some(name);
            file.save(&path)?;
        }
        ConfigCommand::Delete { name } => {
            if file.profiles.remove(&name).is_none() {
                return Err(format!("no profile {name:?}").into());
            }
            if file.default.as_deref() == Some(name.as_str()) {
                file.default = None;
            }
            file.save(&path)?;
        }
        ConfigCommand::Path => println!("{}", path.display()),
    }
    Ok(EXIT_OK)
}

/// Changes the values of `entry` that were given; the others stay as they were.
fn merge(entry: &mut Profile, given: Profile) {
    let Profile {
        app,
        token,
        ca_file,
        dps_endpoint,
        id_scope,
        dps_mqtt_host,
        auth,
    } = given;
    entry.app = app.or(entry.app.take());
    entry.token = token.or(entry.token.take());
    entry.ca_file = ca_file.or(entry.ca_file.take());
    entry.dps_endpoint = dps_endpoint.or(entry.dps_endpoint.take());
    entry.id_scope = id_scope.or(entry.id_scope.take());
    entry.dps_mqtt_host = dps_mqtt_host.or(entry.dps_mqtt_host.take());
    entry.auth = auth.or(entry.auth.take());
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn global(args: &[&str]) -> GlobalArgs {
        let mut argv = vec!["iotc"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["config", "list"]);
        super::super::Cli::try_parse_from(argv).unwrap().global
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn profile() -> Profile {
        Profile {
            app: Some("https://profile.example".into()),
            token: Some(Secret::new("SharedAccessSignature sr=profile")),
            ca_file: Some("profile.pem".into()),
            dps_endpoint: Some("https://dps.profile.example".into()),
            id_scope: Some(IdScope::new("0neProfile").unwrap()),
            dps_mqtt_host: None,
            auth: None,
        }
    }

    const ENV: &[(&str, &str)] = &[
        (ENV_APP, "https://env.example"),
        (ENV_API_TOKEN, "SharedAccessSignature sr=env"),
        (ENV_CA_FILE, "env.pem"),
        (ENV_DPS_ENDPOINT, "https://dps.env.example"),
        (ENV_ID_SCOPE, "0neEnv"),
    ];

    #[test]
    fn each_value_comes_from_the_flag_then_the_environment_then_the_profile_then_the_default() {
        let flags = global(&["--app", "https://flag.example", "--ca-file", "flag.pem"]);
        let none = global(&[]);
        let scope = IdScope::new("0neFlag").unwrap();
        let env = env_of(ENV);
        let no_env = |_: &str| None;
        // Each row: the first source that has every value, and what app, CA file, DPS
        // endpoint and ID scope then resolve to.
        let cases: [(&str, &GlobalArgs, bool, Env, [&str; 4]); 3] = [
            (
                "flags",
                &flags,
                true,
                &env,
                [
                    "https://flag.example",
                    "flag.pem",
                    "https://dps.flag",
                    "0neFlag",
                ],
            ),
            (
                "environment",
                &none,
                false,
                &env,
                [
                    "https://env.example",
                    "env.pem",
                    "https://dps.env.example",
                    "0neEnv",
                ],
            ),
            (
                "profile",
                &none,
                false,
                &no_env,
                [
                    "https://profile.example",
                    "profile.pem",
                    "https://dps.profile.example",
                    "0neProfile",
                ],
            ),
        ];
        for (source, g, dps_flags, env, want) in cases {
            let r = resolve_with(g, &profile(), env).unwrap();
            let d = resolve_dps_with(
                g,
                dps_flags.then_some(&scope),
                dps_flags.then_some("https://dps.flag"),
                &profile(),
                env,
            )
            .unwrap();
            let got = [
                r.app.as_str(),
                r.ca_file.as_deref().and_then(Path::to_str).unwrap(),
                d.endpoint.as_str(),
                d.id_scope.as_ref().map(IdScope::as_str).unwrap(),
            ];
            assert_eq!(got, want, "from the {source}");
        }
        let d = resolve_dps_with(&none, None, None, &Profile::default(), &no_env).unwrap();
        assert_eq!(d.endpoint, crate::dps::wire::GLOBAL_ENDPOINT);
        assert!(d.id_scope.is_none() && d.ca_file.is_none());
    }

    #[test]
    fn missing_values_and_bad_environment_values_name_what_to_give() {
        let none = global(&[]);
        let no_env = |_: &str| None;
        let e = resolve_with(&none, &Profile::default(), &no_env).unwrap_err();
        assert!(e.to_string().contains("--app URL, set IOTC_APP_URL"), "{e}");
        let app_only = Profile {
            app: Some("myapp".into()),
            ..Profile::default()
        };
        let e = resolve_with(&none, &app_only, &no_env).unwrap_err();
        assert!(
            e.to_string()
                .contains("--token-file FILE, set IOTC_API_TOKEN"),
            "{e}"
        );
        let bad = env_of(&[(ENV_ID_SCOPE, "not a scope!")]);
        let e = resolve_dps_with(&none, None, None, &Profile::default(), &bad).unwrap_err();
        assert!(
            e.to_string().contains("IOTC_ID_SCOPE is not an ID scope"),
            "{e}"
        );
    }

    #[test]
    fn config_set_changes_what_it_was_given_and_keeps_the_rest() {
        let g = global(&["--app", "https://myapp.azureiotcentral.com"]);
        let p = given_values(SetArgs {
            global: &g,
            dps_endpoint: None,
            id_scope: None,
            emulator: None,
        })
        .unwrap();
        assert_eq!(
            p,
            Profile {
                app: Some("https://myapp.azureiotcentral.com".into()),
                ..Profile::default()
            }
        );
        let mut entry = profile();
        merge(&mut entry, p);
        assert_eq!(
            entry.app.as_deref(),
            Some("https://myapp.azureiotcentral.com")
        );
        assert_eq!(entry.dps_endpoint, profile().dps_endpoint, "kept");
    }
}
