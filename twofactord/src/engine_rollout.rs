//! `Admin.ListUsers`: who the policy asks for a second factor, enrolled or not, for following a
//! rollout. The store knows only users who did something; the others are found where they can
//! be: the members of groups with a `mode = "required"` rule, the `[users.NAME]` rules, every
//! ordinary account when `default_mode = "required"`, and the admin requirements in the store.
//! Enumeration is bounded and can be incomplete (directories that do not enumerate): the answer
//! says so.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};

use twofactor_bus::{BusError, UserStatus};

use super::{Engine, store_err};
use crate::identity::{self, Account};
use crate::policy::{Context, Mode};

/// Most accounts read from the name service for one listing.
pub const MAX_ENUMERATED: usize = 100_000;

/// The answer of `Admin.ListUsers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserList {
    /// One status per user, by uid.
    pub users: Vec<UserStatus>,
    /// Users a required rule applies to may be missing.
    pub partial: bool,
    /// Why (one line each).
    pub notes: Vec<String>,
}

impl Engine {
    /// `Admin.ListUsers`: every user the daemon has state for, and every account it can find
    /// that the policy requires 2FA of (enrolled or not).
    pub fn list_users(&self, caller: &super::Caller) -> Result<UserList, BusError> {
        self.authorize("Admin", "ListUsers", caller, None)?;
        let policy = self.policy();
        let known: BTreeSet<u32> = self
            .store()?
            .known_uids()
            .map_err(store_err)?
            .into_iter()
            .collect();
        let mut notes = Vec::new();
        // Candidates: accounts a required rule may apply to (kept if it does).
        let mut candidates: BTreeSet<u32> = BTreeSet::new();
        let user_rules = policy.required_user_rules();
        let mut names: BTreeSet<String> = user_rules.iter().map(|n| n.to_string()).collect();
        let groups = policy.required_group_rules();
        let everyone = policy.default_mode == Mode::Required;
        let mut primary: BTreeSet<u32> = BTreeSet::new();
        for g in &groups {
            match self.accounts.group_members(g) {
                Some((gid, members)) => {
                    primary.insert(gid);
                    names.extend(members);
                }
                None => notes.push(format!(
                    "group {g} (a required rule) is unknown to the name service: not created \
                     yet, or its directory is unreachable"
                )),
            }
        }
        if everyone || !primary.is_empty() {
            let listed = self.accounts.enumerate_users(MAX_ENUMERATED);
            notes.extend(listed.gaps);
            let uid_min = self.accounts.uid_min();
            for u in listed.users {
                let ordinary = u.uid == 0 || (u.uid >= uid_min && u.uid != identity::OVERFLOW_UID);
                if (everyone && ordinary) || primary.contains(&u.gid) {
                    candidates.insert(u.uid);
                }
            }
        }
        let mut accounts: BTreeMap<u32, Account> = BTreeMap::new();
        for name in &names {
            match self.accounts.user_by_name(name) {
                Some(a) => {
                    candidates.insert(a.uid);
                    accounts.insert(a.uid, a);
                }
                None if user_rules.contains(&name.as_str()) => notes.push(format!(
                    "user {name} (a required rule) is unknown to the name service: not \
                         created yet, or its directory is unreachable"
                )),
                // A member name the group lists but NSS does not resolve: a stale entry.
                None => {}
            }
        }
        let mut users = Vec::new();
        for uid in known.union(&candidates) {
            let account = match accounts.remove(uid) {
                Some(a) => a,
                None => match self.accounts.user_by_uid(*uid) {
                    Some(a) => a,
                    // State of an account that no longer exists (or not now): not listed, as
                    // before; a candidate vanished between enumeration and lookup.
                    None => continue,
                },
            };
            // The store lock is taken per user: logins go on during a long listing.
            let status = {
                let store = self.store()?;
                self.status_of(store.as_ref(), &account, Context::default())?
            };
            if known.contains(uid) || status.mode == Mode::Required.as_str() {
                users.push(status);
            }
        }
        Ok(UserList {
            users,
            partial: !notes.is_empty(),
            notes,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::path::Path;

    use super::*;
    use crate::engine::{Caller, Clock};
    use crate::identity::tests::FakeAccounts;
    use crate::policy::Policy;
    use crate::store::SqliteStore;

    struct Fixed;
    impl Clock for Fixed {
        fn now(&self) -> i64 {
            1_800_000_000
        }
    }

    fn accounts() -> FakeAccounts {
        FakeAccounts::new()
            .user("root", 0, &[0])
            .user("svc", 500, &[500])
            .user("alice", 1000, &[1000, 10])
            .user("bob", 1001, &[1001])
            // wheel is dave's primary group: getgrnam does not name him.
            .user("dave", 1002, &[10])
            .user("erin", 1003, &[1003])
            .user("frank", 1004, &[1004, 10])
            .user("nobody", 65_534, &[65_534])
            .group("wheel", 10)
    }

    fn engine(policy: &str, accounts: FakeAccounts) -> Engine {
        let policy =
            Policy::parse(Path::new("/test/policy.toml"), policy, &accounts).expect("policy");
        Engine::new(
            Box::new(SqliteStore::in_memory().expect("store")),
            policy,
            None,
            Box::new(accounts),
            Box::new(Fixed),
        )
    }

    fn root() -> Caller {
        Caller {
            uid: 0,
            sender: ":1.0".into(),
        }
    }

    fn names(l: &UserList) -> Vec<&str> {
        l.users.iter().map(|u| u.user.as_str()).collect()
    }

    #[test]
    fn required_users_who_never_logged_in_are_listed() {
        let e = engine(
            "default_mode = \"optional\"\n[groups.wheel]\nmode = \"required\"\n\
             [users.erin]\nmode = \"required\"\n[users.alice]\nmode = \"optional\"\n",
            accounts(),
        );
        // Nobody has state yet: the store alone would list no one.
        let l = e.list_users(&root()).expect("list");
        // dave by his primary group, frank as a listed member, erin by her rule; alice's own
        // rule makes her optional.
        assert_eq!(names(&l), ["dave", "erin", "frank"]);
        assert!(l.users.iter().all(|u| u.mode == "required" && !u.enrolled));
        assert!(!l.partial, "{:?}", l.notes);
        // An admin requirement in the store adds bob.
        e.set_required(&root(), "bob", true).expect("require");
        let l = e.list_users(&root()).expect("list");
        assert_eq!(names(&l), ["bob", "dave", "erin", "frank"]);
        // Only admins may ask.
        let bob = Caller {
            uid: 1001,
            sender: ":1.9".into(),
        };
        assert!(matches!(e.list_users(&bob), Err(BusError::AccessDenied(_))));
    }

    #[test]
    fn default_required_lists_ordinary_accounts_and_root() {
        let e = engine("default_mode = \"required\"\n", accounts());
        let l = e.list_users(&root()).expect("list");
        assert_eq!(
            names(&l),
            ["root", "alice", "bob", "dave", "erin", "frank"],
            "no system account below UID_MIN, no nobody"
        );
        assert!(!l.partial);
    }

    #[test]
    fn a_directory_that_does_not_enumerate_makes_the_answer_partial() {
        let accounts = accounts()
            .user("gina", 1005, &[10])
            .unlisted("gina")
            .unlisted("frank");
        let e = engine("[groups.wheel]\nmode = \"required\"\n", accounts);
        let l = e.list_users(&root()).expect("list");
        // frank is still found as a member the group names; gina (primary group, unlisted) is
        // not, and the answer says it may be partial.
        assert_eq!(names(&l), ["alice", "dave", "frank"]);
        assert!(l.partial);
        assert!(
            l.notes.iter().any(|n| n.contains("does not enumerate")),
            "{:?}",
            l.notes
        );
    }

    #[test]
    fn unknown_groups_and_users_of_required_rules_are_noted() {
        let e = engine(
            "[groups.ghosts]\nmode = \"required\"\n[users.casper]\nmode = \"required\"\n",
            accounts(),
        );
        let l = e.list_users(&root()).expect("list");
        assert!(l.users.is_empty());
        assert!(l.partial);
        assert_eq!(l.notes.len(), 2, "{:?}", l.notes);
        assert!(l.notes[0].contains("group ghosts"), "{:?}", l.notes);
        assert!(l.notes[1].contains("user casper"), "{:?}", l.notes);
    }
}
