//! `iotc onboard|provision|demo` (filled in by the workflow work).

use super::{CliResult, GlobalArgs};

/// Onboarding commands.
#[derive(Debug, clap::Subcommand)]
pub enum OnboardCommand {
    /// X.509 enrollment group onboarding.
    X509,
}

/// Arguments of `iotc provision`.
#[derive(Debug, clap::Args)]
pub struct ProvisionArgs {}

/// Arguments of `iotc demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {}

/// Runs an onboard command.
pub fn run_onboard(_cmd: OnboardCommand, _global: &GlobalArgs) -> CliResult {
    Err("not implemented yet".into())
}

/// Runs `iotc provision`.
pub fn run_provision(_args: ProvisionArgs, _global: &GlobalArgs) -> CliResult {
    Err("not implemented yet".into())
}

/// Runs `iotc demo`.
pub fn run_demo(_args: DemoArgs, _global: &GlobalArgs) -> CliResult {
    Err("not implemented yet".into())
}
