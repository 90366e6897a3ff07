//! Which backend the daemon opens: SQLite in the state directory by default, the fleet's
//! PostgreSQL when `[store] url` is set. Takes plain values (the store imports no policy).
#![forbid(unsafe_code)]

use std::path::Path;
use std::time::Duration;

use super::fleet::{FleetStore, OfflineCache};
use super::postgres::{PgOptions, PostgresStore, parse_url};
use super::seal::SealingKey;
use super::{SqliteStore, Store, StoreResult};

/// The sealing key the policy names: a named file must load; the default file is used when it
/// exists (hosts installed before keys existed have none).
pub fn load_key(file: &Path, named: bool) -> StoreResult<Option<SealingKey>> {
    if named || file.exists() {
        return SealingKey::from_file(file).map(Some);
    }
    Ok(None)
}

/// Opens the state backend: PostgreSQL at `url` (password from `password_file`, else a pgpass
/// file), or SQLite in `state_dir`. With a key and a non-zero `offline_max_age`, the fleet's
/// database gets its offline cache in `state_dir` ([`FleetStore`]); the daemon then starts even
/// while the database is unreachable. Returns lines for the daemon's log.
pub fn open_store(
    url: Option<&str>,
    password_file: Option<&Path>,
    state_dir: &Path,
    key: Option<SealingKey>,
    offline_max_age: Duration,
) -> StoreResult<(Box<dyn Store>, Vec<String>)> {
    let Some(url) = url else {
        // The sealing branch hands `key` to SQLite too.
        drop(key);
        return Ok((Box::new(SqliteStore::open(state_dir)?), Vec::new()));
    };
    let options = PgOptions::for_daemon(url, password_file, key.clone())?;
    let max_age = i64::try_from(offline_max_age.as_secs()).unwrap_or(i64::MAX);
    let Some(key) = key.filter(|_| max_age > 0) else {
        let why = if max_age > 0 {
            "no store.secret_key_file is loaded (the cache holds secrets only sealed)"
        } else {
            "store.offline_max_age is 0"
        };
        return Ok((
            Box::new(PostgresStore::open(options)?),
            vec![format!(
                "no offline cache: {why}; while the fleet database is unreachable, every login \
                 that needs it is refused"
            )],
        ));
    };
    let (remote, down) = PostgresStore::open_deferred(options)?;
    let cache = OfflineCache::open(state_dir, key)?;
    let mut notes = Vec::new();
    if let Some(e) = down {
        notes.push(format!(
            "{e}; starting with the offline cache: the users this host served in the last {} \
             are served until the database is back",
            humantime::format_duration(offline_max_age)
        ));
    }
    Ok((
        Box::new(FleetStore::new(Box::new(remote), cache, max_age)),
        notes,
    ))
}

/// `twofactord --check` of `[store]`: the URL parses and its TLS settings load; with `connect`,
/// the database is reached, its schema created or checked and the role's grants verified.
/// Returns warnings (a connection that is not authenticated).
pub fn check(
    url: &str,
    password_file: Option<&Path>,
    key: Option<SealingKey>,
    connect: bool,
) -> StoreResult<Vec<String>> {
    let parsed = parse_url(url)?;
    let mut warnings = Vec::new();
    if parsed.is_tcp() && parsed.tls != super::postgres::TlsMode::VerifyFull {
        warnings.push(
            "store.url: sslmode is not verify-full: the database's identity is not checked, \
             so a machine in the middle could answer for it (use sslmode=verify-full, or a \
             Unix socket)"
                .to_string(),
        );
    }
    let options = PgOptions::for_daemon(url, password_file, key)?;
    if connect {
        drop(PostgresStore::open(options)?);
    }
    Ok(warnings)
}
