//! `failmode=open` passes only transport failures: a daemon that cannot be reached (stopped, or
//! hung past `timeout=`). Any answer from the daemon is final, and an error answer is a denial
//! under both failmodes. Real libpam, the real module, a real bus and the real daemon.
//!
//! The services here hold the module alone, so that `pam_authenticate` reports the module's
//! own answer. libpam reports a stack in which every module returned `PAM_IGNORE` as
//! `PAM_PERM_DENIED` (which the module itself never returns): that is [`IGNORED`].
#![allow(clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use twofactor_tests::*;

const OPTIONAL: &str = "default_mode = \"optional\"\n";

/// What `pam_authenticate` returns when the module alone answered `PAM_IGNORE`.
const IGNORED: i32 = rc::PERM_DENIED;

/// The module alone with `failmode=open`, and with the default `failmode=closed`; `-t2` with a
/// two-second timeout for the hung daemon.
const OPEN: &str = "fm-open";
const CLOSED: &str = "fm-closed";
const OPEN_T2: &str = "fm-open-t2";
const CLOSED_T2: &str = "fm-closed-t2";

fn failmode_env(policy: &str) -> Env {
    let env = Env::new(policy);
    let module = bin("libpam_twofactor.so");
    for (name, args) in [
        (OPEN, "timeout=5 failmode=open"),
        (CLOSED, "timeout=5"),
        (OPEN_T2, "timeout=2 failmode=open"),
        (CLOSED_T2, "timeout=2 failmode=closed"),
    ] {
        // offline=none: these tests are about the failmode alone, never the host's snapshot.
        let text = format!(
            "auth required {} bus={} offline=none {args}\n",
            module.display(),
            env.address
        );
        std::fs::write(env.pamd.join(name), text).expect("service");
    }
    env
}

/// A login as root in which the user waits `pause` before each answer.
fn login_slowly(
    env: &Env,
    service: &str,
    user: &str,
    pause: Duration,
    answers: &[&str],
) -> PamResult {
    let out = Command::new(bin("pamdrive"))
        .arg(&env.pamd)
        .args([service, user, "--pause-ms", &pause.as_millis().to_string()])
        .args(answers)
        .output()
        .expect("pamdrive");
    assert!(out.status.success(), "pamdrive failed: {out:?}");
    assert!(out.stderr.is_empty(), "the module wrote to stderr: {out:?}");
    serde_json::from_slice(&out.stdout).expect("pamdrive output")
}

/// User names the daemon refuses to look at (InvalidArgument).
fn odd_names() -> Vec<String> {
    vec![
        "a b".into(),
        "new\nline".into(),
        "x:y".into(),
        "a".repeat(300),
        "tab\tname".into(),
        "../etc/passwd".into(),
    ]
}

#[test]
fn odd_user_names_are_denied_under_both_failmodes() {
    let env = failmode_env(OPTIONAL);
    for name in odd_names() {
        for service in [OPEN, CLOSED] {
            let r = env.login(service, &name, &["123456"]);
            assert_eq!(r.rc, rc::AUTH_ERR, "{service} {name:?}: {r:?}");
            assert_eq!(r.prompts(), 0, "{service} {name:?}: {r:?}");
        }
        // With a password module after it (pam_permit here), the login is still refused.
        let r = env.login("tf-open", &name, &["123456"]);
        assert_eq!(r.rc, rc::AUTH_ERR, "tf-open {name:?}: {r:?}");
    }
    // A name that does not exist is a plain denial from the daemon, too.
    for service in [OPEN, CLOSED] {
        let r = env.login(service, "tf-nosuchuser", &[]);
        assert_eq!(r.rc, rc::AUTH_ERR, "{service}: {r:?}");
    }
    // The daemon is still fine, and not-required still means ignore.
    let r = env.login(OPEN, BOB, &[]);
    assert_eq!(r.rc, IGNORED, "{r:?}");
}

#[test]
fn another_users_login_from_an_unprivileged_caller_is_denied_under_both_failmodes() {
    let env = failmode_env(OPTIONAL);
    let _ = env.enroll(ALICE);
    // bob's own PAM stack (say a screen locker) asking about alice: AccessDenied.
    for service in [OPEN, CLOSED, "tf-open"] {
        let r = env.login_full(BOB, service, ALICE, None, &["123456"]);
        assert_eq!(r.rc, rc::AUTH_ERR, "{service}: {r:?}");
        assert_eq!(r.prompts(), 0, "{service}: {r:?}");
    }
    // Likewise for a name that does not exist (only root may learn that it does not).
    let r = env.login_full(BOB, OPEN, "tf-nosuchuser", None, &[]);
    assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
}

#[test]
fn a_login_expired_at_the_prompt_is_denied_under_both_failmodes() {
    let mut env = failmode_env(OPTIONAL);
    let _ = env.enroll(ALICE);
    let _ = env.enroll(BOB);
    let _ = env.enroll(CAROL);
    // The daemon's clock runs 100 times fast (libfaketime): a user who waits 4 s at the prompt
    // answers 400 daemon seconds later, past the 300 s a login lives. The daemon then answers
    // NoSuchSession.
    env.restart_daemon_at(Some("+0 x100"));
    let pause = Duration::from_secs(4);
    let wrong = ["000000", "000000", "000000"];
    let (open, closed) = std::thread::scope(|s| {
        let open = s.spawn(|| login_slowly(&env, OPEN, ALICE, pause, &wrong));
        let closed = s.spawn(|| login_slowly(&env, CLOSED, BOB, pause, &wrong));
        (open.join().expect("open"), closed.join().expect("closed"))
    });
    for (mode, r) in [("open", open), ("closed", closed)] {
        assert_eq!(r.rc, rc::AUTH_ERR, "failmode={mode}: {r:?}");
        // One prompt and no verdict on the code: the login was gone when the answer came.
        assert_eq!(r.prompts(), 1, "failmode={mode}: {r:?}");
        assert_eq!(r.answers_left, 2, "failmode={mode}: {r:?}");
        assert!(!r.said("Wrong code."), "failmode={mode}: {r:?}");
    }
    // The control: answered at once, the same login is alive and checks each code.
    let r = login_slowly(&env, OPEN, CAROL, Duration::ZERO, &wrong);
    assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
    assert_eq!(r.prompts(), 3, "{r:?}");
    assert!(r.said("Wrong code."), "{r:?}");
}

#[test]
fn a_stopped_daemon_is_ignored_with_failmode_open_only() {
    let mut env = failmode_env(OPTIONAL);
    let _ = env.enroll(ALICE);
    env.stop_daemon();
    // The bus answers ServiceUnknown: no daemon, a transport failure.
    let r = env.login(OPEN, ALICE, &["123456"]);
    assert_eq!(r.rc, IGNORED, "{r:?}");
    assert_eq!(r.prompts(), 0, "{r:?}");
    let r = env.login(CLOSED, ALICE, &["123456"]);
    assert_eq!(r.rc, rc::AUTHINFO_UNAVAIL, "{r:?}");
    assert!(r.said("unavailable"), "{r:?}");
    // Any user name: with no daemon to look at it, only the transport decides.
    let r = env.login(OPEN, "a b", &[]);
    assert_eq!(r.rc, IGNORED, "{r:?}");
    let r = env.login(CLOSED, "a b", &[]);
    assert_eq!(r.rc, rc::AUTHINFO_UNAVAIL, "{r:?}");
    // No bus at all (cannot connect): the same.
    for (service, want) in [(OPEN, IGNORED), (CLOSED, rc::AUTHINFO_UNAVAIL)] {
        let text = std::fs::read_to_string(env.pamd.join(service)).expect("service");
        let gone = text.replace(&env.address, "unix:path=/nonexistent/bus");
        std::fs::write(env.pamd.join("fm-nobus"), gone).expect("service");
        let r = env.login("fm-nobus", ALICE, &[]);
        assert_eq!(r.rc, want, "{service} without a bus: {r:?}");
    }
    // Back up, the daemon's answers count again.
    env.start_daemon();
    let r = env.login(OPEN, "a b", &[]);
    assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
}

#[test]
fn a_hung_daemon_times_out_like_a_stopped_one() {
    let env = failmode_env(OPTIONAL);
    let _ = env.enroll(ALICE);
    env.freeze_daemon(true);
    let mut results = Vec::new();
    for service in [OPEN_T2, CLOSED_T2] {
        let started = Instant::now();
        let r = env.login(service, ALICE, &["123456"]);
        results.push((service, r, started.elapsed()));
    }
    env.freeze_daemon(false);
    for (service, r, took) in results {
        let want = if service == OPEN_T2 {
            IGNORED
        } else {
            rc::AUTHINFO_UNAVAIL
        };
        assert_eq!(r.rc, want, "{service}: {r:?}");
        assert_eq!(r.prompts(), 0, "{service}: {r:?}");
        // Bounded by timeout=2 (generously: the machine may be loaded).
        assert!(took < Duration::from_secs(30), "{service}: {took:?}");
    }
    // Thawed, it answers again, and its refusals are final.
    let r = env.login(OPEN_T2, "x:y", &[]);
    assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
}
