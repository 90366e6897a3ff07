//! Why a command failed: a message for people, a stable code for scripts (`--json`), and the
//! exit status. One table maps the daemon's D-Bus errors, and the bus's own errors about the
//! daemon, to codes; each row is tested.
#![forbid(unsafe_code)]

use twofactor_bus::BusError;
use zbus::DBusError as _;

/// What `systemctl` and `journalctl` to run when the daemon cannot be reached.
const WHAT_TO_RUN: &str =
    "See `systemctl status twofactord` and `journalctl -u twofactord` for why.";

/// The closed set of error codes `--json` reports (`{"error":{"code":...}}`), documented in
/// twofactorctl(1). Adding one is a change of the CLI's contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Wrong usage: unknown command or option, a bad value (exit status 2).
    Usage,
    /// The command needs the admin right, or acts on another user (exit status 3).
    AccessDenied,
    /// The user does not exist.
    NoSuchUser,
    /// The policy forbids it for this user, or the state does not allow it.
    NotAllowed,
    /// The daemon refused an argument (too long, bad characters).
    InvalidArgument,
    /// The enrollment or login handle is unknown or expired.
    NoSuchSession,
    /// The daemon could not read or write its state; nothing was changed.
    StateUnavailable,
    /// The policy file is invalid (reload); the policy in force stays.
    InvalidPolicy,
    /// The code, recovery code or key was not accepted (exit status 4).
    CodeRejected,
    /// twofactord is not running, failed to start, does not answer, or the bus cannot be
    /// reached (exit status 69).
    DaemonUnavailable,
    /// Any other error from the bus (e.g. a daemon of another version).
    BusError,
    /// A local input is refused: a file to import, the code on standard input.
    InvalidInput,
    /// The security key could not be used (none plugged in, no touch, wrong PIN).
    KeyError,
    /// Anything else (output could not be produced).
    Internal,
}

impl ErrorCode {
    /// Every code, for the documentation test.
    #[cfg(test)]
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::Usage,
        ErrorCode::AccessDenied,
        ErrorCode::NoSuchUser,
        ErrorCode::NotAllowed,
        ErrorCode::InvalidArgument,
        ErrorCode::NoSuchSession,
        ErrorCode::StateUnavailable,
        ErrorCode::InvalidPolicy,
        ErrorCode::CodeRejected,
        ErrorCode::DaemonUnavailable,
        ErrorCode::BusError,
        ErrorCode::InvalidInput,
        ErrorCode::KeyError,
        ErrorCode::Internal,
    ];

    /// The code as `--json` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Usage => "usage",
            ErrorCode::AccessDenied => "access-denied",
            ErrorCode::NoSuchUser => "no-such-user",
            ErrorCode::NotAllowed => "not-allowed",
            ErrorCode::InvalidArgument => "invalid-argument",
            ErrorCode::NoSuchSession => "no-such-session",
            ErrorCode::StateUnavailable => "state-unavailable",
            ErrorCode::InvalidPolicy => "invalid-policy",
            ErrorCode::CodeRejected => "code-rejected",
            ErrorCode::DaemonUnavailable => "daemon-unavailable",
            ErrorCode::BusError => "bus-error",
            ErrorCode::InvalidInput => "invalid-input",
            ErrorCode::KeyError => "key-error",
            ErrorCode::Internal => "internal",
        }
    }

    /// The exit status: the same with and without `--json`.
    pub fn exit_status(self) -> u8 {
        match self {
            ErrorCode::Usage => 2,
            ErrorCode::AccessDenied => 3,
            ErrorCode::CodeRejected => 4,
            // sysexits(3) EX_UNAVAILABLE: a service the command needs is unavailable.
            ErrorCode::DaemonUnavailable => 69,
            _ => 1,
        }
    }
}

/// A failure to report. An empty message means the output already said it all (a doctor
/// report): nothing more is printed.
#[derive(Debug)]
pub struct Failure {
    /// What kind of failure (and so the exit status).
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
}

impl Failure {
    /// A failure of `code` with `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// The exit status.
    pub fn exit_status(&self) -> u8 {
        self.code.exit_status()
    }
}

impl From<BusError> for Failure {
    fn from(e: BusError) -> Self {
        let (code, message) = match e {
            BusError::ZBus(e) => return transport(&e),
            BusError::AccessDenied(m) => (ErrorCode::AccessDenied, format!("access denied: {m}")),
            BusError::NoSuchUser(m) => (ErrorCode::NoSuchUser, m),
            BusError::InvalidArgument(m) => (ErrorCode::InvalidArgument, m),
            BusError::NoSuchSession(m) => (ErrorCode::NoSuchSession, m),
            BusError::NotAllowed(m) => (ErrorCode::NotAllowed, m),
            BusError::StateUnavailable(m) => (ErrorCode::StateUnavailable, m),
            BusError::InvalidPolicy(m) => (ErrorCode::InvalidPolicy, m),
        };
        Failure::new(code, message)
    }
}

/// A failure of the bus rather than of the daemon: in words, with what to run.
pub fn transport(e: &zbus::Error) -> Failure {
    match e {
        zbus::Error::MethodError(name, description, _) => {
            error_reply(name.as_str(), description.as_deref().unwrap_or(""))
        }
        zbus::Error::FDO(fdo) => {
            error_reply(fdo.name().as_str(), fdo.description().unwrap_or_default())
        }
        zbus::Error::Connection(..)
        | zbus::Error::InputOutput(_)
        | zbus::Error::Address(_)
        | zbus::Error::Handshake(_) => bus_unreachable(&e.to_string()),
        other => Failure::new(
            ErrorCode::BusError,
            format!("cannot talk to twofactord: {other}"),
        ),
    }
}

/// The bus itself cannot be reached (no socket, refused, a bad address).
pub fn bus_unreachable(why: &str) -> Failure {
    Failure::new(
        ErrorCode::DaemonUnavailable,
        format!(
            "cannot reach twofactord: cannot connect to the D-Bus system bus ({why}). Is dbus \
             running? See `systemctl status dbus twofactord`, and `journalctl -u twofactord`."
        ),
    )
}

/// An error reply that is not one of the daemon's own: from the bus about the daemon (not
/// running, failed to start, no answer), or a call the daemon does not know.
pub fn error_reply(name: &str, description: &str) -> Failure {
    const FDO: &str = "org.freedesktop.DBus.Error.";
    let short = name.strip_prefix(FDO).unwrap_or("");
    let said = if description.is_empty() {
        name.to_string()
    } else {
        format!("{name}: {description}")
    };
    let (code, message) = match short {
        "ServiceUnknown" | "NameHasNoOwner" => (
            ErrorCode::DaemonUnavailable,
            format!(
                "twofactord is not running. Start it with `systemctl start twofactord`. \
                 {WHAT_TO_RUN} (the bus said: {said})"
            ),
        ),
        s if s.starts_with("Spawn.") => (
            ErrorCode::DaemonUnavailable,
            format!(
                "twofactord failed to start (the bus tried to start it for this command). \
                 {WHAT_TO_RUN} (the bus said: {said})"
            ),
        ),
        "NoReply" | "Timeout" | "TimedOut" | "Disconnected" | "NoServer" | "IOError" => (
            ErrorCode::DaemonUnavailable,
            format!(
                "twofactord did not answer: it may be hung or overloaded. {WHAT_TO_RUN} \
                 (the bus said: {said})"
            ),
        ),
        "AccessDenied" => (
            ErrorCode::AccessDenied,
            format!("access denied by the bus policy: {said}"),
        ),
        "UnknownMethod" | "UnknownInterface" | "UnknownObject" | "InvalidArgs"
        | "InvalidSignature" => (
            ErrorCode::BusError,
            format!(
                "twofactord does not know this call: is another version of it running? \
                 (`systemctl restart twofactord` after an upgrade) ({said})"
            ),
        ),
        _ => (
            ErrorCode::BusError,
            format!("cannot talk to twofactord: {said}"),
        ),
    };
    Failure::new(code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_daemon_error_has_its_code_and_status() {
        let rows = [
            (BusError::AccessDenied("x".into()), "access-denied", 3),
            (BusError::NoSuchUser("x".into()), "no-such-user", 1),
            (BusError::InvalidArgument("x".into()), "invalid-argument", 1),
            (BusError::NoSuchSession("x".into()), "no-such-session", 1),
            (BusError::NotAllowed("x".into()), "not-allowed", 1),
            (
                BusError::StateUnavailable("x".into()),
                "state-unavailable",
                1,
            ),
            (BusError::InvalidPolicy("x".into()), "invalid-policy", 1),
            (
                BusError::ZBus(zbus::Error::Failure("x".into())),
                "bus-error",
                1,
            ),
            (
                BusError::ZBus(zbus::Error::Address("no socket".into())),
                "daemon-unavailable",
                69,
            ),
            (
                BusError::ZBus(zbus::Error::FDO(Box::new(
                    zbus::fdo::Error::ServiceUnknown("x".into()),
                ))),
                "daemon-unavailable",
                69,
            ),
            (
                BusError::ZBus(zbus::Error::FDO(Box::new(
                    zbus::fdo::Error::SpawnChildExited(
                        "Launch helper exited with unknown return code 1".into(),
                    ),
                ))),
                "daemon-unavailable",
                69,
            ),
            (
                BusError::ZBus(zbus::Error::FDO(Box::new(zbus::fdo::Error::NoReply(
                    "x".into(),
                )))),
                "daemon-unavailable",
                69,
            ),
            (
                BusError::ZBus(zbus::Error::FDO(Box::new(zbus::fdo::Error::AccessDenied(
                    "x".into(),
                )))),
                "access-denied",
                3,
            ),
            (
                BusError::ZBus(zbus::Error::FDO(Box::new(zbus::fdo::Error::UnknownMethod(
                    "x".into(),
                )))),
                "bus-error",
                1,
            ),
        ];
        for (e, code, status) in rows {
            let shown = format!("{e:?}");
            let f = Failure::from(e);
            assert_eq!(
                (f.code.as_str(), f.exit_status()),
                (code, status),
                "{shown}"
            );
            assert!(!f.message.is_empty(), "{shown}");
        }
    }

    #[test]
    fn a_daemon_that_is_not_there_is_said_in_words_with_what_to_run() {
        for name in [
            "org.freedesktop.DBus.Error.ServiceUnknown",
            "org.freedesktop.DBus.Error.NameHasNoOwner",
            "org.freedesktop.DBus.Error.Spawn.ChildExited",
            "org.freedesktop.DBus.Error.Spawn.ExecFailed",
            "org.freedesktop.DBus.Error.NoReply",
        ] {
            let f = error_reply(name, "detail");
            assert_eq!(f.code, ErrorCode::DaemonUnavailable, "{name}");
            assert!(f.message.starts_with("twofactord "), "{}", f.message);
            assert!(
                f.message.contains("systemctl status twofactord")
                    && f.message.contains("journalctl -u twofactord"),
                "{}",
                f.message
            );
        }
        assert!(
            error_reply("org.freedesktop.DBus.Error.Spawn.ChildExited", "")
                .message
                .contains("failed to start")
        );
        assert!(
            error_reply("org.freedesktop.DBus.Error.ServiceUnknown", "")
                .message
                .contains("is not running")
        );
        let f = bus_unreachable("No such file or directory");
        assert_eq!(f.code, ErrorCode::DaemonUnavailable);
        assert!(f.message.contains("systemctl status dbus twofactord"));
    }

    #[test]
    fn codes_are_distinct_kebab_case_words() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            let s = c.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                s.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{s}"
            );
        }
    }

    #[test]
    fn every_code_is_documented_in_the_man_page() {
        let page = include_str!("../../packaging/man/twofactorctl.1");
        for c in ErrorCode::ALL {
            let roff = c.as_str().replace('-', "\\-");
            assert!(
                page.contains(&format!(".B {roff}\n")),
                "{} is not documented in twofactorctl(1)",
                c.as_str()
            );
        }
    }
}
