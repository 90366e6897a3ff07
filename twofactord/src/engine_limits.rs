//! Caps on what callers may hold open in the daemon's memory: login sessions, key enrollments,
//! key proofs and proof tokens, and how long a login waits at each stage.
//!
//! The rules (documented in twofactor-policy(5), LIMITS): every table has a per-user cap far
//! below its size, so one uid cannot fill it; non-root callers together may hold only a share of
//! the login table, so root's callers (sshd, login, sudo) always find room; and a target user
//! has a cap of its own, because sshd asks as root for every remote attempt. A refusal is
//! audited, at most once a minute per cap and user, so a flood does not flood the audit log.

use super::*;

/// How long a login waits for an answer at a code prompt: the time a person needs to find and
/// type a code (sshd's own LoginGraceTime is 120 s by default).
pub(super) const CODE_TTL_SECS: i64 = 120;
/// How long a login waits at the key step: a touch, or the key's timeout and then a code
/// typed instead.
pub(super) const KEY_TTL_SECS: i64 = 300;
/// How long enrollment inside a login waits: installing an app, scanning the QR code, typing
/// the first code; then storing the recovery codes shown.
pub(super) const ENROLL_AT_LOGIN_TTL_SECS: i64 = 600;
/// The longest a login may live, however many answers keep it going (a starter code, then
/// enrolling, then storing the recovery codes fits).
pub(super) const LOGIN_MAX_SECS: i64 = 1800;

/// Open logins in all.
pub(super) const MAX_SESSIONS: usize = 8192;
/// Open logins that non-root callers (screen lockers, a user testing their own login) hold
/// together: the rest of the table is kept for root's callers.
pub(super) const MAX_SESSIONS_NON_ROOT: usize = MAX_SESSIONS / 4;
/// Open logins of one non-root caller uid (always its own account).
pub(super) const MAX_SESSIONS_PER_UID: usize = 4;
/// Open logins of one target user, whoever asks.
pub(super) const MAX_SESSIONS_PER_TARGET: usize = 8;
/// Open logins of one bus connection (the module uses one connection per login).
pub(super) const MAX_SESSIONS_PER_SENDER: usize = 8;
/// Open key proofs of one user.
pub(super) const MAX_PROOFS_PER_UID: usize = 4;
/// Unused proof tokens of one user (the oldest goes first).
pub(super) const MAX_TOKENS_PER_UID: usize = 4;
/// Key enrollments and proofs in all, and proof tokens in all.
pub(super) const MAX_PENDING: usize = 1024;

/// At most one audit record per cap and user in this many seconds.
const CAP_AUDIT_INTERVAL_SECS: i64 = 60;
/// Caps and users remembered for that rate limit; past it (a thousand uids refused within a
/// minute) further refusals are only counted in the daemon's log.
const MAX_CAP_AUDIT_KEYS: usize = 1024;

/// A cap that refused something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Cap {
    /// All open logins.
    Sessions,
    /// The share of open logins non-root callers hold together.
    SessionsNonRoot,
    /// Open logins of one non-root caller.
    SessionsPerCaller,
    /// Open logins of one target user.
    SessionsPerTarget,
    /// Open logins of one bus connection.
    SessionsPerConnection,
    /// Open key proofs of one user.
    ProofsPerUser,
    /// Key enrollments and proofs in all.
    Pending,
    /// Proof tokens in all.
    Tokens,
}

impl Cap {
    /// What the cap is, for the audit log.
    fn describe(self) -> String {
        match self {
            Cap::Sessions => format!("open logins: at most {MAX_SESSIONS} in all"),
            Cap::SessionsNonRoot => format!(
                "open logins: at most {MAX_SESSIONS_NON_ROOT} for non-root callers together"
            ),
            Cap::SessionsPerCaller => {
                format!("open logins: at most {MAX_SESSIONS_PER_UID} per non-root caller")
            }
            Cap::SessionsPerTarget => {
                format!("open logins: at most {MAX_SESSIONS_PER_TARGET} per user")
            }
            Cap::SessionsPerConnection => {
                format!("open logins: at most {MAX_SESSIONS_PER_SENDER} per bus connection")
            }
            Cap::ProofsPerUser => format!("key proofs: at most {MAX_PROOFS_PER_UID} per user"),
            Cap::Pending => format!("key enrollments and proofs: at most {MAX_PENDING} in all"),
            Cap::Tokens => format!("key proof tokens: at most {MAX_PENDING} in all"),
        }
    }

    /// What the caller is told.
    fn refusal(self) -> BusError {
        BusError::NotAllowed(match self {
            Cap::Sessions | Cap::SessionsNonRoot => {
                "too many logins in progress; try again in a minute".into()
            }
            Cap::SessionsPerCaller | Cap::SessionsPerTarget | Cap::SessionsPerConnection => {
                "too many logins of this user in progress; finish or cancel one, or try again \
                 in a few minutes"
                    .into()
            }
            Cap::ProofsPerUser => "too many key proofs of this user in progress; finish one, \
                                   or try again in two minutes"
                .into(),
            Cap::Pending => "too many enrollments in progress; try again in a few minutes".into(),
            Cap::Tokens => "too many key proofs in progress; try again in a minute".into(),
        })
    }
}

/// What to do with a cap refusal ([`CapAudits::due`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// Record it, with how many went unrecorded before it.
    Record(u64),
    /// Recorded recently: only counted.
    Counted,
    /// No room to remember it: to syslog only, never silently dropped.
    NoRoom,
}

/// When each (cap, uid) was last audited, and how many refusals followed unrecorded.
#[derive(Default)]
pub(super) struct CapAudits(HashMap<(Cap, u32), (i64, u64)>);

impl CapAudits {
    /// Whether to record this refusal: [`Due::Record`] with the number of refusals that went
    /// unrecorded since the last record, [`Due::Counted`] when one was recorded recently, or
    /// [`Due::NoRoom`] when too many (cap, uid) pairs are being remembered already.
    fn due(&mut self, key: (Cap, u32), now: i64) -> Due {
        if let Some((last, unrecorded)) = self.0.get_mut(&key) {
            if now.saturating_sub(*last) < CAP_AUDIT_INTERVAL_SECS {
                *unrecorded = unrecorded.saturating_add(1);
                return Due::Counted;
            }
            let n = *unrecorded;
            *last = now;
            *unrecorded = 0;
            return Due::Record(n);
        }
        if self.0.len() >= MAX_CAP_AUDIT_KEYS {
            self.0
                .retain(|_, (last, _)| now.saturating_sub(*last) < CAP_AUDIT_INTERVAL_SECS);
            if self.0.len() >= MAX_CAP_AUDIT_KEYS {
                return Due::NoRoom;
            }
        }
        self.0.insert(key, (now, 0));
        Due::Record(0)
    }
}

impl Stage {
    /// How long a login may wait for its next answer at this stage.
    pub(super) fn ttl(&self) -> i64 {
        match self {
            Stage::Code | Stage::StarterCode | Stage::Acknowledge(Outcome::NotRequired) => {
                CODE_TTL_SECS
            }
            Stage::Key { .. } => KEY_TTL_SECS,
            // After an enrollment: the recovery codes are on screen to be stored.
            Stage::Enroll { .. } | Stage::Acknowledge(_) => ENROLL_AT_LOGIN_TTL_SECS,
        }
    }
}

impl LoginSession {
    /// Moves the login to `stage`, which waits its own time from `now` (never past the login's
    /// deadline).
    pub(super) fn enter(&mut self, stage: Stage, now: i64) {
        self.stage = stage;
        self.touch(now);
    }

    /// Restarts the wait for the current stage's answer (an answer came).
    pub(super) fn touch(&mut self, now: i64) {
        self.expires = now.saturating_add(self.stage.ttl()).min(self.deadline);
    }
}

/// Which cap, if any, keeps `caller` from opening one more login of the user `target`.
/// `sessions` holds only live logins.
pub(super) fn session_cap(
    sessions: &HashMap<String, LoginSession>,
    caller: &Caller,
    target: u32,
) -> Option<Cap> {
    if sessions.len() >= MAX_SESSIONS {
        return Some(Cap::Sessions);
    }
    let (mut of_caller, mut of_sender, mut of_target, mut non_root) = (0, 0, 0, 0);
    for s in sessions.values() {
        if s.caller_uid != 0 {
            non_root += 1;
            if s.caller_uid == caller.uid {
                of_caller += 1;
            }
        }
        if s.sender == caller.sender {
            of_sender += 1;
        }
        if s.account.uid == target {
            of_target += 1;
        }
    }
    let non_root_caller = caller.uid != 0;
    if non_root_caller && of_caller >= MAX_SESSIONS_PER_UID {
        Some(Cap::SessionsPerCaller)
    } else if of_sender >= MAX_SESSIONS_PER_SENDER {
        Some(Cap::SessionsPerConnection)
    } else if of_target >= MAX_SESSIONS_PER_TARGET {
        Some(Cap::SessionsPerTarget)
    } else if non_root_caller && non_root >= MAX_SESSIONS_NON_ROOT {
        Some(Cap::SessionsNonRoot)
    } else {
        None
    }
}

impl Engine {
    /// The refusal for `cap`, audited against `account` unless this cap refused for the same
    /// user within the last minute. Call it holding neither the session nor the key lock.
    pub(super) fn over_cap(
        &self,
        cap: Cap,
        account: &Account,
        caller: &Caller,
        ctx: Option<&LoginContext>,
    ) -> BusError {
        let now = self.clock.now();
        // The user a flood is charged to: the caller for its own caps, else the target.
        let key_uid = match cap {
            Cap::SessionsPerCaller | Cap::SessionsPerConnection | Cap::SessionsNonRoot => {
                caller.uid
            }
            _ => account.uid,
        };
        let due = match self.cap_audits.lock() {
            Ok(mut a) => a.due((cap, key_uid), now),
            Err(poisoned) => poisoned.into_inner().due((cap, key_uid), now),
        };
        match due {
            Due::Record(unrecorded) => {
                let mut detail = format!("{} (caller uid {}", cap.describe(), caller.uid);
                if caller.uid != account.uid {
                    detail.push_str(&format!(", for {}", account.name));
                }
                detail.push(')');
                if unrecorded > 0 {
                    detail.push_str(&format!(
                        "; {unrecorded} more refused since the last record"
                    ));
                }
                let r = self.record(account, caller, "limit-reached", "refused", ctx, detail);
                match self.store() {
                    Ok(mut store) => self.audit(store.as_mut(), r),
                    Err(_) => crate::log::audit(&r),
                }
            }
            Due::Counted => crate::log::debug(&format!(
                "refused uid {} ({}): {}",
                caller.uid,
                caller.sender,
                cap.describe()
            )),
            Due::NoRoom => {
                let detail = format!("{} (caller uid {})", cap.describe(), caller.uid);
                crate::log::audit(&self.record(
                    account,
                    caller,
                    "limit-reached",
                    "refused",
                    ctx,
                    detail,
                ));
            }
        }
        cap.refusal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_refusals_are_recorded_once_a_minute_and_never_dropped_silently() {
        let mut a = CapAudits::default();
        let t = 1_800_000_000;
        assert_eq!(a.due((Cap::SessionsPerTarget, 1000), t), Due::Record(0));
        assert_eq!(a.due((Cap::SessionsPerTarget, 1000), t + 1), Due::Counted);
        assert_eq!(a.due((Cap::SessionsPerTarget, 1000), t + 2), Due::Counted);
        assert_eq!(
            a.due((Cap::SessionsPerTarget, 1000), t + CAP_AUDIT_INTERVAL_SECS),
            Due::Record(2)
        );
        // Every other (cap, uid) has a record of its own, until the table is full: then
        // refusals go to syslog (NoRoom), never nowhere.
        let mut uid = 2000;
        while a.0.len() < MAX_CAP_AUDIT_KEYS {
            assert_eq!(a.due((Cap::ProofsPerUser, uid), t + 61), Due::Record(0));
            uid += 1;
        }
        assert_eq!(a.due((Cap::ProofsPerUser, uid), t + 62), Due::NoRoom);
        // A minute later the old entries make room again.
        let later = t + 61 + CAP_AUDIT_INTERVAL_SECS;
        assert_eq!(a.due((Cap::ProofsPerUser, uid), later), Due::Record(0));
        // A clock stepped far back neither panics nor records twice.
        assert_eq!(a.due((Cap::ProofsPerUser, uid), i64::MIN), Due::Counted);
    }
}
