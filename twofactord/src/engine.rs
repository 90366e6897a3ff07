//! Every decision the daemon makes, in plain Rust: the D-Bus layer only identifies the caller
//! and forwards here. Time comes from a [`Clock`], accounts from [`Accounts`], state from a
//! [`Store`], so all of it is testable without a bus.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use twofactor_bus::{
    AuditEntry, BusError, CodeResult, FactorInfo, LoginStep, Outcome, TotpEnrollment, UserStatus,
};
use zeroize::Zeroizing;

use crate::authz::{self, Access};
use crate::identity::{self, Account, Accounts};
use crate::policy::{Context, EffectiveMode, Mode, Policy, Reason};
use crate::recovery;
use crate::store::{Activation, AuditRecord, Codes, Existing, PendingTotp, Store, StoreError};
use crate::totp::{self, TotpCheck, TotpParams, TotpSecret};

/// The source of time. The real clock is read in one place: [`SystemClock`].
pub trait Clock: Send + Sync {
    /// Unix time in seconds.
    fn now(&self) -> i64;
}

/// The system's real-time clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(secs)
            .unwrap_or(0)
    }
}

/// Who is calling, as the bus daemon reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The caller's uid.
    pub uid: u32,
    /// The caller's unique bus name (sessions are bound to it).
    pub sender: String,
}

/// What a login is about: from the PAM items.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginContext {
    /// PAM service.
    pub service: String,
    /// PAM_RHOST.
    pub rhost: String,
    /// PAM_TTY.
    pub tty: String,
    /// The module's identity of the login session (`context::SESSION`), kept only when the
    /// caller is root: anyone else could forge it. Empty: a remembered login is not honoured.
    pub session: String,
}

/// How long a TOTP enrollment waits for its first code.
const ENROLL_TTL_SECS: i64 = 600;
/// Longest answer accepted at the prompt.
const MAX_ANSWER_LEN: usize = 64;
/// Longest context value.
const MAX_CONTEXT_LEN: usize = 1024;

struct LoginSession {
    sender: String,
    /// The caller's uid (non-root callers share a part of the table).
    caller_uid: u32,
    account: Account,
    ctx: LoginContext,
    attempts_left: u32,
    /// When the current stage stops waiting for its answer.
    expires: i64,
    /// When the login ends, whatever its stage.
    deadline: i64,
    stage: Stage,
    /// A factor (a starter code) was already verified in this login.
    authenticated: bool,
}

/// Where a login conversation is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    /// Asking for a TOTP or recovery code.
    Code,
    /// Waiting for a security key's assertion over this client data (or a skip).
    Key { client_data: Vec<u8>, rp_id: String },
    /// Asking a required user who has no authenticator yet for a starter (recovery) code an
    /// admin issued.
    StarterCode,
    /// Enrolling inside the login: waiting for the first code of a new secret.
    Enroll { pending_id: String },
    /// Done, but waiting for the user to confirm they saw something they must keep (the
    /// recovery codes, a grace period's deadline): applications such as sshd only show
    /// messages that come with a prompt. Any answer ends the login with this outcome.
    Acknowledge(Outcome),
}

/// The outcome of checking a code against a user's factors.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
enum CodeVerdict {
    Totp,
    /// A key-proof token from `ProveWithKey` (only for proofs, never at a login prompt).
    KeyProof,
    Recovery {
        left: usize,
    },
    Locked {
        until: i64,
    },
    /// A guess that was wrong: counted toward the lockout.
    Rejected {
        message: String,
        locked_until: Option<i64>,
    },
    /// Refused, but not a guess at a secret (nothing typed, not the shape of any code, a replay
    /// of a code that was valid, a stale key-proof token): not counted toward the lockout.
    NotAGuess {
        message: String,
    },
}

/// The daemon's brain.
pub struct Engine {
    store: Mutex<Box<dyn Store>>,
    policy: RwLock<Arc<Policy>>,
    policy_path: Option<PathBuf>,
    accounts: Box<dyn Accounts>,
    clock: Box<dyn Clock>,
    sessions: Mutex<HashMap<String, LoginSession>>,
    /// Local logins remembered after a success: (uid, tty, service, session) -> until.
    remembered: Mutex<HashMap<RememberKey, i64>>,
    /// Security-key enrollments, proofs and tokens in progress.
    key_challenges: Mutex<keys::KeyChallenges>,
    /// When each cap last refused each user, for the audit log's rate limit.
    cap_audits: Mutex<limits::CapAudits>,
    /// Refusals a caller can repeat at will, folded per minute in the audit log.
    folds: Mutex<fold::Folds>,
    /// The offline snapshot and the last good policy copy.
    persisted: offline::Persisted,
    /// The store keeps copies of the users it served (the fleet's offline cache).
    keeps_copies: bool,
    /// The store's reads wait on nothing but this host's disk (SQLite): the bus executor may
    /// begin a login itself.
    local_reads: bool,
}

fn store_err(e: StoreError) -> BusError {
    crate::log::error(&format!("{e}"));
    if e.is_unreachable() {
        // The fleet's database is down: the caller is told what waits and what goes on, not
        // the database's address or the error (the log has them).
        return BusError::StateUnavailable(
            "the fleet database is unreachable: nothing was changed; enrollment and admin \
             changes must wait until it is back (logins of users this host served recently go \
             on)"
            .into(),
        );
    }
    BusError::StateUnavailable("the daemon cannot access its state; nothing was changed".into())
}

fn random_handle() -> Result<String, BusError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)
        .map_err(|e| BusError::StateUnavailable(format!("no randomness available: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// What a user is told while locked out.
/// Whether a call may wait (NSS, the store's lock, a commit): on a worker thread yes, on the
/// bus executor no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waits {
    Allowed,
    NotAllowed,
}

/// Why a call that may not wait gave no answer.
#[derive(Debug)]
enum Deferred {
    /// The answer (an error).
    Bus(BusError),
    /// It would have had to wait: nothing was done.
    WouldWait,
}

impl From<BusError> for Deferred {
    fn from(e: BusError) -> Self {
        Deferred::Bus(e)
    }
}

fn locked_message(until: i64, now: i64) -> String {
    format!(
        "Too many failed attempts. Try again in {}.",
        minutes(until.saturating_sub(now))
    )
}

/// What a caller is told when the target is not theirs (or does not exist: a non-admin learns
/// nothing about which names exist), or the method needs the admin right.
const NOT_YOURS: &str =
    "you may only do this for your own account; other accounts need root or an admin group";

/// What a user is told for a code whose time step was already used.
const ALREADY_USED: &str = "That code was already used. Wait for the next code.";

/// What a remembered login is bound to: (uid, tty, service, session identity).
type RememberKey = (u32, String, String, String);

/// Refuses unknown keys and oversized or NUL-bearing values in a login context from the bus.
fn check_context(context: &HashMap<String, String>, allowed: &[&str]) -> Result<(), BusError> {
    for (k, v) in context {
        if !allowed.contains(&k.as_str()) {
            return Err(BusError::InvalidArgument(format!(
                "unknown context key {k:?}"
            )));
        }
        if v.len() > MAX_CONTEXT_LEN || v.contains('\0') {
            return Err(BusError::InvalidArgument(format!(
                "context value {k:?} is invalid"
            )));
        }
    }
    Ok(())
}

/// `now` for the TOTP arithmetic. A clock before 1970 (or a step back past it) has no TOTP
/// step: an error, which fails the login closed and counts nothing (a wrap to a huge time, or
/// a step of 1970, would turn every right code into a counted "wrong" one).
fn totp_time(now: i64) -> Result<u64, BusError> {
    u64::try_from(now).map_err(|_| {
        crate::log::error(&format!("the system clock reads {now}, before 1970"));
        BusError::StateUnavailable(
            "the system clock is wrong (before 1970); codes cannot be checked".into(),
        )
    })
}

/// A duration in whole seconds as a Unix-time offset, saturating (never wrapping negative).
fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// The session identity a login may be remembered under: only a root caller's (PAM stacks of
/// sudo, login, su run as root; an unprivileged caller could send any identity it likes).
fn remember_session(caller: &Caller, context: &HashMap<String, String>) -> String {
    if caller.uid != 0 {
        return String::new();
    }
    context.get("session").cloned().unwrap_or_default()
}

/// At or below this many unused recovery codes, logins and `status` say so.
const LOW_RECOVERY_CODES: usize = 3;

/// What a remote login of a user whose only factor is a security key says before it asks for a
/// recovery code: that a key cannot be used, how many codes are left, and what to do.
fn remote_key_only_notice(left: usize) -> String {
    let base = "A security key cannot be used for a remote login. Type one of your recovery codes";
    match left {
        0 => format!(
            "{base}; you have none left, so this login cannot succeed. Log in locally with your \
             key and run `twofactorctl enroll totp` (or `twofactorctl recovery regenerate`)."
        ),
        n if n <= LOW_RECOVERY_CODES => format!(
            "{base} (only {n} left, each works once). Log in locally with your key and run \
             `twofactorctl enroll totp` before they run out."
        ),
        n => format!(
            "{base} ({n} left, each works once). An authenticator app works for remote logins: \
             `twofactorctl enroll totp`."
        ),
    }
}

/// What a login is remembered under, or `None` when it may not be: remote, no terminal, or no
/// session identity.
fn remember_key(uid: u32, ctx: &LoginContext) -> Option<RememberKey> {
    if !ctx.rhost.is_empty() || ctx.tty.is_empty() || ctx.session.is_empty() {
        return None;
    }
    Some((
        uid,
        ctx.tty.clone(),
        ctx.service.clone(),
        ctx.session.clone(),
    ))
}

/// What status, doctor and the log say while the daemon serves its last good policy copy
/// `running` because the policy file was refused with `error`.
pub fn last_good_problem(running: &str, error: &dyn std::fmt::Display) -> String {
    format!(
        "serving the last good policy ({running}): the policy file was refused: {error}. Fix \
         the file, check it with `twofactord --check`, then reload (systemctl reload twofactord)"
    )
}

fn minutes(secs: i64) -> String {
    let m = secs.max(0).saturating_add(59) / 60;
    if m == 1 {
        "1 minute".into()
    } else {
        format!("{m} minutes")
    }
}

impl Engine {
    /// A new engine. `policy_path` is what `reload` re-reads (`None`: built-in policy only).
    pub fn new(
        store: Box<dyn Store>,
        policy: Policy,
        policy_path: Option<PathBuf>,
        accounts: Box<dyn Accounts>,
        clock: Box<dyn Clock>,
    ) -> Engine {
        Engine {
            keeps_copies: store.keeps_offline_copies(),
            local_reads: store.reads_are_local(),
            store: Mutex::new(store),
            policy: RwLock::new(Arc::new(policy)),
            policy_path,
            accounts,
            clock,
            sessions: Mutex::new(HashMap::new()),
            remembered: Mutex::new(HashMap::new()),
            key_challenges: Mutex::new(keys::KeyChallenges::default()),
            cap_audits: Mutex::new(limits::CapAudits::default()),
            folds: Mutex::new(fold::Folds::default()),
            persisted: offline::Persisted::default(),
        }
    }

    fn store(&self) -> Result<MutexGuard<'_, Box<dyn Store>>, BusError> {
        self.store
            .lock()
            .map_err(|_| BusError::StateUnavailable("state lock poisoned".into()))
    }

    fn sessions(&self) -> Result<MutexGuard<'_, HashMap<String, LoginSession>>, BusError> {
        self.sessions
            .lock()
            .map_err(|_| BusError::StateUnavailable("session lock poisoned".into()))
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(p) => Arc::clone(&p),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Re-reads the policy file. An invalid file is refused and the old policy stays; an
    /// accepted one is kept as the last good copy.
    pub fn reload(&self) -> Result<String, BusError> {
        let Some(path) = &self.policy_path else {
            return Ok("no policy file configured; the built-in policy stays in force".into());
        };
        // Account and group changes count at once after a reload, not only when the cache's
        // entries run out.
        self.accounts.invalidate();
        match Policy::load_with_text(path) {
            Ok((p, text)) => {
                let warnings = p.warnings.clone();
                for w in &warnings {
                    crate::log::warn(w);
                }
                match self.policy.write() {
                    Ok(mut slot) => *slot = Arc::new(p),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(p),
                }
                self.save_last_good(&text);
                self.set_policy_problem(None);
                self.offline_changed();
                crate::log::info(&format!("policy reloaded from {}", path.display()));
                let mut msg = format!("policy reloaded from {}", path.display());
                for w in warnings {
                    msg.push_str("\nwarning: ");
                    msg.push_str(&w);
                }
                Ok(msg)
            }
            Err(e) => {
                let running = self.policy().path.display().to_string();
                crate::log::error(&format!(
                    "policy reload refused, the running policy ({running}) stays: {e}"
                ));
                if self.policy_problem().is_some() {
                    self.set_policy_problem(Some(last_good_problem(&running, &e)));
                }
                Err(BusError::InvalidPolicy(format!(
                    "{e}\nthe running policy stays in force"
                )))
            }
        }
    }

    /// Resolves a target user: empty means the caller.
    fn target(&self, caller: &Caller, user: &str) -> Result<Account, BusError> {
        if user.is_empty() {
            return self
                .accounts
                .user_by_uid(caller.uid)
                .ok_or_else(|| BusError::NoSuchUser(format!("uid {} has no account", caller.uid)));
        }
        identity::validate_name(user).map_err(BusError::InvalidArgument)?;
        match self.accounts.user_by_name(user) {
            Some(a) => Ok(a),
            // Only admins may learn that a name does not exist: anyone else gets the answer an
            // existing other user would give.
            None if self.caller_is_admin(caller) => {
                Err(BusError::NoSuchUser(format!("no such user: {user}")))
            }
            None => Err(BusError::AccessDenied(NOT_YOURS.into())),
        }
    }

    fn caller_is_admin(&self, caller: &Caller) -> bool {
        if caller.uid == 0 {
            return true;
        }
        let policy = self.policy();
        self.accounts
            .user_by_uid(caller.uid)
            .is_some_and(|a| policy.is_admin(&a))
    }

    /// Applies the authorization table for `interface`.`method` on `target` (`None`: a method
    /// without a target account).
    pub fn authorize(
        &self,
        interface: &str,
        method: &str,
        caller: &Caller,
        target: Option<&Account>,
    ) -> Result<(), BusError> {
        let Some(access) = authz::access_for(interface, method) else {
            return Err(BusError::AccessDenied(format!(
                "{interface}.{method} is not allowed"
            )));
        };
        let admin = matches!(
            access,
            Access::SelfOrAdmin | Access::Admin | Access::AdminOverUsers
        ) && self.caller_is_admin(caller);
        let target = target.map(|t| authz::Target {
            uid: t.uid,
            privileged: access == Access::AdminOverUsers && self.policy().is_admin(t),
        });
        if authz::permits(access, caller.uid, admin, target) {
            Ok(())
        } else {
            Err(BusError::AccessDenied(match access {
                Access::RootOnly => "this needs root (uid 0), whatever admin_groups says".into(),
                Access::AdminOverUsers if admin => {
                    "changing root's or an admin's second factor, requirement, grace, codes or \
                     lockout needs root (uid 0)"
                        .into()
                }
                _ => NOT_YOURS.into(),
            }))
        }
    }

    fn audit(&self, store: &mut dyn Store, record: AuditRecord) {
        if let Err(e) = store.append_audit(&record) {
            crate::log::error(&format!("audit record not stored: {e}"));
        }
        self.announce(&record);
    }

    /// After an event is stored: the log (syslog authpriv) and the notify command.
    fn announce(&self, record: &AuditRecord) {
        crate::log::audit(record);
        if Self::changes_offline(&record.event) {
            self.offline_changed();
        }
        self.audit_appended();
        if let Some(cmd) = &self.policy().notify {
            crate::notify::send(cmd, record);
        }
    }

    fn record(
        &self,
        account: &Account,
        caller: &Caller,
        event: &str,
        result: &str,
        ctx: Option<&LoginContext>,
        detail: impl Into<String>,
    ) -> AuditRecord {
        let actor = if caller.uid == account.uid {
            account.name.clone()
        } else if caller.uid == 0 {
            // sshd, login, sudo: every login's caller. No NSS lookup for it.
            "root".into()
        } else {
            self.accounts
                .name_of_uid(caller.uid)
                .unwrap_or_else(|| format!("uid {}", caller.uid))
        };
        AuditRecord {
            time: self.clock.now(),
            uid: account.uid,
            user: account.name.clone(),
            event: event.into(),
            result: result.into(),
            service: ctx.map(|c| c.service.clone()).unwrap_or_default(),
            rhost: ctx.map(|c| c.rhost.clone()).unwrap_or_default(),
            actor,
            detail: detail.into(),
        }
    }

    fn effective(
        &self,
        store: &dyn Store,
        account: &Account,
        login: Context<'_>,
    ) -> Result<EffectiveMode, BusError> {
        let admin_required = store
            .user_state(account.uid)
            .map_err(store_err)?
            .is_some_and(|s| s.admin_required);
        Ok(self.policy().resolve_login(account, admin_required, login))
    }

    fn status_of(
        &self,
        store: &dyn Store,
        account: &Account,
        login: Context<'_>,
    ) -> Result<UserStatus, BusError> {
        let state = store.user_state(account.uid).map_err(store_err)?;
        let policy = self.policy();
        let eff = policy.resolve_login(
            account,
            state.as_ref().is_some_and(|s| s.admin_required),
            login,
        );
        let totp = store.totp(account.uid).map_err(store_err)?;
        let left = store.unused_recovery(account.uid).map_err(store_err)?.len();
        let now = self.clock.now();
        let mut factors = Vec::new();
        if let Some(t) = &totp {
            factors.push(FactorInfo {
                kind: "totp".into(),
                name: format!(
                    "authenticator app ({}, {} digits, {}s)",
                    t.params.algorithm.as_str(),
                    t.params.digits,
                    t.params.period
                ),
                created: t.created,
                last_used: t.last_used,
            });
        }
        let keys = store.keys(account.uid).map_err(store_err)?;
        for k in &keys {
            let mut name = k.name.clone();
            if k.rp_id != policy.fido2.rp_id {
                name.push_str(&format!(
                    " (for {}, not this host's {})",
                    k.rp_id, policy.fido2.rp_id
                ));
            }
            if k.source == "imported" {
                name.push_str(" [imported]");
            }
            factors.push(FactorInfo {
                kind: "key".into(),
                name,
                created: k.created,
                last_used: k.last_used,
            });
        }
        let all = keys::Factors {
            totp: totp.is_some(),
            keys,
        };
        let enrolled = all.enrolled(&policy);
        let admin_required = state.as_ref().is_some_and(|s| s.admin_required);
        let mut warnings = Vec::new();
        if all.remote_logins_use_recovery_codes(&policy, account, admin_required, login) {
            warnings.push(keys::keys_only_warning(left));
        }
        if enrolled && left <= LOW_RECOVERY_CODES {
            warnings.push(if left == 0 {
                "No recovery codes left: if the factors are lost, only an admin can help. Run \
                 `twofactorctl recovery regenerate` for a new set."
                    .to_string()
            } else {
                format!(
                    "Only {left} recovery codes left. Run `twofactorctl recovery regenerate` for \
                     a new set."
                )
            });
        }
        let grace = secs(policy.onboarding(account).grace_period);
        let grace_until = match (
            eff.mode,
            enrolled,
            state.as_ref().and_then(|s| s.required_since),
        ) {
            (Mode::Required, false, Some(since)) if grace > 0 => since.saturating_add(grace),
            _ => 0,
        };
        Ok(UserStatus {
            user: account.name.clone(),
            uid: account.uid,
            mode: eff.mode.as_str().into(),
            rule: eff.explain(&policy.path),
            enrolled,
            enforced: match eff.mode {
                Mode::Disabled => false,
                Mode::Optional => enrolled,
                Mode::Required => true,
            },
            admin_required: state.as_ref().is_some_and(|s| s.admin_required),
            factors,
            recovery_codes_left: u32::try_from(left).unwrap_or(u32::MAX),
            locked_until: state
                .as_ref()
                .map(|s| s.locked_until)
                .filter(|&t| t > now)
                .unwrap_or(0),
            failures: state.as_ref().map_or(0, |s| s.failures),
            grace_until,
            warnings,
        })
    }

    /// Checks a code (TOTP or recovery) for `account`, with lockout, replay protection and
    /// failure counting. The only path by which a code is ever accepted.
    fn verify_code(
        &self,
        store: &mut dyn Store,
        account: &Account,
        caller: &Caller,
        answer: &str,
        ctx: Option<&LoginContext>,
        purpose: &str,
    ) -> Result<CodeVerdict, BusError> {
        let now = self.clock.now();
        let policy = self.policy();
        let state = store.user_state(account.uid).map_err(store_err)?;
        if let Some(until) = state.as_ref().map(|s| s.locked_until).filter(|&t| t > now) {
            return Ok(CodeVerdict::Locked { until });
        }
        let answer: Zeroizing<String> = Zeroizing::new(
            answer
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>(),
        );
        // Only guesses count toward the lockout: a wrong TOTP code, a wrong recovery code (and,
        // elsewhere, a failed key assertion). Nothing typed, an answer of no code's shape, a
        // replay of a code that was valid or a stale key-proof token cannot open the account,
        // so they are refused without counting: nobody can lock a user out with them.
        let not_a_guess = |message: &str| {
            Ok(CodeVerdict::NotAGuess {
                message: message.to_string(),
            })
        };
        if answer.is_empty() {
            return not_a_guess("No code was entered.");
        }
        if answer.len() > MAX_ANSWER_LEN {
            return not_a_guess("That is not a valid code: it is too long.");
        }
        if answer.starts_with(keys::TOKEN_PREFIX) {
            if purpose == "proof" && self.consume_token(account.uid, &answer)? {
                return Ok(CodeVerdict::KeyProof);
            }
            return not_a_guess("That key proof is not valid (any more); touch the key again.");
        }
        let factor = store.totp(account.uid).map_err(store_err)?;
        let last_step = state.as_ref().and_then(|s| s.last_totp_step);
        let totp_shaped = factor
            .as_ref()
            .is_some_and(|f| totp::looks_like_code(&answer, f.params));
        if let Some(f) = factor.as_ref().filter(|_| totp_shaped) {
            let replayed = match totp::verify(
                &f.secret,
                f.params,
                policy.totp.window,
                &answer,
                totp_time(now)?,
                last_step,
            ) {
                TotpCheck::Valid(step) => {
                    let r = self.record(account, caller, purpose, "success", ctx, "totp");
                    if store
                        .accept_totp_step(account.uid, step, now, &r)
                        .map_err(store_err)?
                    {
                        self.announce(&r);
                        return Ok(CodeVerdict::Totp);
                    }
                    // Another login accepted this step first (a race with one code).
                    true
                }
                TotpCheck::Replayed => true,
                TotpCheck::Wrong => false,
            };
            if replayed {
                let r = self.record(
                    account,
                    caller,
                    "replay",
                    "refused",
                    ctx,
                    format!("a code of an already used time step (for {purpose}); not counted"),
                );
                self.audit_folded(store, caller.uid, "replay", r);
                return not_a_guess(ALREADY_USED);
            }
        }
        // Not a TOTP code (or a wrong one of the same shape: imported scratch codes can have
        // the TOTP length): a recovery code?
        let normalized = recovery::normalize(&answer);
        if let Some(normalized) = &normalized {
            let unused = store.unused_recovery(account.uid).map_err(store_err)?;
            if let Some(id) = recovery::find(normalized, &unused) {
                let left = unused.len().saturating_sub(1);
                let r = self.record(
                    account,
                    caller,
                    "recovery-code-used",
                    "success",
                    ctx,
                    format!("{left} recovery codes left (for {purpose})"),
                );
                if store
                    .consume_recovery(account.uid, id, now, &r)
                    .map_err(store_err)?
                {
                    self.announce(&r);
                    return Ok(CodeVerdict::Recovery { left });
                }
                // A concurrent login used this very code first: a replay, not a guess.
                return self.recovery_replayed(store, account, caller, ctx, purpose);
            }
            // A code of the current set that was already used (its hash is kept, marked used):
            // a replay too. Fail closed: a store that cannot say is an error, not a pass.
            let used = store.used_recovery(account.uid).map_err(store_err)?;
            if recovery::find(normalized, &used).is_some() {
                return self.recovery_replayed(store, account, caller, ctx, purpose);
            }
        }
        if !totp_shaped && normalized.is_none() {
            return not_a_guess("That is not a valid code.");
        }
        let message = "Wrong code.".to_string();
        let detail = message.trim_end_matches('.').to_string();
        let locked_until = self.count_failure(store, account, caller, ctx, purpose, detail)?;
        Ok(CodeVerdict::Rejected {
            message,
            locked_until,
        })
    }

    /// A recovery code that was valid but is already used: refused, audited as a replay
    /// (folded, as every refusal a caller can repeat), not counted toward the lockout.
    fn recovery_replayed(
        &self,
        store: &mut dyn Store,
        account: &Account,
        caller: &Caller,
        ctx: Option<&LoginContext>,
        purpose: &str,
    ) -> Result<CodeVerdict, BusError> {
        let r = self.record(
            account,
            caller,
            "replay",
            "refused",
            ctx,
            format!("a recovery code that was already used (for {purpose}); not counted"),
        );
        self.audit_folded(store, caller.uid, "replay-recovery", r);
        Ok(CodeVerdict::NotAGuess {
            message: "That recovery code was already used.".into(),
        })
    }

    /// Counts a failed attempt (audited as `purpose` / failure with `detail`) and, past the
    /// limit, starts a lockout; returns its end if this failure started one.
    fn count_failure(
        &self,
        store: &mut dyn Store,
        account: &Account,
        caller: &Caller,
        ctx: Option<&LoginContext>,
        purpose: &str,
        detail: String,
    ) -> Result<Option<i64>, BusError> {
        let now = self.clock.now();
        let policy = self.policy();
        let r = self.record(account, caller, purpose, "failure", ctx, detail);
        let failure = store
            .record_failure(account.uid, &account.name, now, &policy.rate_limit, &r)
            .map_err(store_err)?;
        self.announce(&r);
        if let Some(until) = failure.locked_until {
            let r = self.record(
                account,
                caller,
                "lockout",
                "locked",
                ctx,
                format!(
                    "{} failures; locked for {}",
                    policy.rate_limit.max_failures,
                    minutes(until.saturating_sub(now))
                ),
            );
            self.audit(store, r);
        }
        Ok(failure.locked_until)
    }

    /// `Login.BeginLogin` (see [`Engine::begin_login`]).
    fn begin_login_inner(
        &self,
        caller: &Caller,
        user: &str,
        context: &HashMap<String, String>,
    ) -> Result<(String, LoginStep), BusError> {
        self.begin_login_as(Waits::Allowed, caller, user, context)
            .map_err(|e| match e {
                Deferred::Bus(e) => e,
                // Unreachable when waiting is allowed; a denial if it ever came.
                Deferred::WouldWait => {
                    BusError::StateUnavailable("the login could not be started".into())
                }
            })
    }

    /// `Login.BeginLogin` if it can be answered at once, without waiting for anything (a local
    /// store, free; the account known without asking NSS; nothing to write); `None`: nothing
    /// was done, ask [`Engine::begin_login`] (on a worker thread). The bus executor answers the
    /// common case itself this way: no hand-off to a worker and back.
    pub fn try_begin_login(
        &self,
        caller: &Caller,
        user: &str,
        context: &HashMap<String, String>,
    ) -> Option<Result<(String, LoginStep), BusError>> {
        // A fleet store reads over the network, and a login it lets in is followed by a
        // write (its offline copy, `Engine::begin_login`): both for a worker.
        if !self.local_reads || self.keeps_copies {
            return None;
        }
        match self.begin_login_as(Waits::NotAllowed, caller, user, context) {
            Ok(r) => Some(Ok(r)),
            Err(Deferred::Bus(e)) => Some(Err(e)),
            Err(Deferred::WouldWait) => None,
        }
    }

    /// The login state machine's first step. With [`Waits::NotAllowed`] it stops with
    /// [`Deferred::WouldWait`] before anything that could wait (NSS, a busy store, a commit),
    /// having changed nothing.
    fn begin_login_as(
        &self,
        waits: Waits,
        caller: &Caller,
        user: &str,
        context: &HashMap<String, String>,
    ) -> Result<(String, LoginStep), Deferred> {
        let now_only = waits == Waits::NotAllowed;
        // Stops an answer that cannot wait before a step that might.
        let wait = |needed: bool| {
            if needed && now_only {
                Err(Deferred::WouldWait)
            } else {
                Ok(())
            }
        };
        check_context(context, &["service", "rhost", "tty", "ruser", "session"])?;
        let ctx = LoginContext {
            service: context.get("service").cloned().unwrap_or_default(),
            rhost: context.get("rhost").cloned().unwrap_or_default(),
            tty: context.get("tty").cloned().unwrap_or_default(),
            session: remember_session(caller, context),
        };
        if user.is_empty() {
            return Err(BusError::InvalidArgument("a login needs a user name".into()).into());
        }
        identity::validate_name(user).map_err(BusError::InvalidArgument)?;
        // The groups are the costly part of a lookup: only when the policy's answer for this
        // login depends on them (the Login methods' authorization never reads the target's).
        let policy = self.policy();
        let account = if now_only {
            // Only an account known without asking NSS; groups always ask it.
            wait(policy.login_reads_groups())?;
            let known = self.accounts.user_by_name_without_groups_now(user);
            wait(known.is_none())?;
            known
        } else if policy.login_reads_groups() {
            self.accounts.user_by_name(user)
        } else {
            self.accounts.user_by_name_without_groups(user)
        };
        let Some(account) = account else {
            // Only root may learn that a name does not exist.
            if caller.uid != 0 {
                return Err(BusError::AccessDenied(NOT_YOURS.into()).into());
            }
            return Ok((String::new(), LoginStep::done(Outcome::Denied)));
        };
        self.authorize("Login", "BeginLogin", caller, Some(&account))?;
        // A caller over a cap is refused before anything is done for it (such as replacing the
        // user's pending enrollment at login); checked again when the login is stored.
        if let Some(cap) = self.session_cap(caller, account.uid)? {
            wait(true)?;
            return Err(self.over_cap(cap, &account, caller, Some(&ctx)).into());
        }

        let mut store = if now_only {
            match self.store.try_lock() {
                Ok(s) => s,
                Err(std::sync::TryLockError::WouldBlock) => return Err(Deferred::WouldWait),
                Err(std::sync::TryLockError::Poisoned(_)) => self.store()?,
            }
        } else {
            self.store()?
        };
        let login = Context {
            service: &ctx.service,
            rhost: &ctx.rhost,
        };
        // One read of the user's state serves the admin requirement and the lockout below.
        let state = store.user_state(account.uid).map_err(store_err)?;
        let eff = policy.resolve_login(
            &account,
            state.as_ref().is_some_and(|s| s.admin_required),
            login,
        );
        let factors = self.factors_of(store.as_ref(), account.uid)?;
        let enrolled = factors.enrolled(&policy);
        if matches!(eff.reason, Reason::Exempt(_)) {
            wait(true)?;
            let r = self.record(
                &account,
                caller,
                "exemption-applied",
                "not-required",
                Some(&ctx),
                eff.explain(&policy.path),
            );
            self.audit_notice(store.as_mut(), caller.uid, "exempt", r);
        }
        if matches!(
            (eff.mode, enrolled),
            (Mode::Disabled, _) | (Mode::Optional, false)
        ) {
            return Ok((String::new(), LoginStep::done(Outcome::NotRequired)));
        }
        let now = self.clock.now();
        if let Some(state) = state.filter(|s| s.locked_until > now) {
            wait(true)?;
            let r = self.record(
                &account,
                caller,
                "login",
                "failure",
                Some(&ctx),
                "locked out",
            );
            self.audit_folded(store.as_mut(), caller.uid, "locked-out", r);
            return Ok((
                String::new(),
                LoginStep::done(Outcome::Denied).error(locked_message(state.locked_until, now)),
            ));
        }
        let (stage, step) = if enrolled {
            if let Some((window, source)) = policy.remember_window(&ctx.service)
                && self.is_remembered(account.uid, &ctx, now)
            {
                wait(true)?;
                let r = self.record(
                    &account,
                    caller,
                    "login",
                    "success",
                    Some(&ctx),
                    format!(
                        "remembered on {} ({} = {})",
                        ctx.tty,
                        source.key,
                        humantime::format_duration(window)
                    ),
                );
                self.audit(store.as_mut(), r);
                return Ok((String::new(), LoginStep::done(Outcome::Success)));
            }
            let key_rp = &policy.fido2.rp_id;
            let has_keys = factors.keys.iter().any(|k| &k.rp_id == key_rp);
            if has_keys && policy.fido2.keys_usable(&ctx.service, &ctx.rhost) {
                self.key_step(&account, &factors.keys)?
            } else if has_keys && !factors.totp {
                let left = store.unused_recovery(account.uid).map_err(store_err)?.len();
                (
                    Stage::Code,
                    LoginStep::prompt(policy.prompt.clone(), false)
                        .info(remote_key_only_notice(left)),
                )
            } else {
                (Stage::Code, LoginStep::prompt(policy.prompt.clone(), false))
            }
        } else {
            wait(true)?;
            match self.onboard(store.as_mut(), &account, caller, &ctx, &eff, now)? {
                Onboard::Done(step) => return Ok((String::new(), step)),
                Onboard::Converse(stage, step) => (stage, step),
            }
        };
        drop(store);

        let handle = random_handle()?;
        let mut sessions = self.sessions()?;
        sessions.retain(|_, s| s.expires > now);
        if let Some(cap) = limits::session_cap(&sessions, caller, account.uid) {
            drop(sessions);
            wait(true)?;
            return Err(self.over_cap(cap, &account, caller, Some(&ctx)).into());
        }
        let mut session = LoginSession {
            sender: caller.sender.clone(),
            caller_uid: caller.uid,
            account,
            ctx,
            attempts_left: policy.attempts,
            expires: now,
            deadline: now.saturating_add(limits::LOGIN_MAX_SECS),
            stage: Stage::Code,
            authenticated: false,
        };
        session.enter(stage, now);
        sessions.insert(handle.clone(), session);
        Ok((handle, step))
    }

    /// `account` (a login's, looked up at `BeginLogin`) with its groups for a policy question
    /// asked later in the login: it was looked up without them if the policy then named no
    /// group, and a reload since may have added group rules.
    fn with_groups(&self, account: &Account) -> Account {
        if account.groups.is_empty()
            && self.policy().login_reads_groups()
            && let Some(full) = self
                .accounts
                .user_by_name(&account.name)
                .filter(|a| a.uid == account.uid)
        {
            return full;
        }
        account.clone()
    }

    /// Which cap, if any, keeps `caller` from opening a login of `target` now (expired logins
    /// are dropped first).
    fn session_cap(&self, caller: &Caller, target: u32) -> Result<Option<limits::Cap>, BusError> {
        let now = self.clock.now();
        let mut sessions = self.sessions()?;
        sessions.retain(|_, s| s.expires > now);
        Ok(limits::session_cap(&sessions, caller, target))
    }

    /// A required user who has not enrolled: starter codes an admin issued, enrollment at
    /// login, a grace period, or a refusal that says how to enroll.
    fn onboard(
        &self,
        store: &mut dyn Store,
        account: &Account,
        caller: &Caller,
        ctx: &LoginContext,
        eff: &EffectiveMode,
        now: i64,
    ) -> Result<Onboard, BusError> {
        let policy = self.policy();
        // The login's account may have been looked up without groups under a policy that
        // named none; this policy may (a reload in between).
        let onboarding = policy.onboarding(&self.with_groups(account));
        let starter = store.unused_recovery(account.uid).map_err(store_err)?.len();
        if starter > 0 {
            return Ok(Onboard::Converse(
                Stage::StarterCode,
                LoginStep::prompt(policy.prompt.clone(), false).info(
                    "Two-factor authentication is required for your account. Type one of the \
                     recovery codes your administrator gave you.",
                ),
            ));
        }
        if onboarding.enroll_at_login {
            let (pending_id, step) = self.start_login_enrollment(store, account, ctx, now)?;
            return Ok(Onboard::Converse(Stage::Enroll { pending_id }, step));
        }
        if !onboarding.grace_period.is_zero() {
            let since = store
                .start_grace(account.uid, &account.name, now)
                .map_err(store_err)?;
            let until = since.saturating_add(secs(onboarding.grace_period));
            if now < until {
                let days = until.saturating_sub(now).saturating_add(86_399) / 86_400;
                let r = self.record(
                    account,
                    caller,
                    "grace",
                    "not-required",
                    Some(ctx),
                    format!("{} ({days} days left)", eff.explain(&policy.path)),
                );
                self.audit_notice(store, caller.uid, "grace", r);
                return Ok(Onboard::Converse(
                    Stage::Acknowledge(Outcome::NotRequired),
                    LoginStep::prompt("Press Enter to continue: ", true).info(format!(
                        "Two-factor authentication is required for {} from {} ({days} days \
                         left).\nSet it up now with `twofactorctl enroll totp`.",
                        account.name,
                        format_time(until)
                    )),
                ));
            }
            let r = self.record(
                account,
                caller,
                "login",
                "failure",
                Some(ctx),
                format!("grace period ended ({})", eff.explain(&policy.path)),
            );
            self.audit_folded(store, caller.uid, "grace-ended", r);
            return Ok(Onboard::Done(LoginStep::done(Outcome::Denied).error(format!(
                "Two-factor authentication is required for {} and the grace period to set it up \
                 ended on {}.\nAsk an administrator for recovery codes \
                 (`twofactorctl admin issue-codes`) or more time (`twofactorctl admin grace`).",
                account.name,
                format_time(until)
            ))));
        }
        let r = self.record(
            account,
            caller,
            "login",
            "failure",
            Some(ctx),
            format!(
                "2FA required ({}) but not enrolled",
                eff.explain(&policy.path)
            ),
        );
        self.audit_folded(store, caller.uid, "not-enrolled", r);
        Ok(Onboard::Done(LoginStep::done(Outcome::Denied).error(
            format!(
                "Two-factor authentication is required for {} but no second factor is set up.\n\
             Enroll with `twofactorctl enroll totp` from a session that is already logged in, \
             or ask an administrator.",
                account.name
            ),
        )))
    }

    /// Makes a pending TOTP enrollment for `account`.
    fn new_pending_totp(
        &self,
        store: &mut dyn Store,
        account: &Account,
        now: i64,
        ttl: i64,
        proven: bool,
    ) -> Result<(PendingTotp, TotpEnrollment), BusError> {
        let policy = self.policy();
        let _ = store.drop_expired_pending(now).map_err(store_err)?;
        let secret = TotpSecret::generate()
            .map_err(|e| BusError::StateUnavailable(format!("no randomness available: {e}")))?;
        let params = TotpParams::from(&policy.totp);
        let pending = PendingTotp {
            id: random_handle()?,
            uid: account.uid,
            secret,
            params,
            expires: now.saturating_add(ttl),
            proven,
        };
        store.put_pending_totp(&pending).map_err(store_err)?;
        let shown = TotpEnrollment {
            enrollment_id: pending.id.clone(),
            secret_base32: pending.secret.to_base32().to_string(),
            uri: totp::otpauth_uri(&pending.secret, params, &policy.totp.issuer, &account.name)
                .to_string(),
            algorithm: params.algorithm.as_str().into(),
            digits: u32::from(params.digits),
            period: u32::try_from(params.period).unwrap_or(u32::MAX),
            expires: pending.expires,
        };
        Ok((pending, shown))
    }

    /// The first step of an enrollment inside the login conversation: the QR code, the secret
    /// and the URI as information, then a prompt for the app's current code.
    fn start_login_enrollment(
        &self,
        store: &mut dyn Store,
        account: &Account,
        ctx: &LoginContext,
        now: i64,
    ) -> Result<(String, LoginStep), BusError> {
        let (pending, shown) =
            self.new_pending_totp(store, account, now, limits::ENROLL_AT_LOGIN_TTL_SECS, false)?;
        let mut step = LoginStep::prompt("Code from your authenticator app: ", false).info(format!(
            "Two-factor authentication is required for {}. Set it up now: scan this QR code with \
             an authenticator app, or enter the secret by hand.",
            account.name
        ));
        // A remote login's text goes through the SSH client, which shows escapes as text: no
        // colours there. A local one (console, su) is drawn in forced colours.
        let qr = if ctx.rhost.is_empty() {
            twofactor_bus::qr_text(&shown.uri)
        } else {
            twofactor_bus::qr_text_plain(&shown.uri).map(|q| {
                format!(
                    "{q}\n(This QR code is drawn for a dark terminal. If it does not scan, type \
                     the secret below into the app.)"
                )
            })
        };
        if let Some(qr) = qr {
            step = step.info(qr);
        }
        step = step.info(format!(
            "Secret: {}  ({}, {} digits, every {} seconds)\nURI: {}",
            shown.secret_base32, shown.algorithm, shown.digits, shown.period, shown.uri
        ));
        Ok((pending.id, step))
    }

    /// Takes the caller's live login session out of the table (to be put back if it goes on).
    /// An answer came: the stage's wait starts again (up to the login's deadline).
    fn take_session(
        &self,
        caller: &Caller,
        handle: &str,
        now: i64,
    ) -> Result<LoginSession, BusError> {
        let mut sessions = self.sessions()?;
        match sessions.remove(handle) {
            Some(mut s) if s.sender == caller.sender && s.expires > now => {
                s.touch(now);
                Ok(s)
            }
            Some(s) if s.sender != caller.sender => {
                // Not yours: put it back untouched.
                sessions.insert(handle.to_string(), s);
                Err(BusError::NoSuchSession("no such login".into()))
            }
            _ => Err(BusError::NoSuchSession(
                "no such login, or it expired".into(),
            )),
        }
    }

    /// `Login.Continue` (see [`Engine::continue_login`]).
    fn continue_login_inner(
        &self,
        caller: &Caller,
        handle: &str,
        answer: &str,
    ) -> Result<LoginStep, BusError> {
        let now = self.clock.now();
        let mut session = self.take_session(caller, handle, now)?;
        match session.stage.clone() {
            Stage::Enroll { pending_id } => {
                return self.continue_enrollment(caller, handle, session, &pending_id, answer, now);
            }
            Stage::Acknowledge(outcome) => return Ok(LoginStep::done(outcome)),
            Stage::Key { .. } => {
                self.sessions()?.insert(handle.to_string(), session);
                return Err(BusError::InvalidArgument(
                    "this login waits for a security key: answer with Assert or SkipKey".into(),
                ));
            }
            Stage::Code | Stage::StarterCode => {}
        }
        if answer.trim().is_empty() {
            // Enter alone (or an application that sends nothing) ends the login; not a guess,
            // so it does not count toward the lockout.
            return Ok(LoginStep::done(Outcome::Denied).error("No code was entered."));
        }
        let mut store = self.store()?;
        let verdict = self.verify_code(
            store.as_mut(),
            &session.account,
            caller,
            answer,
            Some(&session.ctx),
            "login",
        )?;
        if session.stage == Stage::StarterCode
            && matches!(verdict, CodeVerdict::Totp | CodeVerdict::Recovery { .. })
        {
            let left = match verdict {
                CodeVerdict::Recovery { left } => left,
                _ => 0,
            };
            if self
                .policy()
                .onboarding(&self.with_groups(&session.account))
                .enroll_at_login
            {
                let (pending_id, step) = self.start_login_enrollment(
                    store.as_mut(),
                    &session.account,
                    &session.ctx,
                    now,
                )?;
                drop(store);
                session.enter(Stage::Enroll { pending_id }, now);
                session.authenticated = true;
                session.attempts_left = self.policy().attempts;
                self.sessions()?.insert(handle.to_string(), session);
                return Ok(step);
            }
            return Ok(LoginStep::done(Outcome::Success).info(format!(
                "Recovery code accepted ({left} left). Now set up an authenticator app: run \
                 `twofactorctl enroll totp`."
            )));
        }
        // Whether keys are this user's only factor (a recovery code then stood in for a key
        // that could not be used): asked only after a recovery code, best effort.
        let keys_only = matches!(verdict, CodeVerdict::Recovery { .. })
            && self
                .factors_of(store.as_ref(), session.account.uid)
                .is_ok_and(|f| !f.totp && !f.keys.is_empty());
        drop(store);
        if matches!(verdict, CodeVerdict::Totp | CodeVerdict::Recovery { .. }) {
            self.remember(session.account.uid, &session.ctx, now);
        }
        Ok(match verdict {
            CodeVerdict::Totp | CodeVerdict::KeyProof => LoginStep::done(Outcome::Success),
            CodeVerdict::Recovery { left } => {
                let mut step = LoginStep::done(Outcome::Success).info(format!(
                    "Recovery code accepted. {left} recovery codes left."
                ));
                if keys_only && !session.ctx.rhost.is_empty() {
                    step = step.info(
                        "Your security key cannot be used for remote logins, so each one uses \
                         up a recovery code. Add an authenticator app: `twofactorctl enroll \
                         totp`.",
                    );
                }
                if left <= LOW_RECOVERY_CODES {
                    step.info("Run `twofactorctl recovery regenerate` to get a new set.")
                } else {
                    step
                }
            }
            CodeVerdict::Locked { until } => {
                LoginStep::done(Outcome::Denied).error(locked_message(until, now))
            }
            CodeVerdict::Rejected {
                message,
                locked_until: Some(until),
            } => LoginStep::done(Outcome::Denied).error(format!(
                "{message} Too many failed attempts: locked for {}.",
                minutes(until.saturating_sub(now))
            )),
            CodeVerdict::Rejected { message, .. } | CodeVerdict::NotAGuess { message } => {
                session.attempts_left = session.attempts_left.saturating_sub(1);
                if session.attempts_left == 0 {
                    LoginStep::done(Outcome::Denied).error(message)
                } else {
                    let prompt = self.policy().prompt.clone();
                    self.sessions()?.insert(handle.to_string(), session);
                    LoginStep::prompt(prompt, false).error(message)
                }
            }
        })
    }

    /// The answer to the enrollment prompt inside a login: the first code of the new secret.
    fn continue_enrollment(
        &self,
        caller: &Caller,
        handle: &str,
        mut session: LoginSession,
        pending_id: &str,
        answer: &str,
        now: i64,
    ) -> Result<LoginStep, BusError> {
        let account = session.account.clone();
        let mut store = self.store()?;
        let Some(pending) = store
            .pending_totp(pending_id)
            .map_err(store_err)?
            .filter(|p| p.uid == account.uid && p.expires >= now)
        else {
            return Ok(LoginStep::done(Outcome::Denied).error("The enrollment expired."));
        };
        let code: Zeroizing<String> =
            Zeroizing::new(answer.chars().filter(|c| !c.is_whitespace()).collect());
        let window = self.policy().totp.window;
        let check = if totp::looks_like_code(&code, pending.params) {
            totp::verify(
                &pending.secret,
                pending.params,
                window,
                &code,
                totp_time(now)?,
                None,
            )
        } else {
            TotpCheck::Wrong
        };
        let TotpCheck::Valid(step) = check else {
            session.attempts_left = session.attempts_left.saturating_sub(1);
            if session.attempts_left > 0 {
                self.sessions()?.insert(handle.to_string(), session);
                return Ok(
                    LoginStep::prompt("Code from your authenticator app: ", false)
                        .error("Wrong code. Type the code your app shows now."),
                );
            }
            let r = self.record(
                &account,
                caller,
                "enroll",
                "failure",
                Some(&session.ctx),
                "at login: no valid code",
            );
            self.audit_folded(store.as_mut(), caller.uid, "enroll-at-login-failed", r);
            return Ok(if session.authenticated {
                LoginStep::done(Outcome::Success).error(
                    "The authenticator app was not set up. Run `twofactorctl enroll totp` \
                     before your recovery codes run out.",
                )
            } else {
                LoginStep::done(Outcome::Denied)
                    .error("Wrong code; the authenticator app was not set up.")
            });
        };
        // Atomically: only as the account's first factor. One enrolled meanwhile (the user, from
        // a session of theirs) turns this into an ordinary login that needs that factor.
        self.invalidate_offline();
        let Some(shown) = activate_pending(
            store.as_mut(),
            &account,
            &pending,
            step,
            now,
            Existing::NoFactor,
        )?
        else {
            let r = self.record(
                &account,
                caller,
                "enroll",
                "failure",
                Some(&session.ctx),
                "at login: a factor was enrolled meanwhile; the login needs it",
            );
            self.audit_folded(store.as_mut(), caller.uid, "enroll-at-login-raced", r);
            let factors = self.factors_of(store.as_ref(), account.uid)?;
            drop(store);
            if session.authenticated {
                // A starter code of the account was already accepted in this login.
                return Ok(LoginStep::done(Outcome::Success).info(
                    "A second factor was set up for this account meanwhile; the new authenticator \
                        app was not added.",
                ));
            }
            let policy = self.policy();
            let has_keys = factors.keys.iter().any(|k| k.rp_id == policy.fido2.rp_id);
            let (stage, step) = if has_keys
                && policy
                    .fido2
                    .keys_usable(&session.ctx.service, &session.ctx.rhost)
            {
                self.key_step(&account, &factors.keys)?
            } else {
                (Stage::Code, LoginStep::prompt(policy.prompt.clone(), false))
            };
            session.enter(stage, now);
            session.attempts_left = policy.attempts;
            self.sessions()?.insert(handle.to_string(), session);
            return Ok(step.error(
                "A second factor was set up for this account while this login waited; the \
                    authenticator app shown was not added. Use the factor you have.",
            ));
        };
        let r = self.record(
            &account,
            caller,
            "enroll",
            "success",
            Some(&session.ctx),
            "totp, at login",
        );
        self.audit(store.as_mut(), r);
        if shown.is_empty() {
            session.enter(Stage::Acknowledge(Outcome::Success), now);
            self.sessions()?.insert(handle.to_string(), session);
            return Ok(LoginStep::prompt("Press Enter to continue: ", true)
                .info("Your authenticator app is enrolled.")
                .info(
                    "Your unused recovery codes stay valid; run `twofactorctl recovery \
                     regenerate` for a new set.",
                ));
        }
        let mut codes = String::from(
            "Recovery codes: each works once in place of a code from your app. Store them \
             somewhere safe now; they are not shown again.",
        );
        for c in &shown {
            codes.push_str("\n    ");
            codes.push_str(c);
        }
        session.enter(Stage::Acknowledge(Outcome::Success), now);
        self.sessions()?.insert(handle.to_string(), session);
        Ok(LoginStep::prompt(
            "Press Enter once you have stored the recovery codes: ",
            true,
        )
        .info("Your authenticator app is enrolled.")
        .info(codes))
    }

    /// Remembers a successful local login, if the service asks for it, for the session that
    /// earned it (as sudo's tty tickets): never for remote logins (never keyed on an address),
    /// nor without a terminal, nor without a session identity from a root caller.
    fn remember(&self, uid: u32, ctx: &LoginContext, now: i64) {
        let Some(key) = remember_key(uid, ctx) else {
            return;
        };
        let Some((window, _)) = self.policy().remember_window(&ctx.service) else {
            return;
        };
        if let Ok(mut r) = self.remembered.lock() {
            r.retain(|_, until| *until > now);
            r.insert(key, now.saturating_add(secs(window)));
        }
    }

    fn is_remembered(&self, uid: u32, ctx: &LoginContext, now: i64) -> bool {
        let Some(key) = remember_key(uid, ctx) else {
            return false;
        };
        self.remembered
            .lock()
            .is_ok_and(|r| r.get(&key).is_some_and(|&until| until > now))
    }

    /// Forgets remembered logins of a user (their factors changed).
    fn forget_remembered(&self, uid: u32) {
        if let Ok(mut r) = self.remembered.lock() {
            r.retain(|k, _| k.0 != uid);
        }
    }

    /// `Login.Cancel`.
    pub fn cancel_login(&self, caller: &Caller, handle: &str) -> Result<(), BusError> {
        let mut sessions = self.sessions()?;
        match sessions.get(handle) {
            Some(s) if s.sender == caller.sender => {
                sessions.remove(handle);
                Ok(())
            }
            _ => Err(BusError::NoSuchSession("no such login".into())),
        }
    }

    /// Drops every login, key enrollment and key proof of a bus name that left the bus.
    pub fn sender_gone(&self, sender: &str) {
        if let Ok(mut s) = self.sessions() {
            s.retain(|_, v| v.sender != sender);
        }
        self.key_challenges_gone(sender);
    }

    /// `Enrollment.Status` and `Admin.Show`.
    pub fn status(
        &self,
        caller: &Caller,
        user: &str,
        method: (&str, &str),
    ) -> Result<UserStatus, BusError> {
        let account = self.target(caller, user)?;
        self.authorize(method.0, method.1, caller, Some(&account))?;
        let store = self.store()?;
        self.status_of(store.as_ref(), &account, Context::default())
    }

    /// `Enrollment.Explain`: the status for one login context (service, remote host).
    pub fn explain(
        &self,
        caller: &Caller,
        user: &str,
        context: &HashMap<String, String>,
    ) -> Result<UserStatus, BusError> {
        check_context(context, &["service", "rhost"])?;
        let account = self.target(caller, user)?;
        self.authorize("Enrollment", "Explain", caller, Some(&account))?;
        let store = self.store()?;
        let login = Context {
            service: context.get("service").map_or("", String::as_str),
            rhost: context.get("rhost").map_or("", String::as_str),
        };
        self.status_of(store.as_ref(), &account, login)
    }

    /// `Enrollment.BeginTotp`. An account with a security key proves it with `code`: a
    /// recovery code or a key-proof token (an account with an app is refused first: an app is
    /// never replaced). An account with no factor needs no proof, starter codes alone
    /// included: they are how an admin lets a user enroll, not a factor, and the confirmation
    /// keeps them (it never replaces unused recovery codes).
    pub fn begin_totp(&self, caller: &Caller, code: &str) -> Result<TotpEnrollment, BusError> {
        let account = self.target(caller, "")?;
        self.authorize("Enrollment", "BeginTotp", caller, Some(&account))?;
        let mut store = self.store()?;
        let eff = self.effective(store.as_ref(), &account, Context::default())?;
        let policy = self.policy();
        if eff.mode == Mode::Disabled {
            return Err(BusError::NotAllowed(format!(
                "two-factor authentication is disabled for {} by {}",
                account.name,
                eff.explain(&policy.path)
            )));
        }
        if store.totp(account.uid).map_err(store_err)?.is_some() {
            return Err(BusError::NotAllowed(
                "an authenticator app is already enrolled; run `twofactorctl disable` first to \
                 replace it"
                    .into(),
            ));
        }
        // Adding a factor to an account that has one needs a fresh proof of an existing one,
        // whatever the factor's kind.
        let f = self.factors_of(store.as_ref(), account.uid)?;
        let proven = !f.keys.is_empty();
        if proven {
            match self.verify_code(store.as_mut(), &account, caller, code, None, "proof")? {
                CodeVerdict::Totp | CodeVerdict::Recovery { .. } | CodeVerdict::KeyProof => {}
                other => {
                    return Err(BusError::NotAllowed(format!(
                        "adding an authenticator app to an account with a security key needs a \
                            recovery code or a touch of an enrolled key: {}",
                        refused(other, self.clock.now()).message
                    )));
                }
            }
        }
        let now = self.clock.now();
        let (_, shown) =
            self.new_pending_totp(store.as_mut(), &account, now, ENROLL_TTL_SECS, proven)?;
        Ok(shown)
    }

    /// `Enrollment.ConfirmTotp`.
    pub fn confirm_totp(
        &self,
        caller: &Caller,
        enrollment_id: &str,
        code: &str,
    ) -> Result<CodeResult, BusError> {
        let account = self.target(caller, "")?;
        self.authorize("Enrollment", "ConfirmTotp", caller, Some(&account))?;
        if enrollment_id.len() > 64 {
            return Err(BusError::InvalidArgument("enrollment id too long".into()));
        }
        let now = self.clock.now();
        let mut store = self.store()?;
        let pending = store
            .pending_totp(enrollment_id)
            .map_err(store_err)?
            .filter(|p| p.uid == account.uid && p.expires >= now)
            .ok_or_else(|| {
                BusError::NoSuchSession(
                    "no such enrollment, or it expired; run `twofactorctl enroll totp` again"
                        .into(),
                )
            })?;
        let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        if !totp::looks_like_code(&code, pending.params) {
            return Ok(CodeResult {
                accepted: false,
                message: format!(
                    "A code has {} digits; type the code your app shows now.",
                    pending.params.digits
                ),
                recovery_codes: Vec::new(),
            });
        }
        let window = self.policy().totp.window;
        let TotpCheck::Valid(step) = totp::verify(
            &pending.secret,
            pending.params,
            window,
            &code,
            totp_time(now)?,
            None,
        ) else {
            return Ok(CodeResult {
                accepted: false,
                message: "Wrong code. Check that the app and this machine agree on the time, \
                          then type the current code."
                    .into(),
                recovery_codes: Vec::new(),
            });
        };
        let existing = if pending.proven {
            Existing::Proven
        } else {
            Existing::NoFactor
        };
        self.invalidate_offline();
        let Some(shown) =
            activate_pending(store.as_mut(), &account, &pending, step, now, existing)?
        else {
            let r = self.record(
                &account,
                caller,
                "enroll",
                "failure",
                None,
                "totp: a factor was enrolled after this enrollment began without a proof",
            );
            self.audit_folded(store.as_mut(), caller.uid, "enroll-totp-raced", r);
            return Ok(CodeResult {
                accepted: false,
                message: "A second factor was set up for this account after this enrollment began. \
                          Start again with `twofactorctl enroll totp`: it asks for a proof of the factor \
                          you have."
                    .into(),
                recovery_codes: Vec::new(),
            });
        };
        let r = self.record(&account, caller, "enroll", "success", None, "totp");
        self.audit(store.as_mut(), r);
        Ok(CodeResult {
            accepted: true,
            message: "Your authenticator app is enrolled.".into(),
            recovery_codes: shown.iter().map(|c| c.to_string()).collect(),
        })
    }

    /// `Enrollment.RegenerateRecoveryCodes`.
    pub fn regenerate_recovery(&self, caller: &Caller, code: &str) -> Result<CodeResult, BusError> {
        let account = self.target(caller, "")?;
        self.authorize(
            "Enrollment",
            "RegenerateRecoveryCodes",
            caller,
            Some(&account),
        )?;
        let mut store = self.store()?;
        let f = self.factors_of(store.as_ref(), account.uid)?;
        if !f.totp && f.keys.is_empty() {
            return Err(BusError::NotAllowed(
                "no second factor is enrolled; run `twofactorctl enroll totp` first".into(),
            ));
        }
        match self.verify_code(store.as_mut(), &account, caller, code, None, "proof")? {
            CodeVerdict::Totp | CodeVerdict::Recovery { .. } | CodeVerdict::KeyProof => {}
            other => return Ok(refused(other, self.clock.now())),
        }
        let (shown, stored) = new_recovery_set()?;
        store
            .replace_recovery(account.uid, &stored)
            .map_err(store_err)?;
        let r = self.record(
            &account,
            caller,
            "recovery-regenerated",
            "success",
            None,
            "old codes revoked",
        );
        self.audit(store.as_mut(), r);
        Ok(CodeResult {
            accepted: true,
            message: "New recovery codes; the old ones no longer work.".into(),
            recovery_codes: shown.iter().map(|c| c.to_string()).collect(),
        })
    }

    /// `Enrollment.Disable`.
    pub fn disable(&self, caller: &Caller, code: &str) -> Result<CodeResult, BusError> {
        let account = self.target(caller, "")?;
        self.authorize("Enrollment", "Disable", caller, Some(&account))?;
        let mut store = self.store()?;
        let eff = self.effective(store.as_ref(), &account, Context::default())?;
        if eff.mode == Mode::Required {
            return Err(BusError::NotAllowed(format!(
                "two-factor authentication is required for {} by {}; it cannot be disabled",
                account.name,
                eff.explain(&self.policy().path)
            )));
        }
        let f = self.factors_of(store.as_ref(), account.uid)?;
        if !f.totp && f.keys.is_empty() {
            return Err(BusError::NotAllowed("no second factor is enrolled".into()));
        }
        match self.verify_code(store.as_mut(), &account, caller, code, None, "proof")? {
            CodeVerdict::Totp | CodeVerdict::Recovery { .. } | CodeVerdict::KeyProof => {}
            other => return Ok(refused(other, self.clock.now())),
        }
        store.reset(account.uid).map_err(store_err)?;
        self.forget_remembered(account.uid);
        let r = self.record(
            &account,
            caller,
            "disable",
            "success",
            None,
            "all factors removed by the user",
        );
        self.audit(store.as_mut(), r);
        Ok(CodeResult {
            accepted: true,
            message: "Two-factor authentication is disabled; your factors and recovery codes \
                      were removed."
                .into(),
            recovery_codes: Vec::new(),
        })
    }

    /// `Admin.Require` / `Admin.Release`.
    pub fn set_required(
        &self,
        caller: &Caller,
        user: &str,
        required: bool,
    ) -> Result<(), BusError> {
        let account = self.target(caller, user)?;
        let method = if required { "Require" } else { "Release" };
        self.authorize("Admin", method, caller, Some(&account))?;
        let mut store = self.store()?;
        self.invalidate_offline();
        store
            .set_admin_required(account.uid, &account.name, required)
            .map_err(store_err)?;
        let event = if required {
            "admin-require"
        } else {
            "admin-release"
        };
        let r = self.record(&account, caller, event, "success", None, "");
        self.audit(store.as_mut(), r);
        Ok(())
    }

    /// `Admin.Reset`.
    pub fn reset(&self, caller: &Caller, user: &str) -> Result<(), BusError> {
        let account = self.target(caller, user)?;
        self.authorize("Admin", "Reset", caller, Some(&account))?;
        let mut store = self.store()?;
        store.reset(account.uid).map_err(store_err)?;
        self.forget_remembered(account.uid);
        let r = self.record(
            &account,
            caller,
            "admin-reset",
            "success",
            None,
            "all factors removed",
        );
        self.audit(store.as_mut(), r);
        Ok(())
    }

    /// `Admin.IssueCodes`: starter recovery codes for a user who has not enrolled, to hand
    /// over; they log in with one and are then sent to enrollment.
    pub fn issue_codes(&self, caller: &Caller, user: &str) -> Result<CodeResult, BusError> {
        let account = self.target(caller, user)?;
        self.authorize("Admin", "IssueCodes", caller, Some(&account))?;
        let mut store = self.store()?;
        let f = self.factors_of(store.as_ref(), account.uid)?;
        if f.totp || !f.keys.is_empty() {
            return Err(BusError::NotAllowed(format!(
                "{} already has a second factor; they can run `twofactorctl recovery \
                 regenerate`, or reset them first",
                account.name
            )));
        }
        let (shown, stored) = new_recovery_set()?;
        self.invalidate_offline();
        store
            .replace_recovery(account.uid, &stored)
            .map_err(store_err)?;
        let r = self.record(
            &account,
            caller,
            "admin-issue-codes",
            "success",
            None,
            format!("{} starter codes", shown.len()),
        );
        self.audit(store.as_mut(), r);
        Ok(CodeResult {
            accepted: true,
            message: format!(
                "Starter recovery codes for {}: hand them over; each works once at the code \
                 prompt, after which they set up an authenticator app.",
                account.name
            ),
            recovery_codes: shown.iter().map(|c| c.to_string()).collect(),
        })
    }

    /// `Admin.ImportTotp`: an authenticator secret and recovery codes made elsewhere (e.g. a
    /// `~/.google_authenticator` file, parsed by the CLI), for a user who has no factor. All
    /// or nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn import_totp(
        &self,
        caller: &Caller,
        user: &str,
        secret_base32: &str,
        algorithm: &str,
        digits: u32,
        period: u32,
        codes: &[String],
    ) -> Result<String, BusError> {
        let account = self.target(caller, user)?;
        self.authorize("Admin", "ImportTotp", caller, Some(&account))?;
        let bad = |m: &str| Err(BusError::InvalidArgument(m.to_string()));
        let cleaned: Zeroizing<String> = Zeroizing::new(
            secret_base32
                .chars()
                .filter(|c| !c.is_whitespace() && *c != '=')
                .map(|c| c.to_ascii_uppercase())
                .collect(),
        );
        let Some(bytes) = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, &cleaned)
        else {
            return bad("the secret is not base32");
        };
        if !(10..=64).contains(&bytes.len()) {
            return bad("the secret must be 10 to 64 bytes (16 to 103 base32 characters)");
        }
        let Some(algorithm) = crate::policy::Algorithm::parse(algorithm) else {
            return bad("algorithm must be SHA1, SHA256 or SHA512");
        };
        if digits != 6 && digits != 8 {
            return bad("digits must be 6 or 8");
        }
        if !(15..=300).contains(&period) {
            return bad("period must be 15 to 300 seconds");
        }
        if codes.len() > 100 {
            return bad("at most 100 recovery codes");
        }
        let stored = recovery::store_imported(codes).map_err(BusError::InvalidArgument)?;
        let now = self.clock.now();
        let mut store = self.store()?;
        if store.totp(account.uid).map_err(store_err)?.is_some() {
            return Err(BusError::NotAllowed(format!(
                "{} already has an authenticator app; `twofactorctl admin reset {}` first to \
                 replace it",
                account.name, account.name
            )));
        }
        let pending = PendingTotp {
            id: random_handle()?,
            uid: account.uid,
            secret: TotpSecret::from_bytes(bytes),
            params: TotpParams {
                algorithm,
                digits: digits as u8,
                period: u64::from(period),
            },
            expires: now.saturating_add(60),
            proven: true,
        };
        store.put_pending_totp(&pending).map_err(store_err)?;
        let codes = if stored.is_empty() {
            Codes::Keep
        } else {
            Codes::Replace(&stored)
        };
        self.invalidate_offline();
        let activation = store
            .activate_totp(
                account.uid,
                &account.name,
                &pending.id,
                0,
                now,
                codes,
                Existing::Proven,
            )
            .map_err(store_err)?;
        if activation
            != (Activation::Done {
                codes_set: !stored.is_empty(),
            })
        {
            return Err(BusError::NotAllowed(format!(
                "{} already has an authenticator app; `twofactorctl admin reset {}` first to \
                    replace it",
                account.name, account.name
            )));
        }
        let detail = format!(
            "imported authenticator ({}, {digits} digits, {period}s) and {} recovery codes",
            algorithm.as_str(),
            stored.len()
        );
        let r = self.record(
            &account,
            caller,
            "admin-import",
            "success",
            None,
            detail.clone(),
        );
        self.audit(store.as_mut(), r);
        Ok(format!("{}: {detail}", account.name))
    }

    /// `Admin.Grace`: restarts the user's grace period now (`extend_secs` 0), or moves its start
    /// later by `extend_secs`.
    pub fn grace(&self, caller: &Caller, user: &str, extend_secs: i64) -> Result<(), BusError> {
        let account = self.target(caller, user)?;
        self.authorize("Admin", "Grace", caller, Some(&account))?;
        if !(0..=366 * 86_400).contains(&extend_secs) {
            return Err(BusError::InvalidArgument(
                "an extension is between 0 and 366 days".into(),
            ));
        }
        let now = self.clock.now();
        let mut store = self.store()?;
        let since = if extend_secs == 0 {
            now
        } else {
            let current = store
                .user_state(account.uid)
                .map_err(store_err)?
                .and_then(|s| s.required_since)
                .unwrap_or(now);
            current.saturating_add(extend_secs)
        };
        store
            .set_grace_start(account.uid, &account.name, Some(since))
            .map_err(store_err)?;
        let detail = if extend_secs == 0 {
            "grace period restarted".to_string()
        } else {
            format!(
                "grace period extended by {}",
                humantime::format_duration(std::time::Duration::from_secs(
                    extend_secs.unsigned_abs()
                ))
            )
        };
        let r = self.record(&account, caller, "admin-grace", "success", None, detail);
        self.audit(store.as_mut(), r);
        Ok(())
    }

    /// `Admin.Unlock`.
    pub fn unlock(&self, caller: &Caller, user: &str) -> Result<(), BusError> {
        let account = self.target(caller, user)?;
        self.authorize("Admin", "Unlock", caller, Some(&account))?;
        let mut store = self.store()?;
        store.unlock(account.uid).map_err(store_err)?;
        let r = self.record(&account, caller, "admin-unlock", "success", None, "");
        self.audit(store.as_mut(), r);
        Ok(())
    }

    /// `Admin.Audit`.
    pub fn audit_log(
        &self,
        caller: &Caller,
        user: &str,
        since: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, BusError> {
        self.authorize("Admin", "Audit", caller, None)?;
        let uid = if user.is_empty() {
            None
        } else {
            Some(self.target(caller, user)?.uid)
        };
        let store = self.store()?;
        let limit = limit.clamp(1, 10_000);
        Ok(store
            .audit(uid, since, limit)
            .map_err(store_err)?
            .into_iter()
            .map(entry)
            .collect())
    }

    /// `Enrollment.RecentEvents`: the caller's own latest audit entries.
    pub fn recent_events(&self, caller: &Caller, limit: u32) -> Result<Vec<AuditEntry>, BusError> {
        let account = self.target(caller, "")?;
        self.authorize("Enrollment", "RecentEvents", caller, Some(&account))?;
        let store = self.store()?;
        Ok(store
            .audit(Some(account.uid), 0, limit.clamp(1, 100))
            .map_err(store_err)?
            .into_iter()
            .map(entry)
            .collect())
    }

    /// `Admin.ReloadPolicy`.
    pub fn reload_policy(&self, caller: &Caller) -> Result<String, BusError> {
        self.authorize("Admin", "ReloadPolicy", caller, None)?;
        self.reload()
    }

    /// The policy file this engine reloads from.
    pub fn policy_path(&self) -> Option<&Path> {
        self.policy_path.as_deref()
    }
}

/// What onboarding does with a required user who has not enrolled.
enum Onboard {
    /// Answer at once.
    Done(LoginStep),
    /// Start a conversation at this stage with this step.
    Converse(Stage, LoginStep),
}

fn format_time(t: i64) -> String {
    humantime::format_rfc3339_seconds(
        // Clamped to what RFC 3339 can write (up to the year 9999).
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.clamp(0, 253_402_300_799) as u64),
    )
    .to_string()
}

/// A fresh set of recovery codes: the codes to show once, and their stored form.
fn new_recovery_set() -> Result<(Vec<Zeroizing<String>>, Vec<recovery::StoredCode>), BusError> {
    recovery::generate_set()
        .map_err(|e| BusError::StateUnavailable(format!("no randomness available: {e}")))
}

/// Activates a confirmed pending enrollment under `existing`. A user who has no unused
/// recovery code gets a first set, returned to be shown once (empty: their codes stay).
/// `None`: refused, the account has a factor `existing` does not allow; nothing changed.
fn activate_pending(
    store: &mut dyn Store,
    account: &Account,
    pending: &PendingTotp,
    step: u64,
    now: i64,
    existing: Existing,
) -> Result<Option<Vec<Zeroizing<String>>>, BusError> {
    let (shown, stored) = new_recovery_set()?;
    match store
        .activate_totp(
            account.uid,
            &account.name,
            &pending.id,
            step,
            now,
            Codes::IfNone(&stored),
            existing,
        )
        .map_err(store_err)?
    {
        // (`Taken` is for keys; an app activation never answers it.)
        Activation::FactorExists | Activation::Taken => Ok(None),
        Activation::Done { codes_set: true } => Ok(Some(shown)),
        Activation::Done { codes_set: false } => Ok(Some(Vec::new())),
    }
}

fn entry(r: AuditRecord) -> AuditEntry {
    AuditEntry {
        time: r.time,
        user: r.user,
        event: r.event,
        result: r.result,
        service: r.service,
        rhost: r.rhost,
        actor: r.actor,
        detail: r.detail,
    }
}

fn refused(verdict: CodeVerdict, now: i64) -> CodeResult {
    let message = match verdict {
        CodeVerdict::Locked { until } => locked_message(until, now),
        CodeVerdict::Rejected {
            message,
            locked_until: Some(until),
        } => format!(
            "{message} Too many failed attempts: locked for {}.",
            minutes(until.saturating_sub(now))
        ),
        CodeVerdict::Rejected { message, .. } | CodeVerdict::NotAGuess { message } => message,
        CodeVerdict::Totp | CodeVerdict::Recovery { .. } | CodeVerdict::KeyProof => String::new(),
    };
    CodeResult {
        accepted: false,
        message,
        recovery_codes: Vec::new(),
    }
}

#[path = "engine_keys.rs"]
mod keys;

#[path = "engine_fleet.rs"]
mod fleet;
#[path = "engine_offline.rs"]
mod offline;
pub use offline::write_private;
#[path = "engine_backup.rs"]
pub mod backup;
#[path = "engine_fold.rs"]
mod fold;
#[path = "engine_limits.rs"]
mod limits;
#[path = "engine_retention.rs"]
pub mod retention;
#[path = "engine_rollout.rs"]
pub mod rollout;

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
