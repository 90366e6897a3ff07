//! Who may call what: one table, checked before every method.
//!
//! Callers are identified by the uid the bus daemon reports for the message's sender, never by
//! an argument.
#![forbid(unsafe_code)]

/// The right a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The caller for their own account; uid 0 for anyone (PAM stacks run as root).
    SelfOrRoot,
    /// The caller for their own account; an admin for anyone.
    SelfOrAdmin,
    /// Only the caller's own account (no target argument).
    SelfOnly,
    /// uid 0 or a member of the policy's admin groups.
    Admin,
    /// Changes a user's factors, requirement, grace, codes or lockout: uid 0 or an admin, but
    /// only uid 0 when the target is root or an admin (an admin cannot take over root's or
    /// another admin's second factor, nor loosen their own).
    AdminOverUsers,
    /// uid 0 only, whatever the policy's admin groups: a state backup holds every secret.
    RootOnly,
}

/// (interface suffix, method, right). Every method of the interface XML has exactly one row.
pub const TABLE: &[(&str, &str, Access)] = &[
    ("Login", "BeginLogin", Access::SelfOrRoot),
    // Continue and Cancel are also bound to the sender that began the login.
    ("Login", "Continue", Access::SelfOrRoot),
    ("Login", "Cancel", Access::SelfOrRoot),
    ("Login", "Assert", Access::SelfOrRoot),
    ("Login", "SkipKey", Access::SelfOrRoot),
    ("Enrollment", "Status", Access::SelfOrAdmin),
    ("Enrollment", "Explain", Access::SelfOrAdmin),
    ("Enrollment", "BeginTotp", Access::SelfOnly),
    ("Enrollment", "ConfirmTotp", Access::SelfOnly),
    ("Enrollment", "RegenerateRecoveryCodes", Access::SelfOnly),
    ("Enrollment", "Disable", Access::SelfOnly),
    ("Enrollment", "RecentEvents", Access::SelfOnly),
    ("Enrollment", "BeginKey", Access::SelfOnly),
    ("Enrollment", "RegisterKey", Access::SelfOnly),
    ("Enrollment", "ConfirmKey", Access::SelfOnly),
    ("Enrollment", "BeginKeyProof", Access::SelfOnly),
    ("Enrollment", "ProveWithKey", Access::SelfOnly),
    ("Enrollment", "RemoveKey", Access::SelfOnly),
    ("Enrollment", "PolicyStatus", Access::SelfOnly),
    ("Admin", "Show", Access::Admin),
    ("Admin", "Require", Access::AdminOverUsers),
    ("Admin", "Release", Access::AdminOverUsers),
    ("Admin", "Reset", Access::AdminOverUsers),
    ("Admin", "Unlock", Access::AdminOverUsers),
    ("Admin", "IssueCodes", Access::AdminOverUsers),
    ("Admin", "Grace", Access::AdminOverUsers),
    ("Admin", "ImportTotp", Access::AdminOverUsers),
    ("Admin", "ImportKeys", Access::AdminOverUsers),
    ("Admin", "ListUsers", Access::Admin),
    ("Admin", "Audit", Access::Admin),
    ("Admin", "ReloadPolicy", Access::Admin),
    ("Admin", "Backup", Access::RootOnly),
];

/// The right `interface`.`method` needs; `None` for a method missing from the table, which the
/// caller must treat as "denied".
pub fn access_for(interface: &str, method: &str) -> Option<Access> {
    TABLE
        .iter()
        .find(|(i, m, _)| *i == interface && *m == method)
        .map(|(_, _, a)| *a)
}

/// The account a method acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Its uid.
    pub uid: u32,
    /// Root or a member of the policy's admin groups.
    pub privileged: bool,
}

/// Whether a caller with `caller_uid` (admin or not) may act on `target` (`None`: a method
/// with no target account, such as `ListUsers`).
#[must_use]
pub fn permits(
    access: Access,
    caller_uid: u32,
    caller_is_admin: bool,
    target: Option<Target>,
) -> bool {
    let own = target.is_some_and(|t| t.uid == caller_uid);
    match access {
        Access::SelfOrRoot => own || caller_uid == 0,
        Access::SelfOrAdmin => own || caller_is_admin,
        Access::SelfOnly => own,
        Access::Admin => caller_is_admin,
        Access::AdminOverUsers => {
            caller_uid == 0 || (caller_is_admin && target.is_some_and(|t| !t.privileged))
        }
        Access::RootOnly => caller_uid == 0,
    }
}

/// The kinds of caller the matrix distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerKind {
    /// uid 0 (sshd, login, sudo, an admin's root shell).
    Root,
    /// A member of the policy's admin groups.
    AdminMember,
    /// An ordinary user.
    User,
}

/// The kinds of target the matrix distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// The caller's own account.
    Own,
    /// Another ordinary user.
    OtherUser,
    /// root.
    Root,
    /// Another member of the admin groups.
    OtherAdmin,
}

/// Every caller kind, every target kind.
pub const CALLERS: [CallerKind; 3] = [CallerKind::Root, CallerKind::AdminMember, CallerKind::User];
/// Every target kind.
pub const TARGETS: [TargetKind; 4] = [
    TargetKind::Own,
    TargetKind::OtherUser,
    TargetKind::Root,
    TargetKind::OtherAdmin,
];

/// Whether `caller` may call a method with right `access` on `target`: the caller × method ×
/// target table (printed in twofactord(8)), derived from [`permits`] with example uids.
#[must_use]
pub fn matrix_cell(access: Access, caller: CallerKind, target: TargetKind) -> bool {
    let (caller_uid, caller_is_admin) = match caller {
        CallerKind::Root => (0, true),
        CallerKind::AdminMember => (1000, true),
        CallerKind::User => (1001, false),
    };
    let target = match target {
        TargetKind::Own => Target {
            uid: caller_uid,
            privileged: caller_is_admin,
        },
        TargetKind::OtherUser => Target {
            uid: 2000,
            privileged: false,
        },
        TargetKind::Root => Target {
            uid: 0,
            privileged: true,
        },
        TargetKind::OtherAdmin => Target {
            uid: 2001,
            privileged: true,
        },
    };
    permits(access, caller_uid, caller_is_admin, Some(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_of_the_contract_has_exactly_one_row() {
        let xml = twofactor_bus::INTERFACE_XML;
        let mut current = "";
        let mut methods = Vec::new();
        for line in xml.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("<interface name=\"org.twofactor.TwoFactor1.") {
                current = rest.split('"').next().unwrap_or("");
            } else if let Some(rest) = line.strip_prefix("<method name=\"") {
                methods.push((
                    current.to_string(),
                    rest.split('"').next().unwrap_or("").to_string(),
                ));
            }
        }
        assert_eq!(methods.len(), TABLE.len(), "{methods:?}");
        for (i, m) in &methods {
            let rows = TABLE
                .iter()
                .filter(|(ti, tm, _)| ti == i && tm == m)
                .count();
            assert_eq!(rows, 1, "{i}.{m}");
        }
    }

    #[test]
    fn rights_matrix() {
        // (access, caller, caller_is_admin, target uid, target privileged, allowed)
        let rows = [
            (Access::SelfOrRoot, 1000, false, 1000, false, true),
            (Access::SelfOrRoot, 1000, false, 1001, false, false),
            (Access::SelfOrRoot, 1000, true, 1001, false, false),
            (Access::SelfOrRoot, 0, true, 1001, false, true),
            (Access::SelfOrAdmin, 1000, false, 1000, false, true),
            (Access::SelfOrAdmin, 1000, false, 1001, false, false),
            (Access::SelfOrAdmin, 1000, true, 1001, false, true),
            (Access::SelfOnly, 1000, false, 1000, false, true),
            (Access::SelfOnly, 0, true, 1000, false, false),
            (Access::Admin, 1000, false, 1000, false, false),
            (Access::Admin, 1000, true, 1001, false, true),
            (Access::Admin, 0, true, 0, true, true),
            (Access::AdminOverUsers, 1000, true, 1001, false, true),
            (Access::AdminOverUsers, 1000, true, 0, true, false),
            (Access::AdminOverUsers, 1000, true, 1002, true, false),
            (Access::AdminOverUsers, 1000, true, 1000, true, false),
            (Access::AdminOverUsers, 1000, false, 1001, false, false),
            (Access::AdminOverUsers, 0, true, 0, true, true),
            (Access::AdminOverUsers, 0, true, 1002, true, true),
        ];
        for (access, caller, admin, uid, privileged, want) in rows {
            let target = Some(Target { uid, privileged });
            assert_eq!(
                permits(access, caller, admin, target),
                want,
                "{access:?} {caller} {admin} {uid} {privileged}"
            );
        }
        assert!(!permits(Access::SelfOnly, 1000, false, None));
        assert!(!permits(Access::AdminOverUsers, 1000, true, None));
        assert!(permits(Access::Admin, 1000, true, None));
        assert!(permits(Access::RootOnly, 0, true, None));
        assert!(!permits(Access::RootOnly, 1000, true, None));
        assert!(!permits(Access::RootOnly, 1000, false, None));
        assert_eq!(access_for("Admin", "Backup"), Some(Access::RootOnly));
        assert_eq!(access_for("Admin", "Reset"), Some(Access::AdminOverUsers));
        assert_eq!(access_for("Admin", "Nope"), None);
    }

    /// The caller × method × target table, written out by hand: one row per (method, caller),
    /// the columns own / other user / root / other admin. The man page prints the same table.
    #[test]
    fn caller_method_target_table() {
        use CallerKind::*;
        const Y: bool = true;
        const N: bool = false;
        let expect: &[(Access, CallerKind, [bool; 4])] = &[
            (Access::SelfOrRoot, Root, [Y, Y, Y, Y]),
            (Access::SelfOrRoot, AdminMember, [Y, N, N, N]),
            (Access::SelfOrRoot, User, [Y, N, N, N]),
            (Access::SelfOrAdmin, Root, [Y, Y, Y, Y]),
            (Access::SelfOrAdmin, AdminMember, [Y, Y, Y, Y]),
            (Access::SelfOrAdmin, User, [Y, N, N, N]),
            // For a root caller, the root column is their own account.
            (Access::SelfOnly, Root, [Y, N, Y, N]),
            (Access::SelfOnly, AdminMember, [Y, N, N, N]),
            (Access::SelfOnly, User, [Y, N, N, N]),
            (Access::Admin, Root, [Y, Y, Y, Y]),
            (Access::Admin, AdminMember, [Y, Y, Y, Y]),
            (Access::Admin, User, [N, N, N, N]),
            (Access::AdminOverUsers, Root, [Y, Y, Y, Y]),
            (Access::AdminOverUsers, AdminMember, [N, Y, N, N]),
            (Access::AdminOverUsers, User, [N, N, N, N]),
            (Access::RootOnly, Root, [Y, Y, Y, Y]),
            (Access::RootOnly, AdminMember, [N, N, N, N]),
            (Access::RootOnly, User, [N, N, N, N]),
        ];
        let mut cells = 0;
        for (_, method, access) in TABLE {
            for caller in CALLERS {
                let row = expect
                    .iter()
                    .find(|(a, c, _)| a == access && *c == caller)
                    .map(|(_, _, r)| r)
                    .expect("every access kind has a row per caller");
                for (i, target) in TARGETS.iter().enumerate() {
                    assert_eq!(
                        matrix_cell(*access, caller, *target),
                        row[i],
                        "{method} {caller:?} {target:?}"
                    );
                    cells += 1;
                }
            }
        }
        assert_eq!(cells, TABLE.len() * 12);
    }

    /// What the man page says one caller kind may do with `access`, derived from the matrix
    /// (so the wording follows [`permits`], not a second copy of it).
    fn wording(access: Access, caller: CallerKind) -> &'static str {
        let cells: Vec<bool> = TARGETS
            .iter()
            .map(|t| matrix_cell(access, caller, *t))
            .collect();
        // For a root caller, root is their own account.
        let own_only = match caller {
            CallerKind::Root => [true, false, true, false],
            _ => [true, false, false, false],
        };
        match cells.as_slice() {
            [true, true, true, true] => "any account",
            [false, false, false, false] => "none",
            [false, true, false, false] => {
                "other ordinary users only (not their own account, not root, not another admin)"
            }
            c if c == own_only => "own account only",
            other => panic!("{access:?} {caller:?} {other:?}: no wording for this row, add one"),
        }
    }

    /// The body of a man page entry for `access`: one line per run of callers (root, admins,
    /// users) that may do the same.
    fn man_body(access: Access) -> Vec<String> {
        let names = ["root", "admins", "users"];
        let words: Vec<&str> = CALLERS.iter().map(|c| wording(access, *c)).collect();
        let mut lines = Vec::new();
        let mut i = 0;
        while i < words.len() {
            let mut j = i + 1;
            while j < words.len() && words[j] == words[i] {
                j += 1;
            }
            let who = match (i, j) {
                (0, 3) => "everyone, root included".to_string(),
                _ => names[i..j].join(" and "),
            };
            lines.push(format!("{who}: {}.", words[i]));
            i = j;
        }
        lines
    }

    /// twofactord(8) "Who may call what" names every method of [`TABLE`] once, with the
    /// rights the table gives it, and nothing else: the two cannot drift apart.
    #[test]
    fn the_man_page_states_the_table() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/man/twofactord.8");
        let man = std::fs::read_to_string(&path).expect("twofactord.8");
        let section: Vec<&str> = man
            .lines()
            .skip_while(|l| *l != ".SS Who may call what")
            .skip(1)
            .take_while(|l| !l.starts_with(".SS") && !l.starts_with(".SH"))
            .collect();
        assert!(!section.is_empty(), "no section \"Who may call what\"");
        // (methods named, body lines) of each .TP entry, up to the first .PP after them.
        type Entry = (Vec<(String, String)>, Vec<String>);
        let mut entries: Vec<Entry> = Vec::new();
        let mut lines = section.iter().skip_while(|l| **l != ".TP").peekable();
        while let Some(line) = lines.next() {
            if *line == ".PP" {
                break;
            }
            assert_eq!(*line, ".TP", "an entry starts with .TP");
            let heading = lines
                .next()
                .and_then(|h| h.strip_prefix(".B "))
                .expect("an entry's heading is a .B line");
            let mut interface = "";
            let mut methods = Vec::new();
            for item in heading.split(", ") {
                let method = match item.split_once('.') {
                    Some((i, m)) => {
                        interface = i;
                        m
                    }
                    None => item,
                };
                assert!(!interface.is_empty(), "{heading}: no interface");
                methods.push((interface.to_string(), method.to_string()));
            }
            let mut body = Vec::new();
            while let Some(l) = lines.next_if(|l| **l != ".TP" && **l != ".PP") {
                body.push(l.to_string());
            }
            entries.push((methods, body));
        }
        let mut named = Vec::new();
        for (methods, body) in &entries {
            for (interface, method) in methods {
                let access = access_for(interface, method)
                    .unwrap_or_else(|| panic!("{interface}.{method} is not in the table"));
                assert_eq!(
                    *body,
                    man_body(access),
                    "the man page's rights for {interface}.{method} ({access:?})"
                );
                named.push((interface.as_str(), method.as_str()));
            }
        }
        for (interface, method, _) in TABLE {
            let times = named
                .iter()
                .filter(|(i, m)| i == interface && m == method)
                .count();
            assert_eq!(
                times, 1,
                "{interface}.{method} named {times} times in the man page"
            );
        }
        assert_eq!(named.len(), TABLE.len());
    }
}
