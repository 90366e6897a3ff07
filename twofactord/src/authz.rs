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
    ("Admin", "Show", Access::Admin),
    ("Admin", "Require", Access::Admin),
    ("Admin", "Release", Access::Admin),
    ("Admin", "Reset", Access::Admin),
    ("Admin", "Unlock", Access::Admin),
    ("Admin", "IssueCodes", Access::Admin),
    ("Admin", "Grace", Access::Admin),
    ("Admin", "ImportTotp", Access::Admin),
    ("Admin", "ImportKeys", Access::Admin),
    ("Admin", "ListUsers", Access::Admin),
    ("Admin", "Audit", Access::Admin),
    ("Admin", "ReloadPolicy", Access::Admin),
];

/// The right `interface`.`method` needs; `None` for a method missing from the table, which the
/// caller must treat as "denied".
pub fn access_for(interface: &str, method: &str) -> Option<Access> {
    TABLE
        .iter()
        .find(|(i, m, _)| *i == interface && *m == method)
        .map(|(_, _, a)| *a)
}

/// Whether a caller with `caller_uid` (admin or not) may act on `target_uid`.
#[must_use]
pub fn permits(access: Access, caller_uid: u32, caller_is_admin: bool, target_uid: u32) -> bool {
    let own = caller_uid == target_uid;
    match access {
        Access::SelfOrRoot => own || caller_uid == 0,
        Access::SelfOrAdmin => own || caller_is_admin,
        Access::SelfOnly => own,
        Access::Admin => caller_is_admin,
    }
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
        // (access, caller, caller_is_admin, target, allowed)
        let rows = [
            (Access::SelfOrRoot, 1000, false, 1000, true),
            (Access::SelfOrRoot, 1000, false, 1001, false),
            (Access::SelfOrRoot, 1000, true, 1001, false),
            (Access::SelfOrRoot, 0, true, 1001, true),
            (Access::SelfOrAdmin, 1000, false, 1000, true),
            (Access::SelfOrAdmin, 1000, false, 1001, false),
            (Access::SelfOrAdmin, 1000, true, 1001, true),
            (Access::SelfOnly, 1000, false, 1000, true),
            (Access::SelfOnly, 0, true, 1000, false),
            (Access::Admin, 1000, false, 1000, false),
            (Access::Admin, 1000, true, 1001, true),
            (Access::Admin, 0, true, 0, true),
        ];
        for (access, caller, admin, target, want) in rows {
            assert_eq!(
                permits(access, caller, admin, target),
                want,
                "{access:?} {caller} {admin} {target}"
            );
        }
        assert_eq!(access_for("Admin", "Reset"), Some(Access::Admin));
        assert_eq!(access_for("Admin", "Nope"), None);
    }
}
