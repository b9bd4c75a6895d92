//! The end-of-batch report: a JSON file for machines and a short summary for people.
//!
//! Per-device failures are data, not a reason to stop the line: they are recorded in the
//! journal as they happen, and the report lists every device of the batch with what became
//! of it in this run (done now, skipped as done before, failed with its reason and attempts,
//! pending when the run was interrupted). How the batch as a whole ended is an [`Outcome`];
//! what that means for a process exit code is the caller's business (the CLI's).

use super::journal::{Attestation, Counts, DeviceStatus, State};
use serde::Serialize;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A device that did not finish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedDevice {
    /// The device.
    pub device_id: String,
    /// The last step it completed.
    pub state: State,
    /// Why its last attempt failed.
    pub reason: String,
    /// Failed attempts so far (over every run of the batch).
    pub attempts: u32,
}

/// What became of one device in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DeviceOutcome {
    /// This run finished it (its bundle is written).
    Done,
    /// An earlier run had finished it; this one left it alone.
    Skipped,
    /// Its last attempt failed (in this run or, when the run stopped before retrying it, an
    /// earlier one); `--resume` tries it again.
    Failed,
    /// Not finished and not failed: the run was interrupted before it got there.
    Pending,
}

/// One device of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceReport {
    /// The device.
    pub device_id: String,
    /// What became of it.
    pub outcome: DeviceOutcome,
    /// The last step it completed.
    pub state: State,
    /// Why its last attempt failed (failed devices only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Failed attempts so far, over every run of the batch.
    pub attempts: u32,
}

impl DeviceReport {
    /// The device's line in the report, from its journal status and whether this run
    /// finished it.
    pub fn new(status: DeviceStatus, done_this_run: bool) -> DeviceReport {
        let outcome = match (status.state, &status.error) {
            (State::BundleWritten, _) if done_this_run => DeviceOutcome::Done,
            (State::BundleWritten, _) => DeviceOutcome::Skipped,
            (_, Some(_)) => DeviceOutcome::Failed,
            (_, None) => DeviceOutcome::Pending,
        };
        DeviceReport {
            device_id: status.device_id,
            outcome,
            state: status.state,
            reason: status.error.filter(|_| outcome == DeviceOutcome::Failed),
            attempts: status.attempts,
        }
    }
}

/// What a run asked of IoT Central, from its client's counters: how much of the
/// application's shared limit it used and how often the service pushed back.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CentralUse {
    /// Requests sent (every attempt).
    pub requests: u64,
    /// Of them, retries.
    pub retries: u64,
    /// 429 answers.
    pub throttled: u64,
    /// The client's pacing rate at the end (requests/s; below the configured rate while the
    /// application's limit was shared with other callers). Absent when pacing is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pacing_rate: Option<f64>,
}

impl CentralUse {
    /// The counters of `client` (and its clones).
    pub fn of(client: &crate::central::Client) -> CentralUse {
        let stats = client.stats();
        CentralUse {
            requests: stats.attempts,
            retries: stats.retries,
            throttled: stats.throttled,
            pacing_rate: client.pacing_rate().map(|r| (r * 10.0).round() / 10.0),
        }
    }
}

/// How a batch run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// Every device of the batch is done (a dry run: nothing stands in the way).
    Complete,
    /// Some device is not done: it failed, or the run stopped before it. A rerun with the
    /// same journal goes on with those devices.
    Partial,
}

/// The outcome of a batch run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The enrollment group.
    pub group_id: String,
    /// How devices attest.
    pub attestation: Attestation,
    /// The journal file.
    pub journal: PathBuf,
    /// Where bundles are.
    pub out_dir: PathBuf,
    /// The JSON report file, when one is written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_file: Option<PathBuf>,
    /// Whether this was a dry run (nothing sent, nothing written).
    pub dry_run: bool,
    /// How the batch stands after this run.
    pub outcome: Outcome,
    /// When this run started (RFC 3339).
    pub started_at: String,
    /// When it ended (RFC 3339).
    pub finished_at: String,
    /// Seconds this run took.
    pub elapsed_seconds: f64,
    /// Devices in the batch.
    pub total: u64,
    /// Devices done (bundle written), including those done by earlier runs.
    pub succeeded: u64,
    /// Devices whose last attempt failed.
    pub failed: u64,
    /// Devices not attempted (the run was interrupted).
    pub pending: u64,
    /// Devices this run finished.
    pub completed_this_run: u64,
    /// Devices finished per second in this run.
    pub devices_per_second: f64,
    /// Every failed device.
    pub failures: Vec<FailedDevice>,
    /// What this run asked of IoT Central (absent when the services have no IoT Central
    /// client, as in tests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iot_central: Option<CentralUse>,
    /// Every device of the batch, in batch order, with what became of it in this run.
    pub devices: Vec<DeviceReport>,
}

/// What a run left in the journal, for [`Report::new`].
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    /// Devices per outcome, over the whole batch.
    pub counts: Counts,
    /// Every device's status, in batch order.
    pub statuses: Vec<DeviceStatus>,
    /// The devices this run finished.
    pub done_this_run: HashSet<String>,
}

/// Writing the report failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The file could not be written.
    #[error("cannot write report {path}")]
    Write {
        /// The report file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// RFC 3339 timestamp of now.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Report {
    /// Builds a report from what the run left in the journal. Linear in the batch: one pass
    /// over the statuses, one set lookup per device.
    pub fn new(
        meta: &super::journal::BatchMeta,
        journal: &Path,
        out_dir: &Path,
        started_at: String,
        elapsed: std::time::Duration,
        run: RunResult,
    ) -> Report {
        let secs = elapsed.as_secs_f64();
        let RunResult {
            counts,
            statuses,
            done_this_run,
        } = run;
        let devices: Vec<DeviceReport> = statuses
            .into_iter()
            .map(|s| {
                let now = done_this_run.contains(&s.device_id);
                DeviceReport::new(s, now)
            })
            .collect();
        let failures = devices
            .iter()
            .filter(|d| d.outcome == DeviceOutcome::Failed)
            .map(|d| FailedDevice {
                device_id: d.device_id.clone(),
                state: d.state,
                reason: d.reason.clone().unwrap_or_default(),
                attempts: d.attempts,
            })
            .collect();
        let completed_this_run = done_this_run.len() as u64;
        Report {
            group_id: meta.group_id.clone(),
            attestation: meta.attestation,
            journal: journal.to_owned(),
            out_dir: out_dir.to_owned(),
            report_file: None,
            dry_run: false,
            outcome: if counts.done == counts.total {
                Outcome::Complete
            } else {
                Outcome::Partial
            },
            started_at,
            finished_at: now_rfc3339(),
            elapsed_seconds: (secs * 1000.0).round() / 1000.0,
            total: counts.total,
            succeeded: counts.done,
            failed: counts.failed,
            pending: counts.pending,
            completed_this_run,
            devices_per_second: if secs > 0.0 {
                ((completed_this_run as f64 / secs) * 10.0).round() / 10.0
            } else {
                0.0
            },
            failures,
            iot_central: None,
            devices,
        }
    }

    /// How the batch stands: complete when every device is done.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// Writes the report as pretty JSON, atomically (temporary file + rename), and remembers
    /// the file so the summary can point at it.
    pub fn write_json(&mut self, path: &Path) -> Result<(), ReportError> {
        self.report_file = Some(path.to_owned());
        let err = |source| ReportError::Write {
            path: path.to_owned(),
            source,
        };
        let text = serde_json::to_vec_pretty(self).map_err(|e| err(std::io::Error::other(e)))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }

    /// A few lines for people; failures are listed up to `max_listed`.
    pub fn summary(&self, max_listed: usize) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{}: {} of {} device(s) done, {} failed, {} pending ({} this run in {:.1}s, {:.1} devices/s)",
            if self.dry_run { "dry run" } else { "batch" },
            self.succeeded,
            self.total,
            self.failed,
            self.pending,
            self.completed_this_run,
            self.elapsed_seconds,
            self.devices_per_second
        );
        if let Some(c) = &self.iot_central {
            let _ = writeln!(
                s,
                "IoT Central: {} request(s), {} retried, {} throttled (429){}",
                c.requests,
                c.retries,
                c.throttled,
                c.pacing_rate
                    .map(|r| format!(", pacing at {r} requests/s at the end"))
                    .unwrap_or_default()
            );
        }
        for f in self.failures.iter().take(max_listed) {
            let _ = writeln!(
                s,
                "  failed {} at {} after {} attempt(s): {}",
                f.device_id, f.state, f.attempts, f.reason
            );
        }
        if self.failures.len() > max_listed {
            let _ = writeln!(
                s,
                "  ... and {} more failed",
                self.failures.len() - max_listed
            );
        }
        match &self.report_file {
            Some(path) => {
                let _ = writeln!(s, "every device and its outcome: {}", path.display());
            }
            None => {
                let _ = writeln!(s, "every device and its outcome: --output json");
            }
        }
        if self.failed > 0 || self.pending > 0 {
            let _ = writeln!(
                s,
                "rerun with --resume to retry the devices that are not done (journal {})",
                self.journal.display()
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::journal::BatchMeta;

    fn status(id: &str, state: State, error: Option<&str>, attempts: u32) -> DeviceStatus {
        DeviceStatus {
            device_id: id.into(),
            state,
            error: error.map(str::to_owned),
            attempts,
            central_fields: false,
        }
    }

    /// A batch of `d1` (done before), `d2` (done now) and `d3` in `last`.
    fn report(last: DeviceStatus) -> Report {
        let meta = BatchMeta {
            group_id: "g".into(),
            attestation: Attestation::X509,
            source: "s".into(),
            devices: 3,
            created_at: now_rfc3339(),
            issuer: None,
            csr: false,
        };
        let statuses = vec![
            status("d1", State::BundleWritten, None, 0),
            status("d2", State::BundleWritten, None, 1),
            last,
        ];
        let done = statuses
            .iter()
            .filter(|s| s.state == State::BundleWritten)
            .count() as u64;
        let failed = statuses
            .iter()
            .filter(|s| s.state != State::BundleWritten && s.error.is_some())
            .count() as u64;
        let mut done_this_run: HashSet<String> = ["d2".to_string()].into();
        if statuses[2].state == State::BundleWritten {
            done_this_run.insert("d3".into());
        }
        Report::new(
            &meta,
            Path::new("j.sqlite"),
            Path::new("out"),
            now_rfc3339(),
            std::time::Duration::from_millis(1500),
            RunResult {
                counts: Counts {
                    total: 3,
                    done,
                    failed,
                    pending: 3 - done - failed,
                },
                statuses,
                done_this_run,
            },
        )
    }

    #[test]
    fn the_outcome_follows_the_devices() {
        let done = report(status("d3", State::BundleWritten, None, 0));
        assert_eq!(done.outcome(), Outcome::Complete);
        let r = report(status("d3", State::Registering, Some("503"), 4));
        assert_eq!(r.outcome(), Outcome::Partial);
        assert_eq!(
            report(status("d3", State::Planned, None, 0)).outcome(),
            Outcome::Partial,
            "an interrupted batch is not a success"
        );
        let s = r.summary(10);
        assert!(s.contains("2 of 3") && s.contains("1 failed"), "{s}");
        assert!(
            s.contains("failed d3 at registering after 4 attempt(s): 503"),
            "{s}"
        );
        assert!(s.contains("--resume"), "{s}");
        assert!(
            s.contains("every device and its outcome: --output json"),
            "{s}"
        );
        assert!((r.devices_per_second - 0.7).abs() < 1e-9);
    }

    #[test]
    fn every_device_is_listed_with_its_outcome() {
        let outcomes = |r: &Report| -> Vec<(String, DeviceOutcome)> {
            r.devices
                .iter()
                .map(|d| (d.device_id.clone(), d.outcome))
                .collect()
        };
        use DeviceOutcome::*;
        let r = report(status("d3", State::Registering, Some("HTTP 503"), 4));
        assert_eq!(
            outcomes(&r),
            [
                ("d1".into(), Skipped),
                ("d2".into(), Done),
                ("d3".into(), Failed)
            ]
        );
        assert_eq!(r.devices[2].reason.as_deref(), Some("HTTP 503"));
        assert_eq!(r.devices[2].attempts, 4);
        assert_eq!(r.devices[0].reason, None);
        assert_eq!(r.failures.len(), 1);
        let r = report(status("d3", State::DeviceCreated, None, 0));
        assert_eq!(outcomes(&r)[2], ("d3".into(), Pending));
        assert_eq!(r.completed_this_run, 1);
    }

    #[test]
    fn json_report_round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        let mut r = report(status("d3", State::Planned, Some("boom"), 1));
        r.write_json(&path).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["failed"], 1);
        assert_eq!(v["failures"][0]["deviceId"], "d3");
        assert_eq!(v["failures"][0]["state"], "planned");
        assert_eq!(v["attestation"], "x509");
        assert_eq!(v["outcome"], "partial");
        assert_eq!(v["devices"][0]["outcome"], "skipped");
        assert_eq!(v["devices"][1]["outcome"], "done");
        assert_eq!(v["devices"][2]["outcome"], "failed");
        assert_eq!(v["devices"][2]["reason"], "boom");
        assert!(v["devices"][1].get("reason").is_none());
        assert!(!dir.path().join("report.json.tmp").exists());
        assert!(
            r.summary(5)
                .contains(&format!("every device and its outcome: {}", path.display())),
            "the summary points at the full list"
        );
    }
}
