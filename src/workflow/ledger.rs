//! The lifecycle tables of a batch journal: certificate renewals and the revocation of a lost
//! station, kept in the same SQLite file as the batch they follow, so the journal stays the
//! one record of which device holds which certificate from which CA.
//!
//! The tables are added, never changed: a journal made before them gains them (and the meta
//! key `lifecycle`) the first time `renew` or `revoke` opens it, in one transaction, and
//! `provision` neither reads nor needs them. The rules of the batch journal hold here too:
//! each device of a renewal round or of the revocation moves forward through fixed states, a
//! transition is an `UPDATE … WHERE state = <expected>` committed before the step that
//! depends on it, and the private key of a renewal is stored in the same transaction that
//! records its certificate and erased once the device's new bundle is written.

use super::journal::{Journal, JournalError, Write};
use crate::secret::Secret;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use std::path::PathBuf;

/// The version of the lifecycle tables (meta key `lifecycle`).
const LEDGER_VERSION: &str = "1";

/// Adds the lifecycle tables to a journal that lacks them (a no-op on one that has them).
pub fn migrate(journal: &mut Journal) -> Result<(), JournalError> {
    let tx = journal.conn_mut().transaction()?;
    let have: Option<String> = tx
        .query_row("SELECT value FROM meta WHERE key = 'lifecycle'", [], |r| {
            r.get(0)
        })
        .optional()?;
    match have.as_deref() {
        Some(LEDGER_VERSION) => return Ok(()),
        Some(other) => {
            return Err(JournalError::Corrupt(format!(
                "lifecycle tables of version {other}, expected {LEDGER_VERSION}"
            )))
        }
        None => {}
    }
    tx.execute_batch(
        "CREATE TABLE renewal_rounds (
             round INTEGER PRIMARY KEY,
             issuer TEXT NOT NULL,
             issuer_subject TEXT NOT NULL,
             created_at TEXT NOT NULL,
             expiring_within INTEGER,
             csr_dir TEXT,
             out_dir TEXT NOT NULL
         );
         CREATE TABLE renewals (
             seq INTEGER PRIMARY KEY,
             round INTEGER NOT NULL REFERENCES renewal_rounds(round),
             device_id TEXT NOT NULL COLLATE NOCASE,
             state TEXT NOT NULL DEFAULT 'planned',
             attempts INTEGER NOT NULL DEFAULT 0,
             error TEXT,
             secret TEXT, cert_pem TEXT, chain_pem TEXT,
             holds_key INTEGER,
             assigned_hub TEXT,
             register_calls INTEGER NOT NULL DEFAULT 0,
             updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
             UNIQUE (round, device_id)
         );
         CREATE TABLE revocations (
             seq INTEGER PRIMARY KEY,
             device_id TEXT NOT NULL UNIQUE COLLATE NOCASE,
             state TEXT NOT NULL DEFAULT 'planned',
             outcome TEXT,
             attempts INTEGER NOT NULL DEFAULT 0,
             error TEXT,
             block_calls INTEGER NOT NULL DEFAULT 0,
             updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
         );
         INSERT INTO meta(key, value) VALUES ('lifecycle', '1');",
    )?;
    tx.commit()?;
    Ok(())
}

fn count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// Where a device of a renewal round stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RenewState {
    /// In the round, nothing done yet.
    Planned,
    /// The new certificate is issued and stored (the device holds its key: no registration).
    Issued,
    /// A DPS registration with the new certificate may have been sent.
    Registering,
    /// DPS assigned the device with the new certificate.
    Registered,
    /// The new bundle is written: the device is renewed.
    BundleWritten,
}

impl RenewState {
    const ALL: [RenewState; 5] = [
        RenewState::Planned,
        RenewState::Issued,
        RenewState::Registering,
        RenewState::Registered,
        RenewState::BundleWritten,
    ];

    /// The name stored in the journal and shown in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            RenewState::Planned => "planned",
            RenewState::Issued => "issued",
            RenewState::Registering => "registering",
            RenewState::Registered => "registered",
            RenewState::BundleWritten => "bundle_written",
        }
    }

    fn parse(s: &str) -> Result<RenewState, JournalError> {
        RenewState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| JournalError::Corrupt(format!("unknown renewal state {s:?}")))
    }
}

/// A renewal round: the devices selected at one time, re-issued by one CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Round {
    /// Its number (1, 2, …): its bundles go to `OUT/renewal-<round>/`.
    pub round: i64,
    /// SHA-256 thumbprint of the CA that signs the round's certificates.
    pub issuer: String,
    /// That CA's subject.
    pub issuer_subject: String,
    /// When it was planned (RFC 3339).
    pub created_at: String,
    /// The selection: devices whose certificate expires within this many days (None: all).
    pub expiring_within: Option<u32>,
    /// The folder of the devices' CSRs, when the devices hold their keys.
    pub csr_dir: Option<PathBuf>,
    /// The folder the round's bundle folder is in.
    pub out_dir: PathBuf,
}

/// One device of a renewal round.
#[derive(Debug, Clone)]
pub struct Renewal {
    /// Order (for paging).
    pub seq: i64,
    /// The round.
    pub round: i64,
    /// The device.
    pub device_id: String,
    /// The last step completed.
    pub state: RenewState,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// The new private key (PKCS#8 PEM) while the station holds it; erased once bundled.
    pub secret: Option<Secret>,
    /// The new certificate.
    pub cert_pem: Option<String>,
    /// The new leaf + intermediates.
    pub chain_pem: Option<String>,
    /// Whether the station made (and so holds) the new key.
    pub holds_key: Option<bool>,
    /// The hub of the re-registration.
    pub assigned_hub: Option<String>,
    /// How many re-registrations were started.
    pub register_calls: u32,
}

/// The round not finished yet, if there is one (the newest round with a device not bundled).
pub fn open_round(journal: &Journal) -> Result<Option<Round>, JournalError> {
    if !has_ledger(journal)? {
        return Ok(None);
    }
    let c = journal.conn();
    let newest: Option<i64> = c
        .query_row("SELECT MAX(round) FROM renewal_rounds", [], |r| r.get(0))
        .optional()?
        .flatten();
    let Some(round) = newest else { return Ok(None) };
    let left: i64 = c.query_row(
        "SELECT COUNT(*) FROM renewals WHERE round = ?1 AND state != 'bundle_written'",
        [round],
        |r| r.get(0),
    )?;
    if left == 0 {
        return Ok(None);
    }
    get_round(journal, round).map(Some)
}

fn get_round(journal: &Journal, round: i64) -> Result<Round, JournalError> {
    Ok(journal.conn().query_row(
        "SELECT round, issuer, issuer_subject, created_at, expiring_within, csr_dir, out_dir
         FROM renewal_rounds WHERE round = ?1",
        [round],
        |r| {
            Ok(Round {
                round: r.get(0)?,
                issuer: r.get(1)?,
                issuer_subject: r.get(2)?,
                created_at: r.get(3)?,
                expiring_within: r.get::<_, Option<i64>>(4)?.map(count),
                csr_dir: r.get::<_, Option<String>>(5)?.map(PathBuf::from),
                out_dir: PathBuf::from(r.get::<_, String>(6)?),
            })
        },
    )?)
}

/// Plans a new round of these devices in one transaction (a crash leaves no half round).
pub fn plan_round(
    journal: &mut Journal,
    round: &Round,
    device_ids: &[String],
) -> Result<Round, JournalError> {
    let tx = journal.conn_mut().transaction()?;
    tx.execute(
        "INSERT INTO renewal_rounds(issuer, issuer_subject, created_at, expiring_within, csr_dir, out_dir)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            round.issuer,
            round.issuer_subject,
            round.created_at,
            round.expiring_within.map(i64::from),
            round.csr_dir.as_ref().map(|p| p.to_string_lossy().into_owned()),
            round.out_dir.to_string_lossy(),
        ],
    )?;
    let number = tx.last_insert_rowid();
    {
        let mut stmt = tx.prepare("INSERT INTO renewals(round, device_id) VALUES (?1, ?2)")?;
        for id in device_ids {
            stmt.execute(params![number, id])?;
        }
    }
    tx.commit()?;
    get_round(journal, number)
}

const RENEWAL_COLS: &str = "seq, round, device_id, state, attempts, error, secret, cert_pem, \
                            chain_pem, holds_key, assigned_hub, register_calls";

fn renewal_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Renewal, String)> {
    Ok((
        Renewal {
            seq: r.get(0)?,
            round: r.get(1)?,
            device_id: r.get(2)?,
            state: RenewState::Planned,
            attempts: count(r.get(4)?),
            error: r.get(5)?,
            secret: r.get::<_, Option<String>>(6)?.map(Secret::new),
            cert_pem: r.get(7)?,
            chain_pem: r.get(8)?,
            holds_key: r.get::<_, Option<i64>>(9)?.map(|v| v != 0),
            assigned_hub: r.get(10)?,
            register_calls: count(r.get(11)?),
        },
        r.get(3)?,
    ))
}

fn renewals(
    journal: &Journal,
    sql_tail: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<Renewal>, JournalError> {
    let mut stmt = journal
        .conn()
        .prepare_cached(&format!("SELECT {RENEWAL_COLS} FROM renewals {sql_tail}"))?;
    let rows = stmt.query_map(args, renewal_row)?;
    rows.map(|r| {
        let (mut rec, state) = r?;
        rec.state = RenewState::parse(&state)?;
        Ok(rec)
    })
    .collect()
}

/// Up to `limit` devices of `round` not renewed yet, after `after_seq`.
pub fn pending_renewals(
    journal: &Journal,
    round: i64,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<Renewal>, JournalError> {
    renewals(
        journal,
        "WHERE round = ?1 AND seq > ?2 AND state != 'bundle_written' ORDER BY seq LIMIT ?3",
        params![round, after_seq, limit as i64],
    )
}

/// Every device of `round`, in order.
pub fn round_renewals(journal: &Journal, round: i64) -> Result<Vec<Renewal>, JournalError> {
    renewals(journal, "WHERE round = ?1 ORDER BY seq", params![round])
}

/// A forward move of one renewal, with what the step produced.
#[derive(Debug, Clone, Default)]
pub struct RenewStep {
    /// The new key (the station made it).
    pub secret: Option<Secret>,
    /// The new certificate.
    pub cert_pem: Option<String>,
    /// The new chain.
    pub chain_pem: Option<String>,
    /// Whether the station holds the key.
    pub holds_key: Option<bool>,
    /// The hub of the re-registration.
    pub assigned_hub: Option<String>,
}

fn illegal(device_id: &str, to: &str, actual: Option<String>) -> JournalError {
    JournalError::IllegalTransition {
        device_id: device_id.to_owned(),
        to: to.to_owned(),
        actual: actual.unwrap_or_else(|| "absent".into()),
    }
}

/// The write that moves a renewal from `from` to `to`; refused (writing nothing) when the
/// journal has it elsewhere. The key is erased once the bundle holds it.
pub fn renew_advance(
    round: i64,
    device_id: &str,
    from: RenewState,
    to: RenewState,
    step: RenewStep,
) -> Write {
    let device_id = device_id.to_owned();
    Box::new(move |tx| {
        if to <= from {
            return Err(illegal(&device_id, to.as_str(), Some(from.as_str().into())));
        }
        let n = tx
            .prepare_cached(
                "UPDATE renewals SET state = ?4, error = NULL,
                     secret = CASE WHEN ?4 = 'bundle_written' THEN NULL ELSE COALESCE(?5, secret) END,
                     cert_pem = COALESCE(?6, cert_pem), chain_pem = COALESCE(?7, chain_pem),
                     holds_key = COALESCE(?8, holds_key),
                     assigned_hub = COALESCE(?9, assigned_hub),
                     register_calls = register_calls + (?4 = 'registering'),
                     updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
                 WHERE round = ?1 AND device_id = ?2 AND state = ?3",
            )?
            .execute(params![
                round,
                device_id,
                from.as_str(),
                to.as_str(),
                step.secret.as_ref().map(Secret::expose),
                step.cert_pem,
                step.chain_pem,
                step.holds_key.map(i64::from),
                step.assigned_hub,
            ])?;
        if n == 1 {
            return Ok(());
        }
        let actual = tx
            .query_row(
                "SELECT state FROM renewals WHERE round = ?1 AND device_id = ?2",
                params![round, device_id],
                |r| r.get::<_, String>(0),
            )
            .optional()?;
        Err(illegal(&device_id, to.as_str(), actual))
    })
}

/// The write that records a failed renewal attempt.
pub fn renew_fail(round: i64, device_id: &str, reason: &str, attempts: u32) -> Write {
    let (device_id, reason) = (device_id.to_owned(), reason.to_owned());
    Box::new(move |tx| {
        tx.prepare_cached(
            "UPDATE renewals SET error = ?3, attempts = attempts + ?4,
                 updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
             WHERE round = ?1 AND device_id = ?2",
        )?
        .execute(params![round, device_id, reason, i64::from(attempts)])?;
        Ok(())
    })
}

/// One certificate the station issued to a device, as the journal holds it.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The device.
    pub device_id: String,
    /// The certificate (PEM).
    pub cert_pem: String,
    /// Leaf + intermediates (PEM).
    pub chain_pem: Option<String>,
    /// The renewal round that issued it (None: the batch that provisioned the device).
    pub round: Option<i64>,
}

/// Every certificate of the journal: each device's first one, then every renewal's, in order.
pub fn issued_certs(journal: &Journal) -> Result<Vec<IssuedCert>, JournalError> {
    let c = journal.conn();
    let mut out = Vec::new();
    let mut stmt = c.prepare(
        "SELECT device_id, cert_pem, chain_pem FROM devices WHERE cert_pem IS NOT NULL ORDER BY seq",
    )?;
    for r in stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))? {
        let (device_id, cert_pem, chain_pem) = r?;
        out.push(IssuedCert {
            device_id,
            cert_pem,
            chain_pem,
            round: None,
        });
    }
    if has_ledger(journal)? {
        let mut stmt = c.prepare(
            "SELECT device_id, cert_pem, chain_pem, round FROM renewals
             WHERE cert_pem IS NOT NULL ORDER BY round, seq",
        )?;
        for r in stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))? {
            let (device_id, cert_pem, chain_pem, round) = r?;
            out.push(IssuedCert {
                device_id,
                cert_pem,
                chain_pem,
                round: Some(round),
            });
        }
    }
    Ok(out)
}

/// Each device's certificate now: the one of its newest finished renewal, else its first.
pub fn current_certs(journal: &Journal) -> Result<Vec<IssuedCert>, JournalError> {
    let mut current: std::collections::BTreeMap<String, IssuedCert> = Default::default();
    let mut order = Vec::new();
    let finished: std::collections::HashSet<(String, i64)> = if has_ledger(journal)? {
        let mut stmt = journal
            .conn()
            .prepare("SELECT device_id, round FROM renewals WHERE state = 'bundle_written'")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        rows.collect::<Result<_, _>>()?
    } else {
        Default::default()
    };
    for c in issued_certs(journal)? {
        let key = c.device_id.to_lowercase();
        let take = match c.round {
            None => true,
            Some(round) => finished.contains(&(c.device_id.clone(), round)),
        };
        if take {
            if !current.contains_key(&key) {
                order.push(key.clone());
            }
            current.insert(key, c);
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|k| current.remove(&k))
        .collect())
}

fn has_ledger(journal: &Journal) -> Result<bool, JournalError> {
    Ok(journal
        .conn()
        .query_row("SELECT value FROM meta WHERE key = 'lifecycle'", [], |r| {
            r.get::<_, String>(0)
        })
        .optional()?
        .is_some())
}

/// Where a device of the revocation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeState {
    /// In the revocation, nothing sent yet.
    Planned,
    /// The block (PATCH `enabled: false`) may have been sent: a resume reads the device
    /// before sending another.
    Blocking,
    /// Done: the device is blocked in IoT Central (or does not exist there).
    Blocked,
}

impl RevokeState {
    /// The name stored in the journal and shown in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeState::Planned => "planned",
            RevokeState::Blocking => "blocking",
            RevokeState::Blocked => "blocked",
        }
    }

    fn parse(s: &str) -> Result<RevokeState, JournalError> {
        [
            RevokeState::Planned,
            RevokeState::Blocking,
            RevokeState::Blocked,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| JournalError::Corrupt(format!("unknown revocation state {s:?}")))
    }
}

/// What the revocation did to a device in IoT Central.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum BlockOutcome {
    /// It is blocked (`enabled: false`): by this revocation's one PATCH.
    Blocked,
    /// IoT Central has no such device; nothing to block.
    Absent,
}

impl BlockOutcome {
    fn as_str(self) -> &'static str {
        match self {
            BlockOutcome::Blocked => "blocked",
            BlockOutcome::Absent => "absent",
        }
    }

    fn parse(s: &str) -> Option<BlockOutcome> {
        [BlockOutcome::Blocked, BlockOutcome::Absent]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// One device of the revocation.
#[derive(Debug, Clone)]
pub struct Revocation {
    /// Order (for paging).
    pub seq: i64,
    /// The device.
    pub device_id: String,
    /// The last step completed.
    pub state: RevokeState,
    /// What was done, once blocked.
    pub outcome: Option<BlockOutcome>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// How many blocks were started.
    pub block_calls: u32,
}

/// Plans the revocation of every device of the journal, once: a journal whose revocation is
/// planned keeps its plan (and its reason); returns the reason recorded.
pub fn plan_revocation(journal: &mut Journal, reason: &str) -> Result<String, JournalError> {
    let tx = journal.conn_mut().transaction()?;
    let recorded: Option<String> = tx
        .query_row("SELECT value FROM meta WHERE key = 'revocation'", [], |r| {
            r.get(0)
        })
        .optional()?;
    if let Some(r) = recorded {
        return Ok(r);
    }
    tx.execute(
        "INSERT INTO revocations(device_id) SELECT device_id FROM devices ORDER BY seq",
        [],
    )?;
    tx.execute(
        "INSERT INTO meta(key, value) VALUES ('revocation', ?1)",
        [reason],
    )?;
    tx.commit()?;
    Ok(reason.to_owned())
}

/// The reason of the revocation, when one is planned.
pub fn revocation_reason(journal: &Journal) -> Result<Option<String>, JournalError> {
    Ok(journal
        .conn()
        .query_row("SELECT value FROM meta WHERE key = 'revocation'", [], |r| {
            r.get(0)
        })
        .optional()?)
}

fn revocations(
    journal: &Journal,
    sql_tail: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<Revocation>, JournalError> {
    let mut stmt = journal.conn().prepare_cached(&format!(
        "SELECT seq, device_id, state, outcome, attempts, error, block_calls FROM revocations {sql_tail}"
    ))?;
    let rows = stmt.query_map(args, |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, Option<String>>(5)?,
            r.get::<_, i64>(6)?,
        ))
    })?;
    rows.map(|r| {
        let (seq, device_id, state, outcome, attempts, error, calls) = r?;
        Ok(Revocation {
            seq,
            device_id,
            state: RevokeState::parse(&state)?,
            outcome: outcome.as_deref().and_then(BlockOutcome::parse),
            attempts: count(attempts),
            error,
            block_calls: count(calls),
        })
    })
    .collect()
}

/// Up to `limit` devices not blocked yet, after `after_seq`.
pub fn pending_revocations(
    journal: &Journal,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<Revocation>, JournalError> {
    revocations(
        journal,
        "WHERE seq > ?1 AND state != 'blocked' ORDER BY seq LIMIT ?2",
        params![after_seq, limit as i64],
    )
}

/// Every device of the revocation, in order.
pub fn all_revocations(journal: &Journal) -> Result<Vec<Revocation>, JournalError> {
    revocations(journal, "ORDER BY seq", [])
}

/// The write that moves a revocation from `from` to `to` (with the outcome when it ends).
pub fn revoke_advance(
    device_id: &str,
    from: RevokeState,
    to: RevokeState,
    outcome: Option<BlockOutcome>,
) -> Write {
    let device_id = device_id.to_owned();
    Box::new(move |tx| {
        if to <= from {
            return Err(illegal(&device_id, to.as_str(), Some(from.as_str().into())));
        }
        let n = tx
            .prepare_cached(
                "UPDATE revocations SET state = ?3, error = NULL,
                     outcome = COALESCE(?4, outcome),
                     block_calls = block_calls + (?3 = 'blocking'),
                     updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
                 WHERE device_id = ?1 AND state = ?2",
            )?
            .execute(params![
                device_id,
                from.as_str(),
                to.as_str(),
                outcome.map(BlockOutcome::as_str)
            ])?;
        if n == 1 {
            return Ok(());
        }
        let actual = tx
            .query_row(
                "SELECT state FROM revocations WHERE device_id = ?1",
                [&device_id],
                |r| r.get::<_, String>(0),
            )
            .optional()?;
        Err(illegal(&device_id, to.as_str(), actual))
    })
}

/// The write that records a failed revocation attempt.
pub fn revoke_fail(device_id: &str, reason: &str, attempts: u32) -> Write {
    let (device_id, reason) = (device_id.to_owned(), reason.to_owned());
    Box::new(move |tx| {
        tx.prepare_cached(
            "UPDATE revocations SET error = ?2, attempts = attempts + ?3,
                 updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
             WHERE device_id = ?1",
        )?
        .execute(params![device_id, reason, i64::from(attempts)])?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RegistrationId;
    use crate::workflow::journal::{Attestation, BatchMeta};
    use crate::workflow::manifest::DeviceSpec;

    fn journal(dir: &std::path::Path) -> Journal {
        let meta = BatchMeta {
            group_id: "g".into(),
            attestation: Attestation::X509,
            source: "t".into(),
            devices: 2,
            created_at: "now".into(),
            issuer: None,
            csr: false,
        };
        let mut j = Journal::create(&dir.join("j"), meta).unwrap();
        let specs: Vec<_> = ["a", "b"]
            .iter()
            .map(|i| DeviceSpec::bare(RegistrationId::new(*i).unwrap()))
            .collect();
        j.plan(&specs).unwrap();
        j
    }

    fn run(j: &mut Journal, w: Write) -> Result<(), JournalError> {
        let tx = j.conn_mut().transaction().unwrap();
        let r = w(&tx);
        tx.commit().unwrap();
        r
    }

    #[test]
    fn an_old_journal_gains_the_tables_once_and_keeps_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = journal(dir.path());
        migrate(&mut j).unwrap();
        migrate(&mut j).unwrap();
        drop(j);
        let j = Journal::open(&dir.path().join("j")).unwrap();
        assert_eq!(j.counts().unwrap().total, 2);
        assert!(has_ledger(&j).unwrap());
    }

    #[test]
    fn revocations_move_forward_only_and_keep_their_first_plan() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = journal(dir.path());
        migrate(&mut j).unwrap();
        assert_eq!(
            plan_revocation(&mut j, "keyCompromise").unwrap(),
            "keyCompromise"
        );
        assert_eq!(plan_revocation(&mut j, "other").unwrap(), "keyCompromise");
        assert_eq!(all_revocations(&j).unwrap().len(), 2);
        use RevokeState::*;
        run(&mut j, revoke_advance("a", Planned, Blocking, None)).unwrap();
        assert!(matches!(
            run(&mut j, revoke_advance("a", Planned, Blocking, None)),
            Err(JournalError::IllegalTransition { .. })
        ));
        run(
            &mut j,
            revoke_advance("a", Blocking, Blocked, Some(BlockOutcome::Blocked)),
        )
        .unwrap();
        let p = pending_revocations(&j, 0, 10).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].device_id, "b");
        let a = &all_revocations(&j).unwrap()[0];
        assert_eq!(
            (a.state, a.outcome, a.block_calls),
            (Blocked, Some(BlockOutcome::Blocked), 1)
        );
    }

    #[test]
    fn the_current_certificate_is_the_newest_finished_renewal() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = journal(dir.path());
        j.conn()
            .execute("UPDATE devices SET cert_pem = 'OLD-' || device_id", [])
            .unwrap();
        migrate(&mut j).unwrap();
        let meta = Round {
            round: 0,
            issuer: "X".into(),
            issuer_subject: "CN=x".into(),
            created_at: "now".into(),
            expiring_within: None,
            csr_dir: None,
            out_dir: "out".into(),
        };
        let r = plan_round(&mut j, &meta, &["a".into(), "b".into()]).unwrap();
        assert_eq!(r.round, 1);
        assert_eq!(open_round(&j).unwrap().unwrap().round, 1);
        use RenewState::*;
        for (id, to) in [("a", BundleWritten), ("b", Registering)] {
            let step = RenewStep {
                cert_pem: Some(format!("NEW-{id}")),
                secret: Some(Secret::new("K")),
                ..RenewStep::default()
            };
            run(&mut j, renew_advance(1, id, Planned, to, step)).unwrap();
        }
        let cur: Vec<_> = current_certs(&j)
            .unwrap()
            .into_iter()
            .map(|c| c.cert_pem)
            .collect();
        assert_eq!(cur, ["NEW-a", "OLD-b"]);
        assert_eq!(issued_certs(&j).unwrap().len(), 4);
        let rs = round_renewals(&j, 1).unwrap();
        assert!(rs[0].secret.is_none(), "key erased once bundled");
        assert!(rs[1].secret.is_some());
        assert_eq!(pending_renewals(&j, 1, 0, 10).unwrap().len(), 1);
    }
}
