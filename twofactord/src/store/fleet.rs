//! The fleet store with its offline cache: the fleet's database (a [`Store`], PostgreSQL in the
//! daemon) in front, and a private SQLite file in the state directory that lets a host go on
//! serving, while the database is unreachable, the users it has served recently.
//!
//! Online, every call goes to the database. After a login there ends in success (or 2FA did
//! not apply), [`Store::served`] copies the user's login state into the cache: the state row,
//! the TOTP factor (secret sealed under the store key, bound to the user and `cache-totp`),
//! the security keys and the unused recovery codes, with the time the user was served.
//!
//! When the database cannot be reached ([`StoreError::is_unreachable`]):
//! - the reads a login makes are answered from the cache for users served within the
//!   `max_age` (`store.offline_max_age`); anyone else is refused (fail closed);
//! - a TOTP step, a recovery code or a key counter is accepted against the cache, with the
//!   cache's own replay protection (the last step, used codes and counters as last seen in the
//!   database, and everything accepted offline since), and recorded in a journal in the same
//!   durable transaction; failures count toward a local lockout and are journaled;
//! - audit records are journaled, marked `offline`;
//! - every other change (enrollment, admin actions) is refused with a clear message.
//!
//! Before any change goes to the database again, the journal is pushed, oldest first: the
//! steps, codes and counters are applied with the database's own conditional updates (a step
//! already superseded there is only audited), failures are counted toward the fleet-wide
//! lockout, audit records are appended. A code used offline on this host is then refused on
//! every host. [`Store::maintain`] pushes the journal, drops copies older than `max_age` and
//! refreshes the others from the database, so an admin's change on another host reaches the
//! cache within [`REFRESH_EVERY`].
//!
//! Limits (stated in the README): while hosts are cut off from the database, each can accept
//! a code that another host accepts too (at most once per host); an admin's reset reaches a
//! cut-off host only when it is back.
#![forbid(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::fmt;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::seal::{Binding, SealingKey};
use super::sqlite::{audit_of_row, key_of_row};
use super::*;

/// The cache's file in the state directory.
pub const CACHE_FILE: &str = "fleet-cache.sqlite3";

/// How often [`Store::maintain`] refreshes a cached user from the database.
pub const REFRESH_EVERY: i64 = 300;

/// At most this many users are refreshed per [`Store::maintain`] call.
const REFRESH_BATCH: usize = 100;

const CACHE_SCHEMA_VERSION: i64 = 1;

const CACHE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    uid INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    served_at INTEGER NOT NULL,
    refreshed_at INTEGER NOT NULL,
    has_state INTEGER NOT NULL,
    admin_required INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    lock_level INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER NOT NULL DEFAULT 0,
    last_totp_step INTEGER,
    required_since INTEGER
);
CREATE TABLE IF NOT EXISTS totp (
    uid INTEGER PRIMARY KEY REFERENCES users (uid) ON DELETE CASCADE,
    secret BLOB NOT NULL,
    algorithm TEXT NOT NULL,
    digits INTEGER NOT NULL,
    period INTEGER NOT NULL,
    created INTEGER NOT NULL,
    last_used INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS recovery (
    uid INTEGER NOT NULL REFERENCES users (uid) ON DELETE CASCADE,
    id INTEGER NOT NULL,
    salt BLOB NOT NULL,
    hash BLOB NOT NULL,
    used_at INTEGER,
    PRIMARY KEY (uid, id)
);
CREATE TABLE IF NOT EXISTS keys (
    uid INTEGER NOT NULL REFERENCES users (uid) ON DELETE CASCADE,
    name TEXT NOT NULL,
    credential_id BLOB NOT NULL,
    public_key BLOB NOT NULL,
    rp_id TEXT NOT NULL,
    sign_count INTEGER NOT NULL,
    user_verification INTEGER NOT NULL,
    source TEXT NOT NULL,
    created INTEGER NOT NULL,
    last_used INTEGER NOT NULL,
    PRIMARY KEY (uid, name)
);
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    uid INTEGER NOT NULL,
    value INTEGER NOT NULL DEFAULT 0,
    credential_id BLOB,
    max_failures INTEGER NOT NULL DEFAULT 0,
    lockout INTEGER NOT NULL DEFAULT 0,
    escalation INTEGER NOT NULL DEFAULT 0,
    max_lockout INTEGER NOT NULL DEFAULT 0,
    time INTEGER NOT NULL,
    user TEXT NOT NULL,
    event TEXT NOT NULL,
    result TEXT NOT NULL,
    service TEXT NOT NULL,
    rhost TEXT NOT NULL,
    actor TEXT NOT NULL,
    detail TEXT NOT NULL,
    refused_since INTEGER,
    failed TEXT
);
CREATE INDEX IF NOT EXISTS journal_uid ON journal (uid);
CREATE INDEX IF NOT EXISTS journal_open ON journal (failed, kind);
CREATE TABLE IF NOT EXISTS sealing (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    key_check BLOB NOT NULL
);
";

const KEY_CHECK: Binding<'static> = Binding {
    user: "",
    factor: "cache-key-check",
};
const KEY_CHECK_TEXT: &[u8] = b"twofactor fleet cache key check";

/// What the cache holds of one user: what a login reads.
#[derive(Debug, Clone)]
pub struct UserCopy {
    /// The user's state row, if the database has one.
    pub state: Option<UserState>,
    /// The authenticator app.
    pub totp: Option<TotpFactor>,
    /// Security keys.
    pub keys: Vec<KeyFactor>,
    /// Unused recovery codes.
    pub recovery: Vec<StoredCode>,
}

/// One journaled offline change, as pushed.
#[derive(Debug, Clone)]
enum Change {
    Totp(u64),
    Recovery(i64),
    Key(Vec<u8>, u32),
    Failure(RateLimit),
    Audit,
}

/// The offline cache: a private SQLite file. See the module documentation.
pub struct OfflineCache {
    conn: Connection,
    key: SealingKey,
}

impl fmt::Debug for OfflineCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OfflineCache")
    }
}

fn seal_binding<'a>(name: &'a str) -> Binding<'a> {
    Binding {
        user: name,
        factor: "cache-totp",
    }
}

/// `detail` marked as written while the database was unreachable.
fn offline_detail(detail: &str) -> String {
    if detail.is_empty() {
        "offline".to_string()
    } else {
        format!("{detail}; offline")
    }
}

impl OfflineCache {
    /// Opens (creating if needed) the cache in `state_dir` (which the daemon has prepared:
    /// root-only). Copies sealed under another key are dropped (the journal is kept: it holds
    /// no secret).
    pub fn open(state_dir: &Path, key: SealingKey) -> StoreResult<OfflineCache> {
        let path = state_dir.join(CACHE_FILE);
        if let Ok(m) = std::fs::symlink_metadata(&path)
            && !m.file_type().is_file()
        {
            return Err(StoreError(format!(
                "{} is not a regular file: refused",
                path.display()
            )));
        }
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        let conn = Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
                | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
                | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW,
        );
        nix::sys::stat::umask(old);
        let conn = conn.map_err(|e| StoreError(format!("{}: {e}", path.display())))?;
        Self::init(conn, key)
    }

    /// A cache in memory (tests).
    pub fn in_memory(key: SealingKey) -> StoreResult<OfflineCache> {
        Self::init(Connection::open_in_memory()?, key)
    }

    fn init(conn: Connection, key: SealingKey) -> StoreResult<OfflineCache> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Offline acceptances and the journal must survive a power cut: a code accepted is
        // never accepted again.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > CACHE_SCHEMA_VERSION {
            return Err(StoreError(format!(
                "the offline cache has schema version {version}, newer than this daemon's \
                 ({CACHE_SCHEMA_VERSION})"
            )));
        }
        conn.execute_batch(CACHE_SCHEMA)?;
        conn.pragma_update(None, "user_version", CACHE_SCHEMA_VERSION)?;
        let check: Option<Vec<u8>> = conn
            .query_row("SELECT key_check FROM sealing WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        let opens = check.as_deref().is_some_and(|c| {
            key.open(c, KEY_CHECK)
                .is_ok_and(|t| t.as_slice() == KEY_CHECK_TEXT)
        });
        if !opens {
            // Another key (rotated) or a new cache: the copies are dropped, never misread.
            let sealed = key.seal(KEY_CHECK_TEXT, KEY_CHECK)?;
            let tx = conn.unchecked_transaction()?;
            tx.execute("DELETE FROM users", [])?;
            tx.execute(
                "INSERT INTO sealing (id, key_check) VALUES (1, ?1)
                 ON CONFLICT(id) DO UPDATE SET key_check = excluded.key_check",
                params![sealed],
            )?;
            tx.commit()?;
        }
        Ok(OfflineCache { conn, key })
    }

    /// Stores `copy` of `uid` (`name`), served at `served_at` (`None`: keeps the time it was
    /// last served; nothing is stored for a user not cached yet), refreshed at `now`.
    pub fn put(
        &mut self,
        uid: u32,
        name: &str,
        copy: &UserCopy,
        served_at: Option<i64>,
        now: i64,
    ) -> StoreResult<()> {
        let secret = match &copy.totp {
            Some(t) => Some(self.key.seal(t.secret.as_bytes(), seal_binding(name))?),
            None => None,
        };
        let tx = self.conn.transaction()?;
        let served: Option<i64> = match served_at {
            Some(at) => Some(at),
            None => tx
                .query_row(
                    "SELECT served_at FROM users WHERE uid = ?1",
                    params![uid],
                    |r| r.get(0),
                )
                .optional()?,
        };
        let Some(served) = served else {
            return Ok(());
        };
        // Offline acceptances not yet pushed stay in force over an older copy.
        let local: Option<(Option<i64>, u32, u32, i64)> = tx
            .query_row(
                "SELECT last_totp_step, failures, lock_level, locked_until FROM users
                 WHERE uid = ?1",
                params![uid],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let pending = journal_has(&tx, uid)?;
        let journaled_step: Option<i64> = tx.query_row(
            "SELECT max(value) FROM journal WHERE uid = ?1 AND kind = 'totp'",
            params![uid],
            |r| r.get(0),
        )?;
        tx.execute("DELETE FROM users WHERE uid = ?1", params![uid])?;
        let st = copy.state.clone().unwrap_or_default();
        // A step accepted here offline (pushed or not) never goes back.
        let mut last_step = st.last_totp_step.map(|s| s as i64).max(journaled_step);
        let (mut failures, mut level, mut until) = (st.failures, st.lock_level, st.locked_until);
        if let (true, Some((step, f, l, u))) = (pending, local) {
            last_step = last_step.max(step);
            failures = failures.max(f);
            level = level.max(l);
            until = until.max(u);
        }
        tx.execute(
            "INSERT INTO users (uid, name, served_at, refreshed_at, has_state, admin_required,
                                failures, lock_level, locked_until, last_totp_step,
                                required_since)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                uid,
                name,
                served,
                now,
                copy.state.is_some(),
                st.admin_required,
                failures,
                level,
                until,
                last_step,
                st.required_since
            ],
        )?;
        if let (Some(t), Some(secret)) = (&copy.totp, secret) {
            tx.execute(
                "INSERT INTO totp (uid, secret, algorithm, digits, period, created, last_used)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    uid,
                    secret,
                    t.params.algorithm.as_str(),
                    t.params.digits,
                    t.params.period as i64,
                    t.created,
                    t.last_used
                ],
            )?;
        }
        let used_here = used_offline(&tx, uid)?;
        for c in &copy.recovery {
            if used_here.contains(&c.id) {
                continue;
            }
            tx.execute(
                "INSERT INTO recovery (uid, id, salt, hash) VALUES (?1, ?2, ?3, ?4)",
                params![uid, c.id, c.salt, c.hash],
            )?;
        }
        let counters = counters_offline(&tx, uid)?;
        for k in &copy.keys {
            let count = counters
                .iter()
                .filter(|(id, _)| id == &k.credential_id)
                .map(|(_, c)| *c)
                .fold(k.sign_count, u32::max);
            tx.execute(
                "INSERT INTO keys (uid, name, credential_id, public_key, rp_id, sign_count,
                                   user_verification, source, created, last_used)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    uid,
                    k.name,
                    k.credential_id,
                    k.public_key_cose,
                    k.rp_id,
                    count,
                    k.user_verification,
                    k.source,
                    k.created,
                    k.last_used
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Whether `uid` was served at or after `since`.
    fn fresh(&self, uid: u32, since: i64) -> StoreResult<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT served_at >= ?2 FROM users WHERE uid = ?1",
                params![uid, since],
                |r| r.get::<_, bool>(0),
            )
            .optional()?
            .unwrap_or(false))
    }

    /// The cached state of `uid` (`None`: the database had no state row).
    fn user_state(&self, uid: u32) -> StoreResult<Option<UserState>> {
        Ok(self
            .conn
            .query_row(
                "SELECT name, has_state, admin_required, failures, lock_level, locked_until,
                        last_totp_step, required_since
                 FROM users WHERE uid = ?1",
                params![uid],
                |r| {
                    let has: bool = r.get(1)?;
                    Ok(has.then_some(()).map(|()| -> rusqlite::Result<UserState> {
                        Ok(UserState {
                            uid,
                            name: r.get(0)?,
                            admin_required: r.get(2)?,
                            failures: r.get(3)?,
                            lock_level: r.get(4)?,
                            locked_until: r.get(5)?,
                            last_totp_step: r.get::<_, Option<i64>>(6)?.map(|s| s as u64),
                            required_since: r.get(7)?,
                        })
                    }))
                },
            )
            .optional()?
            .flatten()
            .transpose()?)
    }

    fn totp(&self, uid: u32) -> StoreResult<Option<TotpFactor>> {
        type Row = (String, Vec<u8>, String, u8, i64, i64, i64);
        let row: Option<Row> = self
            .conn
            .query_row(
                "SELECT u.name, t.secret, t.algorithm, t.digits, t.period, t.created,
                        t.last_used
                 FROM totp t JOIN users u ON u.uid = t.uid WHERE t.uid = ?1",
                params![uid],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                },
            )
            .optional()?;
        let Some((name, sealed, alg, digits, period, created, last_used)) = row else {
            return Ok(None);
        };
        let open = self.key.open(&sealed, seal_binding(&name))?;
        let algorithm = Algorithm::parse(&alg)
            .ok_or_else(|| StoreError(format!("offline cache: unknown algorithm {alg:?}")))?;
        let period = u64::try_from(period)
            .ok()
            .filter(|p| (1..=3600).contains(p))
            .ok_or_else(|| StoreError("offline cache: a bad TOTP period".into()))?;
        if !matches!(digits, 6 | 8) {
            return Err(StoreError(
                "offline cache: a bad number of TOTP digits".into(),
            ));
        }
        Ok(Some(TotpFactor {
            secret: TotpSecret::from_bytes(open.to_vec()),
            params: TotpParams {
                algorithm,
                digits,
                period,
            },
            created,
            last_used,
        }))
    }

    fn keys(&self, uid: u32) -> StoreResult<Vec<KeyFactor>> {
        let mut stmt = self.conn.prepare(
            "SELECT name, credential_id, public_key, rp_id, sign_count, user_verification,
                    source, created, last_used
             FROM keys WHERE uid = ?1 ORDER BY created, name",
        )?;
        let rows = stmt.query_map(params![uid], key_of_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn unused_recovery(&self, uid: u32) -> StoreResult<Vec<StoredCode>> {
        Ok(super::sqlite::recovery_codes(&self.conn, uid, false)?)
    }

    /// The copy's codes used since it was taken (offline here, or mirrored from online use
    /// here); a code used before is not in the copy, so its replay offline counts as a guess.
    fn used_recovery(&self, uid: u32) -> StoreResult<Vec<StoredCode>> {
        Ok(super::sqlite::recovery_codes(&self.conn, uid, true)?)
    }

    /// Applies to the cached copy of `uid` an acceptance the database made online (so a step,
    /// code or counter used online here is refused offline here too). Not journaled; a commit
    /// without its own fsync (the database holds the durable record).
    fn mirror(&mut self, uid: u32, change: &Change, now: i64) -> StoreResult<()> {
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        let r = self.apply(uid, change, now, None);
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        r.map(|_| ())
    }

    /// Accepts `change` for `uid` against the cache and journals it with `audit`, in one
    /// durable transaction. False when the cache refuses it (a replay; the journal is not
    /// touched).
    fn accept(
        &mut self,
        uid: u32,
        change: &Change,
        now: i64,
        audit: &AuditRecord,
    ) -> StoreResult<bool> {
        self.apply(uid, change, now, Some(audit))
    }

    /// Drops the copy of `uid` (it is no longer served offline).
    fn forget(&mut self, uid: u32) -> StoreResult<()> {
        self.conn
            .execute("DELETE FROM users WHERE uid = ?1", params![uid])?;
        Ok(())
    }

    fn apply(
        &mut self,
        uid: u32,
        change: &Change,
        now: i64,
        audit: Option<&AuditRecord>,
    ) -> StoreResult<bool> {
        let tx = self.conn.transaction()?;
        let changed = match change {
            Change::Totp(step) => {
                let step = i64::try_from(*step)
                    .map_err(|_| StoreError("a TOTP step out of range".into()))?;
                let n = tx.execute(
                    "UPDATE users SET last_totp_step = ?2, failures = 0, lock_level = 0
                     WHERE uid = ?1 AND (last_totp_step IS NULL OR last_totp_step < ?2)",
                    params![uid, step],
                )?;
                if n == 1 {
                    tx.execute(
                        "UPDATE totp SET last_used = ?2 WHERE uid = ?1",
                        params![uid, now],
                    )?;
                }
                n
            }
            Change::Recovery(id) => {
                let n = tx.execute(
                    "UPDATE recovery SET used_at = ?3 WHERE uid = ?1 AND id = ?2
                     AND used_at IS NULL",
                    params![uid, id, now],
                )?;
                if n == 1 {
                    tx.execute(
                        "UPDATE users SET failures = 0, lock_level = 0 WHERE uid = ?1",
                        params![uid],
                    )?;
                }
                n
            }
            Change::Key(credential, count) => {
                let n = tx.execute(
                    "UPDATE keys SET sign_count = ?3, last_used = ?4
                     WHERE uid = ?1 AND credential_id = ?2
                       AND (sign_count < ?3 OR (sign_count = 0 AND ?3 = 0))",
                    params![uid, credential, count, now],
                )?;
                if n == 1 {
                    tx.execute(
                        "UPDATE users SET failures = 0, lock_level = 0 WHERE uid = ?1",
                        params![uid],
                    )?;
                }
                n
            }
            Change::Failure(_) | Change::Audit => 1,
        };
        if changed != 1 {
            return Ok(false);
        }
        if let Some(audit) = audit {
            journal(&tx, uid, change, audit)?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// Counts a failure against the cached state and journals it.
    fn record_failure(
        &mut self,
        uid: u32,
        now: i64,
        limit: &RateLimit,
        audit: &AuditRecord,
    ) -> StoreResult<FailureOutcome> {
        let tx = self.conn.transaction()?;
        let outcome = super::sqlite::count_failure(&tx, uid, limit, now)?;
        journal(&tx, uid, &Change::Failure(limit.clone()), audit)?;
        tx.commit()?;
        Ok(outcome)
    }

    /// Journals an audit record, unless the journal already holds `cap` of them (a flood
    /// during a long outage): then it is dropped and false returned. Acceptances and failures
    /// are always journaled (the lockout bounds the failures).
    fn journal_audit(&mut self, record: &AuditRecord, cap: u64) -> StoreResult<bool> {
        let tx = self.conn.transaction()?;
        let held: i64 = tx.query_row(
            "SELECT count(*) FROM journal WHERE kind = 'audit' AND failed IS NULL",
            [],
            |r| r.get(0),
        )?;
        if u64::try_from(held).unwrap_or(u64::MAX) >= cap {
            return Ok(false);
        }
        journal(&tx, record.uid, &Change::Audit, record)?;
        tx.commit()?;
        Ok(true)
    }

    /// The oldest `limit` journal entries not yet pushed, oldest first (audit records only
    /// with `audit_too`).
    fn pending(
        &self,
        limit: usize,
        audit_too: bool,
    ) -> StoreResult<Vec<(i64, u32, Change, AuditRecord)>> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, kind, uid, value, credential_id, max_failures, lockout, escalation,
                    max_lockout, time, uid, user, event, result, service, rhost, actor, detail
             FROM journal WHERE failed IS NULL AND (?2 OR kind <> 'audit')
             ORDER BY seq LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit as i64, audit_too], |r| {
            let kind: String = r.get(1)?;
            let value: i64 = r.get(3)?;
            let change = match kind.as_str() {
                "totp" => u64::try_from(value).ok().map(Change::Totp),
                "recovery" => Some(Change::Recovery(value)),
                "key" => {
                    let credential: Option<Vec<u8>> = r.get(4)?;
                    u32::try_from(value)
                        .ok()
                        .map(|n| Change::Key(credential.unwrap_or_default(), n))
                }
                "failure" => {
                    let int = |i: usize| -> rusqlite::Result<Option<u32>> {
                        Ok(u32::try_from(r.get::<_, i64>(i)?).ok())
                    };
                    match (int(5)?, int(6)?, int(7)?, int(8)?) {
                        (Some(max_failures), Some(lockout), Some(escalation), Some(max)) => {
                            Some(Change::Failure(RateLimit {
                                max_failures,
                                lockout: std::time::Duration::from_secs(u64::from(lockout)),
                                escalation,
                                max_lockout: std::time::Duration::from_secs(u64::from(max)),
                            }))
                        }
                        _ => None,
                    }
                }
                "audit" => Some(Change::Audit),
                _ => None,
            };
            Ok((r.get(0)?, r.get(2)?, change, kind, audit_of_row(r, 9)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, uid, change, kind, audit) = row?;
            match change {
                Some(c) => out.push((seq, uid, c, audit)),
                None => self.mark_failed(seq, &format!("unreadable entry ({kind:?})"))?,
            }
        }
        Ok(out)
    }

    fn done(&self, seq: i64) -> StoreResult<()> {
        self.conn
            .execute("DELETE FROM journal WHERE seq = ?1", params![seq])?;
        Ok(())
    }

    /// Notes a refused push of entry `seq` at `now`; returns since when it is refused.
    fn refused_since(&self, seq: i64, now: i64) -> StoreResult<i64> {
        Ok(self.conn.query_row(
            "UPDATE journal SET refused_since = coalesce(refused_since, ?2) WHERE seq = ?1
             RETURNING refused_since",
            params![seq, now],
            |r| r.get(0),
        )?)
    }

    fn mark_failed(&self, seq: i64, why: &str) -> StoreResult<()> {
        self.conn.execute(
            "UPDATE journal SET failed = ?2 WHERE seq = ?1",
            params![seq, why],
        )?;
        Ok(())
    }

    fn has_pending(&self, audit_too: bool) -> StoreResult<bool> {
        Ok(self.conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM journal WHERE failed IS NULL
                           AND (?1 OR kind <> 'audit'))",
            params![audit_too],
            |r| r.get(0),
        )?)
    }

    /// Drops the copies of users not served since `before`; returns how many.
    fn expire(&mut self, before: i64) -> StoreResult<usize> {
        Ok(self
            .conn
            .execute("DELETE FROM users WHERE served_at < ?1", params![before])?)
    }

    /// Users cached, with their names, whose copy was refreshed before `before`, oldest
    /// first, at most `n`.
    fn stale(&self, before: i64, n: usize) -> StoreResult<Vec<(u32, String)>> {
        let mut stmt = self.conn.prepare(
            "SELECT uid, name FROM users WHERE refreshed_at < ?1 ORDER BY refreshed_at LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![before, n as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every cached uid (the users this host may serve offline).
    #[cfg(test)]
    fn uids(&self) -> StoreResult<Vec<u32>> {
        let mut stmt = self.conn.prepare("SELECT uid FROM users ORDER BY uid")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn journal_has(tx: &Transaction<'_>, uid: u32) -> rusqlite::Result<bool> {
    tx.query_row(
        "SELECT EXISTS(SELECT 1 FROM journal WHERE uid = ?1 AND failed IS NULL)",
        params![uid],
        |r| r.get(0),
    )
}

/// Recovery code ids used offline and not pushed (set-aside ones stay used).
fn used_offline(tx: &Transaction<'_>, uid: u32) -> rusqlite::Result<Vec<i64>> {
    let mut stmt = tx.prepare("SELECT value FROM journal WHERE uid = ?1 AND kind = 'recovery'")?;
    let rows = stmt.query_map(params![uid], |r| r.get(0))?;
    rows.collect()
}

/// Key counters accepted offline and not pushed (set-aside ones included).
fn counters_offline(tx: &Transaction<'_>, uid: u32) -> rusqlite::Result<Vec<(Vec<u8>, u32)>> {
    let mut stmt =
        tx.prepare("SELECT credential_id, value FROM journal WHERE uid = ?1 AND kind = 'key'")?;
    let rows = stmt.query_map(params![uid], |r| {
        Ok((
            r.get::<_, Option<Vec<u8>>>(0)?.unwrap_or_default(),
            u32::try_from(r.get::<_, i64>(1)?).unwrap_or(u32::MAX),
        ))
    })?;
    rows.collect()
}

fn journal(tx: &Transaction<'_>, uid: u32, change: &Change, a: &AuditRecord) -> StoreResult<()> {
    let (kind, value, credential, limit): (&str, i64, Option<&[u8]>, Option<&RateLimit>) =
        match change {
            Change::Totp(step) => (
                "totp",
                i64::try_from(*step).map_err(|_| StoreError("a TOTP step out of range".into()))?,
                None,
                None,
            ),
            Change::Recovery(id) => ("recovery", *id, None, None),
            Change::Key(c, n) => ("key", i64::from(*n), Some(c.as_slice()), None),
            Change::Failure(l) => ("failure", 0, None, Some(l)),
            Change::Audit => ("audit", 0, None, None),
        };
    let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    tx.execute(
        "INSERT INTO journal (kind, uid, value, credential_id, max_failures, lockout, escalation,
                              max_lockout, time, user, event, result, service, rhost, actor,
                              detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        params![
            kind,
            uid,
            value,
            credential,
            limit.map_or(0, |l| l.max_failures),
            limit.map_or(0, |l| secs(l.lockout)),
            limit.map_or(0, |l| l.escalation),
            limit.map_or(0, |l| secs(l.max_lockout)),
            a.time,
            a.user,
            a.event,
            a.result,
            a.service,
            a.rhost,
            a.actor,
            offline_detail(&a.detail)
        ],
    )?;
    Ok(())
}

/// The fleet's database with an offline cache in front of it. See the module documentation.
pub struct FleetStore {
    remote: Box<dyn Store>,
    cache: OfflineCache,
    /// Users served longer ago than this (seconds) are not served offline.
    max_age: i64,
    /// The clock for "served within max_age" on reads (which get no `now`).
    clock: fn() -> i64,
    /// Whether the last call found the database unreachable (for the log: one line per
    /// outage, not one per call).
    offline: Cell<bool>,
    /// What the daemon should log, handed over by [`Store::maintain`] (the store imports no
    /// log).
    notes: RefCell<Vec<String>>,
    /// At most this many audit records wait in the journal ([`AUDIT_CAP`]).
    audit_cap: u64,
    /// Users answered from the cache since their last online login: their next
    /// [`Store::served`] does not extend how long they are served offline.
    served_offline: RefCell<std::collections::BTreeSet<u32>>,
    /// Whether the last change went to the cache (the database unreachable).
    went_offline: bool,
    /// Audit records dropped because the journal held `audit_cap`.
    dropped: u64,
}

/// A journal entry the database refuses (not "unreachable") for this long (seconds) is set
/// aside: the other entries go on.
const SET_ASIDE_AFTER: i64 = 3600;

/// At most this many journal entries are pushed per [`Store::maintain`] round (the store is
/// held meanwhile; the rest follows in the next rounds).
const PUSH_PER_ROUND: usize = 2000;

/// At most this many audit records wait in the offline journal; more are dropped (and
/// counted in the log). Acceptances and failures are always kept.
pub const AUDIT_CAP: u64 = 100_000;

impl fmt::Debug for FleetStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetStore")
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

fn system_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Why the database is unreachable (the error without its common beginning).
fn cause(e: &StoreError) -> &str {
    e.0.strip_prefix(UNREACHABLE)
        .map_or(e.0.as_str(), |rest| rest.trim_start_matches(": "))
}

/// What is refused while the database is unreachable.
fn refused(what: &str, e: &StoreError) -> StoreError {
    StoreError::unreachable(format_args!(
        "{what} must wait until it is back (logins of users this host served recently go \
         on): {}",
        cause(e)
    ))
}

impl FleetStore {
    /// The database `remote` with `cache` in front; users served within `max_age` seconds
    /// are served offline.
    pub fn new(remote: Box<dyn Store>, cache: OfflineCache, max_age: i64) -> FleetStore {
        FleetStore {
            remote,
            cache,
            max_age,
            clock: system_now,
            offline: Cell::new(false),
            notes: RefCell::new(Vec::new()),
            audit_cap: AUDIT_CAP,
            served_offline: RefCell::new(std::collections::BTreeSet::new()),
            went_offline: false,
            dropped: 0,
        }
    }

    /// Uses `clock` for the age of cached users on reads (tests).
    pub fn with_clock(mut self, clock: fn() -> i64) -> FleetStore {
        self.clock = clock;
        self
    }

    /// Something for the daemon's log (bounded: a flood keeps the first lines).
    fn say(&self, line: String) {
        let mut notes = self.notes.borrow_mut();
        if notes.len() < 100 {
            notes.push(line);
        }
    }

    /// Notes whether the database answered; the change goes to the log.
    fn note(&self, reachable: bool, e: Option<&StoreError>) {
        if self.offline.get() == reachable {
            self.offline.set(!reachable);
            if reachable {
                self.say("the fleet database is reachable again".into());
            } else if let Some(e) = e {
                self.say(format!(
                    "{e}; serving the users this host served recently from its offline cache"
                ));
            }
        }
    }

    /// A read: the database, else the cache for a recently served user.
    fn read<T>(
        &self,
        uid: u32,
        online: impl FnOnce(&dyn Store) -> StoreResult<T>,
        offline: impl FnOnce(&OfflineCache) -> StoreResult<T>,
    ) -> StoreResult<T> {
        match online(self.remote.as_ref()) {
            Err(e) if e.is_unreachable() => {
                self.note(false, Some(&e));
                let since = (self.clock)().saturating_sub(self.max_age);
                if self.cache.fresh(uid, since)? {
                    self.served_offline.borrow_mut().insert(uid);
                    offline(&self.cache)
                } else {
                    Err(StoreError::unreachable(format_args!(
                        "uid {uid} was not served by this host in the last {} \
                         (store.offline_max_age): refused ({})",
                        humantime::format_duration(std::time::Duration::from_secs(
                            self.max_age.max(0) as u64
                        )),
                        cause(&e)
                    )))
                }
            }
            other => {
                if other.is_ok() {
                    self.note(true, None);
                }
                other
            }
        }
    }

    /// Pushes the journal to the database, oldest first: the acceptances and failures (the
    /// decisions, few: the lockout bounds them) all, audit records too with `audit_too`, at
    /// most `max` entries in all. An unreachable database stops the push (the rest waits); an
    /// entry the database refuses otherwise is set aside and logged.
    fn push(&mut self, audit_too: bool, max: usize) -> StoreResult<()> {
        if !self.cache.has_pending(audit_too)? {
            return Ok(());
        }
        let mut pushed = 0usize;
        let mut users = std::collections::BTreeSet::new();
        // One entry first: while the database is down, a call costs one row, not the journal.
        let mut batch = 1;
        while pushed < max {
            let entries = self.cache.pending(batch.min(max - pushed), audit_too)?;
            if entries.is_empty() {
                break;
            }
            batch = 500;
            for (seq, uid, change, audit) in entries {
                let r = match &change {
                    Change::Totp(step) => self
                        .remote
                        .accept_totp_step(uid, *step, audit.time, &audit)
                        .map(|ok| (!ok).then_some("the step was already used (superseded)")),
                    Change::Recovery(id) => self
                        .remote
                        .consume_recovery(uid, *id, audit.time, &audit)
                        .map(|ok| {
                            (!ok).then_some(
                                "the recovery code was used elsewhere too, or removed, while this \
                             host was offline",
                            )
                        }),
                    Change::Key(credential, count) => self
                        .remote
                        .accept_key_assertion(uid, credential, *count, audit.time, &audit)
                        .map(|ok| (!ok).then_some("the key's counter had moved on (superseded)")),
                    Change::Failure(limit) => self
                        .remote
                        .record_failure(uid, &audit.user, audit.time, limit, &audit)
                        .map(|_| None),
                    Change::Audit => self.remote.append_audit(&audit).map(|()| None),
                };
                match r {
                    Ok(None) => {}
                    Ok(Some(why)) => {
                        // Not applied: audited as it happened, with why.
                        let record = AuditRecord {
                            detail: format!("{}; not applied: {why}", audit.detail),
                            ..audit.clone()
                        };
                        if let Err(e) = self.remote.append_audit(&record)
                            && e.is_unreachable()
                        {
                            self.note(false, Some(&e));
                            return Err(e);
                        }
                    }
                    Err(e) if e.is_unreachable() => {
                        self.note(false, Some(&e));
                        return Err(e);
                    }
                    Err(e) => {
                        // The database answered but refused: often passing (a lock or
                        // statement timeout, a read-only standby after a failover): the push
                        // stops and this call fails closed; tried again later. Set aside only
                        // when refused for SET_ASIDE_AFTER (its acceptance stays in force here).
                        let now = (self.clock)();
                        let since = self.cache.refused_since(seq, now)?;
                        if now.saturating_sub(since) < SET_ASIDE_AFTER {
                            self.say(format!(
                                "offline journal entry {seq} (uid {uid}) refused by the fleet \
                                 database: {e}; tried again later"
                            ));
                            return Err(e);
                        }
                        self.say(format!(
                            "offline journal entry {seq} (uid {uid}) refused by the fleet \
                             database for {} s: {e}; set aside (its acceptance stays in force \
                             on this host)",
                            now.saturating_sub(since)
                        ));
                        self.cache.mark_failed(seq, &e.0)?;
                        continue;
                    }
                }
                self.cache.done(seq)?;
                pushed += 1;
                if !matches!(change, Change::Audit) {
                    users.insert((uid, audit.user.clone()));
                }
            }
        }
        self.note(true, None);
        if pushed > 0 {
            self.say(format!(
                "pushed {pushed} offline changes to the fleet database"
            ));
        }
        let now = (self.clock)();
        for (uid, name) in users {
            if !matches!(self.refresh(uid, &name, None, now), Ok(true)) {
                self.cache.forget(uid)?;
            }
        }
        Ok(())
    }

    /// A change: the journal is pushed first (what was accepted offline is in the database
    /// before anything else), then `online`; `offline` when the database is unreachable.
    fn change<T>(
        &mut self,
        online: impl FnOnce(&mut dyn Store) -> StoreResult<T>,
        offline: impl FnOnce(&mut Self, StoreError) -> StoreResult<T>,
    ) -> StoreResult<T> {
        self.went_offline = false;
        // The decisions taken offline reach the database before this change does.
        let r = match self.push(false, usize::MAX) {
            Ok(()) => online(self.remote.as_mut()),
            Err(e) => Err(e),
        };
        match r {
            Err(e) if e.is_unreachable() => {
                self.note(false, Some(&e));
                self.went_offline = true;
                offline(self, e)
            }
            other => {
                if other.is_ok() {
                    self.note(true, None);
                }
                other
            }
        }
    }

    /// An acceptance: online, mirrored into the cached copy; offline, against the cache.
    fn acceptance(
        &mut self,
        uid: u32,
        change: Change,
        now: i64,
        audit: &AuditRecord,
        online: impl FnOnce(&mut dyn Store) -> StoreResult<bool>,
    ) -> StoreResult<bool> {
        let ok = self.change(online, |s, _| s.accept_offline(uid, &change, now, audit))?;
        if ok
            && !self.went_offline
            && let Err(e) = self.cache.mirror(uid, &change, now)
        {
            // The copy could let this step or code through again offline: dropped.
            self.say(format!(
                "offline cache: uid {uid}'s copy dropped (cannot record an acceptance: {e})"
            ));
            self.cache.forget(uid)?;
        }
        Ok(ok)
    }

    /// A change that only the database may make.
    fn online_only<T>(
        &mut self,
        what: &str,
        online: impl FnOnce(&mut dyn Store) -> StoreResult<T>,
    ) -> StoreResult<T> {
        self.change(online, |_, e| Err(refused(what, &e)))
    }

    /// An offline acceptance for a user served recently.
    fn accept_offline(
        &mut self,
        uid: u32,
        change: &Change,
        now: i64,
        audit: &AuditRecord,
    ) -> StoreResult<bool> {
        if !self.cache.fresh(uid, now.saturating_sub(self.max_age))? {
            return Err(StoreError::unreachable(format_args!(
                "uid {uid} was not served by this host recently: refused"
            )));
        }
        self.served_offline.borrow_mut().insert(uid);
        self.cache.accept(uid, change, now, audit)
    }

    /// Copies the user from the database into the cache (`served_at`: `None` keeps the time
    /// they were last served, and caches no one new). False when the database is unreachable
    /// (the copy left as it is).
    fn refresh(
        &mut self,
        uid: u32,
        name: &str,
        served_at: Option<i64>,
        now: i64,
    ) -> StoreResult<bool> {
        let copy = (|| {
            Ok::<_, StoreError>(UserCopy {
                state: self.remote.user_state(uid)?,
                totp: self.remote.totp(uid)?,
                keys: self.remote.keys(uid)?,
                recovery: self.remote.unused_recovery(uid)?,
            })
        })();
        match copy {
            Ok(copy) => self
                .cache
                .put(uid, name, &copy, served_at, now)
                .map(|()| true),
            Err(e) if e.is_unreachable() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Store for FleetStore {
    fn user_state(&self, uid: u32) -> StoreResult<Option<UserState>> {
        self.read(uid, |r| r.user_state(uid), |c| c.user_state(uid))
    }

    fn totp(&self, uid: u32) -> StoreResult<Option<TotpFactor>> {
        self.read(uid, |r| r.totp(uid), |c| c.totp(uid))
    }

    fn put_pending_totp(&mut self, pending: &PendingTotp) -> StoreResult<()> {
        self.online_only("enrollment", |r| r.put_pending_totp(pending))
    }

    fn pending_totp(&self, id: &str) -> StoreResult<Option<PendingTotp>> {
        self.remote.pending_totp(id)
    }

    fn drop_expired_pending(&mut self, now: i64) -> StoreResult<usize> {
        self.online_only("dropping expired enrollments", |r| {
            r.drop_expired_pending(now)
        })
    }

    fn activate_totp(
        &mut self,
        uid: u32,
        name: &str,
        pending_id: &str,
        accepted_step: u64,
        now: i64,
        codes: Codes<'_>,
        existing: Existing,
    ) -> StoreResult<Activation> {
        let done = self.online_only("enrollment", |r| {
            r.activate_totp(uid, name, pending_id, accepted_step, now, codes, existing)
        })?;
        self.after_admin_change(uid)?;
        Ok(done)
    }

    fn accept_totp_step(
        &mut self,
        uid: u32,
        step: u64,
        now: i64,
        audit: &AuditRecord,
    ) -> StoreResult<bool> {
        self.acceptance(uid, Change::Totp(step), now, audit, |r| {
            r.accept_totp_step(uid, step, now, audit)
        })
    }

    fn unused_recovery(&self, uid: u32) -> StoreResult<Vec<StoredCode>> {
        self.read(uid, |r| r.unused_recovery(uid), |c| c.unused_recovery(uid))
    }

    fn used_recovery(&self, uid: u32) -> StoreResult<Vec<StoredCode>> {
        self.read(uid, |r| r.used_recovery(uid), |c| c.used_recovery(uid))
    }

    /// Asked of the database only: enrollment waits for it (`add_keys`).
    fn credential_enrolled(&self, rp_id: &str, credential_id: &[u8]) -> StoreResult<bool> {
        self.remote
            .credential_enrolled(rp_id, credential_id)
            .map_err(|e| {
                if e.is_unreachable() {
                    self.note(false, Some(&e));
                    refused("enrollment", &e)
                } else {
                    e
                }
            })
    }

    fn consume_recovery(
        &mut self,
        uid: u32,
        id: i64,
        now: i64,
        audit: &AuditRecord,
    ) -> StoreResult<bool> {
        self.acceptance(uid, Change::Recovery(id), now, audit, |r| {
            r.consume_recovery(uid, id, now, audit)
        })
    }

    fn replace_recovery(&mut self, uid: u32, codes: &[StoredCode]) -> StoreResult<()> {
        self.online_only("new recovery codes", |r| r.replace_recovery(uid, codes))?;
        self.after_admin_change(uid)
    }

    fn record_failure(
        &mut self,
        uid: u32,
        name: &str,
        now: i64,
        limit: &RateLimit,
        audit: &AuditRecord,
    ) -> StoreResult<FailureOutcome> {
        self.change(
            |r| r.record_failure(uid, name, now, limit, audit),
            |s, e| {
                if !s.cache.fresh(uid, now.saturating_sub(s.max_age))? {
                    return Err(e);
                }
                s.cache.record_failure(uid, now, limit, audit)
            },
        )
    }

    fn set_admin_required(&mut self, uid: u32, name: &str, required: bool) -> StoreResult<()> {
        self.online_only("an admin's change", |r| {
            r.set_admin_required(uid, name, required)
        })?;
        self.after_admin_change(uid)
    }

    fn start_grace(&mut self, uid: u32, name: &str, now: i64) -> StoreResult<i64> {
        let since =
            self.online_only("starting a grace period", |r| r.start_grace(uid, name, now))?;
        self.after_admin_change(uid)?;
        Ok(since)
    }

    fn set_grace_start(&mut self, uid: u32, name: &str, since: Option<i64>) -> StoreResult<()> {
        self.online_only("an admin's change", |r| r.set_grace_start(uid, name, since))?;
        self.after_admin_change(uid)
    }

    fn reset(&mut self, uid: u32) -> StoreResult<()> {
        self.online_only("an admin's reset", |r| r.reset(uid))?;
        self.after_admin_change(uid)
    }

    fn keys(&self, uid: u32) -> StoreResult<Vec<KeyFactor>> {
        self.read(uid, |r| r.keys(uid), |c| c.keys(uid))
    }

    fn add_keys(
        &mut self,
        uid: u32,
        name: &str,
        keys: &[KeyFactor],
        codes: Codes<'_>,
        existing: Existing,
        audit: &AuditRecord,
    ) -> StoreResult<Activation> {
        let done = self.online_only("enrollment", |r| {
            r.add_keys(uid, name, keys, codes, existing, audit)
        })?;
        self.after_admin_change(uid)?;
        Ok(done)
    }

    fn accept_key_assertion(
        &mut self,
        uid: u32,
        credential_id: &[u8],
        sign_count: u32,
        now: i64,
        audit: &AuditRecord,
    ) -> StoreResult<bool> {
        self.acceptance(
            uid,
            Change::Key(credential_id.to_vec(), sign_count),
            now,
            audit,
            |r| r.accept_key_assertion(uid, credential_id, sign_count, now, audit),
        )
    }

    fn remove_key(&mut self, uid: u32, name: &str, audit: &AuditRecord) -> StoreResult<bool> {
        let removed = self.online_only("removing a key", |r| r.remove_key(uid, name, audit))?;
        self.after_admin_change(uid)?;
        Ok(removed)
    }

    fn unlock(&mut self, uid: u32) -> StoreResult<()> {
        self.online_only("an admin's unlock", |r| r.unlock(uid))?;
        self.after_admin_change(uid)
    }

    fn append_audit(&mut self, record: &AuditRecord) -> StoreResult<()> {
        self.change(
            |r| r.append_audit(record),
            |s, _| {
                if !s.cache.journal_audit(record, s.audit_cap)? {
                    s.dropped = s.dropped.saturating_add(1);
                    if s.dropped == 1 || s.dropped.is_power_of_two() {
                        s.say(format!(
                            "offline journal: {} audit records held, {} more dropped (the \
                             daemon's log has them)",
                            s.audit_cap, s.dropped
                        ));
                    }
                }
                Ok(())
            },
        )
    }

    fn prune_audit(&mut self, before: i64, keep_max: u64, batch: u32) -> StoreResult<u64> {
        self.online_only("audit retention", |r| {
            r.prune_audit(before, keep_max, batch)
        })
    }

    fn audit(&self, uid: Option<u32>, since: i64, limit: u32) -> StoreResult<Vec<AuditRecord>> {
        self.remote.audit(uid, since, limit)
    }

    fn known_uids(&self) -> StoreResult<Vec<u32>> {
        self.remote.known_uids()
    }

    fn offline_uids(&self) -> StoreResult<Vec<u32>> {
        // Never the cache's (fewer) users: the module's snapshot must keep asking everyone
        // with a factor; an error keeps the last snapshot.
        self.remote.offline_uids()
    }

    fn keeps_offline_copies(&self) -> bool {
        true
    }

    fn served(&mut self, uid: u32, name: &str, now: i64) -> StoreResult<()> {
        if self.served_offline.borrow_mut().remove(&uid) {
            // Served from the cache: the time it was served online stays (offline logins do
            // not extend how long a user is served offline).
            return Ok(());
        }
        self.refresh(uid, name, Some(now), now).map(|_| ())
    }

    fn maintain(&mut self, now: i64) -> StoreResult<Vec<String>> {
        let upkeep = (|| {
            match self.push(true, PUSH_PER_ROUND) {
                Err(e) if e.is_unreachable() => return Ok(()),
                other => other?,
            }
            let expired = self.cache.expire(now.saturating_sub(self.max_age))?;
            if expired > 0 {
                self.say(format!(
                    "offline cache: dropped {expired} users not served within \
                     store.offline_max_age"
                ));
            }
            for (uid, name) in self
                .cache
                .stale(now.saturating_sub(REFRESH_EVERY), REFRESH_BATCH)?
            {
                if let Err(e) = self.refresh(uid, &name, None, now) {
                    // Never a stale copy: one that cannot be refreshed is dropped (the user is
                    // not served offline until their next login here).
                    self.say(format!(
                        "offline cache: the copy of {name} was dropped (cannot refresh it: {e})"
                    ));
                    self.cache.forget(uid)?;
                }
            }
            Ok(())
        })();
        let notes = std::mem::take(&mut *self.notes.borrow_mut());
        upkeep.map(|()| notes)
    }
}

impl FleetStore {
    /// After a change made through this host (an admin's, an enrollment): the cached copy
    /// follows at once, or is dropped when it cannot (never a copy older than the change).
    fn after_admin_change(&mut self, uid: u32) -> StoreResult<()> {
        let name: Option<String> = self
            .cache
            .conn
            .query_row("SELECT name FROM users WHERE uid = ?1", params![uid], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(name) = name else {
            return Ok(());
        };
        match self.refresh(uid, &name, None, (self.clock)()) {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => self.cache.forget(uid),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::store::SqliteStore;

    /// A database that can be cut off: every call fails as unreachable while `down`.
    struct Switch {
        inner: SqliteStore,
        down: Arc<AtomicBool>,
        /// Every call refused (the database answers, but no: a read-only standby).
        refuse: Arc<AtomicBool>,
    }

    impl Switch {
        fn up(&self) -> StoreResult<()> {
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::unreachable(
                    "cannot connect to PostgreSQL (test)",
                ));
            }
            if self.refuse.load(Ordering::SeqCst) {
                return Err(StoreError(
                    "PostgreSQL: cannot execute UPDATE in a read-only transaction (SQLSTATE \
                     25006)"
                        .into(),
                ));
            }
            Ok(())
        }
    }

    macro_rules! pass {
        ($self:ident . $m:ident ( $($a:expr),* )) => {{
            $self.up()?;
            $self.inner.$m($($a),*)
        }};
    }

    impl Store for Switch {
        fn user_state(&self, uid: u32) -> StoreResult<Option<UserState>> {
            pass!(self.user_state(uid))
        }
        fn totp(&self, uid: u32) -> StoreResult<Option<TotpFactor>> {
            pass!(self.totp(uid))
        }
        fn put_pending_totp(&mut self, p: &PendingTotp) -> StoreResult<()> {
            pass!(self.put_pending_totp(p))
        }
        fn pending_totp(&self, id: &str) -> StoreResult<Option<PendingTotp>> {
            pass!(self.pending_totp(id))
        }
        fn drop_expired_pending(&mut self, now: i64) -> StoreResult<usize> {
            pass!(self.drop_expired_pending(now))
        }
        fn activate_totp(
            &mut self,
            uid: u32,
            name: &str,
            id: &str,
            step: u64,
            now: i64,
            codes: Codes<'_>,
            existing: Existing,
        ) -> StoreResult<Activation> {
            pass!(self.activate_totp(uid, name, id, step, now, codes, existing))
        }
        fn accept_totp_step(
            &mut self,
            uid: u32,
            step: u64,
            now: i64,
            a: &AuditRecord,
        ) -> StoreResult<bool> {
            pass!(self.accept_totp_step(uid, step, now, a))
        }
        fn unused_recovery(&self, uid: u32) -> StoreResult<Vec<StoredCode>> {
            pass!(self.unused_recovery(uid))
        }
        fn used_recovery(&self, uid: u32) -> StoreResult<Vec<StoredCode>> {
            pass!(self.used_recovery(uid))
        }
        fn credential_enrolled(&self, rp_id: &str, credential_id: &[u8]) -> StoreResult<bool> {
            pass!(self.credential_enrolled(rp_id, credential_id))
        }
        fn consume_recovery(
            &mut self,
            uid: u32,
            id: i64,
            now: i64,
            a: &AuditRecord,
        ) -> StoreResult<bool> {
            pass!(self.consume_recovery(uid, id, now, a))
        }
        fn replace_recovery(&mut self, uid: u32, codes: &[StoredCode]) -> StoreResult<()> {
            pass!(self.replace_recovery(uid, codes))
        }
        fn record_failure(
            &mut self,
            uid: u32,
            name: &str,
            now: i64,
            limit: &RateLimit,
            a: &AuditRecord,
        ) -> StoreResult<FailureOutcome> {
            pass!(self.record_failure(uid, name, now, limit, a))
        }
        fn set_admin_required(&mut self, uid: u32, name: &str, r: bool) -> StoreResult<()> {
            pass!(self.set_admin_required(uid, name, r))
        }
        fn start_grace(&mut self, uid: u32, name: &str, now: i64) -> StoreResult<i64> {
            pass!(self.start_grace(uid, name, now))
        }
        fn set_grace_start(&mut self, uid: u32, name: &str, s: Option<i64>) -> StoreResult<()> {
            pass!(self.set_grace_start(uid, name, s))
        }
        fn reset(&mut self, uid: u32) -> StoreResult<()> {
            pass!(self.reset(uid))
        }
        fn keys(&self, uid: u32) -> StoreResult<Vec<KeyFactor>> {
            pass!(self.keys(uid))
        }
        fn add_keys(
            &mut self,
            uid: u32,
            name: &str,
            keys: &[KeyFactor],
            codes: Codes<'_>,
            existing: Existing,
            a: &AuditRecord,
        ) -> StoreResult<Activation> {
            pass!(self.add_keys(uid, name, keys, codes, existing, a))
        }
        fn accept_key_assertion(
            &mut self,
            uid: u32,
            c: &[u8],
            n: u32,
            now: i64,
            a: &AuditRecord,
        ) -> StoreResult<bool> {
            pass!(self.accept_key_assertion(uid, c, n, now, a))
        }
        fn remove_key(&mut self, uid: u32, name: &str, a: &AuditRecord) -> StoreResult<bool> {
            pass!(self.remove_key(uid, name, a))
        }
        fn unlock(&mut self, uid: u32) -> StoreResult<()> {
            pass!(self.unlock(uid))
        }
        fn append_audit(&mut self, r: &AuditRecord) -> StoreResult<()> {
            pass!(self.append_audit(r))
        }
        fn prune_audit(&mut self, before: i64, keep: u64, batch: u32) -> StoreResult<u64> {
            pass!(self.prune_audit(before, keep, batch))
        }
        fn audit(&self, uid: Option<u32>, since: i64, limit: u32) -> StoreResult<Vec<AuditRecord>> {
            pass!(self.audit(uid, since, limit))
        }
        fn known_uids(&self) -> StoreResult<Vec<u32>> {
            pass!(self.known_uids())
        }
        fn offline_uids(&self) -> StoreResult<Vec<u32>> {
            pass!(self.offline_uids())
        }
    }

    const UID: u32 = 1000;
    const OTHER: u32 = 1001;
    static NOW: AtomicI64 = AtomicI64::new(1_000_000);

    fn now() -> i64 {
        NOW.load(Ordering::SeqCst)
    }

    fn key() -> SealingKey {
        SealingKey::from_bytes([9; 32])
    }

    fn limit() -> RateLimit {
        RateLimit {
            max_failures: 3,
            lockout: Duration::from_secs(60),
            escalation: 2,
            max_lockout: Duration::from_secs(3600),
        }
    }

    fn login(uid: u32, detail: &str) -> AuditRecord {
        AuditRecord {
            time: now(),
            uid,
            user: format!("user{uid}"),
            event: "login".into(),
            result: "success".into(),
            detail: detail.into(),
            ..Default::default()
        }
    }

    /// A fleet store over a database where `UID` and `OTHER` have an app (last step 100) and
    /// three recovery codes; both are served once `serve` is called.
    fn world() -> (FleetStore, Arc<AtomicBool>) {
        let (s, down, _) = world_refusing();
        (s, down)
    }

    /// [`world`], with the switch that makes the database refuse every call.
    fn world_refusing() -> (FleetStore, Arc<AtomicBool>, Arc<AtomicBool>) {
        let down = Arc::new(AtomicBool::new(false));
        let refuse = Arc::new(AtomicBool::new(false));
        let mut db = SqliteStore::in_memory().unwrap();
        for uid in [UID, OTHER] {
            let p = PendingTotp {
                id: format!("p{uid}"),
                uid,
                secret: TotpSecret::from_bytes(vec![uid as u8; 20]),
                params: TotpParams {
                    algorithm: Algorithm::SHA1,
                    digits: 6,
                    period: 30,
                },
                expires: i64::MAX,
                proven: false,
            };
            db.put_pending_totp(&p).unwrap();
            let codes: Vec<StoredCode> = (0..3)
                .map(|i| StoredCode {
                    id: 0,
                    salt: vec![i; 16],
                    hash: vec![i; 32],
                })
                .collect();
            let done = db
                .activate_totp(
                    uid,
                    &format!("user{uid}"),
                    &p.id,
                    100,
                    now(),
                    Codes::IfNone(&codes),
                    Existing::NoFactor,
                )
                .unwrap();
            assert_eq!(done, Activation::Done { codes_set: true });
        }
        let remote = Switch {
            inner: db,
            down: Arc::clone(&down),
            refuse: Arc::clone(&refuse),
        };
        let cache = OfflineCache::in_memory(key()).unwrap();
        (
            FleetStore::new(Box::new(remote), cache, 3600).with_clock(now),
            down,
            refuse,
        )
    }

    #[test]
    fn online_it_passes_the_conformance_suite() {
        crate::store::conformance::run_all(|| {
            FleetStore::new(
                Box::new(SqliteStore::in_memory().unwrap()),
                OfflineCache::in_memory(key()).unwrap(),
                3600,
            )
        });
    }

    #[test]
    fn served_users_log_in_offline_once_per_step_and_the_journal_reaches_the_database() {
        let (mut s, down) = world();
        s.served(UID, "user1000", now()).unwrap();
        let secret = s.totp(UID).unwrap().unwrap().secret;
        down.store(true, Ordering::SeqCst);
        // Served: the reads a login makes are answered from the cache.
        assert_eq!(s.totp(UID).unwrap().unwrap().secret, secret);
        assert_eq!(
            s.user_state(UID).unwrap().unwrap().last_totp_step,
            Some(100)
        );
        assert_eq!(s.unused_recovery(UID).unwrap().len(), 3);
        // Never served here: refused, never "not enrolled".
        let e = s.totp(OTHER).unwrap_err();
        assert!(e.is_unreachable() && e.0.contains("not served"), "{e}");
        assert!(s.user_state(OTHER).is_err());
        assert!(
            s.accept_totp_step(OTHER, 105, now(), &login(OTHER, ""))
                .is_err()
        );
        // One acceptance per step, offline too; older steps refused.
        assert!(
            s.accept_totp_step(UID, 101, now(), &login(UID, "code"))
                .unwrap()
        );
        assert!(
            !s.accept_totp_step(UID, 101, now(), &login(UID, "code"))
                .unwrap()
        );
        assert!(
            !s.accept_totp_step(UID, 99, now(), &login(UID, "code"))
                .unwrap()
        );
        let code = s.unused_recovery(UID).unwrap()[0].id;
        assert!(
            s.consume_recovery(UID, code, now(), &login(UID, "recovery"))
                .unwrap()
        );
        assert!(
            !s.consume_recovery(UID, code, now(), &login(UID, "recovery"))
                .unwrap()
        );
        assert_eq!(s.unused_recovery(UID).unwrap().len(), 2);
        s.append_audit(&login(UID, "remembered")).unwrap();
        // Changes wait for the database, with a clear message.
        for e in [
            s.reset(UID).unwrap_err(),
            s.set_admin_required(UID, "user1000", true).unwrap_err(),
            s.put_pending_totp(&PendingTotp {
                id: "x".into(),
                uid: UID,
                secret: TotpSecret::from_bytes(vec![1; 20]),
                params: TotpParams {
                    algorithm: Algorithm::SHA1,
                    digits: 6,
                    period: 30,
                },
                expires: i64::MAX,
                proven: true,
            })
            .unwrap_err(),
        ] {
            assert!(e.is_unreachable() && e.0.contains("must wait"), "{e}");
        }
        // Back: the next change pushes the journal first.
        down.store(false, Ordering::SeqCst);
        assert!(
            s.maintain(now())
                .unwrap()
                .iter()
                .any(|l| l.contains("pushed 3"))
        );
        assert!(
            !s.accept_totp_step(UID, 101, now(), &login(UID, ""))
                .unwrap()
        );
        assert!(
            !s.consume_recovery(UID, code, now(), &login(UID, ""))
                .unwrap()
        );
        assert_eq!(s.unused_recovery(UID).unwrap().len(), 2);
        let audit = s.audit(Some(UID), 0, 100).unwrap();
        let offline: Vec<&str> = audit
            .iter()
            .filter(|r| r.detail.ends_with("offline"))
            .map(|r| r.detail.as_str())
            .collect();
        assert_eq!(
            offline,
            ["code; offline", "recovery; offline", "remembered; offline"]
        );
        assert!(
            s.accept_totp_step(UID, 102, now(), &login(UID, ""))
                .unwrap()
        );
    }

    #[test]
    fn a_step_used_elsewhere_meanwhile_is_audited_not_applied() {
        let (mut s, down) = world();
        s.served(UID, "user1000", now()).unwrap();
        down.store(true, Ordering::SeqCst);
        assert!(
            s.accept_totp_step(UID, 101, now(), &login(UID, "here"))
                .unwrap()
        );
        let code = s.unused_recovery(UID).unwrap()[0].id;
        assert!(
            s.consume_recovery(UID, code, now(), &login(UID, "here"))
                .unwrap()
        );
        down.store(false, Ordering::SeqCst);
        // Another host took step 105 and the same recovery code meanwhile (partitioned).
        assert!(
            s.remote
                .accept_totp_step(UID, 105, now(), &login(UID, "there"))
                .unwrap()
        );
        assert!(
            s.remote
                .consume_recovery(UID, code, now(), &login(UID, "there"))
                .unwrap()
        );
        s.maintain(now()).unwrap();
        assert_eq!(
            s.user_state(UID).unwrap().unwrap().last_totp_step,
            Some(105)
        );
        let audit = s.audit(Some(UID), 0, 100).unwrap();
        assert!(
            audit
                .iter()
                .any(|r| r.detail.contains("not applied: the step was already used")),
            "{audit:?}"
        );
        assert!(
            audit
                .iter()
                .any(|r| r.detail.contains("recovery code was used elsewhere")),
            "{audit:?}"
        );
    }

    #[test]
    fn offline_failures_lock_locally_and_count_in_the_fleet_afterwards() {
        let (mut s, down) = world();
        s.served(UID, "user1000", now()).unwrap();
        down.store(true, Ordering::SeqCst);
        let mut locked = None;
        for _ in 0..3 {
            let f = s
                .record_failure(UID, "user1000", now(), &limit(), &login(UID, "wrong"))
                .unwrap();
            locked = f.locked_until;
        }
        assert_eq!(locked, Some(now() + 60));
        assert_eq!(s.user_state(UID).unwrap().unwrap().locked_until, now() + 60);
        down.store(false, Ordering::SeqCst);
        s.maintain(now()).unwrap();
        assert_eq!(s.user_state(UID).unwrap().unwrap().locked_until, now() + 60);
    }

    #[test]
    fn users_served_longer_ago_than_the_max_age_are_refused_and_dropped() {
        let (mut s, down) = world();
        s.served(UID, "user1000", now()).unwrap();
        let later = now() + 3601;
        down.store(true, Ordering::SeqCst);
        s.clock = || now() + 3601;
        let e = s.totp(UID).unwrap_err();
        assert!(e.0.contains("not served"), "{e}");
        assert!(
            s.accept_totp_step(UID, 101, later, &login(UID, ""))
                .is_err()
        );
        down.store(false, Ordering::SeqCst);
        s.maintain(later).unwrap();
        assert!(s.cache.uids().unwrap().is_empty());
    }

    #[test]
    fn offline_logins_do_not_extend_the_time_served() {
        let (mut s, down) = world();
        s.served(UID, "user1000", now()).unwrap();
        down.store(true, Ordering::SeqCst);
        assert!(s.totp(UID).is_ok());
        s.served(UID, "user1000", now() + 100).unwrap();
        let at: i64 = s
            .cache
            .conn
            .query_row("SELECT served_at FROM users WHERE uid = ?1", [UID], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(at, now());
    }

    #[test]
    fn an_admin_reset_elsewhere_reaches_the_cache_at_the_next_refresh() {
        let (mut s, down) = world();
        s.served(UID, "user1000", now()).unwrap();
        s.remote.reset(UID).unwrap();
        s.maintain(now() + REFRESH_EVERY + 1).unwrap();
        down.store(true, Ordering::SeqCst);
        assert_eq!(s.totp(UID).unwrap(), None);
        assert!(s.unused_recovery(UID).unwrap().is_empty());
    }

    #[test]
    fn the_cache_holds_no_secret_in_clear_and_another_key_drops_the_copies() {
        let dir = tempfile::tempdir().unwrap();
        let secret = vec![0x42; 20];
        {
            let mut c = OfflineCache::open(dir.path(), key()).unwrap();
            let copy = UserCopy {
                state: None,
                totp: Some(TotpFactor {
                    secret: TotpSecret::from_bytes(secret.clone()),
                    params: TotpParams {
                        algorithm: Algorithm::SHA1,
                        digits: 6,
                        period: 30,
                    },
                    created: 1,
                    last_used: 0,
                }),
                keys: Vec::new(),
                recovery: Vec::new(),
            };
            c.put(UID, "user1000", &copy, Some(5), 5).unwrap();
            assert_eq!(c.totp(UID).unwrap().unwrap().secret.as_bytes(), secret);
        }
        let mut bytes = Vec::new();
        for e in std::fs::read_dir(dir.path()).unwrap() {
            bytes.extend(std::fs::read(e.unwrap().path()).unwrap());
        }
        assert!(!bytes.windows(20).any(|w| w == secret.as_slice()));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(CACHE_FILE))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        let c = OfflineCache::open(dir.path(), SealingKey::from_bytes([1; 32])).unwrap();
        assert!(c.uids().unwrap().is_empty());
        assert_eq!(c.totp(UID).unwrap(), None);
    }

    #[test]
    fn a_flood_of_audit_records_offline_is_capped_but_acceptances_are_kept() {
        let (mut s, down) = world();
        s.audit_cap = 5;
        s.served(UID, "user1000", now()).unwrap();
        down.store(true, Ordering::SeqCst);
        for _ in 0..50 {
            s.append_audit(&login(UID, "locked out")).unwrap();
        }
        assert!(
            s.accept_totp_step(UID, 101, now(), &login(UID, "code"))
                .unwrap()
        );
        down.store(false, Ordering::SeqCst);
        let lines = s.maintain(now()).unwrap();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("5 audit records held, 32 more dropped")),
            "{lines:?}"
        );
        assert!(lines.iter().any(|l| l.contains("pushed 6")), "{lines:?}");
        assert_eq!(
            s.user_state(UID).unwrap().unwrap().last_totp_step,
            Some(101)
        );
    }

    #[test]
    fn hostile_cache_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(CACHE_FILE)).unwrap();
        let e = OfflineCache::open(dir.path(), key()).unwrap_err();
        assert!(e.0.contains("not a regular file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(
            &dir.path().join(CACHE_FILE),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        assert!(OfflineCache::open(dir.path(), key()).is_err());
        // Garbage in the file: an error, never a panic.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CACHE_FILE), vec![0xAB; 8192]).unwrap();
        assert!(OfflineCache::open(dir.path(), key()).is_err());
    }

    #[test]
    fn a_step_or_code_used_online_here_is_refused_offline_here() {
        let (mut s, down) = world();
        s.served(UID, "user1000", now()).unwrap();
        // Used online after the copy was made; the database drops before any refresh.
        assert!(
            s.accept_totp_step(UID, 101, now(), &login(UID, ""))
                .unwrap()
        );
        let code = s.unused_recovery(UID).unwrap()[0].id;
        assert!(
            s.consume_recovery(UID, code, now(), &login(UID, ""))
                .unwrap()
        );
        down.store(true, Ordering::SeqCst);
        assert!(
            !s.accept_totp_step(UID, 101, now(), &login(UID, ""))
                .unwrap()
        );
        assert!(
            !s.consume_recovery(UID, code, now(), &login(UID, ""))
                .unwrap()
        );
    }

    #[test]
    fn a_push_the_database_refuses_fails_closed_and_the_code_stays_used() {
        let (mut s, down, refuse) = world_refusing();
        s.served(UID, "user1000", now()).unwrap();
        down.store(true, Ordering::SeqCst);
        let code = s.unused_recovery(UID).unwrap()[0].id;
        assert!(
            s.consume_recovery(UID, code, now(), &login(UID, ""))
                .unwrap()
        );
        down.store(false, Ordering::SeqCst);
        refuse.store(true, Ordering::SeqCst);
        // A read-only standby after a failover: every change fails (closed), the entry waits.
        for _ in 0..20 {
            assert!(
                s.accept_totp_step(UID, 110, now(), &login(UID, ""))
                    .is_err()
            );
        }
        assert!(s.cache.has_pending(false).unwrap());
        // Refused for an hour: set aside, logged, and the code it used stays used in the copy.
        s.clock = || now() + SET_ASIDE_AFTER;
        assert!(
            s.accept_totp_step(UID, 110, now(), &login(UID, ""))
                .is_err()
        );
        assert!(!s.cache.has_pending(false).unwrap());
        let lines = s.maintain(now()).unwrap();
        assert!(lines.iter().any(|l| l.contains("set aside")), "{lines:?}");
        refuse.store(false, Ordering::SeqCst);
        s.served(UID, "user1000", now()).unwrap();
        down.store(true, Ordering::SeqCst);
        assert!(!s.unused_recovery(UID).unwrap().iter().any(|c| c.id == code));
        assert!(
            !s.consume_recovery(UID, code, now(), &login(UID, ""))
                .unwrap()
        );
    }

    #[test]
    fn a_copy_that_cannot_be_refreshed_is_dropped() {
        let (mut s, down, refuse) = world_refusing();
        s.served(UID, "user1000", now()).unwrap();
        refuse.store(true, Ordering::SeqCst);
        let lines = s.maintain(now() + REFRESH_EVERY + 1).unwrap();
        assert!(lines.iter().any(|l| l.contains("was dropped")), "{lines:?}");
        refuse.store(false, Ordering::SeqCst);
        down.store(true, Ordering::SeqCst);
        assert!(s.totp(UID).is_err(), "not served offline any more");
    }

    #[test]
    fn an_enrollment_on_this_host_updates_the_copy_at_once() {
        let (mut s, down) = world();
        s.served(UID, "user1000", now()).unwrap();
        let k = KeyFactor {
            name: "blue".into(),
            credential_id: vec![1, 2, 3],
            public_key_cose: vec![4, 5],
            rp_id: "twofactor".into(),
            sign_count: 7,
            user_verification: false,
            source: "enrolled".into(),
            created: now(),
            last_used: 0,
        };
        let done = s
            .add_keys(
                UID,
                "user1000",
                &[k],
                Codes::Keep,
                Existing::Proven,
                &login(UID, ""),
            )
            .unwrap();
        assert_eq!(done, Activation::Done { codes_set: false });
        down.store(true, Ordering::SeqCst);
        assert_eq!(s.keys(UID).unwrap().len(), 1);
        // Its counter holds offline: a clone's older counter is refused.
        assert!(
            !s.accept_key_assertion(UID, &[1, 2, 3], 5, now(), &login(UID, ""))
                .unwrap()
        );
        assert!(
            s.accept_key_assertion(UID, &[1, 2, 3], 8, now(), &login(UID, ""))
                .unwrap()
        );
    }

    #[test]
    fn the_module_snapshot_never_shrinks_to_the_cache() {
        let (mut s, down) = world();
        s.served(UID, "user1000", now()).unwrap();
        down.store(true, Ordering::SeqCst);
        assert!(
            s.offline_uids().is_err(),
            "an error keeps the last snapshot"
        );
    }

    #[test]
    fn a_corrupted_copy_is_an_error_not_a_panic() {
        let (mut s, down) = world();
        s.served(UID, "user1000", now()).unwrap();
        s.cache
            .conn
            .execute("UPDATE totp SET digits = 12", [])
            .unwrap();
        s.cache
            .conn
            .execute(
                "INSERT INTO journal (kind, uid, max_failures, time, user, event, result, \
                 service, rhost, actor, detail) VALUES ('failure', 1000, -5, 0, '', '', '', \
                 '', '', '', '')",
                [],
            )
            .unwrap();
        down.store(true, Ordering::SeqCst);
        assert!(s.totp(UID).is_err());
        down.store(false, Ordering::SeqCst);
        // The unreadable journal row is set aside; the rest goes on.
        assert!(
            s.accept_totp_step(UID, 120, now(), &login(UID, ""))
                .unwrap()
        );
        assert!(!s.cache.has_pending(true).unwrap());
    }
}
