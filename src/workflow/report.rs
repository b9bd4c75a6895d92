//! The end-of-batch report: a JSON file for machines and a short summary for people.
//!
//! Per-device failures are data, not a reason to stop the line: they are recorded in the
//! journal as they happen, listed here with their reason and number of attempts, and decide
//! the exit code at the end (0 when every device is done, 1 otherwise).

use super::journal::{Attestation, Counts, State};
use serde::Serialize;
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
    /// Whether this was a dry run (nothing sent, nothing written).
    pub dry_run: bool,
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
    /// Builds a report from the journal's counts and failures.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        meta: &super::journal::BatchMeta,
        journal: &Path,
        out_dir: &Path,
        dry_run: bool,
        started_at: String,
        elapsed: std::time::Duration,
        counts: Counts,
        completed_this_run: u64,
        failures: Vec<(String, State, String, u32)>,
    ) -> Report {
        let secs = elapsed.as_secs_f64();
        Report {
            group_id: meta.group_id.clone(),
            attestation: meta.attestation,
            journal: journal.to_owned(),
            out_dir: out_dir.to_owned(),
            dry_run,
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
            failures: failures
                .into_iter()
                .map(|(device_id, state, reason, attempts)| FailedDevice {
                    device_id,
                    state,
                    reason,
                    attempts,
                })
                .collect(),
        }
    }

    /// 0 when every device is done, 1 otherwise.
    #[cfg(feature = "cli")]
    pub fn exit_code(&self) -> i32 {
        let all_done = self.succeeded == self.total && !self.dry_run;
        if all_done || (self.dry_run && self.failed == 0) {
            crate::cli::EXIT_OK
        } else {
            crate::cli::EXIT_PARTIAL
        }
    }

    /// Writes the report as pretty JSON, atomically (temporary file + rename).
    pub fn write_json(&self, path: &Path) -> Result<(), ReportError> {
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
                "  ... and {} more (see the report file)",
                self.failures.len() - max_listed
            );
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

    fn report(done: u64, failed: u64, failures: Vec<(String, State, String, u32)>) -> Report {
        let meta = BatchMeta {
            group_id: "g".into(),
            attestation: Attestation::X509,
            source: "s".into(),
            devices: 3,
            created_at: now_rfc3339(),
            issuer: None,
        };
        Report::new(
            &meta,
            Path::new("j.sqlite"),
            Path::new("out"),
            false,
            now_rfc3339(),
            std::time::Duration::from_millis(1500),
            Counts {
                total: 3,
                done,
                failed,
                pending: 3 - done - failed,
            },
            done,
            failures,
        )
    }

    #[test]
    #[cfg(feature = "cli")]
    fn exit_code_follows_the_outcome() {
        assert_eq!(report(3, 0, vec![]).exit_code(), 0);
        let r = report(
            2,
            1,
            vec![("d3".into(), State::Registering, "503".into(), 4)],
        );
        assert_eq!(r.exit_code(), 1);
        assert_eq!(
            report(2, 0, vec![]).exit_code(),
            1,
            "an interrupted batch is not a success"
        );
        let s = r.summary(10);
        assert!(s.contains("2 of 3") && s.contains("1 failed"), "{s}");
        assert!(
            s.contains("failed d3 at registering after 4 attempt(s): 503"),
            "{s}"
        );
        assert!(s.contains("--resume"), "{s}");
        assert!((r.devices_per_second - 1.3).abs() < 1e-9);
    }

    #[test]
    fn json_report_round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        let r = report(2, 1, vec![("d3".into(), State::Planned, "boom".into(), 1)]);
        r.write_json(&path).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["failed"], 1);
        assert_eq!(v["failures"][0]["deviceId"], "d3");
        assert_eq!(v["failures"][0]["state"], "planned");
        assert_eq!(v["attestation"], "x509");
        assert!(!dir.path().join("report.json.tmp").exists());
    }
}
