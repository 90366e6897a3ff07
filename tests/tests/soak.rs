//! Concurrency soak: many real PAM logins (each its own `pamdrive` process and bus connection)
//! at once against the real daemon. Counts, not timings, are asserted.
//!
//! - 100 logins of one user with one valid code: exactly one succeeds, 99 are refused cleanly
//!   (a replayed code, or a BeginLogin over the per-user cap of open logins: `PAM_AUTH_ERR`,
//!   never a daemon fault), and the user is not locked out (neither refusal is a guess).
//! - 32 logins of 32 distinct users, each with its own code: 32 successes.
//! - enroll / reset / disable / status of one user racing: never a half state.
#![allow(clippy::expect_used, clippy::panic)]

use std::process::Command;

use twofactor_tests::*;

const POLICY: &str = "default_mode = \"optional\"\n";
/// Linux-PAM's PAM_MAXTRIES.
const PAM_MAXTRIES: i32 = 11;

/// A refusal that is an answer, not a fault.
fn clean_refusal(rc: i32) -> bool {
    rc == rc::AUTH_ERR || rc == rc::CONV_ERR || rc == PAM_MAXTRIES
}

/// `count` logins of `user`, all at once, each answering `code` every time it is asked.
fn burst(env: &Env, user: &str, code: &str, count: usize) -> Vec<PamResult> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..count)
            .map(|_| s.spawn(|| env.login("tf", user, &[code, code, code])))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("login thread"))
            .collect()
    })
}

fn check_one_success(results: &[PamResult], what: &str) {
    let ok = results.iter().filter(|r| r.rc == rc::SUCCESS).count();
    assert_eq!(ok, 1, "{what}: one code, {ok} successes: {results:?}");
    for r in results.iter().filter(|r| r.rc != rc::SUCCESS) {
        assert!(clean_refusal(r.rc), "{what}: not a clean refusal: {r:?}");
    }
}

#[test]
fn one_code_raced_by_a_hundred_logins_opens_exactly_one() {
    let env = Env::new(POLICY);
    // Enrollment spends the current step; the next one is valid now (window 1).
    let e = env.enroll(ALICE);
    let b = env.enroll(BOB);

    // All at once: most BeginLogins meet the per-user cap (8 open logins), the rest race for
    // the code.
    let code = oathtool(&e.secret, 30);
    let all = burst(&env, ALICE, &code, 100);
    check_one_success(&all, "100 at once");

    // In batches of 8 (the cap), so that every login reaches the code check and each batch
    // races on it: still one success for the code, over all 100 (bob's, whose next step is
    // still unused).
    let next = oathtool(&b.secret, 30);
    let mut results = Vec::new();
    for batch in 0..13 {
        let n = if batch < 12 { 8 } else { 4 };
        results.extend(burst(&env, BOB, &next, n));
    }
    assert_eq!(results.len(), 100);
    check_one_success(&results, "100 in batches of 8");
    let reached_the_code = results
        .iter()
        .filter(|r| r.rc != rc::SUCCESS && r.said("already used"))
        .count();
    assert!(
        reached_the_code > 50,
        "the batches did not reach the code check ({reached_the_code}): {:?}",
        results.first()
    );

    // Nobody guessed: neither user is locked out.
    for user in [ALICE, BOB] {
        let st = env.ctl(&["--json", "admin", "show", user]).ok().json();
        assert!(
            st["locked_until"].is_null() || st["locked_until"].as_i64().unwrap_or(0) <= now(),
            "locked out by replays: {st}"
        );
        let audit = env.ctl(&["admin", "audit", "--user", user]).ok().stdout;
        assert!(!audit.contains("lockout"), "{audit}");
    }
}

/// Test users, deleted when dropped (even when an assertion fails).
struct Users(Vec<String>);

impl Drop for Users {
    fn drop(&mut self) {
        for u in &self.0 {
            let _ = Command::new("userdel").arg(u).output();
            let _ = Command::new("groupdel").arg(u).output();
        }
    }
}

#[test]
fn thirty_two_users_logging_in_at_once_all_get_in() {
    let env = Env::new(POLICY);
    let mut users = Users(Vec::new());
    for i in 0..32 {
        let name = format!("tf-s{}x{i}", std::process::id());
        let _ = Command::new("userdel").arg(&name).output();
        let _ = Command::new("groupdel").arg(&name).output();
        let out = Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/bin/sh"])
            .arg(&name)
            .output()
            .expect("useradd");
        assert!(out.status.success(), "useradd {name}: {out:?}");
        users.0.push(name);
    }
    let secrets: Vec<String> = users.0.iter().map(|u| env.enroll(u).secret).collect();
    wait_for_fresh_step();
    // The next step's code: not the one each enrollment just spent.
    let codes: Vec<String> = secrets.iter().map(|s| oathtool(s, 30)).collect();
    let results: Vec<PamResult> = std::thread::scope(|s| {
        let handles: Vec<_> = users
            .0
            .iter()
            .zip(&codes)
            .map(|(u, c)| {
                let env = &env;
                s.spawn(move || env.login("tf", u, &[c]))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("login"))
            .collect()
    });
    let failed: Vec<_> = results.iter().filter(|r| r.rc != rc::SUCCESS).collect();
    assert!(failed.is_empty(), "spurious failures: {failed:?}");
    assert_eq!(results.len(), 32);
}

/// What `admin show` says, as (enrolled, recovery codes left); panics on a half state.
fn consistent_status(env: &Env) -> (bool, i64) {
    let st = env.ctl(&["--json", "admin", "show", BOB]).ok().json();
    let enrolled = st["enrolled"] == true;
    let left = st["recovery_codes_left"].as_i64().unwrap_or(-1);
    let factors = st["factors"].as_array().map_or(0, Vec::len);
    if enrolled {
        assert_eq!((left, factors), (10, 1), "enrolled, but: {st}");
    } else {
        assert_eq!((left, factors), (0, 0), "not enrolled, but: {st}");
    }
    (enrolled, left)
}

#[test]
fn enroll_reset_and_disable_racing_never_leave_a_half_state() {
    let env = Env::new(POLICY);
    // Each confirmed enrollment: its secret and the recovery codes it showed.
    let confirmed = std::sync::Mutex::new(Vec::<(String, Vec<String>)>::new());
    let disabled = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::atomic::AtomicBool::new(false);
    let enrolling_done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        // bob enrolls again and again (a new app is refused while one is enrolled: it needs a
        // proof; the resets and disables below make room).
        let enroll = s.spawn(|| {
            for _ in 0..24 {
                let begin = env.ctl_as(BOB, &["--json", "enroll", "totp", "--begin"], None);
                if begin.code != 0 {
                    continue;
                }
                let b = begin.json();
                let secret = b["secret"].as_str().expect("secret").to_string();
                let id = b["enrollment_id"].as_str().expect("id").to_string();
                let code = oathtool(&secret, 0);
                let r = env.ctl_as(
                    BOB,
                    &["--json", "enroll", "totp", "--confirm", &id],
                    Some(&format!("{code}\n")),
                );
                if r.code == 0 && r.json()["accepted"] == true {
                    let codes = r.json()["recovery_codes"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|c| c.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    confirmed.lock().expect("lock").push((secret, codes));
                }
            }
        });
        // an admin resets bob again and again.
        let reset = s.spawn(|| {
            for _ in 0..12 {
                env.ctl(&["admin", "reset", BOB]).ok();
                std::thread::sleep(std::time::Duration::from_millis(60));
            }
        });
        // bob removes his factor again and again, with a recovery code of the newest enrollment.
        let disable = s.spawn(|| {
            while !enrolling_done.load(std::sync::atomic::Ordering::SeqCst) {
                let code = confirmed
                    .lock()
                    .expect("lock")
                    .last_mut()
                    .and_then(|(_, codes)| codes.pop());
                let Some(code) = code else {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    continue;
                };
                let r = env.ctl_as(BOB, &["--json", "disable"], Some(&format!("{code}\n")));
                // Refused (reset or re-enrolled meanwhile) is a clean answer; never a fault.
                // (exit 4: not accepted; 1: refused by the state, e.g. nothing enrolled).
                assert!(matches!(r.code, 0 | 1 | 4), "disable: {r:?}");
                if r.code == 0 && r.json()["accepted"] == true {
                    disabled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
        // status, all the while, is never half.
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                consistent_status(&env);
            }
        });
        enroll.join().expect("enroll thread");
        enrolling_done.store(true, std::sync::atomic::Ordering::SeqCst);
        reset.join().expect("reset thread");
        disable.join().expect("disable thread");
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let confirmed = confirmed.into_inner().expect("lock");
    assert!(!confirmed.is_empty(), "no enrollment got through at all");
    eprintln!(
        "soak: {} enrollments confirmed, {} disabled by the user, amid 12 resets",
        confirmed.len(),
        disabled.load(std::sync::atomic::Ordering::SeqCst)
    );
    let (enrolled, _) = consistent_status(&env);
    if enrolled {
        // Listed means usable: the last confirmed secret logs in (the next step's code).
        let (last, _) = confirmed.last().expect("a secret");
        let r = env.login("tf", BOB, &[&oathtool(last, 30)]);
        assert_eq!(r.rc, rc::SUCCESS, "listed but not usable: {r:?}");
    } else {
        // Not enrolled: not asked (the module ignores the login; the stack's pam_permit ends it).
        let r = env.login("tf", BOB, &["123456"]);
        assert_eq!(r.rc, rc::SUCCESS, "not enrolled but refused: {r:?}");
        assert_eq!(r.prompts(), 0, "not enrolled but asked: {r:?}");
    }
}
