//! A lost station: block every device it issued in IoT Central, write CRLs for the relying
//! parties that read them, and tell the user what the enrollment group still trusts.
//!
//! Blocking is a batch on the engine, with the journal of the station's batch as its plan:
//! each device moves `planned` → `blocking` (committed before the PATCH is sent) →
//! `blocked`. A device found `blocking` after a crash may have been blocked already, so it is
//! read first and patched only when it is still enabled: every device gets exactly one
//! PATCH `enabled: false` however often the run is killed and resumed, and the client's
//! pacing keeps the run within the application's request rate.
//!
//! What blocking does not do is stop the stolen CA: a blocked device is refused by DPS, but a
//! thief holding the station's intermediate key can issue certificates for new ids, and DPS
//! accepts them as long as the group trusts that intermediate or the root above it.
//! [`trust`] says which of these the group holds and what ends it: a rollover of the group.

use super::engine::{
    chain, drive, AttemptError, BatchError, EngineOptions, Job, Run, RunStats, StepError,
};
use super::journal::{JournalError, JournalWriter};
use super::ledger::{self, BlockOutcome, Revocation, RevokeState};
use super::rollover::Slots;
use crate::cert::{Authority, Reason};
use serde::Serialize;
use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Blocks devices in IoT Central.
pub trait Blocker: Send + Sync + 'static {
    /// Sets `enabled: false` on the device; `Absent` when IoT Central has no such device.
    fn block(
        &self,
        device_id: &str,
    ) -> impl Future<Output = Result<BlockOutcome, StepError>> + Send;
    /// Whether the device is enabled now; `None` when IoT Central has no such device.
    fn enabled(
        &self,
        device_id: &str,
    ) -> impl Future<Output = Result<Option<bool>, StepError>> + Send;
}

struct Revoke<B> {
    blocker: B,
    journal: JournalWriter,
}

impl<B: Blocker> Revoke<B> {
    async fn advance(
        &self,
        run: &Run,
        rev: &mut Revocation,
        to: RevokeState,
        outcome: Option<BlockOutcome>,
    ) -> Result<(), AttemptError> {
        let write = ledger::revoke_advance(&rev.device_id, rev.state, to, outcome);
        run.commit(self.journal.exec(write)).await?;
        rev.state = to;
        rev.outcome = outcome.or(rev.outcome);
        Ok(())
    }
}

impl<B: Blocker> Job for Revoke<B> {
    type Item = Revocation;

    fn seq(rev: &Revocation) -> i64 {
        rev.seq
    }

    fn device_id(rev: &Revocation) -> &str {
        &rev.device_id
    }

    fn in_doubt(rev: &Revocation) -> bool {
        rev.state == RevokeState::Blocking
    }

    async fn pending(&self, after: i64, limit: usize) -> Result<Vec<Revocation>, JournalError> {
        self.journal
            .read(move |j| ledger::pending_revocations(j, after, limit))
            .await
    }

    async fn attempt(
        &self,
        run: &Run,
        t: &mut Revocation,
        maybe_sent: &mut bool,
    ) -> Result<(), AttemptError> {
        loop {
            match t.state {
                RevokeState::Planned => {
                    self.advance(run, t, RevokeState::Blocking, None).await?;
                }
                RevokeState::Blocking => {
                    let id = t.device_id.clone();
                    if *maybe_sent {
                        match self.blocker.enabled(&id).await? {
                            None => {
                                return self
                                    .advance(
                                        run,
                                        t,
                                        RevokeState::Blocked,
                                        Some(BlockOutcome::Absent),
                                    )
                                    .await
                            }
                            Some(false) => {
                                return self
                                    .advance(
                                        run,
                                        t,
                                        RevokeState::Blocked,
                                        Some(BlockOutcome::Blocked),
                                    )
                                    .await
                            }
                            Some(true) => {}
                        }
                    }
                    *maybe_sent = true;
                    let outcome = self.blocker.block(&id).await?;
                    self.advance(run, t, RevokeState::Blocked, Some(outcome))
                        .await?;
                }
                RevokeState::Blocked => return Ok(()),
            }
        }
    }

    async fn record_failure(
        &self,
        rev: &Revocation,
        reason: &str,
        attempts: u32,
    ) -> Result<(), JournalError> {
        self.journal
            .exec(ledger::revoke_fail(&rev.device_id, reason, attempts))
            .await
    }
}

/// Blocks every device of the journal's revocation that is not blocked yet.
pub async fn run_revocation<B: Blocker>(
    journal: JournalWriter,
    blocker: B,
    engine: &EngineOptions,
    stop: Arc<AtomicBool>,
) -> Result<RunStats, BatchError> {
    let left = journal
        .read(|j| {
            Ok(ledger::all_revocations(j)?
                .iter()
                .filter(|r| r.state != RevokeState::Blocked)
                .count() as u64)
        })
        .await?;
    let job = Arc::new(Revoke { blocker, journal });
    drive(job, left, engine, stop).await
}

/// What became of one device, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceLine {
    /// The device.
    pub device_id: String,
    /// `blocked`, `absent` (not in IoT Central), `failed` or `pending`.
    pub outcome: String,
    /// Whether this run did it (false: an earlier run).
    pub this_run: bool,
    /// Why the last attempt failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Serial numbers (hex) of the device's certificates the CRL lists.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub revoked_serials: Vec<String>,
}

/// One line per device of the revocation.
pub fn device_lines(
    revocations: &[Revocation],
    done_this_run: &std::collections::HashSet<String>,
    serials: &std::collections::HashMap<String, Vec<String>>,
) -> Vec<DeviceLine> {
    revocations
        .iter()
        .map(|r| DeviceLine {
            device_id: r.device_id.clone(),
            outcome: match (r.state, r.outcome, &r.error) {
                (RevokeState::Blocked, Some(BlockOutcome::Absent), _) => "absent",
                (RevokeState::Blocked, _, _) => "blocked",
                (_, _, Some(_)) => "failed",
                _ => "pending",
            }
            .into(),
            this_run: done_this_run.contains(&r.device_id),
            reason: r.error.clone().filter(|_| r.state != RevokeState::Blocked),
            revoked_serials: serials.get(&r.device_id).cloned().unwrap_or_default(),
        })
        .collect()
}

/// Hex of serial bytes, as `openssl` prints them.
pub fn hex(serial: &[u8]) -> String {
    serial.iter().map(|b| format!("{b:02X}")).collect()
}

/// The device certificates of the journal that `ca` signed, with their serial numbers:
/// (device id, serial bytes).
pub fn serials_signed_by(certs: &[ledger::IssuedCert], ca: &Authority) -> Vec<(String, Vec<u8>)> {
    certs
        .iter()
        .filter_map(|c| {
            let der = crate::cert::parse_pem_certs(c.cert_pem.as_bytes())
                .ok()?
                .into_iter()
                .next()?;
            crate::cert::verify_signed_by(&der, ca.cert_der()).ok()?;
            Some((c.device_id.clone(), crate::cert::serial_of(&der).ok()?))
        })
        .collect()
}

/// A CRL written for the relying parties.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CrlFile {
    /// What it revokes.
    pub revokes: String,
    /// The CA that signed it.
    pub signed_by: String,
    /// The file.
    pub path: std::path::PathBuf,
    /// How many serials it lists.
    pub entries: usize,
}

/// Signs a CRL of `serials` with `ca` and writes it (0644: a CRL is public).
pub fn write_crl(
    ca: &Authority,
    serials: &[Vec<u8>],
    reason: Reason,
    path: &std::path::Path,
    revokes: &str,
) -> Result<CrlFile, StepError> {
    // The CRL number must grow with each CRL of an issuer; seconds since the epoch do.
    let number = time::OffsetDateTime::now_utc().unix_timestamp().max(1) as u64;
    let pem = ca
        .issue_crl(serials, reason, number, 30)
        .map_err(|e| StepError::permanent(chain(&e)))?;
    std::fs::write(path, pem)
        .map_err(|e| StepError::permanent(format!("cannot write {}: {e}", path.display())))?;
    Ok(CrlFile {
        revokes: revokes.into(),
        signed_by: ca.subject().to_owned(),
        path: path.to_owned(),
        entries: serials.len(),
    })
}

/// What the group still trusts after the station is lost, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Trust {
    /// Whether the group still accepts certificates the stolen CA signs.
    pub still_accepts_stolen_ca: bool,
    /// The explanation, with the commands that end it.
    pub message: String,
}

/// Compares the group's slots with the station's CA (SHA-1 `station`) and the CAs above it
/// (`above`, SHA-1s of the certificates between it and the root, the root when known).
pub fn trust(slots: &Slots, station: Option<&str>, above: &[String]) -> Trust {
    let held: Vec<&str> = [&slots.primary, &slots.secondary]
        .into_iter()
        .flatten()
        .filter(|s| s.verified)
        .map(|s| s.sha1.as_str())
        .collect();
    let roll = format!(
        "roll the group over to a CA the thief does not hold: `iotc rollover stage --group {g} --ca NEW`, \
         `iotc rollover promote --group {g} --ca NEW --old-ca OLD`, `iotc rollover retire --group {g} --ca NEW --force`",
        g = slots.group
    );
    if let Some(s) = station.filter(|s| held.contains(s)) {
        return Trust {
            still_accepts_stolen_ca: true,
            message: format!(
                "group {} trusts the station's CA itself (SHA-1 {s}): DPS accepts every certificate \
                 it signs, including new ones the thief issues for new device ids (the blocked \
                 devices are refused). To end it, {roll}",
                slots.group
            ),
        };
    }
    if let Some(a) = above.iter().find(|a| held.contains(&a.as_str())) {
        return Trust {
            still_accepts_stolen_ca: true,
            message: format!(
                "group {} trusts SHA-1 {a}, a CA above the stolen one: DPS keeps accepting the \
                 stolen intermediate's devices (and any new ones the thief issues) until the \
                 group is rolled over. To end it, {roll}",
                slots.group
            ),
        };
    }
    if held.is_empty() {
        return Trust {
            still_accepts_stolen_ca: false,
            message: format!(
                "group {} holds no verified CA: DPS accepts none of its devices",
                slots.group
            ),
        };
    }
    Trust {
        still_accepts_stolen_ca: true,
        message: format!(
            "group {} trusts SHA-1 {}, which is not the station's CA; if it is the root above the \
             stolen intermediate (give --issuer-ca to know), DPS keeps accepting the \
             intermediate's devices until the group is rolled over: {roll}",
            slots.group,
            held.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::central::models::EnrollmentGroupType;
    use crate::ids::RegistrationId;
    use crate::workflow::journal::{Attestation, BatchMeta, Journal};
    use crate::workflow::manifest::DeviceSpec;
    use crate::workflow::rollover::Slot;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// IoT Central in memory: counts the PATCHes that reached it; can lose an answer (the
    /// device is blocked, the caller gets an error) and has no device `absent`.
    #[derive(Default)]
    struct Fake {
        patches: Mutex<HashMap<String, u32>>,
        lose: Mutex<HashMap<String, u32>>,
    }

    impl Blocker for Arc<Fake> {
        async fn block(&self, id: &str) -> Result<BlockOutcome, StepError> {
            if id == "absent" {
                return Ok(BlockOutcome::Absent);
            }
            *self.patches.lock().unwrap().entry(id.into()).or_default() += 1;
            if let Some(n) = self.lose.lock().unwrap().get_mut(id).filter(|n| **n > 0) {
                *n -= 1;
                return Err(StepError::transient("connection reset"));
            }
            Ok(BlockOutcome::Blocked)
        }

        async fn enabled(&self, id: &str) -> Result<Option<bool>, StepError> {
            Ok((id != "absent").then(|| !self.patches.lock().unwrap().contains_key(id)))
        }
    }

    fn revocation(dir: &std::path::Path, ids: &[&str]) -> std::path::PathBuf {
        let path = dir.join("j");
        let meta = BatchMeta {
            group_id: "g".into(),
            attestation: Attestation::X509,
            source: "t".into(),
            devices: ids.len() as u64,
            created_at: "now".into(),
            issuer: None,
            csr: false,
        };
        let mut j = Journal::create(&path, meta).unwrap();
        let specs: Vec<_> = ids
            .iter()
            .map(|i| DeviceSpec::bare(RegistrationId::new(*i).unwrap()))
            .collect();
        j.plan(&specs).unwrap();
        ledger::migrate(&mut j).unwrap();
        ledger::plan_revocation(&mut j, "keyCompromise").unwrap();
        path
    }

    fn run(path: &std::path::Path, fake: &Arc<Fake>, crash_after: Option<u64>) -> RunStats {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let writer = JournalWriter::spawn(Journal::open(path).unwrap());
        let engine = EngineOptions {
            concurrency: 1,
            max_attempts: 3,
            retry_delay: std::time::Duration::from_millis(1),
            progress: false,
            crash_after_commits: crash_after,
        };
        rt.block_on(run_revocation(
            writer,
            fake.clone(),
            &engine,
            Arc::new(AtomicBool::new(false)),
        ))
        .unwrap()
    }

    #[test]
    fn a_crash_after_any_commit_or_a_lost_answer_still_blocks_each_device_with_one_patch() {
        let ids = ["d1", "d2", "absent", "d3"];
        for k in 1..10u64 {
            let dir = tempfile::tempdir().unwrap();
            let path = revocation(dir.path(), &ids);
            let fake = Arc::new(Fake::default());
            fake.lose.lock().unwrap().insert("d2".into(), 1);
            run(&path, &fake, Some(k));
            let stats = run(&path, &fake, None);
            assert!(!stats.interrupted, "k={k}");
            let patches = fake.patches.lock().unwrap();
            for id in ["d1", "d2", "d3"] {
                assert_eq!(patches.get(id), Some(&1), "k={k}: {id} patched once");
            }
            let rows = ledger::all_revocations(&Journal::open(&path).unwrap()).unwrap();
            let outcomes: Vec<_> = rows.iter().map(|r| (r.state, r.outcome)).collect();
            assert!(outcomes[..2]
                .iter()
                .chain(&outcomes[3..])
                .all(|o| *o == (RevokeState::Blocked, Some(BlockOutcome::Blocked))));
            assert_eq!(
                outcomes[2],
                (RevokeState::Blocked, Some(BlockOutcome::Absent))
            );
        }
    }

    fn slots(p: &str) -> Slots {
        Slots {
            group: "g".into(),
            group_type: EnrollmentGroupType::Iot,
            primary: Some(Slot {
                sha1: p.into(),
                verified: true,
            }),
            secondary: None,
            bridge: None,
        }
    }

    #[test]
    fn the_group_trusting_the_root_above_the_stolen_intermediate_is_said_with_the_rollover() {
        let t = trust(&slots("ROOT"), Some("INTER"), &["ROOT".into()]);
        assert!(t.still_accepts_stolen_ca);
        assert!(t.message.contains("above the stolen one"), "{}", t.message);
        assert!(
            t.message.contains("iotc rollover stage --group g"),
            "{}",
            t.message
        );
        let t = trust(&slots("INTER"), Some("INTER"), &[]);
        assert!(
            t.message.contains("the station's CA itself"),
            "{}",
            t.message
        );
        let t = trust(&slots("OTHER"), Some("INTER"), &[]);
        assert!(t.message.contains("if it is the root"), "{}", t.message);
        let mut none = slots("X");
        none.primary = None;
        assert!(!trust(&none, Some("INTER"), &[]).still_accepts_stolen_ca);
    }
}
