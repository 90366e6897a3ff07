//! The clock: TOTP codes are only as right as the clock they are checked against. The kernel
//! knows whether a time daemon keeps it synchronized, and how far off it may be.
#![forbid(unsafe_code)]

use super::{Finding, clock_sys};

const CHECK: &str = "clock";

/// Above this estimated error doctor warns: codes typed near the end of a step start to land
/// in the neighbouring one.
const WARN_ESTERROR_US: i64 = 1_000_000;
/// Above this (half a 30-second step) valid codes get refused: an error. The daemon logs a
/// warning from the same point on.
const ERROR_ESTERROR_US: i64 = 15_000_000;

const FIX_SYNC: &str = "turn on time synchronization: `timedatectl set-ntp true` \
     (systemd-timesyncd), or install chrony or ntpsec; `timedatectl` shows the state";

/// What `ntp_adjtime` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelClock {
    /// The return value: TIME_OK, …, TIME_ERROR (5).
    pub state: i32,
    /// `status` bits (STA_UNSYNC, STA_CLOCKERR, …).
    pub status: i32,
    /// Estimated error, microseconds.
    pub esterror_us: i64,
    /// Maximum error, microseconds.
    pub maxerror_us: i64,
}

/// Reads the real clock and judges it.
pub fn check() -> Finding {
    judge(clock_sys::read().map_err(|e| e.to_string()))
}

/// "12 ms", "1.5 s".
fn duration(us: i64) -> String {
    if us < 1_000_000 {
        format!("{} ms", (us as f64 / 1000.0 * 10.0).round() / 10.0)
    } else {
        format!("{} s", (us as f64 / 1_000_000.0 * 10.0).round() / 10.0)
    }
}

/// The finding for a reading (or for the error reading it).
pub fn judge(reading: Result<KernelClock, String>) -> Finding {
    let k = match reading {
        Ok(k) => k,
        Err(e) => {
            return Finding::warning(
                CHECK,
                format!("cannot read the kernel clock's state (ntp_adjtime: {e})"),
                "check by hand with `timedatectl`: \"System clock synchronized: yes\"",
            );
        }
    };
    if k.status & libc::STA_CLOCKERR != 0 {
        return Finding::error(
            CHECK,
            "the kernel reports a clock hardware fault (STA_CLOCKERR): TOTP codes are checked \
             against this clock",
            "check the hardware clock and the time daemon's log",
        );
    }
    if k.status & libc::STA_UNSYNC != 0 || k.state == libc::TIME_ERROR {
        return Finding::error(
            CHECK,
            format!(
                "the kernel clock is not synchronized (STA_UNSYNC; maximum error {}): TOTP \
                 codes are checked against this clock, and one that drifts refuses valid codes",
                duration(k.maxerror_us)
            ),
            FIX_SYNC,
        );
    }
    let error = format!(
        "estimated error {}, maximum error {}",
        duration(k.esterror_us),
        duration(k.maxerror_us)
    );
    if k.esterror_us > ERROR_ESTERROR_US {
        return Finding::error(
            CHECK,
            format!("the clock is synchronized but far off ({error}): valid codes are refused"),
            "check the time source: `chronyc tracking` or `timedatectl timesync-status`",
        );
    }
    if k.esterror_us > WARN_ESTERROR_US {
        return Finding::warning(
            CHECK,
            format!("the clock is synchronized, but loosely ({error})"),
            "check the time source: `chronyc tracking` or `timedatectl timesync-status`",
        );
    }
    Finding::ok(CHECK, format!("the kernel clock is synchronized ({error})"))
}

#[cfg(test)]
mod tests {
    use super::super::Level;
    use super::*;

    const SYNCED: KernelClock = KernelClock {
        state: libc::TIME_OK,
        status: libc::STA_PLL,
        esterror_us: 1_500,
        maxerror_us: 240_000,
    };

    #[test]
    fn synchronized_is_ok_with_the_error() {
        let f = judge(Ok(SYNCED));
        assert_eq!(f.level, Level::Ok, "{f:?}");
        assert!(f.message.contains("estimated error 1.5 ms"), "{f:?}");
        assert!(f.message.contains("maximum error 240 ms"), "{f:?}");
        assert_eq!(f.fix, None);
    }

    #[test]
    fn unsynchronized_is_an_error_with_the_fix() {
        let f = judge(Ok(KernelClock {
            state: libc::TIME_ERROR,
            status: libc::STA_UNSYNC,
            esterror_us: 16_000_000,
            maxerror_us: 16_000_000,
        }));
        assert_eq!(f.level, Level::Error, "{f:?}");
        assert!(f.message.contains("not synchronized"), "{f:?}");
        assert!(f.message.contains("16 s"), "{f:?}");
        assert!(f.fix.as_deref().is_some_and(|x| x.contains("chrony")));
        // Either sign is enough: the status bit alone, or TIME_ERROR alone.
        let bit_only = judge(Ok(KernelClock {
            status: libc::STA_PLL | libc::STA_UNSYNC,
            ..SYNCED
        }));
        assert_eq!(bit_only.level, Level::Error);
        let state_only = judge(Ok(KernelClock {
            state: libc::TIME_ERROR,
            ..SYNCED
        }));
        assert_eq!(state_only.level, Level::Error);
    }

    #[test]
    fn clock_fault_is_an_error() {
        let f = judge(Ok(KernelClock {
            status: libc::STA_CLOCKERR,
            ..SYNCED
        }));
        assert_eq!(f.level, Level::Error);
        assert!(f.message.contains("STA_CLOCKERR"));
    }

    #[test]
    fn large_estimated_error() {
        let loose = judge(Ok(KernelClock {
            esterror_us: 2_500_000,
            ..SYNCED
        }));
        assert_eq!(loose.level, Level::Warning, "{loose:?}");
        assert!(loose.message.contains("2.5 s"), "{loose:?}");
        let off = judge(Ok(KernelClock {
            esterror_us: 20_000_000,
            ..SYNCED
        }));
        assert_eq!(off.level, Level::Error, "{off:?}");
        // Exactly at the thresholds: still the milder level.
        for (us, level) in [
            (WARN_ESTERROR_US, Level::Ok),
            (ERROR_ESTERROR_US, Level::Warning),
        ] {
            let f = judge(Ok(KernelClock {
                esterror_us: us,
                ..SYNCED
            }));
            assert_eq!(f.level, level, "{us}");
        }
    }

    #[test]
    fn unreadable_is_a_warning() {
        let f = judge(Err("Operation not permitted".into()));
        assert_eq!(f.level, Level::Warning);
        assert!(f.message.contains("Operation not permitted"));
    }

    #[test]
    fn the_real_clock_can_be_read() {
        // Whatever its state, the call works and gives a well-formed finding.
        assert!(clock_sys::read().is_ok());
        let f = check();
        assert_eq!(f.check, "clock");
    }
}
