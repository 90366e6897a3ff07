//! The one table from login verdict to PAM return code.

use pam::constants::PamResultCode;
use twofactor_bus::Outcome;

use crate::args::FailMode;

/// How a login conversation ended, as far as the module knows.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The daemon said so.
    Daemon(Outcome),
    /// The daemon could not be reached, timed out, or spoke nonsense.
    Unreachable,
    /// The conversation with the user failed (no terminal, cancelled).
    ConversationFailed,
    /// The module's own configuration is wrong (bad arguments).
    Misconfigured,
}

/// The PAM return codes the module uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PamCode {
    /// `PAM_SUCCESS`.
    Success,
    /// `Ignore`.
    Ignore,
    /// `AuthErr`.
    AuthErr,
    /// `AuthinfoUnavail`.
    AuthinfoUnavail,
    /// `ConvErr`.
    ConvErr,
    /// `ServiceErr`.
    ServiceErr,
}

impl PamCode {
    /// The libpam value.
    pub fn to_pam(self) -> PamResultCode {
        match self {
            PamCode::Success => PamResultCode::PAM_SUCCESS,
            PamCode::Ignore => PamResultCode::PAM_IGNORE,
            PamCode::AuthErr => PamResultCode::PAM_AUTH_ERR,
            PamCode::AuthinfoUnavail => PamResultCode::PAM_AUTHINFO_UNAVAIL,
            PamCode::ConvErr => PamResultCode::PAM_CONV_ERR,
            PamCode::ServiceErr => PamResultCode::PAM_SERVICE_ERR,
        }
    }
}

/// (verdict, failmode or `None` for both, PAM code). Every row is tested.
pub const TABLE: &[(Verdict, Option<FailMode>, PamCode)] = &[
    (Verdict::Daemon(Outcome::Success), None, PamCode::Success),
    (Verdict::Daemon(Outcome::NotRequired), None, PamCode::Ignore),
    (Verdict::Daemon(Outcome::Denied), None, PamCode::AuthErr),
    // The daemon answered but cannot decide (state unreadable): never ignored.
    (
        Verdict::Daemon(Outcome::Unavailable),
        None,
        PamCode::AuthinfoUnavail,
    ),
    (
        Verdict::Unreachable,
        Some(FailMode::Closed),
        PamCode::AuthinfoUnavail,
    ),
    // failmode=open changes this row and no other.
    (Verdict::Unreachable, Some(FailMode::Open), PamCode::Ignore),
    (Verdict::ConversationFailed, None, PamCode::ConvErr),
    (Verdict::Misconfigured, None, PamCode::ServiceErr),
];

/// The PAM code for `verdict` under `failmode`. Anything not in the table denies.
pub fn pam_code(verdict: Verdict, failmode: FailMode) -> PamCode {
    TABLE
        .iter()
        .find(|(v, f, _)| *v == verdict && f.is_none_or(|f| f == failmode))
        .map_or(PamCode::AuthErr, |(_, _, code)| *code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row() {
        use FailMode::*;
        use PamCode::*;
        let expect = [
            (Verdict::Daemon(Outcome::Success), Closed, Success),
            (Verdict::Daemon(Outcome::Success), Open, Success),
            (Verdict::Daemon(Outcome::NotRequired), Closed, Ignore),
            (Verdict::Daemon(Outcome::NotRequired), Open, Ignore),
            (Verdict::Daemon(Outcome::Denied), Closed, AuthErr),
            (Verdict::Daemon(Outcome::Denied), Open, AuthErr),
            (
                Verdict::Daemon(Outcome::Unavailable),
                Closed,
                AuthinfoUnavail,
            ),
            (Verdict::Daemon(Outcome::Unavailable), Open, AuthinfoUnavail),
            (Verdict::Unreachable, Closed, AuthinfoUnavail),
            (Verdict::Unreachable, Open, Ignore),
            (Verdict::ConversationFailed, Closed, ConvErr),
            (Verdict::ConversationFailed, Open, ConvErr),
            (Verdict::Misconfigured, Closed, ServiceErr),
            (Verdict::Misconfigured, Open, ServiceErr),
        ];
        for (v, f, want) in expect {
            assert_eq!(pam_code(v, f), want, "{v:?} {f:?}");
        }
        // Nothing but a daemon's success is ever Success.
        for (v, _, code) in TABLE {
            if *code == Success {
                assert_eq!(*v, Verdict::Daemon(Outcome::Success));
            }
        }
    }
}
