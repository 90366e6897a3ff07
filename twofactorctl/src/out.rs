//! Everything twofactorctl prints goes through here.
//!
//! Text it did not produce itself (audit entries, names, the daemon's messages, file names and
//! contents) may hold terminal controls: a newline forges a line of the audit log, an escape
//! sequence rewrites the admin's screen, a bidi override reorders what is read. [`display_safe`]
//! renders them as visible escapes. And a reader that goes away (`| head`) ends the program
//! quietly, as SIGPIPE ends any Unix tool, instead of a panic.
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::io::{ErrorKind, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether `--json` was given: standard error then carries only the error object, unless a
/// person is there to read prompts and cues (a terminal).
static JSON_MODE: AtomicBool = AtomicBool::new(false);

/// Sets `--json` mode (once, at start).
pub fn set_json_mode(on: bool) {
    JSON_MODE.store(on, Ordering::Relaxed);
}

/// Whether `--json` was given.
pub fn json_mode() -> bool {
    JSON_MODE.load(Ordering::Relaxed)
}

/// Writes a note for a person (a cue, progress) to standard error: always without `--json`,
/// and with it only when standard error is a terminal.
pub fn note(text: &str) {
    if !json_mode() || std::io::stderr().is_terminal() {
        stderr(format_args!("{}\n", display_safe(text)));
    }
}

/// What a shell reports for a program ended by SIGPIPE (128 + 13).
pub const BROKEN_PIPE_EXIT: i32 = 141;

use twofactor_bus::text::needs_escape;
pub use twofactor_bus::text::{display_safe, display_safe_lines};

/// A file name, for messages (lossy for names that are not UTF-8, and escaped).
pub fn path(p: &std::path::Path) -> String {
    display_safe(&p.to_string_lossy()).into_owned()
}

/// JSON text whose strings carry no raw terminal controls. serde_json escapes the C0 controls
/// already; DEL, the C1 controls and the bidi controls are valid raw in JSON, so they become
/// `\u` escapes of four hex digits here (all are in the Basic Multilingual Plane, and outside
/// strings JSON text is ASCII). A parser reads the same value.
pub fn json_safe(text: &str) -> Cow<'_, str> {
    // C0 controls are escaped inside strings by serde_json, and newlines outside them are the
    // pretty printer's.
    let risky = |c: char| u32::from(c) >= 0x7f && needs_escape(c);
    if !text.chars().any(risky) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if risky(c) {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Writes one line to standard output (see [`outln!`]). A closed pipe ends the program with
/// the status a SIGPIPE gives; any other write error ends it with status 1 and a message.
pub fn stdout_line(args: fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        drop(out);
        exit_on_write_error(&e);
    }
}

/// Writes raw bytes to standard output, as [`stdout_line`].
pub fn stdout_bytes(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        drop(out);
        exit_on_write_error(&e);
    }
}

fn exit_on_write_error(e: &std::io::Error) -> ! {
    if e.kind() == ErrorKind::BrokenPipe {
        std::process::exit(BROKEN_PIPE_EXIT);
    }
    stderr(format_args!(
        "twofactorctl: cannot write to standard output: {e}\n"
    ));
    std::process::exit(1);
}

/// Writes to standard error, ignoring failures (there is nowhere left to report them).
pub fn stderr(args: fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.flush());
}

/// `println!` that does not panic when standard output is closed.
macro_rules! outln {
    () => {
        $crate::out::stdout_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::out::stdout_line(format_args!($($arg)*))
    };
}

/// `eprintln!` that does not panic when standard error is closed.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::out::stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprint!` that does not panic (prompts).
macro_rules! err {
    ($($arg:tt)*) => {
        $crate::out::stderr(format_args!($($arg)*))
    };
}

pub(crate) use {err, errln, outln};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for s in [
            "",
            "tf-alice",
            "sshd 192.0.2.7 pts/0",
            "naïve café 日本 🙂",
            "a b\u{a0}c",
        ] {
            assert!(
                matches!(display_safe(s), Cow::Borrowed(t) if t == s),
                "{s:?}"
            );
            assert!(
                matches!(display_safe_lines(s), Cow::Borrowed(t) if t == s),
                "{s:?}"
            );
            assert!(matches!(json_safe(s), Cow::Borrowed(t) if t == s), "{s:?}");
        }
    }

    #[test]
    fn c0_controls_del_and_backslash_become_visible() {
        assert_eq!(display_safe("a\nb"), "a\\nb");
        assert_eq!(display_safe("a\r\tb"), "a\\r\\tb");
        assert_eq!(display_safe("\x1b[2J"), "\\x1b[2J");
        assert_eq!(display_safe("\0\x07\x08\x7f"), "\\x00\\x07\\x08\\x7f");
        assert_eq!(display_safe("C:\\x1b"), "C:\\\\x1b");
        // OSC 8 (a hyperlink) and OSC 52 (the clipboard), ended by BEL or ST.
        assert_eq!(
            display_safe("\x1b]8;;http://e.vil/\x07x\x1b]8;;\x1b\\"),
            "\\x1b]8;;http://e.vil/\\x07x\\x1b]8;;\\x1b\\\\"
        );
    }

    #[test]
    fn c1_controls_and_bidi_controls_become_visible() {
        // CSI and OSC as C1 code points.
        assert_eq!(display_safe("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(display_safe("\u{9d}0;x\u{9c}"), "\\u{9d}0;x\\u{9c}");
        assert_eq!(display_safe("\u{85}"), "\\u{85}");
        assert_eq!(display_safe("user\u{202e}toor"), "user\\u{202e}toor");
        for c in [
            '\u{061c}', '\u{200e}', '\u{200f}', '\u{2028}', '\u{2029}', '\u{202a}', '\u{202b}',
            '\u{202c}', '\u{202d}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
        ] {
            let shown = display_safe(&c.to_string()).into_owned();
            assert_eq!(shown, format!("\\u{{{:x}}}", c as u32));
        }
    }

    #[test]
    fn a_forged_audit_line_stays_on_its_line() {
        let forged = "sshd\n2026-11-26T10:00:00Z root login success\r\x1b[1A";
        let shown = display_safe(forged);
        assert!(!shown.contains('\n') && !shown.contains('\r') && !shown.contains('\x1b'));
        assert_eq!(
            shown,
            "sshd\\n2026-11-26T10:00:00Z root login success\\r\\x1b[1A"
        );
    }

    #[test]
    fn every_escaped_output_is_free_of_controls() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let shown = display_safe(&all);
        assert!(!shown.chars().any(needs_escape_but_backslash), "{shown}");
        let lines = display_safe_lines(&all);
        assert!(
            !lines
                .chars()
                .any(|c| c != '\n' && needs_escape_but_backslash(c)),
            "{lines}"
        );
    }

    fn needs_escape_but_backslash(c: char) -> bool {
        c != '\\' && needs_escape(c)
    }

    #[test]
    fn multi_line_messages_keep_their_line_breaks_only() {
        assert_eq!(
            display_safe_lines("policy reloaded\nwarning: x\r\x1b[2K"),
            "policy reloaded\nwarning: x\\r\\x1b[2K"
        );
        assert_eq!(display_safe_lines("a\n\nb\n"), "a\n\nb\n");
    }

    #[test]
    fn json_keeps_its_meaning_without_raw_controls() {
        let value = serde_json::json!({
            "service": "sshd\n\x1b]0;t\x07\u{9b}1m\u{7f}\u{202e}x\\y",
        });
        let raw = serde_json::to_string_pretty(&value).expect("json");
        let safe = json_safe(&raw);
        assert!(
            !safe
                .chars()
                .any(|c| c != '\n' && needs_escape_but_backslash(c)),
            "{safe}"
        );
        let back: serde_json::Value = serde_json::from_str(&safe).expect("still JSON");
        assert_eq!(back, value);
    }

    #[test]
    fn paths_are_escaped() {
        assert_eq!(
            path(std::path::Path::new("/home/u/.x\n\x1b[31m")),
            "/home/u/.x\\n\\x1b[31m"
        );
    }
}
