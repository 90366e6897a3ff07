//! When the daemon cannot be reached: the daemon's offline snapshot (`twofactor_bus::offline`)
//! may say that it would not have asked this user for a second factor (2FA optional and nothing
//! enrolled); then the login is not refused for want of a daemon.
//!
//! The rule, under `failmode=closed` and only for an unreachable daemon: the module answers
//! `PAM_IGNORE` only if it runs as root (euid 0), the snapshot is a regular file (not a
//! symlink) owned by root or the daemon's user, not writable by group or others, at most
//! [`MAX_SIZE`] bytes, written since this boot, parses without error, the user is known to NSS,
//! and the snapshot says the daemon would not ask this user on this service. In every other case
//! the login stays "unavailable" (`PAM_AUTHINFO_UNAVAIL`).
#![forbid(unsafe_code)]

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use twofactor_bus::offline::{MAX_SIZE, Snapshot};

/// How much earlier than the boot time (as computed now) a snapshot may have been written and
/// still count as written since this boot (clock adjustments at boot).
const BOOT_SLACK_SECS: i64 = 300;

/// The boot time in Unix seconds (`btime` of `/proc/stat`).
fn boot_time() -> Option<i64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Reads and checks the snapshot at `path` (see the module documentation).
pub fn read(path: &Path, daemon_uid: Option<u32>) -> Result<Snapshot, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("the module does not run as root: the snapshot is not for it".into());
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    check(&meta, daemon_uid, boot_time()).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_SIZE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_SIZE {
        return Err(format!("{}: too large", path.display()));
    }
    Snapshot::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The checks on the opened file: kind, owner, mode, size, age.
fn check(
    meta: &std::fs::Metadata,
    daemon_uid: Option<u32>,
    boot: Option<i64>,
) -> Result<(), String> {
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if !crate::login::owner_trusted(meta.uid(), daemon_uid) {
        return Err(format!(
            "owned by uid {}, neither root nor the daemon's user",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "writable by group or others (mode {:04o})",
            meta.mode() & 0o7777
        ));
    }
    if meta.size() > MAX_SIZE {
        return Err("too large".into());
    }
    let Some(boot) = boot else {
        return Err("cannot tell when this system booted".into());
    };
    if meta.mtime() < boot - BOOT_SLACK_SECS {
        return Err("written before this boot".into());
    }
    Ok(())
}

/// Would the daemon ask `user` on `service`, by the snapshot? `Err` when that cannot be told
/// (the user or their groups unknown to NSS).
pub fn asks(snapshot: &Snapshot, user: &str, service: &str) -> Result<bool, String> {
    let account = nix::unistd::User::from_name(user)
        .ok()
        .flatten()
        .ok_or_else(|| format!("{user:?} is not known to NSS"))?;
    let name = std::ffi::CString::new(user).map_err(|_| "bad user name".to_string())?;
    let gids = nix::unistd::getgrouplist(&name, account.gid)
        .map_err(|e| format!("cannot list the groups of {user}: {e}"))?;
    let groups: Vec<String> = gids
        .into_iter()
        .filter_map(|g| nix::unistd::Group::from_gid(g).ok().flatten())
        .map(|g| g.name)
        .collect();
    // Rules are matched by the name NSS reports, as the daemon matches them.
    Ok(snapshot.asks(account.uid.as_raw(), &account.name, &groups, service))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file(mode: u32) -> (tempfile::TempDir, std::fs::Metadata) {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("snap");
        std::fs::write(&p, "x").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let meta = std::fs::metadata(&p).expect("meta");
        (dir, meta)
    }

    #[test]
    fn only_a_private_file_of_root_or_the_daemon_written_since_boot_is_trusted() {
        let me = nix::unistd::geteuid().as_raw();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let (_d, private) = file(0o600);
        let daemon = Some(me);
        assert_eq!(check(&private, daemon, Some(now - 10)), Ok(()));
        assert!(check(&private, daemon, Some(now + 3600)).is_err(), "old");
        assert!(check(&private, daemon, None).is_err(), "no boot time");
        if me != 0 {
            assert!(check(&private, None, Some(now)).is_err(), "foreign owner");
        }
        for mode in [0o602, 0o620, 0o666] {
            let (_d, open) = file(mode);
            assert!(check(&open, daemon, Some(now)).is_err(), "{mode:o}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = std::fs::metadata(dir.path()).expect("meta");
        assert!(check(&meta, daemon, Some(now)).is_err(), "a directory");
    }

    #[test]
    fn the_boot_time_is_known() {
        assert!(boot_time().is_some_and(|b| b > 0));
    }
}
