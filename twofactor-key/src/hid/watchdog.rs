//! A bound on the wait for a touch.
//!
//! `ctap-hid-fido2` has no timeout: while a key waits for a touch it sends a keepalive about
//! every 100 ms and the library reads them in a loop (for up to about 500 of them). So a
//! second thread watches the clock: when the deadline passes it sends CTAPHID_CANCEL on the
//! same device, the key ends the operation with CTAP2_ERR_KEEPALIVE_CANCEL, and the
//! operation's thread returns. The cancel is repeated every [`RESEND`] in case the key missed
//! it.
//!
//! Sharing the device is sound: `FidoKeyHid` keeps its hidraw handle in a `Mutex` and holds it
//! only for one read or write; between keepalives the reader sleeps without it, which is when
//! the cancel gets written.
//!
//! The watchdog is a scoped thread, stopped through a channel and joined before [`run`]
//! returns on every path, a panic included: the PAM module runs inside sshd or sudo and must
//! leave no thread behind.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use ctap_hid_fido2::FidoKeyHid;

use crate::KeyError;

/// How often the cancel is sent again while the operation has not ended.
const RESEND: Duration = Duration::from_secs(1);

/// An operation's result, and whether the watchdog had cancelled it.
pub(super) struct Watched<T> {
    pub result: T,
    /// The deadline passed and CTAPHID_CANCEL was sent: an interrupted wait is a timeout.
    pub cancelled: bool,
}

/// Something that can be told to stop waiting for the user.
pub(super) trait Cancel: Sync {
    fn cancel(&self);
}

impl Cancel for FidoKeyHid {
    fn cancel(&self) {
        // Errors and panics are ignored: the cancel is a best effort, repeated, and the
        // operation's own result says what happened.
        let _ = catch_unwind(AssertUnwindSafe(|| self.cancel_selection()));
    }
}

/// Runs `operation` (which waits on `device`) with a watchdog that cancels it after `timeout`.
pub(super) fn run<T>(
    device: &impl Cancel,
    timeout: Duration,
    operation: impl FnOnce() -> T,
) -> Result<Watched<T>, KeyError> {
    let cancelled = AtomicBool::new(false);
    let cancelled_flag = &cancelled;
    let result = std::thread::scope(|scope| {
        // Declared inside the scope: dropped when the operation ends, by return or by panic,
        // so the watchdog sees the channel close before the scope joins it.
        let (stop, stopped) = mpsc::channel::<()>();
        let watchdog = std::thread::Builder::new()
            .name("twofactor-key-watchdog".into())
            .spawn_scoped(scope, move || {
                watch(device, timeout, &stopped, cancelled_flag)
            });
        if watchdog.is_err() {
            return Err(KeyError::Device(
                "cannot start the timer for the security key".into(),
            ));
        }
        let result = operation();
        let _ = stop.send(());
        Ok(result)
    })?;
    Ok(Watched {
        result,
        cancelled: cancelled.load(Ordering::SeqCst),
    })
}

/// The watchdog's body: wait for the stop signal until the deadline, then cancel until
/// stopped.
fn watch(
    device: &impl Cancel,
    timeout: Duration,
    stopped: &mpsc::Receiver<()>,
    cancelled: &AtomicBool,
) {
    let mut wait = timeout;
    loop {
        match stopped.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {
                cancelled.store(true, Ordering::SeqCst);
                device.cancel();
                wait = RESEND;
            }
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    /// A device that "waits for a touch" until cancelled or until `touch_after`.
    struct FakeKey {
        cancels: AtomicUsize,
        waiting: Mutex<bool>,
    }

    impl FakeKey {
        fn new() -> Self {
            FakeKey {
                cancels: AtomicUsize::new(0),
                waiting: Mutex::new(true),
            }
        }

        /// Polls like the library does; `Ok` on a touch, `Err` when cancelled.
        fn wait_for_touch(&self, touch_after: Duration) -> Result<(), &'static str> {
            let start = Instant::now();
            loop {
                if self.cancels.load(Ordering::SeqCst) > 0 {
                    return Err("response_status err = 0x2D CTAP2_ERR_KEEPALIVE_CANCEL");
                }
                if start.elapsed() >= touch_after {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    impl Cancel for FakeKey {
        fn cancel(&self) {
            let _guard = self.waiting.lock();
            self.cancels.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn thread_count() -> usize {
        std::fs::read_dir("/proc/self/task")
            .map(|d| d.count())
            .unwrap_or(0)
    }

    #[test]
    fn a_touch_in_time_is_not_cancelled() {
        let key = FakeKey::new();
        let start = Instant::now();
        let watched = run(&key, Duration::from_secs(10), || {
            key.wait_for_touch(Duration::from_millis(20))
        })
        .unwrap();
        assert_eq!(watched.result, Ok(()));
        assert!(!watched.cancelled);
        assert_eq!(key.cancels.load(Ordering::SeqCst), 0);
        // Stopping did not wait for the deadline.
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn no_touch_is_cancelled_at_the_deadline() {
        let key = FakeKey::new();
        let start = Instant::now();
        let watched = run(&key, Duration::from_millis(100), || {
            key.wait_for_touch(Duration::from_secs(30))
        })
        .unwrap();
        let elapsed = start.elapsed();
        assert!(watched.result.is_err());
        assert!(watched.cancelled);
        assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
        assert_eq!(key.cancels.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_watchdog_is_joined_on_every_path() {
        let key = FakeKey::new();
        let before = thread_count();
        for _ in 0..20 {
            let _ = run(&key, Duration::from_secs(60), || ());
        }
        // A panicking operation: the scope joins the watchdog before the panic goes on.
        let panicked = catch_unwind(AssertUnwindSafe(|| {
            run(&key, Duration::from_secs(60), || panic!("library bug"))
        }));
        assert!(panicked.is_err());
        // Other tests run in parallel threads; allow for them but not for 21 leftovers.
        assert!(thread_count() < before + 10, "threads left behind");
        assert_eq!(key.cancels.load(Ordering::SeqCst), 0);
    }
}
