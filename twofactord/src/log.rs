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

/// `text` with every control character but the line feed (and every bidirectional-text
/// control, and the backslash) shown as an escape, so that text the daemon did not write itself
/// (a name from NSS, a path) cannot forge a log line or move the reader's cursor.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    twofactor_bus::text::display_safe_lines(text)
}

/// A field value in an audit line: as is when it is a plain word, else quoted with every
/// control, quote and space escaped (a value cannot pose as another `key=value`).
fn field(v: &str) -> String {
    let plain = !v.is_empty()
        && v.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@' | '/' | '+')
        });
    if plain {
        v.to_string()
    } else {
        format!("{v:?}")
    }
}

fn emit(priority: u8, level: &str, msg: &str) {
    use std::fmt::Write as _;
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let msg = escape_controls(msg);
    // One write for the whole event (stderr is unbuffered: one write per piece otherwise).
    let mut text = String::with_capacity(msg.len() + 32);
    // The lines after the first are indented: they continue this event and cannot pose as
    // another one.
    for (n, line) in msg.lines().enumerate() {
        let indent = if n == 0 { "" } else { "  " };
        let _ = if journal {
            writeln!(text, "<{priority}>{indent}{line}")
        } else {
            writeln!(text, "twofactord: {level}: {indent}{line}")
        };
    }
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
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
        field(&r.event),
        field(&r.user),
        r.uid,
        field(&r.result)
    );
    for (k, v) in [
        ("service", &r.service),
        ("rhost", &r.rhost),
        ("actor", &r.actor),
    ] {
        if !v.is_empty() {
            line.push_str(&format!(" {k}={}", field(v)));
        }
    }
    if !r.detail.is_empty() {
        line.push_str(&format!(" detail={:?}", r.detail));
    }
    if !to_syslog(&line) {
        emit(5, "notice", &line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_cannot_forge_other_fields_or_lines() {
        assert_eq!(field("sshd"), "sshd");
        assert_eq!(field("192.0.2.1"), "192.0.2.1");
        assert_eq!(field(""), "\"\"");
        let forged = field("x user=root result=success");
        assert!(forged.starts_with('"') && forged.ends_with('"'), "{forged}");
        let f = field("a\nb\r\u{1b}]0;t\u{7}");
        assert!(!f.chars().any(char::is_control), "{f}");
        assert!(f.contains("\\n") && f.contains("\\u{1b}"), "{f}");
    }

    #[test]
    fn log_lines_show_controls_as_escapes() {
        let e = escape_controls("user \u{1b}[2Jroot\r ok\u{202e}txt\nnext");
        assert!(!e.chars().any(|c| c.is_control() && c != '\n'), "{e}");
        assert!(e.contains("\\x1b") && e.contains("\\u{202e}"), "{e}");
        assert_eq!(e.lines().count(), 2);
        assert!(matches!(
            escape_controls("plain"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
