//! When the daemon is down: the module's offline snapshot (only users the daemon would not ask
//! get through, and only from a snapshot it can trust), and the daemon's last good policy (a
//! policy file refused at start does not keep the daemon down). Real libpam, the real module, a
//! real bus and the real daemon.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use twofactor_tests::*;

/// The module reading the env's snapshot, then pam_permit (the password module's place).
const SNAP: &str = "tf-snap";
/// The same, on a service the policy requires 2FA for.
const STRICT: &str = "tf-snap-strict";

fn policy() -> String {
    format!(
        "default_mode = \"optional\"\n[groups.{WHEEL}]\nmode = \"required\"\n\
         [services.{STRICT}]\nmode = \"required\"\n"
    )
}

fn snapshot_env(policy: &str) -> Env {
    let env = Env::new(policy);
    let module = bin("libpam_twofactor.so");
    let permit = pam_module("pam_permit.so");
    for name in [SNAP, STRICT] {
        let text = format!(
            "auth required {} bus={} timeout=5 offline={}\nauth required {}\n",
            module.display(),
            env.address,
            env.offline.display(),
            permit.display()
        );
        std::fs::write(env.pamd.join(name), text).expect("service");
    }
    env
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Refused as "unavailable", with the message, and without a prompt.
fn assert_refused(r: &PamResult, what: &str) {
    assert_eq!(r.rc, rc::AUTHINFO_UNAVAIL, "{what}: {r:?}");
    assert_eq!(r.prompts(), 0, "{what}: {r:?}");
    assert!(r.said("unavailable"), "{what}: {r:?}");
}

/// Let through to the rest of the stack (pam_permit), with nothing shown.
fn assert_passed(r: &PamResult, what: &str) {
    assert_eq!(r.rc, rc::SUCCESS, "{what}: {r:?}");
    assert!(r.transcript.is_empty(), "{what}: {r:?}");
}

#[test]
fn a_stopped_daemon_lets_through_only_the_users_it_would_not_ask() {
    let mut env = snapshot_env(&policy());
    let _ = env.enroll(BOB);
    // Up: carol (optional, nothing enrolled) is not asked.
    assert_passed(&env.login(SNAP, CAROL, &[]), "carol, daemon up");
    env.stop_daemon();
    assert!(env.offline.exists(), "no snapshot: {}", env.log());

    // Unenrolled users with 2FA optional, root on the console included: the stack decides.
    assert_passed(&env.login(SNAP, CAROL, &[]), "carol");
    assert_passed(&env.login(SNAP, "root", &[]), "root");
    // An enrolled user, a user a group rule requires, a service the policy requires, and a
    // name NSS does not know: refused.
    assert_refused(&env.login(SNAP, BOB, &["123456"]), "enrolled bob");
    assert_refused(&env.login(SNAP, ALICE, &[]), "alice of the required group");
    assert_refused(
        &env.login(STRICT, CAROL, &[]),
        "carol on a required service",
    );
    assert_refused(&env.login(SNAP, "tf-nosuchuser", &[]), "unknown user");
    // An unprivileged PAM stack (a screen locker: euid != 0) cannot use the root-only
    // snapshot: carol's own stack fails closed.
    assert_refused(
        &env.login_full(CAROL, SNAP, CAROL, None, &[]),
        "carol's own unprivileged stack",
    );

    // Every change is in the snapshot when the command returns: an admin's requirement...
    env.start_daemon();
    env.ctl(&["admin", "require", CAROL]).ok();
    env.stop_daemon();
    assert_refused(&env.login(SNAP, CAROL, &[]), "carol required by an admin");
    env.start_daemon();
    env.ctl(&["admin", "release", CAROL]).ok();
    env.stop_daemon();
    assert_passed(&env.login(SNAP, CAROL, &[]), "carol released");
    // ... a policy reload...
    env.start_daemon();
    env.write_policy("default_mode = \"required\"\n");
    env.ctl(&["admin", "reload"]).ok();
    env.stop_daemon();
    assert_refused(
        &env.login(SNAP, CAROL, &[]),
        "carol under default_mode required",
    );
    assert_refused(
        &env.login(SNAP, "root", &[]),
        "root under default_mode required",
    );
    // ... an enrollment and a reset.
    env.write_policy(&policy());
    env.start_daemon();
    let _ = env.enroll(CAROL);
    env.stop_daemon();
    assert_refused(&env.login(SNAP, CAROL, &["123456"]), "carol enrolled");
    env.start_daemon();
    env.ctl(&["admin", "reset", CAROL]).ok();
    env.stop_daemon();
    assert_passed(&env.login(SNAP, CAROL, &[]), "carol reset");
}

#[test]
fn a_snapshot_the_module_cannot_trust_fails_closed() {
    let mut env = snapshot_env(&policy());
    env.stop_daemon();
    let snap = env.offline.clone();
    let good = std::fs::read(&snap).expect("snapshot");
    let meta = std::fs::metadata(&snap).expect("snapshot");
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "the daemon's snapshot mode"
    );
    let restore = || {
        let _ = std::fs::remove_file(&snap);
        std::fs::write(&snap, &good).expect("restore");
        chmod(&snap, 0o600);
    };
    assert_passed(&env.login(SNAP, CAROL, &[]), "the daemon's own snapshot");

    for mode in [0o602, 0o620, 0o666] {
        chmod(&snap, mode);
        assert_refused(&env.login(SNAP, CAROL, &[]), &format!("mode {mode:o}"));
    }
    restore();
    std::os::unix::fs::chown(&snap, Some(uid_of(BOB)), None).expect("chown");
    assert_refused(&env.login(SNAP, CAROL, &[]), "owned by bob");
    restore();
    let text = String::from_utf8(good.clone()).expect("text");
    for (what, corrupt) in [
        ("truncated", text.replace("end\n", "")),
        ("garbage", format!("{text}garbage\n")),
        (
            "unknown line",
            text.replace("end\n", "allow everyone\nend\n"),
        ),
        ("empty", String::new()),
    ] {
        std::fs::write(&snap, corrupt).expect("corrupt");
        assert_refused(&env.login(SNAP, CAROL, &[]), what);
    }
    restore();
    // From before this boot (a snapshot kept on persistent storage across a reboot).
    let old = Command::new("touch")
        .arg("-d")
        .arg("@86400")
        .arg(&snap)
        .status()
        .expect("touch");
    assert!(old.success());
    assert_refused(&env.login(SNAP, CAROL, &[]), "written before this boot");
    restore();
    // A symlink to a good snapshot is not followed.
    let real = env.dir.path().join("offline.real");
    std::fs::rename(&snap, &real).expect("rename");
    std::os::unix::fs::symlink(&real, &snap).expect("symlink");
    assert_refused(&env.login(SNAP, CAROL, &[]), "a symlink");
    restore();
    std::fs::remove_file(&snap).expect("remove");
    assert_refused(&env.login(SNAP, CAROL, &[]), "missing");
    restore();
    assert_passed(&env.login(SNAP, CAROL, &[]), "restored");
}

/// `twofactorctl --json doctor` findings of the `daemon` check.
fn doctor_daemon(env: &Env) -> serde_json::Value {
    let pam = env.dir.path().join("doctor-pam");
    let _ = std::fs::create_dir(&pam);
    let out = env.ctl(&[
        "--json",
        "doctor",
        "--policy",
        &env.policy.display().to_string(),
        "--state-dir",
        &env.state.display().to_string(),
        "--pam-dir",
        &pam.display().to_string(),
    ]);
    let all = out.json();
    all.as_array()
        .expect("findings")
        .iter()
        .find(|f| f["check"] == "daemon")
        .cloned()
        .unwrap_or_else(|| panic!("no daemon finding: {all}"))
}

#[test]
fn a_policy_file_refused_at_start_leaves_the_last_good_policy_in_force_loudly() {
    let mut env = snapshot_env(&policy());
    let copy = env.state.join("policy.last-good.toml");
    assert_eq!(
        std::fs::read_to_string(&copy).expect("the last good copy"),
        policy()
    );
    assert_eq!(
        std::fs::metadata(&copy).expect("copy").permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(doctor_daemon(&env)["level"], "ok");

    // One bad chmod, and a restart.
    chmod(&env.policy, 0o646);
    env.restart_daemon();
    assert!(
        env.log().contains("serving the last good policy"),
        "{}",
        env.log()
    );
    // The policy in force is still the last good one: alice's group requires 2FA, bob and
    // carol may log in.
    let r = env.login("tf", ALICE, &[]);
    assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
    assert!(r.said("twofactorctl enroll totp"), "{r:?}");
    assert_eq!(env.login("tf", CAROL, &[]).rc, rc::SUCCESS);
    // status and admin show say so, and where the rule now comes from.
    let status = env.ctl_as(ALICE, &["status"], None).ok();
    assert!(
        status
            .stdout
            .contains("Policy:          WARNING: serving the last good policy"),
        "{status:?}"
    );
    assert!(
        status.stdout.contains("writable by group or others"),
        "{status:?}"
    );
    assert!(
        status.stdout.contains("policy.last-good.toml"),
        "{status:?}"
    );
    let show = env.ctl(&["--json", "admin", "show", ALICE]).ok().json();
    assert!(
        show["policy_problem"]
            .as_str()
            .is_some_and(|p| p.contains("serving the last good policy")),
        "{show}"
    );
    // doctor: an error.
    let daemon = doctor_daemon(&env);
    assert_eq!(daemon["level"], "error", "{daemon}");
    assert!(
        daemon["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not use the policy file")),
        "{daemon}"
    );
    // The snapshot follows the policy in force.
    env.stop_daemon();
    assert_refused(&env.login(SNAP, ALICE, &[]), "alice offline");
    assert_passed(&env.login(SNAP, CAROL, &[]), "carol offline");
    env.start_daemon();

    // A reload of the still bad file keeps the policy in force, and the warning.
    let r = env.ctl(&["admin", "reload"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        env.ctl(&["--json", "status"]).ok().json()["policy_problem"].is_string(),
        "still serving the copy"
    );
    // Fixed and reloaded: the file is in force again, and nobody warns.
    chmod(&env.policy, 0o644);
    env.ctl(&["admin", "reload"]).ok();
    let status = env.ctl(&["--json", "status"]).ok().json();
    assert!(status.get("policy_problem").is_none(), "{status}");
    assert_eq!(doctor_daemon(&env)["level"], "ok");

    // A first start without any good policy refuses, as before.
    env.stop_daemon();
    std::fs::remove_file(&copy).expect("remove the copy");
    chmod(&env.policy, 0o646);
    let mut child = Command::new(bin("twofactord"))
        .args(["--bus", &env.address])
        .arg("--policy")
        .arg(&env.policy)
        .arg("--state-dir")
        .arg(&env.state)
        .arg("--offline-snapshot")
        .arg(&env.offline)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("twofactord");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let status = status.expect("twofactord did not refuse to start");
    assert!(!status.success());
    let mut err = String::new();
    use std::io::Read;
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err);
    assert!(err.contains("refusing to start"), "{err}");
    assert!(err.contains("no last good policy"), "{err}");
    chmod(&env.policy, 0o644);
    env.start_daemon();
}
