//! `iotc provision status`: the command-line face of [`crate::workflow::status`], for the
//! devices of a batch that register themselves after it ran (CSR batches), or any batch.

use super::{config, CliResult, GlobalArgs, EXIT_OK};
use crate::workflow::journal::Journal;
use crate::workflow::status::{status, DeviceState};
use std::path::PathBuf;

/// The states, defined for `--help`.
pub const AFTER_HELP: &str = "Each device of the journal is, now:\n  \
pending     the batch has not finished it (its journal state is before bundle_written; \
`iotc provision --resume` goes on with it)\n  \
issued      its certificate is issued and its bundle written, and IoT Central has the device \
with provisioned = false: it has not registered with DPS yet\n  \
registered  IoT Central has the device with provisioned = true: it registered\n  \
never seen  its bundle is written but IoT Central has no device with its id (deleted since, \
or the journal belongs to another application)\n\n\
IoT Central is asked in pages (a list filtered on 50 ids per request, paced like every other \
call), not once per device. Exit code 0 whatever the states; --output json gives the counts \
and every device.\n\nExamples:\n  \
iotc provision status --journal csr1.journal\n  \
iotc provision status --journal csr1.journal --output json";

/// Arguments of `iotc provision status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The batch's journal.
    #[arg(long)]
    pub journal: PathBuf,
}

/// Runs `iotc provision status`.
pub async fn run(args: StatusArgs, global: &GlobalArgs) -> CliResult {
    let journal = Journal::open(&args.journal)?;
    let client = config::client(global)?;
    let report = status(journal, &client).await?;
    if global.output == super::output::OutputFormat::Json {
        super::output::print_json(&report)?;
        return Ok(EXIT_OK);
    }
    let rows: Vec<Vec<String>> = report
        .devices
        .iter()
        .map(|d| {
            vec![
                d.device_id.clone(),
                d.status.label().to_owned(),
                d.journal_state.to_string(),
                d.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    super::output::print_table(&["DEVICE", "STATUS", "JOURNAL", "LAST ERROR"], &rows);
    let c = report.counts;
    println!(
        "{} device(s): {} {}, {} {}, {} {}, {} {}",
        c.total,
        c.registered,
        DeviceState::Registered.label(),
        c.issued,
        DeviceState::Issued.label(),
        c.never_seen,
        DeviceState::NeverSeen.label(),
        c.pending,
        DeviceState::Pending.label(),
    );
    Ok(EXIT_OK)
}
