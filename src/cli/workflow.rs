//! `iotc onboard x509|symmetric-key`, `iotc provision` and `iotc demo`: the command-line
//! faces of [`crate::workflow`].
//!
//! These commands parse and check their arguments, build the IoT Central and DPS clients from
//! the global options, and hand over to the library; the exit code comes from the batch
//! report (0 all done, 1 some device not done, 2 error).

use super::{config, CliError, CliResult, GlobalArgs, EXIT_OK, EXIT_PARTIAL};
use crate::central::{Client, ClientOptions};
use crate::cert::{Authority, LeafOptions};
use crate::ids::{EnrollmentGroupId, IdScope, RegistrationId};
use crate::secret::Secret;
use crate::workflow::csr::{self, CsrFiles};
use crate::workflow::journal::{Attestation, BatchMeta, Journal};
use crate::workflow::manifest::Source;
use crate::workflow::onboard::{self, CaSpec, Step};
use crate::workflow::provision::{
    plan_journal, plan_source, run_and_report, BatchOptions, PlannedAction, PlannedDevice,
};
use crate::workflow::report::{Outcome, Report};
use crate::workflow::services::{RealServices, SymmetricKeyIssuer, X509Issuer};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Onboarding commands.
#[derive(Debug, clap::Subcommand)]
pub enum OnboardCommand {
    /// From nothing to a verified X.509 enrollment group and registered devices: create or
    /// reuse the CA, create the group, upload the CA, prove possession, issue device
    /// certificates, register them with DPS and write their bundles. Safe to rerun.
    #[command(after_help = "Examples:\n  \
iotc onboard x509 --group line-1 --ca certs/root --ca-password-file pw.txt --count 5 --prefix dev- \
--out bundles --key-password-file pw.txt\n  \
iotc onboard x509 --group line-2 --ca certs/root --intermediate certs/inter --ca-password-file pw.txt \
--device dev-01 --out bundles --no-password\n\n\
Passwords (first line of each file): --ca-password-file (or IOTC_CA_PASSWORD) opens the CA keys \
and encrypts new ones; --key-password-file (or IOTC_KEY_PASSWORD) encrypts the bundles' keys, \
--no-password opts out; --pfx-password-file (or IOTC_PFX_PASSWORD) adds a PFX to each bundle.")]
    X509(OnboardX509Args),
    /// Create or reuse a symmetric-key enrollment group, derive device keys, register the
    /// devices with DPS and write their bundles. Safe to rerun.
    #[command(
        name = "symmetric-key",
        after_help = "Example:\n  iotc onboard symmetric-key --group sk-1 --count 3 --prefix sk- --out bundles"
    )]
    SymmetricKey(OnboardSymmetricArgs),
}

/// Which devices an onboarding registers.
#[derive(Debug, Clone, clap::Args)]
pub struct DeviceSelection {
    /// One device (its id is also its registration id and certificate CN).
    #[arg(long, conflicts_with_all = ["count", "prefix"])]
    pub device: Option<RegistrationId>,
    /// Number of devices to make, named PREFIX + a zero-padded number.
    #[arg(long, requires = "prefix")]
    pub count: Option<u64>,
    /// Id prefix of the devices made by --count.
    #[arg(long, requires = "count")]
    pub prefix: Option<String>,
}

impl DeviceSelection {
    fn source(&self) -> Option<Source> {
        match (&self.device, self.count, &self.prefix) {
            (Some(id), _, _) => Some(Source::Ids(vec![id.clone()])),
            (None, Some(count), Some(prefix)) => Some(Source::Generated {
                count,
                prefix: prefix.clone(),
            }),
            _ => None,
        }
    }
}

/// Where devices register.
// The field docs are `--help` text, where a bare URL reads best.
#[allow(rustdoc::bare_urls)]
#[derive(Debug, Clone, clap::Args)]
pub struct DpsTarget {
    /// The application's DPS ID scope [else IOTC_ID_SCOPE, else the profile's, else read from
    /// the enrollment group with the preview API version].
    #[arg(long, value_name = "SCOPE")]
    pub id_scope: Option<IdScope>,
    /// DPS endpoint (base URL) [else IOTC_DPS_ENDPOINT, else the profile's, else
    /// https://global.azure-devices-provisioning.net]. The CA file (--ca-file) is trusted for it
    /// too.
    #[arg(long, value_name = "URL")]
    pub dps_endpoint: Option<String>,
}

impl DpsTarget {
    /// The endpoint, ID scope and CA file after flags, environment, profile and default.
    pub(super) fn resolve(&self, global: &GlobalArgs) -> Result<config::DpsResolved, CliError> {
        config::resolve_dps(global, self.id_scope.as_ref(), self.dps_endpoint.as_deref())
    }
}

/// How the batch engine runs (every per-device command: provision, renew, revoke).
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// Devices in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,
    /// Attempts per device in one run before it is recorded as failed.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub attempts: u32,
    /// Never draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

impl EngineArgs {
    /// The engine's options; a progress bar only when `progress` and not `--no-progress`.
    pub(super) fn options(&self, progress: bool) -> crate::workflow::engine::EngineOptions {
        crate::workflow::engine::EngineOptions {
            concurrency: self.concurrency as usize,
            max_attempts: self.attempts,
            retry_delay: BatchOptions::default().retry_delay,
            progress: progress && !self.no_progress,
            crash_after_commits: None,
        }
    }
}

/// How a batch runs.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Concurrency, attempts, progress.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// File whose first line is the password of a `<deviceId>.pfx` (key + chain) written in
    /// each X.509 bundle [else IOTC_PFX_PASSWORD]; without either, no PFX is written.
    #[arg(long, value_name = "FILE")]
    pub pfx_password_file: Option<PathBuf>,
    /// File whose first line is the password that encrypts each bundle's private key
    /// (PKCS#8, PBKDF2-SHA256 + AES-256-CBC); or set IOTC_KEY_PASSWORD.
    #[arg(long, value_name = "FILE", conflicts_with = "no_password")]
    pub key_password_file: Option<PathBuf>,
    /// Write private keys unencrypted (still mode 0600): the opt-out from encryption.
    #[arg(long)]
    pub no_password: bool,
}

impl RunArgs {
    /// The password for the bundles' private keys: from the file, the environment, or none
    /// when the user opted out. Without any of them the command is refused before it starts.
    pub(super) fn key_password(&self) -> Result<Option<Secret>, CliError> {
        if self.no_password {
            return Ok(None);
        }
        super::cert::new_key_password(
            self.key_password_file.as_deref(),
            "--key-password-file",
            "the devices' private keys",
        )
    }

    /// The password of the bundles' PFX files, if one was given.
    fn pfx_password(&self) -> Result<Option<Secret>, CliError> {
        super::cert::password_from(
            self.pfx_password_file.as_deref(),
            PFX_PASSWORD_ENV,
            "PFX password",
        )
    }
}

/// Environment variable holding the password of the bundles' PFX files.
pub const PFX_PASSWORD_ENV: &str = "IOTC_PFX_PASSWORD";

/// The password of existing CA keys (and of new ones): `--ca-password-file`, else
/// `IOTC_CA_PASSWORD`, the same way as `iotc cert` reads it.
pub(super) fn ca_password(file: Option<&Path>) -> Result<Option<Secret>, CliError> {
    super::cert::password_from(file, super::cert::CA_PASSWORD_ENV, "CA password")
}

/// Loads the CA `--ca PREFIX` names, the one way every command does (its key opened with the
/// password of `--ca-password-file` or `IOTC_CA_PASSWORD`).
pub(super) fn load_ca(
    prefix: &Path,
    ca_key: Option<&str>,
    password_file: Option<&Path>,
) -> Result<Authority, CliError> {
    let loaded = match super::cert::key_uri_arg("--ca-key", ca_key)? {
        Some(uri) => Authority::load_with_key_uri(prefix, &uri),
        None => {
            let password = ca_password(password_file)?;
            Authority::load(prefix, password.as_ref().map(Secret::expose))
        }
    };
    loaded.map_err(|e| {
        format!(
            "cannot load the CA {}: {e}{}",
            prefix.display(),
            super::cert::ca_password_hint(&e)
        )
        .into()
    })
}

/// Adds which flag gives the password when a CA key could not be opened for want of one.
fn with_ca_password_hint(e: onboard::OnboardError) -> CliError {
    match &e {
        onboard::OnboardError::Cert {
            source: source @ crate::cert::CertError::PasswordRequired,
            ..
        } => format!("{e}: {source}{}", super::cert::ca_password_hint(source)).into(),
        _ => e.into(),
    }
}

/// Arguments of `iotc onboard x509`.
#[derive(Debug, clap::Args)]
pub struct OnboardX509Args {
    /// Enrollment group id.
    #[arg(long)]
    pub group: EnrollmentGroupId,
    /// Root CA files PREFIX_cert.pem / PREFIX_key.pem: loaded when they exist, made otherwise.
    #[arg(long, value_name = "PREFIX")]
    pub ca: PathBuf,
    /// Intermediate CA PREFIX (loaded or issued by the root); it is uploaded, proved and signs
    /// the devices.
    #[arg(long, value_name = "PREFIX")]
    pub intermediate: Option<PathBuf>,
    /// The root's key in a PKCS#11 token (RFC 7512 URI), overriding PREFIX_key.pem / .uri.
    #[arg(long, value_name = "URI")]
    pub ca_key: Option<String>,
    /// The intermediate's key in a PKCS#11 token (RFC 7512 URI), overriding its
    /// PREFIX_key.pem / .uri.
    #[arg(long, value_name = "URI", requires = "intermediate")]
    pub intermediate_key: Option<String>,
    /// File whose first line is the password of the CA keys [else IOTC_CA_PASSWORD]; new CA
    /// keys are encrypted with it.
    #[arg(long, value_name = "FILE")]
    pub ca_password_file: Option<PathBuf>,
    /// Upload the CA as already verified instead of proving possession of its key.
    #[arg(long)]
    pub verified_upload: bool,
    /// The devices (none: only set up the group).
    #[command(flatten)]
    pub devices: DeviceSelection,
    /// Folder of the device bundles (and the onboarding journal and report).
    #[arg(long, default_value = "bundles")]
    pub out: PathBuf,
    /// DPS settings.
    #[command(flatten)]
    pub dps: DpsTarget,
    /// Batch settings.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Arguments of `iotc onboard symmetric-key`.
#[derive(Debug, clap::Args)]
pub struct OnboardSymmetricArgs {
    /// Enrollment group id.
    #[arg(long)]
    pub group: EnrollmentGroupId,
    /// The devices (none: only set up the group).
    #[command(flatten)]
    pub devices: DeviceSelection,
    /// Folder of the device bundles (and the onboarding journal and report).
    #[arg(long, default_value = "bundles")]
    pub out: PathBuf,
    /// DPS settings.
    #[command(flatten)]
    pub dps: DpsTarget,
    /// Batch settings.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Arguments of `iotc provision`.
#[derive(Debug, clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Manifest: CSV with a header row; columns deviceId (required), displayName, \
template, organization, simulated, csr (the device's CSR file, relative to the manifest's folder).\n\n\
CSR batch (the devices made their own keys): --csr-dir DIR with one <deviceId>.csr per device \
(PEM or DER), or a csr column. Every CSR is checked before anything is sent; the station signs \
them, creates the IoT Central devices and writes bundles with certificates only; the devices \
register themselves later (see `iotc provision status`).\n\nExamples:\n  \
iotc provision --manifest line1.csv --journal line1.journal --out bundles --group line-1 --ca certs/root \
--ca-password-file pw.txt --key-password-file pw.txt\n  \
iotc provision --count 1000 --prefix sn- --journal b.journal --out bundles --group sk-1\n  \
iotc provision --journal line1.journal --out bundles --group line-1 --ca certs/root \
--ca-password-file pw.txt --key-password-file pw.txt --resume\n  \
iotc provision --csr-dir csrs --journal csr1.journal --out bundles --group line-1 --ca certs/root \
--ca-password-file pw.txt"
)]
pub struct ProvisionArgs {
    /// Follow up on a batch.
    #[command(subcommand)]
    pub command: Option<ProvisionCommand>,
    /// The manifest (CSV).
    #[arg(long, conflicts_with_all = ["count", "prefix"])]
    pub manifest: Option<PathBuf>,
    /// Instead of a manifest: this many devices named PREFIX + a zero-padded number.
    #[arg(long, requires = "prefix")]
    pub count: Option<u64>,
    /// Id prefix of the devices made by --count.
    #[arg(long, requires = "count")]
    pub prefix: Option<String>,
    /// A CSR batch: the devices made their own keys; DIR holds <deviceId>.csr for each device
    /// (PEM or DER). Without --manifest or --count, the devices are the .csr files of DIR.
    #[arg(long, value_name = "DIR")]
    pub csr_dir: Option<PathBuf>,
    /// The journal (SQLite): created by a new batch, continued by --resume.
    #[arg(long, required = true)]
    pub journal: Option<PathBuf>,
    /// Folder of the device bundles.
    #[arg(long, required = true)]
    pub out: Option<PathBuf>,
    /// Enrollment group the devices belong to (x509 or symmetric key).
    #[arg(long, required = true)]
    pub group: Option<EnrollmentGroupId>,
    /// CA PREFIX that signs device certificates (x509 groups): PREFIX_cert.pem with
    /// PREFIX_key.pem, or PREFIX_key.uri when the key is in a PKCS#11 token.
    #[arg(long, value_name = "PREFIX")]
    pub ca: Option<PathBuf>,
    /// The CA key in a PKCS#11 token (RFC 7512 URI), overriding PREFIX_key.pem / .uri.
    #[arg(long, value_name = "URI", requires = "ca")]
    pub ca_key: Option<String>,
    /// File whose first line is the password of the CA key [else IOTC_CA_PASSWORD].
    #[arg(long, value_name = "FILE")]
    pub ca_password_file: Option<PathBuf>,
    /// Continue the batch of an existing journal.
    #[arg(long)]
    pub resume: bool,
    /// Check everything (manifest, group, CA, journal) and do nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Report file (JSON); default OUT/report.json.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// DPS settings.
    #[command(flatten)]
    pub dps: DpsTarget,
    /// Batch settings.
    #[command(flatten)]
    pub run: RunArgs,
}

/// What follows a batch.
#[derive(Debug, clap::Subcommand)]
pub enum ProvisionCommand {
    /// Where each device of a batch stands now: its journal, and IoT Central's provisioned flag.
    #[command(after_help = super::provision_status::AFTER_HELP)]
    Status(super::provision_status::StatusArgs),
}

/// Arguments of `iotc demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Data folder of the emulator and of everything the demo writes (default: a new
    /// temporary folder, kept at the end so you can look at it).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Devices in the batch.
    #[arg(long, default_value_t = 100)]
    pub devices: u64,
}

/// Runs an onboard command.
pub fn run_onboard(cmd: OnboardCommand, global: &GlobalArgs) -> CliResult {
    let rt = super::runtime()?;
    rt.block_on(async {
        match cmd {
            OnboardCommand::X509(args) => onboard_x509(args, global).await,
            OnboardCommand::SymmetricKey(args) => onboard_symmetric(args, global).await,
        }
    })
}

/// Runs `iotc provision`.
pub fn run_provision(args: ProvisionArgs, global: &GlobalArgs) -> CliResult {
    let rt = super::runtime()?;
    match args.command {
        Some(ProvisionCommand::Status(status)) => {
            rt.block_on(super::provision_status::run(status, global))
        }
        None => rt.block_on(provision(args, global)),
    }
}

/// Runs `iotc demo`.
pub fn run_demo(args: DemoArgs, global: &GlobalArgs) -> CliResult {
    let rt = super::runtime()?;
    rt.block_on(super::demo::run(
        args.data_dir,
        args.devices,
        global.output == super::output::OutputFormat::Json,
    ))
}

/// A client for the application, with the preview api-version when `preview`.
fn central_client(global: &GlobalArgs, preview: bool) -> Result<Client, CliError> {
    if !preview {
        return config::client(global);
    }
    let r = config::resolve(global)?;
    let mut options = ClientOptions::default();
    options.api_version = options.preview_api_version.clone();
    if let Some(path) = &r.ca_file {
        options = options.with_ca_pem(config::read_ca_file(path)?);
    }
    Ok(Client::new(&r.app, r.credential, Some(options))?)
}

/// DPS client options for the resolved target.
pub(super) fn dps_options(
    dps: &config::DpsResolved,
) -> Result<crate::dps::ClientOptions, CliError> {
    Ok(crate::dps::ClientOptions {
        endpoint: dps.endpoint.clone(),
        ca_pem: match &dps.ca_file {
            Some(p) => Some(config::read_ca_file(p)?),
            None => None,
        },
        ..crate::dps::ClientOptions::default()
    })
}

/// The ID scope: given (flag, environment, profile), or read from the group with the preview
/// API.
pub(super) async fn id_scope(
    global: &GlobalArgs,
    dps: &config::DpsResolved,
    group: &str,
) -> Result<IdScope, CliError> {
    if let Some(s) = &dps.id_scope {
        return Ok(s.clone());
    }
    let preview = central_client(global, true)?;
    let g = preview.get_enrollment_group(group).await.map_err(|e| {
        format!("cannot read the ID scope from group {group}: {e} (pass --id-scope)")
    })?;
    let scope = g
        .id_scope
        .ok_or("the service did not return the group's ID scope; pass --id-scope")?;
    Ok(IdScope::new(scope)?)
}

pub(super) fn stop_on_ctrl_c() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "\ninterrupted: finishing the devices in flight; rerun to continue (provision: with --resume)"
            );
            flag.store(true, Ordering::SeqCst);
            if tokio::signal::ctrl_c().await.is_ok() {
                // The journal is crash-safe: leaving now loses nothing.
                std::process::exit(super::EXIT_PARTIAL);
            }
        }
    });
    stop
}

pub(super) fn batch_options(
    run: &RunArgs,
    out: &Path,
    id_scope: &IdScope,
    dps: &config::DpsResolved,
    progress: bool,
    key_password: Option<Secret>,
) -> Result<BatchOptions, CliError> {
    Ok(BatchOptions {
        concurrency: run.engine.concurrency as usize,
        max_attempts: run.engine.attempts,
        out_dir: out.to_owned(),
        id_scope: id_scope.to_string(),
        dps_endpoint: Some(dps.endpoint.clone()),
        progress: progress && !run.engine.no_progress,
        pfx_password: run.pfx_password()?,
        key_password,
        ..BatchOptions::default()
    })
}

fn print_steps(steps: &[Step]) {
    for s in steps {
        let outcome = match s.outcome {
            onboard::Outcome::Created => "created",
            onboard::Outcome::Reused => "reused",
            onboard::Outcome::Done => "done",
        };
        println!("{:<20} {:<8} {}", s.step, outcome, s.detail);
    }
}

fn finish(steps: &[Step], report: Option<&Report>, global: &GlobalArgs) -> CliResult {
    if global.output == super::output::OutputFormat::Json {
        super::output::print_json(&serde_json::json!({ "steps": steps, "report": report }))?;
    } else {
        print_steps(steps);
        if let Some(r) = report {
            print!("{}", r.summary(20));
            println!("bundles in {}", r.out_dir.display());
        }
    }
    Ok(report.map(exit_code).unwrap_or(EXIT_OK))
}

/// The exit code of a run: 0 when everything is done, 1 otherwise.
pub(super) fn exit_code_of(complete: bool) -> i32 {
    if complete {
        EXIT_OK
    } else {
        EXIT_PARTIAL
    }
}

/// The exit code of a batch that ran: 0 when every device is done, 1 otherwise.
pub(super) fn exit_code(report: &Report) -> i32 {
    match report.outcome() {
        Outcome::Complete => EXIT_OK,
        Outcome::Partial => EXIT_PARTIAL,
    }
}

/// What a dry run found, printed as a table or as one JSON document.
struct DryRun<'a> {
    headline: String,
    context: serde_json::Value,
    context_line: String,
    plan: &'a [PlannedDevice],
}

fn print_plan(dry: DryRun<'_>, global: &GlobalArgs) -> CliResult {
    if global.output == super::output::OutputFormat::Json {
        let mut doc = dry.context;
        doc["dryRun"] = true.into();
        doc["devices"] = serde_json::to_value(dry.plan)?;
        super::output::print_json(&doc)?;
        return Ok(EXIT_OK);
    }
    println!("{}", dry.headline);
    println!("{}", dry.context_line);
    let mark = |yes: bool, what: &str| if yes { what.to_owned() } else { "-".into() };
    let rows: Vec<Vec<String>> = dry
        .plan
        .iter()
        .map(|d| {
            vec![
                d.device_id.clone(),
                match d.action {
                    PlannedAction::Provision => "provision",
                    PlannedAction::Resume => "resume",
                    PlannedAction::Skip => "skip (done)",
                }
                .into(),
                d.from.to_string(),
                mark(d.issue_credential, "issue"),
                mark(d.create_device, "create"),
                mark(d.register, "register"),
                d.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    super::output::print_table(
        &[
            "DEVICE",
            "ACTION",
            "FROM",
            "CREDENTIAL",
            "IOT CENTRAL DEVICE",
            "DPS",
            "LAST ERROR",
        ],
        &rows,
    );
    println!("nothing was done");
    Ok(EXIT_OK)
}

/// Opens the onboarding journal of `group` in `out` (made on first use) and plans the
/// selected devices that are not in it yet.
fn onboarding_journal(
    out: &Path,
    group: &str,
    attestation: Attestation,
    source: &Source,
    ca: Option<&Authority>,
) -> Result<Journal, CliError> {
    source.validate()?;
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let path = out.join(format!(".iotc-onboard-{group}.journal"));
    let mut journal = if path.exists() {
        let j = Journal::open(&path)?;
        check_meta(j.meta(), group, attestation)?;
        check_issuer(j.meta(), ca)?;
        j
    } else {
        Journal::create(
            &path,
            BatchMeta {
                group_id: group.to_owned(),
                attestation,
                source: "onboard".into(),
                devices: 0,
                created_at: crate::workflow::report::now_rfc3339(),
                issuer: ca.map(ca_thumbprint),
                csr: false,
            },
        )?
    };
    journal.plan_from(source, true)?;
    Ok(journal)
}

fn ca_thumbprint(ca: &Authority) -> String {
    crate::cert::sha256_thumbprint(ca.cert_der())
}

/// Refuses to go on with a journal whose device certificates were signed by another CA: the
/// batch would end up with devices from two CAs (and the new one may not be in the group).
fn check_issuer(meta: &BatchMeta, ca: Option<&Authority>) -> Result<(), CliError> {
    match (&meta.issuer, ca) {
        (Some(recorded), Some(ca)) if *recorded != ca_thumbprint(ca) => Err(format!(
            "the journal's device certificates are signed by the CA with SHA-256 thumbprint \
             {recorded}, but --ca is {:?} ({}): go on with the CA the batch started with",
            ca.subject(),
            ca_thumbprint(ca)
        )
        .into()),
        _ => Ok(()),
    }
}

fn check_meta(meta: &BatchMeta, group: &str, attestation: Attestation) -> Result<(), CliError> {
    if meta.group_id != group {
        return Err(format!(
            "the journal belongs to group {}, not {group}",
            meta.group_id
        )
        .into());
    }
    if meta.attestation != attestation {
        return Err(format!(
            "the journal is for {:?} devices but group {group} uses {:?}",
            meta.attestation, attestation
        )
        .into());
    }
    Ok(())
}

async fn onboard_x509(args: OnboardX509Args, global: &GlobalArgs) -> CliResult {
    let client = config::client(global)?;
    let group = args.group.as_str();
    let source = args.devices.source();
    if let Some(s) = &source {
        s.validate()?;
    }
    let dps = args.dps.resolve(global)?;
    // Only devices get bundle keys: a run that sets up the group alone needs no password.
    let key_password = match &source {
        Some(_) => args.run.key_password()?,
        None => None,
    };
    let ca_password = ca_password(args.ca_password_file.as_deref())?;
    let root_key = PathBuf::from(format!("{}_key.pem", args.ca.display()));
    let root_in_token = PathBuf::from(format!("{}_key.uri", args.ca.display())).exists();
    let root_in_token = root_in_token || args.ca_key.is_some();
    if ca_password.is_none() && !args.run.no_password && !root_key.exists() && !root_in_token {
        return Err(
            "no password for the new CA key: give --ca-password-file FILE (or set \
IOTC_CA_PASSWORD), or pass --no-password"
                .into(),
        );
    }
    let mut steps = Vec::new();
    let spec = CaSpec {
        root: args.ca.clone(),
        intermediate: args.intermediate.clone(),
        password: ca_password,
        name: group.to_owned(),
        root_key: super::cert::key_uri_arg("--ca-key", args.ca_key.as_deref())?,
        intermediate_key: super::cert::key_uri_arg(
            "--intermediate-key",
            args.intermediate_key.as_deref(),
        )?,
    };
    let cas = onboard::ensure_ca(&spec, &mut steps).map_err(with_ca_password_hint)?;
    onboard::ensure_x509_group(
        &client,
        group,
        cas.signing(),
        args.verified_upload,
        &mut steps,
    )
    .await?;
    let Some(source) = source else {
        return finish(&steps, None, global);
    };
    let scope = id_scope(global, &dps, group).await?;
    let journal = onboarding_journal(
        &args.out,
        group,
        Attestation::X509,
        &source,
        Some(cas.signing()),
    )?;
    let services = RealServices::new(client, dps_options(&dps)?, scope.clone());
    let issuer = X509Issuer::new(Arc::new(cas.into_signing()), LeafOptions::default());
    let opts = batch_options(&args.run, &args.out, &scope, &dps, true, key_password)?;
    let report = run_and_report(
        journal,
        services,
        issuer,
        opts,
        Some(&args.out.join("report.json")),
        stop_on_ctrl_c(),
    )
    .await?;
    steps.push(Step {
        step: "devices",
        outcome: if report.completed_this_run == 0 {
            onboard::Outcome::Reused
        } else {
            onboard::Outcome::Done
        },
        detail: format!(
            "{} registered now, {} of {} done",
            report.completed_this_run, report.succeeded, report.total
        ),
    });
    finish(&steps, Some(&report), global)
}

async fn onboard_symmetric(args: OnboardSymmetricArgs, global: &GlobalArgs) -> CliResult {
    let client = config::client(global)?;
    let group = args.group.as_str();
    let source = args.devices.source();
    if let Some(s) = &source {
        s.validate()?;
    }
    let dps = args.dps.resolve(global)?;
    let mut steps = Vec::new();
    let key = onboard::ensure_symmetric_group(&client, group, &mut steps).await?;
    let Some(source) = source else {
        return finish(&steps, None, global);
    };
    let scope = id_scope(global, &dps, group).await?;
    let journal = onboarding_journal(&args.out, group, Attestation::SymmetricKey, &source, None)?;
    let services = RealServices::new(client, dps_options(&dps)?, scope.clone());
    let opts = batch_options(&args.run, &args.out, &scope, &dps, true, None)?;
    let report = run_and_report(
        journal,
        services,
        SymmetricKeyIssuer::new(key),
        opts,
        Some(&args.out.join("report.json")),
        stop_on_ctrl_c(),
    )
    .await?;
    steps.push(Step {
        step: "devices",
        outcome: if report.completed_this_run == 0 {
            onboard::Outcome::Reused
        } else {
            onboard::Outcome::Done
        },
        detail: format!(
            "{} registered now, {} of {} done",
            report.completed_this_run, report.succeeded, report.total
        ),
    });
    finish(&steps, Some(&report), global)
}

async fn provision(args: ProvisionArgs, global: &GlobalArgs) -> CliResult {
    let (Some(journal_path), Some(out), Some(group_id)) =
        (args.journal.clone(), args.out.clone(), args.group.clone())
    else {
        return Err("--journal, --out and --group are required".into());
    };
    // 1. The manifest, whole, and every CSR of a CSR batch, before anything else.
    let source = match (&args.manifest, args.count, &args.prefix, &args.csr_dir) {
        (Some(m), ..) => Some(Source::Csv(m.clone())),
        (None, Some(count), Some(prefix), _) => Some(Source::Generated {
            count,
            prefix: prefix.clone(),
        }),
        (None, None, _, Some(dir)) => Some(Source::Ids(csr::devices_in(dir)?)),
        _ if args.resume => None,
        _ => {
            return Err(
                "give the devices: --manifest CSV, --count N --prefix P, or --csr-dir DIR".into(),
            )
        }
    };
    let summary = match &source {
        Some(s) => Some(s.validate()?),
        None => None,
    };
    let csr_files = match (&args.csr_dir, &summary) {
        (Some(dir), _) => Some(CsrFiles::new(Some(dir.clone()), args.manifest.as_deref())),
        (None, Some(s)) if s.with_csr > 0 => Some(CsrFiles::new(None, args.manifest.as_deref())),
        _ => None,
    };
    if let (Some(files), Some(src)) = (&csr_files, &source) {
        note_not_copied(&csr::check_all(src, files)?);
    }
    if !args.resume && journal_path.exists() {
        return Err(format!(
            "journal {} exists: pass --resume to continue its batch, or choose another file",
            journal_path.display()
        )
        .into());
    }
    if args.resume && !journal_path.exists() {
        return Err(format!("no journal at {} to resume", journal_path.display()).into());
    }
    let csr_mode = match (&csr_files, args.resume) {
        (Some(_), _) => true,
        (None, true) => Journal::open(&journal_path)?.meta().csr,
        (None, false) => false,
    };
    if csr_mode {
        refuse_key_flags_in_csr_batch(&args.run)?;
    }

    // 2. The group decides how devices attest.
    let dps = args.dps.resolve(global)?;
    let client = config::client(global)?;
    let group = group_id.as_str();
    let g = client
        .get_enrollment_group(group)
        .await
        .map_err(|e| format!("cannot read enrollment group {group}: {e}"))?;
    let attestation = match &g.attestation {
        crate::central::models::GroupAttestation::X509 { .. } => Attestation::X509,
        crate::central::models::GroupAttestation::SymmetricKey { .. } => Attestation::SymmetricKey,
    };
    let key_password = match attestation {
        Attestation::X509 if csr_mode => None,
        Attestation::X509 => args.run.key_password()?,
        Attestation::SymmetricKey if csr_mode => {
            return Err(format!(
                "group {group} uses symmetric keys: a CSR batch needs an x509 group (the \
                 devices' certificates chain to its CA)"
            )
            .into())
        }
        Attestation::SymmetricKey => None,
    };
    let ca = match (attestation, &args.ca) {
        (Attestation::X509, Some(prefix)) => {
            Some(load_ca(prefix, args.ca_key.as_deref(), args.ca_password_file.as_deref())?)
        }
        (Attestation::X509, None) => {
            return Err(format!(
                "group {group} is an x509 group: pass --ca PREFIX (the CA that signs device certificates)"
            )
            .into())
        }
        (Attestation::SymmetricKey, Some(_)) => {
            return Err(format!("group {group} uses symmetric keys: --ca does not apply").into())
        }
        (Attestation::SymmetricKey, None) => None,
    };
    let group_key = match &g.attestation {
        crate::central::models::GroupAttestation::SymmetricKey {
            symmetric_key: Some(k),
        } => Some(k.primary_key.clone()),
        _ => None,
    };
    if attestation == Attestation::SymmetricKey && group_key.is_none() {
        return Err(format!("group {group} returned no symmetric key").into());
    }
    let scope = id_scope(global, &dps, group).await?;

    // 3. The journal.
    if args.resume {
        let j = Journal::open(&journal_path)?;
        check_meta(j.meta(), group, attestation)?;
        check_issuer(j.meta(), ca.as_ref())?;
        if csr_files.is_some() && !j.meta().csr {
            return Err(format!(
                "journal {} is not a CSR batch: its devices' keys are made by the station; \
                 resume it without --csr-dir (and without a csr column)",
                journal_path.display()
            )
            .into());
        }
        if let Some(s) = &source {
            if j.meta().source != s.describe() {
                return Err(format!(
                    "the journal was planned from {}, not {}",
                    j.meta().source,
                    s.describe()
                )
                .into());
            }
        }
    }
    if args.dry_run {
        let (headline, plan) = match (&summary, &source, args.resume) {
            (Some(s), Some(src), false) => (
                if csr_mode {
                    format!(
                        "dry run: would sign {0} CSR(s) and create {0} IoT Central device(s); the devices register themselves",
                        s.devices
                    )
                } else {
                    format!(
                        "dry run: would provision {} device(s) ({} with an IoT Central device created first)",
                        s.devices, s.with_central_fields
                    )
                },
                plan_source(src)?
                    .into_iter()
                    .map(|d| if csr_mode { d.in_csr_batch() } else { d })
                    .collect(),
            ),
            _ => {
                let j = Journal::open(&journal_path)?;
                let c = j.counts()?;
                (
                    format!(
                        "dry run: would resume {}: {} of {} device(s) left ({} failed before)",
                        journal_path.display(),
                        c.total - c.done,
                        c.total,
                        c.failed
                    ),
                    plan_journal(&j)?,
                )
            }
        };
        let signer = ca.as_ref().map(|c| c.subject().to_string());
        let context_line = format!(
            "group {group} ({}), ID scope {scope}, DPS {}{}, bundles in {}",
            match attestation {
                Attestation::X509 => "x509",
                Attestation::SymmetricKey => "symmetric key",
            },
            dps.endpoint,
            signer
                .as_ref()
                .map(|s| format!(", devices signed by {s}"))
                .unwrap_or_default(),
            out.display()
        );
        let context = serde_json::json!({
            "groupId": group, "attestation": attestation, "idScope": scope.to_string(),
            "dpsEndpoint": dps.endpoint, "signer": signer, "csr": csr_mode,
            "journal": journal_path, "outDir": out, "resume": args.resume,
        });
        return print_plan(
            DryRun {
                headline,
                context,
                context_line,
                plan: &plan,
            },
            global,
        );
    }
    let journal = if args.resume {
        let mut j = Journal::open(&journal_path)?;
        if !j.is_planned()? {
            // The run that made it died before its plan was committed.
            let s = source.as_ref().ok_or(
                "the journal's batch was never planned (its first run was interrupted): \
                 pass the same --manifest (or --count/--prefix) with --resume",
            )?;
            plan(&mut j, s, csr_files.as_ref(), csr_mode)?;
        }
        j
    } else {
        let s = source.as_ref().ok_or("no device source")?;
        let mut j = Journal::create(
            &journal_path,
            BatchMeta {
                group_id: group.to_owned(),
                attestation,
                source: s.describe(),
                devices: summary.as_ref().map(|s| s.devices).unwrap_or(0),
                created_at: crate::workflow::report::now_rfc3339(),
                issuer: ca.as_ref().map(ca_thumbprint),
                csr: csr_mode,
            },
        )?;
        plan(&mut j, s, csr_files.as_ref(), csr_mode)?;
        j
    };
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;

    // 4. Run.
    let services = RealServices::new(client, dps_options(&dps)?, scope.clone());
    let mut opts = batch_options(
        &args.run,
        &out,
        &scope,
        &dps,
        global.output != super::output::OutputFormat::Json,
        key_password,
    )?;
    if csr_mode {
        // No key on the station: nothing to put in a PFX (IOTC_PFX_PASSWORD does not apply).
        opts.pfx_password = None;
    }
    let report_path = args
        .report
        .clone()
        .unwrap_or_else(|| out.join("report.json"));
    let stop = stop_on_ctrl_c();
    let report = match (ca, group_key) {
        (Some(ca), _) => {
            run_and_report(
                journal,
                services,
                X509Issuer::new(Arc::new(ca), LeafOptions::default()),
                opts,
                Some(&report_path),
                stop,
            )
            .await?
        }
        (None, Some(key)) => {
            run_and_report(
                journal,
                services,
                SymmetricKeyIssuer::new(key),
                opts,
                Some(&report_path),
                stop,
            )
            .await?
        }
        (None, None) => return Err("no credential source".into()),
    };
    if global.output == super::output::OutputFormat::Json {
        super::output::print_json(&report)?;
    } else {
        print!("{}", report.summary(20));
        println!("bundles in {}", out.display());
        if csr_mode {
            println!(
                "the devices register themselves; see which did with: iotc provision status --journal {}",
                journal_path.display()
            );
        }
    }
    Ok(exit_code(&report))
}

/// Plans the devices of `source` into a new journal: with their CSRs in a CSR batch.
fn plan(
    j: &mut Journal,
    source: &Source,
    csr_files: Option<&CsrFiles>,
    csr_mode: bool,
) -> Result<u64, CliError> {
    match (csr_files, csr_mode) {
        (Some(files), _) => {
            Ok(j.plan_with_csrs(source, &mut |spec| csr::read_for_plan(files, spec))?)
        }
        (None, true) => Err(
            "the journal's CSR batch was never planned (its first run was \
             interrupted): pass the same --csr-dir (or manifest with its csr column) with --resume"
                .into(),
        ),
        (None, false) => Ok(j.plan_from(source, false)?),
    }
}

/// In a CSR batch no private key exists on the station: the flags about bundle keys are
/// refused, not ignored.
fn refuse_key_flags_in_csr_batch(run: &RunArgs) -> Result<(), CliError> {
    for (given, flag) in [
        (run.key_password_file.is_some(), "--key-password-file"),
        (run.pfx_password_file.is_some(), "--pfx-password-file"),
    ] {
        if given {
            return Err(format!(
                "{flag} does not apply to a CSR batch: the devices keep their keys, and the \
                 bundles hold only certificates"
            )
            .into());
        }
    }
    Ok(())
}

/// Says what the CSRs asked for that the device profile decides instead.
fn note_not_copied(summary: &csr::CsrSummary) {
    if summary.not_copied.is_empty() {
        return;
    }
    let what: Vec<String> = summary
        .not_copied
        .iter()
        .map(|(name, n)| format!("{name} ({n})"))
        .collect();
    eprintln!(
        "note: the CSRs ask for what the device profile decides instead, which the certificates \
         do not carry: {} (CN = device id, clientAuth, nothing else is copied)",
        what.join(", ")
    );
}
