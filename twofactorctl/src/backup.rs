//! `twofactorctl admin backup FILE`: writes the snapshot the daemon hands over (a descriptor of
//! a private SQLite file) to FILE, mode 0600, without following a symlink. Without `--force` an
//! existing FILE is refused (created with O_EXCL); with it, the copy goes to a new file beside
//! FILE and replaces it by rename, so FILE is never written through, never half written.
#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::failure::ErrorCode;
use crate::{Failure, out};

/// The first 16 bytes of every SQLite 3 database.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Refuses FILE before the daemon is asked: a symlink or a non-regular file always, an
/// existing file unless `force`.
pub fn refuse_existing(path: &Path, force: bool) -> Result<(), Failure> {
    let shown = out::path(path);
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(Failure::new(
            ErrorCode::InvalidInput,
            format!("{shown} is a symbolic link: refusing to write a backup through it"),
        )),
        Ok(m) if !m.file_type().is_file() => Err(Failure::new(
            ErrorCode::InvalidInput,
            format!("{shown} exists and is not a regular file"),
        )),
        Ok(_) if !force => Err(Failure::new(
            ErrorCode::InvalidInput,
            format!("{shown} exists: give --force to replace it"),
        )),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Failure::new(
            ErrorCode::InvalidInput,
            format!("{shown}: {e}"),
        )),
    }
}

/// Copies the snapshot to `path`; returns the bytes written.
pub fn write(
    path: &Path,
    snapshot: std::os::fd::OwnedFd,
    size: u64,
    force: bool,
) -> Result<u64, Failure> {
    let shown = out::path(path);
    let mut source = File::from(snapshot);
    check_snapshot(&mut source)?;
    let target = if force {
        temp_beside(path)?
    } else {
        path.to_path_buf()
    };
    let mut dest = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&target)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Failure::new(
                    ErrorCode::InvalidInput,
                    format!("{shown} exists: give --force to replace it"),
                )
            } else {
                Failure::new(
                    ErrorCode::InvalidInput,
                    format!("cannot create {}: {e}", out::path(&target)),
                )
            }
        })?;
    let copied = (|| {
        // 0600 whatever the umask allowed or a default ACL added.
        dest.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        let n = std::io::copy(&mut source, &mut dest)?;
        dest.sync_all()?;
        Ok::<u64, std::io::Error>(n)
    })();
    let result = match copied {
        Ok(n) if n == size => Ok(n),
        Ok(n) => Err(Failure::new(
            ErrorCode::InvalidInput,
            format!("the snapshot was cut short ({n} of {size} bytes); nothing was kept"),
        )),
        Err(e) => Err(Failure::new(
            ErrorCode::InvalidInput,
            format!("cannot write {shown}: {e}"),
        )),
    }
    .and_then(|n| {
        if force {
            // Checked again just before: rename replaces a symlink itself, never its target,
            // but a symlink there now is not what the admin asked to replace.
            refuse_existing(path, true)?;
            std::fs::rename(&target, path).map_err(|e| {
                Failure::new(
                    ErrorCode::InvalidInput,
                    format!("cannot replace {shown}: {e}"),
                )
            })?;
        }
        Ok(n)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&target);
    } else if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    result
}

/// The daemon's descriptor must be a regular file holding an SQLite database.
fn check_snapshot(source: &mut File) -> Result<(), Failure> {
    let bad = |why: String| {
        Failure::new(
            ErrorCode::InvalidInput,
            format!("the daemon's snapshot is unusable: {why}"),
        )
    };
    let meta = source.metadata().map_err(|e| bad(e.to_string()))?;
    if !meta.file_type().is_file() {
        return Err(bad("not a regular file".into()));
    }
    let mut head = [0u8; 16];
    source
        .read_exact(&mut head)
        .map_err(|e| bad(e.to_string()))?;
    if &head != SQLITE_MAGIC {
        return Err(bad("not an SQLite database".into()));
    }
    source
        .seek(SeekFrom::Start(0))
        .map_err(|e| bad(e.to_string()))?;
    Ok(())
}

/// A name for the new copy beside `path` (same directory, so the rename is atomic).
fn temp_beside(path: &Path) -> Result<PathBuf, Failure> {
    let name = path.file_name().ok_or_else(|| {
        Failure::new(
            ErrorCode::Usage,
            format!("{} names no file", out::path(path)),
        )
    })?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".tmp-{}", std::process::id()));
    Ok(path.with_file_name(tmp))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn snapshot(dir: &Path, body: &[u8]) -> std::os::fd::OwnedFd {
        let p = dir.join("snap");
        std::fs::write(&p, body).unwrap();
        let f = File::open(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        f.into()
    }

    fn db() -> Vec<u8> {
        let mut v = SQLITE_MAGIC.to_vec();
        v.extend_from_slice(&[7; 100]);
        v
    }

    #[test]
    fn writes_0600_and_refuses_to_overwrite_without_force() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("b.sqlite3");
        let body = db();
        let n = write(&file, snapshot(d.path(), &body), body.len() as u64, false)
            .map_err(|f| f.message)
            .unwrap();
        assert_eq!(n, body.len() as u64);
        assert_eq!(std::fs::read(&file).unwrap(), body);
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        assert!(refuse_existing(&file, false).is_err());
        assert!(write(&file, snapshot(d.path(), &body), body.len() as u64, false).is_err());
        // --force replaces it, atomically, still 0600.
        let mut other = db();
        other.push(1);
        refuse_existing(&file, true).ok().unwrap();
        write(&file, snapshot(d.path(), &other), other.len() as u64, true)
            .map_err(|f| f.message)
            .unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), other);
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn symlinks_and_odd_snapshots_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let body = db();
        for force in [false, true] {
            assert!(refuse_existing(&link, force).is_err());
        }
        // Even past the early check: O_NOFOLLOW | O_EXCL.
        assert!(write(&link, snapshot(d.path(), &body), body.len() as u64, false).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        let dangling = d.path().join("dangling");
        std::os::unix::fs::symlink(d.path().join("nowhere"), &dangling).unwrap();
        assert!(
            write(
                &dangling,
                snapshot(d.path(), &body),
                body.len() as u64,
                false
            )
            .is_err()
        );
        assert!(!d.path().join("nowhere").exists());
        // Not a database; a short copy.
        let file = d.path().join("x");
        assert!(write(&file, snapshot(d.path(), b"hello"), 5, false).is_err());
        assert!(
            write(
                &file,
                snapshot(d.path(), &body),
                1 + body.len() as u64,
                false
            )
            .is_err()
        );
        assert!(!file.exists());
    }
}
