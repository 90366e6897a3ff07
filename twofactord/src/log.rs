//! Daemon logging: one line per event on stderr, which systemd sends to the journal (with a
//! priority prefix when stderr is the journal). Never given a secret or a code.

use std::io::Write;
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

/// A security event, as stored in the audit log.
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
    emit(5, "notice", &line);
}
