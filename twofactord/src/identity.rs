//! Users and groups, resolved through NSS so that LDAP/SSSD accounts work.
//!
//! The store identifies a user by the numeric uid. Policy rules name users and groups, and are
//! matched against the names in an [`Account`], which NSS fills in when the account is looked up:
//! the daemon looks an account up for each request and caches nothing, so a group created (or a
//! user added to a group) after the daemon started counts from the next login on.
#![forbid(unsafe_code)]

use nix::unistd::{Gid, Group, Uid, User};

/// A resolved account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name as NSS reports it.
    pub name: String,
    /// The identity.
    pub uid: u32,
    /// Primary and supplementary gids.
    pub gids: Vec<u32>,
    /// The names of those groups, as NSS reported them at lookup time (a gid without a name is
    /// left out). Policy group rules match these.
    pub groups: Vec<String>,
}

/// Account lookups. [`Nss`] is the real one; tests use a table.
pub trait Accounts: Send + Sync {
    /// Looks up a user by name, with their groups.
    fn user_by_name(&self, name: &str) -> Option<Account>;
    /// Looks up a user by uid, with their groups.
    fn user_by_uid(&self, uid: u32) -> Option<Account>;
    /// Looks up a group's gid (the policy asks, to warn about names NSS does not know).
    fn group_by_name(&self, name: &str) -> Option<u32>;
}

/// Longest user name accepted from the bus.
pub const MAX_NAME_LEN: usize = 256;

/// Checks a user name from an untrusted source before it reaches NSS.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty user name".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("user name longer than {MAX_NAME_LEN} bytes"));
    }
    if name
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == ':' || c == '/')
    {
        return Err("user name contains characters that are not allowed".into());
    }
    Ok(())
}

/// The system's name service (getpwnam_r, getgrouplist, getgrnam_r).
#[derive(Debug, Clone, Copy, Default)]
pub struct Nss;

fn account_of(user: User) -> Account {
    let mut gids = vec![user.gid.as_raw()];
    if let Ok(cname) = std::ffi::CString::new(user.name.as_bytes())
        && let Ok(list) = nix::unistd::getgrouplist(&cname, user.gid)
    {
        for g in list {
            if !gids.contains(&g.as_raw()) {
                gids.push(g.as_raw());
            }
        }
    }
    // Resolved now, not when the policy loaded: a group created later is seen at once.
    let groups = gids
        .iter()
        .filter_map(|&g| Group::from_gid(Gid::from_raw(g)).ok().flatten())
        .map(|g| g.name)
        .collect();
    Account {
        name: user.name,
        uid: user.uid.as_raw(),
        gids,
        groups,
    }
}

impl Accounts for Nss {
    fn user_by_name(&self, name: &str) -> Option<Account> {
        validate_name(name).ok()?;
        User::from_name(name).ok().flatten().map(account_of)
    }

    fn user_by_uid(&self, uid: u32) -> Option<Account> {
        User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(account_of)
    }

    fn group_by_name(&self, name: &str) -> Option<u32> {
        Group::from_name(name)
            .ok()
            .flatten()
            .map(|g: Group| Gid::as_raw(g.gid))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    pub use crate::testkit::FakeAccounts;

    #[test]
    fn odd_names_are_refused_before_nss() {
        for bad in [
            "",
            "a b",
            "a\nb",
            "a:b",
            "../etc",
            "x\u{0}y",
            &"x".repeat(300),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
            assert_eq!(Nss.user_by_name(bad), None);
        }
        assert!(validate_name("alice.smith-2@corp").is_ok());
    }

    #[test]
    fn root_resolves_through_nss() {
        let root = Nss.user_by_name("root").expect("root exists");
        assert_eq!(root.uid, 0);
        assert!(root.gids.contains(&0));
        assert!(root.groups.iter().any(|g| g == "root"), "{:?}", root.groups);
        assert_eq!(Nss.user_by_uid(0).map(|a| a.name), Some("root".into()));
    }
}
