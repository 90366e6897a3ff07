//! `Admin.Backup`: a consistent copy of the whole state while the daemon runs, for root only (it
//! holds every secret). The store writes it to a private, unlinked file in the state directory;
//! its descriptor goes to the caller over the bus, so the daemon never opens a path the caller
//! names.
#![forbid(unsafe_code)]

use twofactor_bus::BusError;

use super::{Caller, Engine};
use crate::identity::Account;

impl Engine {
    /// `Admin.Backup`: the snapshot, opened for reading, and its size in bytes. Audited.
    pub fn backup(&self, caller: &Caller) -> Result<(std::fs::File, u64), BusError> {
        self.authorize("Admin", "Backup", caller, None)?;
        let actor = self
            .accounts
            .user_by_uid(caller.uid)
            .unwrap_or_else(|| Account {
                name: format!("uid {}", caller.uid),
                uid: caller.uid,
                gids: Vec::new(),
                groups: Vec::new(),
            });
        let mut store = self.store()?;
        let made = store.snapshot().and_then(|f| {
            let len = f
                .metadata()
                .map_err(|e| crate::store::StoreError(format!("snapshot: {e}")))?
                .len();
            Ok((f, len))
        });
        match made {
            Ok((file, len)) => {
                let r = self.record(
                    &actor,
                    caller,
                    "admin-backup",
                    "success",
                    None,
                    format!("state snapshot of {len} bytes handed to the caller"),
                );
                self.audit(store.as_mut(), r);
                Ok((file, len))
            }
            Err(e) => {
                crate::log::error(&format!("backup failed: {e}"));
                let r = self.record(&actor, caller, "admin-backup", "failure", None, e.0.clone());
                self.audit(store.as_mut(), r);
                Err(BusError::StateUnavailable(format!(
                    "cannot make a backup: {e}; nothing was changed"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::io::Read;
    use std::path::Path;

    use super::*;
    use crate::engine::Clock;
    use crate::identity::tests::FakeAccounts;
    use crate::policy::Policy;
    use crate::store::{SqliteStore, Store};

    struct Fixed;
    impl Clock for Fixed {
        fn now(&self) -> i64 {
            1_800_000_000
        }
    }

    fn caller(uid: u32) -> Caller {
        Caller {
            uid,
            sender: format!(":1.{uid}"),
        }
    }

    #[test]
    fn root_gets_a_restorable_snapshot_admins_do_not() {
        let accounts = FakeAccounts::new()
            .user("root", 0, &[0])
            .user("alice", 1000, &[1000, 10])
            .user("bob", 1001, &[1001])
            .group("wheel", 10);
        let policy = Policy::parse(
            Path::new("/test/policy.toml"),
            "admin_groups = [\"wheel\"]\n",
            &accounts,
        )
        .expect("policy");
        let dir = tempfile::tempdir().expect("dir");
        let state = dir.path().join("state");
        let e = Engine::new(
            Box::new(SqliteStore::open(&state).expect("store")),
            policy,
            None,
            Box::new(accounts),
            Box::new(Fixed),
        );
        e.set_required(&caller(0), "bob", true).expect("require");
        // An admin-group member is refused: a backup holds every secret.
        assert!(matches!(
            e.backup(&caller(1000)),
            Err(BusError::AccessDenied(m)) if m.contains("root")
        ));
        let (mut file, len) = e.backup(&caller(0)).expect("backup");
        // Nothing is left behind in the state directory (the file is already unlinked).
        let left: Vec<_> = std::fs::read_dir(&state)
            .unwrap()
            .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("snapshot"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes.len() as u64, len);
        assert!(bytes.starts_with(b"SQLite format 3\0"));
        let copy = dir.path().join("copy.sqlite3");
        std::fs::write(&copy, &bytes).unwrap();
        let rec = crate::store::AuditRecord {
            time: 1,
            uid: 0,
            user: "root".into(),
            event: "state-restore".into(),
            result: "success".into(),
            service: String::new(),
            rhost: String::new(),
            actor: "root".into(),
            detail: String::new(),
        };
        let info = crate::store::check_restorable(&copy, &rec).expect("restorable");
        assert_eq!(info.users, 1);
        // Audited, with the caller as actor.
        let store = SqliteStore::open(&state).expect("reopen");
        let events: Vec<_> = store
            .audit(None, 0, 100)
            .unwrap()
            .into_iter()
            .map(|r| (r.event, r.result, r.actor))
            .collect();
        assert!(events.contains(&("admin-backup".into(), "success".into(), "root".into())));
    }
}
