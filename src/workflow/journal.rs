//! The batch journal: a SQLite file that records where every device of a batch stands, so
//! that after kill -9, a power cut or Ctrl-C a rerun with `--resume` finishes the batch with
//! every device registered exactly once and no credential lost or made twice.
//!
//! Rules that make that true:
//! - each device moves through a fixed sequence of [`State`]s, forward only; a transition is
//!   an `UPDATE … WHERE state = <expected>`, so a stale or doubled step is refused;
//! - a transition is committed (WAL, `synchronous=FULL`, so fsynced) before the step that
//!   depends on it starts: the private key is in the journal before its certificate is made,
//!   `registering` is recorded before DPS is called, and so on;
//! - the private key (or derived symmetric key) is stored in the same transaction that
//!   records it, so a resume always finds the credential it made and never makes another.
//!   The file is created mode 0600 (SQLite gives its `-wal` file the same mode) and the key
//!   is erased from the journal once the device's bundle is written;
//! - in a CSR batch the devices keep their keys: the journal holds each device's CSR (public)
//!   with its SHA-256 and the certificate issued for it, and never a private key.
//!
//! The schema only grows: columns added since a journal was made are added when it is
//! opened (see `migrate`), so an older journal resumes under a newer iotc.
//!
//! Committing one transaction per step would cap a batch at the disk's fsync rate, so
//! [`JournalWriter`] runs the connection on its own thread and commits whatever transitions
//! are waiting in one transaction (group commit); each caller still waits for the commit
//! that holds its transition.

use crate::secret::Secret;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::str::FromStr;

const SCHEMA_VERSION: i64 = 1;

/// Where a device stands. The order is the order of the work; steps that do not apply
/// (a certificate for a symmetric-key device, the IoT Central device when the manifest gives
/// nothing to set) are skipped, never revisited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// In the journal, nothing done yet.
    Planned,
    /// Private key (or derived symmetric key) made and stored.
    KeyWritten,
    /// Device certificate issued and stored.
    CertIssued,
    /// The IoT Central device exists with the manifest's fields.
    DeviceCreated,
    /// A DPS registration may have been sent: a resume must look it up before sending another.
    Registering,
    /// DPS assigned the device to a hub.
    Registered,
    /// The device's bundle folder is written: the device is done.
    BundleWritten,
}

impl State {
    /// Every state, in order.
    pub const ALL: [State; 7] = [
        State::Planned,
        State::KeyWritten,
        State::CertIssued,
        State::DeviceCreated,
        State::Registering,
        State::Registered,
        State::BundleWritten,
    ];

    /// The name stored in the journal and shown in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Planned => "planned",
            State::KeyWritten => "key_written",
            State::CertIssued => "cert_issued",
            State::DeviceCreated => "device_created",
            State::Registering => "registering",
            State::Registered => "registered",
            State::BundleWritten => "bundle_written",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = JournalError;
    fn from_str(s: &str) -> Result<State, JournalError> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| JournalError::Corrupt(format!("unknown state {s:?}")))
    }
}

/// How the devices of the batch attest to DPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Attestation {
    /// X.509 certificates signed by the group's CA.
    X509,
    /// Keys derived from the group's symmetric key.
    SymmetricKey,
}

/// What a batch is: fixed when the journal is created and checked on resume, so a journal
/// cannot be resumed against another group or another manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchMeta {
    /// The enrollment group.
    pub group_id: String,
    /// X.509 or symmetric key.
    pub attestation: Attestation,
    /// Where the devices came from (manifest path or `--count/--prefix`).
    pub source: String,
    /// How many devices.
    pub devices: u64,
    /// When the batch was planned (RFC 3339).
    pub created_at: String,
    /// X.509: SHA-256 thumbprint of the CA certificate that signs the batch's device
    /// certificates, so a resume with another CA is refused (absent in older journals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// A CSR batch: the devices made their own keys and sent CSRs; the station signs them and
    /// creates the IoT Central devices, and the devices register themselves later.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub csr: bool,
}

/// One device's row.
#[derive(Debug, Clone)]
pub struct DeviceRecord {
    /// Order in the batch (manifest order).
    pub seq: i64,
    /// Device id = registration id.
    pub device_id: String,
    /// Manifest line (0 when generated).
    pub line: u64,
    /// Display name from the manifest.
    pub display_name: Option<String>,
    /// Template from the manifest.
    pub template: Option<String>,
    /// Organization from the manifest.
    pub organization: Option<String>,
    /// Simulated flag from the manifest.
    pub simulated: Option<bool>,
    /// The last step completed.
    pub state: State,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Why the last attempt failed (None when it did not, or the device moved on since).
    pub error: Option<String>,
    /// PKCS#8 PEM private key (X.509) or derived key (symmetric); erased once bundled.
    pub secret: Option<Secret>,
    /// Device certificate PEM.
    pub cert_pem: Option<String>,
    /// Leaf + intermediates PEM.
    pub chain_pem: Option<String>,
    /// Hub DPS assigned.
    pub assigned_hub: Option<String>,
    /// Device id DPS returned.
    pub dps_device_id: Option<String>,
    /// How many times a DPS registration was started for this device.
    pub register_calls: u32,
    /// CSR batches: the device's certificate signing request, DER.
    pub csr: Option<Vec<u8>>,
    /// CSR batches: SHA-256 of the CSR, lowercase hex.
    pub csr_sha256: Option<String>,
}

/// Where one device stands, without its credential: what reports and dry-run plans read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceStatus {
    /// Device id = registration id.
    pub device_id: String,
    /// The last step completed.
    pub state: State,
    /// Why the last attempt failed (None when it did not, or the device moved on since).
    pub error: Option<String>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Whether the manifest gives IoT Central fields, so the device is created there first.
    pub central_fields: bool,
}

/// A forward move of one device, with what the step produced.
#[derive(Debug, Clone, Default)]
pub struct Transition {
    /// The device.
    pub device_id: String,
    /// The state the caller believes the device is in.
    pub from: Option<State>,
    /// The new state.
    pub to: Option<State>,
    /// A key to store (only with `to = KeyWritten`).
    pub secret: Option<Secret>,
    /// A certificate to store.
    pub cert_pem: Option<String>,
    /// A chain to store.
    pub chain_pem: Option<String>,
    /// The assigned hub.
    pub assigned_hub: Option<String>,
    /// The device id DPS returned.
    pub dps_device_id: Option<String>,
}

impl Transition {
    /// A bare move from `from` to `to`.
    pub fn new(device_id: impl Into<String>, from: State, to: State) -> Transition {
        Transition {
            device_id: device_id.into(),
            from: Some(from),
            to: Some(to),
            ..Transition::default()
        }
    }
}

/// A change to the journal.
#[derive(Debug, Clone)]
pub enum Update {
    /// Move a device forward.
    Advance(Transition),
    /// Record that an attempt failed; the device keeps its state and is retried on resume.
    Fail {
        /// The device.
        device_id: String,
        /// Why.
        reason: String,
        /// How many attempts this run made.
        attempts: u32,
    },
}

/// Counts of devices per outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Devices in the batch.
    pub total: u64,
    /// Devices with their bundle written.
    pub done: u64,
    /// Devices whose last attempt failed.
    pub failed: u64,
    /// Devices neither done nor failed.
    pub pending: u64,
}

/// A journal operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// Creating the journal file failed (for example it already exists).
    #[error("cannot create journal {path}")]
    Create {
        /// The journal.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The journal to resume does not exist.
    #[error("no journal at {0} to resume")]
    Missing(PathBuf),
    /// SQLite failed.
    #[error("journal database error")]
    Sql(#[from] rusqlite::Error),
    /// The journal holds something this version does not understand.
    #[error("journal is corrupt or from another version: {0}")]
    Corrupt(String),
    /// A transition did not start from the state the journal holds.
    #[error("device {device_id}: cannot move to {to}: the journal has it in state {actual}")]
    IllegalTransition {
        /// The device.
        device_id: String,
        /// The requested state.
        to: String,
        /// The state in the journal ("absent" when unknown).
        actual: String,
    },
    /// The journal belongs to another batch.
    #[error("journal belongs to another batch: {0}")]
    Mismatch(String),
    /// The writer thread is gone (it panicked or the journal was closed).
    #[error("the journal writer stopped")]
    WriterGone,
}

/// Planning a batch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The source could not be read (it was valid when checked, so it changed since).
    #[error(transparent)]
    Manifest(super::manifest::ManifestError),
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A device's CSR could not be read (it was valid when checked, so it changed since).
    #[error("{0}")]
    Csr(String),
}

/// The statement that plans a device (`OR IGNORE`: skip ids already planned).
fn insert_sql(ignore_existing: bool) -> String {
    format!(
        "INSERT {} INTO devices(device_id, line, display_name, template, organization,
                                simulated, csr, csr_sha256)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        if ignore_existing { "OR IGNORE" } else { "" }
    )
}

/// Plans one device with [`insert_sql`]'s statement, with its CSR (DER, SHA-256) if any.
fn insert_device(
    stmt: &mut rusqlite::Statement<'_>,
    s: &super::manifest::DeviceSpec,
    csr: Option<&(Vec<u8>, String)>,
) -> rusqlite::Result<usize> {
    stmt.execute(params![
        s.device_id.as_str(),
        s.line as i64,
        s.display_name,
        s.template,
        s.organization.as_ref().map(|o| o.as_str()),
        s.simulated.map(i64::from),
        csr.map(|c| c.0.as_slice()),
        csr.map(|c| c.1.as_str()),
    ])
}

/// Reads the CSR of a device while a CSR batch is planned: its DER and SHA-256 (lowercase
/// hex), or why not.
pub type ReadCsr<'a> =
    dyn FnMut(&super::manifest::DeviceSpec) -> Result<(Vec<u8>, String), String> + 'a;

/// The journal, on one connection. Use [`JournalWriter`] from async code.
pub struct Journal {
    conn: Connection,
    path: PathBuf,
    meta: BatchMeta,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .field("meta", &self.meta)
            .finish()
    }
}

fn configure(conn: &Connection) -> Result<(), JournalError> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(())
}

/// Columns added to `devices` after the first schema, with their types: a journal made
/// before one was added gets it when opened (empty for the devices it already holds).
const ADDED_COLUMNS: &[(&str, &str)] = &[("csr", "BLOB"), ("csr_sha256", "TEXT")];

fn migrate(conn: &Connection) -> Result<(), JournalError> {
    let mut have = std::collections::HashSet::new();
    {
        let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('devices')")?;
        for name in stmt.query_map([], |r| r.get::<_, String>(0))? {
            have.insert(name?);
        }
    }
    if have.is_empty() {
        return Ok(()); // not a journal: `open` says so next
    }
    for (name, ty) in ADDED_COLUMNS {
        if !have.contains(*name) {
            conn.execute_batch(&format!("ALTER TABLE devices ADD COLUMN {name} {ty}"))?;
        }
    }
    Ok(())
}

const COLS: &str = "seq, device_id, line, display_name, template, organization, simulated, \
                    state, attempts, error, secret, cert_pem, chain_pem, assigned_hub, \
                    dps_device_id, register_calls, csr, csr_sha256";

fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<(DeviceRecord, String)> {
    let state: String = row.get(7)?;
    let simulated: Option<i64> = row.get(6)?;
    let secret: Option<String> = row.get(10)?;
    Ok((
        DeviceRecord {
            seq: row.get(0)?,
            device_id: row.get(1)?,
            line: row.get::<_, i64>(2)?.max(0) as u64,
            display_name: row.get(3)?,
            template: row.get(4)?,
            organization: row.get(5)?,
            simulated: simulated.map(|v| v != 0),
            state: State::Planned,
            attempts: row.get::<_, i64>(8)?.max(0) as u32,
            error: row.get(9)?,
            secret: secret.map(Secret::new),
            cert_pem: row.get(11)?,
            chain_pem: row.get(12)?,
            assigned_hub: row.get(13)?,
            dps_device_id: row.get(14)?,
            register_calls: row.get::<_, i64>(15)?.max(0) as u32,
            csr: row.get(16)?,
            csr_sha256: row.get(17)?,
        },
        state,
    ))
}

fn finish_record((mut rec, state): (DeviceRecord, String)) -> Result<DeviceRecord, JournalError> {
    rec.state = state.parse()?;
    Ok(rec)
}

impl Journal {
    /// Creates a new journal (mode 0600); fails if the file exists.
    pub fn create(path: &Path, meta: BatchMeta) -> Result<Journal, JournalError> {
        // The journal appears whole or not at all: it is built under a temporary name (rollback
        // journal mode, no WAL yet), fsynced, then linked to its name, which fails if that name
        // exists. A kill during creation leaves no half journal for --resume to trip on.
        let create_err = |source: std::io::Error| JournalError::Create {
            path: path.to_owned(),
            source,
        };
        if path.exists() {
            return Err(create_err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the file exists",
            )));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "journal".into());
        let tmp = path.with_file_name(format!(".{name}.creating"));
        for leftover in ["", "-journal", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{leftover}", tmp.display()));
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        options.open(&tmp).map_err(create_err)?;
        {
            let conn = Connection::open(&tmp)?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.execute_batch(
                "BEGIN;
                 CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE devices (
                     seq INTEGER PRIMARY KEY,
                     device_id TEXT NOT NULL UNIQUE COLLATE NOCASE,
                     line INTEGER NOT NULL,
                     display_name TEXT, template TEXT, organization TEXT, simulated INTEGER,
                     state TEXT NOT NULL DEFAULT 'planned',
                     attempts INTEGER NOT NULL DEFAULT 0,
                     error TEXT,
                     secret TEXT, cert_pem TEXT, chain_pem TEXT,
                     assigned_hub TEXT, dps_device_id TEXT,
                     register_calls INTEGER NOT NULL DEFAULT 0,
                     updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
                     csr BLOB, csr_sha256 TEXT
                 );
                 CREATE INDEX devices_state ON devices(state);",
            )?;
            let meta_json =
                serde_json::to_string(&meta).map_err(|e| JournalError::Corrupt(e.to_string()))?;
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('schema', ?1), ('batch', ?2)",
                params![SCHEMA_VERSION.to_string(), meta_json],
            )?;
            conn.execute_batch("COMMIT;")?;
        }
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(create_err)?;
        let linked = std::fs::hard_link(&tmp, path).map_err(create_err);
        let _ = std::fs::remove_file(&tmp);
        linked?;
        #[cfg(unix)]
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(create_err)?;
        }
        Journal::open(path)
    }

    /// Opens an existing journal.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        if !path.exists() {
            return Err(JournalError::Missing(path.to_owned()));
        }
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&conn)?;
        migrate(&conn)?;
        let get = |key: &str| -> Result<Option<String>, JournalError> {
            Ok(conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()?)
        };
        let schema = get("schema").map_err(|_| {
            JournalError::Corrupt(format!("{} is not an iotc journal", path.display()))
        })?;
        if schema.as_deref() != Some(&SCHEMA_VERSION.to_string()) {
            return Err(JournalError::Corrupt(format!(
                "schema version {schema:?}, expected {SCHEMA_VERSION}"
            )));
        }
        let meta = get("batch")?.ok_or_else(|| JournalError::Corrupt("no batch record".into()))?;
        let meta: BatchMeta =
            serde_json::from_str(&meta).map_err(|e| JournalError::Corrupt(e.to_string()))?;
        Ok(Journal {
            conn,
            path: path.to_owned(),
            meta,
        })
    }

    /// The batch this journal belongs to.
    pub fn meta(&self) -> &BatchMeta {
        &self.meta
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records devices as planned, in one transaction per call. Ids already in the journal
    /// are an error (the manifest was validated, so this only happens on misuse).
    pub fn plan<'a>(
        &mut self,
        specs: impl IntoIterator<Item = &'a super::manifest::DeviceSpec>,
    ) -> Result<u64, JournalError> {
        let tx = self.conn.transaction()?;
        let mut n = 0;
        {
            let mut stmt = tx.prepare_cached(&insert_sql(false))?;
            for s in specs {
                insert_device(&mut stmt, s, None)?;
                n += 1;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    /// Plans every device of a validated source in one transaction (a crash while planning
    /// leaves no half plan). With `ignore_existing`, ids already in the journal are skipped
    /// (an onboarding rerun that adds devices); otherwise they are an error.
    pub fn plan_from(
        &mut self,
        source: &super::manifest::Source,
        ignore_existing: bool,
    ) -> Result<u64, PlanError> {
        self.plan_devices(source, ignore_existing, None)
    }

    /// Plans a CSR batch: every device of a validated source with its CSR, which `csr` reads
    /// (DER and its SHA-256, or why not), in one transaction.
    pub fn plan_with_csrs(
        &mut self,
        source: &super::manifest::Source,
        csr: &mut ReadCsr<'_>,
    ) -> Result<u64, PlanError> {
        self.plan_devices(source, false, Some(csr))
    }

    fn plan_devices(
        &mut self,
        source: &super::manifest::Source,
        ignore_existing: bool,
        mut csr: Option<&mut ReadCsr<'_>>,
    ) -> Result<u64, PlanError> {
        let tx = self.conn.transaction().map_err(JournalError::from)?;
        let mut n = 0u64;
        {
            let mut stmt = tx
                .prepare(&insert_sql(ignore_existing))
                .map_err(JournalError::from)?;
            source
                .for_each(|s| {
                    let request = match csr.as_mut() {
                        Some(read) => Some(read(&s).map_err(PlanError::Csr)?),
                        None => None,
                    };
                    n += insert_device(&mut stmt, &s, request.as_ref())
                        .map_err(|e| PlanError::Journal(e.into()))? as u64;
                    Ok::<(), PlanError>(())
                })
                .map_err(|e| match e {
                    super::manifest::ScanError::Manifest(m) => PlanError::Manifest(m),
                    super::manifest::ScanError::Sink(e) => e,
                })?;
        }
        tx.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('planned', '1')",
            [],
        )
        .map_err(JournalError::from)?;
        tx.commit().map_err(JournalError::from)?;
        Ok(n)
    }

    /// Whether a plan was committed (false when a run died between creating the journal and
    /// planning its devices: resume must plan them).
    pub fn is_planned(&self) -> Result<bool, JournalError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'planned'", [], |r| {
                r.get::<_, String>(0)
            })
            .optional()?
            .is_some())
    }

    /// Up to `limit` devices not yet done, in batch order, after `after_seq`.
    pub fn pending(&self, after_seq: i64, limit: usize) -> Result<Vec<DeviceRecord>, JournalError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLS} FROM devices WHERE seq > ?1 AND state != 'bundle_written'
             ORDER BY seq LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![after_seq, limit as i64], row_to_record)?;
        rows.map(|r| finish_record(r?)).collect()
    }

    /// One device, if the journal has it.
    pub fn get(&self, device_id: &str) -> Result<Option<DeviceRecord>, JournalError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {COLS} FROM devices WHERE device_id = ?1"))?;
        stmt.query_row([device_id], row_to_record)
            .optional()?
            .map(finish_record)
            .transpose()
    }

    /// Every device, in batch order (for reports and tests; it reads the whole table).
    pub fn all(&self) -> Result<Vec<DeviceRecord>, JournalError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {COLS} FROM devices ORDER BY seq"))?;
        let rows = stmt.query_map([], row_to_record)?;
        rows.map(|r| finish_record(r?)).collect()
    }

    /// Every device's status, in batch order. Reads no key or certificate, so a report of a
    /// large batch costs a few dozen bytes per device.
    pub fn statuses(&self) -> Result<Vec<DeviceStatus>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT device_id, state, error, attempts,
                    display_name IS NOT NULL OR template IS NOT NULL
                    OR organization IS NOT NULL OR simulated IS NOT NULL
             FROM devices ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, bool>(4)?,
            ))
        })?;
        rows.map(|r| {
            let (device_id, state, error, attempts, central_fields) = r?;
            Ok(DeviceStatus {
                device_id,
                state: state.parse()?,
                error,
                attempts: attempts.max(0) as u32,
                central_fields,
            })
        })
        .collect()
    }

    /// Devices whose last attempt failed: (device id, state, reason, attempts).
    pub fn failures(&self) -> Result<Vec<(String, State, String, u32)>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT device_id, state, error, attempts FROM devices
             WHERE error IS NOT NULL AND state != 'bundle_written' ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        rows.map(|r| {
            let (id, st, err, n) = r?;
            Ok((id, st.parse()?, err, n.max(0) as u32))
        })
        .collect()
    }

    /// Devices per outcome.
    pub fn counts(&self) -> Result<Counts, JournalError> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*),
                    COALESCE(SUM(state = 'bundle_written'), 0),
                    COALESCE(SUM(state != 'bundle_written' AND error IS NOT NULL), 0)
             FROM devices",
            [],
            |r| {
                let total: i64 = r.get(0)?;
                let done: i64 = r.get(1)?;
                let failed: i64 = r.get(2)?;
                Ok(Counts {
                    total: total as u64,
                    done: done as u64,
                    failed: failed as u64,
                    pending: (total - done - failed).max(0) as u64,
                })
            },
        )?)
    }

    /// Applies updates in one transaction; returns one result per update. An illegal
    /// transition fails alone; a database error fails them all.
    pub fn apply(
        &mut self,
        updates: &[Update],
    ) -> Result<Vec<Result<(), JournalError>>, JournalError> {
        let tx = self.conn.transaction()?;
        let mut results = Vec::with_capacity(updates.len());
        for u in updates {
            results.push(apply_one(&tx, u)?);
        }
        tx.commit()?;
        Ok(results)
    }

    fn apply_pending(
        &mut self,
        writes: Vec<Pending>,
    ) -> Result<Vec<Result<(), JournalError>>, JournalError> {
        let tx = self.conn.transaction()?;
        let mut results = Vec::with_capacity(writes.len());
        for w in writes {
            results.push(match w {
                Pending::Update(u) => apply_one(&tx, &u)?,
                Pending::Exec(write) => match write(&tx) {
                    Err(JournalError::Sql(e)) => return Err(JournalError::Sql(e)),
                    other => other,
                },
            });
        }
        tx.commit()?;
        Ok(results)
    }

    /// The connection, for the lifecycle tables' reads ([`super::ledger`]).
    pub(super) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The connection, for the lifecycle tables' migration and planning.
    pub(super) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

fn apply_one(
    tx: &rusqlite::Transaction<'_>,
    u: &Update,
) -> Result<Result<(), JournalError>, JournalError> {
    match u {
        Update::Fail {
            device_id,
            reason,
            attempts,
        } => {
            let n = tx
                .prepare_cached(
                    "UPDATE devices SET error = ?2, attempts = attempts + ?3,
                     updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
                 WHERE device_id = ?1",
                )?
                .execute(params![device_id, reason, *attempts as i64])?;
            Ok(if n == 1 {
                Ok(())
            } else {
                Err(JournalError::IllegalTransition {
                    device_id: device_id.clone(),
                    to: "failed".into(),
                    actual: "absent".into(),
                })
            })
        }
        Update::Advance(t) => {
            let (Some(from), Some(to)) = (t.from, t.to) else {
                return Ok(Err(JournalError::Corrupt(
                    "transition without states".into(),
                )));
            };
            let actual = |tx: &rusqlite::Transaction<'_>| -> Result<String, JournalError> {
                Ok(tx
                    .query_row(
                        "SELECT state FROM devices WHERE device_id = ?1",
                        [&t.device_id],
                        |r| r.get::<_, String>(0),
                    )
                    .optional()?
                    .unwrap_or_else(|| "absent".into()))
            };
            if to <= from {
                return Ok(Err(JournalError::IllegalTransition {
                    device_id: t.device_id.clone(),
                    to: to.to_string(),
                    actual: actual(tx)?,
                }));
            }
            // The key is erased once the bundle holds it; everything else only ever gets set.
            let n = tx
                .prepare_cached(
                    "UPDATE devices SET state = ?3, error = NULL,
                         secret = CASE WHEN ?3 = 'bundle_written' THEN NULL ELSE COALESCE(?4, secret) END,
                         cert_pem = COALESCE(?5, cert_pem), chain_pem = COALESCE(?6, chain_pem),
                         assigned_hub = COALESCE(?7, assigned_hub),
                         dps_device_id = COALESCE(?8, dps_device_id),
                         register_calls = register_calls + (?3 = 'registering'),
                         updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
                     WHERE device_id = ?1 AND state = ?2",
                )?
                .execute(params![
                    t.device_id,
                    from.as_str(),
                    to.as_str(),
                    t.secret.as_ref().map(Secret::expose),
                    t.cert_pem,
                    t.chain_pem,
                    t.assigned_hub,
                    t.dps_device_id,
                ])?;
            Ok(if n == 1 {
                Ok(())
            } else {
                Err(JournalError::IllegalTransition {
                    device_id: t.device_id.clone(),
                    to: to.to_string(),
                    actual: actual(tx)?,
                })
            })
        }
    }
}

type Reply<T> = tokio::sync::oneshot::Sender<Result<T, JournalError>>;

/// A write of the lifecycle flows, run inside the writer's transaction: it returns an
/// error other than [`JournalError::Sql`] only before writing anything (that error fails it
/// alone); an SQL error rolls back the whole group commit.
pub type Write = Box<dyn FnOnce(&rusqlite::Transaction<'_>) -> Result<(), JournalError> + Send>;

/// A read of the lifecycle flows, answered between group commits.
pub type Read = Box<dyn FnOnce(&Journal) + Send>;

enum Request {
    Apply(Update, Reply<()>),
    Exec(Write, Reply<()>),
    Read(Read),
    Pending(i64, usize, Reply<Vec<DeviceRecord>>),
    Counts(Reply<Counts>),
    Failures(Reply<Vec<(String, State, String, u32)>>),
    Statuses(Reply<Vec<DeviceStatus>>),
}

/// The journal on its own thread, for async callers: transitions waiting at the same time
/// are committed together, and each caller resumes only once its transition is durable.
#[derive(Clone, Debug)]
pub struct JournalWriter {
    tx: std::sync::mpsc::Sender<Request>,
}

/// The most transitions committed in one transaction.
const GROUP_COMMIT_MAX: usize = 1024;

impl JournalWriter {
    /// Moves the journal to a new thread. The thread ends when every writer is dropped.
    pub fn spawn(journal: Journal) -> JournalWriter {
        let (tx, rx) = std::sync::mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("iotc-journal".into())
            .spawn(move || writer_loop(journal, rx))
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!("cannot start the journal thread: {e}"));
        JournalWriter { tx }
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, JournalError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(make(reply))
            .map_err(|_| JournalError::WriterGone)?;
        rx.await.map_err(|_| JournalError::WriterGone)?
    }

    /// Applies one update; returns once it is committed.
    pub async fn apply(&self, update: Update) -> Result<(), JournalError> {
        self.ask(|r| Request::Apply(update, r)).await
    }

    /// Moves a device forward; returns once it is committed.
    pub async fn advance(&self, t: Transition) -> Result<(), JournalError> {
        self.apply(Update::Advance(t)).await
    }

    /// See [`Journal::pending`].
    pub async fn pending(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<DeviceRecord>, JournalError> {
        self.ask(|r| Request::Pending(after_seq, limit, r)).await
    }

    /// See [`Journal::counts`].
    pub async fn counts(&self) -> Result<Counts, JournalError> {
        self.ask(Request::Counts).await
    }

    /// See [`Journal::failures`].
    pub async fn failures(&self) -> Result<Vec<(String, State, String, u32)>, JournalError> {
        self.ask(Request::Failures).await
    }

    /// See [`Journal::statuses`].
    pub async fn statuses(&self) -> Result<Vec<DeviceStatus>, JournalError> {
        self.ask(Request::Statuses).await
    }

    /// Runs `write` in the next group commit; returns once it is committed.
    pub async fn exec(&self, write: Write) -> Result<(), JournalError> {
        self.ask(|r| Request::Exec(write, r)).await
    }

    /// Runs `read` on the journal between commits and returns what it returns.
    pub async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Journal) -> Result<T, JournalError> + Send + 'static,
    ) -> Result<T, JournalError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Request::Read(Box::new(move |j| {
                let _ = reply.send(read(j));
            })))
            .map_err(|_| JournalError::WriterGone)?;
        rx.await.map_err(|_| JournalError::WriterGone)?
    }
}

/// A write waiting for the next group commit.
enum Pending {
    Update(Update),
    Exec(Write),
}

fn writer_loop(mut journal: Journal, rx: std::sync::mpsc::Receiver<Request>) {
    while let Ok(first) = rx.recv() {
        let mut batch: Vec<(Pending, Reply<()>)> = Vec::new();
        let mut next = Some(first);
        // Gather every write already waiting; answer reads in order around them.
        while let Some(req) = next.take() {
            match req {
                Request::Apply(u, r) => batch.push((Pending::Update(u), r)),
                Request::Exec(w, r) => batch.push((Pending::Exec(w), r)),
                other => {
                    flush(&mut journal, &mut batch);
                    answer_read(&journal, other);
                }
            }
            if batch.len() < GROUP_COMMIT_MAX {
                next = rx.try_recv().ok();
            }
        }
        flush(&mut journal, &mut batch);
    }
}

fn flush(journal: &mut Journal, batch: &mut Vec<(Pending, Reply<()>)>) {
    if batch.is_empty() {
        return;
    }
    let (writes, replies): (Vec<Pending>, Vec<Reply<()>>) =
        std::mem::take(batch).into_iter().unzip();
    match journal.apply_pending(writes) {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            let text = e.to_string();
            let mut replies = replies.into_iter();
            if let Some(first) = replies.next() {
                let _ = first.send(Err(e));
            }
            for reply in replies {
                let _ = reply.send(Err(JournalError::Corrupt(format!("commit failed: {text}"))));
            }
        }
    }
}

fn answer_read(journal: &Journal, req: Request) {
    match req {
        Request::Pending(after, limit, r) => {
            let _ = r.send(journal.pending(after, limit));
        }
        Request::Counts(r) => {
            let _ = r.send(journal.counts());
        }
        Request::Failures(r) => {
            let _ = r.send(journal.failures());
        }
        Request::Statuses(r) => {
            let _ = r.send(journal.statuses());
        }
        Request::Read(read) => read(journal),
        Request::Apply(..) | Request::Exec(..) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RegistrationId;
    use crate::workflow::manifest::DeviceSpec;

    fn meta() -> BatchMeta {
        BatchMeta {
            group_id: "g1".into(),
            attestation: Attestation::X509,
            source: "test".into(),
            devices: 3,
            created_at: "2026-01-01T00:00:00Z".into(),
            issuer: None,
            csr: false,
        }
    }

    fn specs(n: usize) -> Vec<DeviceSpec> {
        (0..n)
            .map(|i| DeviceSpec::bare(RegistrationId::new(format!("dev-{i}")).unwrap()))
            .collect()
    }

    /// The path a device takes, with what each step stores.
    fn steps(id: &str) -> Vec<Transition> {
        let mut out = Vec::new();
        for w in State::ALL.windows(2) {
            let mut t = Transition::new(id, w[0], w[1]);
            match w[1] {
                State::KeyWritten => t.secret = Some(Secret::new("KEY-PEM")),
                State::CertIssued => {
                    t.cert_pem = Some("CERT".into());
                    t.chain_pem = Some("CHAIN".into());
                }
                State::Registered => {
                    t.assigned_hub = Some("hub".into());
                    t.dps_device_id = Some(id.into());
                }
                _ => {}
            }
            out.push(t);
        }
        out
    }

    #[test]
    fn journal_file_is_private_and_cannot_be_created_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        let j = Journal::create(&path, meta()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let wal = dir.path().join("j.sqlite-wal");
            if wal.exists() {
                assert_eq!(
                    std::fs::metadata(&wal).unwrap().permissions().mode() & 0o777,
                    0o600
                );
            }
        }
        drop(j);
        assert!(matches!(
            Journal::create(&path, meta()),
            Err(JournalError::Create { .. })
        ));
        assert_eq!(Journal::open(&path).unwrap().meta(), &meta());
        assert!(matches!(
            Journal::open(&dir.path().join("none")),
            Err(JournalError::Missing(_))
        ));
        std::fs::write(dir.path().join("junk"), b"not a database at all, really").unwrap();
        assert!(Journal::open(&dir.path().join("junk")).is_err());
    }

    #[test]
    fn a_crash_between_any_two_transitions_resumes_where_it_stopped() {
        // For every point k, run one device through k transitions, "crash" (drop the
        // connection without any further write), reopen, and check the journal holds exactly
        // k steps and the stored key, then finish from there.
        let all = steps("dev-0");
        for k in 0..=all.len() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("j.sqlite");
            {
                let mut j = Journal::create(&path, meta()).unwrap();
                j.plan(&specs(1)).unwrap();
                for t in &all[..k] {
                    for r in j.apply(&[Update::Advance(t.clone())]).unwrap() {
                        r.unwrap();
                    }
                }
            } // crash
            let mut j = Journal::open(&path).unwrap();
            let rec = j.get("dev-0").unwrap().unwrap();
            assert_eq!(rec.state, State::ALL[k], "after {k} transitions");
            let has_key = (1..all.len()).contains(&k);
            assert_eq!(rec.secret.is_some(), has_key, "key stored at k={k}");
            if has_key {
                assert_eq!(rec.secret.unwrap().expose(), "KEY-PEM");
            }
            // Replaying an already-done step is refused: nothing happens twice.
            if k > 0 {
                let r = j.apply(&[Update::Advance(all[k - 1].clone())]).unwrap();
                assert!(matches!(r[0], Err(JournalError::IllegalTransition { .. })));
            }
            for t in &all[k..] {
                j.apply(&[Update::Advance(t.clone())]).unwrap()[0]
                    .as_ref()
                    .unwrap();
            }
            let rec = j.get("dev-0").unwrap().unwrap();
            assert_eq!(rec.state, State::BundleWritten);
            assert!(rec.secret.is_none(), "key erased once bundled");
            assert_eq!(rec.cert_pem.as_deref(), Some("CERT"));
            assert_eq!(rec.assigned_hub.as_deref(), Some("hub"));
            assert_eq!(rec.register_calls, 1);
        }
    }

    #[test]
    fn a_journal_from_before_csr_batches_gets_the_new_columns_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        let mut j = Journal::create(&path, meta()).unwrap();
        j.plan(&specs(2)).unwrap();
        for (name, _) in ADDED_COLUMNS {
            j.conn
                .execute_batch(&format!("ALTER TABLE devices DROP COLUMN {name}"))
                .unwrap();
        }
        drop(j);
        let j = Journal::open(&path).unwrap();
        let rec = j.get("dev-1").unwrap().unwrap();
        assert_eq!(
            (rec.state, rec.csr, rec.csr_sha256),
            (State::Planned, None, None)
        );
        assert_eq!(j.all().unwrap().len(), 2);
    }

    #[test]
    fn an_uncommitted_transaction_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        let mut j = Journal::create(&path, meta()).unwrap();
        j.plan(&specs(1)).unwrap();
        {
            let tx = j.conn.transaction().unwrap();
            apply_one(&tx, &Update::Advance(steps("dev-0")[0].clone()))
                .unwrap()
                .unwrap();
            // dropped without commit, as a crash mid-transaction
        }
        drop(j);
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.get("dev-0").unwrap().unwrap().state, State::Planned);
    }

    #[test]
    fn failures_counts_and_pending() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::create(&dir.path().join("j"), meta()).unwrap();
        j.plan(&specs(3)).unwrap();
        let done: Vec<Update> = steps("dev-0").into_iter().map(Update::Advance).collect();
        for r in j.apply(&done).unwrap() {
            r.unwrap();
        }
        j.apply(&[Update::Fail {
            device_id: "dev-1".into(),
            reason: "DPS said no".into(),
            attempts: 3,
        }])
        .unwrap()[0]
            .as_ref()
            .unwrap();
        assert_eq!(
            j.counts().unwrap(),
            Counts {
                total: 3,
                done: 1,
                failed: 1,
                pending: 1
            }
        );
        let f = j.failures().unwrap();
        assert_eq!(
            f,
            vec![("dev-1".into(), State::Planned, "DPS said no".into(), 3)]
        );
        let p = j.pending(0, 10).unwrap();
        assert_eq!(
            p.iter().map(|r| r.device_id.as_str()).collect::<Vec<_>>(),
            ["dev-1", "dev-2"]
        );
        assert_eq!(j.pending(p[0].seq, 10).unwrap().len(), 1);
        // A later success clears the failure but keeps the count of attempts.
        j.apply(&[Update::Advance(steps("dev-1")[0].clone())])
            .unwrap()[0]
            .as_ref()
            .unwrap();
        let r = j.get("dev-1").unwrap().unwrap();
        assert!(r.error.is_none());
        assert_eq!(r.attempts, 3);
        // Duplicate ids (any case) are refused by the schema.
        let dup = DeviceSpec::bare(RegistrationId::new("DEV-2").unwrap());
        assert!(j.plan([&dup]).is_err());
        assert_eq!(j.counts().unwrap().total, 3);
    }

    #[test]
    fn the_writer_commits_concurrent_transitions_and_refuses_stale_ones() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let mut j = Journal::create(&path, meta()).unwrap();
        j.plan(&specs(200)).unwrap();
        let w = JournalWriter::spawn(j);
        rt.block_on(async {
            let tasks: Vec<_> = (0..200)
                .map(|i| {
                    let w = w.clone();
                    tokio::spawn(async move {
                        for t in steps(&format!("dev-{i}")) {
                            w.advance(t).await.unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            assert_eq!(w.counts().await.unwrap().done, 200);
            let stale = w.advance(steps("dev-3")[2].clone()).await;
            assert!(matches!(stale, Err(JournalError::IllegalTransition { .. })));
            assert!(w.pending(0, 10).await.unwrap().is_empty());
        });
        drop(w);
        let j = Journal::open(&path).unwrap();
        assert!(j.all().unwrap().iter().all(|r| r.register_calls == 1));
    }
}
