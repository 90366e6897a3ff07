//! The offline snapshot: what the PAM module may conclude when the daemon cannot be reached.
//!
//! The daemon writes it (root-only, atomically) on every change that can make it ask a user for
//! a second factor, and the module reads it only when the daemon is unreachable, under
//! `failmode=closed`, to let through the users the daemon would not have asked (2FA optional
//! and nothing enrolled) instead of locking everybody out. It holds rules, not a list of
//! everybody: user names, group names and uids that NSS resolves at login.
//!
//! The decision ([`Snapshot::asks`]) is deliberately more cautious than the daemon: exemptions
//! (trusted networks, exempt groups, `services.NAME mode = "disabled"`) are not honoured
//! offline, and any uid the daemon holds second-factor state for (a factor, starter codes, an
//! admin's requirement) is asked. "Asked" means the login is refused while the daemon is down.
//!
//! Text format, one item a line, fields separated by one space, names %-escaped (every byte
//! outside printable ASCII, space and `%`):
//!
//! ```text
//! twofactor-offline 1
//! default optional|required|disabled
//! user NAME MODE        a [users.NAME] rule
//! group NAME MODE       a [groups.NAME] rule
//! service NAME          a [services.NAME] rule with mode "required"
//! uid N                 a uid with second-factor state
//! end
//! ```
//!
//! Anything else (an unknown line, a missing `end`, a second `default`) makes the whole
//! snapshot invalid: the module then fails closed.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};

/// Where the daemon writes the snapshot and the module reads it, unless told otherwise.
pub const DEFAULT_PATH: &str = "/run/twofactor/offline";

/// The largest snapshot the module reads (about a million uids).
pub const MAX_SIZE: u64 = 32 * 1024 * 1024;

const MAGIC: &str = "twofactor-offline 1";

/// A rule's mode, as in the policy file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RuleMode {
    /// No prompts.
    Disabled,
    /// Asked once enrolled.
    Optional,
    /// Always asked.
    Required,
}

impl RuleMode {
    fn as_str(self) -> &'static str {
        match self {
            RuleMode::Disabled => "disabled",
            RuleMode::Optional => "optional",
            RuleMode::Required => "required",
        }
    }

    fn parse(s: &str) -> Option<RuleMode> {
        match s {
            "disabled" => Some(RuleMode::Disabled),
            "optional" => Some(RuleMode::Optional),
            "required" => Some(RuleMode::Required),
            _ => None,
        }
    }
}

/// What the daemon knew when it last wrote the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// `default_mode` of the policy in force.
    pub default_mode: RuleMode,
    /// `[users.NAME]` rules.
    pub users: BTreeMap<String, RuleMode>,
    /// `[groups.NAME]` rules.
    pub groups: BTreeMap<String, RuleMode>,
    /// Services whose rule requires 2FA.
    pub required_services: BTreeSet<String>,
    /// Uids with any second-factor state (factor, starter codes, admin requirement).
    pub uids: BTreeSet<u32>,
}

/// Why a snapshot file was not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unescape(field: &str) -> Option<String> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = field.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Snapshot {
    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = format!("{MAGIC}\ndefault {}\n", self.default_mode.as_str());
        for (name, mode) in &self.users {
            out.push_str(&format!("user {} {}\n", escape(name), mode.as_str()));
        }
        for (name, mode) in &self.groups {
            out.push_str(&format!("group {} {}\n", escape(name), mode.as_str()));
        }
        for name in &self.required_services {
            out.push_str(&format!("service {}\n", escape(name)));
        }
        for uid in &self.uids {
            out.push_str(&format!("uid {uid}\n"));
        }
        out.push_str("end\n");
        out
    }

    /// Parses a file's text; anything unexpected is an error.
    pub fn parse(text: &str) -> Result<Snapshot, ParseError> {
        let err = |n: usize, what: &str| ParseError(format!("line {}: {what}", n + 1));
        let mut lines = text.split('\n').enumerate();
        match lines.next() {
            Some((_, MAGIC)) => {}
            _ => return Err(ParseError("not a twofactor-offline 1 snapshot".into())),
        }
        let mut default_mode = None;
        let mut snap = Snapshot {
            default_mode: RuleMode::Required,
            users: BTreeMap::new(),
            groups: BTreeMap::new(),
            required_services: BTreeSet::new(),
            uids: BTreeSet::new(),
        };
        let mut ended = false;
        for (n, line) in lines {
            if ended {
                if line.is_empty() {
                    continue;
                }
                return Err(err(n, "text after end"));
            }
            let fields: Vec<&str> = line.split(' ').collect();
            let name = |i: usize| {
                fields
                    .get(i)
                    .and_then(|f| unescape(f))
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| err(n, "bad name"))
            };
            let mode = |i: usize| {
                fields
                    .get(i)
                    .and_then(|f| RuleMode::parse(f))
                    .ok_or_else(|| err(n, "bad mode"))
            };
            match (fields[0], fields.len()) {
                ("default", 2) if default_mode.is_none() => default_mode = Some(mode(1)?),
                ("user", 3) => {
                    snap.users.insert(name(1)?, mode(2)?);
                }
                ("group", 3) => {
                    snap.groups.insert(name(1)?, mode(2)?);
                }
                ("service", 2) => {
                    snap.required_services.insert(name(1)?);
                }
                ("uid", 2) => {
                    let uid = fields[1].parse().map_err(|_| err(n, "bad uid"))?;
                    snap.uids.insert(uid);
                }
                ("end", 1) => ended = true,
                _ => return Err(err(n, "unexpected line")),
            }
        }
        if !ended {
            return Err(ParseError("truncated: no end line".into()));
        }
        snap.default_mode = default_mode.ok_or_else(|| ParseError("no default line".into()))?;
        Ok(snap)
    }

    /// Would the daemon (by this snapshot) ask this login for a second factor? `groups` are the
    /// names of every group the user is in (primary included), `service` the PAM service.
    /// Mirrors the daemon's resolution (user rule > strictest group rule > default; a service
    /// rule "required" raises it; optional means asked once enrolled) without exemptions.
    pub fn asks(&self, uid: u32, user: &str, groups: &[String], service: &str) -> bool {
        if self.uids.contains(&uid) || self.required_services.contains(service) {
            return true;
        }
        let mode = match self.users.get(user) {
            Some(m) => *m,
            None => groups
                .iter()
                .filter_map(|g| self.groups.get(g))
                .max()
                .copied()
                .unwrap_or(self.default_mode),
        };
        // Not in `uids`: nothing enrolled, so only "required" asks.
        mode == RuleMode::Required
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            default_mode: RuleMode::Optional,
            users: [
                ("bob".to_string(), RuleMode::Disabled),
                ("odd name%".to_string(), RuleMode::Required),
            ]
            .into(),
            groups: [
                ("wheel".to_string(), RuleMode::Required),
                ("staff".to_string(), RuleMode::Optional),
            ]
            .into(),
            required_services: ["sshd".to_string()].into(),
            uids: [0, 1001].into(),
        }
    }

    #[test]
    fn round_trips() {
        let s = sample();
        let text = s.render();
        assert!(text.contains("user odd%20name%25 required\n"), "{text}");
        assert_eq!(Snapshot::parse(&text), Ok(s));
    }

    #[test]
    fn anything_odd_is_refused() {
        let good = sample().render();
        let cases = [
            String::new(),
            good.replace("end\n", ""),
            good.replace("twofactor-offline 1", "twofactor-offline 2"),
            good.replace("default optional", "default maybe"),
            good.replace("uid 1001", "uid -1"),
            good.replace("uid 1001", "uid 1001 extra"),
            good.replace("end\n", "frobnicate\nend\n"),
            good.replace("end\n", "default optional\nend\n"),
            good.replace("end\n", "end\nuid 5\n"),
            good.replace("user bob", "user %zz"),
            good.replace("\ndefault optional", ""),
        ];
        for c in cases {
            assert!(Snapshot::parse(&c).is_err(), "{c:?}");
        }
    }

    #[test]
    fn who_is_asked() {
        let s = sample();
        let none: Vec<String> = Vec::new();
        // Optional, nothing enrolled: not asked.
        assert!(!s.asks(1000, "carol", &none, "login"));
        // ... except where a service requires it.
        assert!(s.asks(1000, "carol", &none, "sshd"));
        // State (enrolled, starter codes, admin requirement): asked, root too.
        assert!(s.asks(1001, "dave", &none, "login"));
        assert!(s.asks(0, "root", &none, "login"));
        // Group rules: the strictest wins; a user rule beats them.
        assert!(s.asks(1002, "erin", &["staff".into(), "wheel".into()], "login"));
        assert!(!s.asks(1002, "erin", &["staff".into()], "login"));
        assert!(!s.asks(1003, "bob", &["wheel".into()], "login"));
        assert!(s.asks(1004, "odd name%", &none, "login"));
        // A required default asks everybody without a milder rule.
        let strict = Snapshot {
            default_mode: RuleMode::Required,
            ..s
        };
        assert!(strict.asks(1000, "carol", &none, "login"));
        assert!(!strict.asks(1003, "bob", &none, "login"));
        assert!(!strict.asks(1002, "erin", &["staff".into()], "login"));
    }
}
