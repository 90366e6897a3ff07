//! `twofactord restore`: puts a backup (made by `twofactorctl admin backup`) back as the state,
//! with the daemon stopped.
//!
//! The backup is read through one descriptor opened without following a symlink, copied into a
//! private file in the state directory, and checked there (an SQLite database with this
//! daemon's schema, a version it understands). Only then is the current state moved aside as
//! `state.sqlite3.before-restore` and the copy put in its place, mode 0600, owned by the state
//! directory's owner. The state directory's lock is held throughout: a running daemon is
//! refused, and a daemon started meanwhile (D-Bus activation) refuses to start.
#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::store::{self, AuditRecord, BackupInfo, STATE_FILE};

/// The name the previous state is kept under.
pub const BEFORE_RESTORE: &str = "state.sqlite3.before-restore";

/// The first 16 bytes of every SQLite 3 database.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The backup's schema version and user count.
    pub info: BackupInfo,
    /// Where the previous state went (`None`: there was none).
    pub previous: Option<PathBuf>,
}

/// Restores `backup` into `state_dir`; `actor` names who did it in the audit log.
pub fn restore(state_dir: &Path, backup: &Path, actor: &str, now: i64) -> Result<Restored, String> {
    let dir_meta = std::fs::symlink_metadata(state_dir).map_err(|e| {
        format!(
            "{}: {e} (start twofactord once to create it, or: install -d -m 0700 -o _twofactord {})",
            state_dir.display(),
            state_dir.display()
        )
    })?;
    if !dir_meta.is_dir() {
        return Err(format!("{} is not a directory", state_dir.display()));
    }
    if dir_meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{} is accessible by other users; run: chmod 700 {}",
            state_dir.display(),
            state_dir.display()
        ));
    }
    let owner = (dir_meta.uid(), dir_meta.gid());
    // Held until the end: no daemon may start on a half-restored directory.
    let lock = store::lock_file_in(state_dir)
        .map_err(|e| format!("{e}; stop it first (systemctl stop twofactord), then restore"))?;
    own(&lock, owner)?;

    let mut source = open_backup(backup, owner.0)?;
    let (tmp, mut copy) = private_file(state_dir)?;
    let result = (|| {
        own(&copy, owner)?;
        std::io::copy(&mut source, &mut copy)
            .and_then(|_| copy.sync_all())
            .map_err(|e| format!("cannot copy {}: {e}", backup.display()))?;
        drop(copy);
        let record = AuditRecord {
            time: now,
            uid: 0,
            user: actor.to_string(),
            event: "state-restore".into(),
            result: "success".into(),
            service: String::new(),
            rhost: String::new(),
            actor: actor.to_string(),
            detail: format!("state restored from {}", backup.display()),
        };
        let info = store::check_restorable(&tmp, &record)
            .map_err(|e| format!("{}: {e}; nothing was changed", backup.display()))?;
        let previous = move_current_aside(state_dir)?;
        let target = state_dir.join(STATE_FILE);
        if let Err(e) = std::fs::rename(&tmp, &target) {
            // Put the previous state back where the daemon looks for it.
            if let Some(p) = &previous {
                let _ = std::fs::rename(p, &target);
            }
            return Err(format!("cannot put the backup in place: {e}"));
        }
        sync_dir(state_dir);
        Ok(Restored { info, previous })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    drop(lock);
    result
}

/// Opens the backup without following a symlink or blocking on a FIFO, and checks the open
/// descriptor: a regular file, owned by root, the caller or the state's owner, not writable by
/// others (a backup holds every secret: one that others could have edited could let them in),
/// starting like an SQLite database.
fn open_backup(path: &Path, state_owner: u32) -> Result<File, String> {
    let shown = path.display();
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                format!("{shown} is a symbolic link; give the file itself")
            } else {
                format!("{shown}: {e}")
            }
        })?;
    let meta = file.metadata().map_err(|e| format!("{shown}: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    let me = nix::unistd::geteuid().as_raw();
    if ![0, me, state_owner].contains(&meta.uid()) {
        return Err(format!(
            "{shown} is owned by uid {}, not by root or the state's owner: refusing a backup \
             someone else could have written",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{shown} is writable by other users (mode {:04o}): refusing it",
            meta.mode() & 0o7777
        ));
    }
    let mut head = [0u8; 16];
    let magic = file.read_exact(&mut head).map(|()| &head == SQLITE_MAGIC);
    if !matches!(magic, Ok(true)) {
        return Err(format!(
            "{shown} is not an SQLite database (not a twofactor backup); nothing was changed"
        ));
    }
    // The whole file is copied, header included.
    file.seek(SeekFrom::Start(0))
        .map_err(|e| format!("{shown}: {e}"))?;
    Ok(file)
}

/// A new private file in `dir`, for the copy.
fn private_file(dir: &Path) -> Result<(PathBuf, File), String> {
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| format!("no randomness: {e}"))?;
    let name: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join(format!(".restore-{name}.sqlite3"));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    Ok((path, file))
}

/// Gives `file` to the state directory's owner (a root restore for a daemon that runs as
/// `_twofactord`), mode 0600.
fn own(file: &File, (uid, gid): (u32, u32)) -> Result<(), String> {
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if (meta.uid(), meta.gid()) != (uid, gid) {
        std::os::unix::fs::fchown(file, Some(uid), Some(gid))
            .map_err(|e| format!("cannot give the restored state to uid {uid}: {e}"))?;
    }
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| e.to_string())
}

/// Moves the current state (with anything left in its write-ahead log) to
/// [`BEFORE_RESTORE`]; refuses to overwrite an earlier one.
fn move_current_aside(dir: &Path) -> Result<Option<PathBuf>, String> {
    let current = dir.join(STATE_FILE);
    let before = dir.join(BEFORE_RESTORE);
    let meta = match std::fs::symlink_metadata(&current) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", current.display())),
    };
    if !meta.file_type().is_file() {
        return Err(format!(
            "{} is not a regular file; nothing was changed",
            current.display()
        ));
    }
    if std::fs::symlink_metadata(&before).is_ok() {
        return Err(format!(
            "{} exists (an earlier restore): move it away first; nothing was changed",
            before.display()
        ));
    }
    let sidecars = ["-wal", "-shm"];
    if let Err(e) = store::checkpoint(&current) {
        // A damaged state (perhaps why it is being restored): its log goes with it, under the
        // names SQLite looks for next to the new name.
        crate::log::warn(&format!(
            "cannot fold the write-ahead log into {}: {e}; keeping it beside {}",
            current.display(),
            before.display()
        ));
        for s in sidecars {
            let from = PathBuf::from(format!("{}{s}", current.display()));
            if from.exists() {
                let to = PathBuf::from(format!("{}{s}", before.display()));
                std::fs::rename(&from, &to)
                    .map_err(|e| format!("cannot move {}: {e}", from.display()))?;
            }
        }
    }
    std::fs::rename(&current, &before)
        .map_err(|e| format!("cannot move {} aside: {e}", current.display()))?;
    // A log of the old state must never be applied to the new one.
    for s in sidecars {
        let _ = std::fs::remove_file(format!("{}{s}", current.display()));
    }
    Ok(Some(before))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
