//! Text the program did not write itself (names, paths, audit fields, messages from the other
//! side of the bus) shown safely: every control character, bidi control and backslash becomes a
//! visible escape, so such text can neither forge a line of a log or a listing nor drive the
//! reader's terminal. Used by twofactorctl's output, the daemon's log and the PAM module's
//! syslog lines.
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal as is: C0 and C1 controls, DEL, the Unicode bidi
/// controls (embeddings, overrides, isolates, marks) and the line and paragraph separators.
/// The backslash too, so that an escape seen on screen is always one this function made.
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || c == '\\'
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\\' => out.push_str("\\\\"),
        // ASCII controls and DEL as the byte: `\x1b`.
        c if (c as u32) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        // C1 controls and the Unicode format characters: `\u{9b}`, `\u{202e}`.
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

/// `s` with every control character, bidi control and backslash rendered as a visible escape
/// (`\n`, `\x1b`, `\u{202e}`, `\\`): one line of plain text, whatever `s` holds. Borrowed when
/// there is nothing to escape.
pub fn display_safe(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if needs_escape(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// As [`display_safe`], but newlines stay line breaks: for multi-line messages (the daemon's
/// replies, errors). Everything else, `\r` included, is escaped, so no line can overwrite
/// another.
pub fn display_safe_lines(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c != '\n' && needs_escape(c)) {
        return Cow::Borrowed(s);
    }
    let lines: Vec<Cow<'_, str>> = s.split('\n').map(display_safe).collect();
    Cow::Owned(lines.join("\n"))
}
