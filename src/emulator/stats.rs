//! Counters of what the emulator did, so a test (or a benchmark) can prove a claim from the
//! service's side instead of trusting the client under test: how many times DPS assigned each
//! registration id, how many verification codes and proofs of possession each enrollment-group
//! certificate went through, how many faults were injected and how many requests the rate
//! limit refused.
//!
//! One mechanism for every counter: a row per (counter, key) in the emulator's database. A
//! counter of a change is bumped inside the transaction of that change ([`bump`]), so it never
//! counts a change that was rolled back and it survives a restart (a test that kills the
//! emulator mid-batch still sees every registration made before the kill); an event that
//! changes nothing else (an injected fault) is counted in a transaction of its own
//! ([`record`]). Counters only grow: a test compares two snapshots, or reads a fresh
//! emulator's. They are read with `GET /emulator/stats` (application-wide Administrator token,
//! like `/emulator/settings`) or in-process with [`super::Emulator::stats`]; both give the same
//! [`Stats`]. New counters get a name in [`counter`] and one call where the event happens.

use super::api::AppState;
use super::auth::Principal;
use super::error::ApiResult;
use super::settings::Fault;
use super::store::Store;
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The counters' table, created with the rest of the schema by `Store::open`.
pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS counters (
     name  TEXT NOT NULL,
     key   TEXT NOT NULL,
     count INTEGER NOT NULL,
     PRIMARY KEY (name, key)
 );";

/// The names of the counters (the keys of [`Stats::counters`]).
pub mod counter {
    /// Registrations DPS accepted and assigned (a device registered again counts again), by
    /// registration id. Refused and disabled registrations are not counted.
    pub const DPS_REGISTRATIONS: &str = "dpsRegistrations";
    /// Verification codes issued (`generateVerificationCode`), by `{group}/{entry}`.
    pub const VERIFICATION_CODES: &str = "verificationCodes";
    /// Proofs of possession accepted (`verify`), by `{group}/{entry}`.
    pub const VERIFICATIONS: &str = "verifications";
    /// Faults injected, by `{listener}.{fault}`: listener `api` or `dps`, fault `503`, `429` or
    /// `drop`.
    pub const FAULTS: &str = "faults";
    /// IoT Central requests refused by the rate limit (429), under the key `api`.
    pub const RATE_LIMITED: &str = "rateLimited";
}

/// A snapshot of every counter: counter name, then key, then count. A counter or key that
/// never happened is absent (read it as 0 with [`Stats::get`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Counter name -> key -> count.
    pub counters: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Stats {
    /// The count of `key` in `counter` (0 when it never happened).
    pub fn get(&self, counter: &str, key: &str) -> u64 {
        self.counters
            .get(counter)
            .and_then(|c| c.get(key))
            .copied()
            .unwrap_or(0)
    }

    /// Every key of `counter` with its count (empty when it never happened).
    pub fn of(&self, counter: &str) -> BTreeMap<String, u64> {
        self.counters.get(counter).cloned().unwrap_or_default()
    }

    /// The sum of `counter` over all its keys.
    pub fn total(&self, counter: &str) -> u64 {
        self.counters
            .get(counter)
            .map(|c| c.values().sum())
            .unwrap_or(0)
    }
}

/// Adds one to `counter`/`key` inside the caller's transaction.
pub fn bump(c: &Connection, counter: &str, key: &str) -> ApiResult<()> {
    c.prepare_cached(
        "INSERT INTO counters (name, key, count) VALUES (?1, ?2, 1)
         ON CONFLICT (name, key) DO UPDATE SET count = count + 1",
    )?
    .execute(params![counter, key])?;
    Ok(())
}

/// Adds one to `counter`/`key` in a transaction of its own, for an event that changes
/// nothing else. A failure to count is logged, not answered: the request it counts goes on.
pub fn record(store: &Store, counter: &str, key: &str) {
    if let Err(e) = store.write(|c| bump(c, counter, key)) {
        tracing::warn!("cannot count {counter}/{key}: {}", e.message);
    }
}

/// Counts an injected fault of `listener` (`api` or `dps`).
pub fn fault(store: &Store, listener: &str, fault: Fault) {
    let kind = match fault {
        Fault::None => return,
        Fault::ServerError => "503",
        Fault::Throttle => "429",
        Fault::Drop => "drop",
    };
    record(store, counter::FAULTS, &format!("{listener}.{kind}"));
}

/// Every counter, read in one snapshot.
pub fn snapshot(store: &Store) -> ApiResult<Stats> {
    store.read(|c| {
        let mut stmt = c.prepare_cached("SELECT name, key, count FROM counters")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut stats = Stats::default();
        for row in rows {
            let (name, key, count) = row?;
            stats
                .counters
                .entry(name)
                .or_default()
                .insert(key, u64::try_from(count).unwrap_or(0));
        }
        Ok(stats)
    })
}

/// `GET /emulator/stats`: every counter, for an application-wide Administrator.
pub(crate) async fn get_stats(
    axum::extract::State(st): axum::extract::State<AppState>,
    axum::Extension(p): axum::Extension<Principal>,
) -> ApiResult<axum::Json<Stats>> {
    super::api::require_admin(&p)?;
    Ok(axum::Json(snapshot(&st.store)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_survive_a_reopen_and_a_rolled_back_change_is_not_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let s = Store::open(&path).unwrap();
            s.write(|c| bump(c, counter::DPS_REGISTRATIONS, "dev-1"))
                .unwrap();
            s.write(|c| bump(c, counter::DPS_REGISTRATIONS, "dev-1"))
                .unwrap();
            let r: ApiResult<()> = s.write(|c| {
                bump(c, counter::DPS_REGISTRATIONS, "dev-2")?;
                Err(super::super::error::ApiError::conflict("rolled back"))
            });
            assert!(r.is_err());
            fault(&s, "api", Fault::Drop);
            fault(&s, "api", Fault::None);
        }
        let stats = snapshot(&Store::open(&path).unwrap()).unwrap();
        assert_eq!(stats.get(counter::DPS_REGISTRATIONS, "dev-1"), 2);
        assert_eq!(stats.get(counter::DPS_REGISTRATIONS, "dev-2"), 0);
        assert_eq!(stats.total(counter::DPS_REGISTRATIONS), 2);
        assert_eq!(
            stats.of(counter::FAULTS),
            BTreeMap::from([("api.drop".to_owned(), 1)])
        );
    }
}
