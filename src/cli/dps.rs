//! `iotc dps ...` (filled in by the DPS client work).

use super::{CliResult, GlobalArgs};

/// DPS commands.
#[derive(Debug, clap::Subcommand)]
pub enum DpsCommand {
    /// Register a device.
    Register,
}

/// Runs a dps command.
pub fn run(_cmd: DpsCommand, _global: &GlobalArgs) -> CliResult {
    Err("not implemented yet".into())
}
