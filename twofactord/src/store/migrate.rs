//! `twofactord migrate`: a stopped host's SQLite state copied into the fleet's PostgreSQL, all
//! or nothing. [`export`] reads the state directory (read-only, under its lock); the import is
//! [`super::postgres::PostgresStore::import`], one PostgreSQL transaction. Pending enrollments
//! are not copied (they live minutes; the user begins again).
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use super::seal::SealingKey;
use super::*;

/// One user of the state, everything the fleet keeps of them.
pub struct ExportedUser {
    /// The account name (SQLite's `users.name`): the user's identity in the fleet.
    pub name: String,
    /// Requirement, failures, lockout, last step, grace (`uid` is the recorded uid).
    pub state: UserState,
    /// The authenticator app, its secret opened.
    pub totp: Option<TotpFactor>,
    /// Every recovery code, used ones with their time of use.
    pub recovery: Vec<(StoredCode, Option<i64>)>,
    /// Security keys.
    pub keys: Vec<KeyFactor>,
}

impl fmt::Debug for ExportedUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportedUser")
            .field("name", &self.name)
            .field("uid", &self.state.uid)
            .field("totp", &self.totp.is_some())
            .field("recovery", &self.recovery.len())
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// A whole state, read for migration.
#[derive(Debug, Default)]
pub struct Export {
    /// Users, by uid.
    pub users: Vec<ExportedUser>,
    /// The audit log, oldest first.
    pub audit: Vec<AuditRecord>,
}

/// What a migration copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Users.
    pub users: usize,
    /// Authenticator apps (TOTP factors).
    pub factors: usize,
    /// Recovery codes (used ones included: they stay used).
    pub codes: usize,
    /// Security keys.
    pub keys: usize,
    /// Audit records.
    pub audit: usize,
    /// Users that were already in the fleet and were replaced (`--force`).
    pub replaced: usize,
}

/// Reads the whole state in `dir` (the caller holds its lock), secrets opened with `key` if
/// the state is sealed. Names come from the state (`name_of` only for a uid without a user
/// row); a uid without a name, or a name held by two uids, is refused.
pub fn export(
    dir: &Path,
    key: Option<SealingKey>,
    name_of: &dyn Fn(u32) -> Option<String>,
) -> StoreResult<Export> {
    let store = SqliteStore::open_read_only(dir, key)?;
    let mut out = Export::default();
    let mut seen: HashMap<String, u32> = HashMap::new();
    for uid in store.known_uids()? {
        let state = store.user_state(uid)?;
        let name = match &state {
            Some(s) if !s.name.is_empty() => s.name.clone(),
            _ => name_of(uid).ok_or_else(|| {
                StoreError(format!(
                    "uid {uid} has state but no account name (neither in the state nor on this \
                     host): the fleet knows users by name"
                ))
            })?,
        };
        if let Some(other) = seen.insert(name.clone(), uid) {
            return Err(StoreError(format!(
                "the account name {name} belongs to uid {other} and uid {uid} in the state: \
                 the fleet knows users by name (reset one of them first)"
            )));
        }
        let mut state = state.unwrap_or_default();
        state.uid = uid;
        state.name = name.clone();
        out.users.push(ExportedUser {
            name,
            totp: store.totp(uid)?,
            recovery: store.all_recovery(uid)?,
            keys: store.keys(uid)?,
            state,
        });
    }
    out.audit = store.audit(None, i64::MIN, u32::MAX)?;
    Ok(out)
}
