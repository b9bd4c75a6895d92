//! The emulator's durable state: one SQLite database (`emulator.db`) in the data folder.
//!
//! Resources are stored as JSON documents in one table keyed by (kind, id), with an
//! insertion sequence that gives lists a stable order, plus a small key/value table for
//! application facts (id scope, application id, SAS group keys). Lists are read a page at a
//! time with keyset queries ([`scan`]): a page starts after the position its `$skiptoken`
//! carries and stops when it is full, through an index on (kind, seq) and one on (kind,
//! folded display name, seq), so a page costs what it holds whatever the size of the fleet. Documents keep the shapes
//! of the wire models (or of small records that wrap them), so what is stored is what is
//! served. Every change runs in an `IMMEDIATE` transaction behind one connection mutex:
//! concurrent requests are serialized, each read-check-write is atomic, and the WAL journal
//! keeps a committed change across a crash or a restart.
//!
//! The DPS listener reads and writes through the same [`Store`] (see `emulator::dps`).

use super::error::{ApiError, ApiResult};
use super::EmulatorError;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;
use std::sync::Mutex;

/// File name of the database in the data folder.
pub const DB_FILE: &str = "emulator.db";

/// Resource kinds (the `kind` column).
pub mod kind {
    /// Organizations (`models::Organization`).
    pub const ORGANIZATION: &str = "organization";
    /// Devices (`records::DeviceRecord`).
    pub const DEVICE: &str = "device";
    /// Device groups (`models::DeviceGroup`).
    pub const DEVICE_GROUP: &str = "deviceGroup";
    /// Device templates (JSON documents).
    pub const DEVICE_TEMPLATE: &str = "deviceTemplate";
    /// Enrollment groups (`records::GroupRecord`).
    pub const ENROLLMENT_GROUP: &str = "enrollmentGroup";
    /// Users (`models::User`).
    pub const USER: &str = "user";
    /// API tokens (`records::TokenRecord`, the secret hashed).
    pub const API_TOKEN: &str = "apiToken";
}

/// The sort key of `orderby displayName`: the display name (of a device record or of a
/// document that has one at the top) folded with SQLite's `lower` (ASCII letters only). One
/// text for the index and for the queries, so the planner matches them.
macro_rules! name_key {
    () => {
        "lower(coalesce(json_extract(body, '$.device.displayName'), json_extract(body, '$.displayName'), ''))"
    };
}

/// The order of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Creation order (the insertion sequence).
    Created,
    /// By folded display name, then creation order; `desc` reverses both.
    Name {
        /// Descending.
        desc: bool,
    },
}

/// A position in a list: the last item a page held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Cursor {
    /// Its insertion sequence.
    pub seq: i64,
    /// Its sort key, for [`Order::Name`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The database: one connection behind a mutex.
pub struct Store {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    /// Opens (or creates) the database at `path` and applies the schema.
    ///
    /// The database holds enrollment-group keys and device keys in clear, so it is mode 0600
    /// before SQLite opens it: SQLite would create it 0644, and it gives the `-wal` and `-shm`
    /// files it creates later the mode of the database file. Sidecars left by an earlier
    /// version with a wider mode are narrowed too.
    pub fn open(path: &Path) -> Result<Store, EmulatorError> {
        let db = |e: rusqlite::Error| EmulatorError::Store(format!("{}: {e}", path.display()));
        make_private(path)?;
        let conn = Connection::open(path).map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
        conn.execute_batch(concat!(
            "CREATE TABLE IF NOT EXISTS resources (
                 seq  INTEGER PRIMARY KEY AUTOINCREMENT,
                 kind TEXT NOT NULL,
                 id   TEXT NOT NULL,
                 body TEXT NOT NULL,
                 UNIQUE (kind, id)
             );
             CREATE INDEX IF NOT EXISTS resources_kind_seq ON resources (kind, seq);
             CREATE INDEX IF NOT EXISTS resources_kind_name ON resources (kind, ",
            name_key!(),
            ", seq);
             CREATE TABLE IF NOT EXISTS meta (
                 key   TEXT PRIMARY KEY,
                 value TEXT NOT NULL
             );",
        ))
        .map_err(db)?;
        conn.execute_batch(super::stats::SCHEMA).map_err(db)?;
        for (kind, field) in MATCH_INDEXES {
            conn.execute_batch(&match_index_sql(kind, field))
                .map_err(db)?;
        }
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in a read transaction (a consistent snapshot).
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> ApiResult<T>) -> ApiResult<T> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs `f` in a write transaction: committed when `f` succeeds, rolled back otherwise.
    pub fn write<T>(&self, f: impl FnOnce(&Connection) -> ApiResult<T>) -> ApiResult<T> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

/// Makes the database file (created empty if missing) and any `-wal`, `-shm` or `-journal`
/// beside it mode 0600.
fn make_private(path: &Path) -> Result<(), EmulatorError> {
    let io = |p: &Path, e| EmulatorError::Io(format!("make {} private", p.display()), e);
    super::tls::open_private(path, false).map_err(|e| io(path, e))?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let sidecar = Path::new(&name);
        if sidecar.exists() {
            super::tls::open_private(sidecar, false).map_err(|e| io(sidecar, e))?;
        }
    }
    Ok(())
}

/// Reads one document.
pub fn get<T: DeserializeOwned>(c: &Connection, kind: &str, id: &str) -> ApiResult<Option<T>> {
    let body: Option<String> = c
        .query_row(
            "SELECT body FROM resources WHERE kind = ?1 AND id = ?2",
            params![kind, id],
            |r| r.get(0),
        )
        .optional()?;
    match body {
        Some(b) => Ok(Some(serde_json::from_str(&b)?)),
        None => Ok(None),
    }
}

/// Whether a document exists.
pub fn exists(c: &Connection, kind: &str, id: &str) -> ApiResult<bool> {
    Ok(c.query_row(
        "SELECT 1 FROM resources WHERE kind = ?1 AND id = ?2",
        params![kind, id],
        |_| Ok(()),
    )
    .optional()?
    .is_some())
}

/// Reads every document of a kind, in creation order.
pub fn list<T: DeserializeOwned>(c: &Connection, kind: &str) -> ApiResult<Vec<T>> {
    let mut stmt = c.prepare_cached("SELECT body FROM resources WHERE kind = ?1 ORDER BY seq")?;
    let rows = stmt.query_map(params![kind], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(serde_json::from_str(&row?)?);
    }
    Ok(out)
}

/// The (kind, top-level field) pairs [`list_matching`] finds through an index of their own
/// (a partial expression index per pair, made with the schema): the bearer-token check's
/// look-up of the users an `oid` names, on every request, with however many users and
/// devices the application has.
const MATCH_INDEXES: &[(&str, &str)] = &[(kind::USER, "objectId")];

/// A kind or field name that may go into SQL text: ASCII letters, digits and `_`.
fn sql_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The partial expression index of one [`MATCH_INDEXES`] pair.
fn match_index_sql(kind: &str, field: &str) -> String {
    format!(
        "CREATE INDEX IF NOT EXISTS resources_{kind}_{field} ON resources \
         (lower(json_extract(body, '$.{field}'))) WHERE kind = '{kind}';"
    )
}

/// The query of [`list_matching`]: the kind and the path literal, as the partial index has
/// them, and the index named for a pair of [`MATCH_INDEXES`] (without statistics SQLite
/// would rather walk the kind in `seq` order than sort the few matches).
fn match_sql(kind: &str, field: &str) -> String {
    let indexed = if MATCH_INDEXES.contains(&(kind, field)) {
        format!(" INDEXED BY resources_{kind}_{field}")
    } else {
        String::new()
    };
    format!(
        "SELECT body FROM resources{indexed} WHERE kind = '{kind}' \
         AND lower(json_extract(body, '$.{field}')) IN (SELECT lower(value) FROM json_each(?1)) \
         ORDER BY seq"
    )
}

/// Reads the documents of a kind whose top-level string field `field` is one of `values`
/// (ASCII case-insensitively), in creation order. The filter runs in SQLite, so only the
/// matches are parsed; for a pair of [`MATCH_INDEXES`] only the matches are read. `kind` and
/// `field` are names of this crate (letters, digits, `_`), never a caller's input.
pub fn list_matching<T: DeserializeOwned>(
    c: &Connection,
    kind: &str,
    field: &str,
    values: &[&str],
) -> ApiResult<Vec<T>> {
    if !sql_name(kind) || !sql_name(field) {
        return Err(ApiError::internal(format!(
            "list_matching: {kind:?}/{field:?} is not a plain name"
        )));
    }
    let mut stmt = c.prepare_cached(&match_sql(kind, field))?;
    let values = serde_json::to_string(values)?;
    let rows = stmt.query_map(params![values], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(serde_json::from_str(&row?)?);
    }
    Ok(out)
}

/// Reads the documents of a kind in `order`, starting after `after`, and hands each to `f`
/// with its position until `f` answers `false`: a keyset query, so a page costs the rows it
/// reads, never the whole kind.
pub fn scan(
    c: &Connection,
    kind: &str,
    order: Order,
    after: Option<&Cursor>,
    mut f: impl FnMut(Cursor, &str) -> ApiResult<bool>,
) -> ApiResult<()> {
    let seq = after.map_or(i64::MIN, |a| a.seq);
    let name = after.and_then(|a| a.name.clone());
    // Each statement names the parameters it binds: 1 kind, 2 seq, 3 name.
    let (sql, by_name): (&str, bool) = match (order, &name) {
        (Order::Created, _) => (
            "SELECT seq, body, NULL FROM resources WHERE kind = ?1 AND seq > ?2 ORDER BY seq",
            false,
        ),
        (Order::Name { desc: false }, None) => (
            concat!(
                "SELECT seq, body, ",
                name_key!(),
                " FROM resources WHERE kind = ?1 ",
                "ORDER BY ",
                name_key!(),
                ", seq"
            ),
            true,
        ),
        (Order::Name { desc: false }, Some(_)) => (
            concat!(
                "SELECT seq, body, ",
                name_key!(),
                " FROM resources WHERE kind = ?1 ",
                "AND (",
                name_key!(),
                ", seq) > (?3, ?2) ORDER BY ",
                name_key!(),
                ", seq"
            ),
            true,
        ),
        (Order::Name { desc: true }, None) => (
            concat!(
                "SELECT seq, body, ",
                name_key!(),
                " FROM resources WHERE kind = ?1 ",
                "ORDER BY ",
                name_key!(),
                " DESC, seq DESC"
            ),
            true,
        ),
        (Order::Name { desc: true }, Some(_)) => (
            concat!(
                "SELECT seq, body, ",
                name_key!(),
                " FROM resources WHERE kind = ?1 ",
                "AND (",
                name_key!(),
                ", seq) < (?3, ?2) ORDER BY ",
                name_key!(),
                " DESC, seq DESC"
            ),
            true,
        ),
    };
    let mut stmt = c.prepare_cached(sql)?;
    let mut rows = match (by_name, &name) {
        (false, _) => stmt.query(params![kind, seq])?,
        (true, None) => stmt.query(params![kind])?,
        (true, Some(n)) => stmt.query(params![kind, seq, n])?,
    };
    while let Some(row) = rows.next()? {
        let cursor = Cursor {
            seq: row.get(0)?,
            name: if by_name { row.get(2)? } else { None },
        };
        let body: String = row.get(1)?;
        if !f(cursor, &body)? {
            break;
        }
    }
    Ok(())
}

/// Creates or replaces a document (a replacement keeps its place in lists).
pub fn put<T: Serialize>(c: &Connection, kind: &str, id: &str, value: &T) -> ApiResult<()> {
    let body = serde_json::to_string(value)?;
    c.prepare_cached(
        "INSERT INTO resources (kind, id, body) VALUES (?1, ?2, ?3)
         ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body",
    )?
    .execute(params![kind, id, body])?;
    Ok(())
}

/// Deletes a document; whether it existed.
pub fn delete(c: &Connection, kind: &str, id: &str) -> ApiResult<bool> {
    Ok(c.execute(
        "DELETE FROM resources WHERE kind = ?1 AND id = ?2",
        params![kind, id],
    )? > 0)
}

/// Reads an application fact.
pub fn meta_get(c: &Connection, key: &str) -> ApiResult<Option<String>> {
    Ok(
        c.query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
            r.get(0)
        })
        .optional()?,
    )
}

/// Writes an application fact.
pub fn meta_set(c: &Connection, key: &str, value: &str) -> ApiResult<()> {
    c.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// Reads a document or answers 404 naming it.
pub fn require<T: DeserializeOwned>(
    c: &Connection,
    kind: &str,
    label: &str,
    id: &str,
) -> ApiResult<T> {
    get(c, kind, id)?.ok_or_else(|| ApiError::not_found(label, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_matched_by_object_id_through_their_index() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join(DB_FILE)).unwrap();
        s.write(|c| {
            for i in 0..50 {
                put(
                    c,
                    kind::DEVICE,
                    &format!("d{i}"),
                    &serde_json::json!({"objectId": "x"}),
                )?;
                put(
                    c,
                    kind::USER,
                    &format!("u{i}"),
                    &serde_json::json!({"objectId": format!("OID-{i}")}),
                )?;
            }
            Ok(())
        })
        .unwrap();
        let found: Vec<serde_json::Value> = s
            .read(|c| list_matching(c, kind::USER, "objectId", &["oid-7", "Oid-42", "x"]))
            .unwrap();
        let oids: Vec<&str> = found
            .iter()
            .map(|v| v["objectId"].as_str().unwrap())
            .collect();
        assert_eq!(
            oids,
            ["OID-7", "OID-42"],
            "case-insensitive, users only, creation order"
        );
        let plan: Vec<String> = s
            .read(|c| {
                let sql = format!("EXPLAIN QUERY PLAN {}", match_sql(kind::USER, "objectId"));
                let mut stmt = c.prepare(&sql)?;
                let rows = stmt.query_map(params!["[]"], |r| r.get::<_, String>(3))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .unwrap();
        assert!(
            plan.iter()
                .any(|p| p.contains("USING INDEX resources_user_objectId")),
            "the look-up reads every user: {plan:?}"
        );
    }

    #[test]
    fn scan_resumes_after_a_position_in_either_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join(DB_FILE)).unwrap();
        s.write(|c| {
            for (id, name) in [("a", "b"), ("b", "A"), ("c", "b"), ("d", "c")] {
                put(c, "k", id, &serde_json::json!({"displayName": name}))?;
            }
            put(c, "other", "x", &serde_json::json!({"displayName": "a"}))
        })
        .unwrap();
        let ids = |order: Order, after: Option<Cursor>, n: usize| {
            let mut out = Vec::new();
            let mut last = None;
            s.read(|c| {
                scan(c, "k", order, after.as_ref(), |at, body| {
                    let v: serde_json::Value = serde_json::from_str(body)?;
                    out.push(v["displayName"].as_str().unwrap().to_owned());
                    last = Some(at);
                    Ok(out.len() < n)
                })
            })
            .unwrap();
            (out, last)
        };
        let (all, _) = ids(Order::Created, None, 10);
        assert_eq!(all, ["b", "A", "b", "c"]);
        let (first, at) = ids(Order::Created, None, 2);
        assert_eq!(first, ["b", "A"]);
        assert_eq!(ids(Order::Created, at, 10).0, ["b", "c"]);
        let asc = Order::Name { desc: false };
        let (first, at) = ids(asc, None, 2);
        assert_eq!(first, ["A", "b"]);
        assert_eq!(at.as_ref().and_then(|c| c.name.as_deref()), Some("b"));
        assert_eq!(
            ids(asc, at, 10).0,
            ["b", "c"],
            "the tie resumes by sequence"
        );
        let desc = Order::Name { desc: true };
        let (first, at) = ids(desc, None, 2);
        assert_eq!(first, ["c", "b"]);
        assert_eq!(ids(desc, at, 10).0, ["b", "A"]);
    }

    #[test]
    fn write_rolls_back_on_error_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        {
            let s = Store::open(&path).unwrap();
            s.write(|c| put(c, "k", "a", &serde_json::json!({"x": 1})))
                .unwrap();
            let r: ApiResult<()> = s.write(|c| {
                put(c, "k", "b", &serde_json::json!({"x": 2}))?;
                Err(ApiError::conflict("no"))
            });
            assert!(r.is_err());
        }
        let s = Store::open(&path).unwrap();
        let all: Vec<serde_json::Value> = s.read(|c| list(c, "k")).unwrap();
        assert_eq!(all, vec![serde_json::json!({"x": 1})]);
    }
}
