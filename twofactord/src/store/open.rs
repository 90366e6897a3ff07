//! Which backend the daemon opens: SQLite in the state directory by default, the fleet's
//! PostgreSQL when `[store] url` is set. Takes plain values (the store imports no policy).
#![forbid(unsafe_code)]

use std::path::Path;

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
/// file), or SQLite in `state_dir`.
pub fn open_store(
    url: Option<&str>,
    password_file: Option<&Path>,
    state_dir: &Path,
    key: Option<SealingKey>,
) -> StoreResult<Box<dyn Store>> {
    match url {
        Some(url) => Ok(Box::new(PostgresStore::open(PgOptions::for_daemon(
            url,
            password_file,
            key,
        )?)?)),
        // The sealing branch hands `key` to SQLite too.
        None => {
            drop(key);
            Ok(Box::new(SqliteStore::open(state_dir)?))
        }
    }
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
