//! `iotc emulator` (filled in by the emulator work).

use super::CliResult;

/// Arguments of `iotc emulator`.
#[derive(Debug, clap::Args)]
pub struct EmulatorArgs {}

/// Runs the emulator until SIGINT/SIGTERM.
pub fn run(_args: EmulatorArgs) -> CliResult {
    Err("not implemented yet".into())
}
