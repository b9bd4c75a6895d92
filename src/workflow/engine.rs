//! The batch engine every per-device flow runs on: provisioning, renewal and revocation are
//! each a [`Job`] (which devices are left, what one attempt at one device does), and this
//! module walks the journal's pending devices through them with bounded concurrency, retries
//! with backoff, Ctrl-C and the crash hook of the tests.
//!
//! One engine, not one loop per flow, because the properties that make a factory line safe
//! live here and must hold for every flow alike: a step is committed before the next one
//! starts ([`Run::commit`]), a stop lets in-flight devices finish their current step and
//! nothing else, a per-device failure is recorded in the journal and the batch goes on, and
//! the crash hook stops the whole run after an exact number of commits, so a unit test can
//! crash a flow between any two of its steps.

use super::journal::JournalError;
use std::future::Future;
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

/// How one attempt at one device ended, when it did not succeed.
#[derive(Debug)]
pub enum AttemptError {
    /// A step failed (the service, the certificate module, the disk).
    Step(StepError),
    /// The journal failed; an illegal transition fails the device, anything else the run.
    Journal(JournalError),
    /// The run is stopping.
    Stopped,
}

impl From<StepError> for AttemptError {
    fn from(e: StepError) -> Self {
        AttemptError::Step(e)
    }
}

/// A per-device flow: the devices it has left and what one attempt does.
///
/// The engine keeps, for each device in its turn, whether a request may already have reached
/// the service (`maybe_sent`): true when the device is found in its flow's in-doubt state
/// (recorded before the request was sent), and after a failed attempt that left it there; a
/// flow then looks the outcome up before sending again.
pub trait Job: Send + Sync + 'static {
    /// One device's journal record (whatever the flow's attempts read and update).
    type Item: Send + 'static;

    /// The item's place in the batch (pages are read after it).
    fn seq(item: &Self::Item) -> i64;

    /// The device id, for the run's statistics.
    fn device_id(item: &Self::Item) -> &str;

    /// Whether the device stands where a request may have reached the service.
    fn in_doubt(item: &Self::Item) -> bool;

    /// Up to `limit` devices not done yet, in batch order, after `after_seq`.
    fn pending(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Self::Item>, JournalError>> + Send;

    /// Runs the device's remaining steps, committing each through [`Run::commit`]; sets
    /// `maybe_sent` before it sends a request whose outcome it could not learn.
    fn attempt(
        &self,
        run: &Run,
        item: &mut Self::Item,
        maybe_sent: &mut bool,
    ) -> impl Future<Output = Result<(), AttemptError>> + Send;

    /// Records that the device failed `attempts` times in this run, with the last reason.
    fn record_failure(
        &self,
        item: &Self::Item,
        reason: &str,
        attempts: u32,
    ) -> impl Future<Output = Result<(), JournalError>> + Send;
}

/// How the engine runs a job.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Devices in flight at once.
    pub concurrency: usize,
    /// Attempts per device in this run before it is recorded as failed.
    pub max_attempts: u32,
    /// First backoff between attempts (doubles).
    pub retry_delay: Duration,
    /// Show a progress bar on stderr (when it is a terminal).
    pub progress: bool,
    /// Test hook: stop the whole run (as a crash would) after this many journal commits.
    pub crash_after_commits: Option<u64>,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Devices that finished in this run.
    pub completed: u64,
    /// Their ids (the report tells them from devices done by earlier runs).
    pub finished: std::collections::HashSet<String>,
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

/// What every attempt of a run shares: the stop flag and the commit count of the crash hook.
#[derive(Debug)]
pub struct Run {
    stop: AtomicBool,
    commits: AtomicU64,
    crash_after: Option<u64>,
}

impl Run {
    /// Commits one journal write; refuses to start it when the run is stopping, and stops the
    /// run when the crash hook's count is reached.
    pub async fn commit<F>(&self, write: F) -> Result<(), AttemptError>
    where
        F: Future<Output = Result<(), JournalError>>,
    {
        if self.stop.load(Ordering::SeqCst) {
            return Err(AttemptError::Stopped);
        }
        write.await.map_err(AttemptError::Journal)?;
        let n = self.commits.fetch_add(1, Ordering::SeqCst) + 1;
        if self.crash_after.is_some_and(|limit| n >= limit) {
            self.stop.store(true, Ordering::SeqCst);
            return Err(AttemptError::Stopped);
        }
        Ok(())
    }

    /// Whether the run is stopping (a crash of the hook).
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// How one device's turn in a run ended.
enum Ended {
    Done,
    Failed,
    Stopped,
}

/// Runs every pending device of `job`: `left` devices are expected (for the progress bar).
/// Returns when all have been tried, or when `stop` becomes true (in-flight devices finish
/// their current step first).
pub async fn drive<J: Job>(
    job: Arc<J>,
    left: u64,
    opts: &EngineOptions,
    stop: Arc<AtomicBool>,
) -> Result<RunStats, BatchError> {
    let bar = progress_bar(opts.progress, left);
    let concurrency = opts.concurrency.max(1);
    let run = Arc::new(Run {
        stop: AtomicBool::new(false),
        commits: AtomicU64::new(0),
        crash_after: opts.crash_after_commits,
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
        let items = job.pending(after, page).await?;
        let Some(last) = items.last() else { break };
        after = J::seq(last);
        for item in items {
            let permit = tokio::select! {
                p = semaphore.clone().acquire_owned() => p.map_err(|e| BatchError::Worker(e.to_string()))?,
                _ = wait_for(&stop) => { stats.interrupted = true; break 'pages; }
            };
            if run.stopping() {
                stats.interrupted = true;
                break 'pages;
            }
            let (job, run, opts) = (job.clone(), run.clone(), opts.clone());
            tasks.spawn(async move {
                let _permit = permit;
                let id = J::device_id(&item).to_owned();
                process(&*job, &run, &opts, item)
                    .await
                    .map(|ended| (id, ended))
            });
            while let Some(r) = tasks.try_join_next() {
                collect(r, &mut stats)?;
            }
        }
    }
    while let Some(r) = tasks.join_next().await {
        collect(r, &mut stats)?;
    }
    if stop.load(Ordering::SeqCst) || run.stopping() {
        stats.interrupted = true;
    }
    bar.finish_and_clear();
    Ok(stats)
}

async fn process<J: Job>(
    job: &J,
    run: &Run,
    opts: &EngineOptions,
    mut item: J::Item,
) -> Result<Ended, BatchError> {
    let mut attempts = 0u32;
    let mut maybe_sent = J::in_doubt(&item);
    loop {
        attempts += 1;
        match job.attempt(run, &mut item, &mut maybe_sent).await {
            Ok(()) => return Ok(Ended::Done),
            Err(AttemptError::Stopped) => return Ok(Ended::Stopped),
            Err(AttemptError::Journal(JournalError::IllegalTransition { .. })) => {
                // Someone else moved this device (should not happen with one process per
                // journal): report it as a failure of this device.
                job.record_failure(&item, "journal state changed under us", attempts)
                    .await?;
                return Ok(Ended::Failed);
            }
            Err(AttemptError::Journal(e)) => return Err(e.into()),
            Err(AttemptError::Step(e)) => {
                maybe_sent |= J::in_doubt(&item);
                if e.retryable && attempts < opts.max_attempts {
                    let delay = opts.retry_delay * 2u32.saturating_pow(attempts - 1);
                    tracing::debug!(
                        device = J::device_id(&item),
                        "attempt {attempts} failed, retrying: {e}"
                    );
                    tokio::time::sleep(delay).await;
                    continue;
                }
                job.record_failure(&item, &e.message, attempts).await?;
                return Ok(Ended::Failed);
            }
        }
    }
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
