//! Audit-log retention (`[audit]` in the policy): the daemon deletes records older than
//! `retention` and, beyond `max_records`, the oldest records of the users with the most records
//! ([`crate::store::audit_shares`]), at start, hourly, and after every
//! [`AuditRetention::check_every`] new records, in bounded batches so logins never wait long
//! for the store. One user's flood cannot fill the disk, nor push the others' records out.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::{Engine, store_err};
use crate::policy::AuditRetention;
use twofactor_bus::BusError;

/// Records deleted per store transaction; the store is released between batches.
pub const PRUNE_BATCH: u32 = 5_000;

/// Longest time between two checks when few records are appended.
pub const PRUNE_PERIOD: Duration = Duration::from_secs(3600);

/// Counts appended records and wakes the pruner every so many: cheap enough for every append
/// (an atomic add; a lock only at the threshold).
#[derive(Debug)]
pub struct PruneTrigger {
    appended: AtomicU64,
    due: Mutex<bool>,
    wake: Condvar,
}

impl PruneTrigger {
    /// A trigger with nothing counted.
    pub const fn new() -> PruneTrigger {
        PruneTrigger {
            appended: AtomicU64::new(0),
            due: Mutex::new(false),
            wake: Condvar::new(),
        }
    }

    /// One record was appended; every `every`-th wakes the pruner.
    pub fn appended(&self, every: u64) {
        let n = self
            .appended
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if n >= every.max(1) {
            self.appended.store(0, Ordering::Relaxed);
            let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
            *due = true;
            self.wake.notify_all();
        }
    }

    /// Waits until woken by [`PruneTrigger::appended`] (true) or for `timeout` (false).
    pub fn wait(&self, timeout: Duration) -> bool {
        let due = self.due.lock().unwrap_or_else(|e| e.into_inner());
        let (mut due, _) = self
            .wake
            .wait_timeout_while(due, timeout, |due| !*due)
            .unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *due)
    }
}

impl Default for PruneTrigger {
    fn default() -> Self {
        PruneTrigger::new()
    }
}

/// The daemon's trigger, fed by every audited event.
pub static TRIGGER: PruneTrigger = PruneTrigger::new();

impl Engine {
    /// Applies the audit retention of the policy in force now; returns the records deleted.
    pub fn prune_audit(&self) -> Result<u64, BusError> {
        let AuditRetention {
            retention,
            max_records,
        } = self.policy().audit;
        let age = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
        let before = self.clock.now().saturating_sub(age);
        let mut total = 0u64;
        loop {
            // One batch per lock: logins interleave with a long prune.
            let n = self
                .store()?
                .prune_audit(before, max_records, PRUNE_BATCH)
                .map_err(store_err)?;
            total = total.saturating_add(n);
            if n < u64::from(PRUNE_BATCH) {
                break;
            }
        }
        if total > 0 {
            crate::log::info(&format!(
                "audit log: deleted {total} records (retention {}, at most {max_records} \
                 records)",
                humantime::format_duration(retention)
            ));
        }
        Ok(total)
    }

    /// The pruner: prunes now, then whenever [`TRIGGER`] fires or [`PRUNE_PERIOD`] passes;
    /// meanwhile, every half minute, writes the counts of refusals folded in minutes that
    /// ended (`engine_fold.rs`). Runs for the daemon's life on its own thread.
    pub fn run_audit_retention(&self) {
        let half_minute = Duration::from_secs((super::fold::FOLD_SECS / 2).unsigned_abs());
        loop {
            if let Err(e) = self.prune_audit() {
                crate::log::error(&format!("audit log retention: {e}"));
            }
            let pruned = std::time::Instant::now();
            loop {
                let fired = TRIGGER.wait(half_minute);
                self.flush_folded(false);
                if fired || pruned.elapsed() >= PRUNE_PERIOD {
                    break;
                }
            }
        }
    }

    /// Counts one appended record towards the next prune.
    pub(super) fn audit_appended(&self) {
        TRIGGER.appended(self.policy().audit.check_every());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_trigger_fires_every_nth_append() {
        let t = PruneTrigger::new();
        assert!(!t.wait(Duration::from_millis(1)), "nothing appended yet");
        t.appended(3);
        t.appended(3);
        assert!(!t.wait(Duration::from_millis(1)));
        t.appended(3);
        assert!(t.wait(Duration::from_millis(1)));
        assert!(!t.wait(Duration::from_millis(1)), "a firing is taken once");
        // Across threads: a waiting pruner is woken (bounded wait).
        let t = Arc::new(PruneTrigger::new());
        let waiter = {
            let t = Arc::clone(&t);
            std::thread::spawn(move || t.wait(Duration::from_secs(30)))
        };
        t.appended(1);
        assert!(waiter.join().expect("waiter"));
    }

    struct At(i64);

    impl crate::engine::Clock for At {
        fn now(&self) -> i64 {
            self.0
        }
    }

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    fn engine(policy: &str, times: impl IntoIterator<Item = i64>) -> Engine {
        use crate::store::{AuditRecord, SqliteStore, Store};
        let accounts = crate::identity::tests::FakeAccounts::new();
        let policy = crate::policy::Policy::parse(std::path::Path::new("/t"), policy, &accounts)
            .expect("policy");
        let mut store = SqliteStore::in_memory().expect("store");
        for time in times {
            store
                .append_audit(&AuditRecord {
                    time,
                    uid: 1001,
                    user: "bob".into(),
                    event: "login".into(),
                    result: "failure".into(),
                    ..Default::default()
                })
                .expect("append");
        }
        Engine::new(
            Box::new(store),
            policy,
            None,
            Box::new(accounts),
            Box::new(At(NOW)),
        )
    }

    fn times(e: &Engine) -> Vec<i64> {
        e.store()
            .expect("store")
            .audit(None, 0, 10_000)
            .expect("audit")
            .iter()
            .map(|r| r.time)
            .collect()
    }

    #[test]
    fn the_engine_prunes_by_the_policys_age_then_count() {
        // 30 records 3 days old, 150 of the last minutes; keep 2 days and 100 records.
        let old = (0..30).map(|i| NOW - 3 * DAY + i);
        let new = (0..150).map(|i| NOW - 150 + i);
        let e = engine(
            "[audit]\nretention = \"2d\"\nmax_records = 100\n",
            old.chain(new),
        );
        assert_eq!(e.prune_audit().expect("prune"), 80);
        assert_eq!(times(&e), (NOW - 100..NOW).collect::<Vec<_>>());
        assert_eq!(e.prune_audit().expect("prune"), 0);
        // The defaults keep all of these.
        let e = engine("", (0..150).map(|i| NOW - 399 * DAY + i));
        assert_eq!(e.prune_audit().expect("prune"), 0);
        let e = engine("", [NOW - 401 * DAY, NOW - 399 * DAY]);
        assert_eq!(e.prune_audit().expect("prune"), 1);
    }

    #[test]
    fn a_large_excess_goes_in_several_batches() {
        let n = 2 * i64::from(PRUNE_BATCH) + 500;
        let e = engine("[audit]\nmax_records = 100\n", (0..n).map(|i| NOW - n + i));
        assert_eq!(e.prune_audit().expect("prune"), n as u64 - 100);
        assert_eq!(times(&e).len(), 100);
        assert_eq!(times(&e).first(), Some(&(NOW - 100)));
    }
}
