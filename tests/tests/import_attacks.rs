//! Attacks on the admin imports, performed for real: root runs `twofactorctl admin import` on
//! files that an ordinary user controls (issue 9, items 2 and 7).
//!
//! - A user plants a line for somebody else, with their own credential, in their own pam_u2f
//!   authfile: refused with its line number, nothing imported, and the victim's login with
//!   the attacker's key still fails.
//! - A user's `~/.google_authenticator` (or authfile) is a symlink to `/dev/zero` or
//!   `/etc/shadow`, a FIFO, a device, a directory, another user's file, a hard link to a
//!   root-owned file, oversized, or writable by everyone: refused at once with the path and the
//!   reason, nothing imported; also at the default path `~USER/.google_authenticator`.

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use twofactor_tests::*;

const OPTIONAL: &str = "default_mode = \"optional\"\n";
/// A google-authenticator file as the tool writes it (secret, options, two scratch codes).
const GA_FILE: &str = "RK6R5YLJPYZ56WPX7ZUIA22Z7Q\n\" RATE_LIMIT 3 30\n\" WINDOW_SIZE 3\n\" DISALLOW_REUSE\n\" TOTP_AUTH\n41576704\n56341732\n";
const GA_SECRET: &str = "RK6R5YLJPYZ56WPX7ZUIA22Z7Q";
/// How long a refused import may take (a FIFO used to hang it forever).
const QUICK: Duration = Duration::from_secs(5);

/// `twofactorctl --bus ADDRESS ARGS…` as root, killed (and the test failed) if it takes longer
/// than [`QUICK`].
fn ctl_quick(env: &Env, args: &[&str]) -> Out {
    let mut child = Command::new(bin("twofactorctl"))
        .args(["--bus", &env.address])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("twofactorctl");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if start.elapsed() > QUICK {
            let _ = child.kill();
            let _ = child.wait();
            panic!("twofactorctl {args:?} did not return within {QUICK:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn enrolled(env: &Env, user: &str) -> serde_json::Value {
    env.ctl(&["--json", "admin", "show", user]).ok().json()["enrolled"].clone()
}

fn key_names(env: &Env, user: &str) -> Vec<String> {
    let s = env.ctl(&["--json", "admin", "show", user]).ok().json();
    s["factors"]
        .as_array()
        .expect("factors")
        .iter()
        .filter(|f| f["kind"] == "key")
        .map(|f| f["name"].as_str().expect("name").to_string())
        .collect()
}

/// The user holds exactly one key, the first credential of a pam_u2f line.
fn assert_one_imported_key(env: &Env, user: &str) {
    let names = key_names(env, user);
    assert!(
        names.len() == 1 && names[0].starts_with("pam_u2f-1"),
        "{user}: {names:?}"
    );
}

/// A directory only root can change, inside the test world, for the users' files.
fn home(env: &Env) -> PathBuf {
    let dir = env.dir.path().join("home");
    std::fs::create_dir_all(&dir).expect("home");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// Writes `text` to `path` with `mode`, owned by `user`.
fn user_file(path: &Path, text: &str, user: &str, mode: u32) {
    let _ = std::fs::remove_file(path);
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    std::os::unix::fs::chown(path, Some(uid_of(user)), None).expect("chown");
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

// ---------------------------------------------------------------- pam-u2f: planted lines

#[test]
fn a_line_for_another_user_in_a_users_own_authfile_is_refused_and_plants_nothing() {
    let env = Env::new(OPTIONAL);
    // bob uses an app: 2FA is enforced for him, so a key login needs a key of his.
    let bob = env.enroll(BOB);
    // alice's own key, with a credential for this host's default rp id (as pamu2fcfg makes).
    let key = env.soft_key("alice", false);
    let alice_cred = pam_u2f::credential(&key, ALICE);
    let dir = home(&env);
    let file = dir.join("u2f_keys");

    // The attack: alice's own file holds bob's name with alice's credential.
    user_file(
        &file,
        &format!("{}\n", pam_u2f::line(BOB, &alice_cred)),
        ALICE,
        0o644,
    );
    let out = ctl_quick(&env, &["admin", "import", "pam-u2f", s(&file)]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("{}:1: a line for user \"{BOB}\"", file.display())),
        "{out:?}"
    );
    assert!(out.stderr.contains("nothing was imported"), "{out:?}");
    // With alice's line too: still all or nothing; the planted line is named.
    let both = format!(
        "{}\n{}\n",
        pam_u2f::line(ALICE, &alice_cred),
        pam_u2f::line(BOB, &alice_cred)
    );
    user_file(&file, &both, ALICE, 0o644);
    for args in [
        vec!["admin", "import", "pam-u2f", s(&file)],
        vec!["admin", "import", "pam-u2f", "--dry-run", s(&file)],
        // Naming alice does not make bob's line in her file acceptable.
        vec!["admin", "import", "pam-u2f", "--user", ALICE, s(&file)],
    ] {
        let out = ctl_quick(&env, &args);
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        assert!(
            out.stderr.contains(&format!("{}:2:", file.display())),
            "{out:?}"
        );
        assert!(out.stderr.contains("nothing was imported"), "{out:?}");
        assert!(!out.stdout.contains("Imported"), "{out:?}");
    }
    // Naming bob for alice's file: refused on the owner (strict reading of --user).
    let out = ctl_quick(
        &env,
        &["admin", "import", "pam-u2f", "--user", BOB, s(&file)],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(&format!("is owned by {ALICE}"))
            && out.stderr.contains(&format!("not by {BOB} or root")),
        "{out:?}"
    );
    // Nothing was imported for anybody.
    assert!(key_names(&env, BOB).is_empty());
    assert!(key_names(&env, ALICE).is_empty());
    assert_eq!(enrolled(&env, ALICE), false);
    // And alice's key does not log in as bob: the code prompt, then refused.
    let r = env.key_login(&key, BOB, None, &["000000", "000000", "000000"]);
    assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
    // bob's own factors still work.
    let r = env.login("tf", BOB, &[&bob.recovery[0]]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");

    // The same file with only alice's line: imported, for alice.
    user_file(
        &file,
        &format!("{}\n", pam_u2f::line(ALICE, &alice_cred)),
        ALICE,
        0o600,
    );
    let out = ctl_quick(&env, &["--json", "admin", "import", "pam-u2f", s(&file)]).ok();
    let v = out.json();
    assert_eq!(v["owner"], ALICE, "{v}");
    assert_eq!(v["users"][0]["user"], ALICE, "{v}");
    assert_one_imported_key(&env, ALICE);
    let r = env.key_login(&key, ALICE, None, &[]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    assert!(key_names(&env, BOB).is_empty());
}

#[test]
fn a_root_owned_central_authfile_may_name_anyone_and_user_selects_one() {
    let env = Env::new(OPTIONAL);
    let a = env.soft_key("a", false);
    let b = env.soft_key("b", false);
    let file = home(&env).join("u2f_mappings");
    let text = format!(
        "{}\n{}\n",
        pam_u2f::line(ALICE, &pam_u2f::credential(&a, ALICE)),
        pam_u2f::line(BOB, &pam_u2f::credential(&b, BOB))
    );
    user_file(&file, &text, "root", 0o644);
    ctl_quick(
        &env,
        &["admin", "import", "pam-u2f", "--user", BOB, s(&file)],
    )
    .ok();
    assert_one_imported_key(&env, BOB);
    assert!(key_names(&env, ALICE).is_empty());
    ctl_quick(
        &env,
        &["admin", "import", "pam-u2f", "--user", ALICE, s(&file)],
    )
    .ok();
    assert_eq!(env.key_login(&a, ALICE, None, &[]).rc, rc::SUCCESS);
    assert_eq!(env.key_login(&b, BOB, None, &[]).rc, rc::SUCCESS);
}

// ---------------------------------------------------------------- paths root must not follow

#[test]
fn google_authenticator_import_refuses_symlinks_fifos_and_foreign_files_quickly() {
    let env = Env::new(OPTIONAL);
    let dir = home(&env);
    let path = dir.join("google_authenticator");
    let import = |p: &Path| {
        let start = Instant::now();
        let out = ctl_quick(
            &env,
            &["admin", "import", "google-authenticator", ALICE, s(p)],
        );
        (out, start.elapsed())
    };
    let expect_refused = |out: &Out, why: &str| {
        assert_eq!(out.code, 1, "{why}: {out:?}");
        assert!(
            out.stderr.contains(&format!("{}: ", path.display())),
            "{why}: names the path: {out:?}"
        );
        assert!(out.stderr.contains(why), "{why}: {out:?}");
        assert!(out.stderr.contains("nothing was imported"), "{out:?}");
        assert!(!out.stderr.contains(GA_SECRET), "{out:?}");
    };

    // A symlink to /dev/zero: refused at once, nothing allocated or read.
    std::os::unix::fs::symlink("/dev/zero", &path).expect("symlink");
    let (out, took) = import(&path);
    expect_refused(&out, "symbolic link");
    assert!(took < Duration::from_secs(3), "{took:?}");
    // A symlink to /etc/shadow: not read as root.
    std::fs::remove_file(&path).expect("rm");
    std::os::unix::fs::symlink("/etc/shadow", &path).expect("symlink");
    let (out, _) = import(&path);
    expect_refused(&out, "symbolic link");
    assert!(!out.stderr.contains("root:"), "{out:?}");
    // A symlink to a good file of alice's: still not followed.
    let real = dir.join("real_ga");
    user_file(&real, GA_FILE, ALICE, 0o600);
    std::fs::remove_file(&path).expect("rm");
    std::os::unix::fs::symlink(&real, &path).expect("symlink");
    expect_refused(&import(&path).0, "symbolic link");
    // A FIFO nobody writes to: returns at once instead of hanging.
    std::fs::remove_file(&path).expect("rm");
    let mk = Command::new("mkfifo").arg(&path).status().expect("mkfifo");
    assert!(mk.success());
    std::os::unix::fs::chown(&path, Some(uid_of(ALICE)), None).expect("chown");
    let (out, took) = import(&path);
    expect_refused(&out, "FIFO");
    assert!(took < Duration::from_secs(3), "{took:?}");
    // /dev/zero named directly: a device.
    let out = ctl_quick(
        &env,
        &[
            "admin",
            "import",
            "google-authenticator",
            ALICE,
            "/dev/zero",
        ],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("/dev/zero: is a character device"),
        "{out:?}"
    );
    // A directory.
    std::fs::remove_file(&path).expect("rm");
    std::fs::create_dir(&path).expect("mkdir");
    std::os::unix::fs::chown(&path, Some(uid_of(ALICE)), None).expect("chown");
    expect_refused(&import(&path).0, "a directory");
    std::fs::remove_dir(&path).expect("rmdir");
    // bob's file imported for alice: refused on the owner.
    user_file(&path, GA_FILE, BOB, 0o600);
    expect_refused(&import(&path).0, &format!("is owned by {BOB}"));
    // alice's file, writable by everyone (anyone could have put their secret in it).
    user_file(&path, GA_FILE, ALICE, 0o666);
    expect_refused(&import(&path).0, "writable by its group or by everyone");
    // Too large for a google-authenticator file.
    user_file(&path, &"A".repeat(64 * 1024 + 1), ALICE, 0o600);
    expect_refused(&import(&path).0, "larger than");
    assert_eq!(enrolled(&env, ALICE), false);

    // alice's own plain file: imported, and her app's code logs in.
    user_file(&path, GA_FILE, ALICE, 0o600);
    let (out, _) = import(&path);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(enrolled(&env, ALICE), true);
    wait_for_fresh_step();
    let code = oathtool(GA_SECRET, 0);
    assert_eq!(env.login("tf", ALICE, &[&code]).rc, rc::SUCCESS);
    // A root-owned file (an admin's copy) is accepted for any user.
    user_file(&path, GA_FILE, "root", 0o600);
    ctl_quick(
        &env,
        &["admin", "import", "google-authenticator", BOB, s(&path)],
    )
    .ok();
    assert_eq!(enrolled(&env, BOB), true);
}

#[test]
fn pam_u2f_import_refuses_fifos_symlinks_and_writable_files_quickly() {
    let env = Env::new(OPTIONAL);
    let key = env.soft_key("k", false);
    let line = pam_u2f::line(ALICE, &pam_u2f::credential(&key, ALICE));
    let dir = home(&env);
    let path = dir.join("u2f_keys");
    let real = dir.join("real_keys");
    user_file(&real, &format!("{line}\n"), ALICE, 0o644);
    for dry_run in [false, true] {
        let run = |why: &str| {
            let mut args = vec!["admin", "import", "pam-u2f"];
            if dry_run {
                args.push("--dry-run");
            }
            args.push(s(&path));
            let start = Instant::now();
            let out = ctl_quick(&env, &args);
            assert!(start.elapsed() < Duration::from_secs(3), "{why}: too slow");
            assert_eq!(out.code, 1, "{why}: {out:?}");
            assert!(
                out.stderr.contains(&format!("{}: ", path.display())) && out.stderr.contains(why),
                "{why}: {out:?}"
            );
            assert!(out.stderr.contains("nothing was imported"), "{out:?}");
        };
        let _ = std::fs::remove_file(&path);
        let mk = Command::new("mkfifo").arg(&path).status().expect("mkfifo");
        assert!(mk.success());
        run("FIFO");
        std::fs::remove_file(&path).expect("rm");
        std::os::unix::fs::symlink(&real, &path).expect("symlink");
        run("symbolic link");
        std::fs::remove_file(&path).expect("rm");
        std::os::unix::fs::symlink("/dev/zero", &path).expect("symlink");
        run("symbolic link");
        user_file(&path, &format!("{line}\n"), ALICE, 0o646);
        run("writable by its group or by everyone");
    }
    assert!(key_names(&env, ALICE).is_empty());
}

#[test]
fn pam_u2f_import_refuses_oversize_files_devices_directories_and_links_to_shadow() {
    let env = Env::new(OPTIONAL);
    let key = env.soft_key("k", false);
    let line = pam_u2f::line(ALICE, &pam_u2f::credential(&key, ALICE));
    let dir = home(&env);
    let path = dir.join("u2f_keys");
    let refused = |p: &Path, why: &str| {
        let start = Instant::now();
        let out = ctl_quick(&env, &["admin", "import", "pam-u2f", s(p)]);
        assert!(start.elapsed() < Duration::from_secs(3), "{why}: too slow");
        assert_eq!(out.code, 1, "{why}: {out:?}");
        assert!(
            out.stderr.contains(&format!("{}: ", p.display())) && out.stderr.contains(why),
            "{why}: {out:?}"
        );
        assert!(out.stderr.contains("nothing was imported"), "{out:?}");
        out
    };
    // Past the 4 MiB cap: alice's good line, then padding (comment-free filler lines).
    let big = format!("{line}\n{}", "#\n".repeat(2 << 20));
    assert!(big.len() > 4 << 20);
    user_file(&path, &big, ALICE, 0o600);
    refused(&path, "larger than 4194304 bytes");
    // /dev/zero named directly: a device, refused without reading it.
    refused(Path::new("/dev/zero"), "is a character device");
    // A directory.
    std::fs::remove_file(&path).expect("rm");
    std::fs::create_dir(&path).expect("mkdir");
    std::os::unix::fs::chown(&path, Some(uid_of(ALICE)), None).expect("chown");
    refused(&path, "is a directory");
    std::fs::remove_dir(&path).expect("rmdir");
    // A symlink to /etc/shadow: not followed, nothing of it shown.
    std::os::unix::fs::symlink("/etc/shadow", &path).expect("symlink");
    let out = refused(&path, "symbolic link");
    assert!(!out.stderr.contains("root:"), "{out:?}");
    std::fs::remove_file(&path).expect("rm");
    assert!(key_names(&env, ALICE).is_empty());
    // The same line in a plain file of alice's is imported: the refusals above were the file's.
    user_file(&path, &format!("{line}\n"), ALICE, 0o600);
    ctl_quick(&env, &["admin", "import", "pam-u2f", s(&path)]).ok();
    assert_one_imported_key(&env, ALICE);
}

#[test]
fn a_hard_link_to_a_root_owned_file_is_refused_by_both_imports() {
    let env = Env::new(OPTIONAL);
    let dir = home(&env);
    // A root-owned file (as /etc/shadow is) that would be accepted as an admin's copy for any
    // user, and that a user linked under the name the import reads (possible where
    // fs.protected_hardlinks is off; made by root here).
    let roots = dir.join("roots_file");
    user_file(&roots, GA_FILE, "root", 0o600);
    let path = dir.join("google_authenticator");
    std::fs::hard_link(&roots, &path).expect("hard link");
    let out = ctl_quick(
        &env,
        &["admin", "import", "google-authenticator", ALICE, s(&path)],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("{}: has 2 hard links", path.display())),
        "{out:?}"
    );
    assert!(out.stderr.contains("nothing was imported"), "{out:?}");
    assert!(!out.stderr.contains(GA_SECRET), "{out:?}");
    assert_eq!(enrolled(&env, ALICE), false);

    // A root-owned central pam_u2f file may name anyone: linked, it is refused too.
    let key = env.soft_key("k", false);
    let central = dir.join("u2f_mappings");
    user_file(
        &central,
        &format!("{}\n", pam_u2f::line(BOB, &pam_u2f::credential(&key, BOB))),
        "root",
        0o644,
    );
    let linked = dir.join("u2f_keys");
    std::fs::hard_link(&central, &linked).expect("hard link");
    let out = ctl_quick(&env, &["admin", "import", "pam-u2f", s(&linked)]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("{}: has 2 hard links", linked.display())),
        "{out:?}"
    );
    assert!(key_names(&env, BOB).is_empty());

    // With its second name gone, the same root-owned file is imported (an admin's copy): the
    // refusal was the link's.
    std::fs::remove_file(&roots).expect("rm");
    ctl_quick(
        &env,
        &["admin", "import", "google-authenticator", ALICE, s(&path)],
    )
    .ok();
    assert_eq!(enrolled(&env, ALICE), true);
}

/// A user created for one test, with its home in the test world, deleted on drop.
struct HomeUser {
    name: String,
    home: PathBuf,
}

impl HomeUser {
    fn new(env: &Env, what: &str) -> HomeUser {
        let name = format!("tf-{what}{}", std::process::id());
        let _ = Command::new("userdel").arg(&name).output();
        let _ = Command::new("groupdel").arg(&name).output();
        let home = env.dir.path().join(&name);
        let out = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/bin/sh",
                "--home-dir",
            ])
            .arg(&home)
            .arg(&name)
            .output()
            .expect("useradd");
        assert!(out.status.success(), "useradd: {out:?}");
        let user = HomeUser { name, home };
        std::fs::create_dir(&user.home).expect("home");
        std::fs::set_permissions(&user.home, std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        std::os::unix::fs::chown(&user.home, Some(uid_of(&user.name)), None).expect("chown");
        user
    }
}

impl Drop for HomeUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
        let _ = Command::new("groupdel").arg(&self.name).output();
    }
}

#[test]
fn google_authenticator_import_without_a_file_refuses_what_the_user_put_in_their_home() {
    let env = Env::new(OPTIONAL);
    let user = HomeUser::new(&env, "gh");
    let path = user.home.join(".google_authenticator");
    // No FILE argument: the import reads ~USER/.google_authenticator.
    let import = || {
        let start = Instant::now();
        let out = ctl_quick(
            &env,
            &["admin", "import", "google-authenticator", &user.name],
        );
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "too slow: {out:?}"
        );
        out
    };
    let refused = |why: &str| {
        let out = import();
        assert_eq!(out.code, 1, "{why}: {out:?}");
        assert!(
            out.stderr.contains(&format!("{}: ", path.display())) && out.stderr.contains(why),
            "{why}: {out:?}"
        );
        assert!(out.stderr.contains("nothing was imported"), "{out:?}");
    };
    // A symlink to /dev/zero (it used to allocate a gigabyte).
    std::os::unix::fs::symlink("/dev/zero", &path).expect("symlink");
    std::os::unix::fs::lchown(&path, Some(uid_of(&user.name)), None).expect("lchown");
    refused("symbolic link");
    // A FIFO nobody writes to (it used to hang the command).
    std::fs::remove_file(&path).expect("rm");
    let mk = Command::new("mkfifo").arg(&path).status().expect("mkfifo");
    assert!(mk.success());
    std::os::unix::fs::chown(&path, Some(uid_of(&user.name)), None).expect("chown");
    refused("FIFO");
    std::fs::remove_file(&path).expect("rm");
    assert_eq!(enrolled(&env, &user.name), false);
    // The user's own plain file there is imported, and its code logs in.
    user_file(&path, GA_FILE, &user.name, 0o600);
    let out = import();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(enrolled(&env, &user.name), true);
    wait_for_fresh_step();
    let r = env.login("tf", &user.name, &[&oathtool(GA_SECRET, 0)]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
}
