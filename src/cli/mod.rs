//! The command line: clap definitions, dispatch, output and exit codes.
//!
//! Each area of the tool has its own file (`cert`, `central`, `dps`, `workflow`, `emulator`)
//! holding its clap types and a `run` function. `run` returns the exit code it wants (0 ok,
//! 1 partial batch failure) or an error; [`main`] prints an error with its whole cause chain
//! on one line per cause and exits 2. Nothing below the CLI depends on it.

pub mod central;
pub mod cert;
pub mod config;
pub mod demo;
pub mod dps;
pub mod emulator;
pub mod lifecycle;
pub mod output;
pub mod provision_status;
pub mod workflow;

use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand};

/// Exit code: everything succeeded.
pub const EXIT_OK: i32 = 0;
/// Exit code: a batch finished but some items failed (see the report).
pub const EXIT_PARTIAL: i32 = 1;
/// Exit code: the command failed (bad input, service error, I/O error).
pub const EXIT_ERROR: i32 = 2;

/// The error type of a command: any error, printed with its cause chain.
pub type CliError = Box<dyn std::error::Error + Send + Sync + 'static>;
/// What a command returns: its exit code, or an error (exit 2).
pub type CliResult = Result<i32, CliError>;

/// iotc: X.509 enrollment and device provisioning for Azure IoT Central and DPS.
#[derive(Debug, Parser)]
#[command(
    name = "iotc",
    version,
    about,
    long_about = "iotc makes certificates, drives the IoT Central REST API, registers devices \
with DPS, and runs a local emulator of IoT Central + DPS.\n\n\
Exit codes: 0 success, 1 a batch finished with failed devices, 2 error.",
    after_help = "Examples:\n  iotc demo\n  iotc cert root --name root --out certs --no-password\n  iotc emulator --data-dir /tmp/emu"
)]
pub struct Cli {
    /// Options shared by the commands that talk to IoT Central.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Options of the commands that talk to an IoT Central application.
///
/// Each value comes from its flag, else its environment variable, else the selected profile
/// (see [`config`]); clap is not told about the environment variables, so these fields hold
/// only what was typed. A secret is never a flag's value: the token comes from a file.
// The field docs are `--help` text, where a bare URL reads best.
#[allow(rustdoc::bare_urls)]
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Application URL (https://myapp.azureiotcentral.com) or just its subdomain [else
    /// IOTC_APP_URL, else the profile's].
    #[arg(long, value_name = "URL", global = true)]
    pub app: Option<String>,
    /// File whose first line is the API token (`SharedAccessSignature sr=...`) [else
    /// IOTC_API_TOKEN, else IOTC_BEARER_TOKEN (an Azure AD token), else the profile's].
    #[arg(long, value_name = "FILE", global = true)]
    pub token_file: Option<std::path::PathBuf>,
    /// Extra CA certificate (PEM) to trust, for example the emulator's [else IOTC_CA_FILE, else
    /// the profile's].
    #[arg(long, value_name = "PEM", global = true)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = output::OutputFormat::Table, global = true)]
    pub output: output::OutputFormat,
    /// Named profile from the config file (see `iotc config`); or set IOTC_PROFILE.
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// How to sign in to IoT Central: api-token (--token-file, the default), azure-cli (`az
    /// login`), service-principal (AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET or
    /// AZURE_CLIENT_CERTIFICATE_PATH), managed-identity, workload-identity; AZURE_AUTHORITY_HOST
    /// names another authority [else IOTC_AUTH, else the profile's]. See docs/cli.md.
    #[arg(
        long,
        value_name = "METHOD",
        global = true,
        value_parser = clap::builder::PossibleValuesParser::new(
            crate::central::AuthMethod::ALL.map(|m| m.as_str())
        ).try_map(|s| s.parse::<crate::central::AuthMethod>())
    )]
    pub auth: Option<crate::central::AuthMethod>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make, inspect and verify certificates (root, intermediate, device, verification, CSR).
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// Organizations of an IoT Central application.
    #[command(subcommand)]
    Org(central::OrgCommand),
    /// Roles of an IoT Central application.
    #[command(subcommand)]
    Role(central::RoleCommand),
    /// Users of an IoT Central application.
    #[command(subcommand)]
    User(central::UserCommand),
    /// API tokens of an IoT Central application.
    #[command(subcommand, name = "api-token")]
    ApiToken(central::ApiTokenCommand),
    /// Devices of an IoT Central application.
    #[command(subcommand)]
    Device(central::DeviceCommand),
    /// Device groups of an IoT Central application.
    #[command(subcommand, name = "device-group")]
    DeviceGroup(central::DeviceGroupCommand),
    /// Enrollment groups and their X.509 certificates.
    #[command(subcommand, name = "enrollment-group")]
    EnrollmentGroup(central::EnrollmentGroupCommand),
    /// Device templates (list, get).
    #[command(subcommand, name = "device-template")]
    DeviceTemplate(central::DeviceTemplateCommand),
    /// Named profiles (application URL, token, CA file, DPS endpoint, ID scope) in the config file.
    #[command(subcommand)]
    Config(central::ConfigCommand),
    /// Register a device with DPS, derive device keys.
    #[command(subcommand)]
    Dps(dps::DpsCommand),
    /// One-command onboarding of an enrollment group and its devices.
    #[command(subcommand)]
    Onboard(workflow::OnboardCommand),
    /// Factory batch provisioning from a manifest, with a crash-safe journal.
    Provision(workflow::ProvisionArgs),
    /// Run the whole flow on an embedded emulator and show what happened.
    Demo(workflow::DemoArgs),
    /// Roll an enrollment group over to a new CA: stage, promote, retire.
    #[command(subcommand)]
    Rollover(lifecycle::RolloverCommand),
    /// Re-issue the certificates of a batch's devices and re-register them (same devices).
    Renew(lifecycle::RenewArgs),
    /// A lost station: block its devices, write CRLs, say what the group still trusts.
    Revoke(lifecycle::RevokeArgs),
    /// Run the local IoT Central + DPS emulator.
    Emulator(emulator::EmulatorArgs),
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    exit_quietly_on_broken_pipe();
    init_logging();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_ERROR } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            print_error(e.as_ref());
            EXIT_ERROR
        }
    }
}

fn run(cli: Cli) -> CliResult {
    let global = cli.global;
    match cli.command {
        Command::Cert(cmd) => cert::run(cmd, global.output),
        Command::Org(cmd) => central::run_org(cmd, &global),
        Command::Role(cmd) => central::run_role(cmd, &global),
        Command::User(cmd) => central::run_user(cmd, &global),
        Command::ApiToken(cmd) => central::run_api_token(cmd, &global),
        Command::Device(cmd) => central::run_device(cmd, &global),
        Command::DeviceGroup(cmd) => central::run_device_group(cmd, &global),
        Command::EnrollmentGroup(cmd) => central::run_enrollment_group(cmd, &global),
        Command::DeviceTemplate(cmd) => central::run_device_template(cmd, &global),
        Command::Config(cmd) => central::run_config(cmd, &global),
        Command::Dps(cmd) => dps::run(cmd, &global),
        Command::Onboard(cmd) => workflow::run_onboard(cmd, &global),
        Command::Provision(args) => workflow::run_provision(args, &global),
        Command::Demo(args) => workflow::run_demo(args, &global),
        Command::Rollover(cmd) => lifecycle::run_rollover(cmd, &global),
        Command::Renew(args) => lifecycle::run_renew(args, &global),
        Command::Revoke(args) => lifecycle::run_revoke(args, &global),
        Command::Emulator(args) => emulator::run(args),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "iotc", &mut std::io::stdout());
            Ok(EXIT_OK)
        }
    }
}

/// A reader that stops early (`iotc ... | head`) closes the pipe; `println!` then panics with
/// "Broken pipe". That is not an error of ours: end quietly with success, as other Unix tools
/// do, instead of printing a panic.
fn exit_quietly_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("Broken pipe") {
            std::process::exit(EXIT_OK);
        }
        default(info);
    }));
}

/// Prints `error: <message>` and then each cause on its own `  caused by:` line.
pub fn print_error(e: &(dyn std::error::Error + 'static)) {
    eprintln!("error: {e}");
    let mut source = e.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
}

/// A multi-threaded tokio runtime for the async commands.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every option of every command whose name says it holds a secret takes a file, never
    /// the secret itself (a flag's value shows in the process list and the shell history).
    #[test]
    fn no_password_or_token_is_the_value_of_a_flag() {
        fn walk(cmd: &clap::Command, path: &str, bad: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let Some(long) = a.get_long() else { continue };
                // Passwords, tokens, PINs, client secrets and symmetric keys; `--key` and
                // `--ca-key` name a file or a token object, not a secret.
                let secret_name = ["password", "token", "pin", "secret"]
                    .iter()
                    .any(|w| long.contains(w))
                    || ["symmetric-key", "group-key", "primary-key", "secondary-key"]
                        .iter()
                        .any(|k| long.starts_with(k));
                let takes_value = a.get_action().takes_values();
                if secret_name && takes_value && !long.ends_with("-file") {
                    bad.push(format!("{path} --{long}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), bad);
            }
        }
        let mut bad = Vec::new();
        walk(&Cli::command(), "iotc", &mut bad);
        assert!(bad.is_empty(), "secrets on plain flags: {bad:?}");
        // The flags that took secrets before are gone.
        for (command, gone) in [
            ("role list", "--token"),
            ("onboard x509 --group g --ca r", "--ca-password"),
            ("onboard x509 --group g --ca r", "--pfx-password"),
            (
                "provision --journal j --out o --group g --resume",
                "--ca-password",
            ),
            ("dps register --registration-id d", "--symmetric-key"),
            ("dps register --registration-id d", "--group-key"),
            ("dps derive-key --registration-id d", "--group-key"),
            ("device attestation set d --symmetric-key", "--primary-key"),
            ("device attestation update d", "--secondary-key"),
        ] {
            let mut argv = vec!["iotc"];
            argv.extend(command.split(' '));
            argv.extend([gone, "secret"]);
            let e = Cli::try_parse_from(&argv).unwrap_err();
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::UnknownArgument,
                "{argv:?}"
            );
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
