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
    /// No answer came from the daemon: cannot connect to the bus, the name has no owner, no
    /// reply within `timeout=`, the connection dropped. Nothing else.
    Unreachable,
    /// No answer came, and the daemon's offline snapshot says it would not ask this user
    /// (2FA optional, nothing enrolled): what the daemon would have said, not a guess.
    OfflineNotRequired,
    /// The daemon answered with an error (an unknown or expired login, a bad argument, not
    /// allowed…) or with nonsense. Any answer is final: a denial under both failmodes.
    Refused,
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
    // Only reached under failmode=closed, from a trusted snapshot (crate::offline).
    (Verdict::OfflineNotRequired, None, PamCode::Ignore),
    // An error reply is an answer: never "unreachable", so never ignored.
    (Verdict::Refused, None, PamCode::AuthErr),
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
            (Verdict::OfflineNotRequired, Closed, Ignore),
            (Verdict::OfflineNotRequired, Open, Ignore),
            (Verdict::Refused, Closed, AuthErr),
            (Verdict::Refused, Open, AuthErr),
            (Verdict::ConversationFailed, Closed, ConvErr),
            (Verdict::ConversationFailed, Open, ConvErr),
            (Verdict::Misconfigured, Closed, ServiceErr),
            (Verdict::Misconfigured, Open, ServiceErr),
        ];
        for (v, f, want) in expect {
            assert_eq!(pam_code(v, f), want, "{v:?} {f:?}");
        }
        // Every row of the table is checked above.
        for (v, f, _) in TABLE {
            for mode in f.map_or(vec![Closed, Open], |f| vec![f]) {
                assert!(
                    expect.iter().any(|(ev, ef, _)| ev == v && *ef == mode),
                    "row {v:?} {mode:?} untested"
                );
            }
        }
        // Nothing but a daemon's success is ever Success.
        for (v, _, code) in TABLE {
            if *code == Success {
                assert_eq!(*v, Verdict::Daemon(Outcome::Success));
            }
        }
        // Only an unreachable daemon under failmode=open is ever ignored without the daemon
        // (live, or by its offline snapshot) saying so.
        for (v, f, code) in TABLE {
            if *code == Ignore
                && *v != Verdict::Daemon(Outcome::NotRequired)
                && *v != Verdict::OfflineNotRequired
            {
                assert_eq!((*v, *f), (Verdict::Unreachable, Some(Open)));
            }
        }
    }
}
