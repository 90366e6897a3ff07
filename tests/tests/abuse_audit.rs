//! The audit trail under abuse, for real (private bus, the real daemon, callers of other uids):
//! a user who can repeat a refusal at will cannot push everyone else's records out of a trail
//! whose retention is by count, and a replayed recovery code is a replay, not a guess.

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::expect_used, clippy::panic)]

use twofactor_tests::*;

fn locked(env: &Env, user: &str) -> bool {
    let s = env.ctl(&["--json", "admin", "show", user]).ok().json();
    s["locked_until"].as_i64().unwrap_or(0) > now()
}

/// The audit records of `user` whose detail contains `needle`.
fn audited(env: &Env, user: &str, needle: &str) -> Vec<serde_json::Value> {
    env.audit_of(user)
        .into_iter()
        .filter(|e| e["detail"].as_str().is_some_and(|d| d.contains(needle)))
        .collect()
}

/// How many refusals `records` stand for: one each, plus the "and N more" of a summary.
fn refusals(records: &[serde_json::Value]) -> u64 {
    records
        .iter()
        .map(|r| {
            r["detail"]
                .as_str()
                .and_then(|d| d.split("; and ").nth(1))
                .and_then(|t| t.split(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(1)
        })
        .sum()
}

/// Calls BeginLogin on itself `calls` times as `user` (one bus connection); returns the
/// flood's counts.
fn flood_logins(env: &Env, user: &str, calls: u32) -> serde_json::Value {
    let out = as_user(user, &bin("flood"))
        .args([&env.address, "login", "1", &calls.to_string(), user])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("flood");
    assert!(out.status.success(), "flood: {out:?}");
    serde_json::from_slice(&out.stdout).expect("flood output")
}

/// Issue 10 item 3 (audit): a locked-out user calling BeginLogin on themself thousands of times
/// is audited once a minute with a count of the rest, so with a small `max_records` another
/// user's earlier record survives.
#[test]
fn a_locked_out_users_flood_does_not_wipe_the_audit_trail() {
    ensure_test_accounts();
    let mut env = Env::new(
        "default_mode = \"optional\"\n[rate_limit]\nmax_failures = 1\nlockout = \"1h\"\n\
         [audit]\nmax_records = 100\n",
    );
    let _ = env.enroll(ALICE);
    let _ = env.enroll(BOB);
    assert_eq!(audited(&env, ALICE, "totp").len(), 1);
    let r = env.login("tf", BOB, &["000000"]);
    assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
    assert!(locked(&env, BOB));

    const CALLS: u32 = 3000;
    let counts = flood_logins(&env, BOB, CALLS);
    // Every call was answered (locked out: no login opened), none by a cap.
    assert_eq!(counts["accepted"], 0, "{counts}");
    assert_eq!(counts["refused"], 0, "{counts}");
    assert_eq!(
        counts["errors"]["InvalidArgument: no login was opened"], CALLS,
        "{counts}"
    );
    // The minute in progress is summed up when the daemon stops.
    env.restart_daemon();
    let records = audited(&env, BOB, "locked out");
    assert!(
        (1..=6).contains(&records.len()),
        "a flood of {CALLS} wrote {} records: {records:?}",
        records.len()
    );
    assert_eq!(refusals(&records), u64::from(CALLS), "{records:?}");
    assert!(
        records.iter().any(|r| r["detail"]
            .as_str()
            .is_some_and(|d| d.contains("more in the last minute"))),
        "{records:?}"
    );
    // Alice's record, older than the whole flood, is still there.
    assert_eq!(audited(&env, ALICE, "totp").len(), 1);
}

/// The same for refused key enrollments (a key whose test signature repeats its counter, the
/// flood of the notify report): one record a minute, with the count.
#[test]
fn refused_key_enrollments_are_folded_with_their_count() {
    ensure_test_accounts();
    let mut env = Env::new("default_mode = \"optional\"\n[audit]\nmax_records = 100\n");
    let key = env.soft_key("bobs", false);
    key.set(|s| {
        s.counter = 5;
        s.counter_mode = twofactor_softkey::CounterMode::Repeat;
    });
    const FLOOD: u64 = 150;
    for i in 0..FLOOD {
        let v = env.softkey_ctl(BOB, &key, &["enroll", &format!("k{i}")]);
        assert_eq!(v["accepted"], false, "{v}");
    }
    env.restart_daemon();
    let records = audited(&env, BOB, "test assertion refused");
    assert!((1..=6).contains(&records.len()), "{records:?}");
    assert_eq!(refusals(&records), FLOOD, "{records:?}");
}

/// Issue 10 item 4: a recovery code used once and then typed again is refused as a replay,
/// audited as one, and not counted: many replays with `max_failures = 2` lock nobody out. A
/// wrong recovery code still counts.
#[test]
fn a_used_recovery_code_is_refused_as_a_replay_and_not_counted() {
    ensure_test_accounts();
    let env = Env::new(
        "default_mode = \"optional\"\n[login]\nattempts = 3\n\
         [rate_limit]\nmax_failures = 2\nlockout = \"5m\"\n",
    );
    let e = env.enroll(ALICE);
    let code = &e.recovery[0];
    let r = env.login("tf", ALICE, &[code]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    for _ in 0..5 {
        let r = env.login("tf", ALICE, &[code, code, code]);
        assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
        assert!(r.said("recovery code was already used"), "{r:?}");
    }
    // As a proof too (the CLI, as herself).
    let out = env.ctl_as(
        ALICE,
        &["--json", "recovery", "regenerate"],
        Some(&format!("{code}\n")),
    );
    assert!(out.stdout.contains("already used"), "{out:?}");
    assert!(
        !locked(&env, ALICE),
        "replays of a used recovery code locked her out"
    );
    let replays: Vec<_> = audited(&env, ALICE, "a recovery code that was already used")
        .into_iter()
        .filter(|r| r["event"] == "replay" && r["result"] == "refused")
        .collect();
    assert!(!replays.is_empty(), "replays are audited");
    // The other codes still work, and a wrong one is a guess.
    let r = env.login("tf", ALICE, &[&e.recovery[1]]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    let r = env.login("tf", ALICE, &["aaaa-bbbb-cccc-dddd", "aaaa-bbbb-cccc-eeee"]);
    assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
    assert!(locked(&env, ALICE), "wrong recovery codes count");
}

/// What a user may do again and again with their own valid factor (here: new recovery codes,
/// each time with a code of the set before) is written in full, one record each; but when the
/// log is over `max_records`, the users with the most records give their oldest first, so that
/// flood displaces only the flooder's own history.
#[test]
fn a_users_own_flood_of_successes_displaces_only_their_own_records() {
    ensure_test_accounts();
    let env = Env::new("default_mode = \"optional\"\n[audit]\nmax_records = 100\n");
    let _ = env.enroll(ALICE);
    let bob = env.enroll(BOB);
    let alice_before = env.audit_of(ALICE).len();
    assert!(alice_before >= 1);

    let mut code = bob.recovery[0].clone();
    for _ in 0..120 {
        code = env.regenerate_recovery(BOB, &code);
    }
    let all = env.ctl(&["--json", "admin", "audit"]).ok().json();
    let all = all.as_array().expect("entries");
    let of = |user: &str| all.iter().filter(|e| e["user"] == user).count();
    // Within the cap (the pruner runs after every record here, on its own thread: allow the
    // few written while it ran).
    assert!(all.len() <= 100 + 5, "{} records", all.len());
    // Alice lost nothing; bob's newest records are there, his oldest are gone.
    assert_eq!(of(ALICE), alice_before, "{all:?}");
    assert!(of(BOB) >= 80, "{all:?}");
    let bob_events: Vec<&str> = all
        .iter()
        .filter(|e| e["user"] == BOB)
        .filter_map(|e| e["event"].as_str())
        .collect();
    assert!(!bob_events.contains(&"enroll"), "{bob_events:?}");
}
