//! Secrets sealed at rest: the real daemon with a key (as the package installs it) keeps no TOTP
//! secret in clear in its state or in a backup, refuses a state it cannot open, seals a state
//! it finds in clear, re-seals under a new key (`twofactord rekey`), and refuses unsafe keys.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use twofactor_tests::*;

const OPTIONAL: &str = "default_mode = \"optional\"\n";

/// RFC 4648 base32 (no padding), as the CLI shows secrets.
fn base32_decode(text: &str) -> Vec<u8> {
    let (mut bits, mut acc, mut out) = (0u32, 0u32, Vec::new());
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => panic!("not base32: {text}"),
        };
        acc = (acc << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn holds(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every file of the state directory, concatenated (database, WAL, shared memory, ...).
fn state_bytes(env: &Env) -> Vec<u8> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(&env.state).expect("state dir") {
        let p = e.expect("entry").path();
        if p.is_file() {
            all.extend(std::fs::read(&p).expect("read"));
        }
    }
    all
}

/// Asserts that neither the raw secret nor its base32 text is in `bytes`.
fn assert_no_secret(bytes: &[u8], secret: &str, what: &str) {
    let raw = base32_decode(secret);
    assert_eq!(raw.len(), 20, "{secret}");
    assert!(
        !holds(bytes, &raw),
        "{what} holds the secret's bytes in clear"
    );
    assert!(
        !holds(bytes, secret.as_bytes()),
        "{what} holds the secret's base32 text"
    );
}

fn twofactord(args: &[&str], credentials: Option<&Path>) -> Out {
    let mut cmd = Command::new(bin("twofactord"));
    cmd.args(args);
    cmd.env_remove("CREDENTIALS_DIRECTORY");
    if let Some(dir) = credentials {
        cmd.env("CREDENTIALS_DIRECTORY", dir);
    }
    let out = cmd.output().expect("twofactord");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn new_key(env: &Env, name: &str) -> PathBuf {
    let path = env.dir.path().join(name);
    twofactord(&["genkey", path.to_str().expect("utf-8")], None).ok();
    path
}

fn login_with(env: &Env, secret: &str, offset: i64) -> PamResult {
    wait_for_fresh_step();
    let code = oathtool(secret, offset);
    env.login("tf", ALICE, &[&code])
}

#[test]
fn by_default_the_state_and_its_backups_hold_no_secret_in_clear_and_logins_work() {
    let mut env = Env::new(OPTIONAL);
    assert!(
        env.log().contains("secrets are sealed at rest"),
        "{}",
        env.log()
    );
    let alice = env.enroll(ALICE);
    // A pending enrollment holds a secret too.
    let begin = env
        .ctl_as(BOB, &["--json", "enroll", "totp", "--begin"], None)
        .ok()
        .json();
    let pending = begin["secret"].as_str().expect("secret").to_string();
    // A backup taken while the daemon runs.
    let backup = env.dir.path().join("backup.sqlite3");
    env.ctl(&["admin", "backup", backup.to_str().expect("utf-8")])
        .ok();
    let backup_bytes = std::fs::read(&backup).expect("backup");
    assert_no_secret(&backup_bytes, &alice.secret, "the backup");
    assert_no_secret(&backup_bytes, &pending, "the backup");
    // The live state files, and after the daemon stopped.
    assert_no_secret(&state_bytes(&env), &alice.secret, "the state");
    assert_no_secret(&state_bytes(&env), &pending, "the state");
    env.stop_daemon();
    assert_no_secret(&state_bytes(&env), &alice.secret, "the state");
    env.start_daemon();
    let r = login_with(&env, &alice.secret, 30);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    // The key's text is not in the log.
    let key = std::fs::read_to_string(env.key_file.as_ref().expect("key")).expect("key");
    assert!(!env.log().contains(key.trim()));
}

#[test]
fn a_wrong_or_missing_key_refuses_to_start_and_logins_fail_closed() {
    let mut env = Env::new(OPTIONAL);
    let alice = env.enroll(ALICE);
    let good = env.key_file.clone();
    env.stop_daemon();

    env.key_file = Some(new_key(&env, "other.key"));
    let e = env
        .try_start_daemon()
        .expect_err("another key must be refused");
    assert!(e.contains("refusing to start"), "{e}");
    assert!(e.contains("does not open this state"), "{e}");
    // Nobody answers: the login fails closed ("unavailable", never "not enrolled").
    let r = login_with(&env, &alice.secret, 30);
    assert_eq!(r.rc, rc::AUTHINFO_UNAVAIL, "{r:?}");

    // No key given (and the default key file, if this machine has one, is not this state's):
    // refused too.
    env.key_file = None;
    let e = env.try_start_daemon().expect_err("no key must be refused");
    assert!(
        e.contains("sealed, and no key was given") || e.contains("does not open this state"),
        "{e}"
    );

    env.key_file = good;
    env.start_daemon();
    let r = login_with(&env, &alice.secret, 30);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
}

#[test]
fn a_state_in_clear_is_sealed_on_the_first_start_with_a_key() {
    let mut env = Env::new(OPTIONAL);
    let key = env.key_file.take();
    // A host installed before keys: no key, the state in clear, loudly.
    env.stop_daemon();
    std::fs::remove_dir_all(&env.state).expect("fresh state");
    env.start_daemon();
    assert!(
        env.log().contains("SECRETS ARE STORED IN CLEAR"),
        "{}",
        env.log()
    );
    assert!(env.log().contains("twofactord genkey"), "{}", env.log());
    let alice = env.enroll(ALICE);
    env.stop_daemon();
    assert!(
        holds(&state_bytes(&env), &base32_decode(&alice.secret)),
        "the state in clear should hold the secret (else this test proves nothing)"
    );

    env.key_file = key;
    env.start_daemon();
    assert!(
        env.log().contains("sealed 1 secrets in place"),
        "{}",
        env.log()
    );
    assert_no_secret(&state_bytes(&env), &alice.secret, "the sealed state");
    let r = login_with(&env, &alice.secret, 30);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    // And it stays sealed: the next start seals nothing more.
    env.restart_daemon();
    assert_eq!(env.log().matches("secrets in place").count(), 1);
    // The secret still opens: the code just used is known as used, or (if a step passed
    // meanwhile) a fresh one logs in. A secret that did not open would be an error, a wrong
    // one "Wrong code".
    let code = oathtool(&alice.secret, 30);
    let r = env.login("tf", ALICE, &[&code]);
    assert!(r.rc == rc::SUCCESS || r.said("already used"), "{r:?}");
}

#[test]
fn rekey_reseals_under_the_new_key_and_the_old_one_stops_working() {
    let mut env = Env::new(OPTIONAL);
    let alice = env.enroll(ALICE);
    let old = env.key_file.clone().expect("key");
    let new = new_key(&env, "new.key");
    let state = env.state.to_str().expect("utf-8").to_string();
    let (o, n) = (
        old.to_str().expect("utf-8").to_string(),
        new.to_str().expect("utf-8").to_string(),
    );
    let rekey = [
        "rekey",
        "--state-dir",
        &state,
        "--old-key",
        &o,
        "--new-key",
        &n,
    ];
    // Not while the daemon runs.
    let out = twofactord(&rekey, None);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("stop it first"), "{out:?}");
    env.stop_daemon();
    // Not with a wrong old key.
    let wrong = new_key(&env, "wrong.key");
    let bad = [
        "rekey",
        "--state-dir",
        &state,
        "--old-key",
        wrong.to_str().expect("utf-8"),
        "--new-key",
        &n,
    ];
    let out = twofactord(&bad, None);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("does not open this state"), "{out:?}");

    let out = twofactord(&rekey, None).ok();
    assert!(out.stdout.contains("Re-sealed 1 secrets"), "{out:?}");
    let e = env.try_start_daemon().expect_err("the old key must fail");
    assert!(e.contains("does not open this state"), "{e}");
    env.key_file = Some(new);
    env.start_daemon();
    let r = login_with(&env, &alice.secret, 30);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
}

#[test]
fn unsafe_or_missing_key_files_are_refused() {
    let mut env = Env::new(OPTIONAL);
    env.enroll(ALICE);
    env.stop_daemon();
    let key = env.key_file.clone().expect("key");
    let set_mode = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod")
    };

    // Readable by others.
    set_mode(&key, 0o644);
    let e = env.try_start_daemon().expect_err("0644 must be refused");
    assert!(e.contains("chmod 600"), "{e}");
    set_mode(&key, 0o600);

    // A symbolic link to it.
    let link = env.dir.path().join("link.key");
    std::os::unix::fs::symlink(&key, &link).expect("symlink");
    env.key_file = Some(link);
    let e = env
        .try_start_daemon()
        .expect_err("a symlink must be refused");
    assert!(e.contains("cannot open the key file"), "{e}");

    // Owned by another user.
    let copy = env.dir.path().join("bobs.key");
    std::fs::copy(&key, &copy).expect("copy");
    set_mode(&copy, 0o600);
    let bob = uid_of(BOB);
    std::os::unix::fs::chown(&copy, Some(bob), Some(bob)).expect("chown");
    env.key_file = Some(copy);
    let e = env
        .try_start_daemon()
        .expect_err("a key of bob's must be refused");
    assert!(e.contains(&format!("owned by uid {bob}")), "{e}");

    // A key file the policy names, absent: refused (not "in clear").
    env.key_file = None;
    env.write_policy(&format!(
        "{OPTIONAL}[store]\nsecret_key_file = \"{}\"\n",
        env.dir.path().join("absent.key").display()
    ));
    let e = env
        .try_start_daemon()
        .expect_err("an absent named key must be refused");
    assert!(e.contains("does not exist"), "{e}");
    let policy = env.policy.to_str().expect("utf-8").to_string();
    let out = twofactord(&["--check", &policy], None);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("does not exist"), "{out:?}");

    // The policy naming the real key: --check says it is fine, and the daemon starts.
    env.write_policy(&format!(
        "{OPTIONAL}[store]\nsecret_key_file = \"{}\"\n",
        key.display()
    ));
    let out = twofactord(&["--check", &policy], None).ok();
    assert!(out.stdout.contains("the key is fine"), "{out:?}");
    env.start_daemon();
    env.stop_daemon();

    // genkey never overwrites.
    let out = twofactord(&["genkey", key.to_str().expect("utf-8")], None);
    assert_ne!(out.code, 0, "{out:?}");
    env.key_file = Some(key);
    env.start_daemon();
}

#[test]
fn a_systemd_credential_is_taken_as_systemd_makes_it() {
    let env = Env::new(OPTIONAL);
    let key = env.key_file.clone().expect("key");
    // $CREDENTIALS_DIRECTORY/store.key: root's, 0440 (the ACL mask systemd's read grant
    // shows as), in a private directory. The policy names another file: the credential wins.
    let creds = env.dir.path().join("credentials");
    std::fs::create_dir(&creds).expect("dir");
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o500)).expect("chmod");
    let cred = creds.join("store.key");
    std::fs::copy(&key, &cred).expect("copy");
    std::fs::set_permissions(&cred, std::fs::Permissions::from_mode(0o440)).expect("chmod");
    env.write_policy(&format!(
        "{OPTIONAL}[store]\nsecret_key_file = \"{}\"\n",
        env.dir.path().join("absent.key").display()
    ));
    let policy = env.policy.to_str().expect("utf-8").to_string();
    let out = twofactord(&["--check", &policy], Some(&creds)).ok();
    assert!(
        out.stdout
            .contains("the systemd credential store.key: the key is fine"),
        "{out:?}"
    );
    // Readable by others: refused even as a credential.
    std::fs::set_permissions(&cred, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    let out = twofactord(&["--check", &policy], Some(&creds));
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("readable or writable by others"),
        "{out:?}"
    );
}
