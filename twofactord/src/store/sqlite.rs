//! The embedded backend: SQLite (bundled) in a root-only state directory.
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

use super::seal::{self, Binding, SealingKey};
use super::*;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}

/// 3: `pending_totp.proven`. 4: `sealing` (secrets sealed under a key; a daemon older than
/// that would take sealed secrets for plain ones, so it must refuse this state).
const SCHEMA_VERSION: i64 = 4;

/// What the key check in the `sealing` table is bound to.
const KEY_CHECK: Binding<'static> = Binding {
    user: "",
    factor: "key-check",
};
const KEY_CHECK_TEXT: &[u8] = b"twofactor state key check";

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
CREATE TABLE IF NOT EXISTS sealing (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    key_check BLOB NOT NULL
);
";

/// SQLite in WAL mode with durable commits, in a root-only directory.
pub struct SqliteStore {
    conn: Connection,
    /// The state directory (snapshots are made there); `None` in memory.
    dir: Option<PathBuf>,
    /// The key secrets are sealed under; `None`: the store is in clear.
    key: Option<SealingKey>,
    /// Set when this opening sealed the store for the first time: how many plain secrets it
    /// sealed.
    sealed_at_open: Option<usize>,
}

/// The two tables that hold secrets, with their key column and the factor their secrets are
/// bound to.
const SECRET_TABLES: [(&str, &str, &str); 2] = [
    ("totp", "uid", "totp"),
    ("pending_totp", "id", "pending-totp"),
];

/// What a secret of `uid` for `factor` is bound to (the uid, as a decimal string).
fn seal_for(key: &SealingKey, uid: u32, factor: &str, secret: &[u8]) -> StoreResult<Vec<u8>> {
    key.seal(
        secret,
        Binding {
            user: &uid.to_string(),
            factor,
        },
    )
}

/// The secret in a stored `value` of `uid` for `factor`: opened with the key, or taken as it
/// is in a store without one. A plain value in a sealed store, or a sealed value without a
/// key, is an error, never a secret (and never "not enrolled").
fn reveal(
    key: Option<&SealingKey>,
    uid: u32,
    factor: &str,
    value: Vec<u8>,
) -> StoreResult<TotpSecret> {
    match key {
        Some(k) => {
            if !seal::is_sealed(&value) {
                return Err(StoreError(format!(
                    "the {factor} secret of uid {uid} is stored in clear in a sealed state: \
                     refused (was the row written by hand?)"
                )));
            }
            let user = uid.to_string();
            let open = k.open(
                &value,
                Binding {
                    user: &user,
                    factor,
                },
            )?;
            Ok(TotpSecret::from_bytes(open.to_vec()))
        }
        None if seal::is_sealed(&value) => Err(StoreError(format!(
            "the {factor} secret of uid {uid} is sealed, and the daemon has no key: give it \
             its key file"
        ))),
        None => Ok(TotpSecret::from_bytes(value)),
    }
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
    Ok(dir.join(STATE_FILE))
}

/// The database file in the state directory.
pub const STATE_FILE: &str = "state.sqlite3";

/// The lock file in the state directory: held by a running daemon and by `twofactord restore`.
pub const LOCK_FILE: &str = "twofactord.lock";

/// Takes the state directory's lock (creating the directory like [`prepare_state_dir`]), for as
/// long as the returned value lives: a second daemon on the same directory, or a restore while
/// the daemon runs, is refused.
pub fn lock_state_dir(dir: &Path) -> StoreResult<nix::fcntl::Flock<std::fs::File>> {
    prepare_state_dir(dir)?;
    lock_file_in(dir)
}

/// Opens (creating, mode 0600) and locks `dir`'s lock file without waiting.
pub fn lock_file_in(dir: &Path) -> StoreResult<nix::fcntl::Flock<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        if e == nix::errno::Errno::EWOULDBLOCK {
            StoreError(format!(
                "{} is in use: twofactord is running on it (or a restore is under way)",
                dir.display()
            ))
        } else {
            StoreError(format!("cannot lock {}: {e}", path.display()))
        }
    })
}

/// `twofactord rekey`: re-seals every secret of the state in `dir` (a stopped daemon's: its
/// lock is taken, and held throughout) from `old` to `new`, in one transaction. A state in
/// clear is sealed under `old` first. Run by root on a directory the daemon's user owns: what
/// SQLite leaves there stays that user's.
pub fn rekey_state(dir: &Path, old: SealingKey, new: SealingKey) -> StoreResult<usize> {
    use rusqlite::OpenFlags;
    let shown = dir.display();
    let meta = std::fs::symlink_metadata(dir).map_err(|e| StoreError(format!("{shown}: {e}")))?;
    if !meta.is_dir() {
        return Err(StoreError(format!("{shown} is not a directory")));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(StoreError(format!(
            "{shown} is accessible by other users; run: chmod 700 {shown}"
        )));
    }
    let owner = (meta.uid(), meta.gid());
    let me = nix::unistd::geteuid().as_raw();
    if owner.0 != me && me != 0 {
        return Err(StoreError(format!(
            "{shown} is owned by uid {}: run rekey as root or as that user",
            owner.0
        )));
    }
    let lock = lock_file_in(dir).map_err(|e| {
        StoreError(format!(
            "{}; stop it first (systemctl stop twofactord), then rekey",
            e.0
        ))
    })?;
    let path = dir.join(STATE_FILE);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_file() => {}
        Ok(_) => {
            return Err(StoreError(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        Err(e) => return Err(StoreError(format!("{}: {e}", path.display()))),
    }
    let old_umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW,
    );
    nix::sys::stat::umask(old_umask);
    let result = (|| {
        let mut store = SqliteStore::init(conn?, Some(old))?;
        store.dir = Some(dir.to_path_buf());
        if store.sealed_at_open.is_some() {
            store.scrub()?;
        }
        let n = store.rekey(new)?;
        // Closing the last connection folds the WAL back and removes it.
        store.conn.close().map_err(|(_, e)| StoreError::from(e))?;
        Ok(n)
    })();
    // Whatever SQLite created as root (a WAL, shared memory) goes back to the daemon's user.
    for name in [
        LOCK_FILE,
        STATE_FILE,
        "state.sqlite3-wal",
        "state.sqlite3-shm",
    ] {
        let p = dir.join(name);
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_file()) {
            let _ = std::os::unix::fs::lchown(&p, Some(owner.0), Some(owner.1));
        }
    }
    drop(lock);
    result
}

/// What [`check_restorable`] found in a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupInfo {
    /// Its schema version (`PRAGMA user_version`).
    pub version: i64,
    /// Users with state in it.
    pub users: u64,
}

/// The tables and columns this daemon reads, and whether a backup must have them (older schema
/// versions lack some; opening the store creates or migrates them).
const EXPECTED_TABLES: &[(&str, &str, bool)] = &[
    (
        "users",
        "uid, name, admin_required, failures, lock_level, locked_until, last_totp_step, \
         required_since",
        true,
    ),
    (
        "totp",
        "uid, secret, algorithm, digits, period, created, last_used",
        true,
    ),
    ("recovery", "id, uid, salt, hash, used_at", true),
    (
        "audit",
        "id, time, uid, user, event, result, service, rhost, actor, detail",
        true,
    ),
    (
        "keys",
        "uid, name, credential_id, public_key, rp_id, sign_count, user_verification, source, \
         created, last_used",
        false,
    ),
];

/// Checks that the file at `path` (a private copy, about to become the state) is a twofactord
/// state database this daemon understands, then appends `record` to its audit log. Nothing in
/// the file is trusted: no triggers or views are accepted, and its schema is not run.
pub fn check_restorable(path: &Path, record: &AuditRecord) -> StoreResult<BackupInfo> {
    use rusqlite::OpenFlags;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW,
    )?;
    conn.pragma_update(None, "trusted_schema", false)?;
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    let not_ours = |why: &str| StoreError(format!("not a twofactord state database: {why}"));
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| not_ours(&e.to_string()))?;
    if check != "ok" {
        return Err(StoreError(format!("the database is damaged: {check}")));
    }
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version <= 0 {
        return Err(not_ours("it has no twofactord schema version"));
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError(format!(
            "the backup's schema version {version} is newer than this daemon's \
             ({SCHEMA_VERSION}): restore it with the twofactord that made it"
        )));
    }
    let code: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type IN ('trigger', 'view')",
        [],
        |r| r.get(0),
    )?;
    if code > 0 {
        return Err(not_ours("it holds triggers or views"));
    }
    for (table, columns, required) in EXPECTED_TABLES {
        let present: bool = conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
            params![table],
            |r| r.get(0),
        )?;
        if !present {
            if *required {
                return Err(not_ours(&format!("table {table} is missing")));
            }
            continue;
        }
        conn.prepare(&format!("SELECT {columns} FROM {table} LIMIT 0"))
            .map_err(|e| not_ours(&format!("table {table}: {e}")))?;
    }
    let users: i64 = conn.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?;
    insert_audit(&conn, record)?;
    // One self-contained file: no WAL next to it.
    conn.pragma_update(None, "journal_mode", "DELETE")?;
    conn.close().map_err(|(_, e)| StoreError::from(e))?;
    Ok(BackupInfo {
        version,
        users: users.max(0) as u64,
    })
}

/// Folds a stopped daemon's write-ahead log into the database at `path` (so the file alone
/// holds the whole state); `Ok(false)` if there was nothing to open.
pub fn checkpoint(path: &Path) -> StoreResult<bool> {
    use rusqlite::OpenFlags;
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(false);
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW,
    )?;
    conn.pragma_update(None, "journal_mode", "DELETE")?;
    conn.close().map_err(|(_, e)| StoreError::from(e))?;
    Ok(true)
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
    /// Opens (creating if needed) the database in `state_dir`, in clear: refused if the state
    /// is sealed. See [`SqliteStore::open_with_key`].
    pub fn open(state_dir: &Path) -> StoreResult<SqliteStore> {
        Self::open_with_key(state_dir, None)
    }

    /// Opens (creating if needed) the database in `state_dir`. With a key, secrets are sealed
    /// under it (plain ones already there are sealed now: [`SqliteStore::sealed_at_open`]);
    /// a state sealed under another key is refused. Without one, a sealed state is refused.
    pub fn open_with_key(state_dir: &Path, key: Option<SealingKey>) -> StoreResult<SqliteStore> {
        let path = prepare_state_dir(state_dir)?;
        // The database file is created by SQLite: keep it private whatever the umask.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        let conn = Connection::open(&path);
        nix::sys::stat::umask(old);
        let conn = conn?;
        let mut store = Self::init(conn, key)?;
        store.dir = Some(state_dir.to_path_buf());
        if store.sealed_at_open.is_some() {
            store.scrub()?;
        }
        Ok(store)
    }

    /// An in-memory database (tests).
    pub fn in_memory() -> StoreResult<SqliteStore> {
        Self::init(Connection::open_in_memory()?, None)
    }

    /// An in-memory database sealed under `key` (tests).
    pub fn in_memory_with_key(key: SealingKey) -> StoreResult<SqliteStore> {
        Self::init(Connection::open_in_memory()?, Some(key))
    }

    /// `Some(n)` when this opening sealed a store in clear for the first time: `n` plain
    /// secrets were sealed in place.
    pub fn sealed_at_open(&self) -> Option<usize> {
        self.sealed_at_open
    }

    /// Whether secrets are sealed (the store was opened with a key).
    pub fn is_sealed(&self) -> bool {
        self.key.is_some()
    }

    fn init(conn: Connection, key: Option<SealingKey>) -> StoreResult<SqliteStore> {
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
        let mut store = SqliteStore {
            conn,
            dir: None,
            key: None,
            sealed_at_open: None,
        };
        let check: Option<Vec<u8>> = store
            .conn
            .query_row("SELECT key_check FROM sealing WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        match (key, check) {
            (None, None) => {}
            (None, Some(_)) => {
                return Err(StoreError(
                    "the state's secrets are sealed, and no key was given: the daemon needs the \
                     key file they were sealed under (store.secret_key_file in the policy, or \
                     the store.key credential)"
                        .into(),
                ));
            }
            (Some(k), Some(check)) => {
                let opens = k
                    .open(&check, KEY_CHECK)
                    .is_ok_and(|t| t.as_slice() == KEY_CHECK_TEXT);
                if !opens {
                    return Err(StoreError(
                        "the key does not open this state: its secrets were sealed under another \
                         key (a wrong or replaced key file?)"
                            .into(),
                    ));
                }
                store.key = Some(k);
            }
            (Some(k), None) => {
                store.sealed_at_open = Some(store.reseal_all(None, &k)?);
                store.key = Some(k);
            }
        }
        Ok(store)
    }

    /// Re-seals every secret under `new` (after opening it with `old`, or taking it in clear
    /// when `old` is `None`) and records `new`'s key check, in one transaction with deleted
    /// content overwritten; then rewrites the database and truncates the WAL, so no copy of
    /// the old values stays in the files. Returns how many secrets it sealed.
    fn reseal_all(&mut self, old: Option<&SealingKey>, new: &SealingKey) -> StoreResult<usize> {
        self.conn.pragma_update(None, "secure_delete", true)?;
        let done = (|| {
            let tx = self.conn.transaction()?;
            let mut count = 0;
            for (table, id, factor) in SECRET_TABLES {
                let rows: Vec<(rusqlite::types::Value, u32, Vec<u8>)> = {
                    let mut stmt = tx.prepare(&format!("SELECT {id}, uid, secret FROM {table}"))?;
                    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                    rows.collect::<Result<_, _>>()?
                };
                for (row_id, uid, value) in rows {
                    // First sealing (`old` is `None`): plain values only; a sealed one means
                    // the key check was deleted by hand, refused rather than sealed twice.
                    let secret = reveal(old, uid, factor, value)?;
                    let sealed = seal_for(new, uid, factor, secret.as_bytes())?;
                    tx.execute(
                        &format!("UPDATE {table} SET secret = ?1 WHERE {id} = ?2"),
                        params![sealed, row_id],
                    )?;
                    count += 1;
                }
            }
            let check = new.seal(KEY_CHECK_TEXT, KEY_CHECK)?;
            tx.execute(
                "INSERT INTO sealing (id, key_check) VALUES (1, ?1)
                 ON CONFLICT(id) DO UPDATE SET key_check = excluded.key_check",
                params![check],
            )?;
            tx.commit()?;
            Ok::<usize, StoreError>(count)
        })();
        let reset = self.conn.pragma_update(None, "secure_delete", false);
        let count = done?;
        reset?;
        Ok(count)
    }

    /// Rewrites the database file and empties the WAL: after a (re)sealing, no copy of the
    /// old values stays in free pages or in WAL frames.
    fn scrub(&self) -> StoreResult<()> {
        self.conn.execute_batch("VACUUM")?;
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Re-seals every secret under `new` (the store must be sealed: opened with its key), in
    /// one transaction; from then on only `new` opens the state. Returns how many secrets.
    pub fn rekey(&mut self, new: SealingKey) -> StoreResult<usize> {
        let Some(old) = self.key.take() else {
            return Err(StoreError(
                "the state is not sealed: open it with a key first".into(),
            ));
        };
        match self.reseal_all(Some(&old), &new) {
            Ok(n) => {
                self.key = Some(new);
                if self.dir.is_some() {
                    self.scrub()?;
                }
                Ok(n)
            }
            Err(e) => {
                self.key = Some(old);
                Err(e)
            }
        }
    }

    /// Opens a stopped daemon's state read-only (`twofactord migrate`; the caller holds the
    /// state directory's lock): nothing is created, upgraded or sealed. A missing file, a file
    /// that is not this daemon's state, another schema version, or a key that does not open it
    /// is refused.
    pub fn open_read_only(state_dir: &Path, key: Option<SealingKey>) -> StoreResult<SqliteStore> {
        use rusqlite::OpenFlags;
        let path = state_dir.join(STATE_FILE);
        let shown = path.display();
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_file() => {}
            Ok(_) => return Err(StoreError(format!("{shown} is not a regular file"))),
            Err(e) => return Err(StoreError(format!("{shown}: {e}"))),
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .map_err(|e| StoreError(format!("{shown}: {e}")))?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| StoreError(format!("{shown} is not a twofactord state: {e}")))?;
        if version != SCHEMA_VERSION {
            return Err(StoreError(format!(
                "{shown} has schema version {version}, not {SCHEMA_VERSION}: it is not a \
                 twofactord state, or another version's (start this version's daemon on it \
                 once, stop it, then try again)"
            )));
        }
        let check: Option<Vec<u8>> = conn
            .query_row("SELECT key_check FROM sealing WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| StoreError(format!("{shown}: {e}")))?;
        let key = match (key, check) {
            (_, None) => None,
            (None, Some(_)) => {
                return Err(StoreError(format!(
                    "the secrets in {shown} are sealed: give the key file they were sealed \
                     under (--secret-key-file)"
                )));
            }
            (Some(k), Some(check)) => {
                if !k
                    .open(&check, KEY_CHECK)
                    .is_ok_and(|t| t.as_slice() == KEY_CHECK_TEXT)
                {
                    return Err(StoreError(format!(
                        "the key does not open {shown}: its secrets were sealed under another key"
                    )));
                }
                Some(k)
            }
        };
        Ok(SqliteStore {
            conn,
            dir: Some(state_dir.to_path_buf()),
            key,
            sealed_at_open: None,
        })
    }

    /// Every recovery code of `uid`, used ones with the time they were used, oldest first.
    pub fn all_recovery(&self, uid: u32) -> StoreResult<Vec<(StoredCode, Option<i64>)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, salt, hash, used_at FROM recovery WHERE uid = ?1 ORDER BY id")?;
        let rows = stmt.query_map(params![uid], |r| {
            Ok((
                StoredCode {
                    id: r.get(0)?,
                    salt: r.get(1)?,
                    hash: r.get(2)?,
                },
                r.get(3)?,
            ))
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
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

/// A security key from a row of `name, credential_id, public_key, rp_id, sign_count,
/// user_verification, source, created, last_used` (the columns of `keys`, here and in the
/// fleet's offline cache).
pub(super) fn key_of_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyFactor> {
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
}

/// A recovery code from a row of `id, salt, hash` (here and in the fleet's offline cache).
pub(super) fn code_of_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredCode> {
    Ok(StoredCode {
        id: r.get(0)?,
        salt: r.get(1)?,
        hash: r.get(2)?,
    })
}

/// Counts one failure of `uid` in `tx` (the users row) and, past the limit, starts a lockout
/// (here and in the fleet's offline copy). A user without a row has no failures yet.
pub(super) fn count_failure(
    tx: &rusqlite::Transaction<'_>,
    uid: u32,
    limit: &RateLimit,
    now: i64,
) -> rusqlite::Result<FailureOutcome> {
    let (failures, level): (u32, u32) = tx
        .prepare_cached("SELECT failures, lock_level FROM users WHERE uid = ?1")?
        .query_row(params![uid], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or((0, 0));
    let (failures, lock) = limit.after_failure(failures, level, now);
    if let Some((level, until)) = lock {
        tx.prepare_cached(
            "UPDATE users SET failures = 0, lock_level = ?2, locked_until = ?3 WHERE uid = ?1",
        )?
        .execute(params![uid, level, until])?;
    } else {
        tx.prepare_cached("UPDATE users SET failures = ?2 WHERE uid = ?1")?
            .execute(params![uid, failures])?;
    }
    Ok(FailureOutcome {
        failures,
        locked_until: lock.map(|(_, until)| until),
    })
}

/// A user's recovery codes of the current set, by id: those not used yet, or (`used`) those
/// used (kept so that a used one is told from a wrong one: a replay, not a guess). Here and in
/// the fleet's offline copy. Sorted here, not by ORDER BY (see `keys`): a wrong code reads
/// these at every try.
pub(super) fn recovery_codes(
    conn: &Connection,
    uid: u32,
    used: bool,
) -> rusqlite::Result<Vec<StoredCode>> {
    let mut stmt = conn.prepare_cached(if used {
        "SELECT id, salt, hash FROM recovery WHERE uid = ?1 AND used_at IS NOT NULL"
    } else {
        "SELECT id, salt, hash FROM recovery WHERE uid = ?1 AND used_at IS NULL"
    })?;
    let mut codes = stmt
        .query_map(params![uid], code_of_row)?
        .collect::<Result<Vec<_>, _>>()?;
    codes.sort_by_key(|c| c.id);
    Ok(codes)
}

/// An audit record from the row's columns `time, uid, user, event, result, service, rhost,
/// actor, detail` from column `at` on (here and in the fleet's offline journal).
pub(super) fn audit_of_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        time: r.get(at)?,
        uid: r.get(at + 1)?,
        user: r.get(at + 2)?,
        event: r.get(at + 3)?,
        result: r.get(at + 4)?,
        service: r.get(at + 5)?,
        rhost: r.get(at + 6)?,
        actor: r.get(at + 7)?,
        detail: r.get(at + 8)?,
    })
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
    fn reads_are_local(&self) -> bool {
        true
    }

    fn user_state(&self, uid: u32) -> StoreResult<Option<UserState>> {
        // Every login reads these: statements kept prepared (parsed once per connection).
        Ok(self
            .conn
            .prepare_cached(
                "SELECT name, admin_required, failures, lock_level, locked_until, last_totp_step,
                        required_since
                 FROM users WHERE uid = ?1",
            )?
            .query_row(params![uid], |r| {
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
            })
            .optional()?)
    }

    fn totp(&self, uid: u32) -> StoreResult<Option<TotpFactor>> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT secret, algorithm, digits, period, created, last_used
                 FROM totp WHERE uid = ?1",
            )?
            .query_row(params![uid], |r| {
                let alg: String = r.get(1)?;
                let value: Vec<u8> = r.get(0)?;
                Ok((
                    value,
                    params_from_row(&alg, r.get(2)?, r.get(3)?)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .optional()?;
        row.map(|(value, params, created, last_used)| {
            Ok(TotpFactor {
                secret: reveal(self.key.as_ref(), uid, "totp", value)?,
                params,
                created,
                last_used,
            })
        })
        .transpose()
    }

    fn put_pending_totp(&mut self, p: &PendingTotp) -> StoreResult<()> {
        let value = match &self.key {
            Some(k) => seal_for(k, p.uid, "pending-totp", p.secret.as_bytes())?,
            None => p.secret.as_bytes().to_vec(),
        };
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM pending_totp WHERE uid = ?1", params![p.uid])?;
        tx.execute(
            "INSERT INTO pending_totp (id, uid, secret, algorithm, digits, period, expires, proven)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                p.id,
                p.uid,
                value,
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
        let row = self
            .conn
            .query_row(
                "SELECT uid, secret, algorithm, digits, period, expires, proven
                 FROM pending_totp WHERE id = ?1",
                params![id],
                |r| {
                    let alg: String = r.get(2)?;
                    let uid: u32 = r.get(0)?;
                    let value: Vec<u8> = r.get(1)?;
                    Ok((
                        uid,
                        value,
                        params_from_row(&alg, r.get(3)?, r.get(4)?)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(uid, value, params, expires, proven)| {
            Ok(PendingTotp {
                id: id.to_string(),
                uid,
                secret: reveal(self.key.as_ref(), uid, "pending-totp", value)?,
                params,
                expires,
                proven,
            })
        })
        .transpose()
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
        let value: Option<Vec<u8>> = tx
            .query_row(
                "SELECT secret FROM pending_totp WHERE id = ?1 AND uid = ?2",
                params![pending_id, uid],
                |r| r.get(0),
            )
            .optional()?;
        let Some(value) = value else {
            return Err(StoreError("the enrollment is no longer pending".into()));
        };
        // Re-sealed from the pending binding to the active one.
        let value = match &self.key {
            Some(k) => {
                let secret = reveal(Some(k), uid, "pending-totp", value)?;
                seal_for(k, uid, "totp", secret.as_bytes())?
            }
            None => value,
        };
        let moved = tx.execute(
            "INSERT INTO totp (uid, secret, algorithm, digits, period, created, last_used)
             SELECT uid, ?4, algorithm, digits, period, ?3, ?3
             FROM pending_totp WHERE id = ?1 AND uid = ?2",
            params![pending_id, uid, now, value],
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
        let changed = tx
            .prepare_cached(
                "UPDATE users SET last_totp_step = ?2, failures = 0, lock_level = 0
                 WHERE uid = ?1 AND (last_totp_step IS NULL OR last_totp_step < ?2)",
            )?
            .execute(params![uid, step as i64])?;
        if changed == 1 {
            tx.prepare_cached("UPDATE totp SET last_used = ?2 WHERE uid = ?1")?
                .execute(params![uid, now])?;
            insert_audit(&tx, audit)?;
        }
        tx.commit()?;
        Ok(changed == 1)
    }

    fn unused_recovery(&self, uid: u32) -> StoreResult<Vec<StoredCode>> {
        Ok(recovery_codes(&self.conn, uid, false)?)
    }

    fn used_recovery(&self, uid: u32) -> StoreResult<Vec<StoredCode>> {
        Ok(recovery_codes(&self.conn, uid, true)?)
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
        let outcome = count_failure(&tx, uid, limit, now)?;
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
        let left = u64::from(batch).saturating_sub(old as u64);
        let mut excess = 0u64;
        if left > 0 {
            let total: i64 = tx.query_row("SELECT count(*) FROM audit", [], |r| r.get(0))?;
            let over = (total.max(0) as u64).saturating_sub(keep_max).min(left);
            if over > 0 {
                // Over the cap: the users with the most records give their oldest first.
                let counts = {
                    let mut stmt =
                        tx.prepare_cached("SELECT uid, count(*), min(id) FROM audit GROUP BY uid")?;
                    let rows = stmt.query_map([], |r| {
                        Ok((
                            r.get::<_, u32>(0)?,
                            r.get::<_, i64>(1)?.max(0) as u64,
                            r.get::<_, i64>(2)?,
                        ))
                    })?;
                    rows.collect::<Result<Vec<_>, _>>()?
                };
                let mut delete = tx.prepare_cached(
                    "DELETE FROM audit WHERE id IN (
                         SELECT id FROM audit WHERE uid = ?1 ORDER BY time, id LIMIT ?2)",
                )?;
                for (uid, n) in audit_shares(&counts, over) {
                    excess +=
                        delete.execute(params![uid, i64::try_from(n).unwrap_or(i64::MAX)])? as u64;
                }
            }
        }
        tx.commit()?;
        Ok(old as u64 + excess)
    }

    fn audit(&self, uid: Option<u32>, since: i64, limit: u32) -> StoreResult<Vec<AuditRecord>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT time, uid, user, event, result, service, rhost, actor, detail FROM (
                 SELECT * FROM audit WHERE (?1 IS NULL OR uid = ?1) AND time >= ?2
                 ORDER BY id DESC LIMIT ?3
             ) ORDER BY id",
        )?;
        let rows = stmt.query_map(params![uid, since, limit], |r| audit_of_row(r, 0))?;
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

    fn offline_uids(&self) -> StoreResult<Vec<u32>> {
        let mut stmt = self.conn.prepare(
            "SELECT uid FROM users WHERE admin_required != 0 UNION SELECT uid FROM totp
             UNION SELECT uid FROM keys UNION SELECT uid FROM recovery WHERE used_at IS NULL
             ORDER BY uid",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn snapshot(&self) -> StoreResult<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = self.dir.clone().unwrap_or_else(std::env::temp_dir);
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| StoreError(format!("no randomness: {e}")))?;
        let name: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        let path = dir.join(format!(".snapshot-{name}.sqlite3"));
        // Created empty and private first (VACUUM INTO accepts an empty file), so the copy of
        // every secret is never readable by anyone else, whatever the umask.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", path.display())))?;
        let made = path
            .to_str()
            .ok_or_else(|| StoreError("state directory path is not UTF-8".into()))
            .and_then(|p| {
                // One read transaction: a consistent copy, compacted, with user_version.
                self.conn
                    .execute("VACUUM INTO ?1", params![p])
                    .map_err(StoreError::from)
            })
            .and_then(|_| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&path)
                    .map_err(|e| StoreError(format!("cannot open the snapshot: {e}")))
            });
        // Unlinked at once: the open descriptor is the only way to it.
        let _ = std::fs::remove_file(&path);
        made
    }

    fn keys(&self, uid: u32) -> StoreResult<Vec<KeyFactor>> {
        // Sorted here, not by ORDER BY: with it SQLite prepares the statement again at every
        // run (ORDER BY over a bound parameter's rows, with STAT4 compiled in: measured with
        // SQLITE_STMTSTATUS_REPREPARE), on every login.
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, credential_id, public_key, rp_id, sign_count, user_verification,
                    source, created, last_used
             FROM keys WHERE uid = ?1",
        )?;
        let rows = stmt.query_map(params![uid], key_of_row)?;
        let mut keys = rows.collect::<Result<Vec<_>, _>>()?;
        // As ORDER BY created, name (BINARY collation: byte order, as `str`'s).
        keys.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
        Ok(keys)
    }

    fn credential_enrolled(&self, rp_id: &str, credential_id: &[u8]) -> StoreResult<bool> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM keys WHERE rp_id = ?1 AND credential_id = ?2")?;
        Ok(stmt.exists(params![rp_id, credential_id])?)
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::store::conformance;

    #[test]
    fn keys_come_oldest_first_then_by_name_and_codes_by_id() {
        let mut s = SqliteStore::in_memory().expect("store");
        let key = |name: &str, id: u8, created: i64| KeyFactor {
            name: name.into(),
            credential_id: vec![id; 40],
            public_key_cose: vec![0xa0],
            rp_id: "pam://h".into(),
            sign_count: 0,
            user_verification: false,
            source: "enrolled".into(),
            created,
            last_used: 0,
        };
        let audit = AuditRecord {
            uid: 1000,
            event: "test".into(),
            ..Default::default()
        };
        let codes: Vec<StoredCode> = (0..4u8)
            .map(|i| StoredCode {
                id: 0,
                salt: vec![i; 16],
                hash: vec![i; 32],
            })
            .collect();
        let added = s.add_keys(
            1000,
            "alice",
            &[key("b", 1, 300), key("z", 2, 200), key("a", 3, 300)],
            Codes::IfNone(&codes),
            Existing::NoFactor,
            &audit,
        );
        assert!(matches!(added, Ok(Activation::Done { .. })), "{added:?}");
        let names: Vec<String> = s
            .keys(1000)
            .expect("keys")
            .into_iter()
            .map(|k| k.name)
            .collect();
        assert_eq!(names, ["z", "a", "b"]);
        let unused = s.unused_recovery(1000).expect("codes");
        assert_eq!(unused.len(), 4);
        assert!(unused.windows(2).all(|w| w[0].id < w[1].id), "by id");
        assert_eq!(unused[0].salt, [0; 16], "in the order they were stored");
    }

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

    fn key() -> SealingKey {
        SealingKey::generate().expect("key")
    }

    #[test]
    fn sealed_sqlite_passes_the_conformance_suite() {
        conformance::run_all(|| SqliteStore::in_memory_with_key(key()).expect("in-memory db"));
        let dirs = std::cell::RefCell::new(Vec::new());
        conformance::run_all(|| {
            let d = tempfile::tempdir().expect("tempdir");
            let s = SqliteStore::open_with_key(&d.path().join("state"), Some(key())).expect("open");
            dirs.borrow_mut().push(d);
            s
        });
    }

    const SECRET_A: [u8; 20] = *b"alice-secret-0123456";
    const SECRET_B: [u8; 20] = *b"bob-secret-abcdefghi";

    fn params() -> TotpParams {
        TotpParams {
            algorithm: Algorithm::SHA1,
            digits: 6,
            period: 30,
        }
    }

    /// Enrolls `uid` with `secret` (pending, then active), and leaves a second pending one.
    fn enroll(s: &mut SqliteStore, uid: u32, name: &str, secret: &[u8]) {
        let id = format!("p{uid}");
        s.put_pending_totp(&PendingTotp {
            id: id.clone(),
            uid,
            secret: TotpSecret::from_bytes(secret.to_vec()),
            params: params(),
            expires: 1000,
            proven: false,
        })
        .expect("pending");
        let done = s
            .activate_totp(uid, name, &id, 1, 10, Codes::Keep, Existing::NoFactor)
            .expect("activate");
        assert_eq!(done, Activation::Done { codes_set: false });
        s.put_pending_totp(&PendingTotp {
            id: format!("q{uid}"),
            uid,
            secret: TotpSecret::from_bytes(secret.iter().rev().copied().collect()),
            params: params(),
            expires: 1000,
            proven: true,
        })
        .expect("second pending");
    }

    /// Every file of the state directory, concatenated (database, WAL, shared memory).
    fn raw_files(state: &Path) -> Vec<u8> {
        let mut all = Vec::new();
        for e in std::fs::read_dir(state).expect("dir") {
            all.extend(std::fs::read(e.expect("entry").path()).expect("read"));
        }
        all
    }

    fn holds(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    fn raw_secrets(state: &Path) -> Vec<Vec<u8>> {
        let c = Connection::open(state.join(STATE_FILE)).expect("raw open");
        let mut out = Vec::new();
        for table in ["totp", "pending_totp"] {
            let mut stmt = c
                .prepare(&format!("SELECT secret FROM {table}"))
                .expect("select");
            let rows = stmt.query_map([], |r| r.get(0)).expect("rows");
            out.extend(rows.map(|r| r.expect("row")));
        }
        out
    }

    #[test]
    fn sealed_secrets_are_not_in_the_files_and_open_for_their_owner_only() {
        let d = tempfile::tempdir().expect("tempdir");
        let state = d.path().join("state");
        let k = key();
        {
            let mut s = SqliteStore::open_with_key(&state, Some(k.clone())).expect("open");
            assert!(s.is_sealed());
            assert_eq!(s.sealed_at_open(), Some(0));
            enroll(&mut s, 1000, "alice", &SECRET_A);
            enroll(&mut s, 1001, "bob", &SECRET_B);
            assert_eq!(s.totp(1000).unwrap().unwrap().secret.as_bytes(), SECRET_A);
            assert_eq!(s.totp(1001).unwrap().unwrap().secret.as_bytes(), SECRET_B);
            let q = s.pending_totp("q1000").unwrap().unwrap();
            assert_eq!(
                q.secret.as_bytes(),
                SECRET_A.iter().rev().copied().collect::<Vec<_>>()
            );
        }
        // Read with rusqlite directly: every stored secret is sealed, none in clear.
        let raw = raw_secrets(&state);
        assert_eq!(raw.len(), 4);
        for v in &raw {
            assert!(seal::is_sealed(v));
            assert!(!holds(v, &SECRET_A) && !holds(v, &SECRET_B));
        }
        // Nor anywhere in the files.
        let files = raw_files(&state);
        for secret in [SECRET_A, SECRET_B] {
            assert!(!holds(&files, &secret));
            let rev: Vec<u8> = secret.iter().rev().copied().collect();
            assert!(!holds(&files, &rev));
        }
        // Swapping two users' sealed secrets makes both fail to open: an error, not a secret
        // and not "not enrolled".
        {
            let c = Connection::open(state.join(STATE_FILE)).expect("raw open");
            c.execute_batch(
                "UPDATE totp SET uid = -1 WHERE uid = 1000;
                 UPDATE totp SET uid = 1000 WHERE uid = 1001;
                 UPDATE totp SET uid = 1001 WHERE uid = -1;
                 UPDATE pending_totp SET id = 'x' WHERE id = 'q1000';",
            )
            .expect("swap");
            // A pending secret moved to the active table: also refused.
            c.execute(
                "UPDATE pending_totp SET secret = (SELECT secret FROM pending_totp WHERE id = 'x')
                 WHERE id = 'q1001'",
                [],
            )
            .expect("move");
        }
        let s = SqliteStore::open_with_key(&state, Some(k.clone())).expect("reopen");
        assert_eq!(s.sealed_at_open(), None);
        for uid in [1000, 1001] {
            let e = s.totp(uid).expect_err("swapped row must not open");
            assert!(e.0.contains("does not open"), "{e}");
        }
        assert!(s.pending_totp("q1001").is_err());
        assert!(s.pending_totp("x").is_ok_and(|p| p.is_some()));
        drop(s);
        // A plain secret written into the sealed state by hand: refused, not used.
        {
            let c = Connection::open(state.join(STATE_FILE)).expect("raw open");
            c.execute(
                "UPDATE totp SET secret = ?1 WHERE uid = 1000",
                params![SECRET_A.to_vec()],
            )
            .expect("plain");
        }
        let s = SqliteStore::open_with_key(&state, Some(k)).expect("reopen");
        let e = s.totp(1000).expect_err("plain in a sealed store");
        assert!(e.0.contains("in clear"), "{e}");
    }

    #[test]
    fn a_sealed_state_needs_its_own_key() {
        let d = tempfile::tempdir().expect("tempdir");
        let state = d.path().join("state");
        let k = key();
        {
            let mut s = SqliteStore::open_with_key(&state, Some(k.clone())).expect("open");
            enroll(&mut s, 1000, "alice", &SECRET_A);
        }
        let e = SqliteStore::open(&state).expect_err("no key");
        assert!(e.0.contains("no key was given"), "{e}");
        let e = SqliteStore::open_with_key(&state, Some(key())).expect_err("another key");
        assert!(e.0.contains("does not open this state"), "{e}");
        let s = SqliteStore::open_with_key(&state, Some(k)).expect("its key");
        assert_eq!(s.totp(1000).unwrap().unwrap().secret.as_bytes(), SECRET_A);
    }

    #[test]
    fn a_plain_state_is_sealed_in_place_on_the_first_open_with_a_key() {
        let d = tempfile::tempdir().expect("tempdir");
        let state = d.path().join("state");
        {
            let mut s = SqliteStore::open(&state).expect("open in clear");
            assert!(!s.is_sealed());
            enroll(&mut s, 1000, "alice", &SECRET_A);
            enroll(&mut s, 1001, "bob", &SECRET_B);
            // Deleted in clear: its bytes stay in a free page until the state is rewritten.
            s.reset(1001).expect("reset");
        }
        assert!(holds(&raw_files(&state), &SECRET_A));
        let k = key();
        let s = SqliteStore::open_with_key(&state, Some(k.clone())).expect("seal");
        assert_eq!(s.sealed_at_open(), Some(2));
        assert_eq!(s.totp(1000).unwrap().unwrap().secret.as_bytes(), SECRET_A);
        drop(s);
        let files = raw_files(&state);
        assert!(
            !holds(&files, &SECRET_A),
            "a plain secret survived the sealing"
        );
        assert!(
            !holds(&files, &SECRET_B),
            "a deleted plain secret survived the sealing"
        );
        assert!(raw_secrets(&state).iter().all(|v| seal::is_sealed(v)));
        // Sealed once: the next open seals nothing.
        let s = SqliteStore::open_with_key(&state, Some(k)).expect("reopen");
        assert_eq!(s.sealed_at_open(), None);
    }

    #[test]
    fn rekey_reseals_under_the_new_key_only() {
        let d = tempfile::tempdir().expect("tempdir");
        let state = d.path().join("state");
        let (old, new) = (key(), key());
        let before = {
            let mut s = SqliteStore::open_with_key(&state, Some(old.clone())).expect("open");
            enroll(&mut s, 1000, "alice", &SECRET_A);
            let before = raw_secrets(&state);
            assert_eq!(s.rekey(new.clone()).expect("rekey"), 2);
            assert_eq!(s.totp(1000).unwrap().unwrap().secret.as_bytes(), SECRET_A);
            before
        };
        let files = raw_files(&state);
        for v in before {
            assert!(
                !holds(&files, &v),
                "a value sealed under the old key survived"
            );
        }
        assert!(SqliteStore::open_with_key(&state, Some(old)).is_err());
        let s = SqliteStore::open_with_key(&state, Some(new)).expect("new key");
        assert_eq!(s.totp(1000).unwrap().unwrap().secret.as_bytes(), SECRET_A);
        let q = s.pending_totp("q1000").unwrap().unwrap();
        assert_eq!(q.uid, 1000);
        // A store in clear has nothing to re-key.
        let mut plain = SqliteStore::in_memory().expect("mem");
        assert!(plain.rekey(key()).is_err());
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
