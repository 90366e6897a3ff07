//! The daemon's state: secrets, replay and rate-limit state, admin flags and the audit log.
//!
//! The bottom of the daemon. [`Store`] is the seam and this module holds it with its plain data
//! types ([`types`] has the ones the policy and TOTP code share): none of it imports the policy,
//! the notifier, the log or the engine, which all build on it. One file per backend beside it:
//! [`sqlite`] (the embedded default), [`postgres`] (a fleet of hosts on one database); [`open`]
//! picks one. [`migrate`] copies a SQLite state into a fleet. [`conformance`] holds the suite every backend must pass.
//! Errors never carry a secret.
#![forbid(unsafe_code)]

use std::fmt;

#[doc(hidden)]
pub mod conformance;
pub mod fleet;
pub mod migrate;
pub mod open;
pub mod postgres;
pub mod seal;
pub mod sqlite;
pub mod types;

pub use seal::SealingKey;
pub use sqlite::{
    BackupInfo, STATE_FILE, SqliteStore, check_restorable, checkpoint, lock_file_in,
    lock_state_dir, prepare_state_dir, rekey_state,
};
pub use types::{Algorithm, RateLimit, TotpParams, TotpSecret, audit_shares};

use crate::recovery::StoredCode;

/// A failure of the state backend. The daemon fails closed on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "state store: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

/// How an error of an unreachable backend begins (see [`StoreError::unreachable`]).
pub const UNREACHABLE: &str = "the fleet database is unreachable";

impl StoreError {
    /// The backend could not be reached (no connection, a dropped one, the breaker open): the
    /// fleet store answers from its offline cache instead, and refuses changes with this.
    pub fn unreachable(detail: impl fmt::Display) -> StoreError {
        StoreError(format!("{UNREACHABLE}: {detail}"))
    }

    /// Whether this error says the backend could not be reached.
    pub fn is_unreachable(&self) -> bool {
        self.0.starts_with(UNREACHABLE)
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
    /// Recovery codes of the current set that were used (kept, hashed, until the set is
    /// replaced), so that a replay of one is told from a guess.
    fn used_recovery(&self, uid: u32) -> StoreResult<Vec<StoredCode>>;
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
    /// Whether any user holds the credential `credential_id` for `rp_id`.
    fn credential_enrolled(&self, rp_id: &str, credential_id: &[u8]) -> StoreResult<bool>;
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
    /// Every uid with second-factor state: an admin's requirement, a TOTP factor, a key, or
    /// unused recovery codes (the offline snapshot asks them all).
    fn offline_uids(&self) -> StoreResult<Vec<u32>>;

    /// Whether [`Store::served`] does anything (the engine skips the call otherwise).
    fn keeps_offline_copies(&self) -> bool {
        false
    }

    /// Whether reads wait only on this host's own disk (not on a database server across the
    /// network): only then may the bus executor read the store itself, to answer a
    /// `BeginLogin` at once (`Engine::try_begin_login`). No, unless a backend says so.
    fn reads_are_local(&self) -> bool {
        false
    }

    /// A login of `uid` (`name`) ended in success (or 2FA did not apply) at `now`: the fleet
    /// store keeps a copy of the user for logins while its database is unreachable. Nothing
    /// for other backends.
    fn served(&mut self, uid: u32, name: &str, now: i64) -> StoreResult<()> {
        let _ = (uid, name, now);
        Ok(())
    }

    /// Periodic upkeep at `now` (the fleet store pushes what it accepted offline, refreshes
    /// and expires its offline copies); returns lines for the daemon's log. Nothing for other
    /// backends.
    fn maintain(&mut self, now: i64) -> StoreResult<Vec<String>> {
        let _ = now;
        Ok(Vec::new())
    }

    /// A consistent copy of the whole state (a backup), taken while the daemon runs: a private
    /// file, already unlinked, opened for reading from its start.
    fn snapshot(&self) -> StoreResult<std::fs::File> {
        Err(StoreError(
            "this state backend makes no snapshots; use its own backup tools".into(),
        ))
    }
}
