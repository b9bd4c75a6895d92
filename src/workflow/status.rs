//! `provision status`: which devices of a batch have registered since it ran.
//!
//! In a CSR batch the station signs and creates, and each device registers itself with DPS
//! later, out of the station's sight: only IoT Central knows which ones did (a device's
//! `provisioned` flag). This reads the journal's devices and asks IoT Central for them in
//! pages, not one request per device: a list filtered on the ids of [`IDS_PER_REQUEST`]
//! devices at a time (`id eq '…' or …`, preview api-version, one page each), a few requests in
//! flight, all through the client's pacing, so 10,000 devices cost 200 requests.

use super::journal::{Journal, JournalError, State};
use crate::central::{Client, ListOptions};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;

/// Devices asked about in one list request. The filter of 50 ids stays near 1 KB of URL for
/// ids of about 20 characters (4 KB at the 64-character maximum).
pub const IDS_PER_REQUEST: usize = 50;
/// List requests in flight at once (the client's pacing still spaces them).
const REQUESTS_IN_FLIGHT: usize = 4;

/// Where a device stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DeviceState {
    /// The batch has not finished the device (its journal state is before `bundle_written`):
    /// `iotc provision --resume` goes on with it.
    Pending,
    /// Its bundle is written and IoT Central has the device, `provisioned: false`: it has not
    /// registered with DPS yet.
    Issued,
    /// IoT Central has the device with `provisioned: true`: it registered.
    Registered,
    /// Its bundle is written but IoT Central has no device with its id (deleted since, or
    /// the journal belongs to another application).
    NeverSeen,
}

impl DeviceState {
    /// The name a table shows.
    pub fn label(self) -> &'static str {
        match self {
            DeviceState::Pending => "pending",
            DeviceState::Issued => "issued",
            DeviceState::Registered => "registered",
            DeviceState::NeverSeen => "never seen",
        }
    }
}

/// One device of the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceLine {
    /// The device.
    pub device_id: String,
    /// Where it stands.
    pub status: DeviceState,
    /// Its state in the journal.
    pub journal_state: State,
    /// Why the batch's last attempt at it failed (pending devices only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Devices per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusCounts {
    /// Devices in the batch.
    pub total: u64,
    /// Not finished by the batch.
    pub pending: u64,
    /// Issued, not registered yet.
    pub issued: u64,
    /// Registered.
    pub registered: u64,
    /// Unknown to IoT Central.
    pub never_seen: u64,
}

/// The status of a batch.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// The journal.
    pub journal: PathBuf,
    /// The batch's enrollment group.
    pub group_id: String,
    /// Whether it is a CSR batch (the devices register themselves).
    pub csr: bool,
    /// Devices per state.
    pub counts: StatusCounts,
    /// Every device, in batch order.
    pub devices: Vec<DeviceLine>,
}

/// The status could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// The journal failed.
    #[error("journal failed")]
    Journal(#[from] JournalError),
    /// Listing the devices failed.
    #[error("cannot list the batch's devices in IoT Central")]
    Central(#[from] crate::central::Error),
}

/// The list filter that selects these devices.
fn filter_of(ids: &[&str]) -> String {
    ids.iter()
        .map(|id| format!("id eq '{}'", id.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Reads the journal's devices and IoT Central's `provisioned` flag of each finished one.
/// The journal is only read (and closed before the first request).
pub async fn status(journal: Journal, client: &Client) -> Result<StatusReport, StatusError> {
    let statuses = journal.statuses()?;
    let (path, meta) = (journal.path().to_owned(), journal.meta().clone());
    drop(journal);
    let finished: Vec<&str> = statuses
        .iter()
        .filter(|s| s.state == State::BundleWritten)
        .map(|s| s.device_id.as_str())
        .collect();
    let pages: Vec<Vec<(String, bool)>> = futures::stream::iter(finished.chunks(IDS_PER_REQUEST))
        .map(|ids| async move {
            let options = ListOptions::default()
                .filter(filter_of(ids))
                .max_page_size(IDS_PER_REQUEST as u32);
            let devices = client.list_devices(&options).collect_all().await?;
            Ok::<_, crate::central::Error>(
                devices
                    .into_iter()
                    .filter_map(|d| Some((d.id?, d.provisioned.unwrap_or(false))))
                    .collect(),
            )
        })
        .buffered(REQUESTS_IN_FLIGHT)
        .try_collect()
        .await?;
    let provisioned: HashMap<String, bool> = pages.into_iter().flatten().collect();
    let mut counts = StatusCounts::default();
    let devices = statuses
        .into_iter()
        .map(|s| {
            let status = if s.state != State::BundleWritten {
                DeviceState::Pending
            } else {
                match provisioned.get(&s.device_id) {
                    Some(true) => DeviceState::Registered,
                    Some(false) => DeviceState::Issued,
                    None => DeviceState::NeverSeen,
                }
            };
            counts.total += 1;
            *match status {
                DeviceState::Pending => &mut counts.pending,
                DeviceState::Issued => &mut counts.issued,
                DeviceState::Registered => &mut counts.registered,
                DeviceState::NeverSeen => &mut counts.never_seen,
            } += 1;
            DeviceLine {
                device_id: s.device_id,
                status,
                journal_state: s.state,
                last_error: s.error.filter(|_| status == DeviceState::Pending),
            }
        })
        .collect();
    Ok(StatusReport {
        journal: path,
        group_id: meta.group_id,
        csr: meta.csr,
        counts,
        devices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_names_each_id() {
        assert_eq!(filter_of(&["a", "b-2"]), "id eq 'a' or id eq 'b-2'");
        assert_eq!(filter_of(&["o'k"]), "id eq 'o''k'");
    }
}
