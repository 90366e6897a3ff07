//! DEV ONLY: a software FIDO2 authenticator for twofactor's tests.
//!
//! It makes real credentials and signatures (ES256 on P-256 with DER signatures, Ed25519) over
//! real authenticatorData, so what it returns goes through the daemon's verifier unchanged.
//! Its state — credentials with their private keys, the signature counter, the PIN and the
//! knobs that make it misbehave — lives in a JSON file, so a test, the PAM module loaded by
//! libpam and the CLI in other processes all use the same key. Every operation reloads the
//! file under a lock (`FILE.lock`), acts, and writes it back atomically.
//!
//! Private keys sit in that file in clear: this crate must never be a dependency of a shipped
//! binary (`publish = false`; only tests and dev builds use it).
//!
//! ```no_run
//! use twofactor_softkey::{Algorithm, CounterMode, SoftKey};
//! let key = SoftKey::create("/tmp/key.json", Algorithm::Es256)?;
//! key.update(|s| s.counter_mode = CounterMode::Repeat)?;
//! # Ok::<(), twofactor_softkey::SoftKeyError>(())
//! ```
#![forbid(unsafe_code)]

mod authenticator;
mod state;

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

pub use state::{Algorithm, CounterMode, SoftCredential, SoftKeyState};

/// Why the soft key's file could not be used, or a knob not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SoftKeyError {
    /// Reading, writing or locking the state file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The state file is not a soft key's JSON.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// `create` on a file that exists.
    Exists(PathBuf),
    /// An unknown knob or a value it does not take.
    Knob(String),
}

impl std::fmt::Display for SoftKeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SoftKeyError::Io { path, message } => {
                write!(f, "soft key {}: {message}", path.display())
            }
            SoftKeyError::Corrupt { path, message } => {
                write!(f, "soft key {} is not valid: {message}", path.display())
            }
            SoftKeyError::Exists(path) => {
                write!(f, "soft key {} exists already", path.display())
            }
            SoftKeyError::Knob(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for SoftKeyError {}

/// A software authenticator whose state is the JSON file at its path.
///
/// Holds only the path: every read goes to the file, so several `SoftKey`s (in one process or
/// several) on one file behave as one key.
#[derive(Debug, Clone)]
pub struct SoftKey {
    path: PathBuf,
}

impl SoftKey {
    /// Makes a new key (random AAGUID, no credentials, counter 0, no PIN, all knobs off) that
    /// creates `algorithm` credentials, in a new file (mode 0600) at `path`.
    pub fn create(path: impl AsRef<Path>, algorithm: Algorithm) -> Result<SoftKey, SoftKeyError> {
        let path = path.as_ref().to_path_buf();
        let mut aaguid = [0u8; 16];
        getrandom::fill(&mut aaguid).map_err(|e| io_error(&path, "no randomness", e))?;
        let state = SoftKeyState::new(aaguid, algorithm);
        let json = state.to_json().map_err(|e| corrupt(&path, e))?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    SoftKeyError::Exists(path.clone())
                } else {
                    io_error(&path, "cannot create", e)
                }
            })?;
        file.write_all(json.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error(&path, "cannot write", e))?;
        Ok(SoftKey { path })
    }

    /// The key whose state is at `path` (checked to be readable and valid).
    pub fn open(path: impl AsRef<Path>) -> Result<SoftKey, SoftKeyError> {
        let key = SoftKey {
            path: path.as_ref().to_path_buf(),
        };
        key.state()?;
        Ok(key)
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state as the file has it now.
    pub fn state(&self) -> Result<SoftKeyState, SoftKeyError> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| io_error(&self.path, "cannot read", e))?;
        SoftKeyState::from_json(&text).map_err(|e| corrupt(&self.path, e))
    }

    /// Changes the state: under the lock, reloads it, applies `change`, and writes it back.
    /// This is how tests turn knobs: `key.update(|s| s.omit_up = true)`.
    pub fn update<T>(
        &self,
        change: impl FnOnce(&mut SoftKeyState) -> T,
    ) -> Result<T, SoftKeyError> {
        let _lock = self.lock()?;
        let mut state = self.state()?;
        let out = change(&mut state);
        self.write(&state)?;
        Ok(out)
    }

    /// Sets one knob by name from text, as the `softkey` CLI does; see
    /// [`SoftKeyState::set_knob`].
    pub fn set_knob(&self, knob: &str, value: &str) -> Result<(), SoftKeyError> {
        self.update(|s| s.set_knob(knob, value))?
    }

    /// An exclusive lock on `FILE.lock`, held for one read-change-write. Released on drop.
    fn lock(&self) -> Result<File, SoftKeyError> {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".lock");
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(PathBuf::from(name))
            .map_err(|e| io_error(&self.path, "cannot open the lock file", e))?;
        lock.lock()
            .map_err(|e| io_error(&self.path, "cannot lock", e))?;
        Ok(lock)
    }

    /// Writes the state atomically (temporary file, fsync, rename), keeping the file's mode
    /// so that a test that opened it to other users keeps it open.
    fn write(&self, state: &SoftKeyState) -> Result<(), SoftKeyError> {
        let json = state.to_json().map_err(|e| corrupt(&self.path, e))?;
        let mode = std::fs::metadata(&self.path)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o600);
        let mut tmp_name = self.path.as_os_str().to_owned();
        tmp_name.push(format!(".tmp{}", std::process::id()));
        let tmp = PathBuf::from(tmp_name);
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
            file.write_all(json.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_error(&self.path, "cannot write", e));
        }
        Ok(())
    }
}

fn io_error(path: &Path, what: &str, e: impl std::fmt::Display) -> SoftKeyError {
    SoftKeyError::Io {
        path: path.to_path_buf(),
        message: format!("{what}: {e}"),
    }
}

fn corrupt(path: &Path, message: String) -> SoftKeyError {
    SoftKeyError::Corrupt {
        path: path.to_path_buf(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_open_update_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.json");
        let key = SoftKey::create(&path, Algorithm::Ed25519).unwrap();
        assert_eq!(
            SoftKey::create(&path, Algorithm::Es256).unwrap_err(),
            SoftKeyError::Exists(path.clone())
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let other = SoftKey::open(&path).unwrap();
        other.update(|s| s.omit_up = true).unwrap();
        let state = key.state().unwrap();
        assert!(state.omit_up);
        assert_eq!(state.algorithm, Algorithm::Ed25519);
        assert!(state.present);
        assert_eq!(state.counter, 0);

        // The mode a test chose survives a write.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        key.set_knob("counter_mode", "rollback").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert_eq!(key.state().unwrap().counter_mode, CounterMode::Rollback);
    }

    #[test]
    fn bad_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        assert!(matches!(
            SoftKey::open(&missing),
            Err(SoftKeyError::Io { .. })
        ));
        let junk = dir.path().join("junk.json");
        std::fs::write(&junk, "{\"credentials\": 5}").unwrap();
        let err = SoftKey::open(&junk).unwrap_err();
        assert!(matches!(err, SoftKeyError::Corrupt { .. }), "{err}");
        std::fs::write(&junk, "not json").unwrap();
        assert!(matches!(
            SoftKey::open(&junk),
            Err(SoftKeyError::Corrupt { .. })
        ));
    }
}
