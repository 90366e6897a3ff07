//! Crash consistency: the daemon is killed with SIGKILL (no cleanup, nothing flushed by it)
//! right after each confirmed answer and at random points in between, then started again.
//! What it confirmed must still hold: an enrollment the CLI was told succeeded is there, a TOTP
//! step, recovery code or key counter it accepted is never accepted again, a lockout stays.
//!
//! The random kill points come from a seeded generator: the seed is printed, and
//! `TWOFACTOR_CRASH_SEED=N` replays a run. Each TOTP use runs the daemon at a later clock
//! (libfaketime offset), so fresh codes need no waiting.

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::expect_used, clippy::panic)]

use std::time::Duration;

use twofactor_tests::*;

const POLICY: &str =
    "default_mode = \"optional\"\n[rate_limit]\nmax_failures = 3\nlockout = \"1h\"\n";

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The world and the daemon's clock offset (seconds ahead of real time).
struct Crashy {
    env: Env,
    offset: i64,
    kills: u32,
}

impl Crashy {
    /// SIGKILL, then start again at the current offset.
    fn crash(&mut self) {
        self.env.kill_daemon();
        self.kills += 1;
        self.start();
    }

    fn start(&mut self) {
        let at = format!("+{}", self.offset);
        self.env.restart_daemon_at(Some(&at));
    }

    /// Moves the daemon's clock three steps on (a crash-restart), so that a new TOTP step is
    /// fresh; returns the code for it.
    fn next_code(&mut self, secret: &str) -> String {
        self.offset += 90;
        self.crash();
        oathtool(secret, self.offset)
    }

    /// SIGKILL at a random moment while `login` runs (it may land before, during or after
    /// the answer), then start again; returns what the login got.
    fn login_with_random_kill(
        &mut self,
        rng: &mut Rng,
        login: impl FnOnce(&Env) -> PamResult,
    ) -> PamResult {
        let pid = self.env.daemon_pid().expect("daemon running") as i32;
        let delay = Duration::from_millis(rng.below(60));
        let r = std::thread::scope(|s| {
            s.spawn(move || {
                std::thread::sleep(delay);
                // SAFETY: plain kill(2) on the daemon's pid, our child, not yet reaped (only
                // `kill_daemon` below reaps it).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            });
            login(&self.env)
        });
        self.env.kill_daemon();
        self.kills += 1;
        self.start();
        r
    }

    /// Enrolls `user` with TOTP at the daemon's clock; returns the secret.
    fn enroll(&self, user: &str) -> String {
        let begin = self
            .env
            .ctl_as(user, &["--json", "enroll", "totp", "--begin"], None)
            .ok()
            .json();
        let secret = begin["secret"].as_str().expect("secret").to_string();
        let id = begin["enrollment_id"].as_str().expect("id").to_string();
        let code = oathtool(&secret, self.offset);
        let done = self
            .env
            .ctl_as(
                user,
                &["--json", "enroll", "totp", "--confirm", &id],
                Some(&format!("{code}\n")),
            )
            .ok()
            .json();
        assert_eq!(done["accepted"], true, "{done}");
        secret
    }

    fn status(&self, user: &str) -> serde_json::Value {
        self.env.ctl(&["--json", "admin", "show", user]).ok().json()
    }
}

/// Tries a credential again.
type Retry<'a> = Box<dyn Fn(&Env) -> PamResult + 'a>;

fn seed() -> u64 {
    let seed = std::env::var("TWOFACTOR_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    println!("crash test seed: {seed} (TWOFACTOR_CRASH_SEED={seed} replays it)");
    seed
}

#[test]
fn what_the_daemon_confirmed_survives_sigkill() {
    let mut rng = Rng(seed());
    let mut w = Crashy {
        env: Env::new(POLICY),
        offset: 0,
        kills: 0,
    };
    w.start();

    // Enrollment: told "accepted", killed right after, still there with its codes.
    let alice = w.env.enroll(ALICE);
    w.crash();
    let st = w.status(ALICE);
    assert_eq!(
        (st["enrolled"].as_bool(), st["recovery_codes_left"].as_i64()),
        (Some(true), Some(10)),
        "{st}"
    );

    // A security key for bob, enrolled, killed right after.
    let key = w.env.soft_key("crash", false);
    w.env.enroll_key(BOB, &key, "crash");
    w.crash();
    assert_eq!(w.status(BOB)["enrolled"], true);

    // Killed right after each accepted answer: nothing accepted is accepted again.
    for round in 0..3 {
        let code = w.next_code(&alice.secret);
        let r = w.env.login("tf", ALICE, &[&code]);
        assert_eq!(r.rc, rc::SUCCESS, "round {round}: {r:?}");
        w.crash();
        let r = w.env.login("tf", ALICE, &[&code]);
        assert_ne!(r.rc, rc::SUCCESS, "TOTP step replayed after a crash: {r:?}");

        let recovery = &alice.recovery[round];
        let r = w.env.login("tf", ALICE, &[recovery]);
        assert_eq!(r.rc, rc::SUCCESS, "round {round}: {r:?}");
        w.crash();
        let r = w.env.login("tf", ALICE, &[recovery]);
        assert_ne!(
            r.rc,
            rc::SUCCESS,
            "recovery code reused after a crash: {r:?}"
        );
        assert_eq!(
            w.status(ALICE)["recovery_codes_left"].as_i64(),
            Some(9 - round as i64)
        );

        let before = key.key.state().expect("key state").counter;
        let r = w.env.key_login(&key, BOB, None, &[]);
        assert_eq!(r.rc, rc::SUCCESS, "round {round}: {r:?}");
        w.crash();
        // The key says the counter it already used (a replayed or cloned assertion).
        key.set(|s| s.counter = before);
        let r = w.env.key_login(&key, BOB, None, &["000000"]);
        assert_ne!(r.rc, rc::SUCCESS, "key counter accepted twice: {r:?}");
        key.set(|s| s.counter = before + 10);
        w.env.ctl(&["admin", "unlock", BOB]).ok();
        w.env.ctl(&["admin", "unlock", ALICE]).ok();
    }

    // Random kill points: each credential is accepted at most once, whatever the moment.
    let mut next_recovery = 3;
    let mut interrupted = 0;
    for round in 0..12 {
        // Ten recovery codes in all: past them, a TOTP round instead.
        let kind = match rng.below(3) {
            1 if next_recovery >= alice.recovery.len() => 0,
            k => k,
        };
        let (first, again): (PamResult, Retry<'_>) = match kind {
            0 => {
                let code = w.next_code(&alice.secret);
                let c = code.clone();
                let first = w.login_with_random_kill(&mut rng, |env| env.login("tf", ALICE, &[&c]));
                (
                    first,
                    Box::new(move |env: &Env| env.login("tf", ALICE, &[&code])),
                )
            }
            1 => {
                let code = alice.recovery[next_recovery].clone();
                next_recovery += 1;
                let c = code.clone();
                let first = w.login_with_random_kill(&mut rng, |env| env.login("tf", ALICE, &[&c]));
                (
                    first,
                    Box::new(move |env: &Env| env.login("tf", ALICE, &[&code])),
                )
            }
            _ => {
                let before = key.key.state().expect("key state").counter;
                let first =
                    w.login_with_random_kill(&mut rng, |env| env.key_login(&key, BOB, None, &[]));
                let key = &key;
                // Whatever the key signed in the first try, it signs with that counter again.
                let again = move |env: &Env| {
                    key.set(|s| s.counter = before);
                    let r = env.key_login(key, BOB, None, &["000000"]);
                    env.ctl(&["admin", "unlock", BOB]).ok();
                    r
                };
                (first, Box::new(again))
            }
        };
        if first.rc != rc::SUCCESS {
            interrupted += 1;
        }
        let second = again(&w.env);
        assert!(
            !(first.rc == rc::SUCCESS && second.rc == rc::SUCCESS),
            "round {round}: accepted twice across a crash: {first:?} {second:?}"
        );
        if second.rc == rc::SUCCESS {
            // The first try died before its answer was committed; once is all it gets.
            let third = again(&w.env);
            assert_ne!(
                third.rc,
                rc::SUCCESS,
                "round {round}: accepted twice: {third:?}"
            );
        }
        drop(again);
        let counter = key.key.state().expect("key state").counter;
        key.set(|s| s.counter = counter + 10);
        w.env.ctl(&["admin", "unlock", BOB]).ok();
        w.env.ctl(&["admin", "unlock", ALICE]).ok();
    }
    let left = w.status(ALICE)["recovery_codes_left"]
        .as_i64()
        .expect("left");
    assert_eq!(
        left,
        10 - next_recovery as i64,
        "each recovery code is used exactly once"
    );

    // An enrollment killed at a random moment is all or nothing; what the CLI was told holds.
    for round in 0..4 {
        w.env.ctl(&["admin", "reset", CAROL]).ok();
        let begin = w
            .env
            .ctl_as(CAROL, &["--json", "enroll", "totp", "--begin"], None)
            .ok()
            .json();
        let secret = begin["secret"].as_str().expect("secret").to_string();
        let id = begin["enrollment_id"].as_str().expect("id").to_string();
        let code = oathtool(&secret, w.offset);
        let pid = w.env.daemon_pid().expect("daemon") as i32;
        let delay = Duration::from_millis(rng.below(40));
        let told = std::thread::scope(|s| {
            s.spawn(move || {
                std::thread::sleep(delay);
                // SAFETY: plain kill(2) on our unreaped child daemon.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            });
            w.env.ctl_as(
                CAROL,
                &["--json", "enroll", "totp", "--confirm", &id],
                Some(&format!("{code}\n")),
            )
        });
        w.env.kill_daemon();
        w.kills += 1;
        w.start();
        let accepted = told.code == 0 && told.json()["accepted"] == true;
        let st = w.status(CAROL);
        let enrolled = st["enrolled"] == true;
        if accepted {
            assert!(
                enrolled,
                "round {round}: the CLI was told yes, the factor is gone: {st}"
            );
        }
        let left = st["recovery_codes_left"].as_i64().unwrap_or(-1);
        assert_eq!(
            left,
            if enrolled { 10 } else { 0 },
            "round {round}: a half enrollment: {st}"
        );
        if enrolled {
            // Listed means usable.
            let code = w.next_code(&secret);
            let r = w.env.login("tf", CAROL, &[&code]);
            assert_eq!(
                r.rc,
                rc::SUCCESS,
                "round {round}: enrolled but unusable: {r:?}"
            );
        }
    }

    // Lockout: three wrong codes, a kill after each; the lock survives.
    w.env.ctl(&["admin", "reset", CAROL]).ok();
    let carol = w.enroll(CAROL);
    for wrong in ["000001", "000002", "000003"] {
        let r = w.env.login("tf", CAROL, &[wrong]);
        assert_ne!(r.rc, rc::SUCCESS, "{r:?}");
        w.crash();
    }
    let good = w.next_code(&carol);
    let r = w.env.login("tf", CAROL, &[&good]);
    assert_eq!(
        r.rc,
        rc::AUTH_ERR,
        "the lock did not survive the crashes: {r:?}"
    );
    assert!(r.said("Too many failed attempts"), "{r:?}");
    let st = w.status(CAROL);
    assert!(
        st["locked_until"].as_i64().unwrap_or(0) > now() + w.offset + 3000,
        "{st}"
    );

    println!(
        "crash test: {} SIGKILLs of the daemon ({interrupted} of 12 random ones cut a login short)",
        w.kills
    );
    assert!(w.kills >= 30, "{}", w.kills);
}
