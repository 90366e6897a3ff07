//! The one system call of twofactorctl that needs `unsafe`: reading the kernel's clock state.
#![allow(unsafe_code)]

use super::clock::KernelClock;

/// Reads the kernel's NTP state (`ntp_adjtime` with `modes` = 0: read only, any user may).
pub fn read() -> std::io::Result<KernelClock> {
    // SAFETY: `timex` is a plain C struct of integers; all zeroes is a valid value of it.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: `tx` is a valid, exclusively borrowed `timex` for the whole call; with modes = 0
    // the kernel only writes the current state into it.
    let state = unsafe { libc::ntp_adjtime(&mut tx) };
    if state == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // `c_long` is i64 only on 64-bit targets.
    #[allow(clippy::useless_conversion)]
    Ok(KernelClock {
        state,
        status: tx.status,
        esterror_us: i64::from(tx.esterror),
        maxerror_us: i64::from(tx.maxerror),
    })
}
