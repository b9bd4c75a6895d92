//! The batch engine: takes the devices of a journal that are not done and walks each one
//! through its steps with bounded concurrency, committing every step before the next.
//!
//! The engine knows nothing of HTTP: it talks to the services through [`Services`] (IoT
//! Central device creation, DPS registration and status lookup) and makes credentials
//! through [`Issuer`]. [`RealServices`](super::services::RealServices) is the production implementation over
//! [`crate::central::Client`] and [`crate::dps::Client`]; the unit tests use an in-memory one
//! so a crash can be injected between any two steps.
//!
//! Exactly-once registration: the journal records `registering` before DPS is called. A
//! device found in `registering` (a crash, or a retry after an answer that never came) is
//! first looked up with DPS's status lookup; only when DPS has no assignment for it is a
//! registration sent. Per-device failures are recorded in the journal and the batch goes on.

use super::bundle::{self, BundleContents, Credential};
use super::journal::{
    DeviceRecord, DeviceStatus, Journal, JournalError, JournalWriter, State, Transition, Update,
};
use super::manifest::{ManifestError, ScanError, Source};
use crate::ids::RegistrationId;
use crate::secret::Secret;
use serde::Serialize;
use std::collections::HashSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Why one step of one device failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    /// What failed and why (no secrets).
    pub message: String,
    /// Whether trying again may succeed (throttling, 5xx, network).
    pub retryable: bool,
}

impl StepError {
    /// A failure that will not go away by retrying.
    pub fn permanent(message: impl Into<String>) -> StepError {
        StepError {
            message: message.into(),
            retryable: false,
        }
    }

    /// A failure that may go away.
    pub fn transient(message: impl Into<String>) -> StepError {
        StepError {
            message: message.into(),
            retryable: true,
        }
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Formats an error with its causes on one line.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// A credential made for a device.
#[derive(Debug, Clone)]
pub enum NewCredential {
    /// A private key and its certificate, stored together.
    X509 {
        /// PKCS#8 PEM private key.
        key_pem: Secret,
        /// Device certificate PEM.
        cert_pem: String,
        /// Leaf + intermediates PEM.
        chain_pem: String,
    },
    /// A derived symmetric key.
    SymmetricKey(Secret),
}

/// Makes device credentials (CPU work, no I/O).
pub trait Issuer: Send + Sync + 'static {
    /// A new credential for this registration id.
    fn issue(&self, id: &RegistrationId) -> Result<NewCredential, StepError>;
}

/// What DPS assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The hub.
    pub assigned_hub: String,
    /// The device id on that hub.
    pub device_id: String,
}

/// The device's credential as stored in the journal, for a DPS call.
#[derive(Debug, Clone)]
pub enum StoredCredential {
    /// Key + chain (leaf first).
    X509 {
        /// PKCS#8 PEM private key.
        key_pem: Secret,
        /// Leaf + intermediates PEM.
        chain_pem: String,
    },
    /// The derived key.
    SymmetricKey(Secret),
}

/// The services a batch talks to.
pub trait Services: Send + Sync + 'static {
    /// Creates (or updates to the manifest's values) the IoT Central device.
    fn create_device(
        &self,
        rec: &DeviceRecord,
    ) -> impl Future<Output = Result<(), StepError>> + Send;
    /// Registers the device with DPS and waits for the assignment.
    fn register(
        &self,
        rec: &DeviceRecord,
        cred: &StoredCredential,
    ) -> impl Future<Output = Result<Assignment, StepError>> + Send;
    /// The device's current assignment, if DPS has one, without registering it.
    fn lookup(
        &self,
        rec: &DeviceRecord,
        cred: &StoredCredential,
    ) -> impl Future<Output = Result<Option<Assignment>, StepError>> + Send;
}

/// How a batch runs.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Devices in flight at once.
    pub concurrency: usize,
    /// Attempts per device in this run before it is recorded as failed.
    pub max_attempts: u32,
    /// First backoff between attempts (doubles).
    pub retry_delay: Duration,
    /// Where bundles go.
    pub out_dir: PathBuf,
    /// The ID scope written into bundles.
    pub id_scope: String,
    /// The DPS endpoint written into bundles.
    pub dps_endpoint: Option<String>,
    /// Show a progress bar on stderr (when it is a terminal).
    pub progress: bool,
    /// Also write `<deviceId>.pfx` (key + chain) protected by this password (X.509 only).
    pub pfx_password: Option<Secret>,
    /// Encrypt each bundle's `<deviceId>_key.pem` (PKCS#8, PBKDF2 + AES-256) with this
    /// password; `None` writes it unencrypted (mode 0600), which the CLI allows only when the
    /// user opts out with `--no-password`.
    pub key_password: Option<Secret>,
    /// Test hook: stop the whole run (as a crash would) after this many journal commits.
    pub crash_after_commits: Option<u64>,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            concurrency: 16,
            max_attempts: 3,
            retry_delay: Duration::from_millis(500),
            out_dir: PathBuf::from("bundles"),
            id_scope: String::new(),
            dps_endpoint: None,
            progress: false,
            pfx_password: None,
            key_password: None,
            crash_after_commits: None,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Devices that reached `bundle_written` in this run.
    pub completed: u64,
    /// Their ids (the report tells them from devices done by earlier runs).
    pub finished: HashSet<String>,
    /// Devices recorded as failed in this run.
    pub failed: u64,
    /// Whether the run stopped early (Ctrl-C or the crash hook).
    pub interrupted: bool,
}

/// The batch engine failed as a whole (the journal is unusable); per-device failures are not
/// errors, they are in the journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// The journal failed.
    #[error("journal failed")]
    Journal(#[from] JournalError),
    /// A worker task panicked.
    #[error("a worker stopped unexpectedly: {0}")]
    Worker(String),
    /// The report could not be written.
    #[error(transparent)]
    Report(#[from] super::report::ReportError),
}

/// Runs the batch of `journal` and writes its report to `report_path` (JSON). The report
/// counts every device of the journal, including those done by earlier runs.
pub async fn run_and_report<S: Services, I: Issuer>(
    journal: super::journal::Journal,
    services: S,
    issuer: I,
    opts: BatchOptions,
    report_path: Option<&std::path::Path>,
    stop: Arc<AtomicBool>,
) -> Result<super::report::Report, BatchError> {
    let meta = journal.meta().clone();
    let journal_path = journal.path().to_owned();
    let out_dir = opts.out_dir.clone();
    let writer = JournalWriter::spawn(journal);
    let started_at = super::report::now_rfc3339();
    let clock = std::time::Instant::now();
    let stats = run_batch(writer.clone(), services, issuer, opts, stop).await?;
    let elapsed = clock.elapsed();
    let run = super::report::RunResult {
        counts: writer.counts().await?,
        statuses: writer.statuses().await?,
        done_this_run: stats.finished,
    };
    let mut report =
        super::report::Report::new(&meta, &journal_path, &out_dir, started_at, elapsed, run);
    if let Some(path) = report_path {
        report.write_json(path)?;
    }
    Ok(report)
}

/// What a run would do with one device: a line of the dry run's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedDevice {
    /// The device.
    pub device_id: String,
    /// Provision it from the start, resume it, or skip it.
    pub action: PlannedAction,
    /// The step it stands at now (`planned` for a device not in a journal yet).
    pub from: State,
    /// A key (and certificate) would be made for it.
    pub issue_credential: bool,
    /// Its IoT Central device would be created first (the manifest gives IoT Central fields).
    pub create_device: bool,
    /// It would be registered with DPS (a device found `registering` is looked up first and
    /// registered only when DPS has no assignment for it).
    pub register: bool,
    /// Why its last attempt failed, when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// What a run would do with a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PlannedAction {
    /// Every step, from the start.
    Provision,
    /// The steps it has left.
    Resume,
    /// Nothing: an earlier run finished it.
    Skip,
}

impl PlannedDevice {
    /// The plan for a device at `from`; `central_fields` when the manifest gives it IoT
    /// Central fields. The same rules as the engine (see `attempt`).
    pub fn new(device_id: String, from: State, central_fields: bool) -> PlannedDevice {
        PlannedDevice {
            device_id,
            action: match from {
                State::Planned => PlannedAction::Provision,
                State::BundleWritten => PlannedAction::Skip,
                _ => PlannedAction::Resume,
            },
            from,
            issue_credential: from == State::Planned,
            create_device: central_fields && from < State::DeviceCreated,
            register: from < State::Registered,
            last_error: None,
        }
    }

    fn from_status(s: DeviceStatus) -> PlannedDevice {
        let done = s.state == State::BundleWritten;
        PlannedDevice {
            last_error: s.error.filter(|_| !done),
            ..PlannedDevice::new(s.device_id, s.state, s.central_fields)
        }
    }
}

/// The plan of a new batch: every device of a validated source, provisioned from the start.
/// One pass over the source.
pub fn plan_source(source: &Source) -> Result<Vec<PlannedDevice>, ManifestError> {
    let mut plan = Vec::new();
    source
        .for_each(|spec| {
            let central = spec.needs_central_device();
            plan.push(PlannedDevice::new(
                spec.device_id.to_string(),
                State::Planned,
                central,
            ));
            Ok::<(), std::convert::Infallible>(())
        })
        .map_err(|e| match e {
            ScanError::Manifest(e) => e,
            ScanError::Sink(never) => match never {},
        })?;
    Ok(plan)
}

/// The plan of resuming a journal: what is left of each device, done ones skipped. Reads the
/// journal and writes nothing.
pub fn plan_journal(journal: &Journal) -> Result<Vec<PlannedDevice>, JournalError> {
    Ok(journal
        .statuses()?
        .into_iter()
        .map(PlannedDevice::from_status)
        .collect())
}

struct Shared<S, I> {
    services: S,
    issuer: I,
    journal: JournalWriter,
    disk: bundle::DiskSync,
    opts: BatchOptions,
    stop: AtomicBool,
    commits: AtomicU64,
}

/// How one device's turn in a run ended.
enum Ended {
    Done,
    Failed,
    Stopped,
}

/// Runs every device of the journal that is not done. Returns when all have been tried, or
/// when `stop` becomes true (in-flight devices finish their current step first).
pub async fn run_batch<S: Services, I: Issuer>(
    journal: JournalWriter,
    services: S,
    issuer: I,
    opts: BatchOptions,
    stop: Arc<AtomicBool>,
) -> Result<RunStats, BatchError> {
    let _ = bundle::clean_temporaries(&opts.out_dir);
    let todo = journal.counts().await?;
    let bar = progress_bar(opts.progress, todo.total - todo.done);
    let concurrency = opts.concurrency.max(1);
    let shared = Arc::new(Shared {
        services,
        issuer,
        journal: journal.clone(),
        disk: bundle::DiskSync::spawn(&opts.out_dir),
        opts,
        stop: AtomicBool::new(false),
        commits: AtomicU64::new(0),
    });
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    let mut stats = RunStats::default();
    let mut after = 0i64;
    let page = (concurrency * 4).clamp(64, 1024);
    type Joined = Result<Result<(String, Ended), BatchError>, tokio::task::JoinError>;
    let collect = |r: Joined, stats: &mut RunStats| -> Result<(), BatchError> {
        let (id, ended) = r.map_err(|e| BatchError::Worker(e.to_string()))??;
        match ended {
            Ended::Done => {
                stats.completed += 1;
                stats.finished.insert(id);
                bar.inc(1);
            }
            Ended::Failed => {
                stats.failed += 1;
                bar.inc(1);
            }
            Ended::Stopped => stats.interrupted = true,
        }
        Ok(())
    };
    'pages: loop {
        let records = journal.pending(after, page).await?;
        let Some(last) = records.last() else { break };
        after = last.seq;
        for rec in records {
            let permit = tokio::select! {
                p = semaphore.clone().acquire_owned() => p.map_err(|e| BatchError::Worker(e.to_string()))?,
                _ = wait_for(&stop) => { stats.interrupted = true; break 'pages; }
            };
            if shared.stop.load(Ordering::SeqCst) {
                stats.interrupted = true;
                break 'pages;
            }
            let shared = shared.clone();
            tasks.spawn(async move {
                let _permit = permit;
                let id = rec.device_id.clone();
                process_device(&shared, rec).await.map(|ended| (id, ended))
            });
            while let Some(r) = tasks.try_join_next() {
                collect(r, &mut stats)?;
            }
        }
    }
    while let Some(r) = tasks.join_next().await {
        collect(r, &mut stats)?;
    }
    if stop.load(Ordering::SeqCst) || shared.stop.load(Ordering::SeqCst) {
        stats.interrupted = true;
    }
    bar.finish_and_clear();
    Ok(stats)
}

async fn wait_for(flag: &AtomicBool) {
    while !flag.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn progress_bar(enabled: bool, len: u64) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} devices  {per_sec}  ETA {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A step outcome inside one attempt.
enum AttemptError {
    Step(StepError),
    Journal(JournalError),
    Stopped,
}

impl From<StepError> for AttemptError {
    fn from(e: StepError) -> Self {
        AttemptError::Step(e)
    }
}

async fn process_device<S: Services, I: Issuer>(
    shared: &Shared<S, I>,
    mut rec: DeviceRecord,
) -> Result<Ended, BatchError> {
    let mut attempts = 0u32;
    // Registering found at the start means a registration may already have reached DPS.
    let mut maybe_sent = rec.state == State::Registering;
    loop {
        attempts += 1;
        match attempt(shared, &mut rec, &mut maybe_sent).await {
            Ok(()) => return Ok(Ended::Done),
            Err(AttemptError::Stopped) => return Ok(Ended::Stopped),
            Err(AttemptError::Journal(JournalError::IllegalTransition { .. })) => {
                // Someone else moved this device (should not happen with one process per
                // journal): reread nothing, report it as a failure of this device.
                record_failure(shared, &rec, "journal state changed under us", attempts).await?;
                return Ok(Ended::Failed);
            }
            Err(AttemptError::Journal(e)) => return Err(e.into()),
            Err(AttemptError::Step(e)) => {
                if rec.state == State::Registering {
                    maybe_sent = true;
                }
                if e.retryable && attempts < shared.opts.max_attempts {
                    let delay = shared.opts.retry_delay * 2u32.saturating_pow(attempts - 1);
                    tracing::debug!(device = %rec.device_id, "attempt {attempts} failed, retrying: {e}");
                    tokio::time::sleep(delay).await;
                    continue;
                }
                record_failure(shared, &rec, &e.message, attempts).await?;
                return Ok(Ended::Failed);
            }
        }
    }
}

async fn record_failure<S, I>(
    shared: &Shared<S, I>,
    rec: &DeviceRecord,
    reason: &str,
    attempts: u32,
) -> Result<(), BatchError> {
    shared
        .journal
        .apply(Update::Fail {
            device_id: rec.device_id.clone(),
            reason: reason.to_owned(),
            attempts,
        })
        .await?;
    Ok(())
}

/// Commits a transition and mirrors it into `rec`.
async fn commit<S, I>(
    shared: &Shared<S, I>,
    rec: &mut DeviceRecord,
    t: Transition,
) -> Result<(), AttemptError> {
    if shared.stop.load(Ordering::SeqCst) {
        return Err(AttemptError::Stopped);
    }
    let to = t.to;
    let secret = t.secret.clone();
    let (cert, chain, hub, dev) = (
        t.cert_pem.clone(),
        t.chain_pem.clone(),
        t.assigned_hub.clone(),
        t.dps_device_id.clone(),
    );
    shared
        .journal
        .advance(t)
        .await
        .map_err(AttemptError::Journal)?;
    if let Some(to) = to {
        rec.state = to;
    }
    rec.secret = secret.or(rec.secret.take());
    rec.cert_pem = cert.or(rec.cert_pem.take());
    rec.chain_pem = chain.or(rec.chain_pem.take());
    rec.assigned_hub = hub.or(rec.assigned_hub.take());
    rec.dps_device_id = dev.or(rec.dps_device_id.take());
    let n = shared.commits.fetch_add(1, Ordering::SeqCst) + 1;
    if shared
        .opts
        .crash_after_commits
        .is_some_and(|limit| n >= limit)
    {
        shared.stop.store(true, Ordering::SeqCst);
        return Err(AttemptError::Stopped);
    }
    Ok(())
}

fn stored_credential(rec: &DeviceRecord) -> Result<StoredCredential, StepError> {
    let secret = rec.secret.clone().ok_or_else(|| {
        StepError::permanent(format!(
            "the journal has no key for {} in state {}",
            rec.device_id, rec.state
        ))
    })?;
    Ok(match &rec.cert_pem {
        Some(_) => StoredCredential::X509 {
            key_pem: secret,
            chain_pem: rec
                .chain_pem
                .clone()
                .or_else(|| rec.cert_pem.clone())
                .unwrap_or_default(),
        },
        None => StoredCredential::SymmetricKey(secret),
    })
}

fn needs_central_device(rec: &DeviceRecord) -> bool {
    rec.display_name.is_some()
        || rec.template.is_some()
        || rec.organization.is_some()
        || rec.simulated.is_some()
}

async fn attempt<S: Services, I: Issuer>(
    shared: &Shared<S, I>,
    rec: &mut DeviceRecord,
    maybe_sent: &mut bool,
) -> Result<(), AttemptError> {
    loop {
        let id = rec.device_id.clone();
        match rec.state {
            State::Planned => {
                let reg = RegistrationId::new(id.clone())
                    .map_err(|e| StepError::permanent(e.to_string()))?;
                // Without an IoT Central device to create, the next step is the registration:
                // the credential and "may be registering" go into one commit.
                let direct = !needs_central_device(rec);
                let next = |issued: State| if direct { State::Registering } else { issued };
                let t = match shared.issuer.issue(&reg)? {
                    NewCredential::X509 {
                        key_pem,
                        cert_pem,
                        chain_pem,
                    } => Transition {
                        secret: Some(key_pem),
                        cert_pem: Some(cert_pem),
                        chain_pem: Some(chain_pem),
                        ..Transition::new(&id, State::Planned, next(State::CertIssued))
                    },
                    NewCredential::SymmetricKey(key) => Transition {
                        secret: Some(key),
                        ..Transition::new(&id, State::Planned, next(State::KeyWritten))
                    },
                };
                commit(shared, rec, t).await?;
            }
            State::KeyWritten | State::CertIssued => {
                let from = rec.state;
                if needs_central_device(rec) {
                    shared.services.create_device(rec).await?;
                    commit(
                        shared,
                        rec,
                        Transition::new(&id, from, State::DeviceCreated),
                    )
                    .await?;
                } else {
                    commit(shared, rec, Transition::new(&id, from, State::Registering)).await?;
                }
            }
            State::DeviceCreated => {
                commit(
                    shared,
                    rec,
                    Transition::new(&id, State::DeviceCreated, State::Registering),
                )
                .await?;
            }
            State::Registering => {
                let cred = stored_credential(rec)?;
                let mut found = None;
                if *maybe_sent {
                    found = shared.services.lookup(rec, &cred).await?;
                }
                let assignment = match found {
                    Some(a) => a,
                    None => {
                        *maybe_sent = true;
                        shared.services.register(rec, &cred).await?
                    }
                };
                let t = Transition {
                    assigned_hub: Some(assignment.assigned_hub),
                    dps_device_id: Some(assignment.device_id),
                    ..Transition::new(&id, State::Registering, State::Registered)
                };
                commit(shared, rec, t).await?;
            }
            State::Registered => {
                // Encrypting the key and making the PKCS#12 (PBKDF2, milliseconds of CPU each)
                // and writing the files all block: off the async workers.
                let (record, opts) = (rec.clone(), shared.opts.clone());
                let fsync_each = bundle::DiskSync::needs_fsync_each();
                let prepared = tokio::task::spawn_blocking(move || {
                    let contents = bundle_contents(&record, &opts)?;
                    bundle::stage(&opts.out_dir, &contents, fsync_each)
                        .map_err(|e| StepError::permanent(chain(&e)))
                })
                .await
                .map_err(|e| StepError::permanent(format!("bundle writer: {e}")))??;
                if let bundle::Prepared::Staged(staged) = prepared {
                    // Files durable before the rename, the rename durable before the journal
                    // says so; each flush is shared with every bundle staged meanwhile.
                    let disk_error = |e: bundle::BundleError| StepError::permanent(chain(&e));
                    shared.disk.flush().await.map_err(disk_error)?;
                    staged.place().map_err(disk_error)?;
                    shared.disk.flush().await.map_err(disk_error)?;
                }
                commit(
                    shared,
                    rec,
                    Transition::new(&id, State::Registered, State::BundleWritten),
                )
                .await?;
            }
            State::BundleWritten => return Ok(()),
        }
    }
}

fn bundle_contents(rec: &DeviceRecord, opts: &BatchOptions) -> Result<BundleContents, StepError> {
    let mut thumbprint = None;
    let credential = match stored_credential(rec)? {
        StoredCredential::X509 { key_pem, chain_pem } => {
            let cert_pem = rec.cert_pem.clone().unwrap_or_default();
            let cert_der = crate::cert::parse_pem_certs(cert_pem.as_bytes())
                .ok()
                .and_then(|mut v| (!v.is_empty()).then(|| v.remove(0)));
            thumbprint = cert_der.as_deref().map(crate::cert::sha1_thumbprint);
            let pfx = match (&opts.pfx_password, cert_der) {
                (Some(password), Some(cert_der)) => Some(pfx(
                    &rec.device_id,
                    cert_der,
                    &cert_pem,
                    &key_pem,
                    &chain_pem,
                    password,
                )?),
                _ => None,
            };
            let key_pem = match &opts.key_password {
                Some(password) => encrypt_key(&key_pem, password)?,
                None => key_pem,
            };
            Credential::X509 {
                cert_pem,
                key_pem,
                fullchain_pem: chain_pem,
                pfx,
            }
        }
        StoredCredential::SymmetricKey(device_key) => Credential::SymmetricKey { device_key },
    };
    Ok(BundleContents {
        device_id: rec
            .dps_device_id
            .clone()
            .unwrap_or_else(|| rec.device_id.clone()),
        registration_id: rec.device_id.clone(),
        id_scope: opts.id_scope.clone(),
        assigned_hub: rec.assigned_hub.clone().unwrap_or_default(),
        dps_endpoint: opts.dps_endpoint.clone(),
        cert_sha1_thumbprint: thumbprint,
        credential,
    })
}

/// The device key as encrypted PKCS#8 PEM, as `iotc cert` writes it.
fn encrypt_key(key_pem: &Secret, password: &Secret) -> Result<Secret, StepError> {
    let (key, _) = crate::cert::PrivateKey::from_pem(key_pem.expose(), None)
        .map_err(|e| StepError::permanent(chain(&e)))?;
    key.encrypted_pkcs8_pem(password.expose(), crate::cert::DEFAULT_KDF_ITERATIONS)
        .map_err(|e| StepError::permanent(chain(&e)))
}

fn pfx(
    name: &str,
    cert_der: Vec<u8>,
    cert_pem: &str,
    key_pem: &Secret,
    chain_pem: &str,
    password: &Secret,
) -> Result<Vec<u8>, StepError> {
    let (key, _) = crate::cert::PrivateKey::from_pem(key_pem.expose(), None)
        .map_err(|e| StepError::permanent(chain(&e)))?;
    let issued = crate::cert::Issued {
        cert_der,
        cert_pem: cert_pem.to_owned(),
        key: Some(key),
        chain_pem: chain_pem.to_owned(),
    };
    crate::cert::pkcs12(&issued, name, password.expose())
        .map_err(|e| StepError::permanent(chain(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RegistrationId;
    use crate::workflow::journal::{Attestation, BatchMeta, Journal};
    use crate::workflow::manifest::DeviceSpec;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// An in-memory IoT Central + DPS that counts what it was asked, fails on request and
    /// can "lose" answers (the registration happens, the caller gets an error).
    #[derive(Default)]
    struct Fake {
        created: Mutex<HashMap<String, u32>>,
        registered: Mutex<HashMap<String, u32>>,
        fail_register: Mutex<HashMap<String, (u32, bool)>>, // id -> (times left, retryable)
        lose_answer: Mutex<HashMap<String, u32>>,
        lookups: AtomicU64,
    }

    impl Services for Arc<Fake> {
        async fn create_device(&self, rec: &DeviceRecord) -> Result<(), StepError> {
            *self
                .created
                .lock()
                .unwrap()
                .entry(rec.device_id.clone())
                .or_default() += 1;
            Ok(())
        }
        async fn register(
            &self,
            rec: &DeviceRecord,
            cred: &StoredCredential,
        ) -> Result<Assignment, StepError> {
            tokio::task::yield_now().await;
            match cred {
                StoredCredential::X509 { key_pem, .. } => {
                    assert_eq!(key_pem.expose(), format!("KEY-{}", rec.device_id))
                }
                StoredCredential::SymmetricKey(k) => {
                    assert_eq!(k.expose(), format!("SYM-{}", rec.device_id))
                }
            }
            if let Some((left, retryable)) =
                self.fail_register.lock().unwrap().get_mut(&rec.device_id)
            {
                if *left > 0 {
                    *left -= 1;
                    return Err(StepError {
                        message: "HTTP 503".into(),
                        retryable: *retryable,
                    });
                }
            }
            *self
                .registered
                .lock()
                .unwrap()
                .entry(rec.device_id.clone())
                .or_default() += 1;
            if let Some(left) = self.lose_answer.lock().unwrap().get_mut(&rec.device_id) {
                if *left > 0 {
                    *left -= 1;
                    return Err(StepError::transient("connection reset"));
                }
            }
            Ok(Assignment {
                assigned_hub: "hub-1".into(),
                device_id: rec.device_id.clone(),
            })
        }
        async fn lookup(
            &self,
            rec: &DeviceRecord,
            _cred: &StoredCredential,
        ) -> Result<Option<Assignment>, StepError> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            Ok(self
                .registered
                .lock()
                .unwrap()
                .contains_key(&rec.device_id)
                .then(|| Assignment {
                    assigned_hub: "hub-1".into(),
                    device_id: rec.device_id.clone(),
                }))
        }
    }

    /// Counts issued credentials: a resume must never make a second one for a device.
    #[derive(Default)]
    struct CountingIssuer {
        symmetric: bool,
        issued: Mutex<HashMap<String, u32>>,
    }

    impl Issuer for Arc<CountingIssuer> {
        fn issue(&self, id: &RegistrationId) -> Result<NewCredential, StepError> {
            *self
                .issued
                .lock()
                .unwrap()
                .entry(id.to_string())
                .or_default() += 1;
            Ok(if self.symmetric {
                NewCredential::SymmetricKey(Secret::new(format!("SYM-{id}")))
            } else {
                NewCredential::X509 {
                    key_pem: Secret::new(format!("KEY-{id}")),
                    cert_pem: format!("CERT-{id}\n"),
                    chain_pem: format!("CERT-{id}\nCA\n"),
                }
            })
        }
    }

    struct Batch {
        dir: tempfile::TempDir,
        fake: Arc<Fake>,
        issuer: Arc<CountingIssuer>,
    }

    impl Batch {
        fn new(n: usize, symmetric: bool, central_fields: bool) -> Batch {
            let dir = tempfile::tempdir().unwrap();
            let meta = BatchMeta {
                group_id: "g".into(),
                attestation: if symmetric {
                    Attestation::SymmetricKey
                } else {
                    Attestation::X509
                },
                source: "test".into(),
                devices: n as u64,
                created_at: "now".into(),
                issuer: None,
            };
            let mut j = Journal::create(&dir.path().join("j.sqlite"), meta).unwrap();
            let specs: Vec<DeviceSpec> = (0..n)
                .map(|i| DeviceSpec {
                    display_name: central_fields.then(|| format!("Device {i}")),
                    ..DeviceSpec::bare(RegistrationId::new(format!("dev-{i:03}")).unwrap())
                })
                .collect();
            j.plan(&specs).unwrap();
            Batch {
                dir,
                fake: Arc::default(),
                issuer: Arc::new(CountingIssuer {
                    symmetric,
                    ..Default::default()
                }),
            }
        }

        fn run(&self, crash_after: Option<u64>) -> RunStats {
            self.run_with(crash_after, 8)
        }

        fn run_with(&self, crash_after: Option<u64>, concurrency: usize) -> RunStats {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let j = Journal::open(&self.dir.path().join("j.sqlite")).unwrap();
            let writer = JournalWriter::spawn(j);
            let opts = BatchOptions {
                concurrency,
                retry_delay: Duration::from_millis(1),
                out_dir: self.dir.path().join("out"),
                id_scope: "0ne0000TEST".into(),
                crash_after_commits: crash_after,
                ..BatchOptions::default()
            };
            let stats = rt
                .block_on(run_batch(
                    writer,
                    self.fake.clone(),
                    self.issuer.clone(),
                    opts,
                    Arc::new(AtomicBool::new(false)),
                ))
                .unwrap();
            // Dropping the runtime drops the writer: the journal connection closes, as in a
            // crash nothing else is written.
            drop(rt);
            stats
        }

        fn journal(&self) -> Journal {
            Journal::open(&self.dir.path().join("j.sqlite")).unwrap()
        }

        fn assert_all_done_exactly_once(&self, n: usize) {
            let j = self.journal();
            assert_eq!(j.counts().unwrap().done, n as u64);
            let reg = self.fake.registered.lock().unwrap();
            let issued = self.issuer.issued.lock().unwrap();
            for rec in j.all().unwrap() {
                assert_eq!(
                    reg.get(&rec.device_id),
                    Some(&1),
                    "{} registered once",
                    rec.device_id
                );
                assert_eq!(
                    issued.get(&rec.device_id),
                    Some(&1),
                    "{} issued once",
                    rec.device_id
                );
                assert!(rec.secret.is_none());
                let b = bundle::check(&self.dir.path().join("out").join(&rec.device_id)).unwrap();
                assert_eq!(b.assigned_hub, "hub-1");
                assert_eq!(b.id_scope, "0ne0000TEST");
            }
        }
    }

    #[test]
    fn a_clean_batch_does_every_device_once() {
        let b = Batch::new(40, false, true);
        let stats = b.run(None);
        assert_eq!(stats.completed, 40);
        assert!(!stats.interrupted);
        b.assert_all_done_exactly_once(40);
        assert_eq!(b.fake.created.lock().unwrap().len(), 40);
        assert_eq!(b.fake.lookups.load(Ordering::SeqCst), 0);
        let key =
            std::fs::read_to_string(b.dir.path().join("out/dev-007/dev-007_key.pem")).unwrap();
        assert_eq!(key, "KEY-dev-007");
        // A rerun finds nothing to do.
        assert_eq!(b.run(None), RunStats::default());
    }

    #[test]
    fn a_crash_after_any_commit_resumes_to_exactly_once() {
        // 6 devices, X.509 with IoT Central creation: 5 commits each. Crash after every
        // possible number of commits, then resume. One device in flight, so the crash falls
        // exactly after commit k: with several in flight, another device may be between
        // making its key and committing it when the hook fires; that key dies with the
        // process, as in a real crash, and the resume rightly makes a new one, which would
        // defeat the "issued once" count below (the kill -9 end-to-end test covers
        // concurrency).
        // Commits per device: X.509 with IoT Central creation: cert issued, device created,
        // registering, registered, bundle written; symmetric without: the key with
        // registering (one commit), registered, bundle written.
        for (symmetric, per_device) in [(false, 5u64), (true, 3)] {
            let total = 6 * per_device;
            for k in 1..=total + 1 {
                let b = Batch::new(6, symmetric, !symmetric);
                let first = b.run_with(Some(k), 1);
                if k <= total {
                    // The hook fired: the run stopped right after commit k, so exactly the
                    // devices whose every commit came before it are done.
                    assert!(first.interrupted, "k={k}: the crash never happened");
                    assert_eq!(
                        b.journal().counts().unwrap().done,
                        k / per_device,
                        "k={k}: the crash did not fall after commit {k}"
                    );
                } else {
                    assert!(
                        !first.interrupted && first.completed == 6,
                        "k={k}: the batch takes {total} commits, it needs no crash"
                    );
                }
                let second = b.run(None);
                assert!(!second.interrupted);
                b.assert_all_done_exactly_once(6);
            }
        }
    }

    #[test]
    fn the_plan_says_what_is_left_of_each_device() {
        use PlannedAction::*;
        let p = |state, central| {
            let d = PlannedDevice::new("d".into(), state, central);
            (d.action, d.issue_credential, d.create_device, d.register)
        };
        assert_eq!(p(State::Planned, true), (Provision, true, true, true));
        assert_eq!(p(State::Planned, false), (Provision, true, false, true));
        assert_eq!(p(State::CertIssued, true), (Resume, false, true, true));
        assert_eq!(p(State::KeyWritten, false), (Resume, false, false, true));
        assert_eq!(p(State::DeviceCreated, true), (Resume, false, false, true));
        assert_eq!(p(State::Registering, true), (Resume, false, false, true));
        assert_eq!(p(State::Registered, true), (Resume, false, false, false));
        assert_eq!(p(State::BundleWritten, true), (Skip, false, false, false));
    }

    #[test]
    fn the_plan_of_a_journal_is_what_the_resume_then_does() {
        type Calls = HashMap<String, u32>;
        let grew = |before: &Calls, now: &Mutex<Calls>, id: &str| {
            now.lock().unwrap().get(id) != before.get(id)
        };
        for k in [2u64, 5, 8, 13, 17] {
            let b = Batch::new(6, false, true);
            b.run_with(Some(k), 1);
            let plan = plan_journal(&b.journal()).unwrap();
            assert_eq!(plan.len(), 6);
            let created = b.fake.created.lock().unwrap().clone();
            let registered = b.fake.registered.lock().unwrap().clone();
            let issued = b.issuer.issued.lock().unwrap().clone();
            b.run(None);
            for d in &plan {
                let id = d.device_id.as_str();
                let did = (
                    grew(&issued, &b.issuer.issued, id),
                    grew(&created, &b.fake.created, id),
                    grew(&registered, &b.fake.registered, id),
                );
                assert_eq!(
                    (d.issue_credential, d.create_device, d.register),
                    did,
                    "k={k}: {d:?}"
                );
                assert_eq!(
                    d.action == PlannedAction::Skip,
                    d.from == State::BundleWritten
                );
            }
        }
    }

    #[test]
    fn a_lost_answer_is_looked_up_not_registered_again() {
        let b = Batch::new(3, false, false);
        b.fake
            .lose_answer
            .lock()
            .unwrap()
            .insert("dev-001".into(), 1);
        let stats = b.run(None);
        assert_eq!(stats.completed, 3);
        b.assert_all_done_exactly_once(3);
        assert_eq!(b.fake.lookups.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn failures_are_recorded_and_retried_on_resume() {
        let b = Batch::new(5, true, false);
        b.fake.fail_register.lock().unwrap().extend([
            ("dev-001".to_string(), (1, true)),
            ("dev-003".to_string(), (10, false)),
        ]);
        let stats = b.run(None);
        assert_eq!(
            (stats.completed, stats.failed),
            (4, 1),
            "a transient failure is retried in-run"
        );
        let f = b.journal().failures().unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].0, "dev-003");
        assert_eq!(f[0].1, State::Registering);
        assert_eq!(f[0].3, 1, "a permanent failure is not retried in-run");
        // The cause goes away; a resume finishes the device.
        b.fake.fail_register.lock().unwrap().clear();
        let stats = b.run(None);
        assert_eq!(stats.completed, 1);
        b.assert_all_done_exactly_once(5);
        assert_eq!(b.journal().get("dev-003").unwrap().unwrap().attempts, 1);
    }
}
