//! A user whose only factor is a security key (issue 13, item 14): with `keys_suffice = true`
//! (the default) every remote login asks for a code, and only recovery codes work there. The
//! user is told at `enroll key`, in `status` (human and JSON) and at each remote login, with
//! how many codes are left; a user with an app next to the key is not.

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::expect_used, clippy::panic)]

use twofactor_tests::*;

const OPTIONAL: &str = "default_mode = \"optional\"\n";
const REMOTE: &str = "192.0.2.7";

fn warnings(env: &Env, user: &str) -> Vec<String> {
    let s = env.ctl_as(user, &["--json", "status"], None).ok().json();
    s["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("no warnings array: {s}"))
        .iter()
        .map(|w| w.as_str().expect("a string").to_string())
        .collect()
}

#[test]
fn a_key_only_user_is_told_that_remote_logins_use_up_recovery_codes() {
    let env = Env::new(OPTIONAL);
    let key = env.soft_key("only", false);

    // enroll key: the result says it.
    let v = env.softkey_ctl(ALICE, &key, &["enroll", "only"]);
    assert_eq!(v["accepted"], true, "{v}");
    let message = v["message"].as_str().expect("message");
    assert!(
        message.contains("cannot be used for a remote login")
            && message.contains("recovery code (10 left)")
            && message.contains("twofactorctl enroll totp"),
        "{message}"
    );
    let codes: Vec<String> = v["recovery_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("code").to_string())
        .collect();
    assert_eq!(codes.len(), 10);

    // status, JSON and human; and the admin's view.
    let w = warnings(&env, ALICE);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("only factor") && w[0].contains("(10 left)"),
        "{w:?}"
    );
    let human = env.ctl_as(ALICE, &["status"], None).ok().stdout;
    assert!(
        human
            .lines()
            .any(|l| l.starts_with("Warning:") && l.contains("remote login")),
        "{human}"
    );
    let shown = env.ctl(&["--json", "admin", "show", ALICE]).ok().json();
    assert_eq!(
        shown["warnings"].as_array().map(Vec::len),
        Some(1),
        "{shown}"
    );

    // A local login with the key: no code asked, nothing spent.
    let r = env.key_login(&key, ALICE, None, &[]);
    assert_eq!((r.rc, r.prompts()), (rc::SUCCESS, 0), "{r:?}");

    // Remote logins: each asks for a recovery code and says how many are left, before and
    // after. Down to three codes.
    for (i, code) in codes.iter().take(7).enumerate() {
        let before = 10 - i;
        let r = env.key_login(&key, ALICE, Some(REMOTE), &[code]);
        assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
        assert!(r.said("cannot be used for a remote login"), "{r:?}");
        assert!(r.said(&format!("{before} left")), "{before}: {r:?}");
        assert!(
            r.said(&format!("{} recovery codes left", before - 1)),
            "{r:?}"
        );
        assert!(r.said("each one uses up a recovery code"), "{r:?}");
    }

    // Three left: status warns about that too, and the next remote login says "only".
    let w = warnings(&env, ALICE);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].contains("(3 left)"), "{w:?}");
    assert!(w[1].contains("Only 3 recovery codes left"), "{w:?}");
    let r = env.key_login(&key, ALICE, Some(REMOTE), &[&codes[7]]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    assert!(r.said("only 3 left"), "{r:?}");
    assert!(r.said("recovery regenerate"), "{r:?}");

    // The audit says which service asked and from where, not "by=root".
    let audit = env.ctl(&["admin", "audit", "--user", ALICE]).ok().stdout;
    let via = format!("via {} from {REMOTE}", key.service);
    assert!(
        audit
            .lines()
            .any(|l| l.ends_with(&via) || l.contains(&format!("{via} ("))),
        "{audit}"
    );
    assert!(
        !audit
            .lines()
            .any(|l| l.contains(" login ") && l.contains("by=root")),
        "{audit}"
    );
}

#[test]
fn a_user_with_an_app_next_to_the_key_is_not_warned() {
    let env = Env::new(OPTIONAL);
    let e = env.enroll(ALICE);
    let key = env.soft_key("extra", false);
    let v = env.softkey_ctl_with_proof(ALICE, &key, &["enroll", "extra"], Some(&e.recovery[0]));
    assert_eq!(v["accepted"], true, "{v}");
    let message = v["message"].as_str().expect("message");
    assert!(!message.contains("remote login"), "{message}");
    assert_eq!(warnings(&env, ALICE), Vec::<String>::new());
    // A remote login asks for the app's code, without the key-only notice.
    wait_for_fresh_step();
    let r = env.key_login(&key, ALICE, Some(REMOTE), &[&oathtool(&e.secret, 30)]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    assert!(!r.said("cannot be used for a remote login"), "{r:?}");
}

#[test]
fn no_warning_where_remote_logins_do_not_ask_or_may_use_the_key() {
    // sshd's remote logins may use a key (a service whose clients touch a key on this host):
    // nothing to warn about.
    let env = Env::new(&format!(
        "{OPTIONAL}[fido2]\nremote_services = [\"sshd\"]\n"
    ));
    let key = env.soft_key("k", false);
    let v = env.softkey_ctl(ALICE, &key, &["enroll", "k"]);
    assert_eq!(v["accepted"], true, "{v}");
    assert!(
        !v["message"]
            .as_str()
            .expect("message")
            .contains("remote login"),
        "{v}"
    );
    assert_eq!(warnings(&env, ALICE), Vec::<String>::new());

    // sshd exempt: no code asked over ssh, nothing to warn about either.
    let env = Env::new(&format!("{OPTIONAL}[services.sshd]\nmode = \"disabled\"\n"));
    let key = env.soft_key("k", false);
    env.enroll_key(ALICE, &key, "k");
    assert_eq!(warnings(&env, ALICE), Vec::<String>::new());
}
