//! Named profiles and the resolution of `--app`, `--token` and `--ca-file`.
//!
//! Typing the application URL and a year-long API token on every command is both tedious and
//! leaky (shell history), so `iotc config set NAME --app … --token …` stores them in a JSON file
//! under the user's config directory (`$IOTC_CONFIG`, else `$XDG_CONFIG_HOME/iotc/config.json`,
//! else `~/.config/iotc/config.json`). The file is written atomically and, because it may hold a
//! token, with mode 0600. Resolution order for each value: the flag, its environment variable
//! (clap merges those two), then the selected profile (`--profile`, else the file's default).

use super::{output, CliError, CliResult, GlobalArgs, EXIT_OK};
use crate::central::{Client, ClientOptions, Credential};
use crate::secret::Secret;
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The environment variable naming the config file.
pub const ENV_CONFIG: &str = "IOTC_CONFIG";

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

/// Resolves `--app`, `--token`/`IOTC_BEARER_TOKEN` and `--ca-file` against the profile.
pub fn resolve(global: &GlobalArgs) -> Result<Resolved, CliError> {
    let path = config_path().ok();
    let file = match &path {
        Some(p) => ConfigFile::load(p)?,
        None => ConfigFile::default(),
    };
    let profile = match global.profile.as_deref().or(file.default.as_deref()) {
        Some(name) => match file.profiles.get(name) {
            Some(p) => p.clone(),
            None if global.profile.is_some() => {
                return Err(format!(
                    "no profile {name:?} in {} (see `iotc config list`)",
                    path.as_deref().unwrap_or(Path::new("?")).display()
                )
                .into())
            }
            None => Profile::default(),
        },
        None => Profile::default(),
    };
    let app = global.app.clone().or(profile.app).ok_or(
        "no application: pass --app URL (or set IOTC_APP_URL, or a profile with `iotc config set`)",
    )?;
    let credential = match (&global.token, &profile.token) {
        (Some(t), _) => Credential::api_token(t.expose()),
        (None, Some(t)) => Credential::api_token(t.expose()),
        (None, None) => match std::env::var(crate::central::credential::ENV_BEARER_TOKEN) {
            Ok(t) if !t.trim().is_empty() => Credential::bearer(t),
            _ => {
                return Err("no credential: pass --token (or set IOTC_API_TOKEN, or \
                            IOTC_BEARER_TOKEN for an Azure AD token, or a profile)"
                    .into())
            }
        },
    };
    Ok(Resolved {
        app,
        credential,
        ca_file: global.ca_file.clone().or(profile.ca_file),
    })
}

/// Builds a client from the global options (used by every command that talks to IoT Central).
pub fn client(global: &GlobalArgs) -> Result<Client, CliError> {
    let r = resolve(global)?;
    let mut options = ClientOptions::default();
    if let Some(path) = &r.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
        options = options.with_ca_pem(pem);
    }
    if let Ok(rate) = std::env::var("IOTC_RATE_LIMIT") {
        let rate: u32 = rate
            .parse()
            .map_err(|_| format!("IOTC_RATE_LIMIT must be a number, not {rate:?}"))?;
        options = options.with_rate_limit(rate);
    }
    Ok(Client::new(&r.app, r.credential, Some(options))?)
}

/// `iotc config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Create or change a profile from the global --app, --token and --ca-file.
    #[command(
        after_help = "Example:\n  iotc config set prod --app myapp --token \"$TOKEN\" --default\n  \
iotc config set local --app https://127.0.0.1:8443 --ca-file emu/ca.pem"
    )]
    Set {
        /// Profile name.
        name: String,
        /// Make it the default profile.
        #[arg(long)]
        default: bool,
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
    ]
}

fn redacted(p: &Profile) -> serde_json::Value {
    serde_json::json!({
        "app": p.app,
        "token": p.token.as_ref().map(|_| "[set]"),
        "caFile": p.ca_file,
    })
}

/// Runs `iotc config …`.
pub fn run(cmd: ConfigCommand, global: &GlobalArgs) -> CliResult {
    let path = config_path()?;
    let mut file = ConfigFile::load(&path)?;
    match cmd {
        ConfigCommand::Set { name, default } => {
            if name.trim().is_empty() {
                return Err("a profile name must not be empty".into());
            }
            let entry = file.profiles.entry(name.clone()).or_default();
            if let Some(app) = &global.app {
                crate::central::api_base_url(app)?;
                entry.app = Some(app.clone());
            }
            if let Some(t) = &global.token {
                entry.token = Some(t.clone());
            }
            if let Some(c) = &global.ca_file {
                let abs = std::path::absolute(c).unwrap_or_else(|_| c.clone());
                entry.ca_file = Some(abs);
            }
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
                output::print_table(&["PROFILE", "APP", "TOKEN", "CA FILE"], &rows);
            }
        },
        ConfigCommand::Show { name } => {
            let name = name
                .or(global.profile.clone())
                .or(file.default.clone())
                .ok_or("no profile given and no default profile")?;
            let p = file
                .profiles
                .get(&name)
                .ok_or_else(|| format!("no profile {name:?}"))?;
            match global.output {
                output::OutputFormat::Json => output::print_json(&redacted(p))?,
                output::OutputFormat::Table => output::print_table(
                    &["PROFILE", "APP", "TOKEN", "CA FILE"],
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
