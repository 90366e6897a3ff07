//! Abuse by one local user or a careless policy, performed for real (private bus with the
//! shipped bus policy, the real daemon, real libpam, callers of other uids): lockout by
//! non-guesses, control characters from the bus, durations that overflow, small leaks.

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::expect_used, clippy::panic)]

use twofactor_tests::*;

fn locked(env: &Env, user: &str) -> bool {
    let s = env.ctl(&["--json", "admin", "show", user]).ok().json();
    s["locked_until"].as_i64().unwrap_or(0) > now()
}

/// Item 4: Enter alone, an end of input and a replay of the one valid code (also a burst of
/// parallel logins with it) are not guesses: they lock nobody out. Wrong codes still do.
#[test]
fn only_guesses_lock_a_user_out() {
    ensure_test_accounts();
    let env =
        Env::new("default_mode = \"optional\"\n[rate_limit]\nmax_failures = 2\nlockout = \"5m\"\n");
    let e = env.enroll(ALICE);
    // Anyone who knows her name, answering only Enter, over and over.
    for _ in 0..4 {
        let r = env.login("tf", ALICE, &[""]);
        assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
        assert!(r.said("No code was entered"), "{r:?}");
    }
    // An application that ends the conversation (no answer at all).
    for _ in 0..3 {
        let r = env.login("tf", ALICE, &[]);
        assert_eq!(r.rc, rc::CONV_ERR, "{r:?}");
    }
    assert!(!locked(&env, ALICE), "non-guesses locked her out");
    // Two terminals in one 30-second step, and then a burst, all with the one valid code.
    let code = oathtool(&e.secret, 30);
    let wins = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| env.login("tf", ALICE, &[&code, &code, &code]).rc))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .filter(|rc| *rc == rc::SUCCESS)
            .count()
    });
    assert_eq!(wins, 1, "one code, one login");
    assert!(
        !locked(&env, ALICE),
        "replays of a valid code locked her out"
    );
    let log = env.ctl(&["admin", "audit", "--user", ALICE]).ok().stdout;
    assert!(log.contains("replay"), "replays are audited: {log}");
    // Guesses still count: two wrong codes lock.
    let r = env.login("tf", ALICE, &["000000", "999999"]);
    assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
    assert!(locked(&env, ALICE));
}

/// Item 5: strings with control characters (newline, carriage return, ESC, OSC, bidi
/// overrides) are refused by the daemon wherever they come from the bus, so a user cannot forge
/// a `root login success` line in the audit log or the daemon's log.
#[test]
fn control_characters_from_the_bus_are_refused() {
    ensure_test_accounts();
    let env = Env::new("default_mode = \"optional\"\n");
    let _ = env.enroll(BOB);
    let forged = [
        "sshd\naudit: event=login user=root uid=0 result=success",
        "sshd\r",
        "x\u{1b}[2K\u{1b}[1Gevent=login user=root",
        "x\u{1b}]0;title\u{7}",
        "x\u{202e}toor",
        "x\u{85}",
    ];
    for (i, bad) in forged.iter().enumerate() {
        for key in ["service", "rhost", "tty"] {
            let out = env.busctl_as(BOB, "Login", "BeginLogin", &["sa{ss}", BOB, "1", key, bad]);
            assert_ne!(out.code, 0, "{i} {key}: {out:?}");
            assert!(
                out.stderr.contains("control characters"),
                "{i} {key}: {out:?}"
            );
        }
    }
    // Other methods too: a key name, an answer.
    let out = env.busctl_as(BOB, "Enrollment", "BeginKey", &["ss", "k\nroot", ""]);
    assert!(out.stderr.contains("control characters"), "{out:?}");
    let out = env.busctl_as(BOB, "Login", "Continue", &["ss", "h", "12\u{1b}34"]);
    assert!(out.stderr.contains("control characters"), "{out:?}");
    // Nothing was stored or logged with them.
    let audit = env.ctl(&["admin", "audit"]).ok().stdout;
    assert!(!audit.contains("user=root"), "{audit}");
    let log = env.log();
    assert!(!log.contains('\u{1b}'), "raw ESC in the daemon's log");
    assert!(
        !log.lines()
            .any(|l| l.starts_with("audit: event=login user=root")),
        "{log}"
    );
}

/// Item 7: a duration that would overflow time arithmetic (it once meant "locked for 0
/// minutes", no lockout at all) is refused by `twofactord --check` with where and why.
#[test]
fn durations_that_overflow_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let policy = dir.path().join("policy.toml");
    for (text, line) in [
        (
            "[rate_limit]\nlockout = \"16000000000000w\"\nmax_lockout = \"16000000000000w\"\n",
            2,
        ),
        ("grace_period = \"100000d\"\n", 1),
        ("[services.sudo]\nremember = \"99999999999999d\"\n", 2),
    ] {
        std::fs::write(&policy, text).expect("policy");
        let out = std::process::Command::new(bin("twofactord"))
            .arg("--check")
            .arg(&policy)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("policy.toml:{line}:")) && err.contains("too long"),
            "{text}: {err}"
        );
    }
    // The longest allowed lockout still locks, for that long.
    let env = Env::new(
        "default_mode = \"optional\"\n[rate_limit]\nmax_failures = 1\nlockout = \"30d\"\n\
         max_lockout = \"30d\"\n",
    );
    let _ = env.enroll(ALICE);
    let r = env.login("tf", ALICE, &["000000"]);
    assert!(r.said("locked for 43200 minutes"), "{r:?}");
    let s = env.ctl(&["--json", "admin", "show", ALICE]).ok().json();
    assert!(
        s["locked_until"].as_i64().unwrap_or(0) > now() + 29 * 86_400,
        "{s}"
    );
}

/// Item 8: a non-admin learns nothing about which names exist: `Status` of an unknown name and
/// of another existing user give the same answer.
#[test]
fn status_does_not_tell_unknown_names_from_other_users() {
    ensure_test_accounts();
    let env = Env::new("default_mode = \"optional\"\n");
    let other = env.busctl_as(BOB, "Enrollment", "Status", &["s", ALICE]);
    let unknown = env.busctl_as(BOB, "Enrollment", "Status", &["s", "tf-nosuchuser"]);
    assert_ne!(other.code, 0);
    assert_eq!(other.code, unknown.code);
    assert_eq!(other.stderr, unknown.stderr, "{other:?} / {unknown:?}");
    // Through the CLI too, for the admin commands a non-admin is refused.
    let a = env.ctl_as(BOB, &["admin", "show", ALICE], None);
    let b = env.ctl_as(BOB, &["admin", "show", "tf-nosuchuser"], None);
    assert_eq!((a.code, &a.stderr), (b.code, &b.stderr));
    // An admin does learn it.
    let out = env.ctl(&["admin", "show", "tf-nosuchuser"]);
    assert!(out.stderr.contains("no such user"), "{out:?}");
}

/// Item 8: registering a credential id that another user holds is answered exactly as one's
/// own duplicate: at the same step (`RegisterKey`), with the same error and words, so the
/// answer never says that the credential exists elsewhere (as `admin import` answers).
#[test]
fn a_credential_held_by_another_user_is_refused_like_ones_own() {
    ensure_test_accounts();
    let env = Env::new("default_mode = \"optional\"\n");
    let key = env.soft_key("alices", false);
    let codes = env.enroll_key(ALICE, &key, "blue");
    let held = key.key.state().expect("state").credentials[0]
        .credential_id
        .clone();
    // A registration made up with alice's credential id and a key pair of one's own (what
    // RegisterKey reads is the id and the public key).
    let fresh = env.soft_key("fresh", false);
    let made = pam_u2f::credential(&fresh, BOB);
    let fresh_id = fresh.key.state().expect("state").credentials[0]
        .credential_id
        .clone();
    // rp id hash (32), flags (1), counter (4), AAGUID (16), id length (2), id, COSE key.
    let at = 32 + 1 + 4 + 16;
    assert_eq!(&made[at + 2..at + 2 + fresh_id.len()], fresh_id.as_slice());
    let mut forged = made[..at].to_vec();
    forged.extend_from_slice(&u16::try_from(held.len()).expect("id length").to_be_bytes());
    forged.extend_from_slice(&held);
    forged.extend_from_slice(&made[at + 2 + fresh_id.len()..]);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();

    let mine = env.softkey_ctl_with_proof(
        ALICE,
        &key,
        &["register", "again", "--auth-data", &hex(&forged)],
        Some(&codes[0]),
    );
    let theirs = env.softkey_ctl(
        BOB,
        &fresh,
        &["register", "mine", "--auth-data", &hex(&forged)],
    );
    assert_eq!(mine, theirs, "alice: {mine} / bob: {theirs}");
    let said = mine["error"].as_str().unwrap_or_default();
    assert!(
        said.starts_with("RegisterKey: NotAllowed:") && said.contains("already enrolled"),
        "{mine}"
    );
    // The made-up registration itself, with its own fresh id, passes that step.
    let ok = env.softkey_ctl(
        BOB,
        &fresh,
        &["register", "mine", "--auth-data", &hex(&made)],
    );
    assert_eq!(ok["registered"], true, "{ok}");
    // Nothing was added to bob, and alice keeps her one key.
    let bob = env.ctl(&["--json", "admin", "show", BOB]).ok().json();
    assert_eq!(bob["enrolled"], false, "{bob}");
}
