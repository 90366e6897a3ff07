//! Test doubles for the daemon's seams, for its own unit tests and for the fuzz harness
//! (`twofactor-fuzz`), which drives an [`Engine`](crate::engine::Engine) without a bus.
//!
//! Nothing in the daemon uses them: they only replace what the binary passes to `Engine::new`
//! (NSS accounts, the real clock). Public but hidden from the docs, and not behind a cargo
//! feature, so that `--all-features` cannot change what ships.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::engine::Clock;
use crate::identity::{Account, Accounts, Enumerated, Listed};

/// A fixed table of accounts. Group names are filled in at lookup time from the group
/// table, as NSS does.
#[derive(Default)]
pub struct FakeAccounts {
    users: Vec<Account>,
    groups: Vec<(String, u32)>,
    /// Users found by name and uid but not listed by enumeration (a directory without
    /// enumeration).
    hidden: Vec<String>,
}

impl FakeAccounts {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn user(mut self, name: &str, uid: u32, gids: &[u32]) -> Self {
        self.users.push(Account {
            name: name.into(),
            uid,
            gids: gids.to_vec(),
            groups: Vec::new(),
        });
        self
    }
    pub fn group(mut self, name: &str, gid: u32) -> Self {
        self.groups.push((name.into(), gid));
        self
    }
    /// Makes `name` invisible to enumeration (as LDAP without enumeration).
    pub fn unlisted(mut self, name: &str) -> Self {
        self.hidden.push(name.into());
        self
    }
}

impl FakeAccounts {
    fn looked_up(&self, account: &Account) -> Account {
        let groups = account
            .gids
            .iter()
            .filter_map(|gid| self.groups.iter().find(|g| g.1 == *gid))
            .map(|g| g.0.clone())
            .collect();
        Account {
            groups,
            ..account.clone()
        }
    }
}

impl Accounts for FakeAccounts {
    fn user_by_name(&self, name: &str) -> Option<Account> {
        let a = self.users.iter().find(|a| a.name == name)?;
        Some(self.looked_up(a))
    }
    /// As [`crate::identity::Nss`]: the primary gid only, no group names.
    fn user_by_name_without_groups(&self, name: &str) -> Option<Account> {
        let a = self.users.iter().find(|a| a.name == name)?;
        Some(Account {
            gids: a.gids.first().copied().into_iter().collect(),
            groups: Vec::new(),
            ..a.clone()
        })
    }
    fn user_by_uid(&self, uid: u32) -> Option<Account> {
        let a = self.users.iter().find(|a| a.uid == uid)?;
        Some(self.looked_up(a))
    }
    fn group_by_name(&self, name: &str) -> Option<u32> {
        self.groups.iter().find(|g| g.0 == name).map(|g| g.1)
    }
    /// As getgrnam: the supplementary members only (not those whose primary group it is).
    fn group_members(&self, name: &str) -> Option<(u32, Vec<String>)> {
        let gid = self.group_by_name(name)?;
        let members = self
            .users
            .iter()
            .filter(|u| u.gids.iter().skip(1).any(|g| *g == gid))
            .map(|u| u.name.clone())
            .collect();
        Some((gid, members))
    }
    fn enumerate_users(&self, limit: usize) -> Enumerated {
        let users: Vec<Listed> = self
            .users
            .iter()
            .filter(|u| !self.hidden.contains(&u.name))
            .take(limit)
            .map(|u| Listed {
                name: u.name.clone(),
                uid: u.uid,
                gid: u.gids.first().copied().unwrap_or(u.uid),
            })
            .collect();
        let mut gaps = Vec::new();
        if !self.hidden.is_empty() {
            gaps.push("a directory that does not enumerate".into());
        }
        if users.len() == limit && self.users.len() > limit {
            gaps.push(format!("stopped after {limit} accounts"));
        }
        Enumerated { users, gaps }
    }
}

/// A clock that moves only when told to; clones share the time.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock at `now` (Unix seconds).
    pub fn at(now: i64) -> Self {
        ManualClock(Arc::new(AtomicI64::new(now)))
    }

    /// Moves the clock by `secs` (may be negative: a clock stepped back).
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}
