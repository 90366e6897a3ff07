//! Opening a file that a user may control, as root, without trusting its path.
//!
//! The imports read `~USER/.google_authenticator` and `~USER/.config/Yubico/u2f_keys` as root.
//! A user can put anything at those paths: a symlink to `/etc/shadow` or `/dev/zero`, a FIFO
//! that blocks the reader forever, a file that grows while it is read (the pam_oath
//! CVE-2024-47191 class). So the file is opened with `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC`
//! (a symlink as the last component is refused, a FIFO does not block the open), and every
//! check is made on the opened descriptor (`fstat`), never on the path: a regular file with
//! one name only, owned by the expected user or by root, not writable by its group or by
//! everyone, at most `max_len` bytes; the read itself is bounded too, since the size can change
//! after `fstat`. One name, because a hard link is another file's inode under the user's path:
//! where `fs.protected_hardlinks` is off, a user can link `/etc/shadow` (root's, so "owned by
//! root") into their home.
#![forbid(unsafe_code)]

use std::fmt;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Who may own the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedOwner<'a> {
    /// The user being imported, or root.
    RootOr {
        /// The user's uid.
        uid: u32,
        /// The user's name (for messages).
        name: &'a str,
    },
    /// Anyone; the caller decides what the owner may bring (see [`UserFile::owner_uid`]).
    Anyone,
}

/// A file read by [`read_user_file`].
pub struct UserFile {
    /// Its contents (zeroized on drop: it may hold a secret).
    pub text: Zeroizing<String>,
    /// The uid that owns it, from `fstat` of the descriptor that was read.
    pub owner_uid: u32,
}

impl fmt::Debug for UserFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserFile")
            .field("len", &self.text.len())
            .field("owner_uid", &self.owner_uid)
            .finish_non_exhaustive()
    }
}

/// Why a file was refused.
#[derive(Debug)]
pub enum Reason {
    /// The last component is a symbolic link (not followed).
    Symlink,
    /// `open` failed otherwise (missing, no permission, ...).
    Open(std::io::Error),
    /// `fstat` or `read` failed.
    Io(std::io::Error),
    /// Not a regular file: what it is instead.
    NotRegular(&'static str),
    /// More than one name (hard link) refers to the file.
    HardLinked {
        /// How many.
        links: u64,
    },
    /// Owned by someone else.
    Owner {
        /// The owner's uid.
        uid: u32,
        /// The owner's name, if NSS knows it.
        name: Option<String>,
        /// The user who (besides root) may own it.
        expected: String,
    },
    /// Writable by its group or by everyone.
    Writable {
        /// The permission bits.
        mode: u32,
    },
    /// Larger than allowed.
    TooLarge {
        /// The limit, in bytes.
        max: u64,
    },
    /// Not UTF-8 text.
    NotText,
}

/// A refused file: its path and the reason. Never quotes the file's contents.
#[derive(Debug)]
pub struct Refused {
    /// The path as given.
    pub path: PathBuf,
    /// Why.
    pub reason: Reason,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Symlink => f.write_str(
                "is a symbolic link, which is not followed (name the file itself, if it is \
                 trustworthy)",
            ),
            Reason::Open(e) => write!(f, "cannot open: {e}"),
            Reason::Io(e) => write!(f, "cannot read: {e}"),
            Reason::NotRegular(kind) => write!(f, "is {kind}, not a regular file"),
            Reason::HardLinked { links } => write!(
                f,
                "has {links} hard links, so it may be another file (such as /etc/shadow) linked \
                 under this name: copy it to a file of its own and import that"
            ),
            Reason::Owner {
                uid,
                name,
                expected,
            } => {
                let owner = match name {
                    Some(n) => format!("{n} (uid {uid})"),
                    None => format!("uid {uid}"),
                };
                write!(
                    f,
                    "is owned by {owner}, not by {expected} or root (another user's file \
                     cannot be imported for {expected})"
                )
            }
            Reason::Writable { mode } => write!(
                f,
                "is writable by its group or by everyone (mode {:04o}): `chmod go-w` it \
                 first",
                mode & 0o7777
            ),
            Reason::TooLarge { max } => write!(f, "is larger than {} bytes", max),
            Reason::NotText => f.write_str("is not UTF-8 text"),
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", crate::out::path(&self.path), self.reason)
    }
}

impl std::error::Error for Refused {}

/// The account name of `uid` through NSS, if it has one.
pub fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// Opens `path` without following a final symlink and without blocking, checks the opened
/// descriptor (regular file, owner, not group/world-writable, size), and reads at most
/// `max_len` bytes of UTF-8 from it.
pub fn read_user_file(
    path: &Path,
    owner: ExpectedOwner<'_>,
    max_len: u64,
) -> Result<UserFile, Refused> {
    let refuse = |reason| Refused {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            // O_NOFOLLOW: a symlink as the last component fails with ELOOP.
            if e.raw_os_error() == Some(libc::ELOOP) {
                refuse(Reason::Symlink)
            } else {
                refuse(Reason::Open(e))
            }
        })?;
    // fstat on the descriptor: what was opened, not what the path names now.
    let meta = file.metadata().map_err(|e| refuse(Reason::Io(e)))?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO (named pipe)"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(refuse(Reason::NotRegular(what)));
    }
    if meta.nlink() > 1 {
        return Err(refuse(Reason::HardLinked {
            links: meta.nlink(),
        }));
    }
    let uid = meta.uid();
    if let ExpectedOwner::RootOr {
        uid: expected,
        name,
    } = owner
        && uid != 0
        && uid != expected
    {
        return Err(refuse(Reason::Owner {
            uid,
            name: user_name(uid),
            expected: name.to_string(),
        }));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(refuse(Reason::Writable { mode: meta.mode() }));
    }
    if meta.size() > max_len {
        return Err(refuse(Reason::TooLarge { max: max_len }));
    }
    let bytes = read_bounded(file, max_len).map_err(|e| refuse(Reason::Io(e)))?;
    let Some(bytes) = bytes else {
        return Err(refuse(Reason::TooLarge { max: max_len }));
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => Zeroizing::new(t),
        Err(e) => {
            // The bytes may be a secret: wipe them before refusing.
            drop(Zeroizing::new(e.into_bytes()));
            return Err(refuse(Reason::NotText));
        }
    };
    Ok(UserFile {
        text,
        owner_uid: uid,
    })
}

/// Reads at most `max_len` bytes; `None` when there is more (the file grew past the limit).
/// The buffer is allocated once, so no copy of the contents is left behind by a reallocation.
fn read_bounded(mut reader: impl Read, max_len: u64) -> std::io::Result<Option<Vec<u8>>> {
    let cap = usize::try_from(max_len)
        .ok()
        .and_then(|n| n.checked_add(1))
        .ok_or_else(|| std::io::Error::other("size limit too large"))?;
    let mut buf = Zeroizing::new(vec![0u8; cap]);
    let mut filled = 0;
    while filled < cap {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if filled > usize::try_from(max_len).unwrap_or(usize::MAX) {
        return Ok(None);
    }
    buf.truncate(filled);
    Ok(Some(std::mem::take(&mut *buf)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::mpsc;
    use std::time::Duration;

    const MAX: u64 = 64 * 1024;
    /// A uid no test account has.
    const STRANGER: u32 = 54_321;

    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    /// The expected owner in tests: the uid running the test.
    fn mine() -> ExpectedOwner<'static> {
        ExpectedOwner::RootOr {
            uid: me(),
            name: "me",
        }
    }

    /// Runs `read_user_file` on another thread and fails if it takes over 5 seconds (a FIFO
    /// must not hang the test).
    fn read_quickly(path: &Path, owner: ExpectedOwner<'static>) -> Result<UserFile, Refused> {
        let (tx, rx) = mpsc::channel();
        let p = path.to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(read_user_file(&p, owner, MAX));
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("read_user_file returned within 5 seconds")
    }

    fn refused(path: &Path) -> Refused {
        read_quickly(path, mine()).expect_err("refused")
    }

    fn write(path: &Path, text: &[u8], mode: u32) {
        std::fs::write(path, text).expect("write");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn a_plain_file_of_the_user_is_read() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("f");
        write(&p, b"SECRET\n\" TOTP_AUTH\n", 0o600);
        let f = read_quickly(&p, mine()).expect("read");
        assert_eq!(f.text.as_str(), "SECRET\n\" TOTP_AUTH\n");
        assert_eq!(f.owner_uid, me());
        assert!(!format!("{f:?}").contains("SECRET"));
        // Read-only for everyone is fine; exactly the limit is fine.
        write(&p, &vec![b'a'; MAX as usize], 0o444);
        assert_eq!(
            read_quickly(&p, mine()).expect("read").text.len(),
            64 * 1024
        );
    }

    #[test]
    fn a_symlink_is_not_followed_even_to_a_good_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let target = dir.path().join("target");
        write(&target, b"ok\n", 0o600);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let e = refused(&link);
        assert!(matches!(e.reason, Reason::Symlink), "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(
            e.to_string().starts_with(&link.display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn a_symlink_to_dev_zero_or_etc_shadow_is_refused_without_reading() {
        let dir = tempfile::tempdir().expect("tmp");
        for target in ["/dev/zero", "/etc/shadow"] {
            let link = dir.path().join("l");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(target, &link).expect("symlink");
            let e = refused(&link);
            assert!(matches!(e.reason, Reason::Symlink), "{target}: {e}");
        }
        // /dev/zero named directly: a character device, refused without reading.
        let e = refused(Path::new("/dev/zero"));
        assert!(
            matches!(e.reason, Reason::NotRegular("a character device")),
            "{e}"
        );
    }

    #[test]
    fn a_fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let e = refused(&fifo);
        assert!(
            matches!(e.reason, Reason::NotRegular(k) if k.contains("FIFO")),
            "{e}"
        );
        assert!(e.to_string().contains("FIFO"), "{e}");
    }

    #[test]
    fn a_file_with_more_than_one_name_is_refused_under_each() {
        let dir = tempfile::tempdir().expect("tmp");
        let original = dir.path().join("original");
        write(&original, b"x\n", 0o600);
        let link = dir.path().join("link");
        std::fs::hard_link(&original, &link).expect("link");
        for p in [&original, &link] {
            let e = refused(p);
            assert!(matches!(e.reason, Reason::HardLinked { links: 2 }), "{e}");
            assert!(e.to_string().contains("has 2 hard links"), "{e}");
        }
        // One name again: read.
        std::fs::remove_file(&original).expect("rm");
        assert_eq!(
            read_quickly(&link, mine()).expect("read").text.as_str(),
            "x\n"
        );
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let e = refused(dir.path());
        assert!(matches!(e.reason, Reason::NotRegular("a directory")), "{e}");
    }

    #[test]
    fn a_group_or_world_writable_file_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("f");
        for mode in [0o666, 0o620, 0o602] {
            write(&p, b"x\n", mode);
            let e = refused(&p);
            assert!(matches!(e.reason, Reason::Writable { .. }), "{mode:o}: {e}");
            assert!(e.to_string().contains("chmod go-w"), "{e}");
        }
    }

    #[test]
    fn a_file_of_another_user_is_refused_and_root_or_anyone_rules_differ() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("f");
        write(&p, b"x\n", 0o644);
        // As root the file goes to a stranger; otherwise it is ours and the stranger is expected.
        let (owner, expected) = if me() == 0 {
            std::os::unix::fs::chown(&p, Some(STRANGER), None).expect("chown");
            (STRANGER, STRANGER + 1)
        } else {
            (me(), STRANGER)
        };
        let e = read_quickly(
            &p,
            ExpectedOwner::RootOr {
                uid: expected,
                name: "someone",
            },
        )
        .expect_err("refused");
        assert!(
            matches!(e.reason, Reason::Owner { uid, .. } if uid == owner),
            "{e}"
        );
        assert!(e.to_string().contains("not by someone or root"), "{e}");
        // `Anyone` reads it and reports the owner, for the caller to decide.
        let f = read_quickly(&p, ExpectedOwner::Anyone).expect("read");
        assert_eq!(f.owner_uid, owner);
        // The expected owner reads it too.
        let f = read_quickly(
            &p,
            ExpectedOwner::RootOr {
                uid: owner,
                name: "owner",
            },
        )
        .expect("read");
        assert_eq!(f.owner_uid, owner);
    }

    #[test]
    fn a_root_owned_file_is_accepted_for_any_user() {
        if me() != 0 {
            return; // only root can make a root-owned file
        }
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("f");
        write(&p, b"x\n", 0o600);
        let f = read_quickly(
            &p,
            ExpectedOwner::RootOr {
                uid: STRANGER,
                name: "someone",
            },
        )
        .expect("read");
        assert_eq!(f.owner_uid, 0);
    }

    #[test]
    fn an_oversize_or_binary_file_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("f");
        write(&p, &vec![b'a'; MAX as usize + 1], 0o600);
        let e = refused(&p);
        assert!(matches!(e.reason, Reason::TooLarge { max: MAX }), "{e}");
        write(&p, b"\xff\xfe secret", 0o600);
        let e = refused(&p);
        assert!(matches!(e.reason, Reason::NotText), "{e}");
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let e = refused(Path::new("/nonexistent/twofactor-test"));
        assert!(matches!(e.reason, Reason::Open(_)), "{e}");
        assert!(
            e.to_string().starts_with("/nonexistent/twofactor-test: "),
            "{e}"
        );
    }

    #[test]
    fn the_read_is_bounded_even_when_the_source_never_ends() {
        // A file that grows after fstat looks like this to the reader.
        let r = read_bounded(std::io::repeat(0), 1000).expect("read");
        assert!(r.is_none());
        let r = read_bounded(&b"abc"[..], 3).expect("read");
        assert_eq!(r.as_deref(), Some(&b"abc"[..]));
        let r = read_bounded(&b"abcd"[..], 3).expect("read");
        assert!(r.is_none());
    }
}
