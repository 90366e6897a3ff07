//! What outlives the daemon: the offline snapshot the PAM module reads while the daemon is
//! unreachable (`twofactor_bus::offline`), and the copy of the last policy the daemon accepted,
//! which it serves (loudly) when the file on disk is refused at start.
#![forbid(unsafe_code)]

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, RwLock};
use std::time::Duration;

use twofactor_bus::BusError;

use super::Engine;

/// How often the snapshot is rewritten even without a change, so that a snapshot the module
/// stopped trusting (its time predates the boot after a clock step) heals.
const REWRITE_EVERY: Duration = Duration::from_secs(3600);

/// The engine's part in both: where they go, whether the snapshot is out of date, and why the
/// policy in force is not the file on disk (if it is not).
#[derive(Default)]
pub(crate) struct Persisted {
    snapshot: Mutex<Option<PathBuf>>,
    last_good: Mutex<Option<PathBuf>>,
    dirty: Mutex<bool>,
    wake: Condvar,
    /// One writer at a time (they share the temporary file's name).
    writing: Mutex<()>,
    problem: RwLock<Option<String>>,
}

/// Writes `bytes` to `path` atomically: a new file (mode 0600) beside it, synced, renamed over
/// it, and the directory synced.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

impl Engine {
    /// Keeps the offline snapshot at `path` (written by [`Engine::run_offline_writer`]).
    pub fn with_offline_snapshot(self, path: PathBuf) -> Engine {
        if let Ok(mut p) = self.persisted.snapshot.lock() {
            *p = Some(path);
        }
        self.offline_changed();
        self
    }

    /// Keeps a copy of each policy file it accepts at `path`.
    pub fn with_last_good_copy(self, path: PathBuf) -> Engine {
        if let Ok(mut p) = self.persisted.last_good.lock() {
            *p = Some(path);
        }
        self
    }

    /// Why the policy in force is not the policy file (`None`: it is).
    pub fn policy_problem(&self) -> Option<String> {
        match self.persisted.problem.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Records why the policy in force is not the policy file (`None`: it is again).
    pub fn set_policy_problem(&self, problem: Option<String>) {
        match self.persisted.problem.write() {
            Ok(mut p) => *p = problem,
            Err(poisoned) => *poisoned.into_inner() = problem,
        }
    }

    /// Saves `text`, the policy file just accepted, as the last good copy.
    pub fn save_last_good(&self, text: &str) {
        let path = self.persisted.last_good.lock().ok().and_then(|p| p.clone());
        if let Some(path) = path
            && let Err(e) = write_private(&path, text.as_bytes())
        {
            crate::log::error(&format!(
                "cannot keep a copy of the accepted policy in {}: {e}",
                path.display()
            ));
        }
    }

    /// Forgets the last good copy (the built-in policy is in force: no file to fall back to).
    pub fn forget_last_good(&self) {
        let path = self.persisted.last_good.lock().ok().and_then(|p| p.clone());
        if let Some(path) = path {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Something the snapshot reflects changed: the writer rewrites it.
    pub(crate) fn offline_changed(&self) {
        if let Ok(mut d) = self.persisted.dirty.lock() {
            *d = true;
            self.persisted.wake.notify_all();
        }
    }

    /// Called before a change that can make the daemon ask a user it did not ask before (a
    /// factor, starter codes, an admin's requirement) is committed: the snapshot is removed
    /// first, so that a daemon that dies between the commit and the rewrite leaves no snapshot
    /// letting that user through with the password alone (the module then fails closed). The
    /// change's own flush writes a new one.
    ///
    /// Callers hold the store's lock: the write lock is not taken here (the writer takes it
    /// before the store's, so taking it would invert the order). A write in flight that read
    /// the state before this change may still put an old snapshot back; the change marks the
    /// snapshot dirty, so the writer replaces it again at once.
    pub(crate) fn invalidate_offline(&self) {
        if let Some(path) = self.persisted.snapshot.lock().ok().and_then(|p| p.clone()) {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => crate::log::error(&format!(
                    "cannot remove the offline snapshot {} before a change: {e}",
                    path.display()
                )),
            }
        }
        self.offline_changed();
    }

    /// Events after which who is asked may have changed (logins and lockouts change nothing).
    pub(crate) fn changes_offline(event: &str) -> bool {
        event == "enroll"
            || event == "disable"
            || event == "factor-removed"
            || event.starts_with("admin-")
    }

    /// Writes the snapshot now. On failure the old snapshot is removed (a stale one could let
    /// through a user who has enrolled since), so the module fails closed.
    pub fn write_offline_snapshot(&self) -> Result<(), String> {
        let Some(path) = self.persisted.snapshot.lock().ok().and_then(|p| p.clone()) else {
            return Ok(());
        };
        let text = {
            let store = self.store().map_err(|e| e.message())?;
            let mut snap = self.policy().offline_rules();
            snap.uids = store
                .offline_uids()
                .map_err(|e| e.to_string())?
                .into_iter()
                .collect();
            snap.render()
        };
        write_private(&path, text.as_bytes()).map_err(|e| {
            let _ = std::fs::remove_file(&path);
            format!(
                "cannot write the offline snapshot {}: {e}; removed it (logins fail closed while \
                 the daemon is down)",
                path.display()
            )
        })
    }

    /// Writes the snapshot if something changed since it was last written. The bus methods
    /// that change who is asked call this before they reply, so the snapshot is current when
    /// the caller hears "done".
    pub fn flush_offline(&self) {
        // The write lock first: a write in progress (the background writer took the change)
        // must end before this returns, or a caller would be told "done" (or the daemon would
        // exit) with the old snapshot still in place. Uncontended, it is cheap (every login
        // answer comes through here).
        let Ok(_writing) = self.persisted.writing.lock() else {
            return;
        };
        match self.persisted.dirty.lock() {
            Ok(mut d) if *d => *d = false,
            _ => return,
        }
        if let Err(e) = self.write_offline_snapshot() {
            crate::log::error(&e);
        }
    }

    /// Writes the snapshot whenever it is out of date (a change no bus method flushed), and
    /// hourly; runs forever.
    pub fn run_offline_writer(&self) {
        loop {
            let Ok(dirty) = self.persisted.dirty.lock() else {
                return;
            };
            match self
                .persisted
                .wake
                .wait_timeout_while(dirty, REWRITE_EVERY, |d| !*d)
            {
                Ok((mut d, _)) => *d = true,
                Err(_) => return,
            }
            self.flush_offline();
        }
    }

    /// `Enrollment.PolicyStatus`: the policy in force, and why it is not the file (empty: it
    /// is).
    pub fn policy_status(&self, caller: &super::Caller) -> Result<(String, String), BusError> {
        let account = self.target(caller, "")?;
        self.authorize("Enrollment", "PolicyStatus", caller, Some(&account))?;
        Ok((
            self.policy().path.display().to_string(),
            self.policy_problem().unwrap_or_default(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_files_are_replaced_whole_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        write_private(&p, b"one").expect("write");
        write_private(&p, b"two").expect("rewrite");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    }
}
