//! Security keys end to end: a real bus, the real daemon, the module's code in real libpam
//! (`libpam_twofactor_softkey.so`: the shipped module's logic with the software authenticator
//! plugged in where the shipped one has USB HID), and the CLI's key flows (`softkey-ctl`) run
//! as the user. The soft key makes real P-256 / Ed25519 signatures over real authenticatorData.

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use twofactor_bus::{KeyAssertion, LoginProxy, LoginStep, Outcome, StepKind};
use twofactor_key::Authenticator;
use twofactor_softkey::CounterMode;
use twofactor_tests::*;
use zeroize::Zeroizing;

const OPTIONAL: &str = "default_mode = \"optional\"\n";

fn audit(env: &Env, user: &str) -> String {
    env.ctl(&["admin", "audit", "--user", user]).ok().stdout
}

#[test]
fn enroll_a_key_then_log_in_locally_with_a_touch() {
    let env = Env::new(OPTIONAL);
    let key = env.soft_key("blue", false);
    let codes = env.enroll_key(ALICE, &key, "yubikey-blue");
    assert_eq!(
        codes.len(),
        10,
        "the first factor comes with recovery codes"
    );

    let r = env.key_login(&key, ALICE, None, &[]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    assert!(r.said("Touch your security key"), "{r:?}");
    assert_eq!(r.prompts(), 0, "a touch needs no typing: {r:?}");
    assert_eq!(
        r.threads_after_end, r.threads_before,
        "the module left a thread"
    );

    // status lists the key by name, with its use.
    let s = env.ctl_as(ALICE, &["--json", "status"], None).ok().json();
    let factors = s["factors"].as_array().expect("factors");
    let k = factors
        .iter()
        .find(|f| f["kind"] == "key")
        .unwrap_or_else(|| panic!("{s}"));
    assert_eq!(k["name"], "yubikey-blue");
    assert!(k["last_used"].as_i64().unwrap_or(0) > 0, "{s}");
    assert_eq!(s["enrolled"], true);
    let log = audit(&env, ALICE);
    assert!(
        log.contains("enroll") && log.contains("yubikey-blue"),
        "{log}"
    );

    // Ed25519 keys work too, as a second key (which needs a proof: a recovery code here).
    let green = env.soft_key("green", true);
    let refused = env.softkey_ctl(ALICE, &green, &["enroll", "green"]);
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or("")
            .contains("needs a current code"),
        "{refused}"
    );
    let v = env.softkey_ctl_with_proof(ALICE, &green, &["enroll", "green"], Some(&codes[0]));
    assert_eq!(v["accepted"], true, "{v}");
    let r = env.key_login(&green, ALICE, None, &[]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
}

#[test]
fn a_key_that_is_not_enrolled_or_signs_with_another_private_key_is_refused() {
    let env = Env::new(OPTIONAL);
    let key = env.soft_key("mine", false);
    env.enroll_key(ALICE, &key, "mine");
    // A key holding none of the user's credentials: the code prompt, then refused.
    let other = env.soft_key("other", false);
    let r = env.key_login(&other, ALICE, None, &["000000", "000000", "000000"]);
    assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
    assert!(r.said("not enrolled"), "{r:?}");

    // A forged key: alice's credential id, another private key (from a fresh credential).
    let fresh = env.soft_key("fresh", false);
    fresh
        .key
        .register(
            &twofactor_key::RegistrationRequest {
                rp_id: "pam://elsewhere",
                client_data: b"{}",
                user_id: b"x",
                user_name: "x",
                exclude_credential_ids: &[],
                algorithms: &[-7],
                user_verification: twofactor_key::UserVerification::Discouraged,
                timeout: std::time::Duration::from_secs(5),
            },
            &mut |_: &str| None,
        )
        .expect("register");
    let other_private = fresh.key.state().expect("state").credentials[0]
        .private_key
        .clone();
    let real = key.key.state().expect("state");
    let forger = env.soft_key("forger", false);
    forger.set(|s| {
        *s = real.clone();
        s.credentials[0].private_key = other_private;
    });
    let r = env.key_login(&forger, ALICE, None, &["000000"]);
    assert_ne!(r.rc, rc::SUCCESS, "{r:?}");
    assert!(r.said("security key was refused"), "{r:?}");
    let log = audit(&env, ALICE);
    assert!(log.contains("signature"), "{log}");
}

/// Drives the Login interface directly (as the module would) to replay an old assertion.
#[test]
fn a_replayed_assertion_is_refused_because_its_challenge_is_stale() {
    let env = Env::new(OPTIONAL);
    let key = env.soft_key("k", false);
    env.enroll_key(ALICE, &key, "k");
    let soft = key.key.clone();
    zbus::block_on(async {
        let conn = zbus::connection::Builder::address(env.address.as_str())
            .build()
            .await
            .expect("bus");
        let login = LoginProxy::new(&conn).await.expect("proxy");
        let ctx = HashMap::from([("service", "login"), ("tty", "tty1")]);
        let assert_for = |step: &twofactor_bus::WireStep| -> KeyAssertion {
            let LoginStep {
                kind: StepKind::Key { request, .. },
                ..
            } = LoginStep::try_from(step.clone()).expect("step")
            else {
                panic!("not a key step: {step:?}")
            };
            let mut pin = |_: &str| None::<Zeroizing<String>>;
            twofactor_key::flow::assert_request(&soft, &request, &mut pin).expect("assert")
        };
        let (h1, s1) = login.begin_login(ALICE, ctx.clone()).await.expect("begin");
        let first = assert_for(&s1);
        let done = login.assert(&h1, &first).await.expect("assert");
        assert_eq!(
            LoginStep::try_from(done).expect("step").kind,
            StepKind::Done(Outcome::Success)
        );
        // The same assertion on the finished login: no such login.
        assert!(login.assert(&h1, &first).await.is_err());
        // ... and on a new login: its challenge is another one, so the signature fails.
        let (h2, _s2) = login.begin_login(ALICE, ctx.clone()).await.expect("begin");
        let replay =
            LoginStep::try_from(login.assert(&h2, &first).await.expect("assert")).expect("step");
        assert!(
            matches!(replay.kind, StepKind::Prompt { .. }),
            "a refused key leads to the code prompt: {replay:?}"
        );
        assert!(
            replay.notices.iter().any(|n| n.text.contains("refused")),
            "{replay:?}"
        );
        // Malformed assertions are refused with a clear error, never a panic.
        let (h3, _) = login.begin_login(ALICE, ctx.clone()).await.expect("begin");
        for bad in [
            KeyAssertion::default(),
            KeyAssertion {
                credential_id: vec![1; 2000],
                authenticator_data: vec![0; 37],
                signature: vec![0; 70],
            },
        ] {
            let e = login.assert(&h3, &bad).await.expect_err("refused");
            assert_eq!(e.kind(), "InvalidArgument", "{e:?}");
        }
        let truncated = KeyAssertion {
            credential_id: first.credential_id.clone(),
            authenticator_data: first.authenticator_data[..20].to_vec(),
            signature: first.signature.clone(),
        };
        let step = LoginStep::try_from(login.assert(&h3, &truncated).await.expect("assert"))
            .expect("step");
        assert!(matches!(step.kind, StepKind::Prompt { .. }), "{step:?}");
        assert!(login.skip_key(&h3, "bogus").await.is_err());
    });
}

#[test]
fn a_counter_that_goes_back_is_refused_and_audited_as_a_possible_clone() {
    let env = Env::new(OPTIONAL);
    let key = env.soft_key("k", false);
    env.enroll_key(ALICE, &key, "k");
    assert_eq!(env.key_login(&key, ALICE, None, &[]).rc, rc::SUCCESS);
    for mode in [CounterMode::Rollback, CounterMode::Repeat] {
        key.set(|s| s.counter_mode = mode);
        let r = env.key_login(&key, ALICE, None, &["000000"]);
        assert_ne!(r.rc, rc::SUCCESS, "{mode:?}: {r:?}");
        assert!(r.said("possible cloned key"), "{r:?}");
    }
    let log = audit(&env, ALICE);
    assert!(log.contains("key-clone-suspected"), "{log}");
    // A key whose counter moves on again is accepted again (after an admin's unlock, since
    // the refusals counted as failures).
    env.ctl(&["admin", "unlock", ALICE]).ok();
    key.set(|s| {
        s.counter_mode = CounterMode::Increment;
        s.counter += 100;
    });
    assert_eq!(env.key_login(&key, ALICE, None, &[]).rc, rc::SUCCESS);
}

#[test]
fn user_verification_required_refuses_an_answer_without_uv_and_asks_the_pin() {
    let env = Env::new("default_mode = \"optional\"\n[fido2]\nuser_verification = \"required\"\n");
    let key = env.soft_key("k", false);
    // A key without a PIN cannot be enrolled when UV is required.
    let v = env.softkey_ctl(ALICE, &key, &["enroll", "k"]);
    assert!(v["error"].as_str().unwrap_or("").contains("PIN"), "{v}");
    key.set(|s| s.pin = Some(Zeroizing::new("4321".into())));
    let v = env.softkey_ctl(ALICE, &key, &["enroll", "k", "--pin", "4321"]);
    assert_eq!(v["accepted"], true, "{v}");
    // The module asks the PIN through PAM; with it, the login passes.
    let r = env.key_login(&key, ALICE, None, &["4321"]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    assert!(r.said("PIN"), "{r:?}");
    // A key that leaves out UV: refused.
    key.set(|s| s.omit_uv = true);
    let r = env.key_login(&key, ALICE, None, &["4321", "000000"]);
    assert_ne!(r.rc, rc::SUCCESS, "{r:?}");
    assert!(r.said("PIN"), "{r:?}");
    assert!(r.said("refused"), "{r:?}");
    // And UP left out: refused too.
    key.set(|s| {
        s.omit_uv = false;
        s.omit_up = true;
    });
    let r = env.key_login(&key, ALICE, None, &["4321", "000000"]);
    assert_ne!(r.rc, rc::SUCCESS, "{r:?}");
}

#[test]
fn remote_logins_skip_the_key_and_no_key_falls_back_to_the_code_prompt() {
    let env = Env::new(OPTIONAL);
    let e = env.enroll(ALICE);
    let key = env.soft_key("k", false);
    let v = env.softkey_ctl_with_proof(ALICE, &key, &["enroll", "k"], Some(&e.recovery[0]));
    assert_eq!(v["accepted"], true, "{v}");
    // Remote: straight to the code prompt, no cue, the key is never asked. (The enrollment
    // spent this step's code: the next step's is within the window.)
    let counter = key.key.state().expect("state").counter;
    let code = oathtool(&e.secret, 30);
    let r = env.key_login(&key, ALICE, Some("192.0.2.7"), &[&code]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    assert!(!r.said("Touch"), "{r:?}");
    assert_eq!(r.transcript[0].text, "Verification code: ", "{r:?}");
    assert_eq!(
        key.key.state().expect("state").counter,
        counter,
        "the key was used"
    );

    // No key plugged in: the code prompt, saying why.
    key.set(|s| s.present = false);
    let r = env.key_login(&key, ALICE, None, &[&e.recovery[3]]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    assert!(r.said("No security key found"), "{r:?}");

    // Not touched in time: the same.
    key.set(|s| {
        s.present = true;
        s.decline = true;
    });
    let r = env.key_login(&key, ALICE, None, &[&e.recovery[1]]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    assert!(r.said("not touched in time"), "{r:?}");

    // The shipped module (USB HID) on this machine, which has no key: the code prompt.
    let r = env.login("tf", ALICE, &[&e.recovery[2]]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    assert!(r.said("No security key found"), "{r:?}");
    assert_eq!(
        r.threads_after_end, r.threads_before,
        "the module left a thread"
    );
}

#[test]
fn press_enter_mode_lets_the_user_type_a_code_at_the_cue() {
    let env = Env::new("default_mode = \"optional\"\n[fido2]\npress_enter = true\n");
    let key = env.soft_key("k", false);
    let codes = env.enroll_key(ALICE, &key, "k");
    let r = env.key_login(&key, ALICE, None, &[""]);
    assert_eq!(r.rc, rc::SUCCESS, "Enter then touch: {r:?}");
    let r = env.key_login(&key, ALICE, None, &[&codes[0]]);
    assert_eq!(r.rc, rc::SUCCESS, "a code at the cue: {r:?}");
    assert_eq!(r.prompts(), 1, "{r:?}");
}

#[test]
fn removing_a_key_needs_a_fresh_proof_by_code_or_by_touch() {
    let env = Env::new(OPTIONAL);
    let key = env.soft_key("a", false);
    let codes = env.enroll_key(ALICE, &key, "a");
    let second = env.soft_key("b", false);
    let token = env.softkey_ctl(ALICE, &key, &["prove"]);
    let token = token["token"].as_str().expect("token").to_string();
    let v = env.softkey_ctl_with_proof(ALICE, &second, &["enroll", "b"], Some(&token));
    assert_eq!(
        v["accepted"], true,
        "a touch of an enrolled key proves: {v}"
    );
    // A token works once.
    let again = env.softkey_ctl_with_proof(ALICE, &second, &["enroll", "c"], Some(&token));
    assert!(again["error"].is_string(), "{again}");

    let wrong = env.ctl_as(ALICE, &["remove", "key", "a"], Some("000000\n"));
    assert_eq!(wrong.code, 4, "{wrong:?}");
    let ok = env.ctl_as(
        ALICE,
        &["remove", "key", "a"],
        Some(&format!("{}\n", codes[0])),
    );
    assert_eq!(ok.code, 0, "{ok:?}");
    let s = env.ctl_as(ALICE, &["--json", "status"], None).ok().json();
    let names: Vec<_> = s["factors"]
        .as_array()
        .expect("f")
        .iter()
        .map(|f| f["name"].clone())
        .collect();
    assert_eq!(names, ["b"], "{s}");
    // The key that was removed no longer logs in.
    let r = env.key_login(&key, ALICE, None, &["000000"]);
    assert_ne!(r.rc, rc::SUCCESS, "{r:?}");
    assert!(audit(&env, ALICE).contains("factor-removed"));
    // Another user cannot remove alice's key, nor use her session's token.
    let b = env.ctl_as(
        BOB,
        &["remove", "key", "b"],
        Some(&format!("{}\n", codes[1])),
    );
    assert_ne!(b.code, 0, "{b:?}");
}

#[test]
fn with_only_a_key_remote_logins_ask_for_a_recovery_code() {
    let env = Env::new("default_mode = \"required\"\n");
    let key = env.soft_key("k", false);
    let codes = env.enroll_key(ALICE, &key, "k");
    let r = env.key_login(&key, ALICE, Some("198.51.100.4"), &[&codes[0]]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    assert!(r.said("recovery codes"), "{r:?}");
    // The only factor of a required user cannot be removed.
    let v = env.ctl_as(
        ALICE,
        &["remove", "key", "k"],
        Some(&format!("{}\n", codes[1])),
    );
    assert_ne!(v.code, 0, "{v:?}");
}

#[test]
fn keys_suffice_false_wants_an_app_before_a_key() {
    let env = Env::new("default_mode = \"optional\"\n[fido2]\nkeys_suffice = false\n");
    let key = env.soft_key("k", false);
    let v = env.softkey_ctl(ALICE, &key, &["enroll", "k"]);
    assert!(
        v["error"].as_str().unwrap_or("").contains("keys_suffice"),
        "{v}"
    );
}

#[test]
fn the_cli_reports_no_security_key_found_cleanly() {
    let env = Env::new(OPTIONAL);
    let out = env.ctl_as(ALICE, &["enroll", "key", "--name", "x"], None);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("no security key found"), "{out:?}");
    assert_eq!(out.stdout, "", "nothing on stdout: {out:?}");
}

#[test]
fn a_pam_u2f_authfile_imports_keys_that_then_log_in() {
    let env = Env::new(OPTIONAL);
    let key = env.soft_key("u2f", false);
    // Make a credential on the soft key for this host's default rp id, as pam_u2f would have.
    let rp_id = format!("pam://{}", nix_hostname());
    let reg = key
        .key
        .register(
            &twofactor_key::RegistrationRequest {
                rp_id: &rp_id,
                client_data: b"{}",
                user_id: b"alice",
                user_name: ALICE,
                exclude_credential_ids: &[],
                algorithms: &[-7],
                user_verification: twofactor_key::UserVerification::Discouraged,
                timeout: std::time::Duration::from_secs(5),
            },
            &mut |_: &str| None,
        )
        .expect("register");
    let line = pam_u2f::line(ALICE, &reg.authenticator_data);
    let file = env.dir.path().join("u2f_keys");
    std::fs::write(&file, format!("# pamu2fcfg output\n{line}\n")).expect("authfile");
    let out = env.ctl(&["admin", "import", "pam-u2f", file.to_str().expect("path")]);
    assert_eq!(out.code, 0, "{out:?}");
    let r = env.key_login(&key, ALICE, None, &[]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    // A bad line: refused with its line number, nothing imported for anybody.
    let bad = env.dir.path().join("bad_keys");
    std::fs::write(&bad, format!("{BOB}:notbase64!,alsobad,es256,+presence\n")).expect("bad");
    let out = env.ctl(&["admin", "import", "pam-u2f", bad.to_str().expect("path")]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains(":1"), "{out:?}");
    let s = env.ctl(&["--json", "admin", "show", BOB]).ok().json();
    assert_eq!(s["enrolled"], false, "{s}");
}

fn nix_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_string()
}
