//! `iotc dps ...`: register a device with DPS (X.509 or symmetric key) and derive device keys
//! from enrollment group keys.
//!
//! Secrets (symmetric keys, group keys, key passwords) come only from files, never from the
//! value of a flag, so they appear neither in the process list nor in the shell history.

use super::output::{print_json, print_table, OutputFormat};
use super::{CliError, CliResult, GlobalArgs, EXIT_OK};
use crate::dps::{self, Attestation, ClientOptions, X509Identity};
use crate::ids::{IdScope, RegistrationId};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// DPS commands.
#[derive(Debug, clap::Subcommand)]
pub enum DpsCommand {
    /// Register a device with DPS and print its assigned hub and device id.
    #[command(after_help = "Examples:\n  \
        iotc dps register --id-scope 0ne0000000A --registration-id dev-1 \\\n    \
        --cert certs/dev-1_fullchain.pem --key certs/dev-1_key.pem --key-password-file pw.txt\n  \
        iotc dps register --id-scope 0ne0000000A --registration-id dev-2 --group-key-file group.key\n  \
        iotc dps register --id-scope 0ne0000000A --registration-id dev-3 \\\n    \
        --cert certs/dev-3_fullchain.pem --key 'pkcs11:token=station;object=dev-3'\n  \
        iotc dps register --endpoint https://127.0.0.1:8443 --ca-file emu/ca_cert.pem ...\n\n\
        A device key in a PKCS#11 token: --key takes its RFC 7512 URI (pkcs11:token=LABEL;object=LABEL),\n\
        or a .uri file holding it (what `iotc cert device --key-store` writes); the TLS handshake is then\n\
        signed in the token and the key never leaves it. Module from ?module-path=... or IOTC_PKCS11_MODULE,\n\
        PIN from ?pin-source=file:PATH or IOTC_PKCS11_PIN.")]
    Register(Box<RegisterArgs>),
    /// Derive a device key from an enrollment group key:
    /// base64(HMAC-SHA256(base64decode(group key), registration id)).
    #[command(name = "derive-key")]
    DeriveKey(DeriveKeyArgs),
}

/// Arguments of `iotc dps register`.
// The field docs are `--help` text, where a bare URL reads best.
#[allow(rustdoc::bare_urls)]
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("credential").required(true).args(
    ["cert", "pfx", "symmetric_key_file", "group_key_file"])))]
pub struct RegisterArgs {
    /// The ID scope of the DPS instance (IoT Central: Permissions > Device connection groups)
    /// [else IOTC_ID_SCOPE, else the profile's].
    #[arg(long, value_name = "SCOPE")]
    pub id_scope: Option<IdScope>,
    /// The registration id (the device id; for X.509 the certificate's CN).
    #[arg(long)]
    pub registration_id: RegistrationId,
    /// Device certificate PEM: the leaf, then its intermediates (a `_fullchain.pem`).
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key PEM of the device certificate (PKCS#8, encrypted PKCS#8, SEC1 or PKCS#1),
    /// or the key in a PKCS#11 token: its URI (pkcs11:...) or a .uri file holding it.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// PKCS#12 file holding the device key and its certificate chain (instead of --cert/--key).
    #[arg(long)]
    pub pfx: Option<PathBuf>,
    /// File holding the password of an encrypted key or of the PKCS#12 file.
    #[arg(long)]
    pub key_password_file: Option<PathBuf>,
    /// File whose first line is the device's symmetric key (base64).
    #[arg(long, value_name = "FILE")]
    pub symmetric_key_file: Option<PathBuf>,
    /// File whose first line is an enrollment group key (base64): the device key is derived
    /// from it.
    #[arg(long, value_name = "FILE")]
    pub group_key_file: Option<PathBuf>,
    /// DPS endpoint (base URL) [else IOTC_DPS_ENDPOINT, else the profile's, else
    /// https://global.azure-devices-provisioning.net].
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Custom payload (JSON), for example '{"modelId":"dtmi:com:example:Thermostat;1"}'.
    #[arg(long)]
    pub payload: Option<String>,
    /// api-version to send.
    #[arg(long, default_value = dps::wire::API_VERSION)]
    pub api_version: String,
    /// Give up when the registration is not assigned within this many seconds.
    #[arg(long, default_value_t = 120)]
    pub deadline: u64,
}

/// Arguments of `iotc dps derive-key`.
#[derive(Debug, clap::Args)]
pub struct DeriveKeyArgs {
    /// File whose first line is the enrollment group key (base64).
    #[arg(long, value_name = "FILE")]
    pub group_key_file: PathBuf,
    /// The registration id to derive the key for.
    #[arg(long)]
    pub registration_id: RegistrationId,
}

/// Runs a dps command.
pub fn run(cmd: DpsCommand, global: &GlobalArgs) -> CliResult {
    match cmd {
        DpsCommand::DeriveKey(args) => derive_key(args, global),
        DpsCommand::Register(args) => register(*args, global),
    }
}

fn derive_key(args: DeriveKeyArgs, global: &GlobalArgs) -> CliResult {
    let group = super::cert::read_password_file(&args.group_key_file, "group key")?;
    let key = dps::derive_device_key(group.expose(), args.registration_id.as_str())?;
    match global.output {
        OutputFormat::Json => print_json(&serde_json::json!({
            "registrationId": args.registration_id,
            "deviceKey": key,
        }))?,
        OutputFormat::Table => println!("{}", key.expose()),
    }
    Ok(EXIT_OK)
}

fn register(args: RegisterArgs, global: &GlobalArgs) -> CliResult {
    let password = match &args.key_password_file {
        Some(p) => Some(super::cert::read_password_file(p, "key password")?),
        None => None,
    };
    let attestation = if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        let cert_pem = read(cert)?;
        match token_key(key)? {
            Some(uri) => Attestation::X509(X509Identity::from_token(&cert_pem, &uri)?),
            None => {
                let key_pem = zeroize::Zeroizing::new(read(key)?);
                Attestation::X509(X509Identity::from_pem(
                    &cert_pem,
                    &key_pem,
                    password.as_ref().map(|p| p.expose()),
                )?)
            }
        }
    } else if let Some(pfx) = &args.pfx {
        let der = read(pfx)?;
        let pw = password.as_ref().map(|p| p.expose()).unwrap_or("");
        Attestation::X509(X509Identity::from_pkcs12(&der, pw)?)
    } else if let Some(file) = &args.group_key_file {
        let group = super::cert::read_password_file(file, "group key")?;
        Attestation::SymmetricKey(dps::derive_device_key(
            group.expose(),
            args.registration_id.as_str(),
        )?)
    } else {
        let file = args
            .symmetric_key_file
            .as_deref()
            .ok_or("no credential given")?;
        Attestation::SymmetricKey(super::cert::read_password_file(file, "symmetric key")?)
    };
    if let Attestation::X509(id) = &attestation {
        if let Some(cn) = id.common_name() {
            if cn != args.registration_id.as_str() {
                tracing::warn!(
                    "the certificate's CN {cn:?} is not the registration id {:?}: DPS will refuse it",
                    args.registration_id.as_str()
                );
            }
        }
    }
    let payload = match &args.payload {
        Some(text) => Some(
            serde_json::from_str::<serde_json::Value>(text)
                .map_err(|e| format!("--payload is not JSON: {e}"))?,
        ),
        None => None,
    };
    let target =
        super::config::resolve_dps(global, args.id_scope.as_ref(), args.endpoint.as_deref())?;
    let id_scope = target.id_scope.ok_or(
        "no ID scope: give --id-scope SCOPE, set IOTC_ID_SCOPE, or use a profile that has one \
         (`iotc config set NAME --id-scope SCOPE`)",
    )?;
    let ca_pem = match &target.ca_file {
        Some(p) => Some(super::config::read_ca_file(p)?),
        None => None,
    };
    let opts = ClientOptions {
        endpoint: target.endpoint,
        api_version: args.api_version.clone(),
        ca_pem,
        deadline: Duration::from_secs(args.deadline),
        ..ClientOptions::default()
    };
    let rt = super::runtime()?;
    let result = rt.block_on(dps::register(
        id_scope,
        &args.registration_id,
        attestation,
        opts,
        payload,
    ))?;
    match global.output {
        OutputFormat::Json => print_json(&result)?,
        OutputFormat::Table => {
            let group = result
                .x509
                .as_ref()
                .and_then(|x| x.enrollment_group_id.clone())
                .or_else(|| {
                    result
                        .symmetric_key
                        .as_ref()
                        .and_then(|s| s.enrollment_group_id.clone())
                })
                .unwrap_or_default();
            let row = vec![
                result.registration_id.clone().unwrap_or_default(),
                result.device_id.clone().unwrap_or_default(),
                result.assigned_hub.clone().unwrap_or_default(),
                result
                    .status
                    .as_ref()
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                result
                    .substatus
                    .as_ref()
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                group,
            ];
            print_table(
                &[
                    "REGISTRATION ID",
                    "DEVICE ID",
                    "ASSIGNED HUB",
                    "STATUS",
                    "SUBSTATUS",
                    "ENROLLMENT GROUP",
                ],
                &[row],
            );
        }
    }
    Ok(EXIT_OK)
}

/// The token key `--key` names: a `pkcs11:` URI, or a `.uri` file holding one; `None` for a
/// key file.
fn token_key(key: &Path) -> Result<Option<crate::pkcs11::KeyUri>, CliError> {
    if let Some(text) = key.to_str().filter(|t| crate::pkcs11::is_uri(t)) {
        return super::cert::key_uri_arg("--key", Some(text));
    }
    if key.extension().is_some_and(|e| e == "uri") {
        return Ok(Some(
            crate::pkcs11::read_uri_file(key).map_err(|e| format!("--key: {e}"))?,
        ));
    }
    Ok(None)
}

fn read(path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()).into())
}
