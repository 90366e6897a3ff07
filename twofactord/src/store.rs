//! The daemon's state: secrets, replay and rate-limit state, admin flags and the audit log.
//!
//! [`Store`] is the seam; [`SqliteStore`] the embedded backend. [`conformance`] holds the suite
//! every backend must pass. Errors never carry a secret.
//!
//! ## Durability (design note)
//!
//! Whatever the daemon has told a caller (a login succeeded, an enrollment is confirmed, a
//! recovery code or TOTP step is spent, a key counter moved, a user is locked) is on disk
//! before the reply leaves, and survives the daemon being killed at any instant (SIGKILL, OOM,
//! a power cut). Three things make that true:
//! - each such change is committed (its own statement, or one transaction where several rows
//!   must change together) before the engine returns; the engine holds the store's lock across
//!   check-and-update, so a spent step or code is never accepted by two logins at once;
//! - `journal_mode=WAL`: a commit appends to the write-ahead log; a crash mid-transaction
//!   leaves the last committed state (the uncommitted frames are ignored on recovery), never a
//!   half-written row;
//! - `synchronous=FULL`: the WAL is fsynced at every commit, so a committed transaction also
//!   survives a crash of the machine, not only of the process. (`NORMAL` in WAL mode would
//!   keep the database consistent but could lose the last commits on a power cut: a spent code
//!   could then be accepted again, and a lockout forgotten.)
//!
//! `tests/tests/crash.rs` checks it end to end: the daemon killed with SIGKILL after each
//! confirmed answer and at random points, then restarted.
#![forbid(unsafe_code)]

use std::fmt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use crate::policy::{Algorithm, RateLimit};
use crate::recovery::StoredCode;
use crate::totp::{TotpParams, TotpSecret};

/// A failure of the state backend. The daemon fails closed on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "state store: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Per-user state that is not a factor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserState {
    /// Identity.
    pub uid: u32,
    /// Name at the time of the last write (for listings; never used for identity).
    pub name: String,
    /// An admin's per-user requirement.
    pub admin_required: bool,
    /// Consecutive failures since the last success or lockout.
    pub failures: u32,
    /// How many lockouts in a row (for escalation).
    pub lock_level: u32,
    /// Unix time the current lockout ends (0: none).
    pub locked_until: i64,
    /// Last accepted TOTP time step (replay protection).
    pub last_totp_step: Option<u64>,
    /// When 2FA first applied to the user while not enrolled (start of the grace period).
    pub required_since: Option<i64>,
}

/// An active TOTP factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpFactor {
    /// The shared secret.
    pub secret: TotpSecret,
    /// Parameters it was enrolled with.
    pub params: TotpParams,
    /// Unix time of activation.
    pub created: i64,
    /// Unix time of the last successful use (0: never).
    pub last_used: i64,
}

/// A TOTP enrollment waiting for its first code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingTotp {
    /// Random handle.
    pub id: String,
    /// Owner.
    pub uid: u32,
    /// The new secret.
    pub secret: TotpSecret,
    /// Its parameters.
    pub params: TotpParams,
    /// Unix time after which it is void.
    pub expires: i64,
    /// The enrollment began with a fresh proof of an existing factor. Without one it may only
    /// become the account's first factor (checked again at activation).
    pub proven: bool,
}

/// What an activation demands of the factors the account already has, checked inside the
/// activation's own transaction (a factor enrolled meanwhile cannot slip past it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// The account must have no factor at all: the enrollment began without a proof.
    NoFactor,
    /// The enrollment was proven with an existing factor (or an admin made it): other factors
    /// may exist. An existing authenticator app is never replaced either way.
    Proven,
}

/// What an activation does with recovery codes.
#[derive(Debug, Clone, Copy)]
pub enum Codes<'a> {
    /// Leaves them as they are.
    Keep,
    /// Sets these only if the user has no unused code (a confirmation never replaces codes).
    IfNone(&'a [StoredCode]),
    /// Replaces them (an admin's import).
    Replace(&'a [StoredCode]),
}

/// How an activation ended.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Activated; `codes_set` says whether the given recovery codes were stored.
    Done {
        /// The recovery codes given were stored.
        codes_set: bool,
    },
    /// Refused: the account has a factor that [`Existing`] does not allow (nothing changed).
    FactorExists,
    /// Refused: a key's name is taken for this user, or its credential is already stored for
    /// any user (nothing changed).
    Taken,
}

/// A security key (FIDO2 credential) of a user.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyFactor {
    /// The user's name for it (unique per user).
    pub name: String,
    /// The credential id the key names in its assertions.
    pub credential_id: Vec<u8>,
    /// The public key, COSE-encoded as the key gave it.
    pub public_key_cose: Vec<u8>,
    /// The relying party id it was registered for.
    pub rp_id: String,
    /// The counter from the last accepted assertion.
    pub sign_count: u32,
    /// Whether it was registered with user verification (PIN or biometric).
    pub user_verification: bool,
    /// `enrolled` or `imported`.
    pub source: String,
    /// Unix time it was added.
    pub created: i64,
    /// Unix time of its last successful use (0: never).
    pub last_used: i64,
}

impl fmt::Debug for KeyFactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFactor")
            .field("name", &self.name)
            .field("credential_id_len", &self.credential_id.len())
            .field("rp_id", &self.rp_id)
            .field("sign_count", &self.sign_count)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// What a failed attempt led to.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureOutcome {
    /// Failures now counted.
    pub failures: u32,
    /// Set when this failure started a lockout: its end.
    pub locked_until: Option<i64>,
}

/// One audit-log record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditRecord {
    /// Unix time.
    pub time: i64,
    /// The user it is about.
    pub uid: u32,
    /// Their name.
    pub user: String,
    /// Event name.
    pub event: String,
    /// Result word.
    pub result: String,
    /// PAM service.
    pub service: String,
    /// Remote host.
    pub rhost: String,
    /// Who did it.
    pub actor: String,
    /// Details; never a secret.
    pub detail: String,
}

/// The state backend. Every method is one atomic, durable operation.
pub trait Store: Send {
    /// State of a user; `None` if the daemon never stored anything for them.
    fn user_state(&self, uid: u32) -> StoreResult<Option<UserState>>;
    /// The user's active TOTP factor.
    fn totp(&self, uid: u32) -> StoreResult<Option<TotpFactor>>;
    /// Stores a pending enrollment, replacing any other pending one of the same user.
    fn put_pending_totp(&mut self, pending: &PendingTotp) -> StoreResult<()>;
    /// Looks up a pending enrollment.
    fn pending_totp(&self, id: &str) -> StoreResult<Option<PendingTotp>>;
    /// Drops pending enrollments that expired before `now`; returns how many.
    fn drop_expired_pending(&mut self, now: i64) -> StoreResult<usize>;
    /// Activates a pending enrollment: the factor, the accepted step, and recovery codes as
    /// `codes` says, all or nothing, after checking `existing` in the same transaction. Never
    /// replaces an authenticator app the user already has. Fails if the pending enrollment is
    /// gone.
    #[allow(clippy::too_many_arguments)]
    fn activate_totp(
        &mut self,
        uid: u32,
        name: &str,
        pending_id: &str,
        accepted_step: u64,
        now: i64,
        codes: Codes<'_>,
        existing: Existing,
    ) -> StoreResult<Activation>;
    /// Accepts TOTP `step` only if it is later than the last accepted one (atomically: two
    /// concurrent logins with one code cannot both win). Resets failures on success, and
    /// appends `audit` in the same transaction.
    fn accept_totp_step(
        &mut self,
        uid: u32,
        step: u64,
        now: i64,
        audit: &AuditRecord,
    ) -> StoreResult<bool>;
    /// Unused recovery codes.
    fn unused_recovery(&self, uid: u32) -> StoreResult<Vec<StoredCode>>;
    /// Marks a code used, only if it is still unused; resets failures and appends `audit` (in
    /// the same transaction) on success.
    fn consume_recovery(
        &mut self,
        uid: u32,
        id: i64,
        now: i64,
        audit: &AuditRecord,
    ) -> StoreResult<bool>;
    /// Replaces all recovery codes of a user.
    fn replace_recovery(&mut self, uid: u32, codes: &[StoredCode]) -> StoreResult<()>;
    /// Counts a failure and appends `audit`, in one transaction; past the limit starts an
    /// (escalating) lockout.
    fn record_failure(
        &mut self,
        uid: u32,
        name: &str,
        now: i64,
        limit: &RateLimit,
        audit: &AuditRecord,
    ) -> StoreResult<FailureOutcome>;
    /// Sets or clears the admin requirement.
    fn set_admin_required(&mut self, uid: u32, name: &str, required: bool) -> StoreResult<()>;
    /// Starts the grace period at `now` unless it already started; returns its start.
    fn start_grace(&mut self, uid: u32, name: &str, now: i64) -> StoreResult<i64>;
    /// Sets (or with `None` clears) the start of the grace period.
    fn set_grace_start(&mut self, uid: u32, name: &str, since: Option<i64>) -> StoreResult<()>;
    /// Removes every factor, recovery code and pending enrollment of a user.
    fn reset(&mut self, uid: u32) -> StoreResult<()>;
    /// The user's security keys, oldest first.
    fn keys(&self, uid: u32) -> StoreResult<Vec<KeyFactor>>;
    /// Adds keys (and recovery codes as `codes` says) and appends `audit`, all or nothing,
    /// after checking `existing` in the same transaction. [`Activation::Taken`] if a name is
    /// taken for this user or a credential is already stored (for any user).
    #[allow(clippy::too_many_arguments)]
    fn add_keys(
        &mut self,
        uid: u32,
        name: &str,
        keys: &[KeyFactor],
        codes: Codes<'_>,
        existing: Existing,
        audit: &AuditRecord,
    ) -> StoreResult<Activation>;
    /// Accepts an assertion's counter only if it still follows the stored one (atomically:
    /// two concurrent logins with one assertion cannot both win); on success marks the key
    /// used, resets failures and appends `audit` in the same transaction.
    fn accept_key_assertion(
        &mut self,
        uid: u32,
        credential_id: &[u8],
        sign_count: u32,
        now: i64,
        audit: &AuditRecord,
    ) -> StoreResult<bool>;
    /// Removes one key by name and appends `audit`; false if the user has no such key.
    fn remove_key(&mut self, uid: u32, name: &str, audit: &AuditRecord) -> StoreResult<bool>;
    /// Ends a lockout and clears failures and escalation.
    fn unlock(&mut self, uid: u32) -> StoreResult<()>;
    /// Appends to the audit log.
    fn append_audit(&mut self, record: &AuditRecord) -> StoreResult<()>;
    /// Retention: deletes at most `batch` audit records, first those older than `before`, then
    /// the oldest beyond the newest `keep_max`; returns how many it deleted (fewer than `batch`:
    /// nothing more to delete). Bounded so the caller can release the store between batches.
    fn prune_audit(&mut self, before: i64, keep_max: u64, batch: u32) -> StoreResult<u64>;
    /// Reads the audit log, oldest first, at most `limit` newest records.
    fn audit(&self, uid: Option<u32>, since: i64, limit: u32) -> StoreResult<Vec<AuditRecord>>;
    /// Every uid with any state.
    fn known_uids(&self) -> StoreResult<Vec<u32>>;
}

/// 3: `pending_totp.proven`.
const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    uid INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    admin_required INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    lock_level INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER NOT NULL DEFAULT 0,
    last_totp_step INTEGER,
    required_since INTEGER
);
CREATE TABLE IF NOT EXISTS totp (
    uid INTEGER PRIMARY KEY,
    secret BLOB NOT NULL,
    algorithm TEXT NOT NULL,
    digits INTEGER NOT NULL,
    period INTEGER NOT NULL,
    created INTEGER NOT NULL,
    last_used INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS pending_totp (
    id TEXT PRIMARY KEY,
    uid INTEGER NOT NULL UNIQUE,
    secret BLOB NOT NULL,
    algorithm TEXT NOT NULL,
    digits INTEGER NOT NULL,
    period INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    proven INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS recovery (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uid INTEGER NOT NULL,
    salt BLOB NOT NULL,
    hash BLOB NOT NULL,
    used_at INTEGER
);
CREATE INDEX IF NOT EXISTS recovery_uid ON recovery(uid);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    user TEXT NOT NULL,
    event TEXT NOT NULL,
    result TEXT NOT NULL,
    service TEXT NOT NULL,
    rhost TEXT NOT NULL,
    actor TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_uid_time ON audit(uid, time);
CREATE INDEX IF NOT EXISTS audit_time ON audit(time);
CREATE TABLE IF NOT EXISTS keys (
    uid INTEGER NOT NULL,
    name TEXT NOT NULL,
    credential_id BLOB NOT NULL,
    public_key BLOB NOT NULL,
    rp_id TEXT NOT NULL,
    sign_count INTEGER NOT NULL,
    user_verification INTEGER NOT NULL,
    source TEXT NOT NULL,
    created INTEGER NOT NULL,
    last_used INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (uid, name),
    UNIQUE (rp_id, credential_id)
);
";

/// SQLite in WAL mode with durable commits, in a root-only directory.
pub struct SqliteStore {
    conn: Connection,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SqliteStore")
    }
}

/// Creates the state directory (mode 0700) or checks that an existing one is private.
pub fn prepare_state_dir(dir: &Path) -> StoreResult<PathBuf> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
    }
    let meta = std::fs::metadata(dir)
        .map_err(|e| StoreError(format!("cannot stat {}: {e}", dir.display())))?;
    if !meta.is_dir() {
        return Err(StoreError(format!("{} is not a directory", dir.display())));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(StoreError(format!(
            "state directory {} is accessible by other users (mode {mode:04o}); run: chmod 700 {}",
            dir.display(),
            dir.display()
        )));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(StoreError(format!(
            "state directory {} is owned by uid {}, not by the daemon's uid {}",
            dir.display(),
            meta.uid(),
            nix::unistd::geteuid()
        )));
    }
    Ok(dir.join("state.sqlite3"))
}

fn params_from_row(alg: &str, digits: i64, period: i64) -> rusqlite::Result<TotpParams> {
    let algorithm = Algorithm::parse(alg).ok_or_else(|| {
        rusqlite::Error::InvalidColumnType(0, "algorithm".into(), rusqlite::types::Type::Text)
    })?;
    let digits = u8::try_from(digits).ok().filter(|d| *d == 6 || *d == 8);
    let period = u64::try_from(period).ok().filter(|p| *p > 0);
    match (digits, period) {
        (Some(digits), Some(period)) => Ok(TotpParams {
            algorithm,
            digits,
            period,
        }),
        _ => Err(rusqlite::Error::InvalidColumnType(
            0,
            "digits/period".into(),
            rusqlite::types::Type::Integer,
        )),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database in `state_dir`.
    pub fn open(state_dir: &Path) -> StoreResult<SqliteStore> {
        let path = prepare_state_dir(state_dir)?;
        // The database file is created by SQLite: keep it private whatever the umask.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        let conn = Connection::open(&path);
        nix::sys::stat::umask(old);
        let conn = conn?;
        Self::init(conn)
    }

    /// An in-memory database (tests).
    pub fn in_memory() -> StoreResult<SqliteStore> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> StoreResult<SqliteStore> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Durable commits: a replay-protection step or a lockout must survive a power cut.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError(format!(
                "database schema version {version} is newer than this daemon ({SCHEMA_VERSION})"
            )));
        }
        if (1..3).contains(&version) {
            // Pending enrollments live minutes; older ones lack `proven` and are dropped (the
            // user starts that enrollment again).
            conn.execute_batch("DROP TABLE IF EXISTS pending_totp")?;
        }
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(SqliteStore { conn })
    }

    fn ensure_user(tx: &Connection, uid: u32, name: &str) -> rusqlite::Result<()> {
        tx.execute(
            "INSERT INTO users (uid, name) VALUES (?1, ?2)
             ON CONFLICT(uid) DO UPDATE SET name = excluded.name",
            params![uid, name],
        )?;
        Ok(())
    }
}

/// Whether the user has an authenticator app, and whether they have a security key.
fn factors_in(conn: &Connection, uid: u32) -> rusqlite::Result<(bool, bool)> {
    conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM totp WHERE uid = ?1),
                EXISTS(SELECT 1 FROM keys WHERE uid = ?1)",
        params![uid],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Applies `codes` inside the caller's transaction; true if codes were stored.
fn apply_codes(conn: &Connection, uid: u32, codes: Codes<'_>) -> rusqlite::Result<bool> {
    match codes {
        Codes::Keep => Ok(false),
        Codes::Replace(c) => set_recovery(conn, uid, c).map(|()| true),
        Codes::IfNone(c) => {
            let unused: i64 = conn.query_row(
                "SELECT COUNT(*) FROM recovery WHERE uid = ?1 AND used_at IS NULL",
                params![uid],
                |r| r.get(0),
            )?;
            if unused > 0 {
                return Ok(false);
            }
            set_recovery(conn, uid, c).map(|()| true)
        }
    }
}

/// Replaces a user's recovery codes (inside the caller's transaction).
fn set_recovery(conn: &Connection, uid: u32, codes: &[StoredCode]) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM recovery WHERE uid = ?1", params![uid])?;
    let mut insert =
        conn.prepare_cached("INSERT INTO recovery (uid, salt, hash) VALUES (?1, ?2, ?3)")?;
    for c in codes {
        insert.execute(params![uid, c.salt, c.hash])?;
    }
    Ok(())
}

fn insert_audit(conn: &Connection, r: &AuditRecord) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit (time, uid, user, event, result, service, rhost, actor, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        r.time, r.uid, r.user, r.event, r.result, r.service, r.rhost, r.actor, r.detail
    ])?;
    Ok(())
}

impl Store for SqliteStore {
    fn user_state(&self, uid: u32) -> StoreResult<Option<UserState>> {
        Ok(self
            .conn
            .query_row(
                "SELECT name, admin_required, failures, lock_level, locked_until, last_totp_step,
                        required_since
                 FROM users WHERE uid = ?1",
                params![uid],
                |r| {
                    Ok(UserState {
                        uid,
                        name: r.get(0)?,
                        admin_required: r.get(1)?,
                        failures: r.get(2)?,
                        lock_level: r.get(3)?,
                        locked_until: r.get(4)?,
                        last_totp_step: r.get::<_, Option<i64>>(5)?.map(|s| s as u64),
                        required_since: r.get(6)?,
                    })
                },
            )
            .optional()?)
    }

    fn totp(&self, uid: u32) -> StoreResult<Option<TotpFactor>> {
        Ok(self
            .conn
            .query_row(
                "SELECT secret, algorithm, digits, period, created, last_used
                 FROM totp WHERE uid = ?1",
                params![uid],
                |r| {
                    let alg: String = r.get(1)?;
                    Ok(TotpFactor {
                        secret: TotpSecret::from_bytes(r.get(0)?),
                        params: params_from_row(&alg, r.get(2)?, r.get(3)?)?,
                        created: r.get(4)?,
                        last_used: r.get(5)?,
                    })
                },
            )
            .optional()?)
    }

    fn put_pending_totp(&mut self, p: &PendingTotp) -> StoreResult<()> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM pending_totp WHERE uid = ?1", params![p.uid])?;
        tx.execute(
            "INSERT INTO pending_totp (id, uid, secret, algorithm, digits, period, expires, proven)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                p.id,
                p.uid,
                p.secret.as_bytes(),
                p.params.algorithm.as_str(),
                p.params.digits,
                p.params.period as i64,
                p.expires,
                p.proven
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn pending_totp(&self, id: &str) -> StoreResult<Option<PendingTotp>> {
        Ok(self
            .conn
            .query_row(
                "SELECT uid, secret, algorithm, digits, period, expires, proven
                 FROM pending_totp WHERE id = ?1",
                params![id],
                |r| {
                    let alg: String = r.get(2)?;
                    Ok(PendingTotp {
                        id: id.to_string(),
                        uid: r.get(0)?,
                        secret: TotpSecret::from_bytes(r.get(1)?),
                        params: params_from_row(&alg, r.get(3)?, r.get(4)?)?,
                        expires: r.get(5)?,
                        proven: r.get(6)?,
                    })
                },
            )
            .optional()?)
    }

    fn drop_expired_pending(&mut self, now: i64) -> StoreResult<usize> {
        Ok(self
            .conn
            .execute("DELETE FROM pending_totp WHERE expires < ?1", params![now])?)
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
        let tx = self.conn.transaction()?;
        let (has_totp, has_keys) = factors_in(&tx, uid)?;
        if has_totp || (existing == Existing::NoFactor && has_keys) {
            return Ok(Activation::FactorExists);
        }
        Self::ensure_user(&tx, uid, name)?;
        let moved = tx.execute(
            "INSERT INTO totp (uid, secret, algorithm, digits, period, created, last_used)
             SELECT uid, secret, algorithm, digits, period, ?3, ?3
             FROM pending_totp WHERE id = ?1 AND uid = ?2",
            params![pending_id, uid, now],
        )?;
        if moved != 1 {
            return Err(StoreError("the enrollment is no longer pending".into()));
        }
        tx.execute(
            "DELETE FROM pending_totp WHERE id = ?1",
            params![pending_id],
        )?;
        tx.execute(
            "UPDATE users SET last_totp_step = ?2, failures = 0 WHERE uid = ?1",
            params![uid, accepted_step as i64],
        )?;
        let codes_set = apply_codes(&tx, uid, codes)?;
        tx.commit()?;
        Ok(Activation::Done { codes_set })
    }

    fn accept_totp_step(
        &mut self,
        uid: u32,
        step: u64,
        now: i64,
        audit: &AuditRecord,
    ) -> StoreResult<bool> {
        let tx = self.conn.transaction()?;
        let changed = tx.execute(
            "UPDATE users SET last_totp_step = ?2, failures = 0, lock_level = 0
             WHERE uid = ?1 AND (last_totp_step IS NULL OR last_totp_step < ?2)",
            params![uid, step as i64],
        )?;
        if changed == 1 {
            tx.execute(
                "UPDATE totp SET last_used = ?2 WHERE uid = ?1",
                params![uid, now],
            )?;
            insert_audit(&tx, audit)?;
        }
        tx.commit()?;
        Ok(changed == 1)
    }

    fn unused_recovery(&self, uid: u32) -> StoreResult<Vec<StoredCode>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, salt, hash FROM recovery WHERE uid = ?1 AND used_at IS NULL ORDER BY id",
        )?;
        let rows = stmt.query_map(params![uid], |r| {
            Ok(StoredCode {
                id: r.get(0)?,
                salt: r.get(1)?,
                hash: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn consume_recovery(
        &mut self,
        uid: u32,
        id: i64,
        now: i64,
        audit: &AuditRecord,
    ) -> StoreResult<bool> {
        let tx = self.conn.transaction()?;
        let changed = tx.execute(
            "UPDATE recovery SET used_at = ?3 WHERE id = ?2 AND uid = ?1 AND used_at IS NULL",
            params![uid, id, now],
        )?;
        if changed == 1 {
            tx.execute(
                "UPDATE users SET failures = 0, lock_level = 0 WHERE uid = ?1",
                params![uid],
            )?;
            insert_audit(&tx, audit)?;
        }
        tx.commit()?;
        Ok(changed == 1)
    }

    fn replace_recovery(&mut self, uid: u32, codes: &[StoredCode]) -> StoreResult<()> {
        let tx = self.conn.transaction()?;
        set_recovery(&tx, uid, codes)?;
        tx.commit()?;
        Ok(())
    }

    fn record_failure(
        &mut self,
        uid: u32,
        name: &str,
        now: i64,
        limit: &RateLimit,
        audit: &AuditRecord,
    ) -> StoreResult<FailureOutcome> {
        let tx = self.conn.transaction()?;
        Self::ensure_user(&tx, uid, name)?;
        insert_audit(&tx, audit)?;
        let (failures, level): (u32, u32) = tx.query_row(
            "SELECT failures, lock_level FROM users WHERE uid = ?1",
            params![uid],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let failures = failures.saturating_add(1);
        let outcome = if failures >= limit.max_failures {
            let level = level.saturating_add(1);
            let secs = i64::try_from(limit.lockout_for(level).as_secs()).unwrap_or(i64::MAX);
            let until = now.saturating_add(secs);
            tx.execute(
                "UPDATE users SET failures = 0, lock_level = ?2, locked_until = ?3 WHERE uid = ?1",
                params![uid, level, until],
            )?;
            FailureOutcome {
                failures,
                locked_until: Some(until),
            }
        } else {
            tx.execute(
                "UPDATE users SET failures = ?2 WHERE uid = ?1",
                params![uid, failures],
            )?;
            FailureOutcome {
                failures,
                locked_until: None,
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    fn set_admin_required(&mut self, uid: u32, name: &str, required: bool) -> StoreResult<()> {
        let tx = self.conn.transaction()?;
        Self::ensure_user(&tx, uid, name)?;
        tx.execute(
            "UPDATE users SET admin_required = ?2 WHERE uid = ?1",
            params![uid, required],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn start_grace(&mut self, uid: u32, name: &str, now: i64) -> StoreResult<i64> {
        let tx = self.conn.transaction()?;
        Self::ensure_user(&tx, uid, name)?;
        tx.execute(
            "UPDATE users SET required_since = ?2 WHERE uid = ?1 AND required_since IS NULL",
            params![uid, now],
        )?;
        let since: i64 = tx.query_row(
            "SELECT required_since FROM users WHERE uid = ?1",
            params![uid],
            |r| r.get(0),
        )?;
        tx.commit()?;
        Ok(since)
    }

    fn set_grace_start(&mut self, uid: u32, name: &str, since: Option<i64>) -> StoreResult<()> {
        let tx = self.conn.transaction()?;
        Self::ensure_user(&tx, uid, name)?;
        tx.execute(
            "UPDATE users SET required_since = ?2 WHERE uid = ?1",
            params![uid, since],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn reset(&mut self, uid: u32) -> StoreResult<()> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM keys WHERE uid = ?1", params![uid])?;
        tx.execute("DELETE FROM totp WHERE uid = ?1", params![uid])?;
        tx.execute("DELETE FROM recovery WHERE uid = ?1", params![uid])?;
        tx.execute("DELETE FROM pending_totp WHERE uid = ?1", params![uid])?;
        tx.commit()?;
        Ok(())
    }

    fn unlock(&mut self, uid: u32) -> StoreResult<()> {
        self.conn.execute(
            "UPDATE users SET failures = 0, lock_level = 0, locked_until = 0 WHERE uid = ?1",
            params![uid],
        )?;
        Ok(())
    }

    fn append_audit(&mut self, r: &AuditRecord) -> StoreResult<()> {
        Ok(insert_audit(&self.conn, r)?)
    }

    fn prune_audit(&mut self, before: i64, keep_max: u64, batch: u32) -> StoreResult<u64> {
        let tx = self.conn.transaction()?;
        // Both by the indexes: `audit_time` for the age, the rowid for the count.
        let old = tx.execute(
            "DELETE FROM audit WHERE id IN (
                 SELECT id FROM audit WHERE time < ?1 ORDER BY time LIMIT ?2)",
            params![before, batch],
        )?;
        let left = i64::from(batch).saturating_sub(old as i64);
        let excess = if left > 0 {
            tx.execute(
                "DELETE FROM audit WHERE id IN (
                     SELECT id FROM audit
                     WHERE id <= (SELECT id FROM audit ORDER BY id DESC LIMIT 1 OFFSET ?1)
                     ORDER BY id LIMIT ?2)",
                params![i64::try_from(keep_max).unwrap_or(i64::MAX), left],
            )?
        } else {
            0
        };
        tx.commit()?;
        Ok(old as u64 + excess as u64)
    }

    fn audit(&self, uid: Option<u32>, since: i64, limit: u32) -> StoreResult<Vec<AuditRecord>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT time, uid, user, event, result, service, rhost, actor, detail FROM (
                 SELECT * FROM audit WHERE (?1 IS NULL OR uid = ?1) AND time >= ?2
                 ORDER BY id DESC LIMIT ?3
             ) ORDER BY id",
        )?;
        let rows = stmt.query_map(params![uid, since, limit], |r| {
            Ok(AuditRecord {
                time: r.get(0)?,
                uid: r.get(1)?,
                user: r.get(2)?,
                event: r.get(3)?,
                result: r.get(4)?,
                service: r.get(5)?,
                rhost: r.get(6)?,
                actor: r.get(7)?,
                detail: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn known_uids(&self) -> StoreResult<Vec<u32>> {
        let mut stmt = self.conn.prepare(
            "SELECT uid FROM users UNION SELECT uid FROM totp UNION SELECT uid FROM recovery
             UNION SELECT uid FROM keys ORDER BY uid",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn keys(&self, uid: u32) -> StoreResult<Vec<KeyFactor>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, credential_id, public_key, rp_id, sign_count, user_verification,
                    source, created, last_used
             FROM keys WHERE uid = ?1 ORDER BY created, name",
        )?;
        let rows = stmt.query_map(params![uid], |r| {
            Ok(KeyFactor {
                name: r.get(0)?,
                credential_id: r.get(1)?,
                public_key_cose: r.get(2)?,
                rp_id: r.get(3)?,
                sign_count: r.get(4)?,
                user_verification: r.get(5)?,
                source: r.get(6)?,
                created: r.get(7)?,
                last_used: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
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
        let tx = self.conn.transaction()?;
        let (has_totp, has_keys) = factors_in(&tx, uid)?;
        if existing == Existing::NoFactor && (has_totp || has_keys) {
            return Ok(Activation::FactorExists);
        }
        Self::ensure_user(&tx, uid, name)?;
        for k in keys {
            let taken: i64 = tx.query_row(
                "SELECT COUNT(*) FROM keys WHERE (uid = ?1 AND name = ?2)
                    OR (rp_id = ?3 AND credential_id = ?4)",
                params![uid, k.name, k.rp_id, k.credential_id],
                |r| r.get(0),
            )?;
            if taken > 0 {
                return Ok(Activation::Taken);
            }
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
                    k.sign_count,
                    k.user_verification,
                    k.source,
                    k.created,
                    k.last_used
                ],
            )?;
        }
        let codes_set = apply_codes(&tx, uid, codes)?;
        insert_audit(&tx, audit)?;
        tx.commit()?;
        Ok(Activation::Done { codes_set })
    }

    fn accept_key_assertion(
        &mut self,
        uid: u32,
        credential_id: &[u8],
        sign_count: u32,
        now: i64,
        audit: &AuditRecord,
    ) -> StoreResult<bool> {
        let tx = self.conn.transaction()?;
        let changed = tx.execute(
            "UPDATE keys SET sign_count = ?3, last_used = ?4
             WHERE uid = ?1 AND credential_id = ?2
               AND (sign_count < ?3 OR (sign_count = 0 AND ?3 = 0))",
            params![uid, credential_id, sign_count, now],
        )?;
        if changed == 1 {
            tx.execute(
                "UPDATE users SET failures = 0, lock_level = 0 WHERE uid = ?1",
                params![uid],
            )?;
            insert_audit(&tx, audit)?;
        }
        tx.commit()?;
        Ok(changed == 1)
    }

    fn remove_key(&mut self, uid: u32, name: &str, audit: &AuditRecord) -> StoreResult<bool> {
        let tx = self.conn.transaction()?;
        let removed = tx.execute(
            "DELETE FROM keys WHERE uid = ?1 AND name = ?2",
            params![uid, name],
        )?;
        if removed == 1 {
            insert_audit(&tx, audit)?;
        }
        tx.commit()?;
        Ok(removed == 1)
    }
}

/// The suite every [`Store`] backend must pass. Call [`conformance::run_all`] from a test with
/// a factory for empty stores.
#[doc(hidden)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub mod conformance {
    use super::*;
    use std::time::Duration;

    fn limit() -> RateLimit {
        RateLimit {
            max_failures: 3,
            lockout: Duration::from_secs(60),
            escalation: 2,
            max_lockout: Duration::from_secs(3600),
        }
    }

    fn pending(uid: u32, id: &str) -> PendingTotp {
        PendingTotp {
            id: id.into(),
            uid,
            secret: TotpSecret::from_bytes(vec![7; 20]),
            params: TotpParams {
                algorithm: Algorithm::SHA256,
                digits: 8,
                period: 30,
            },
            expires: 1000,
            proven: false,
        }
    }

    fn rec() -> AuditRecord {
        AuditRecord {
            uid: 1000,
            event: "test".into(),
            ..Default::default()
        }
    }

    fn codes(n: usize) -> Vec<StoredCode> {
        (0..n)
            .map(|i| StoredCode {
                id: 0,
                salt: vec![i as u8; 16],
                hash: vec![i as u8; 32],
            })
            .collect()
    }

    /// Runs every check, each on a fresh store.
    pub fn run_all<S: Store>(mut make: impl FnMut() -> S) {
        enrollment_lifecycle(&mut make());
        replay_is_atomic(&mut make());
        recovery_codes_are_single_use(&mut make());
        failures_lock_and_escalate(&mut make());
        admin_flags_reset_and_unlock(&mut make());
        audit_filters_and_orders(&mut make());
        audit_is_pruned_by_age_and_by_count(&mut make());
        users_are_isolated(&mut make());
        grace_starts_once(&mut make());
        keys_lifecycle(&mut make());
        first_factor_only_when_unproven(&mut make());
    }

    /// An enrollment that began without a proof activates only as the first factor; a
    /// confirmation never replaces the codes a user has.
    fn first_factor_only_when_unproven(s: &mut impl Store) {
        assert_eq!(
            s.add_keys(
                1000,
                "alice",
                &[key("blue", 1)],
                Codes::IfNone(&codes(3)),
                Existing::NoFactor,
                &rec()
            )
            .unwrap(),
            Activation::Done { codes_set: true }
        );
        let before = s.unused_recovery(1000).unwrap();
        s.put_pending_totp(&pending(1000, "p")).unwrap();
        assert_eq!(
            s.activate_totp(
                1000,
                "alice",
                "p",
                7,
                20,
                Codes::IfNone(&codes(10)),
                Existing::NoFactor
            )
            .unwrap(),
            Activation::FactorExists
        );
        assert_eq!(s.totp(1000).unwrap(), None);
        assert!(s.pending_totp("p").unwrap().is_some());
        assert_eq!(
            s.activate_totp(
                1000,
                "alice",
                "p",
                7,
                20,
                Codes::IfNone(&codes(10)),
                Existing::Proven
            )
            .unwrap(),
            Activation::Done { codes_set: false }
        );
        assert!(s.totp(1000).unwrap().is_some());
        assert_eq!(s.unused_recovery(1000).unwrap(), before);
    }

    fn key(name: &str, id: u8) -> KeyFactor {
        KeyFactor {
            name: name.into(),
            credential_id: vec![id; 40],
            public_key_cose: vec![0xa0],
            rp_id: "pam://h".into(),
            sign_count: 5,
            user_verification: false,
            source: "enrolled".into(),
            created: 100,
            last_used: 0,
        }
    }

    fn keys_lifecycle(s: &mut impl Store) {
        assert!(s.keys(1000).unwrap().is_empty());
        assert_eq!(
            s.add_keys(
                1000,
                "alice",
                &[key("blue", 1)],
                Codes::IfNone(&codes(2)),
                Existing::NoFactor,
                &rec()
            )
            .unwrap(),
            Activation::Done { codes_set: true }
        );
        assert_eq!(s.keys(1000).unwrap(), vec![key("blue", 1)]);
        assert_eq!(s.unused_recovery(1000).unwrap().len(), 2);
        assert!(s.known_uids().unwrap().contains(&1000));
        // Same name, or the same credential for anybody: refused, nothing partial.
        let before = s.audit(None, 0, 100).unwrap().len();
        assert_eq!(
            s.add_keys(
                1000,
                "alice",
                &[key("red", 2), key("blue", 3)],
                Codes::Keep,
                Existing::Proven,
                &rec()
            )
            .unwrap(),
            Activation::Taken
        );
        assert!(
            s.add_keys(
                1001,
                "bob",
                &[key("x", 1)],
                Codes::Keep,
                Existing::Proven,
                &rec()
            )
            .unwrap()
                == Activation::Taken
        );
        assert_eq!(s.keys(1000).unwrap().len(), 1);
        assert!(s.keys(1001).unwrap().is_empty());
        assert_eq!(s.audit(None, 0, 100).unwrap().len(), before);
        // Counter: must increase; the same counter twice wins once.
        let _ = s
            .record_failure(1000, "alice", 10, &limit(), &rec())
            .unwrap();
        assert!(
            !s.accept_key_assertion(1000, &[1; 40], 5, 200, &rec())
                .unwrap()
        );
        assert!(
            !s.accept_key_assertion(1000, &[1; 40], 4, 200, &rec())
                .unwrap()
        );
        assert!(
            s.accept_key_assertion(1000, &[1; 40], 6, 200, &rec())
                .unwrap()
        );
        assert!(
            !s.accept_key_assertion(1000, &[1; 40], 6, 201, &rec())
                .unwrap()
        );
        assert!(
            !s.accept_key_assertion(1001, &[1; 40], 7, 201, &rec())
                .unwrap()
        );
        let k = &s.keys(1000).unwrap()[0];
        assert_eq!((k.sign_count, k.last_used), (6, 200));
        assert_eq!(s.user_state(1000).unwrap().unwrap().failures, 0);
        // Keys whose counter stays 0 (some keys never count): 0 after 0 is accepted.
        let mut zero = key("zero", 9);
        zero.sign_count = 0;
        // Unproven: refused, since alice has a key; proven: added, her codes kept.
        assert_eq!(
            s.add_keys(
                1000,
                "alice",
                std::slice::from_ref(&zero),
                Codes::IfNone(&codes(5)),
                Existing::NoFactor,
                &rec()
            )
            .unwrap(),
            Activation::FactorExists
        );
        assert_eq!(
            s.add_keys(
                1000,
                "alice",
                &[zero],
                Codes::IfNone(&codes(5)),
                Existing::Proven,
                &rec()
            )
            .unwrap(),
            Activation::Done { codes_set: false }
        );
        assert_eq!(s.unused_recovery(1000).unwrap().len(), 2);
        assert!(
            s.accept_key_assertion(1000, &[9; 40], 0, 300, &rec())
                .unwrap()
        );
        assert!(!s.remove_key(1000, "nope", &rec()).unwrap());
        assert!(s.remove_key(1000, "blue", &rec()).unwrap());
        assert_eq!(s.keys(1000).unwrap().len(), 1);
        s.reset(1000).unwrap();
        assert!(s.keys(1000).unwrap().is_empty());
    }

    fn grace_starts_once(s: &mut impl Store) {
        assert_eq!(s.start_grace(1000, "alice", 100).unwrap(), 100);
        assert_eq!(s.start_grace(1000, "alice", 200).unwrap(), 100);
        assert_eq!(
            s.user_state(1000).unwrap().unwrap().required_since,
            Some(100)
        );
        s.set_grace_start(1000, "alice", Some(300)).unwrap();
        assert_eq!(s.start_grace(1000, "alice", 400).unwrap(), 300);
        s.set_grace_start(1000, "alice", None).unwrap();
        assert_eq!(s.start_grace(1000, "alice", 500).unwrap(), 500);
        assert_eq!(s.user_state(1001).unwrap(), None);
    }

    fn enrollment_lifecycle(s: &mut impl Store) {
        assert_eq!(s.totp(1000).unwrap(), None);
        assert_eq!(s.user_state(1000).unwrap(), None);
        s.put_pending_totp(&pending(1000, "p1")).unwrap();
        // A second begin replaces the first.
        s.put_pending_totp(&pending(1000, "p2")).unwrap();
        assert_eq!(s.pending_totp("p1").unwrap(), None);
        assert_eq!(s.pending_totp("p2").unwrap(), Some(pending(1000, "p2")));
        // Another user's id does not activate.
        assert!(
            s.activate_totp(1001, "bob", "p2", 5, 10, Codes::Keep, Existing::Proven)
                .is_err()
        );
        assert_eq!(
            s.activate_totp(
                1000,
                "alice",
                "p2",
                5,
                10,
                Codes::IfNone(&codes(10)),
                Existing::NoFactor
            )
            .unwrap(),
            Activation::Done { codes_set: true }
        );
        assert_eq!(s.pending_totp("p2").unwrap(), None);
        let f = s.totp(1000).unwrap().expect("active");
        assert_eq!(f.secret, pending(1000, "p2").secret);
        assert_eq!(f.params.digits, 8);
        assert_eq!(f.created, 10);
        assert_eq!(s.user_state(1000).unwrap().unwrap().last_totp_step, Some(5));
        assert_eq!(s.unused_recovery(1000).unwrap().len(), 10);
        // Activation is single-use, and an app is never replaced, proven or not.
        assert_eq!(
            s.activate_totp(1000, "alice", "p2", 6, 11, Codes::Keep, Existing::Proven)
                .unwrap(),
            Activation::FactorExists
        );
        s.put_pending_totp(&pending(1000, "p4")).unwrap();
        assert_eq!(
            s.activate_totp(
                1000,
                "alice",
                "p4",
                6,
                11,
                Codes::Replace(&codes(1)),
                Existing::Proven
            )
            .unwrap(),
            Activation::FactorExists
        );
        assert_eq!(s.totp(1000).unwrap().unwrap().secret, f.secret);
        assert_eq!(s.unused_recovery(1000).unwrap().len(), 10);
        // A proof is recorded with the pending enrollment.
        let mut proven = pending(1005, "p5");
        proven.proven = true;
        s.put_pending_totp(&proven).unwrap();
        assert!(s.pending_totp("p5").unwrap().unwrap().proven);
        // Expiry.
        s.put_pending_totp(&pending(1002, "p3")).unwrap();
        assert_eq!(s.drop_expired_pending(999).unwrap(), 0);
        // p3, and p4 and p5 above.
        assert_eq!(s.drop_expired_pending(1001).unwrap(), 3);
        assert_eq!(s.pending_totp("p3").unwrap(), None);
    }

    fn replay_is_atomic(s: &mut impl Store) {
        s.put_pending_totp(&pending(1000, "p")).unwrap();
        let _ = s
            .activate_totp(1000, "alice", "p", 100, 1, Codes::Keep, Existing::NoFactor)
            .unwrap();
        assert!(!s.accept_totp_step(1000, 100, 2, &rec()).unwrap());
        assert!(!s.accept_totp_step(1000, 99, 2, &rec()).unwrap());
        assert!(s.accept_totp_step(1000, 101, 3, &rec()).unwrap());
        assert!(!s.accept_totp_step(1000, 101, 3, &rec()).unwrap());
        assert_eq!(s.totp(1000).unwrap().unwrap().last_used, 3);
        // Only the accepted step was audited, in the same transaction.
        assert_eq!(s.audit(Some(1000), 0, 100).unwrap().len(), 1);
    }

    fn recovery_codes_are_single_use(s: &mut impl Store) {
        s.replace_recovery(1000, &codes(3)).unwrap();
        let unused = s.unused_recovery(1000).unwrap();
        assert_eq!(unused.len(), 3);
        assert_eq!(unused[1].salt, vec![1; 16]);
        assert!(s.consume_recovery(1000, unused[1].id, 5, &rec()).unwrap());
        assert!(!s.consume_recovery(1000, unused[1].id, 6, &rec()).unwrap());
        // Not another user's code.
        assert!(!s.consume_recovery(1001, unused[0].id, 6, &rec()).unwrap());
        assert_eq!(s.unused_recovery(1000).unwrap().len(), 2);
        s.replace_recovery(1000, &codes(10)).unwrap();
        assert_eq!(s.unused_recovery(1000).unwrap().len(), 10);
        assert!(!s.consume_recovery(1000, unused[0].id, 7, &rec()).unwrap());
    }

    fn failures_lock_and_escalate(s: &mut impl Store) {
        let l = limit();
        assert_eq!(
            s.record_failure(1000, "alice", 100, &l, &rec())
                .unwrap()
                .locked_until,
            None
        );
        assert_eq!(
            s.record_failure(1000, "alice", 101, &l, &rec())
                .unwrap()
                .locked_until,
            None
        );
        let o = s.record_failure(1000, "alice", 102, &l, &rec()).unwrap();
        assert_eq!(o.locked_until, Some(162));
        let st = s.user_state(1000).unwrap().unwrap();
        assert_eq!((st.failures, st.lock_level, st.locked_until), (0, 1, 162));
        for t in 200..202 {
            let _ = s.record_failure(1000, "alice", t, &l, &rec()).unwrap();
        }
        assert_eq!(
            s.record_failure(1000, "alice", 202, &l, &rec())
                .unwrap()
                .locked_until,
            Some(322)
        );
        // A success resets failures and escalation.
        s.replace_recovery(1000, &codes(1)).unwrap();
        let id = s.unused_recovery(1000).unwrap()[0].id;
        assert!(s.consume_recovery(1000, id, 400, &rec()).unwrap());
        let st = s.user_state(1000).unwrap().unwrap();
        assert_eq!((st.failures, st.lock_level), (0, 0));
    }

    fn admin_flags_reset_and_unlock(s: &mut impl Store) {
        s.set_admin_required(1000, "alice", true).unwrap();
        assert!(s.user_state(1000).unwrap().unwrap().admin_required);
        s.put_pending_totp(&pending(1000, "p")).unwrap();
        let _ = s
            .activate_totp(
                1000,
                "alice",
                "p",
                1,
                1,
                Codes::Replace(&codes(2)),
                Existing::NoFactor,
            )
            .unwrap();
        s.put_pending_totp(&pending(1000, "q")).unwrap();
        s.reset(1000).unwrap();
        assert_eq!(s.totp(1000).unwrap(), None);
        assert!(s.unused_recovery(1000).unwrap().is_empty());
        assert_eq!(s.pending_totp("q").unwrap(), None);
        // The admin requirement survives a reset; release clears it.
        assert!(s.user_state(1000).unwrap().unwrap().admin_required);
        s.set_admin_required(1000, "alice", false).unwrap();
        assert!(!s.user_state(1000).unwrap().unwrap().admin_required);
        let l = limit();
        for t in 0..3 {
            let _ = s.record_failure(1000, "alice", t, &l, &rec()).unwrap();
        }
        assert!(s.user_state(1000).unwrap().unwrap().locked_until > 0);
        s.unlock(1000).unwrap();
        let st = s.user_state(1000).unwrap().unwrap();
        assert_eq!((st.failures, st.lock_level, st.locked_until), (0, 0, 0));
    }

    fn audit_filters_and_orders(s: &mut impl Store) {
        for (t, uid) in [(10, 1000), (20, 1001), (30, 1000), (40, 1000)] {
            s.append_audit(&AuditRecord {
                time: t,
                uid,
                user: format!("u{uid}"),
                event: "login".into(),
                result: "success".into(),
                ..Default::default()
            })
            .unwrap();
        }
        let all = s.audit(None, 0, 100).unwrap();
        assert_eq!(
            all.iter().map(|r| r.time).collect::<Vec<_>>(),
            [10, 20, 30, 40]
        );
        let alice = s.audit(Some(1000), 15, 100).unwrap();
        assert_eq!(alice.iter().map(|r| r.time).collect::<Vec<_>>(), [30, 40]);
        let newest = s.audit(None, 0, 2).unwrap();
        assert_eq!(newest.iter().map(|r| r.time).collect::<Vec<_>>(), [30, 40]);
    }

    fn audit_is_pruned_by_age_and_by_count(s: &mut impl Store) {
        let times = |s: &dyn Store| -> Vec<i64> {
            s.audit(None, 0, 1000)
                .unwrap()
                .iter()
                .map(|r| r.time)
                .collect()
        };
        // Nothing to prune in an empty log.
        assert_eq!(s.prune_audit(100, 10, 50).unwrap(), 0);
        for t in 1..=30 {
            s.append_audit(&AuditRecord {
                time: t,
                uid: 1000 + (t as u32 % 2),
                event: "login".into(),
                result: "failure".into(),
                ..Default::default()
            })
            .unwrap();
        }
        // By age: records before time 6 go; in batches of at most `batch`.
        assert_eq!(s.prune_audit(6, 1000, 3).unwrap(), 3);
        assert_eq!(times(s).first(), Some(&4));
        assert_eq!(s.prune_audit(6, 1000, 3).unwrap(), 2);
        assert_eq!(s.prune_audit(6, 1000, 3).unwrap(), 0);
        assert_eq!(times(s), (6..=30).collect::<Vec<_>>());
        // By count: only the newest `keep_max` stay, whoever they belong to.
        assert_eq!(s.prune_audit(0, 10, 1000).unwrap(), 15);
        assert_eq!(times(s), (21..=30).collect::<Vec<_>>());
        assert_eq!(s.prune_audit(0, 10, 1000).unwrap(), 0);
        // Both at once, age first, within one batch.
        assert_eq!(s.prune_audit(23, 5, 4).unwrap(), 4);
        assert_eq!(times(s), (25..=30).collect::<Vec<_>>());
        assert_eq!(s.prune_audit(23, 5, 4).unwrap(), 1);
        assert_eq!(times(s), (26..=30).collect::<Vec<_>>());
        // New records still append after a prune; a cap of 0 empties the log.
        s.append_audit(&rec()).unwrap();
        assert_eq!(s.audit(None, 0, 1000).unwrap().len(), 6);
        assert_eq!(s.prune_audit(0, u64::MAX, 1000).unwrap(), 0);
        assert_eq!(s.prune_audit(0, 0, 1000).unwrap(), 6);
        assert!(s.audit(None, 0, 1000).unwrap().is_empty());
    }

    fn users_are_isolated(s: &mut impl Store) {
        s.put_pending_totp(&pending(1000, "a")).unwrap();
        let _ = s
            .activate_totp(
                1000,
                "alice",
                "a",
                50,
                1,
                Codes::IfNone(&codes(2)),
                Existing::NoFactor,
            )
            .unwrap();
        assert_eq!(s.totp(1001).unwrap(), None);
        assert!(s.unused_recovery(1001).unwrap().is_empty());
        assert!(s.accept_totp_step(1000, 51, 2, &rec()).unwrap());
        assert_eq!(s.known_uids().unwrap(), vec![1000]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_in_memory_passes_the_conformance_suite() {
        conformance::run_all(|| SqliteStore::in_memory().expect("in-memory db"));
    }

    #[test]
    fn sqlite_on_disk_passes_the_conformance_suite_and_is_private() {
        let dirs: Vec<tempfile::TempDir> = Vec::new();
        let dirs = std::cell::RefCell::new(dirs);
        conformance::run_all(|| {
            let d = tempfile::tempdir().expect("tempdir");
            let state = d.path().join("state");
            let s = SqliteStore::open(&state).expect("open");
            dirs.borrow_mut().push(d);
            s
        });
        let d = tempfile::tempdir().expect("tempdir");
        let state = d.path().join("state");
        drop(SqliteStore::open(&state).expect("open"));
        let mode = std::fs::metadata(&state).expect("dir").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let db = std::fs::metadata(state.join("state.sqlite3")).expect("db");
        assert_eq!(db.permissions().mode() & 0o077, 0);
    }

    #[test]
    fn state_survives_reopen() {
        let d = tempfile::tempdir().expect("tempdir");
        let state = d.path().join("s");
        {
            let mut s = SqliteStore::open(&state).expect("open");
            let l = RateLimit {
                max_failures: 1,
                lockout: std::time::Duration::from_secs(60),
                escalation: 2,
                max_lockout: std::time::Duration::from_secs(600),
            };
            let _ = s
                .record_failure(5, "x", 100, &l, &AuditRecord::default())
                .expect("failure");
        }
        let s = SqliteStore::open(&state).expect("reopen");
        assert_eq!(
            s.user_state(5).expect("read").expect("row").locked_until,
            160
        );
    }

    #[test]
    fn loose_state_dir_is_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let e = SqliteStore::open(d.path()).expect_err("must refuse");
        assert!(e.0.contains("chmod 700"), "{e}");
    }
}
