//! Is the system clock synchronized? TOTP codes are only as right as the clock. The kernel's
//! NTP state (`ntp_adjtime`) says whether a time daemon keeps it in sync and how far off it may
//! be. The one system call of the daemon that needs `unsafe` lives here.
#![allow(unsafe_code)]

/// What the kernel says about the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockState {
    /// No time daemon keeps the clock synchronized (STA_UNSYNC set).
    pub unsynchronized: bool,
    /// Estimated error, microseconds.
    pub esterror_us: i64,
    /// Maximum error, microseconds.
    pub maxerror_us: i64,
}

/// Reads the kernel's clock state (read-only: `modes` = 0).
pub fn read() -> std::io::Result<ClockState> {
    // SAFETY: an all-zero `timex` is a valid value of this plain C struct.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: `tx` is a valid, writable timex; modes = 0 asks only to read the state.
    let rc = unsafe { libc::ntp_adjtime(&mut tx) };
    if rc == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ClockState {
        unsynchronized: rc == libc::TIME_ERROR || tx.status & libc::STA_UNSYNC != 0,
        esterror_us: tx.esterror,
        maxerror_us: tx.maxerror,
    })
}

/// A warning for the log when the clock is not to be trusted, `None` when it is fine.
pub fn warning(state: ClockState) -> Option<String> {
    if state.unsynchronized {
        return Some(
            "the system clock is not synchronized (no NTP): TOTP codes may be refused or \
             accepted at the wrong time; enable systemd-timesyncd, chrony or ntpsec"
                .into(),
        );
    }
    // Half a time step of error starts to push valid codes out of the window.
    if state.esterror_us > 15_000_000 {
        return Some(format!(
            "the system clock's estimated error is {} s: TOTP codes may be refused",
            state.esterror_us / 1_000_000
        ));
    }
    None
}

/// Logs a warning if the clock is off; used at start and then every hour. Returns false when
/// the state cannot be read at all (e.g. systemd's ProtectClock= filters the call), so that the
/// caller stops asking.
pub fn check_and_warn() -> bool {
    match read() {
        Ok(state) => {
            if let Some(w) = warning(state) {
                crate::log::warn(&w);
            }
            true
        }
        Err(e) => {
            crate::log::info(&format!(
                "cannot read the clock's NTP state ({e}); `twofactorctl doctor` checks the clock"
            ));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpretation() {
        let ok = ClockState {
            unsynchronized: false,
            esterror_us: 2_000,
            maxerror_us: 16_000,
        };
        assert_eq!(warning(ok), None);
        assert!(
            warning(ClockState {
                unsynchronized: true,
                ..ok
            })
            .is_some_and(|w| w.contains("not synchronized"))
        );
        assert!(
            warning(ClockState {
                esterror_us: 20_000_000,
                ..ok
            })
            .is_some_and(|w| w.contains("20 s"))
        );
        // Reading the real clock works (whatever its state).
        assert!(read().is_ok());
    }
}
