//! Users and groups, resolved through NSS so that LDAP/SSSD accounts work.
//!
//! The store identifies a user by the numeric uid. Policy rules name users and groups, and are
//! matched against the names in an [`Account`], which NSS fills in when the account is looked up.
//!
//! The daemon keeps what NSS answered for at most [`ACCOUNT_TTL`] ([`Cached`]): a group created,
//! a user added to or removed from a group, or an account created after the daemon started
//! counts at the latest that long after the change (DESIGN §4: a minute at most), at once for a
//! name NSS did not know (misses are not kept), and at once after a policy reload (SIGHUP or
//! `twofactorctl admin reload`), which empties the cache. A login looks its user up once, at
//! `BeginLogin`, and keeps the account for the rest of the conversation.
//!
//! A login whose policy names no group (no group rule, no exempt group) looks the user up
//! without groups ([`Accounts::user_by_name_without_groups`]): the supplementary groups are the
//! expensive part of a lookup (initgroups asks every NSS source), and nothing in that login's
//! decision reads them.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::unistd::{Gid, Group, Uid, User};

/// A resolved account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name as NSS reports it.
    pub name: String,
    /// The identity.
    pub uid: u32,
    /// Primary and supplementary gids (only the primary one when looked up without groups).
    pub gids: Vec<u32>,
    /// The names of those groups, as NSS reported them at lookup time (a gid without a name is
    /// left out). Policy group rules match these. Empty when the account was looked up with
    /// [`Accounts::user_by_name_without_groups`].
    pub groups: Vec<String>,
}

/// Account lookups. [`Nss`] is the real one; tests use a table.
pub trait Accounts: Send + Sync {
    /// Looks up a user by name, with their groups.
    fn user_by_name(&self, name: &str) -> Option<Account>;
    /// Looks up a user by name when no decision will read their groups: `gids` holds the
    /// primary gid only and `groups` is empty (an implementation may fill them in anyway).
    /// Never use the answer for a group rule or an admin check.
    fn user_by_name_without_groups(&self, name: &str) -> Option<Account> {
        self.user_by_name(name)
    }
    /// As [`Accounts::user_by_name_without_groups`], only if the answer is at hand without
    /// waiting (kept from an earlier lookup, or read from a local index): `None` means "ask",
    /// not "no such user".
    fn user_by_name_without_groups_now(&self, name: &str) -> Option<Account> {
        let _ = name;
        None
    }
    /// Looks up a user by uid, with their groups.
    fn user_by_uid(&self, uid: u32) -> Option<Account>;
    /// Looks up a group's gid (the policy asks, to warn about names NSS does not know).
    fn group_by_name(&self, name: &str) -> Option<u32>;
    /// A group's gid and the members its entry names (getgrnam). Users whose *primary* group it
    /// is are usually not among them: find those with [`Accounts::enumerate_users`]. For
    /// listings only; no decision depends on it.
    fn group_members(&self, name: &str) -> Option<(u32, Vec<String>)> {
        self.group_by_name(name).map(|gid| (gid, Vec::new()))
    }
    /// Every account the name service lists (getpwent), at most `limit` of them. Directory
    /// services often do not enumerate (SSSD's default `enumerate = false`), so the answer says
    /// when it may be incomplete. For listings only; no decision depends on it.
    fn enumerate_users(&self, limit: usize) -> Enumerated {
        let _ = limit;
        Enumerated {
            users: Vec::new(),
            gaps: vec!["this account source cannot list its accounts".into()],
        }
    }
    /// The first uid of ordinary accounts (`UID_MIN` of /etc/login.defs, else 1000).
    fn uid_min(&self) -> u32 {
        DEFAULT_UID_MIN
    }
    /// The login name of `uid` (an audit record's actor): no group lookup.
    fn name_of_uid(&self, uid: u32) -> Option<String> {
        self.user_by_uid(uid).map(|a| a.name)
    }
    /// Forgets whatever was kept from earlier lookups (a policy reload asks).
    fn invalidate(&self) {}
}

/// How long [`Cached`] keeps an account, its groups and a group's name.
pub const ACCOUNT_TTL: Duration = Duration::from_secs(30);

/// Entries [`Cached`] keeps per table; past that it starts again empty.
const CACHE_MAX: usize = 4096;

/// A table of answers, each kept for a while.
struct Kept<K, V> {
    ttl: Duration,
    map: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: std::hash::Hash + Eq, V: Clone> Kept<K, V> {
    fn new(ttl: Duration) -> Self {
        Kept {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        let map = self.map.lock().ok()?;
        let (at, v) = map.get(key)?;
        (at.elapsed() < self.ttl).then(|| v.clone())
    }

    fn put(&self, key: K, v: V) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= CACHE_MAX {
                map.retain(|_, (at, _)| at.elapsed() < self.ttl);
                if map.len() >= CACHE_MAX {
                    map.clear();
                }
            }
            map.insert(key, (Instant::now(), v));
        }
    }

    fn clear(&self) {
        if let Ok(mut map) = self.map.lock() {
            map.clear();
        }
    }
}

/// [`Accounts`] that keeps what `A` answered about users (by name and by uid) for a while.
/// Misses are not kept (an account created now is found at once); listings (enumeration,
/// group members) always ask `A`. A change of the local account files (`/etc/passwd`,
/// `/etc/group`: `useradd`, `usermod -aG`, `groupadd`) empties it at once, checked with one
/// `stat` each per lookup; changes in a directory service (LDAP, SSSD) show within the TTL.
pub struct Cached<A> {
    inner: A,
    by_name: Kept<String, Account>,
    by_uid: Kept<u32, Account>,
    /// Names found by uid ([`Accounts::name_of_uid`]).
    name_by_uid: Kept<u32, String>,
    /// Accounts looked up without groups: served only to lookups without groups.
    bare_by_name: Kept<String, Account>,
    watched: Vec<std::path::PathBuf>,
    seen: std::sync::Mutex<Vec<Option<FileStamp>>>,
}

/// What tells that a file changed: inode, size and modification time.
type FileStamp = (u64, u64, i64, i64);

fn stamp(path: &std::path::Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

impl<A: Accounts> Cached<A> {
    /// Keeps answers of `inner` for `ttl` (zero: keeps nothing), emptied whenever the local
    /// account files change.
    pub fn new(inner: A, ttl: Duration) -> Self {
        let watched: Vec<std::path::PathBuf> = ["/etc/passwd", "/etc/group"]
            .iter()
            .map(std::path::PathBuf::from)
            .collect();
        let seen = watched.iter().map(|p| stamp(p)).collect();
        Cached {
            inner,
            by_name: Kept::new(ttl),
            by_uid: Kept::new(ttl),
            name_by_uid: Kept::new(ttl),
            bare_by_name: Kept::new(ttl),
            watched,
            seen: std::sync::Mutex::new(seen),
        }
    }

    /// Empties the cache if a watched file changed since the last look.
    fn check_files(&self) {
        let now: Vec<Option<FileStamp>> = self.watched.iter().map(|p| stamp(p)).collect();
        if let Ok(mut seen) = self.seen.lock()
            && *seen != now
        {
            *seen = now;
            self.by_name.clear();
            self.by_uid.clear();
            self.name_by_uid.clear();
            self.bare_by_name.clear();
        }
    }

    /// Keeps an account found by its uid, under its uid and its name. One found by a name is
    /// kept under names only: the name asked may be an alias of the uid (`toor`, uid 0), and
    /// the uid's own name is what NSS answers for the uid.
    fn keep_by_uid(&self, a: &Account) {
        self.by_name.put(a.name.clone(), a.clone());
        self.by_uid.put(a.uid, a.clone());
    }
}

impl<A: Accounts> Accounts for Cached<A> {
    fn user_by_name(&self, name: &str) -> Option<Account> {
        self.check_files();
        if let Some(a) = self.by_name.get(&name.to_string()) {
            return Some(a);
        }
        let a = self.inner.user_by_name(name)?;
        // NSS may answer for another spelling of the name: keep it under the one asked too.
        if a.name != name {
            self.by_name.put(name.to_string(), a.clone());
        }
        self.by_name.put(a.name.clone(), a.clone());
        Some(a)
    }

    fn user_by_name_without_groups(&self, name: &str) -> Option<Account> {
        self.check_files();
        let key = name.to_string();
        if let Some(a) = self
            .by_name
            .get(&key)
            .or_else(|| self.bare_by_name.get(&key))
        {
            return Some(a);
        }
        let a = self.inner.user_by_name_without_groups(name)?;
        if a.name != name {
            self.bare_by_name.put(key, a.clone());
        }
        self.bare_by_name.put(a.name.clone(), a.clone());
        Some(a)
    }

    fn user_by_name_without_groups_now(&self, name: &str) -> Option<Account> {
        self.check_files();
        let key = name.to_string();
        self.by_name
            .get(&key)
            .or_else(|| self.bare_by_name.get(&key))
            .or_else(|| self.inner.user_by_name_without_groups_now(name))
    }

    fn user_by_uid(&self, uid: u32) -> Option<Account> {
        self.check_files();
        if let Some(a) = self.by_uid.get(&uid) {
            return Some(a);
        }
        let a = self.inner.user_by_uid(uid)?;
        self.keep_by_uid(&a);
        Some(a)
    }

    fn group_by_name(&self, name: &str) -> Option<u32> {
        self.inner.group_by_name(name)
    }

    fn group_members(&self, name: &str) -> Option<(u32, Vec<String>)> {
        self.inner.group_members(name)
    }

    fn enumerate_users(&self, limit: usize) -> Enumerated {
        self.inner.enumerate_users(limit)
    }

    fn uid_min(&self) -> u32 {
        self.inner.uid_min()
    }

    fn name_of_uid(&self, uid: u32) -> Option<String> {
        self.check_files();
        if let Some(name) = self
            .by_uid
            .get(&uid)
            .map(|a| a.name)
            .or_else(|| self.name_by_uid.get(&uid))
        {
            return Some(name);
        }
        let name = self.inner.name_of_uid(uid)?;
        self.name_by_uid.put(uid, name.clone());
        Some(name)
    }

    fn invalidate(&self) {
        self.by_name.clear();
        self.by_uid.clear();
        self.name_by_uid.clear();
        self.bare_by_name.clear();
        self.inner.invalidate();
    }
}

/// `UID_MIN` when /etc/login.defs does not say.
pub const DEFAULT_UID_MIN: u32 = 1000;

/// The overflow uid (`nobody`): never a login account.
pub const OVERFLOW_UID: u32 = 65_534;

/// An account as enumeration lists it (no groups looked up yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Login name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
}

/// What an enumeration of accounts found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enumerated {
    /// The accounts seen.
    pub users: Vec<Listed>,
    /// Why the list may be incomplete (empty: complete as far as the daemon can tell).
    pub gaps: Vec<String>,
}

/// Sources of `passwd` in nsswitch.conf that list all their accounts.
const ENUMERABLE_SOURCES: &[&str] = &["files", "compat", "systemd", "db", "altfiles"];

/// The `passwd:` sources of an nsswitch.conf that may not list every account (`sss`, `ldap`,
/// `winbind`, `nis`, ...).
pub fn unenumerable_sources(nsswitch: &str) -> Vec<String> {
    let Some(line) = nsswitch.lines().find_map(|l| {
        let l = l.split('#').next().unwrap_or("").trim();
        l.strip_prefix("passwd:")
    }) else {
        return Vec::new();
    };
    line.split_whitespace()
        // `[NOTFOUND=return]` and the like are actions, not sources.
        .filter(|w| !w.starts_with('['))
        .filter(|w| !ENUMERABLE_SOURCES.contains(w))
        .map(str::to_string)
        .collect()
}

/// `UID_MIN` from the text of a login.defs.
pub fn parse_uid_min(login_defs: &str) -> Option<u32> {
    login_defs.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        match (words.next(), words.next()) {
            (Some("UID_MIN"), Some(v)) => v.parse().ok(),
            _ => None,
        }
    })
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

    fn user_by_name_without_groups(&self, name: &str) -> Option<Account> {
        validate_name(name).ok()?;
        User::from_name(name).ok().flatten().map(|user| Account {
            gids: vec![user.gid.as_raw()],
            uid: user.uid.as_raw(),
            name: user.name,
            groups: Vec::new(),
        })
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

    fn group_members(&self, name: &str) -> Option<(u32, Vec<String>)> {
        Group::from_name(name)
            .ok()
            .flatten()
            .map(|g: Group| (g.gid.as_raw(), g.mem))
    }

    fn enumerate_users(&self, limit: usize) -> Enumerated {
        let mut gaps = Vec::new();
        let users = match crate::nss_enum::users(limit) {
            Ok((users, truncated)) => {
                if truncated {
                    gaps.push(format!(
                        "stopped after {limit} accounts: the name service lists more"
                    ));
                }
                users
            }
            Err(e) => {
                gaps.push(format!("the name service could not list its accounts: {e}"));
                Vec::new()
            }
        };
        let nsswitch = std::fs::read_to_string("/etc/nsswitch.conf").unwrap_or_default();
        let sources = unenumerable_sources(&nsswitch);
        if !sources.is_empty() {
            gaps.push(format!(
                "accounts from {} (/etc/nsswitch.conf) are listed only if that service \
                 enumerates them (SSSD: enumerate = true); the others are missing",
                sources.join(", ")
            ));
        }
        Enumerated { users, gaps }
    }

    fn name_of_uid(&self, uid: u32) -> Option<String> {
        User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
    }

    fn uid_min(&self) -> u32 {
        std::fs::read_to_string("/etc/login.defs")
            .ok()
            .and_then(|t| parse_uid_min(&t))
            .unwrap_or(DEFAULT_UID_MIN)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    pub use crate::testkit::FakeAccounts;

    /// Counts the lookups that reach the wrapped table.
    struct Counting {
        table: FakeAccounts,
        asked: std::sync::atomic::AtomicUsize,
    }

    impl Accounts for Counting {
        fn user_by_name(&self, name: &str) -> Option<Account> {
            self.asked
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.table.user_by_name(name)
        }
        fn user_by_name_without_groups(&self, name: &str) -> Option<Account> {
            self.asked
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.table.user_by_name_without_groups(name)
        }
        fn user_by_uid(&self, uid: u32) -> Option<Account> {
            self.asked
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.table.user_by_uid(uid)
        }
        fn group_by_name(&self, name: &str) -> Option<u32> {
            self.table.group_by_name(name)
        }
    }

    fn counting() -> Counting {
        Counting {
            table: FakeAccounts::new()
                .user("root", 0, &[0])
                .user("toor", 0, &[0])
                .user("alice", 1000, &[1000, 27])
                .group("alice", 1000)
                .group("sudo", 27),
            asked: Default::default(),
        }
    }

    fn asked(c: &Cached<Counting>) -> usize {
        c.inner.asked.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[test]
    fn the_cache_keeps_accounts_by_name_and_uid() {
        let c = Cached::new(counting(), ACCOUNT_TTL);
        let a = c.user_by_name("alice").expect("alice");
        assert_eq!(a.groups, ["alice", "sudo"]);
        assert_eq!(c.user_by_name("alice"), Some(a.clone()));
        assert_eq!(asked(&c), 1);
        // By uid: asked once (a name may be an alias of its uid), then kept.
        assert_eq!(c.user_by_uid(1000), Some(a.clone()));
        assert_eq!(c.name_of_uid(1000).as_deref(), Some("alice"));
        assert_eq!(c.user_by_uid(1000), Some(a.clone()));
        assert_eq!(asked(&c), 2);
        // Misses are not kept: an account created now is found at once.
        assert_eq!(c.user_by_name("bob"), None);
        assert_eq!(c.user_by_name("bob"), None);
        assert_eq!(asked(&c), 4);
        // A reload empties it.
        c.invalidate();
        assert_eq!(c.user_by_name("alice"), Some(a));
        assert_eq!(asked(&c), 5);
    }

    #[test]
    fn an_account_kept_without_groups_never_answers_a_lookup_that_needs_them() {
        let c = Cached::new(counting(), ACCOUNT_TTL);
        let bare = c.user_by_name_without_groups("alice").expect("alice");
        assert_eq!((bare.uid, bare.gids.as_slice()), (1000, &[1000][..]));
        assert!(bare.groups.is_empty());
        assert_eq!(c.user_by_name_without_groups("alice"), Some(bare));
        assert_eq!(asked(&c), 1, "kept for lookups without groups");
        // A lookup that needs the groups asks again, and is not served the bare account by
        // name or by uid.
        let full = c.user_by_name("alice").expect("alice");
        assert_eq!(full.groups, ["alice", "sudo"]);
        assert_eq!(c.user_by_uid(1000), Some(full.clone()));
        assert_eq!(asked(&c), 3);
        // The full account serves a lookup without groups too.
        assert_eq!(c.user_by_name_without_groups("alice"), Some(full));
        assert_eq!(asked(&c), 3);
        c.invalidate();
        assert!(c.user_by_name_without_groups("alice").is_some());
        assert_eq!(asked(&c), 4, "a reload empties both tables");
    }

    #[test]
    fn an_alias_looked_up_by_name_never_answers_for_its_uid() {
        let c = Cached::new(counting(), ACCOUNT_TTL);
        let toor = c.user_by_name("toor").expect("toor");
        assert_eq!((toor.name.as_str(), toor.uid), ("toor", 0));
        assert_eq!(c.name_of_uid(0).as_deref(), Some("root"));
        assert_eq!(c.user_by_uid(0).map(|a| a.name).as_deref(), Some("root"));
        // Kept by uid from then on, and the alias still by its own name.
        let asked_before = asked(&c);
        assert_eq!(c.name_of_uid(0).as_deref(), Some("root"));
        assert_eq!(c.user_by_name("toor"), Some(toor));
        assert_eq!(asked(&c), asked_before);
    }

    #[test]
    fn the_cache_forgets_after_its_ttl() {
        let c = Cached::new(counting(), Duration::ZERO);
        for _ in 0..3 {
            assert!(c.user_by_name("alice").is_some());
        }
        assert_eq!(asked(&c), 3, "a zero TTL keeps nothing");
        let c = Cached::new(counting(), Duration::from_millis(20));
        assert!(c.user_by_uid(1000).is_some());
        assert!(c.user_by_uid(1000).is_some());
        assert_eq!(asked(&c), 1);
        std::thread::sleep(Duration::from_millis(30));
        assert!(c.user_by_uid(1000).is_some());
        assert_eq!(
            asked(&c),
            2,
            "asked again once the entry is older than the TTL"
        );
        assert!(
            ACCOUNT_TTL <= Duration::from_secs(60),
            "DESIGN §4: a minute at most"
        );
    }

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
    fn nsswitch_sources_that_may_not_enumerate() {
        assert!(unenumerable_sources("passwd: files systemd\ngroup: files sss\n").is_empty());
        assert_eq!(
            unenumerable_sources("# c\npasswd:  files [NOTFOUND=return] sss # x\n"),
            ["sss"]
        );
        assert_eq!(
            unenumerable_sources("passwd: compat ldap winbind"),
            ["ldap", "winbind"]
        );
        assert!(unenumerable_sources("").is_empty());
    }

    #[test]
    fn uid_min_from_login_defs() {
        assert_eq!(
            parse_uid_min("# UID_MIN 5\nUID_MIN\t\t\t 1000\nUID_MAX 60000\n"),
            Some(1000)
        );
        assert_eq!(parse_uid_min("UID_MIN 500"), Some(500));
        assert_eq!(parse_uid_min("UID_MINX 5\nUID_MIN x\n"), None);
    }

    #[test]
    fn enumeration_lists_root_and_is_bounded() {
        let all = Nss.enumerate_users(100_000);
        assert!(
            all.users.iter().any(|u| u.uid == 0 && u.name == "root"),
            "{all:?}"
        );
        let one = Nss.enumerate_users(1);
        assert_eq!(one.users.len(), 1);
        assert!(
            one.gaps.iter().any(|g| g.contains("stopped after 1")),
            "{one:?}"
        );
        // Twice in a row (the cursor is reset).
        assert_eq!(Nss.enumerate_users(100_000).users, all.users);
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
