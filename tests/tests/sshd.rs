//! Logins through a real OpenSSH sshd on 127.0.0.1 (PAM through pam_wrapper, the real module,
//! a private bus and the real daemon), with the real `ssh` client and codes from oathtool.

use twofactor_tests::sshd::{Auth, SSH_PW_USER, Sshd, ensure_ssh_password_user};
use twofactor_tests::*;

/// Optional 2FA (enrolled users must give a code); a high failure limit so that the refusals
/// on purpose do not lock the user out before the later steps.
const POLICY: &str = "default_mode = \"optional\"\n[rate_limit]\nmax_failures = 100\n";

/// A six-digit code valid for no step near now (the daemon accepts one step either side).
fn wrong_code(secret: &str) -> String {
    let near: Vec<String> = [-60, -30, 0, 30, 60]
        .iter()
        .map(|off| oathtool(secret, *off))
        .collect();
    // Five near codes cannot cover ten candidates.
    (0..10)
        .map(|d: u32| d.to_string().repeat(6))
        .find(|c| !near.contains(c))
        .unwrap_or_default()
}

#[test]
fn publickey_then_code_logs_in_and_wrong_or_replayed_codes_are_refused() {
    let env = Env::new(POLICY);
    let e = env.enroll(ALICE);
    let sshd = Sshd::start(&env, Auth::PublicKeyAndCode);
    sshd.authorize(ALICE);
    let ctx = |what: &str, r: &dyn std::fmt::Debug| {
        format!(
            "{what}: {r:?}\n--- sshd log:\n{}\n--- daemon log:\n{}",
            sshd.log(),
            env.log()
        )
    };

    // The key alone is not enough: the server wants keyboard-interactive next.
    let r = sshd
        .ssh(ALICE)
        .methods("publickey")
        .codes(&["000000"])
        .run();
    assert!(r.refused(), "{}", ctx("key alone", &r));
    assert_eq!(r.code_prompts, 0, "{}", ctx("key alone", &r));
    assert!(
        r.output
            .contains("Permission denied (keyboard-interactive)"),
        "{}",
        ctx("key alone", &r)
    );
    assert!(
        sshd.log()
            .contains(&format!("Partial publickey for {ALICE}")),
        "{}",
        ctx("key alone", &r)
    );

    // A wrong code: asked again (the module's three attempts), then refused.
    wait_for_fresh_step();
    let good = oathtool(&e.secret, 30);
    let r = sshd.ssh(ALICE).codes(&[&wrong_code(&e.secret)]).run();
    assert!(r.refused(), "{}", ctx("wrong code", &r));
    assert_eq!(r.code_prompts, 3, "{}", ctx("wrong code", &r));
    assert!(
        r.output.contains("Wrong code."),
        "{}",
        ctx("wrong code", &r)
    );

    // A valid code (the next step's: the enrollment spent the current one) logs in and the
    // command runs.
    let r = sshd.ssh(ALICE).codes(&[&good]).run();
    assert!(r.logged_in(), "{}", ctx("valid code", &r));
    assert_eq!(r.code_prompts, 1, "{}", ctx("valid code", &r));
    assert_eq!(r.password_prompts, 0, "{}", ctx("valid code", &r));
    let log = sshd.log();
    assert!(
        log.contains(&format!("Accepted keyboard-interactive/pam for {ALICE}")),
        "{}",
        ctx("valid code", &r)
    );

    // The same code again: a replay, refused.
    let r = sshd.ssh(ALICE).codes(&[&good]).run();
    assert!(r.refused(), "{}", ctx("replay", &r));
    assert!(r.output.contains("already used"), "{}", ctx("replay", &r));
    assert!(r.code_prompts >= 1, "{}", ctx("replay", &r));
}

#[test]
fn a_user_without_an_authorized_key_is_never_asked_for_a_code() {
    let env = Env::new(POLICY);
    let e = env.enroll(BOB);
    let sshd = Sshd::start(&env, Auth::PublicKeyAndCode);
    sshd.authorize(ALICE); // not bob
    let r = sshd.ssh(BOB).codes(&[&oathtool(&e.secret, 30)]).run();
    assert!(r.refused(), "{r:?}\n{}", sshd.log());
    assert_eq!(r.code_prompts, 0, "{r:?}\n{}", sshd.log());
    assert!(
        r.output.contains("Permission denied (publickey)"),
        "{r:?}\n{}",
        sshd.log()
    );
}

#[test]
fn password_then_code_logs_in_and_wrong_or_replayed_codes_are_refused() {
    let password = ensure_ssh_password_user();
    let env = Env::new(POLICY);
    let e = env.enroll(SSH_PW_USER);
    let sshd = Sshd::start(&env, Auth::PasswordAndCode);
    let ctx = |what: &str, r: &dyn std::fmt::Debug| {
        format!(
            "{what}: {r:?}\n--- sshd log:\n{}\n--- daemon log:\n{}",
            sshd.log(),
            env.log()
        )
    };
    let user = SSH_PW_USER;

    // A wrong password: pam_unix is requisite, so no code is asked for.
    wait_for_fresh_step();
    let good = oathtool(&e.secret, 30);
    let r = sshd
        .ssh(user)
        .with_key(false)
        .methods("keyboard-interactive")
        .password("not-the-password")
        .codes(&[&good])
        .run();
    assert!(r.refused(), "{}", ctx("wrong password", &r));
    assert_eq!(r.password_prompts, 1, "{}", ctx("wrong password", &r));
    assert_eq!(r.code_prompts, 0, "{}", ctx("wrong password", &r));

    // The right password and a wrong code.
    let r = sshd
        .ssh(user)
        .with_key(false)
        .methods("keyboard-interactive")
        .password(password)
        .codes(&[&wrong_code(&e.secret)])
        .run();
    assert!(r.refused(), "{}", ctx("wrong code", &r));
    assert_eq!(r.password_prompts, 1, "{}", ctx("wrong code", &r));
    assert_eq!(r.code_prompts, 3, "{}", ctx("wrong code", &r));
    assert!(
        r.output.contains("Wrong code."),
        "{}",
        ctx("wrong code", &r)
    );

    // The right password and a valid code.
    let r = sshd
        .ssh(user)
        .with_key(false)
        .methods("keyboard-interactive")
        .password(password)
        .codes(&[&good])
        .run();
    assert!(r.logged_in(), "{}", ctx("valid", &r));
    assert_eq!(r.password_prompts, 1, "{}", ctx("valid", &r));
    assert_eq!(r.code_prompts, 1, "{}", ctx("valid", &r));
    assert!(
        sshd.log()
            .contains(&format!("Accepted keyboard-interactive/pam for {user}")),
        "{}",
        ctx("valid", &r)
    );

    // The same code again, with the right password: a replay, refused.
    let r = sshd
        .ssh(user)
        .with_key(false)
        .methods("keyboard-interactive")
        .password(password)
        .codes(&[&good])
        .run();
    assert!(r.refused(), "{}", ctx("replay", &r));
    assert_eq!(r.password_prompts, 1, "{}", ctx("replay", &r));
    assert!(r.output.contains("already used"), "{}", ctx("replay", &r));
}

#[test]
fn a_required_user_enrolls_inside_the_ssh_login_then_logs_in_with_a_code() {
    let env = Env::new(&format!(
        "default_mode = \"optional\"\n[rate_limit]\nmax_failures = 100\n\
         [groups.{WHEEL}]\nmode = \"required\"\nenroll_at_login = true\n"
    ));
    let sshd = Sshd::start(&env, Auth::PublicKeyAndCode);
    sshd.authorize(ALICE);
    wait_for_fresh_step();
    // No factor yet: the login conversation shows a QR code and a secret, asks for the app's
    // code (the expect driver computes it with oathtool from the secret it saw), shows the
    // recovery codes, and lets the user in.
    let r = sshd.ssh(ALICE).codes(&["000000"]).run();
    assert!(r.logged_in(), "{r:?}\n{}", sshd.log());
    assert_eq!(r.code_prompts, 0, "{r:?}");
    assert!(r.output.contains("otpauth://totp/"), "{r:?}");
    assert!(r.output.contains("Recovery codes"), "{r:?}");
    let st = env.ctl(&["--json", "admin", "show", ALICE]).ok().json();
    assert_eq!(st["enrolled"], true, "{st}");
    assert_eq!(st["recovery_codes_left"], 10, "{st}");
    let audit = env.ctl(&["admin", "audit", "--user", ALICE]).ok().stdout;
    assert!(
        audit.contains("enroll success") && audit.contains("at login"),
        "{audit}"
    );
    // From now on the normal code prompt: a wrong code is refused.
    let r = sshd.ssh(ALICE).codes(&["000000"]).run();
    assert!(r.refused(), "{r:?}");
    assert!(r.code_prompts >= 1, "{r:?}");
}
