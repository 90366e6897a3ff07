//! `failmode=open` passes only transport failures: a daemon that cannot be reached (stopped,
//! hung past `timeout=`, or dead in the middle of a login). Any answer from the daemon is final,
//! and an error answer is a denial under both failmodes: an odd or unknown user name, another
//! user's login asked by an unprivileged caller, a login expired at the prompt, too many logins
//! in progress, state the daemon cannot read. Real libpam, the real module, a real bus and the
//! real daemon. (A malformed answer from a trusted owner of the name: hardening.rs.)
//!
//! The services here hold the module alone, so that `pam_authenticate` reports the module's
//! own answer. libpam reports a stack in which every module returned `PAM_IGNORE` as
//! `PAM_PERM_DENIED` (which the module itself never returns): that is [`IGNORED`].
#![allow(clippy::expect_used, clippy::panic)]

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
/// With a timeout long enough that an answer within it cannot be the timeout's.
const OPEN_T20: &str = "fm-open-t20";
const CLOSED_T20: &str = "fm-closed-t20";

fn failmode_env(policy: &str) -> Env {
    let env = Env::new(policy);
    let module = bin("libpam_twofactor.so");
    for (name, args) in [
        (OPEN, "timeout=5 failmode=open"),
        (CLOSED, "timeout=5"),
        (OPEN_T2, "timeout=2 failmode=open"),
        (CLOSED_T2, "timeout=2 failmode=closed"),
        (OPEN_T20, "timeout=20 failmode=open"),
        (CLOSED_T20, "timeout=20 failmode=closed"),
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
    login_slowly_in(&env.pamd, service, user, pause, answers)
}

/// [`login_slowly`] with the world's PAM service directory `pamd` (the world itself may be
/// busy: its daemon being restarted).
fn login_slowly_in(
    pamd: &std::path::Path,
    service: &str,
    user: &str,
    pause: Duration,
    answers: &[&str],
) -> PamResult {
    let out = Command::new(bin("pamdrive"))
        .arg(pamd)
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

#[test]
fn too_many_logins_in_progress_is_a_denial_under_both_failmodes() {
    let env = failmode_env(OPTIONAL);
    let _ = env.enroll(ALICE);
    let bob = env.enroll(BOB);
    let carol = env.enroll(CAROL);
    // Root's callers (sshd for many remote attempts) hold alice's 8 logins, her cap whoever
    // asks.
    let flood = Flood::start(&env, "root", &["login", "12", "1", ALICE]);
    assert_eq!(flood.count("accepted"), 8, "{}", flood.result);
    assert_eq!(flood.count("refused"), 4, "{}", flood.result);
    // The daemon answers alice's next login NotAllowed: a denial, under failmode=open too,
    // with a password module after it as well; no prompt.
    for service in [OPEN, CLOSED, "tf-open"] {
        let r = env.login(service, ALICE, &["123456"]);
        assert_eq!((r.rc, r.prompts()), (rc::AUTH_ERR, 0), "{service}: {r:?}");
    }
    // The refusal is the cap's, recorded once for alice.
    let audit = env
        .ctl(&["--json", "admin", "audit", "--user", ALICE])
        .ok()
        .json();
    let capped = audit
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["event"] == "limit-reached")
        .count();
    assert_eq!(capped, 1, "{audit}");
    // Everyone else is asked and gets in with their factor, under both failmodes.
    let r = env.login(OPEN, BOB, &[&bob.recovery[0]]);
    assert_eq!((r.rc, r.prompts()), (rc::SUCCESS, 1), "{r:?}");
    let r = env.login(CLOSED, BOB, &[&bob.recovery[1]]);
    assert_eq!((r.rc, r.prompts()), (rc::SUCCESS, 1), "{r:?}");
    // ...and without it, is refused: the flood bypasses nothing.
    let r = env.login(OPEN, BOB, &["000000", "000000", "000000"]);
    assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
    assert!(r.said("Wrong code"), "{r:?}");
    flood.stop();

    // A non-root caller's own cap (4): carol's own PAM stack (a screen locker) holds 4 of her
    // logins; her fifth is refused under both failmodes, not ignored.
    let flood = Flood::start(&env, CAROL, &["login", "1", "6", CAROL]);
    assert_eq!(flood.count("accepted"), 4, "{}", flood.result);
    for service in [OPEN, CLOSED] {
        let r = env.login_full(CAROL, service, CAROL, None, &["123456"]);
        assert_eq!((r.rc, r.prompts()), (rc::AUTH_ERR, 0), "{service}: {r:?}");
    }
    // root's callers still find room for carol (sshd, login), and her codes count.
    let r = env.login(OPEN, CAROL, &[&carol.recovery[0]]);
    assert_eq!((r.rc, r.prompts()), (rc::SUCCESS, 1), "{r:?}");
    flood.stop();
}

/// The daemon's state database (SQLite, shared with the running daemon: WAL mode).
fn state_db(env: &Env) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(env.state.join("state.sqlite3")).expect("state db");
    db.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    db
}

/// Makes `user`'s authenticator-app secret unreadable (its sealed bytes flipped), returning
/// what was there.
fn spoil_secret(env: &Env, user: &str) -> Vec<u8> {
    let db = state_db(env);
    let uid = uid_of(user);
    let good: Vec<u8> = db
        .query_row("SELECT secret FROM totp WHERE uid = ?1", [uid], |r| {
            r.get(0)
        })
        .expect("a totp row");
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let n = db
        .execute(
            "UPDATE totp SET secret = ?1 WHERE uid = ?2",
            rusqlite::params![bad, uid],
        )
        .expect("update");
    assert_eq!(n, 1);
    good
}

fn restore_secret(env: &Env, user: &str, good: &[u8]) {
    let n = state_db(env)
        .execute(
            "UPDATE totp SET secret = ?1 WHERE uid = ?2",
            rusqlite::params![good, uid_of(user)],
        )
        .expect("update");
    assert_eq!(n, 1);
}

#[test]
fn state_the_daemon_cannot_read_is_a_denial_under_both_failmodes() {
    let env = failmode_env(OPTIONAL);
    let alice = env.enroll(ALICE);
    let bob = env.enroll(BOB);
    // alice's stored secret no longer opens (a damaged disk, a row written by hand): the
    // daemon answers StateUnavailable, which is an answer, not an absent daemon.
    let good = spoil_secret(&env, ALICE);
    for service in [OPEN, CLOSED, "tf-open"] {
        let r = env.login(service, ALICE, &[&alice.recovery[0]]);
        assert_eq!((r.rc, r.prompts()), (rc::AUTH_ERR, 0), "{service}: {r:?}");
    }
    // The denial is the state's: the daemon says why in its log.
    let unreadable = format!(
        "a sealed secret of {} (totp) does not open with this key",
        uid_of(ALICE)
    );
    assert!(env.log().contains(&unreadable), "{}", env.log());
    // Others are not affected.
    let r = env.login(OPEN, BOB, &[&bob.recovery[0]]);
    assert_eq!((r.rc, r.prompts()), (rc::SUCCESS, 1), "{r:?}");
    restore_secret(&env, ALICE, &good);

    // The same while the user waits at the prompt: the login began with the state readable,
    // and the answer finds it unreadable. Each failmode in turn (one spoiled row each time).
    for (service, code) in [(OPEN, &alice.recovery[1]), (CLOSED, &alice.recovery[2])] {
        let (r, ()) = std::thread::scope(|s| {
            let login = s.spawn(|| {
                login_slowly(
                    &env,
                    service,
                    ALICE,
                    Duration::from_secs(4),
                    &[code.as_str()],
                )
            });
            std::thread::sleep(Duration::from_millis(1500));
            let good = spoil_secret(&env, ALICE);
            let r = login.join().expect("login");
            restore_secret(&env, ALICE, &good);
            (r, ())
        });
        assert_eq!((r.rc, r.prompts()), (rc::AUTH_ERR, 1), "{service}: {r:?}");
    }
    // Readable again, the same codes were never spent: the denials above were the state's.
    let r = env.login(OPEN, ALICE, &[&alice.recovery[1]]);
    assert_eq!((r.rc, r.prompts()), (rc::SUCCESS, 1), "{r:?}");
}

/// Runs `login` for `ALICE` under [`OPEN_T20`] and for `BOB` under [`CLOSED_T20`] at once,
/// each waiting `pause` before answering; calls `meanwhile` after `delay`.
fn two_logins_while(
    pamd: &std::path::Path,
    pause: Duration,
    answers: (&str, &str),
    delay: Duration,
    meanwhile: impl FnOnce(),
) -> (PamResult, PamResult, Duration) {
    std::thread::scope(|s| {
        let started = Instant::now();
        let open = s.spawn(|| login_slowly_in(pamd, OPEN_T20, ALICE, pause, &[answers.0]));
        let closed = s.spawn(|| login_slowly_in(pamd, CLOSED_T20, BOB, pause, &[answers.1]));
        std::thread::sleep(delay);
        meanwhile();
        let open = open.join().expect("open");
        let closed = closed.join().expect("closed");
        (open, closed, started.elapsed())
    })
}

/// pam_twofactor(8): a daemon that left the bus before it answered `BeginLogin` is "cannot be
/// reached" (the bus answers for it: NoReply during a call), so failmode=open lets the login
/// through and failmode=closed fails it as unavailable. Once it has answered that a factor is
/// needed, that answer is final: losing it afterwards (killed or restarted while the user is at
/// the prompt: ServiceUnknown for the connection that is gone, even when a new daemon has taken
/// the name since) is a denial under both failmodes.
#[test]
fn a_daemon_that_dies_during_a_login_is_unreachable_only_before_it_answered() {
    let mut env = failmode_env(OPTIONAL);
    let alice = env.enroll(ALICE);
    let bob = env.enroll(BOB);

    // Killed while both users wait at the prompt: the answers go to a connection that is gone.
    let pamd = env.pamd.clone();
    let (open, closed, _) = two_logins_while(
        &pamd,
        Duration::from_secs(4),
        (&alice.recovery[0], &bob.recovery[0]),
        Duration::from_millis(1500),
        || env.kill_daemon(),
    );
    assert_eq!((open.rc, open.prompts()), (rc::AUTH_ERR, 1), "{open:?}");
    assert_eq!(
        (closed.rc, closed.prompts()),
        (rc::AUTH_ERR, 1),
        "{closed:?}"
    );

    // Killed while it holds the calls (frozen, then killed): NoReply from the bus, at once,
    // long before the module's own 20-second timeout.
    env.start_daemon();
    env.freeze_daemon(true);
    let pid = env.daemon_pid().expect("daemon pid");
    let (open, closed, took) = two_logins_while(
        &pamd,
        Duration::ZERO,
        (&alice.recovery[0], &bob.recovery[0]),
        Duration::from_millis(1500),
        || {
            // SAFETY: plain kill(2) on the daemon, our child (SIGKILL ends a stopped process).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        },
    );
    env.kill_daemon();
    assert_eq!((open.rc, open.prompts()), (IGNORED, 0), "{open:?}");
    assert_eq!(
        (closed.rc, closed.prompts()),
        (rc::AUTHINFO_UNAVAIL, 0),
        "{closed:?}"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");

    // Restarted while the users wait at the prompt (a crash and systemd's restart): the new
    // daemon owns the name, but the login's calls go to the connection that began it, which
    // is gone. The same as a dead daemon: the new one never sees the answer.
    env.start_daemon();
    let (open, closed, _) = two_logins_while(
        &pamd,
        Duration::from_secs(6),
        (&alice.recovery[0], &bob.recovery[0]),
        Duration::from_millis(1500),
        || env.restart_daemon(),
    );
    assert!(env.name_owned());
    assert_eq!((open.rc, open.prompts()), (rc::AUTH_ERR, 1), "{open:?}");
    assert_eq!(
        (closed.rc, closed.prompts()),
        (rc::AUTH_ERR, 1),
        "{closed:?}"
    );

    // Its answers count again, and nothing was spent by the logins that lost their daemon.
    let r = env.login(OPEN, ALICE, &["000000", "000000", "000000"]);
    assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
    assert!(r.said("Wrong code"), "{r:?}");
    let r = env.login(CLOSED, BOB, &[&bob.recovery[0]]);
    assert_eq!((r.rc, r.prompts()), (rc::SUCCESS, 1), "{r:?}");
}
