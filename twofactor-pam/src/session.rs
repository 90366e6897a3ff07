//! An identity of the login session the module runs in, sent as the `session` context key: the
//! daemon honours a remembered login (`remember`) only for the session that earned it, as
//! sudo's tty tickets do. A later session that gets the same terminal name (`/dev/pts/3` is
//! reused) has another session leader, and its terminal device was created or handed over
//! (chown) anew, so it has another identity.
//!
//! The parts, each read from this process's own view of the system:
//! - `leader=SID:START`: the session id (`getsid`, field 6 of `/proc/self/stat`) and the start
//!   time of that session leader (field 22 of `/proc/SID/stat`, clock ticks since boot), so a
//!   reused pid is another session. Required: without it there is no identity.
//! - `tty=RDEV:INO:CTIME`: the PAM_TTY device's number, inode and change time (creation, chown
//!   or chmod at the start of a session), when PAM_TTY names a character device.
//! - `audit=ID`: the audit session id (`/proc/self/sessionid`), when one is set.
//!
//! The daemon compares the whole string for equality and never interprets it.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// `/proc/.../sessionid` when no audit session is set.
const AUDIT_UNSET: &str = "4294967295";

/// The fields of a `/proc/PID/stat` line after the command name (which may hold spaces and
/// parentheses): index 0 is field 3 of proc(5).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    Some(rest.split_whitespace().collect())
}

/// Field `n` (numbered as in proc(5), from 3) of a stat line.
fn stat_field(stat: &str, n: usize) -> Option<u64> {
    stat_fields(stat)?.get(n.checked_sub(3)?)?.parse().ok()
}

/// `SID:START` of the session leader of this process, from `proc` (the `/proc` mount).
fn leader(proc: &Path) -> Option<String> {
    let own = std::fs::read_to_string(proc.join("self/stat")).ok()?;
    let sid = stat_field(&own, 6).filter(|&s| s > 0)?;
    let theirs = std::fs::read_to_string(proc.join(format!("{sid}/stat"))).ok()?;
    let start = stat_field(&theirs, 22)?;
    Some(format!("{sid}:{start}"))
}

/// The device file PAM_TTY names (`pts/3`, `tty1` or `/dev/pts/3`), if it is one.
fn tty_path(tty: &str) -> Option<PathBuf> {
    if tty.is_empty() || tty.contains('\0') {
        return None;
    }
    Some(if tty.starts_with('/') {
        PathBuf::from(tty)
    } else {
        Path::new("/dev").join(tty)
    })
}

/// `RDEV:INO:CTIME` of the terminal device, when PAM_TTY names a character device. Only
/// `stat`: the device is never opened.
fn tty_part(tty: &str) -> Option<String> {
    let meta = std::fs::metadata(tty_path(tty)?).ok()?;
    if !meta.file_type().is_char_device() {
        return None;
    }
    Some(format!(
        "{}:{}:{}.{:09}",
        meta.rdev(),
        meta.ino(),
        meta.ctime(),
        meta.ctime_nsec()
    ))
}

/// The audit session id, when one is set.
fn audit(proc: &Path) -> Option<String> {
    let id = std::fs::read_to_string(proc.join("self/sessionid")).ok()?;
    let id = id.trim();
    (!id.is_empty() && id != AUDIT_UNSET && id.bytes().all(|b| b.is_ascii_digit()))
        .then(|| id.to_string())
}

/// The identity of this process's login session on terminal `tty` (PAM_TTY), read from
/// `proc`; empty when the session leader cannot be identified (then nothing is remembered).
pub fn identity_in(proc: &Path, tty: &str) -> String {
    let Some(leader) = leader(proc) else {
        return String::new();
    };
    let mut id = format!("leader={leader}");
    if let Some(t) = tty_part(tty) {
        id.push_str(&format!(";tty={t}"));
    }
    if let Some(a) = audit(proc) {
        id.push_str(&format!(";audit={a}"));
    }
    id
}

/// [`identity_in`] the real `/proc`.
pub fn identity(tty: &str) -> String {
    identity_in(Path::new("/proc"), tty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "42 (a) b (c)) S 1 42 40 34816 42 4194560 1 2 3 4 5 6 7 8 20 0 1 0 123456 \
                    100 200";
        assert_eq!(stat_field(line, 3), None, "the state is not a number");
        assert_eq!(stat_field(line, 4), Some(1));
        assert_eq!(stat_field(line, 6), Some(40));
        assert_eq!(stat_field(line, 22), Some(123456));
        assert_eq!(stat_field(line, 2), None);
        assert_eq!(stat_field("no parenthesis", 6), None);
        assert_eq!(stat_field("1 (x)", 6), None);
    }

    #[test]
    fn tty_names_resolve_under_dev() {
        assert_eq!(tty_path("pts/3"), Some(PathBuf::from("/dev/pts/3")));
        assert_eq!(tty_path("/dev/tty1"), Some(PathBuf::from("/dev/tty1")));
        assert_eq!(tty_path(""), None);
    }

    #[test]
    fn the_real_session_has_a_stable_identity() {
        if leader(Path::new("/proc")).is_none() {
            // Started in a session whose leader is outside this pid namespace (a container's
            // test runner): /proc shows session 0 and there is no identity, as there must not
            // be. Login programs are session leaders; so becomes this test process.
            assert_eq!(identity("/dev/null"), "", "no leader, no identity");
            nix::unistd::setsid().expect("setsid");
        }
        let a = identity("");
        assert!(a.starts_with("leader="), "{a}");
        assert!(!a.contains(";tty="), "{a}");
        assert_eq!(a, identity(""), "stable within a session");
        // Names that are not character devices add nothing: an X display, "ssh", a file.
        for t in [":0", "ssh", "/etc/passwd", "/dev/pts/999999"] {
            assert_eq!(identity(t), a, "{t}");
        }
        // A character device adds its number, inode and change time.
        let null = identity("/dev/null");
        assert!(null.contains(";tty="), "{null}");
        assert_eq!(null.split(';').next(), a.split(';').next(), "same leader");
        assert_eq!(identity("null"), null, "relative to /dev");
    }

    #[test]
    fn no_leader_no_identity() {
        assert_eq!(identity_in(Path::new("/nonexistent-proc"), "/dev/null"), "");
    }
}
