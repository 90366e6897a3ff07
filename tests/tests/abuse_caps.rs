//! Floods for real (issue 10): a user opens many bus connections and asks the daemon for logins
//! or key proofs on each, holding them open. The caps must keep everyone else's logins and
//! enrollments working, say so in the audit log, and let go of everything the flooding
//! connections held once they leave the bus.

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use twofactor_tests::*;

const OPTIONAL: &str = "default_mode = \"optional\"\n";

/// The per-caller cap the daemon documents (twofactor-policy(5), LIMITS).
const PER_CALLER: u64 = 4;
/// The per-target-user cap.
const PER_TARGET: u64 = 8;
/// Connections and calls on each: far more than any cap (the report's flood held 32 logins on
/// each of 256 connections; the old per-connection cap was 32).
const CONNECTIONS: &str = "32";
const CALLS: &str = "32";
const ATTEMPTS: u64 = 32 * 32;

/// The audit records `event` of `user`.
fn audited(env: &Env, user: &str, event: &str) -> Vec<serde_json::Value> {
    env.audit_of(user)
        .into_iter()
        .filter(|e| e["event"] == event)
        .collect()
}

/// Retries `attempt` until it holds: the daemon learns of a departure from the bus
/// asynchronously. Gives up (false) after a generous while; the speed is not what is tested.
fn eventually(mut attempt: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if attempt() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_user_flooding_logins_denies_and_bypasses_no_one() {
    let env = Env::new(OPTIONAL);
    let alice = env.enroll(ALICE);
    let bob = env.enroll(BOB);
    let carol = env.enroll(CAROL);

    let flood = Flood::start(&env, BOB, &["login", CONNECTIONS, CALLS, BOB]);
    assert_eq!(flood.count("accepted"), PER_CALLER, "{}", flood.result);
    assert_eq!(
        flood.count("refused"),
        ATTEMPTS - PER_CALLER,
        "{}",
        flood.result
    );
    assert_eq!(flood.result["errors"], serde_json::json!({}));

    // (Codes of the next step: the enrollments spent the current one.)
    wait_for_fresh_step();
    // Without a valid code alice's login fails: the flood bypasses nothing.
    let good = oathtool(&alice.secret, 30);
    let wrong = if good == "000000" { "111111" } else { "000000" };
    let r = env.login("tf", ALICE, &[wrong, wrong, wrong]);
    assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
    assert!(r.said("Wrong code"), "{r:?}");
    // alice's real login (the module run as root, as sshd and login do) goes through.
    let r = env.login("tf", ALICE, &[&good]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}\n{}", env.log());
    // The same under failmode=open: the flood makes the daemon neither unreachable (which
    // would let alice through on her password alone) nor deaf to her.
    let r = env.login("tf-open", ALICE, &[wrong, wrong, wrong]);
    assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
    assert!(r.said("Wrong code"), "{r:?}");
    let r = env.login("tf-open", ALICE, &[&alice.recovery[0]]);
    assert_eq!(
        (r.rc, r.prompts()),
        (rc::SUCCESS, 1),
        "{r:?}\n{}",
        env.log()
    );
    // Another non-root user's own login gets its session and succeeds.
    let r = env.login_full(CAROL, "tf", CAROL, None, &[&oathtool(&carol.secret, 30)]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}\n{}", env.log());
    // bob himself can still log in through root's callers (room left under the per-user cap).
    let r = env.login("tf", BOB, &[&oathtool(&bob.secret, 30)]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}\n{}", env.log());
    // But his own non-root caller gets nothing more while the flood holds its logins.
    let out = env.busctl_as(
        BOB,
        "Login",
        "BeginLogin",
        &["sa{ss}", BOB, "1", "service", "tf"],
    );
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("too many logins"), "{out:?}");

    // One audit record for the whole flood, charged to bob.
    let records = audited(&env, BOB, "limit-reached");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["result"], "refused");
    assert!(
        records[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("per non-root caller")),
        "{records:?}"
    );
    assert!(audited(&env, ALICE, "limit-reached").is_empty());

    // The flood's connections leave the bus: its logins go with them, and bob gets his room
    // back (a second flood is given the whole per-caller cap again).
    flood.stop();
    let mut last = serde_json::Value::Null;
    let freed = eventually(|| {
        let again = Flood::start(&env, BOB, &["login", "1", "4", BOB]);
        last = again.result.clone();
        let all = again.count("accepted") == PER_CALLER;
        again.stop();
        all
    });
    assert!(
        freed,
        "bob's logins were not released: {last}\n{}",
        env.log()
    );
}

#[test]
fn root_callers_flooding_one_user_leave_room_for_every_other_user() {
    let env = Env::new(OPTIONAL);
    let _ = env.enroll(ALICE);
    let bob = env.enroll(BOB);
    // As sshd would for many remote attempts at one name: root, one connection each.
    let flood = Flood::start(&env, "root", &["login", CONNECTIONS, "1", ALICE]);
    assert_eq!(flood.count("accepted"), PER_TARGET, "{}", flood.result);
    assert_eq!(flood.count("refused"), 32 - PER_TARGET, "{}", flood.result);
    // Every other user still logs in.
    wait_for_fresh_step();
    let r = env.login("tf", BOB, &[&oathtool(&bob.secret, 30)]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}\n{}", env.log());
    // Under failmode=open as well, bob is asked and gets in with his factor...
    let r = env.login("tf-open", BOB, &[&bob.recovery[0]]);
    assert_eq!(
        (r.rc, r.prompts()),
        (rc::SUCCESS, 1),
        "{r:?}\n{}",
        env.log()
    );
    // ...and alice, over her cap, is refused rather than let through on her password alone.
    for service in ["tf-open", "tf"] {
        let r = env.login(service, ALICE, &["123456"]);
        assert_eq!((r.rc, r.prompts()), (rc::AUTH_ERR, 0), "{service}: {r:?}");
    }
    let records = audited(&env, ALICE, "limit-reached");
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(
        records[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("per user")),
        "{records:?}"
    );
    // Once those attempts leave the bus, their room is free again.
    flood.stop();
    let mut last = serde_json::Value::Null;
    let freed = eventually(|| {
        let again = Flood::start(&env, "root", &["login", CONNECTIONS, "1", ALICE]);
        last = again.result.clone();
        let all = again.count("accepted") == PER_TARGET;
        again.stop();
        all
    });
    assert!(
        freed,
        "alice's logins were not released: {last}\n{}",
        env.log()
    );
}

#[test]
fn a_user_flooding_key_proofs_blocks_no_one_elses_enrollment() {
    let env = Env::new(OPTIONAL);
    let bobs = env.soft_key("bob", false);
    let _ = env.enroll_key(BOB, &bobs, "bob-key");

    let flood = Flood::start(&env, BOB, &["proof", CONNECTIONS, CALLS]);
    assert_eq!(flood.count("accepted"), PER_CALLER, "{}", flood.result);
    assert_eq!(
        flood.count("refused"),
        ATTEMPTS - PER_CALLER,
        "{}",
        flood.result
    );
    assert_eq!(flood.result["errors"], serde_json::json!({}));

    // alice enrolls a key (BeginKey, RegisterKey, ConfirmKey) while the flood holds on.
    let alices = env.soft_key("alice", false);
    let codes = env.enroll_key(ALICE, &alices, "alice-key");
    assert_eq!(codes.len(), 10);
    // carol starts an authenticator app enrollment.
    let begin = env
        .ctl_as(CAROL, &["--json", "enroll", "totp", "--begin"], None)
        .ok()
        .json();
    assert!(begin["enrollment_id"].as_str().is_some(), "{begin}");
    // bob's own proofs wait for the flood's.
    let v = env.softkey_ctl(BOB, &bobs, &["prove"]);
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("too many key proofs")),
        "{v}"
    );
    let records = audited(&env, BOB, "limit-reached");
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(
        records[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("key proofs")),
        "{records:?}"
    );

    // The flood leaves the bus; its proofs go with it (they would otherwise wait 2 minutes).
    flood.stop();
    let mut last = serde_json::Value::Null;
    let freed = eventually(|| {
        last = env.softkey_ctl(BOB, &bobs, &["prove"]);
        last["token"].as_str().is_some()
    });
    assert!(
        freed,
        "bob's proofs were not released: {last}\n{}",
        env.log()
    );
}
