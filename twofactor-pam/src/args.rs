//! Module arguments from the PAM stack line.

use std::path::PathBuf;
use std::time::Duration;

/// The system bus, spelled out: the module never reads `DBUS_SYSTEM_BUS_ADDRESS`, because in
/// `sudo` or `su` the environment belongs to the user who is being checked.
pub const SYSTEM_BUS: &str = "unix:path=/run/dbus/system_bus_socket";

/// What to do when the daemon cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Deny (`PAM_AUTHINFO_UNAVAIL`): the default.
    Closed,
    /// Let the rest of the stack decide (`PAM_IGNORE`), logged loudly.
    Open,
}

/// Parsed module arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleArgs {
    /// D-Bus address of the bus the daemon is on.
    pub bus: String,
    /// Bound on each call to the daemon.
    pub timeout: Duration,
    /// Unreachable daemon handling.
    pub failmode: FailMode,
    /// The daemon's offline snapshot, read only when the daemon is unreachable
    /// (`offline=PATH`; `offline=none`: none, every such login fails closed).
    pub offline: Option<PathBuf>,
    /// Log each step (never answers).
    pub debug: bool,
}

impl Default for ModuleArgs {
    fn default() -> Self {
        ModuleArgs {
            bus: SYSTEM_BUS.to_string(),
            timeout: Duration::from_secs(10),
            failmode: FailMode::Closed,
            offline: Some(PathBuf::from(twofactor_bus::offline::DEFAULT_PATH)),
            debug: false,
        }
    }
}

impl ModuleArgs {
    /// Parses the arguments; an unknown or malformed one is an error (a typo must not weaken
    /// the stack silently).
    pub fn parse<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<ModuleArgs, String> {
        let mut out = ModuleArgs::default();
        for arg in args {
            match arg.split_once('=') {
                Some(("bus", v)) if !v.is_empty() => out.bus = v.to_string(),
                Some(("timeout", v)) => {
                    let secs: u64 = v
                        .parse()
                        .ok()
                        .filter(|s| (1..=300).contains(s))
                        .ok_or_else(|| format!("timeout={v}: expected 1 to 300 seconds"))?;
                    out.timeout = Duration::from_secs(secs);
                }
                Some(("failmode", "closed")) => out.failmode = FailMode::Closed,
                Some(("failmode", "open")) => out.failmode = FailMode::Open,
                Some(("offline", "none")) => out.offline = None,
                Some(("offline", v)) if v.starts_with('/') => out.offline = Some(v.into()),
                None if arg == "debug" => out.debug = true,
                _ => return Err(format!("unknown or malformed argument {arg:?}")),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_strict() {
        let a = ModuleArgs::parse([]).expect("empty is fine");
        assert_eq!(a.bus, SYSTEM_BUS);
        assert_eq!(a.failmode, FailMode::Closed);
        assert_eq!(a.timeout, Duration::from_secs(10));
        assert_eq!(
            a.offline.as_deref(),
            Some(std::path::Path::new("/run/twofactor/offline"))
        );
        assert!(!a.debug);
    }

    #[test]
    fn all_arguments_parse() {
        let a = ModuleArgs::parse([
            "bus=unix:path=/tmp/x",
            "timeout=3",
            "failmode=open",
            "offline=/tmp/snap",
            "debug",
        ])
        .expect("valid");
        assert_eq!(
            a.offline.as_deref(),
            Some(std::path::Path::new("/tmp/snap"))
        );
        let none = ModuleArgs::parse(["offline=none"]).expect("valid");
        assert_eq!(none.offline, None);
        assert_eq!(a.bus, "unix:path=/tmp/x");
        assert_eq!(a.timeout, Duration::from_secs(3));
        assert_eq!(a.failmode, FailMode::Open);
        assert!(a.debug);
    }

    #[test]
    fn typos_are_errors() {
        for bad in [
            "failmode=opne",
            "timeout=0",
            "timeout=abc",
            "bus=",
            "nodebug",
            "fail_mode=open",
            "offline=",
            "offline=relative/path",
        ] {
            assert!(ModuleArgs::parse([bad]).is_err(), "{bad}");
        }
    }
}
