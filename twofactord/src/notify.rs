//! `notify_command`: an admin's program run for account events (enroll, disable, recovery code
//! used, codes regenerated, admin actions), e.g. to mail the user.
//!
//! The event is passed in the environment (`TWOFACTOR_EVENT`, `TWOFACTOR_USER`, …) and as one
//! JSON object on standard input. It never carries a secret or a code. Commands run one at a
//! time on a worker thread with a timeout, so a slow or failing command never delays a login;
//! the event is in the audit log whatever the command does.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Mutex, OnceLock};
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

/// The command: program and arguments, and how long it may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyCommand {
    /// Absolute path of the program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Killed after this long.
    pub timeout: Duration,
}

struct Job {
    command: NotifyCommand,
    record: AuditRecord,
}

static WORKER: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();

/// Queues `record` for `command` if it is one of the [`EVENTS`]. Never blocks.
pub fn send(command: &NotifyCommand, record: &AuditRecord) {
    if !EVENTS.contains(&record.event.as_str()) {
        return;
    }
    let worker = WORKER.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("notify".into())
            .spawn(move || {
                for job in rx {
                    run(&job.command, &job.record);
                }
            });
        if let Err(e) = spawned {
            crate::log::error(&format!("notify_command: cannot start its worker: {e}"));
        }
        Mutex::new(tx)
    });
    let job = Job {
        command: command.clone(),
        record: record.clone(),
    };
    let sent = worker
        .lock()
        .map(|tx| tx.send(job).is_ok())
        .unwrap_or(false);
    if !sent {
        crate::log::error("notify_command: the worker is gone; event not sent");
    }
}

fn event_json(r: &AuditRecord) -> String {
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
    })
    .to_string()
}

/// Runs the command for one event, bounded by its timeout.
pub fn run(command: &NotifyCommand, r: &AuditRecord) {
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
        let _ = stdin.write_all(event_json(r).as_bytes());
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

    #[test]
    fn the_event_arrives_in_the_environment_and_on_stdin() {
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().join("out");
        let cmd = NotifyCommand {
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                format!(
                    "{{ echo \"$TWOFACTOR_EVENT $TWOFACTOR_USER $TWOFACTOR_UID\"; cat; }} > {}",
                    out.display()
                ),
            ],
            timeout: Duration::from_secs(10),
        };
        run(&cmd, &record());
        let text = std::fs::read_to_string(&out).expect("output");
        assert!(text.starts_with("enroll alice 1000\n"), "{text}");
        let json: serde_json::Value =
            serde_json::from_str(text.lines().nth(1).expect("json line")).expect("json");
        assert_eq!(json["event"], "enroll");
        assert_eq!(json["detail"], "totp");
    }

    #[test]
    fn a_hanging_command_is_killed_at_its_timeout() {
        let cmd = NotifyCommand {
            program: "/bin/sleep".into(),
            args: vec!["30".into()],
            timeout: Duration::from_millis(300),
        };
        let started = Instant::now();
        run(&cmd, &record());
        assert!(started.elapsed() < Duration::from_secs(10));
        // A missing program is an error in the log, not a panic.
        let missing = NotifyCommand {
            program: "/nonexistent/notify".into(),
            args: vec![],
            timeout: Duration::from_secs(1),
        };
        run(&missing, &record());
    }
}
