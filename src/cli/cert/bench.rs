//! `iotc cert bench` (being written).

use super::BenchArgs;
use crate::cli::CliResult;

/// Runs the benchmark.
pub fn run(_a: BenchArgs) -> CliResult {
    Err("not implemented yet".into())
}
