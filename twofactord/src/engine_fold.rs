//! Refusals a caller can repeat at will are audited at most once a minute per user, caller and
//! kind; the ones folded in are counted and written as one record when the minute ends
//! ("…; and N more in the last minute"). Without this, one locked-out user calling
//! `BeginLogin` on themself in a loop would make the store write a record per call, and their
//! history in the trail would be nothing but that flood (retention by count takes from the
//! users with the most records first: `store::audit_shares`). twofactor-policy(5), LIMITS.
//!
//! What is folded: refusals and notices that change nothing and cost the caller nothing (a
//! login while locked out, not enrolled or past the grace period, a replay of a code or key
//! answer that was valid, a failed enrollment; the exemption or grace notice of a login a user
//! begins for themself, while root's callers keep one per login). The key holds the caller's
//! uid, so a user's flood never folds away what sshd reports about them. Real guesses (a wrong
//! code, a failed key assertion) are never folded: each is recorded and counted, and the
//! lockout bounds them. Successes are not folded either. A folded refusal that root's callers
//! report still goes to syslog, each with its remote host, for the tools that watch it.
#![forbid(unsafe_code)]

use std::collections::HashMap;

use super::Engine;
use crate::store::{AuditRecord, Store};

/// One record per user, caller and kind in this many seconds.
pub(super) const FOLD_SECS: i64 = 60;
/// Users, callers and kinds remembered at once. Past it (thousands of users refused within a
/// minute) a further refusal goes to the daemon's log only, not the audit trail.
const MAX_FOLD_KEYS: usize = 4096;

/// What a run of refusals is folded under: the user it is about, the caller's uid, and the
/// kind of refusal (a fixed name per call site, never text a caller chose).
type FoldKey = (u32, u32, &'static str);

/// A minute of refusals of one key.
struct Fold {
    /// When its first record was written.
    since: i64,
    /// Refusals not recorded since.
    folded: u64,
    /// The last one folded, written with the count when the minute ends.
    last: Option<AuditRecord>,
}

/// What becomes of one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum This {
    /// Written: the first of its minute.
    Written,
    /// Folded into its minute's count.
    Folded,
    /// No room to remember it: the daemon's log only.
    NoRoom,
}

/// The minutes of refusals in progress.
#[derive(Default)]
pub(super) struct Folds(HashMap<FoldKey, Fold>);

/// The record that stands for `folded` refusals like `last` (the last of them).
fn summary(mut last: AuditRecord, folded: u64) -> AuditRecord {
    last.detail = format!("{}; and {folded} more in the last minute", last.detail);
    last
}

impl Folds {
    /// Takes the refusal `record` of `key` at `now`: what becomes of it, and the summaries of
    /// minutes that ended, to write before it.
    pub(super) fn admit(
        &mut self,
        key: FoldKey,
        record: &AuditRecord,
        now: i64,
    ) -> (This, Vec<AuditRecord>) {
        if let Some(fold) = self.0.get_mut(&key) {
            if (fold.since..fold.since.saturating_add(FOLD_SECS)).contains(&now) {
                fold.folded = fold.folded.saturating_add(1);
                fold.last = Some(record.clone());
                return (This::Folded, Vec::new());
            }
            // Its minute ended (or the clock went back): the summary first, then a new minute.
            let done = fold.last.take().map(|last| summary(last, fold.folded));
            fold.since = now;
            fold.folded = 0;
            return (This::Written, done.into_iter().collect());
        }
        let mut done = Vec::new();
        if self.0.len() >= MAX_FOLD_KEYS {
            done = self.due(now);
            if self.0.len() >= MAX_FOLD_KEYS {
                return (This::NoRoom, done);
            }
        }
        self.0.insert(
            key,
            Fold {
                since: now,
                folded: 0,
                last: None,
            },
        );
        (This::Written, done)
    }

    /// The summaries of minutes that ended by `now`; forgets those minutes.
    pub(super) fn due(&mut self, now: i64) -> Vec<AuditRecord> {
        let mut out = Vec::new();
        self.0.retain(|_, fold| {
            let ended = !(fold.since..fold.since.saturating_add(FOLD_SECS)).contains(&now);
            if ended && let Some(last) = fold.last.take() {
                out.push(summary(last, fold.folded));
            }
            !ended
        });
        out.sort_by_key(|r| r.time);
        out
    }
}

impl Engine {
    /// Audits `record`, a refusal of kind `kind` the caller (uid `caller_uid`) can repeat at
    /// will, folded as the module says: at most one record a minute per user, caller and kind.
    pub(super) fn audit_folded(
        &self,
        store: &mut dyn Store,
        caller_uid: u32,
        kind: &'static str,
        record: AuditRecord,
    ) {
        let key = (record.uid, caller_uid, kind);
        let (this, done) = match self.folds.lock() {
            Ok(mut f) => f.admit(key, &record, record.time),
            Err(poisoned) => poisoned.into_inner().admit(key, &record, record.time),
        };
        for r in done {
            self.audit(store, r);
        }
        match this {
            This::Written => self.audit(store, record),
            // Not stored, but a refusal that root's callers (sshd, login, sudo) report still
            // goes to syslog, each one with its remote host, for the tools that watch it
            // (fail2ban); the system logger has its own rate limits. A user's own calls do not.
            This::Folded if caller_uid == 0 => crate::log::audit(&record),
            This::Folded => {}
            This::NoRoom => crate::log::audit(&record),
        }
    }

    /// Audits `record`, the notice of a login that goes on (an exemption, a grace period): one
    /// record per login when root's callers ask (sshd, login, sudo: real logins), folded as a
    /// refusal when the user asks about themself (which they can do at will).
    pub(super) fn audit_notice(
        &self,
        store: &mut dyn Store,
        caller_uid: u32,
        kind: &'static str,
        record: AuditRecord,
    ) {
        if caller_uid == 0 {
            self.audit(store, record);
        } else {
            self.audit_folded(store, caller_uid, kind, record);
        }
    }

    /// Writes the summaries of minutes of folded refusals that ended: called every
    /// [`FOLD_SECS`] / 2 by the retention thread, and at exit (`at_exit`: every minute in
    /// progress ends now).
    pub fn flush_folded(&self, at_exit: bool) {
        let now = self.clock.now();
        let until = if at_exit {
            now.saturating_add(FOLD_SECS)
        } else {
            now
        };
        let done = match self.folds.lock() {
            Ok(mut f) => f.due(until),
            Err(poisoned) => poisoned.into_inner().due(until),
        };
        if done.is_empty() {
            return;
        }
        match self.store() {
            Ok(mut store) => {
                for r in done {
                    self.audit(store.as_mut(), r);
                }
            }
            Err(_) => {
                for r in &done {
                    crate::log::audit(r);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(uid: u32, time: i64) -> AuditRecord {
        AuditRecord {
            time,
            uid,
            user: format!("u{uid}"),
            event: "login".into(),
            result: "failure".into(),
            detail: "locked out".into(),
            ..Default::default()
        }
    }

    const T: i64 = 1_800_000_000;

    #[test]
    fn a_minute_of_refusals_is_one_record_then_one_summary() {
        let mut f = Folds::default();
        let key = (1001, 1001, "locked-out");
        assert_eq!(f.admit(key, &refusal(1001, T), T), (This::Written, vec![]));
        for i in 1..=500 {
            let t = T + i % FOLD_SECS;
            assert_eq!(f.admit(key, &refusal(1001, t), t).0, This::Folded);
        }
        // Another user, and the same user through another caller, are not folded into it.
        assert_eq!(
            f.admit((1000, 1000, "locked-out"), &refusal(1000, T), T).0,
            This::Written
        );
        assert_eq!(
            f.admit((1001, 0, "locked-out"), &refusal(1001, T), T).0,
            This::Written
        );
        assert_eq!(
            f.admit((1001, 1001, "replay"), &refusal(1001, T), T).0,
            This::Written
        );
        assert!(f.due(T + FOLD_SECS - 1).is_empty(), "the minute goes on");
        let done = f.due(T + FOLD_SECS);
        assert_eq!(done.len(), 1, "{done:?}");
        assert_eq!(
            done[0].detail,
            "locked out; and 500 more in the last minute"
        );
        assert_eq!(done[0].uid, 1001);
        // The next refusal starts a new minute, written at once.
        let t = T + FOLD_SECS + 5;
        assert_eq!(f.admit(key, &refusal(1001, t), t), (This::Written, vec![]));
    }

    #[test]
    fn the_next_refusal_after_the_minute_carries_its_summary() {
        let mut f = Folds::default();
        let key = (1001, 1001, "locked-out");
        let _ = f.admit(key, &refusal(1001, T), T);
        let _ = f.admit(key, &refusal(1001, T + 1), T + 1);
        let _ = f.admit(key, &refusal(1001, T + 2), T + 2);
        let (this, done) = f.admit(key, &refusal(1001, T + 90), T + 90);
        assert_eq!(this, This::Written);
        assert_eq!(done.len(), 1);
        assert_eq!(
            done[0].time,
            T + 2,
            "the summary is dated by the last one folded"
        );
        assert!(done[0].detail.ends_with("; and 2 more in the last minute"));
        // A clock stepped back ends the minute too (never a minute that cannot end).
        let (this, _) = f.admit(key, &refusal(1001, T), T);
        assert_eq!(this, This::Written);
    }

    #[test]
    fn a_full_table_writes_nothing_more_but_never_grows() {
        let mut f = Folds::default();
        for uid in 0..MAX_FOLD_KEYS as u32 {
            assert_eq!(
                f.admit((uid, uid, "k"), &refusal(uid, T), T).0,
                This::Written
            );
        }
        let extra = MAX_FOLD_KEYS as u32;
        assert_eq!(
            f.admit((extra, extra, "k"), &refusal(extra, T), T).0,
            This::NoRoom
        );
        assert_eq!(f.0.len(), MAX_FOLD_KEYS);
        // A minute later the table has room again.
        let t = T + FOLD_SECS;
        assert_eq!(
            f.admit((extra, extra, "k"), &refusal(extra, t), t).0,
            This::Written
        );
        assert_eq!(f.0.len(), 1);
    }
}
