//! Backup and restore: `twofactorctl admin backup` while the daemon runs (root only), and
//! `twofactord restore` with the daemon stopped, through the real daemon on a real bus.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use twofactor_tests::*;

fn policy() -> String {
    format!("default_mode = \"optional\"\nadmin_groups = [\"{ADMINS}\"]\n")
}

/// `twofactord restore --state-dir STATE FILE`, as root.
#[allow(clippy::expect_used)]
fn restore(env: &Env, file: &Path) -> Out {
    let out = Command::new(bin("twofactord"))
        .arg("restore")
        .arg("--state-dir")
        .arg(&env.state)
        .arg(file)
        .output()
        .expect("twofactord restore");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn backup_path(env: &Env, name: &str) -> PathBuf {
    env.dir.path().join(name)
}

#[allow(clippy::expect_used)]
fn backup(env: &Env, file: &Path) -> Out {
    env.ctl(&["admin", "backup", file.to_str().expect("utf-8")])
}

#[test]
fn backup_while_running_then_restore_brings_the_enrollment_back() {
    let mut env = Env::new(&policy());
    let alice = env.enroll(ALICE);
    env.enroll(BOB);
    let file = backup_path(&env, "state-backup.sqlite3");
    let out = backup(&env, &file).ok();
    assert!(out.stdout.contains("0600"), "{out:?}");
    let meta = std::fs::symlink_metadata(&file).expect("backup written");
    assert!(meta.file_type().is_file());
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), 0);
    // Audited.
    let audit = env.ctl(&["--json", "admin", "audit"]).ok().json();
    assert!(
        audit
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["event"] == "admin-backup" && e["result"] == "success"),
        "{audit}"
    );

    // Under --json: one object on stdout with the file and its size, which is the file's.
    let json_file = backup_path(&env, "state-backup-2.sqlite3");
    let out = env
        .ctl(&[
            "--json",
            "admin",
            "backup",
            json_file.to_str().expect("utf-8"),
        ])
        .ok();
    let j = out.json();
    assert_eq!(j["file"], json_file.to_str().expect("utf-8"), "{j}");
    let size = std::fs::metadata(&json_file).expect("json backup").len();
    assert!(size > 0);
    assert_eq!(j["bytes"].as_u64(), Some(size), "{j}");
    assert!(out.stderr.trim().is_empty(), "{out:?}");

    // The mishap: alice's factor is wiped.
    env.ctl(&["admin", "reset", ALICE]).ok();
    let st = env.ctl(&["--json", "admin", "show", ALICE]).ok().json();
    assert_eq!(st["enrolled"], false, "{st}");

    // Refused while the daemon runs; nothing changes.
    let out = restore(&env, &file);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("running"), "{out:?}");
    assert!(!env.state.join("state.sqlite3.before-restore").exists());

    env.stop_daemon();
    let out = restore(&env, &file);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("before-restore"), "{out:?}");
    let restored = std::fs::metadata(env.state.join("state.sqlite3")).expect("state");
    assert_eq!(restored.mode() & 0o777, 0o600);
    assert_eq!(
        restored.uid(),
        std::fs::metadata(&env.state).expect("dir").uid()
    );
    let before = env.state.join("state.sqlite3.before-restore");
    assert!(before.is_file(), "the previous state is kept");
    assert!(!env.state.join("state.sqlite3-wal").exists());

    env.start_daemon();
    let st = env.ctl(&["--json", "admin", "show", ALICE]).ok().json();
    assert_eq!(st["enrolled"], true, "{st}");
    // A code from the next step (the enrollment's step is spent, and replay state came back
    // with the backup).
    wait_for_fresh_step();
    let code = oathtool(&alice.secret, 30);
    let r = env.login("tf", ALICE, &[&code]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    // The restore is in the audit log.
    let audit = env
        .ctl(&["--json", "admin", "audit", "--user", "root"])
        .ok()
        .json();
    assert!(
        audit
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["event"] == "state-restore"),
        "{audit}"
    );

    // A second restore would overwrite the kept state: refused until it is moved away.
    env.stop_daemon();
    let out = restore(&env, &file);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("before-restore"), "{out:?}");
    env.start_daemon();
}

#[test]
fn only_root_may_back_up() {
    let env = Env::new(&policy());
    env.enroll(ALICE);
    let dir = env.dir.path().join("carol");
    std::fs::create_dir(&dir).expect("dir");
    std::os::unix::fs::chown(&dir, Some(uid_of(CAROL)), None).expect("chown");
    let file = dir.join("b.sqlite3");
    for user in [CAROL, ALICE] {
        let out = env.ctl_as(
            user,
            &["admin", "backup", file.to_str().expect("utf-8")],
            None,
        );
        assert_eq!(out.code, 3, "{user}: {out:?}");
        assert!(out.stderr.contains("access denied"), "{user}: {out:?}");
        assert!(!file.exists(), "{user}");
        let out = env.busctl_as(user, "Admin", "Backup", &[]);
        assert_ne!(out.code, 0, "{user}: {out:?}");
        assert!(
            out.stderr.contains("ccess denied") || out.stderr.contains("needs root"),
            "{user}: {out:?}"
        );
    }
    // CAROL is an admin for everything else.
    env.ctl_as(CAROL, &["admin", "list"], None).ok();
}

#[test]
fn backup_never_overwrites_by_surprise_nor_writes_through_a_symlink() {
    let env = Env::new(&policy());
    env.enroll(ALICE);
    let file = backup_path(&env, "existing");
    std::fs::write(&file, b"precious").expect("write");
    let out = backup(&env, &file);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("--force"), "{out:?}");
    assert_eq!(std::fs::read(&file).expect("read"), b"precious");
    // --force replaces it, mode 0600.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    env.ctl(&["admin", "backup", "--force", file.to_str().expect("utf-8")])
        .ok();
    assert!(
        std::fs::read(&file)
            .expect("read")
            .starts_with(b"SQLite format 3\0")
    );
    assert_eq!(
        std::fs::metadata(&file).expect("meta").mode() & 0o777,
        0o600
    );

    // A symlink is refused, with or without --force: its target is untouched.
    let target = backup_path(&env, "target");
    std::fs::write(&target, b"keep").expect("write");
    let link = backup_path(&env, "link");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let dangling = backup_path(&env, "dangling");
    std::os::unix::fs::symlink(backup_path(&env, "nowhere"), &dangling).expect("symlink");
    for args in [&[][..], &["--force"]] {
        for l in [&link, &dangling] {
            let mut a = vec!["admin", "backup"];
            a.extend_from_slice(args);
            a.push(l.to_str().expect("utf-8"));
            let out = env.ctl(&a);
            assert_ne!(out.code, 0, "{a:?}: {out:?}");
            assert!(out.stderr.contains("symbolic link"), "{out:?}");
        }
    }
    assert_eq!(std::fs::read(&target).expect("read"), b"keep");
    assert!(!backup_path(&env, "nowhere").exists());
    // Nothing else was left beside them (no temporary copies).
    let mut names: Vec<String> = std::fs::read_dir(env.dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    names.sort();
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn restore_refuses_garbage_foreign_databases_and_unsafe_files() {
    let mut env = Env::new(&policy());
    let alice = env.enroll(ALICE);
    let good = backup_path(&env, "good.sqlite3");
    backup(&env, &good).ok();
    env.stop_daemon();
    let state = env.state.join("state.sqlite3");
    let before = std::fs::read(&state).expect("state");

    let garbage = backup_path(&env, "garbage");
    std::fs::write(&garbage, b"this is not a database\n").expect("write");
    let empty = backup_path(&env, "empty");
    std::fs::write(&empty, b"").expect("write");
    // An SQLite database, but not ours.
    let foreign = backup_path(&env, "foreign.sqlite3");
    {
        let c = rusqlite::Connection::open(&foreign).expect("open");
        c.execute_batch("CREATE TABLE users (id INTEGER); PRAGMA user_version = 3;")
            .expect("schema");
    }
    // Ours, from a newer daemon.
    let newer = backup_path(&env, "newer.sqlite3");
    std::fs::copy(&good, &newer).expect("copy");
    {
        let c = rusqlite::Connection::open(&newer).expect("open");
        c.pragma_update(None, "user_version", 99).expect("version");
    }
    // Ours, with a trigger planted in it.
    let trapped = backup_path(&env, "trapped.sqlite3");
    std::fs::copy(&good, &trapped).expect("copy");
    {
        let c = rusqlite::Connection::open(&trapped).expect("open");
        c.execute_batch("CREATE TRIGGER t AFTER INSERT ON audit BEGIN DELETE FROM totp; END;")
            .expect("trigger");
    }
    // Writable by others; a symlink to a good backup.
    let loose = backup_path(&env, "loose.sqlite3");
    std::fs::copy(&good, &loose).expect("copy");
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let link = backup_path(&env, "link.sqlite3");
    std::os::unix::fs::symlink(&good, &link).expect("symlink");
    let cases: [(&Path, &str); 8] = [
        (&garbage, "not an SQLite database"),
        (&empty, "not an SQLite database"),
        (&foreign, "not a twofactord state database"),
        (&newer, "newer"),
        (&trapped, "triggers"),
        (&loose, "writable"),
        (&link, "symbolic link"),
        (env.dir.path(), "not a regular file"),
    ];
    for (file, why) in cases {
        let out = restore(&env, file);
        assert_ne!(out.code, 0, "{}: {out:?}", file.display());
        assert!(out.stderr.contains(why), "{}: {out:?}", file.display());
        assert!(!out.stderr.contains("panicked"), "{out:?}");
        // Nothing changed: same state, nothing kept aside, no copy left behind.
        assert_eq!(std::fs::read(&state).expect("state"), before);
        let extra: Vec<String> = std::fs::read_dir(&env.state)
            .expect("state dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("restore"))
            .collect();
        assert!(extra.is_empty(), "{extra:?}");
    }
    // The daemon starts on the untouched state and alice still logs in.
    env.start_daemon();
    wait_for_fresh_step();
    let code = oathtool(&alice.secret, 30);
    let r = env.login("tf", ALICE, &[&code]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
}
