//! Abuse of shared resources through the audit trail: a user's flood of refused attempts must
//! not delay an admin's notice nor grow the notify queue without bound, and the audit log keeps
//! to its retention. Real daemon, real bus, a real notify command.
// Test helpers outside #[test] functions: failing loudly is their job.
#![allow(clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use twofactor_tests::*;

/// A notify command that appends its JSON input to `out` and takes a while for each event.
fn slow_notify_script(dir: &Path, out: &Path) -> PathBuf {
    let script = dir.join("notify.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\ncat >> {}\nsleep 0.5\n", out.display()),
    )
    .expect("script");
    script
}

fn notices(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// Polls `out` until `done` holds for its notices (at most 30 s); returns them.
fn wait_for(out: &Path, done: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = notices(out);
        if done(&n) || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn is(v: &serde_json::Value, user: &str, event: &str) -> bool {
    v["user"] == user && v["event"] == event
}

#[test]
fn a_flood_of_refusals_is_coalesced_and_an_admins_notice_does_not_wait_behind_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("notices");
    let script = slow_notify_script(dir.path(), &out);
    let env = Env::new(&format!(
        "default_mode = \"optional\"\nnotify_command = [\"/bin/sh\", \"{}\"]\n\
         notify_failure_interval = \"2s\"\n",
        script.display()
    ));
    // Bob regenerates his recovery codes over and over, each time with one of the last set:
    // each a `recovery-regenerated` event (notified). (Refusals a user can repeat at no cost,
    // such as an enrollment's refused test signature, are folded in the audit log itself, so
    // they no longer reach the queue one by one: abuse_audit.rs.)
    let mut code = env.enroll(BOB).recovery[0].clone();
    const FLOOD: usize = 100;
    for _ in 0..FLOOD {
        code = env.regenerate_recovery(BOB, &code);
    }
    // At 0.5 s a notice, one per event would keep the command busy for 50 s.
    env.ctl(&["admin", "unlock", ALICE]).ok();
    let seen = wait_for(&out, |n| n.iter().any(|v| is(v, ALICE, "admin-unlock")));
    let unlock_at = seen
        .iter()
        .position(|v| is(v, ALICE, "admin-unlock"))
        .unwrap_or_else(|| panic!("the unlock notice never arrived: {seen:?}"));
    let before: Vec<_> = seen[..unlock_at]
        .iter()
        .filter(|v| is(v, BOB, "recovery-regenerated"))
        .collect();
    assert!(
        before.len() < 15,
        "the unlock waited behind {} of bob's notices",
        before.len()
    );
    let unlock = &seen[unlock_at];
    assert_eq!(unlock["actor"], "root", "{unlock}");
    assert_eq!(unlock["coalesced"], 0, "{unlock}");

    // Every event is accounted for: few notices, each saying how many events it stands for.
    let count = |n: &[serde_json::Value]| -> u64 {
        n.iter()
            .filter(|v| is(v, BOB, "recovery-regenerated") && v["result"] == "success")
            .map(|v| 1 + v["coalesced"].as_u64().expect("coalesced is a count"))
            .sum()
    };
    let all = wait_for(&out, |n| count(n) >= FLOOD as u64);
    assert_eq!(count(&all), FLOOD as u64, "{all:?}");
    let bobs: Vec<_> = all
        .iter()
        .filter(|v| is(v, BOB, "recovery-regenerated"))
        .collect();
    assert!(
        bobs.len() <= 20,
        "{} notices for {FLOOD} events",
        bobs.len()
    );
    let merged = bobs
        .iter()
        .find(|v| v["coalesced"].as_u64().unwrap_or(0) > 0)
        .unwrap_or_else(|| panic!("no notice says it merged others: {bobs:?}"));
    assert!(
        merged["first_time"].as_i64() <= merged["time"].as_i64(),
        "{merged}"
    );
    assert_eq!(merged["dropped"], 0, "{merged}");
    // The audit log has every one of them.
    let audit = env
        .ctl(&["--json", "admin", "audit", "--user", BOB, "--limit", "1000"])
        .ok()
        .json();
    let refused = audit
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["event"] == "recovery-regenerated" && e["result"] == "success")
        .count();
    assert_eq!(refused, FLOOD);
    // The daemon said what it merged.
    assert!(env.log().contains("one notice for"), "{}", env.log());
}

fn audit_events(env: &Env) -> Vec<serde_json::Value> {
    env.ctl(&["--json", "admin", "audit", "--limit", "10000"])
        .ok()
        .json()
        .as_array()
        .expect("entries")
        .clone()
}

#[test]
fn the_audit_log_keeps_to_its_record_cap_and_its_age() {
    let mut env =
        Env::new("default_mode = \"optional\"\n[audit]\nretention = \"1d\"\nmax_records = 100\n");
    env.ctl(&["admin", "require", ALICE]).ok();
    for _ in 0..150 {
        env.ctl(&["admin", "unlock", BOB]).ok();
    }
    env.ctl(&["admin", "release", ALICE]).ok();
    // Pruned after every new record at this cap (in the background: a bounded wait).
    let deadline = Instant::now() + Duration::from_secs(20);
    let events = loop {
        let events = audit_events(&env);
        if events.len() <= 100 || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(events.len(), 100, "the newest 100 are kept");
    let last = events.last().expect("events");
    assert_eq!(last["event"], "admin-release", "{last}");
    // Bob's records (150 unlocks) made the log overflow: his oldest went, alice's older
    // record stayed.
    assert!(
        events.iter().any(|e| e["event"] == "admin-require"),
        "the user with the most records gives first"
    );
    let bob = events.iter().filter(|e| e["user"] == BOB).count();
    assert_eq!(bob, 98, "{events:?}");
    assert!(env.log().contains("audit log: deleted"), "{}", env.log());

    // Two days later every record is past the retention: the daemon prunes at start.
    env.restart_daemon_at(Some("+2d"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let events = loop {
        let events = audit_events(&env);
        if events.is_empty() || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(events.is_empty(), "{events:?}");
    // New records are kept.
    env.ctl(&["admin", "unlock", BOB]).ok();
    assert_eq!(audit_events(&env).len(), 1);
}

#[test]
fn check_validates_the_retention_and_notify_limits() {
    let dir = tempfile::tempdir().expect("tmp");
    let check = |text: &str| {
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, text).expect("policy");
        let out = std::process::Command::new(bin("twofactord"))
            .arg("--check")
            .arg(&path)
            .output()
            .expect("run");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = check(
        "notify_failure_interval = \"5m\"\n[audit]\nretention = \"90d\"\nmax_records = 50000\n",
    );
    assert!(ok, "{err}");
    for (text, message) in [
        ("[audit]\nmax_records = 10\n", ":2:"),
        ("[audit]\nretention = \"1h\"\n", "between 1d and"),
        ("[audit]\nretention = \"a year\"\n", "not a duration"),
        ("[audit]\nkeep = 5\n", "unknown field"),
        ("notify_failure_interval = \"0s\"\n", "between 1s and 1h"),
    ] {
        let (ok, err) = check(text);
        assert!(!ok, "{text} was accepted");
        assert!(err.contains(message), "{text}: {err}");
    }
}
