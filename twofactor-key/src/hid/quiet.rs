//! Calls into `ctap-hid-fido2` with stdout silenced and panics caught.
//!
//! The library prints to stdout on some answers whatever its configuration says (`- anything
//! error`, `Anything Extension!` in its response parsers), and it has `unwrap`s on data a key
//! sends. Here that output would land in a user's terminal or pipe (sudo, the CLI) or in a
//! protocol stream; a panic would cross into sshd or sudo.
//!
//! [`call`] points file descriptor 1 at `/dev/null` for the length of one library call and
//! points it back afterwards. That is process-wide: another thread writing to stdout meanwhile
//! loses its output. It is acceptable because the callers are a PAM module, whose host's
//! thread is blocked in our call during the authentication (sshd and sudo do not write to
//! stdout from other threads then), and the CLI's key step, which prints nothing while it
//! waits for the key. The user is told what to do (touch the key) before the call and through
//! the caller's own channel (a PAM message, stderr), never by the library.
//!
//! No unsafe code: the descriptors are handled as `OwnedFd`s, duplicated with `F_DUPFD_CLOEXEC`
//! (std's `try_clone_to_owned`, so the saved copy does not leak into a child another thread
//! spawns), and moved onto fd 1 with `nix`'s `dup2_stdout`.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::fd::{AsFd as _, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

use crate::KeyError;

/// Serializes redirections: two at once would restore each other's `/dev/null`.
static STDOUT_REDIRECT: Mutex<()> = Mutex::new(());

/// What a panic in the library becomes.
pub(super) fn library_failed() -> KeyError {
    KeyError::Device("the security key library failed".into())
}

/// Runs `f` (a call into the library) with stdout silenced; a panic in it becomes
/// [`KeyError::Device`].
///
/// `AssertUnwindSafe`: after a panic nothing `f` touched is used again; the caller drops the
/// device and returns the error.
pub(super) fn call<T>(f: impl FnOnce() -> T) -> Result<T, KeyError> {
    let _silenced = SilencedStdout::begin();
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| library_failed())
}

/// fd 1 pointed at `/dev/null` until dropped.
struct SilencedStdout {
    /// Held for the whole redirection; see [`STDOUT_REDIRECT`].
    _lock: std::sync::MutexGuard<'static, ()>,
    /// What fd 1 was, to put back. `None` while nothing was redirected, or when fd 1 was
    /// closed: it is then left on `/dev/null`, which is what a closed stdout means to a
    /// writer, and which keeps a later `open` from landing on fd 1 and receiving prints.
    saved: Option<OwnedFd>,
    redirected: bool,
}

impl SilencedStdout {
    /// Redirects fd 1; if that cannot be done the call goes ahead unsilenced (a failing
    /// redirection must not lock the user out).
    fn begin() -> Self {
        let lock = STDOUT_REDIRECT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // What the host printed before belongs to the real stdout.
        let _ = std::io::stdout().flush();
        let mut silenced = SilencedStdout {
            _lock: lock,
            saved: None,
            redirected: false,
        };
        let Ok(null) = OpenOptions::new().write(true).open("/dev/null") else {
            return silenced;
        };
        let saved = std::io::stdout().as_fd().try_clone_to_owned().ok();
        if nix::unistd::dup2_stdout(null.as_fd()).is_ok() {
            silenced.saved = saved;
            silenced.redirected = true;
        }
        silenced
    }
}

impl Drop for SilencedStdout {
    fn drop(&mut self) {
        if !self.redirected {
            return;
        }
        // The library's buffered prints go to /dev/null, not to the restored stdout.
        let _ = std::io::stdout().flush();
        if let Some(saved) = self.saved.take() {
            let _ = nix::unistd::dup2_stdout(saved.as_fd());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::Command;

    const CHILD_VAR: &str = "TWOFACTOR_KEY_TEST_CHILD";

    /// Runs `body` in a child process (this test binary, running only `test_name`) and fails
    /// if it fails. Tests that redirect fd 1 run there so that they neither swallow this
    /// process's output nor see other tests' output on the pipe. Returns the child's stdout
    /// in the parent, `None` in the child.
    pub(crate) fn in_child(test_name: &str, body: impl FnOnce()) -> Option<String> {
        if std::env::var(CHILD_VAR).as_deref() == Ok(test_name) {
            body();
            return None;
        }
        let exe = std::env::current_exe().expect("test binary path");
        let out = Command::new(exe)
            .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_VAR, test_name)
            .output()
            .expect("run the test binary");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "child test {test_name} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("1 passed"),
            "child did not run {test_name}:\n{stdout}"
        );
        Some(stdout)
    }

    #[test]
    fn nothing_printed_inside_reaches_stdout_and_stdout_comes_back() {
        let Some(stdout) = in_child(
            "hid::quiet::tests::nothing_printed_inside_reaches_stdout_and_stdout_comes_back",
            || {
                println!("MARK-BEFORE");
                let r = call(|| {
                    println!("MARK-HIDDEN-LINE");
                    print!("MARK-HIDDEN-PARTIAL");
                    std::io::stdout()
                        .write_all(b"MARK-HIDDEN-RAW\n")
                        .expect("write");
                    7
                });
                assert_eq!(r, Ok(7));
                println!("MARK-AFTER");
                // A second call still silences (the lock was released, the fd restored).
                let _ = call(|| println!("MARK-HIDDEN-AGAIN"));
                println!("MARK-END");
            },
        ) else {
            return;
        };
        assert!(!stdout.contains("MARK-HIDDEN"), "{stdout}");
        let before = stdout.find("MARK-BEFORE").expect("before");
        let after = stdout.find("MARK-AFTER").expect("after");
        let end = stdout.find("MARK-END").expect("end");
        assert!(before < after && after < end, "{stdout}");
    }

    #[test]
    fn a_panic_inside_becomes_a_device_error() {
        let Some(stdout) = in_child(
            "hid::quiet::tests::a_panic_inside_becomes_a_device_error",
            || {
                let r: Result<(), KeyError> = call(|| {
                    println!("MARK-HIDDEN");
                    panic!("library bug")
                });
                assert_eq!(r, Err(library_failed()));
                // stdout is back after the unwind.
                println!("MARK-VISIBLE");
            },
        ) else {
            return;
        };
        assert!(stdout.contains("MARK-VISIBLE"), "{stdout}");
        assert!(!stdout.contains("MARK-HIDDEN"), "{stdout}");
    }
}
