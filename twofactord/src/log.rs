//! Daemon logging: one line per event on stderr, which systemd sends to the journal (with a
//! priority prefix when stderr is the journal). Never given a secret or a code.
#![forbid(unsafe_code)]

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::store::AuditRecord;

static DEBUG: AtomicBool = AtomicBool::new(false);

/// Turns debug lines on.
pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

fn emit(priority: u8, level: &str, msg: &str) {
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let mut err = std::io::stderr().lock();
    for line in msg.lines() {
        let _ = if journal {
            writeln!(err, "<{priority}>{line}")
        } else {
            writeln!(err, "twofactord: {level}: {line}")
        };
    }
}

/// An error the admin should look at.
pub fn error(msg: &str) {
    emit(3, "error", msg);
}

/// Something odd but handled.
pub fn warn(msg: &str) {
    emit(4, "warning", msg);
}

/// Normal operation.
pub fn info(msg: &str) {
    emit(6, "info", msg);
}

/// Only with `--debug`.
pub fn debug(msg: &str) {
    if DEBUG.load(Ordering::Relaxed) {
        emit(7, "debug", msg);
    }
}

type Syslog = syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>;

/// The authpriv syslog connection (journald's /dev/log under systemd), made on first use.
/// `None` inside: no syslog socket, audit lines go to stderr instead.
static SYSLOG: Mutex<Option<Option<Syslog>>> = Mutex::new(None);

/// Sends one audit line to syslog (LOG_AUTHPRIV); false if there is no syslog to send to.
fn to_syslog(line: &str) -> bool {
    let Ok(mut slot) = SYSLOG.lock() else {
        return false;
    };
    let logger = slot.get_or_insert_with(|| {
        syslog::unix(syslog::Formatter3164 {
            facility: syslog::Facility::LOG_AUTHPRIV,
            hostname: None,
            process: "twofactord".into(),
            pid: std::process::id(),
        })
        .ok()
    });
    let Some(l) = logger else {
        return false;
    };
    if l.notice(line).is_ok() {
        return true;
    }
    // The socket went away (syslog restarted): reconnect on the next event.
    *slot = None;
    false
}

/// A security event, as stored in the audit log: to syslog's authpriv facility (the journal
/// under systemd), or stderr when there is no syslog.
pub fn audit(r: &AuditRecord) {
    let mut line = format!(
        "audit: event={} user={} uid={} result={}",
        r.event, r.user, r.uid, r.result
    );
    for (k, v) in [
        ("service", &r.service),
        ("rhost", &r.rhost),
        ("actor", &r.actor),
    ] {
        if !v.is_empty() {
            line.push_str(&format!(" {k}={v}"));
        }
    }
    if !r.detail.is_empty() {
        line.push_str(&format!(" detail={:?}", r.detail));
    }
    if !to_syslog(&line) {
        emit(5, "notice", &line);
    }
}
