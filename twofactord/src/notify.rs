//! `notify_command`: an admin's program run for account events (enroll, disable, recovery code
//! used, codes regenerated, admin actions), e.g. to mail the user.
//!
//! The event is passed in the environment (`TWOFACTOR_EVENT`, `TWOFACTOR_USER`, …) and as one
//! JSON object on standard input. It never carries a secret or a code. Commands run one at a
//! time on a worker thread with a timeout, so a slow or failing command never delays a login;
//! the event is in the audit log whatever the command does.
//!
//! The queue in front of the worker is bounded, and one user cannot make it grow or make
//! others' notices wait:
//! - one pending notice per user, event and result: a further event of the same kind while one
//!   waits is merged into it (the notice carries the latest record and `coalesced`, the count
//!   of the events merged into it);
//! - refused attempts (a result other than `success`) are notified at most once per user and
//!   event per [`NotifyCommand::failure_interval`]; the ones in between are merged into the
//!   next notice, which waits until the interval has passed;
//! - users are served in turn (round robin by uid), and an admin action (`admin-*`) goes first,
//!   after only the earlier notices of the same user (so each user's notices keep their order);
//! - at most [`MAX_PENDING`] notices wait in all; past that a new notice is dropped with a
//!   warning (an admin action instead evicts the newest ordinary notice of the longest lane),
//!   and the next notice that runs says how many were dropped (`dropped`).
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::store::AuditRecord;

/// Events that are sent to the notify command.
pub const EVENTS: &[&str] = &[
    "enroll",
    "disable",
    "recovery-code-used",
    "recovery-regenerated",
    "admin-require",
    "admin-release",
    "admin-reset",
    "admin-unlock",
    "admin-issue-codes",
    "admin-grace",
    "admin-import",
    "lockout",
];

/// Most notices waiting at once, all users together. Coalescing keeps one user's share to one
/// notice per event and result, so only many users at once (or a bulk admin import) fill it.
pub const MAX_PENDING: usize = 1024;

/// The default of [`NotifyCommand::failure_interval`] (`notify_failure_interval`).
pub const DEFAULT_FAILURE_INTERVAL: Duration = Duration::from_secs(60);

/// The command: program and arguments, and how long it may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyCommand {
    /// Absolute path of the program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Killed after this long.
    pub timeout: Duration,
    /// Refused attempts of one user and event are notified at most once per this interval.
    pub failure_interval: Duration,
}

/// What the command is run for: an event, and what was merged into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The command (as the policy said when the latest event was queued).
    pub command: NotifyCommand,
    /// The latest event of this user, event and result.
    pub record: AuditRecord,
    /// How many earlier events of the same user, event and result were merged into this one.
    pub coalesced: u64,
    /// Time of the first of the merged events (`record.time` when none was merged).
    pub first_time: i64,
    /// Notices dropped (queue full) since the previous notice was taken.
    pub dropped: u64,
}

/// What became of a notice given to [`Queue::push`].
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// Waiting on its own.
    Queued,
    /// Merged into a waiting notice of the same user, event and result, which now stands for
    /// `1 + coalesced` events.
    Coalesced {
        /// Events merged into the waiting notice so far.
        coalesced: u64,
    },
    /// The queue was full: this notice was dropped.
    Dropped,
    /// The queue was full: this admin notice took the place of `evicted`, which was dropped.
    Evicted {
        /// The notice dropped.
        evicted: Box<Notice>,
    },
}

/// What [`Queue::next`] has to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// This notice, now.
    Run(Box<Notice>),
    /// Nothing before this time (refused attempts held back by their interval).
    WaitUntil(Instant),
    /// Nothing waits.
    Idle,
}

fn is_admin(event: &str) -> bool {
    event.starts_with("admin-")
}

fn is_refusal(result: &str) -> bool {
    result != "success"
}

/// (uid, event, result): what is coalesced and rate-limited together.
type Key = (u32, String, String);

fn key_of(r: &AuditRecord) -> Key {
    (r.uid, r.event.clone(), r.result.clone())
}

#[derive(Debug)]
struct Pending {
    seq: u64,
    not_before: Instant,
    notice: Notice,
}

/// The notices waiting for the command: bounded, coalesced, fair. Plain data: the caller
/// passes the time, so tests drive it without threads or sleeps.
#[derive(Debug)]
pub struct Queue {
    capacity: usize,
    /// One lane per uid, in arrival order.
    lanes: BTreeMap<u32, VecDeque<Pending>>,
    len: usize,
    seq: u64,
    /// The uid served last (round robin).
    cursor: Option<u32>,
    /// Refused attempts: until when the next notice of this key is held back.
    held_until: HashMap<Key, Instant>,
    dropped: u64,
}

impl Queue {
    /// An empty queue holding at most `capacity` notices (at least 1).
    pub fn new(capacity: usize) -> Queue {
        Queue {
            capacity: capacity.max(1),
            lanes: BTreeMap::new(),
            len: 0,
            seq: 0,
            cursor: None,
            held_until: HashMap::new(),
            dropped: 0,
        }
    }

    /// Notices waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The waiting notices, lane by lane (for the log at exit).
    pub fn waiting(&self) -> impl Iterator<Item = &Notice> {
        self.lanes.values().flatten().map(|p| &p.notice)
    }

    /// Queues `record` for `command` at `now`.
    pub fn push(&mut self, command: &NotifyCommand, record: &AuditRecord, now: Instant) -> Pushed {
        if let Some(lane) = self.lanes.get_mut(&record.uid)
            && let Some(p) = lane.iter_mut().find(|p| {
                p.notice.record.event == record.event && p.notice.record.result == record.result
            })
        {
            p.notice.coalesced = p.notice.coalesced.saturating_add(1);
            p.notice.record = record.clone();
            p.notice.command = command.clone();
            return Pushed::Coalesced {
                coalesced: p.notice.coalesced,
            };
        }
        let mut evicted = None;
        if self.len >= self.capacity {
            if !is_admin(&record.event) {
                self.dropped = self.dropped.saturating_add(1);
                return Pushed::Dropped;
            }
            match self.evict_for_admin() {
                Some(n) => evicted = Some(n),
                None => {
                    self.dropped = self.dropped.saturating_add(1);
                    return Pushed::Dropped;
                }
            }
        }
        let not_before = if is_refusal(&record.result) {
            self.held_until
                .get(&key_of(record))
                .copied()
                .filter(|t| *t > now)
                .unwrap_or(now)
        } else {
            now
        };
        self.seq = self.seq.wrapping_add(1);
        self.lanes
            .entry(record.uid)
            .or_default()
            .push_back(Pending {
                seq: self.seq,
                not_before,
                notice: Notice {
                    command: command.clone(),
                    record: record.clone(),
                    coalesced: 0,
                    first_time: record.time,
                    dropped: 0,
                },
            });
        self.len += 1;
        match evicted {
            Some(n) => Pushed::Evicted {
                evicted: Box::new(n),
            },
            None => Pushed::Queued,
        }
    }

    /// Drops the newest ordinary (not admin) notice of the longest lane that has one.
    fn evict_for_admin(&mut self) -> Option<Notice> {
        let uid = self
            .lanes
            .iter()
            .filter(|(_, lane)| lane.iter().any(|p| !is_admin(&p.notice.record.event)))
            .max_by_key(|(_, lane)| lane.len())
            .map(|(uid, _)| *uid)?;
        let lane = self.lanes.get_mut(&uid)?;
        let at = lane
            .iter()
            .rposition(|p| !is_admin(&p.notice.record.event))?;
        let victim = lane.remove(at)?;
        if lane.is_empty() {
            self.lanes.remove(&uid);
        }
        self.len -= 1;
        self.dropped = self.dropped.saturating_add(1);
        Some(victim.notice)
    }

    /// Takes the notice to run at `now`: the oldest due notice of the user of the oldest due
    /// admin notice if any, else the oldest due notice of the next user in turn.
    pub fn next(&mut self, now: Instant) -> Next {
        self.held_until.retain(|_, until| *until > now);
        let due = |p: &Pending| p.not_before <= now;
        let admin_uid = self
            .lanes
            .iter()
            .filter_map(|(uid, lane)| {
                lane.iter()
                    .filter(|p| due(p) && is_admin(&p.notice.record.event))
                    .map(|p| (p.seq, *uid))
                    .min()
            })
            .min()
            .map(|(_, uid)| uid);
        let has_due = |lane: &VecDeque<Pending>| lane.iter().any(due);
        let uid = admin_uid.or_else(|| {
            let after = self.cursor.and_then(|c| {
                self.lanes
                    .range(c.saturating_add(1)..)
                    .filter(|_| c < u32::MAX)
                    .find(|(_, lane)| has_due(lane))
            });
            after
                .or_else(|| self.lanes.iter().find(|(_, lane)| has_due(lane)))
                .map(|(uid, _)| *uid)
        });
        let Some(uid) = uid else {
            return match self.waiting_min_not_before() {
                Some(t) => Next::WaitUntil(t),
                None => Next::Idle,
            };
        };
        let Some(lane) = self.lanes.get_mut(&uid) else {
            return Next::Idle;
        };
        let Some(at) = lane.iter().position(due) else {
            return Next::Idle;
        };
        let Some(p) = lane.remove(at) else {
            return Next::Idle;
        };
        if lane.is_empty() {
            self.lanes.remove(&uid);
        }
        self.len -= 1;
        self.cursor = Some(uid);
        let mut notice = p.notice;
        if is_refusal(&notice.record.result) {
            self.held_until.insert(
                key_of(&notice.record),
                now + notice.command.failure_interval,
            );
        }
        notice.dropped = std::mem::take(&mut self.dropped);
        Next::Run(Box::new(notice))
    }

    fn waiting_min_not_before(&self) -> Option<Instant> {
        self.lanes.values().flatten().map(|p| p.not_before).min()
    }
}

/// The queue and the worker that empties it, one notice at a time.
#[derive(Debug)]
pub struct Notifier {
    queue: Mutex<Queue>,
    wake: Condvar,
    closed: std::sync::atomic::AtomicBool,
}

impl Notifier {
    /// A notifier whose queue holds at most `capacity` notices.
    pub fn new(capacity: usize) -> Notifier {
        Notifier {
            queue: Mutex::new(Queue::new(capacity)),
            wake: Condvar::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The lock is never held while a command runs; a poisoned queue is still a queue.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `record` for `command`, logs what was coalesced or dropped, wakes the worker.
    pub fn push(&self, command: &NotifyCommand, record: &AuditRecord) -> Pushed {
        let pushed = self.lock().push(command, record, Instant::now());
        match &pushed {
            Pushed::Queued => self.wake.notify_all(),
            Pushed::Coalesced { coalesced } => crate::log::debug(&format!(
                "notify_command: {} ({}) of {} merged into the waiting notice \
                 ({coalesced} merged so far)",
                record.event, record.result, record.user
            )),
            Pushed::Dropped => crate::log::warn(&format!(
                "notify_command: {MAX_PENDING} notices are waiting; dropped the notice of {} ({}) \
                 of {} (the audit log has the event)",
                record.event, record.result, record.user
            )),
            Pushed::Evicted { evicted } => {
                crate::log::warn(&format!(
                    "notify_command: {MAX_PENDING} notices are waiting; dropped the notice of {} \
                     ({}) of {} to make room for {} of {} (the audit log has the event)",
                    evicted.record.event,
                    evicted.record.result,
                    evicted.record.user,
                    record.event,
                    record.user
                ));
                self.wake.notify_all();
            }
        }
        pushed
    }

    /// Runs notices with `runner` until [`Notifier::close`]; waits while nothing is due.
    pub fn work(&self, mut runner: impl FnMut(&Notice)) {
        loop {
            let notice = {
                let mut q = self.lock();
                loop {
                    if self.closed.load(std::sync::atomic::Ordering::Acquire) {
                        return;
                    }
                    let now = Instant::now();
                    match q.next(now) {
                        Next::Run(n) => break n,
                        Next::WaitUntil(t) => {
                            let wait = t.saturating_duration_since(now);
                            q = self
                                .wake
                                .wait_timeout(q, wait)
                                .map(|(g, _)| g)
                                .unwrap_or_else(|e| e.into_inner().0);
                        }
                        Next::Idle => {
                            q = self.wake.wait(q).unwrap_or_else(|e| e.into_inner());
                        }
                    }
                }
            };
            runner(&notice);
        }
    }

    /// Stops [`Notifier::work`] after the notice it is running.
    pub fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        let _guard = self.lock();
        self.wake.notify_all();
    }

    /// A one-line account of the notices still waiting, if any (for the log at exit).
    pub fn unsent(&self) -> Option<String> {
        let q = self.lock();
        if q.is_empty() {
            return None;
        }
        let mut names: Vec<String> = q
            .waiting()
            .take(10)
            .map(|n| {
                format!(
                    "{} ({}) of {}{}",
                    n.record.event,
                    n.record.result,
                    n.record.user,
                    if n.coalesced > 0 {
                        format!(" x{}", n.coalesced + 1)
                    } else {
                        String::new()
                    }
                )
            })
            .collect();
        if q.len() > names.len() {
            names.push(format!("and {} more", q.len() - names.len()));
        }
        Some(format!(
            "{} notices not sent: {}",
            q.len(),
            names.join(", ")
        ))
    }
}

static NOTIFIER: OnceLock<Option<Arc<Notifier>>> = OnceLock::new();

fn notifier() -> Option<&'static Arc<Notifier>> {
    NOTIFIER
        .get_or_init(|| {
            let n = Arc::new(Notifier::new(MAX_PENDING));
            let worker = Arc::clone(&n);
            match std::thread::Builder::new()
                .name("notify".into())
                .spawn(move || worker.work(run))
            {
                Ok(_) => Some(n),
                Err(e) => {
                    crate::log::error(&format!("notify_command: cannot start its worker: {e}"));
                    None
                }
            }
        })
        .as_ref()
}

/// Queues `record` for `command` if it is one of the [`EVENTS`]. Never blocks.
pub fn send(command: &NotifyCommand, record: &AuditRecord) {
    if !EVENTS.contains(&record.event.as_str()) {
        return;
    }
    match notifier() {
        Some(n) => {
            let _ = n.push(command, record);
        }
        None => crate::log::error(&format!(
            "notify_command: no worker; the notice of {} of {} is not sent",
            record.event, record.user
        )),
    }
}

/// Logs the notices that will not be sent because the daemon exits.
pub fn log_unsent_at_exit() {
    if let Some(Some(n)) = NOTIFIER.get()
        && let Some(line) = n.unsent()
    {
        crate::log::warn(&format!("notify_command: exiting with {line}"));
    }
}

fn event_json(n: &Notice) -> String {
    let r = &n.record;
    serde_json::json!({
        "time": r.time,
        "uid": r.uid,
        "user": r.user,
        "event": r.event,
        "result": r.result,
        "service": r.service,
        "rhost": r.rhost,
        "actor": r.actor,
        "detail": r.detail,
        "coalesced": n.coalesced,
        "first_time": n.first_time,
        "dropped": n.dropped,
    })
    .to_string()
}

/// Runs the command for one notice, bounded by its timeout.
pub fn run(notice: &Notice) {
    let command = &notice.command;
    let r = &notice.record;
    if notice.coalesced > 0 {
        crate::log::info(&format!(
            "notify_command: one notice for {} events {} ({}) of {} since {}",
            notice.coalesced + 1,
            r.event,
            r.result,
            r.user,
            notice.first_time
        ));
    }
    if notice.dropped > 0 {
        crate::log::warn(&format!(
            "notify_command: {} notices were dropped (queue full) before this one",
            notice.dropped
        ));
    }
    let mut cmd = Command::new(&command.program);
    cmd.args(&command.args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("TWOFACTOR_TIME", r.time.to_string())
        .env("TWOFACTOR_UID", r.uid.to_string())
        .env("TWOFACTOR_USER", &r.user)
        .env("TWOFACTOR_EVENT", &r.event)
        .env("TWOFACTOR_RESULT", &r.result)
        .env("TWOFACTOR_SERVICE", &r.service)
        .env("TWOFACTOR_RHOST", &r.rhost)
        .env("TWOFACTOR_ACTOR", &r.actor)
        .env("TWOFACTOR_DETAIL", &r.detail)
        .env("TWOFACTOR_COALESCED", notice.coalesced.to_string())
        .env("TWOFACTOR_FIRST_TIME", notice.first_time.to_string())
        .env("TWOFACTOR_DROPPED", notice.dropped.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            crate::log::error(&format!(
                "notify_command {}: cannot run: {e}",
                command.program.display()
            ));
            return;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input is fine.
        let _ = stdin.write_all(event_json(notice).as_bytes());
        let _ = stdin.write_all(b"\n");
    }
    let deadline = Instant::now() + command.timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return,
            Ok(Some(status)) => {
                crate::log::warn(&format!(
                    "notify_command {} for {} of {}: {status}",
                    command.program.display(),
                    r.event,
                    r.user
                ));
                return;
            }
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                crate::log::warn(&format!(
                    "notify_command {} for {} of {}: killed after {}s",
                    command.program.display(),
                    r.event,
                    r.user,
                    command.timeout.as_secs()
                ));
                return;
            }
            Err(e) => {
                crate::log::warn(&format!("notify_command: {e}"));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn record() -> AuditRecord {
        AuditRecord {
            time: 1,
            uid: 1000,
            user: "alice".into(),
            event: "enroll".into(),
            result: "success".into(),
            detail: "totp".into(),
            ..Default::default()
        }
    }

    fn event(uid: u32, event: &str, result: &str, time: i64) -> AuditRecord {
        AuditRecord {
            time,
            uid,
            user: format!("u{uid}"),
            event: event.into(),
            result: result.into(),
            ..Default::default()
        }
    }

    fn command() -> NotifyCommand {
        NotifyCommand {
            program: "/bin/true".into(),
            args: vec![],
            timeout: Duration::from_secs(1),
            failure_interval: Duration::from_secs(60),
        }
    }

    fn notice(command: NotifyCommand, record: AuditRecord) -> Notice {
        Notice {
            command,
            first_time: record.time,
            record,
            coalesced: 0,
            dropped: 0,
        }
    }

    /// Takes the next notice, which must be due.
    fn take(q: &mut Queue, now: Instant) -> Notice {
        match q.next(now) {
            Next::Run(n) => *n,
            other => panic!("expected a notice, got {other:?}"),
        }
    }

    fn label(n: &Notice) -> String {
        format!("{} {}", n.record.user, n.record.event)
    }

    #[test]
    fn the_event_arrives_in_the_environment_and_on_stdin() {
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().join("out");
        let cmd = NotifyCommand {
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                format!(
                    "{{ echo \"$TWOFACTOR_EVENT $TWOFACTOR_USER $TWOFACTOR_UID \
                     $TWOFACTOR_COALESCED\"; cat; }} > {}",
                    out.display()
                ),
            ],
            timeout: Duration::from_secs(10),
            failure_interval: DEFAULT_FAILURE_INTERVAL,
        };
        let mut n = notice(cmd, record());
        n.coalesced = 4;
        n.first_time = 0;
        run(&n);
        let text = std::fs::read_to_string(&out).expect("output");
        assert!(text.starts_with("enroll alice 1000 4\n"), "{text}");
        let json: serde_json::Value =
            serde_json::from_str(text.lines().nth(1).expect("json line")).expect("json");
        assert_eq!(json["event"], "enroll");
        assert_eq!(json["detail"], "totp");
        assert_eq!(json["coalesced"], 4);
        assert_eq!(json["first_time"], 0);
        assert_eq!(json["dropped"], 0);
    }

    #[test]
    fn a_hanging_command_is_killed_at_its_timeout() {
        let cmd = NotifyCommand {
            program: "/bin/sleep".into(),
            args: vec!["30".into()],
            timeout: Duration::from_millis(300),
            failure_interval: DEFAULT_FAILURE_INTERVAL,
        };
        let started = Instant::now();
        run(&notice(cmd, record()));
        assert!(started.elapsed() < Duration::from_secs(10));
        // A missing program is an error in the log, not a panic.
        let missing = NotifyCommand {
            program: "/nonexistent/notify".into(),
            args: vec![],
            timeout: Duration::from_secs(1),
            failure_interval: DEFAULT_FAILURE_INTERVAL,
        };
        run(&notice(missing, record()));
    }

    #[test]
    fn the_queue_is_bounded_and_the_next_notice_says_how_many_were_dropped() {
        let now = Instant::now();
        let mut q = Queue::new(4);
        for uid in 1..=4 {
            assert_eq!(
                q.push(&command(), &event(uid, "enroll", "success", 1), now),
                Pushed::Queued
            );
        }
        assert_eq!(
            q.push(&command(), &event(5, "enroll", "success", 1), now),
            Pushed::Dropped
        );
        assert_eq!(
            q.push(&command(), &event(6, "disable", "success", 1), now),
            Pushed::Dropped
        );
        assert_eq!(q.len(), 4);
        let first = take(&mut q, now);
        assert_eq!(first.dropped, 2);
        assert_eq!(take(&mut q, now).dropped, 0);
        // Room again.
        assert_eq!(
            q.push(&command(), &event(5, "enroll", "success", 1), now),
            Pushed::Queued
        );
        let mut users: Vec<u32> = std::iter::from_fn(|| match q.next(now) {
            Next::Run(n) => Some(n.record.uid),
            _ => None,
        })
        .collect();
        users.sort_unstable();
        assert_eq!(users, [3, 4, 5]);
        assert_eq!(q.next(now), Next::Idle);
        assert!(q.is_empty());
    }

    #[test]
    fn a_flood_of_one_kind_is_one_notice_with_a_count() {
        let now = Instant::now();
        let mut q = Queue::new(MAX_PENDING);
        assert_eq!(
            q.push(&command(), &event(7, "enroll", "failure", 100), now),
            Pushed::Queued
        );
        for i in 1..300 {
            assert_eq!(
                q.push(&command(), &event(7, "enroll", "failure", 100 + i), now),
                Pushed::Coalesced {
                    coalesced: i as u64
                }
            );
        }
        // Other kinds of the same user wait on their own.
        assert_eq!(
            q.push(&command(), &event(7, "enroll", "success", 500), now),
            Pushed::Queued
        );
        assert_eq!(q.len(), 2);
        let n = take(&mut q, now);
        assert_eq!(
            (n.record.event.as_str(), n.record.result.as_str()),
            ("enroll", "failure")
        );
        assert_eq!(n.coalesced, 299);
        assert_eq!(n.first_time, 100);
        assert_eq!(n.record.time, 399, "the notice carries the latest event");
        assert_eq!(take(&mut q, now).record.result, "success");
        assert_eq!(q.next(now), Next::Idle);
    }

    #[test]
    fn refused_attempts_are_notified_once_per_interval_and_the_rest_counted() {
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        let mut q = Queue::new(MAX_PENDING);
        let _ = q.push(&command(), &event(7, "enroll", "failure", 0), t0);
        assert_eq!(take(&mut q, t0).coalesced, 0);
        // Within the minute: held back and merged.
        let t1 = t0 + Duration::from_secs(1);
        for i in 0..50 {
            let _ = q.push(&command(), &event(7, "enroll", "failure", 1 + i), t1);
        }
        // Successes and other users are not held back meanwhile.
        let _ = q.push(
            &command(),
            &event(7, "recovery-code-used", "success", 2),
            t1,
        );
        let _ = q.push(&command(), &event(8, "enroll", "failure", 2), t1);
        let mut run: Vec<String> = Vec::new();
        while let Next::Run(n) = q.next(t1) {
            run.push(label(&n));
        }
        run.sort();
        assert_eq!(run, ["u7 recovery-code-used", "u8 enroll"]);
        assert_eq!(q.next(t1), Next::WaitUntil(t0 + minute));
        assert_eq!(
            q.next(t0 + minute - Duration::from_millis(1)),
            Next::WaitUntil(t0 + minute)
        );
        let n = take(&mut q, t0 + minute);
        assert_eq!(n.coalesced, 49);
        assert_eq!(n.first_time, 1);
        assert_eq!(q.next(t0 + minute), Next::Idle);
        // The interval starts again from that notice.
        let _ = q.push(&command(), &event(7, "enroll", "failure", 90), t0 + minute);
        assert_eq!(q.next(t0 + minute), Next::WaitUntil(t0 + 2 * minute));
        // The interval comes from the command (policy).
        let mut quick = command();
        quick.failure_interval = Duration::from_secs(2);
        let mut q = Queue::new(MAX_PENDING);
        let _ = q.push(&quick, &event(7, "lockout", "locked", 0), t0);
        let _ = take(&mut q, t0);
        let _ = q.push(&quick, &event(7, "lockout", "locked", 1), t0);
        assert_eq!(q.next(t0), Next::WaitUntil(t0 + Duration::from_secs(2)));
    }

    #[test]
    fn users_are_served_in_turn() {
        let now = Instant::now();
        let mut q = Queue::new(MAX_PENDING);
        for e in ["enroll", "disable", "recovery-regenerated"] {
            let _ = q.push(&command(), &event(10, e, "success", 1), now);
        }
        for e in ["enroll", "disable"] {
            let _ = q.push(&command(), &event(20, e, "success", 1), now);
        }
        let _ = q.push(&command(), &event(30, "enroll", "success", 1), now);
        let order: Vec<String> = std::iter::from_fn(|| match q.next(now) {
            Next::Run(n) => Some(label(&n)),
            _ => None,
        })
        .collect();
        assert_eq!(
            order,
            [
                "u10 enroll",
                "u20 enroll",
                "u30 enroll",
                "u10 disable",
                "u20 disable",
                "u10 recovery-regenerated"
            ]
        );
    }

    #[test]
    fn an_admin_notice_goes_before_other_users_but_after_its_users_earlier_ones() {
        let now = Instant::now();
        let mut q = Queue::new(MAX_PENDING);
        // Many users with something pending, then the admin's unlock of alice (uid 5000).
        for uid in 1..=200 {
            let _ = q.push(&command(), &event(uid, "enroll", "failure", 1), now);
            let _ = q.push(&command(), &event(uid, "lockout", "locked", 1), now);
        }
        let _ = q.push(&command(), &event(5000, "admin-unlock", "success", 2), now);
        assert_eq!(label(&take(&mut q, now)), "u5000 admin-unlock");
        // Bob (uid 7) has an earlier notice: his own order is kept, nobody else's waits.
        let _ = q.push(&command(), &event(7, "admin-reset", "success", 3), now);
        assert_eq!(label(&take(&mut q, now)), "u7 enroll");
        assert_eq!(label(&take(&mut q, now)), "u7 lockout");
        assert_eq!(label(&take(&mut q, now)), "u7 admin-reset");
        // Then round robin again.
        assert_eq!(q.len(), 2 * 199);
    }

    #[test]
    fn a_full_queue_makes_room_for_an_admin_notice_at_the_floods_expense() {
        let now = Instant::now();
        let mut q = Queue::new(4);
        for e in ["enroll", "lockout", "disable"] {
            let _ = q.push(&command(), &event(7, e, "failure", 1), now);
        }
        let _ = q.push(&command(), &event(8, "enroll", "success", 1), now);
        match q.push(&command(), &event(9, "admin-unlock", "success", 2), now) {
            Pushed::Evicted { evicted } => assert_eq!(label(&evicted), "u7 disable"),
            other => panic!("{other:?}"),
        }
        assert_eq!(q.len(), 4);
        let n = take(&mut q, now);
        assert_eq!(label(&n), "u9 admin-unlock");
        assert_eq!(n.dropped, 1);
        // A queue full of admin notices drops the newcomer instead.
        let mut q = Queue::new(1);
        let _ = q.push(&command(), &event(1, "admin-unlock", "success", 1), now);
        assert_eq!(
            q.push(&command(), &event(2, "admin-unlock", "success", 1), now),
            Pushed::Dropped
        );
    }

    #[test]
    fn the_worker_runs_an_admin_notice_before_a_flood_with_a_slow_command() {
        let notifier = Arc::new(Notifier::new(MAX_PENDING));
        let (started_tx, started_rx) = mpsc::channel::<String>();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let worker = {
            let notifier = Arc::clone(&notifier);
            std::thread::spawn(move || {
                notifier.work(|n| {
                    let _ = started_tx.send(format!("{} x{}", label(n), n.coalesced + 1));
                    // Each notice takes until the test lets it go: a slow command.
                    let _ = release_rx.recv_timeout(Duration::from_secs(20));
                })
            })
        };
        let wait = Duration::from_secs(20);
        let _ = notifier.push(&command(), &event(7, "enroll", "failure", 1));
        assert_eq!(
            started_rx.recv_timeout(wait).expect("first"),
            "u7 enroll x1"
        );
        // While it runs: a flood by uid 7 of every kind it can make, then an admin action.
        for i in 0..300 {
            let _ = notifier.push(&command(), &event(7, "enroll", "failure", 2 + i));
            let _ = notifier.push(&command(), &event(7, "lockout", "locked", 2 + i));
        }
        let _ = notifier.push(&command(), &event(9, "admin-unlock", "success", 400));
        release_tx.send(()).expect("release");
        assert_eq!(
            started_rx.recv_timeout(wait).expect("second"),
            "u9 admin-unlock x1"
        );
        release_tx.send(()).expect("release");
        assert_eq!(
            started_rx.recv_timeout(wait).expect("third"),
            "u7 lockout x300"
        );
        release_tx.send(()).expect("release");
        // The rest of the flood is held back for the interval: one notice with its count.
        let unsent = notifier.unsent().expect("one notice waits");
        assert!(unsent.contains("enroll (failure) of u7 x300"), "{unsent}");
        notifier.close();
        worker.join().expect("worker");
    }
}
