//! `iotc cert ...` (filled in by the cert module work).

use super::CliResult;

/// Certificate commands.
#[derive(Debug, clap::Subcommand)]
pub enum CertCommand {
    /// Make a self-signed root CA.
    Root,
}

/// Runs a cert command.
pub fn run(_cmd: CertCommand) -> CliResult {
    Err("not implemented yet".into())
}
