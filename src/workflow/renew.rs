//! Certificate renewal of a batch's devices: a new certificate for each (a new key made by
//! the station, or the device's own key from its CSR), a new bundle beside the old one, and,
//! where the station holds the key, a re-registration with DPS under the same registration
//! id, so IoT Central keeps one device per id (re-provisioning, not a new device).
//!
//! A renewal *round* is planned once into the batch's journal ([`super::ledger`]): the
//! devices selected then (every finished device, or those whose current certificate expires
//! within some days) and the CA that signs the round. It then runs on the batch engine like
//! `provision`, each step committed before the next: the new key and certificate are stored
//! together before DPS is called, `registering` is recorded before the registration is sent,
//! and a device found `registering` after a crash is looked up first — DPS's record counts
//! as this round's only when it holds the *new* certificate's thumbprint — so a resume
//! re-registers every device exactly once and never issues a second certificate.

use super::engine::{chain, drive, AttemptError, Job, Run, RunStats, StepError};
use super::journal::{DeviceRecord, Journal, JournalError, JournalWriter};
use super::ledger::{self, RenewState, RenewStep, Renewal, Round};
use super::provision::{place_bundle, Assignment, BatchOptions, Services, StoredCredential};
use crate::cert::{Authority, DeviceCsr, Issued, LeafOptions};
use crate::ids::RegistrationId;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Looks a device's DPS registration up and tells whether it holds a given certificate.
pub trait CertificateLookup: Send + Sync + 'static {
    /// The assignment of `rec` when DPS's registration record holds the certificate with
    /// SHA-1 thumbprint `sha1`; `None` when DPS has no record, or one with another
    /// certificate (the device registered with its previous one).
    fn registered_with(
        &self,
        rec: &DeviceRecord,
        cred: &StoredCredential,
        sha1: &str,
    ) -> impl Future<Output = Result<Option<Assignment>, StepError>> + Send;
}

/// The folder of round `round`'s bundles inside `out`.
pub fn round_dir(out: &Path, round: i64) -> PathBuf {
    out.join(format!("renewal-{round}"))
}

/// Where the CSR of `device_id` is in `dir`: `<id>.csr`, else `<id>.pem`.
pub fn csr_path(dir: &Path, device_id: &str) -> PathBuf {
    let csr = dir.join(format!("{device_id}.csr"));
    if csr.exists() {
        csr
    } else {
        dir.join(format!("{device_id}.pem"))
    }
}

/// Signs a device's CSR for renewal with the checks of a CSR batch
/// ([`DeviceCsr::for_device`]: the signature verifies, the key type is allowed, the CN is the
/// device id exactly, no CA request), so a renewed device meets the rules it was issued under.
pub fn sign_device_csr(
    ca: &Authority,
    csr: &[u8],
    device_id: &RegistrationId,
    opts: &LeafOptions,
) -> Result<Issued, StepError> {
    let problem = |e: crate::cert::CertError| {
        StepError::permanent(format!("the CSR of {device_id}: {}", chain(&e)))
    };
    let checked = DeviceCsr::for_device(csr, device_id).map_err(problem)?;
    ca.sign_device_csr(&checked, opts).map_err(problem)
}

/// The certificate expiry (notAfter) of a PEM certificate, when it can be read.
pub fn not_after(cert_pem: &str) -> Option<time::OffsetDateTime> {
    let der = crate::cert::parse_pem_certs(cert_pem.as_bytes())
        .ok()?
        .into_iter()
        .next()?;
    let info = crate::cert::inspect(&der).ok()?;
    time::OffsetDateTime::parse(
        &info.not_after,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()
}

/// The devices a new round renews: finished devices with a certificate, and with
/// `expiring_within` only those whose current certificate expires within that many days.
pub fn select(
    journal: &Journal,
    expiring_within: Option<u32>,
) -> Result<Vec<String>, JournalError> {
    let done: std::collections::HashSet<String> = journal
        .statuses()?
        .into_iter()
        .filter(|s| s.state == super::journal::State::BundleWritten)
        .map(|s| s.device_id)
        .collect();
    let limit = expiring_within
        .map(|d| time::OffsetDateTime::now_utc() + time::Duration::days(i64::from(d)));
    Ok(ledger::current_certs(journal)?
        .into_iter()
        .filter(|c| done.contains(&c.device_id))
        .filter(|c| match limit {
            None => true,
            Some(limit) => not_after(&c.cert_pem).is_none_or(|t| t <= limit),
        })
        .map(|c| c.device_id)
        .collect())
}

/// How a round's devices get their new certificate.
#[derive(Clone)]
pub struct RenewSource {
    /// The CA of the round.
    pub ca: Arc<Authority>,
    /// The certificates' options.
    pub leaf: LeafOptions,
    /// The folder of the devices' CSRs (the devices keep their keys); `None`: the station
    /// makes new keys.
    pub csr_dir: Option<PathBuf>,
}

struct Renew<S> {
    services: S,
    source: RenewSource,
    journal: JournalWriter,
    round: i64,
    disk: super::bundle::DiskSync,
    opts: BatchOptions,
}

/// One device's turn: its renewal row and its batch row.
struct Turn {
    ren: Renewal,
    device: DeviceRecord,
}

impl<S: Services + CertificateLookup> Renew<S> {
    async fn commit(
        &self,
        run: &Run,
        t: &mut Turn,
        to: RenewState,
        step: RenewStep,
    ) -> Result<(), AttemptError> {
        let from = t.ren.state;
        let write = ledger::renew_advance(self.round, &t.ren.device_id, from, to, step.clone());
        run.commit(self.journal.exec(write)).await?;
        t.ren.state = to;
        t.ren.secret = step.secret.or(t.ren.secret.take());
        t.ren.cert_pem = step.cert_pem.or(t.ren.cert_pem.take());
        t.ren.chain_pem = step.chain_pem.or(t.ren.chain_pem.take());
        t.ren.assigned_hub = step.assigned_hub.or(t.ren.assigned_hub.take());
        Ok(())
    }

    fn credential(t: &Turn) -> Result<StoredCredential, StepError> {
        let key_pem = t.ren.secret.clone().ok_or_else(|| {
            StepError::permanent(format!(
                "the journal has no new key for {} in state {}",
                t.ren.device_id,
                t.ren.state.as_str()
            ))
        })?;
        Ok(StoredCredential::X509 {
            key_pem,
            chain_pem: t
                .ren
                .chain_pem
                .clone()
                .or_else(|| t.ren.cert_pem.clone())
                .unwrap_or_default(),
        })
    }

    /// The device's batch record with the renewal's new credential and hub, for the DPS
    /// call and the bundle.
    fn renewed(t: &Turn) -> DeviceRecord {
        DeviceRecord {
            secret: t.ren.secret.clone(),
            cert_pem: t.ren.cert_pem.clone(),
            chain_pem: t.ren.chain_pem.clone(),
            assigned_hub: t.ren.assigned_hub.clone().or(t.device.assigned_hub.clone()),
            ..t.device.clone()
        }
    }

    async fn run_steps(
        &self,
        run: &Run,
        t: &mut Turn,
        maybe_sent: &mut bool,
    ) -> Result<(), AttemptError> {
        loop {
            match t.ren.state {
                RenewState::Planned => {
                    let id = t.ren.device_id.clone();
                    let step = match &self.source.csr_dir {
                        Some(dir) => {
                            let path = csr_path(dir, &id);
                            let csr = std::fs::read(&path).map_err(|e| {
                                StepError::permanent(format!(
                                    "cannot read the CSR of {id} ({}): {e}",
                                    path.display()
                                ))
                            })?;
                            let reg = RegistrationId::new(id.clone())
                                .map_err(|e| StepError::permanent(e.to_string()))?;
                            let issued =
                                sign_device_csr(&self.source.ca, &csr, &reg, &self.source.leaf)?;
                            (
                                RenewState::Issued,
                                RenewStep {
                                    cert_pem: Some(issued.cert_pem),
                                    chain_pem: Some(issued.chain_pem),
                                    holds_key: Some(false),
                                    ..RenewStep::default()
                                },
                            )
                        }
                        None => {
                            let reg = RegistrationId::new(id.clone())
                                .map_err(|e| StepError::permanent(e.to_string()))?;
                            let issued = self
                                .source
                                .ca
                                .issue_device(&reg, &self.source.leaf)
                                .map_err(|e| StepError::permanent(chain(&e)))?;
                            let key = issued.key.as_ref().ok_or_else(|| {
                                StepError::permanent("the certificate module returned no key")
                            })?;
                            // The key, the certificate and "may be registering" in one commit.
                            (
                                RenewState::Registering,
                                RenewStep {
                                    secret: Some(key.pkcs8_pem()),
                                    cert_pem: Some(issued.cert_pem.clone()),
                                    chain_pem: Some(issued.chain_pem.clone()),
                                    holds_key: Some(true),
                                    ..RenewStep::default()
                                },
                            )
                        }
                    };
                    self.commit(run, t, step.0, step.1).await?;
                }
                RenewState::Issued => {
                    self.place_certificate(t).await?;
                    self.commit(run, t, RenewState::BundleWritten, RenewStep::default())
                        .await?;
                }
                RenewState::Registering => {
                    let cred = Self::credential(t)?;
                    let rec = Self::renewed(t);
                    let mut found = None;
                    if *maybe_sent {
                        let sha1 = crate::cert::parse_pem_certs(
                            t.ren.cert_pem.as_deref().unwrap_or_default().as_bytes(),
                        )
                        .ok()
                        .and_then(|v| v.into_iter().next())
                        .map(|d| crate::cert::sha1_thumbprint(&d))
                        .unwrap_or_default();
                        found = self.services.registered_with(&rec, &cred, &sha1).await?;
                    }
                    let a = match found {
                        Some(a) => a,
                        None => {
                            *maybe_sent = true;
                            self.services.register(&rec, &cred).await?
                        }
                    };
                    let step = RenewStep {
                        assigned_hub: Some(a.assigned_hub),
                        ..RenewStep::default()
                    };
                    self.commit(run, t, RenewState::Registered, step).await?;
                }
                RenewState::Registered => {
                    place_bundle(&self.disk, &Self::renewed(t), &self.opts).await?;
                    self.commit(run, t, RenewState::BundleWritten, RenewStep::default())
                        .await?;
                }
                RenewState::BundleWritten => return Ok(()),
            }
        }
    }

    /// A device that keeps its key gets its new certificate and chain (no key) in
    /// `OUT/renewal-N/<id>/`.
    async fn place_certificate(&self, t: &Turn) -> Result<(), StepError> {
        let issued = Issued {
            cert_der: crate::cert::parse_pem_certs(
                t.ren.cert_pem.as_deref().unwrap_or_default().as_bytes(),
            )
            .ok()
            .and_then(|v| v.into_iter().next())
            .unwrap_or_default(),
            cert_pem: t.ren.cert_pem.clone().unwrap_or_default(),
            key: None,
            chain_pem: t.ren.chain_pem.clone().unwrap_or_default(),
        };
        let dir = super::bundle::bundle_dir(&self.opts.out_dir, &t.ren.device_id);
        let name = t.ren.device_id.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| {
                StepError::permanent(format!("cannot create {}: {e}", dir.display()))
            })?;
            let same = std::fs::read_to_string(dir.join(format!("{name}_cert.pem")))
                .is_ok_and(|old| old == issued.cert_pem);
            if same {
                return Ok(());
            }
            let opts = crate::cert::WriteOptions {
                fullchain: true,
                ..crate::cert::WriteOptions::default()
            };
            crate::cert::write_bundle(&dir, &name, &issued, &opts)
                .map(drop)
                .map_err(|e| StepError::permanent(chain(&e)))
        })
        .await
        .map_err(|e| StepError::permanent(format!("bundle writer: {e}")))?
    }
}

impl<S: Services + CertificateLookup> Job for Renew<S> {
    type Item = Turn;

    fn seq(t: &Turn) -> i64 {
        t.ren.seq
    }

    fn device_id(t: &Turn) -> &str {
        &t.ren.device_id
    }

    fn in_doubt(t: &Turn) -> bool {
        t.ren.state == RenewState::Registering
    }

    async fn pending(&self, after: i64, limit: usize) -> Result<Vec<Turn>, JournalError> {
        let round = self.round;
        self.journal
            .read(move |j| {
                let mut out = Vec::new();
                for ren in ledger::pending_renewals(j, round, after, limit)? {
                    let device = j.get(&ren.device_id)?.ok_or_else(|| {
                        JournalError::Corrupt(format!(
                            "renewal of {} without its device",
                            ren.device_id
                        ))
                    })?;
                    out.push(Turn { ren, device });
                }
                Ok(out)
            })
            .await
    }

    async fn attempt(
        &self,
        run: &Run,
        t: &mut Turn,
        maybe_sent: &mut bool,
    ) -> Result<(), AttemptError> {
        self.run_steps(run, t, maybe_sent).await
    }

    async fn record_failure(
        &self,
        t: &Turn,
        reason: &str,
        attempts: u32,
    ) -> Result<(), JournalError> {
        self.journal
            .exec(ledger::renew_fail(
                self.round,
                &t.ren.device_id,
                reason,
                attempts,
            ))
            .await
    }
}

/// Runs the open round of `journal`: `opts.out_dir` is the round's bundle folder.
pub async fn run_round<S: Services + CertificateLookup>(
    journal: JournalWriter,
    round: &Round,
    services: S,
    source: RenewSource,
    opts: BatchOptions,
    stop: Arc<AtomicBool>,
) -> Result<RunStats, super::engine::BatchError> {
    let _ = super::bundle::clean_temporaries(&opts.out_dir);
    let number = round.round;
    let left = journal
        .read(move |j| {
            Ok(ledger::round_renewals(j, number)?
                .iter()
                .filter(|r| r.state != RenewState::BundleWritten)
                .count() as u64)
        })
        .await?;
    let engine = opts.engine();
    let job = Arc::new(Renew {
        services,
        source,
        journal,
        round: round.round,
        disk: super::bundle::DiskSync::spawn(&opts.out_dir),
        opts,
    });
    drive(job, left, &engine, stop).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::journal::{Attestation, BatchMeta, State, Transition, Update};
    use crate::workflow::manifest::DeviceSpec;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// DPS in memory: the certificate each device registered with last, the registrations
    /// that reached it, and answers it can lose (registered, but the caller gets an error).
    #[derive(Default)]
    struct Fake {
        registered: Mutex<HashMap<String, String>>,
        calls: Mutex<HashMap<String, u32>>,
        lose: Mutex<HashMap<String, u32>>,
    }

    fn leaf_sha1(cred: &StoredCredential) -> String {
        let StoredCredential::X509 { chain_pem, .. } = cred else {
            return String::new();
        };
        let der = crate::cert::parse_pem_certs(chain_pem.as_bytes()).unwrap();
        crate::cert::sha1_thumbprint(&der[0])
    }

    fn hub(rec: &DeviceRecord) -> Assignment {
        Assignment {
            assigned_hub: "hub".into(),
            device_id: rec.device_id.clone(),
        }
    }

    impl Services for Arc<Fake> {
        async fn create_device(&self, _: &DeviceRecord) -> Result<(), StepError> {
            Err(StepError::permanent("a renewal creates no device"))
        }
        async fn register(
            &self,
            rec: &DeviceRecord,
            cred: &StoredCredential,
        ) -> Result<Assignment, StepError> {
            let id = rec.device_id.clone();
            *self.calls.lock().unwrap().entry(id.clone()).or_default() += 1;
            self.registered
                .lock()
                .unwrap()
                .insert(id.clone(), leaf_sha1(cred));
            if let Some(n) = self.lose.lock().unwrap().get_mut(&id).filter(|n| **n > 0) {
                *n -= 1;
                return Err(StepError::transient("connection reset"));
            }
            Ok(hub(rec))
        }
        async fn lookup(
            &self,
            rec: &DeviceRecord,
            _: &StoredCredential,
        ) -> Result<Option<Assignment>, StepError> {
            Ok(Some(hub(rec)))
        }
    }

    impl CertificateLookup for Arc<Fake> {
        async fn registered_with(
            &self,
            rec: &DeviceRecord,
            _: &StoredCredential,
            sha1: &str,
        ) -> Result<Option<Assignment>, StepError> {
            let reg = self.registered.lock().unwrap();
            Ok((reg.get(&rec.device_id).map(String::as_str) == Some(sha1)).then(|| hub(rec)))
        }
    }

    /// A finished batch of `ids` whose first certificates `old` signed, with DPS holding them.
    fn batch(dir: &Path, ids: &[&str], old: &Authority, fake: &Fake) -> PathBuf {
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
            .map(|i| crate::workflow::manifest::DeviceSpec::bare(RegistrationId::new(*i).unwrap()))
            .collect::<Vec<DeviceSpec>>();
        j.plan(&specs).unwrap();
        for id in ids {
            let issued = old
                .issue_device(&RegistrationId::new(*id).unwrap(), &LeafOptions::default())
                .unwrap();
            fake.registered
                .lock()
                .unwrap()
                .insert(id.to_string(), issued.sha1_thumbprint());
            let steps = [
                Transition {
                    secret: Some(issued.key.as_ref().unwrap().pkcs8_pem()),
                    cert_pem: Some(issued.cert_pem.clone()),
                    chain_pem: Some(issued.chain_pem.clone()),
                    ..Transition::new(*id, State::Planned, State::Registering)
                },
                Transition {
                    assigned_hub: Some("hub".into()),
                    ..Transition::new(*id, State::Registering, State::Registered)
                },
                Transition::new(*id, State::Registered, State::BundleWritten),
            ];
            for t in steps {
                j.apply(&[Update::Advance(t)]).unwrap()[0].as_ref().unwrap();
            }
        }
        ledger::migrate(&mut j).unwrap();
        path
    }

    fn run(path: &Path, out: &Path, ca: &Arc<Authority>, fake: &Arc<Fake>, crash: Option<u64>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut j = Journal::open(path).unwrap();
        // The first run plans round 1; a later one resumes it, or finds it finished.
        let round = match ledger::open_round(&j).unwrap() {
            Some(r) => r,
            None if !ledger::round_renewals(&j, 1).unwrap().is_empty() => return,
            None => {
                let ids = select(&j, None).unwrap();
                let meta = Round {
                    round: 0,
                    issuer: crate::cert::sha256_thumbprint(ca.cert_der()),
                    issuer_subject: ca.subject().into(),
                    created_at: "now".into(),
                    expiring_within: None,
                    csr_dir: None,
                    out_dir: out.to_owned(),
                };
                ledger::plan_round(&mut j, &meta, &ids).unwrap()
            }
        };
        let opts = BatchOptions {
            concurrency: 1,
            retry_delay: std::time::Duration::from_millis(1),
            out_dir: round_dir(out, round.round),
            crash_after_commits: crash,
            ..BatchOptions::default()
        };
        let source = RenewSource {
            ca: ca.clone(),
            leaf: LeafOptions::default(),
            csr_dir: None,
        };
        let writer = JournalWriter::spawn(j);
        let stop = Arc::new(AtomicBool::new(false));
        rt.block_on(run_round(writer, &round, fake.clone(), source, opts, stop))
            .unwrap();
    }

    #[test]
    fn a_crash_after_any_commit_or_a_lost_answer_reregisters_each_device_once_with_the_new_certificate(
    ) {
        let old = Authority::new_root(&Default::default()).unwrap();
        let new = Arc::new(Authority::new_root(&Default::default()).unwrap());
        let ids = ["d1", "d2", "d3"];
        for k in 1..10u64 {
            let dir = tempfile::tempdir().unwrap();
            let fake = Arc::new(Fake::default());
            let path = batch(dir.path(), &ids, &old, &fake);
            fake.lose.lock().unwrap().insert("d2".into(), 1);
            let out = dir.path().join("out");
            run(&path, &out, &new, &fake, Some(k));
            run(&path, &out, &new, &fake, None);
            let j = Journal::open(&path).unwrap();
            assert!(
                ledger::open_round(&j).unwrap().is_none(),
                "k={k}: round finished"
            );
            let rows = ledger::round_renewals(&j, 1).unwrap();
            assert_eq!(rows.len(), 3, "k={k}: one round, not two");
            for r in &rows {
                let id = r.device_id.as_str();
                assert_eq!(
                    fake.calls.lock().unwrap().get(id),
                    Some(&1),
                    "k={k}: {id} once"
                );
                let cert = r.cert_pem.as_deref().unwrap();
                let der = crate::cert::parse_pem_certs(cert.as_bytes()).unwrap();
                assert_eq!(
                    fake.registered.lock().unwrap().get(id),
                    Some(&crate::cert::sha1_thumbprint(&der[0])),
                    "k={k}: {id} holds its new certificate"
                );
                crate::cert::verify_signed_by(&der[0], new.cert_der()).unwrap();
                let b = crate::workflow::bundle::check(&out.join("renewal-1").join(id)).unwrap();
                assert_eq!(
                    b.cert_sha1_thumbprint,
                    Some(crate::cert::sha1_thumbprint(&der[0]))
                );
            }
        }
    }
}
