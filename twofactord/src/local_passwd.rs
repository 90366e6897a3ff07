//! `/etc/passwd` indexed by name, for the login's account lookup.
//!
//! When `/etc/nsswitch.conf` asks `files` first for `passwd`, NSS answers a name found in
//! `/etc/passwd` from its first line with that name, and asks the other sources only for names
//! it does not find there. `getpwnam` reads the whole file line by line at every call (nscd
//! aside), so a lookup costs in proportion to the number of local accounts. [`FilesFirst`]
//! reads the file once per change instead (inode, size and modification time of both files,
//! checked at each lookup) and gives the same answer: a name on a line it does not understand
//! the way NSS does, a name it does not hold, or any other `passwd:` line in `nsswitch.conf`
//! goes to NSS as before. Only the lookup without groups uses it ([`Accounts`]'s other answers
//! are NSS's).
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::identity::{Account, Accounts, Enumerated, Nss, validate_name};

/// A file larger than this is left to NSS (the index lives in the daemon's memory).
const MAX_PASSWD_BYTES: u64 = 4 << 20;

/// What tells that a file changed: inode, size and modification time.
type Stamp = (u64, u64, i64, i64);

fn stamp(path: &Path) -> Option<Stamp> {
    std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// A name's first line in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A line NSS reads as this account.
    User { uid: u32, gid: u32 },
    /// A line this parser does not read with certainty: NSS answers.
    Unsure,
}

#[derive(Default)]
struct Index {
    stamps: (Option<Stamp>, Option<Stamp>),
    /// `None`: `nsswitch.conf` does not ask `files` first, or the file could not be indexed.
    by_name: Option<HashMap<String, Entry>>,
}

/// [`Nss`], with the login's lookup by name answered from an index of `/etc/passwd` when
/// `nsswitch.conf` asks `files` first.
pub struct FilesFirst {
    passwd: PathBuf,
    nsswitch: PathBuf,
    index: Mutex<Index>,
}

impl Default for FilesFirst {
    fn default() -> Self {
        FilesFirst::at(Path::new("/etc/passwd"), Path::new("/etc/nsswitch.conf"))
    }
}

impl FilesFirst {
    /// Indexes `passwd` as NSS reads it under `nsswitch`.
    pub fn at(passwd: &Path, nsswitch: &Path) -> Self {
        FilesFirst {
            passwd: passwd.to_path_buf(),
            nsswitch: nsswitch.to_path_buf(),
            index: Mutex::new(Index::default()),
        }
    }

    /// The entry for `name`; `None`: ask NSS. If the files changed, they are read again, or,
    /// without `reread` (no time to wait), the answer is `None`.
    fn entry(&self, name: &str, reread: bool) -> Option<Entry> {
        let stamps = (stamp(&self.nsswitch), stamp(&self.passwd));
        let mut index = self.index.lock().ok()?;
        if index.stamps != stamps {
            if !reread {
                return None;
            }
            index.by_name = self.build(stamps.1);
            index.stamps = stamps;
        }
        index.by_name.as_ref()?.get(name).copied()
    }

    fn account(&self, name: &str, reread: bool) -> Option<Account> {
        validate_name(name).ok()?;
        match self.entry(name, reread)? {
            Entry::User { uid, gid } => Some(Account {
                name: name.to_string(),
                uid,
                gids: vec![gid],
                groups: Vec::new(),
            }),
            Entry::Unsure => None,
        }
    }

    fn build(&self, passwd: Option<Stamp>) -> Option<HashMap<String, Entry>> {
        let (_, size, _, _) = passwd?;
        if size > MAX_PASSWD_BYTES {
            return None;
        }
        let nsswitch = std::fs::read_to_string(&self.nsswitch).ok()?;
        if !files_first(&nsswitch) {
            return None;
        }
        let bytes = std::fs::read(&self.passwd).ok()?;
        // NSS reads a line with a NUL byte as ending there, and does not care for UTF-8: a
        // file with either is left to NSS whole (never another line's answer for a name).
        if bytes.contains(&0) || std::str::from_utf8(&bytes).is_err() {
            return None;
        }
        Some(index(&bytes))
    }
}

/// Whether `nsswitch.conf` asks `files` first for `passwd`, with the default action (found:
/// the answer).
pub(crate) fn files_first(nsswitch: &str) -> bool {
    let line = nsswitch
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter_map(|l| l.strip_prefix("passwd:"))
        .next_back();
    let Some(sources) = line else {
        // No passwd line: glibc's default is "files" (then others on some systems): ask NSS.
        return false;
    };
    let mut words = sources.split_whitespace();
    words.next() == Some("files") && !words.next().is_some_and(|w| w.starts_with('['))
}

/// Each name's first line, as nss_files reads the file: leading blanks skipped, empty and
/// `#` lines skipped, seven `:`-separated fields with decimal uid and gid; any other line with
/// a name (or a `+`/`-` line) makes that name [`Entry::Unsure`] if it comes first.
pub(crate) fn index(bytes: &[u8]) -> HashMap<String, Entry> {
    let mut by_name = HashMap::new();
    for line in bytes.split(|&b| b == b'\n') {
        let line = match line.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(start) => &line[start..],
            None => continue,
        };
        if line.first() == Some(&b'#') {
            continue;
        }
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let fields: Vec<&str> = line.split(':').collect();
        let name = fields[0];
        if validate_name(name).is_err() {
            // Not a name a login can ask for.
            continue;
        }
        let number = |s: &str| {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u32>().ok())
                .flatten()
        };
        // A shell with a colon is fine for NSS (the rest of the line), not for this parser.
        // `+name` and `-name` lines have their own rules (NIS compat, optional numbers).
        let entry = match fields.as_slice() {
            _ if name.starts_with(['+', '-']) => Entry::Unsure,
            [_, _, uid, gid, _, _, _] => match (number(uid), number(gid)) {
                (Some(uid), Some(gid)) => Entry::User { uid, gid },
                _ => Entry::Unsure,
            },
            _ => Entry::Unsure,
        };
        by_name.entry(name.to_string()).or_insert(entry);
    }
    by_name
}

impl Accounts for FilesFirst {
    fn user_by_name(&self, name: &str) -> Option<Account> {
        Nss.user_by_name(name)
    }

    fn user_by_name_without_groups(&self, name: &str) -> Option<Account> {
        self.account(name, true)
            .or_else(|| Nss.user_by_name_without_groups(name))
    }

    /// From the index only, and only if it is up to date (reading the files could wait).
    fn user_by_name_without_groups_now(&self, name: &str) -> Option<Account> {
        self.account(name, false)
    }

    fn user_by_uid(&self, uid: u32) -> Option<Account> {
        Nss.user_by_uid(uid)
    }

    fn group_by_name(&self, name: &str) -> Option<u32> {
        Nss.group_by_name(name)
    }

    fn group_members(&self, name: &str) -> Option<(u32, Vec<String>)> {
        Nss.group_members(name)
    }

    fn enumerate_users(&self, limit: usize) -> Enumerated {
        Nss.enumerate_users(limit)
    }

    fn uid_min(&self) -> u32 {
        Nss.uid_min()
    }

    fn name_of_uid(&self, uid: u32) -> Option<String> {
        Nss.name_of_uid(uid)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn nsswitch_files_first_only_with_the_default_action() {
        assert!(files_first("passwd: files systemd\ngroup: files\n"));
        assert!(files_first("# c\npasswd:\tfiles\n"));
        assert!(files_first(
            "passwd: ldap\npasswd: files ldap # the last line counts\n"
        ));
        assert!(!files_first("passwd: systemd files\n"));
        assert!(!files_first("passwd: compat\n"));
        assert!(!files_first("passwd: files [SUCCESS=continue] ldap\n"));
        assert!(!files_first("group: files\n"));
        assert!(!files_first("#passwd: files\n"));
    }

    #[test]
    fn the_first_line_of_a_name_decides_and_odd_lines_go_to_nss() {
        let i = index(
            b"root:x:0:0:root:/root:/bin/bash\n\
              \n# alice:x:1:1::/:/bin/sh\n\
              \x20 alice:x:1000:100:Alice:/home/alice:/bin/sh\n\
              alice:x:2000:200::/:/bin/sh\n\
              bob:x::100::/:/bin/sh\n\
              bob:x:1001:100::/:/bin/sh\n\
              carol:x:1002:100\n\
              dave:x:4294967296:1::/:/bin/sh\n\
              +erin:x:1003:100::/:/bin/sh\n\
              frank:x:1004:100::/:/bin/sh",
        );
        assert_eq!(i["root"], Entry::User { uid: 0, gid: 0 });
        assert_eq!(
            i["alice"],
            Entry::User {
                uid: 1000,
                gid: 100
            }
        );
        assert_eq!(i["bob"], Entry::Unsure, "a bad first line: NSS decides");
        assert_eq!(i["carol"], Entry::Unsure);
        assert_eq!(i["dave"], Entry::Unsure);
        assert_eq!(i["+erin"], Entry::Unsure);
        assert_eq!(
            i["frank"],
            Entry::User {
                uid: 1004,
                gid: 100
            }
        );
    }

    #[test]
    fn a_file_with_nul_bytes_or_bad_utf8_is_left_to_nss() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        let nsswitch = dir.path().join("nsswitch.conf");
        std::fs::write(&nsswitch, "passwd: files\n").unwrap();
        // NSS would answer zed's first line (uid 5000) for both.
        for first in [
            &b"zed\0junk:x:5000:5000::/:/bin/sh\n"[..],
            b"zed:x:5000:5000:\xff::/bin/sh\n",
        ] {
            let mut text = first.to_vec();
            text.extend_from_slice(b"zed:x:6000:6000::/:/bin/sh\n");
            std::fs::write(&passwd, &text).unwrap();
            let f = FilesFirst::at(&passwd, &nsswitch);
            assert_eq!(f.build(stamp(&passwd)), None);
        }
    }

    #[test]
    fn a_change_of_either_file_is_seen_and_other_sources_go_to_nss() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        let nsswitch = dir.path().join("nsswitch.conf");
        std::fs::write(&nsswitch, "passwd: files\n").unwrap();
        std::fs::write(&passwd, "zed:x:5000:5000::/:/bin/sh\n").unwrap();
        let f = FilesFirst::at(&passwd, &nsswitch);
        assert_eq!(
            f.user_by_name_without_groups_now("zed"),
            None,
            "not read yet"
        );
        let zed = f.user_by_name_without_groups("zed").expect("zed");
        assert_eq!(f.user_by_name_without_groups_now("zed"), Some(zed.clone()));
        assert_eq!((zed.uid, zed.gids.as_slice()), (5000, &[5000][..]));
        std::fs::write(&passwd, "zed:x:5001:5000::/:/bin/sh\nxy:x:1:1::/:/bin/sh\n").unwrap();
        assert_eq!(
            f.user_by_name_without_groups_now("zed"),
            None,
            "changed: not at hand"
        );
        assert_eq!(
            f.user_by_name_without_groups("zed").map(|a| a.uid),
            Some(5001)
        );
        assert_eq!(
            f.user_by_name_without_groups_now("xy").map(|a| a.uid),
            Some(1)
        );
        // Not files first: NSS answers (it has no zed).
        std::fs::write(&nsswitch, "passwd: sss files\n").unwrap();
        assert_eq!(f.user_by_name_without_groups("zed"), None);
        // Not in the file: NSS answers (root is in the system's).
        std::fs::write(&nsswitch, "passwd: files\n").unwrap();
        assert_eq!(
            f.user_by_name_without_groups("root").map(|a| a.uid),
            Some(0)
        );
    }
}
