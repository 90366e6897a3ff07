//! The bypasses of issue "Close the bypasses", performed for real against a private bus with the
//! shipped bus policy, the real daemon, the real module in real libpam and callers of other
//! uids: each test is the attack, and asserts that it fails.

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use twofactor_tests::*;

const OPTIONAL: &str = "default_mode = \"optional\"\n";

fn audit(env: &Env, user: &str) -> String {
    env.ctl(&["admin", "audit", "--user", user]).ok().stdout
}

fn factor_kinds(env: &Env, user: &str) -> Vec<String> {
    let s = env.ctl(&["--json", "admin", "show", user]).ok().json();
    s["factors"]
        .as_array()
        .expect("factors")
        .iter()
        .map(|f| f["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn recovery_left(env: &Env, user: &str) -> i64 {
    let s = env.ctl(&["--json", "admin", "show", user]).ok().json();
    s["recovery_codes_left"]
        .as_i64()
        .expect("recovery_codes_left")
}

/// Item 3: a user who has only a security key gains no authenticator app without a proof, and
/// an app added with a proof never replaces their recovery codes.
#[test]
fn a_key_only_account_gains_no_app_without_a_proof() {
    ensure_test_accounts();
    let env = Env::new(OPTIONAL);
    let key = env.soft_key("only", false);
    let codes = env.enroll_key(ALICE, &key, "blue");
    assert_eq!(codes.len(), 10);

    // Whoever sits at her unlocked session: the bare bus call, no proof.
    let out = env.busctl_as(ALICE, "Enrollment", "BeginTotp", &["s", ""]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("needs"), "{out:?}");
    // A made-up code is no proof either.
    let out = env.busctl_as(ALICE, "Enrollment", "BeginTotp", &["s", "123456"]);
    assert_ne!(out.code, 0, "{out:?}");
    // The CLI: Enter alone (no key plugged in here) is no proof.
    let out = env.ctl_as(ALICE, &["--json", "enroll", "totp", "--begin"], Some("\n"));
    assert_ne!(out.code, 0, "{out:?}");
    assert!(!factor_kinds(&env, ALICE).contains(&"totp".to_string()));
    assert_eq!(recovery_left(&env, ALICE), 10, "nothing replaced her codes");

    // With a proof (a touch of her key, as a single-use token), the app is added and her
    // recovery codes stay as they are.
    let token = env.softkey_ctl(ALICE, &key, &["prove"]);
    let token = token["token"].as_str().expect("token").to_string();
    let begin = env
        .ctl_as(
            ALICE,
            &["--json", "enroll", "totp", "--begin"],
            Some(&format!("{token}\n")),
        )
        .ok()
        .json();
    let secret = begin["secret"].as_str().expect("secret").to_string();
    let id = begin["enrollment_id"].as_str().expect("id").to_string();
    wait_for_fresh_step();
    let done = env
        .ctl_as(
            ALICE,
            &["--json", "enroll", "totp", "--confirm", &id],
            Some(&format!("{}\n", oathtool(&secret, 0))),
        )
        .ok()
        .json();
    assert_eq!(done["accepted"], true, "{done}");
    assert_eq!(
        done["recovery_codes"].as_array().map(Vec::len),
        Some(0),
        "a confirmation never replaces recovery codes: {done}"
    );
    assert_eq!(recovery_left(&env, ALICE), 10);
    // Her old codes still log her in (remotely: a code prompt).
    let r = env.login_full("root", "tf", ALICE, Some("192.0.2.7"), &[&codes[0]]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    // A recovery code is a proof too; the token above was single-use.
    let again = env.busctl_as(ALICE, "Enrollment", "BeginTotp", &["s", &token]);
    assert_ne!(again.code, 0, "{again:?}");
}

/// Item 4: a login that began as an enrollment (the account had no factor, someone holds only
/// the password) while the user enrolls a key from her own session: the login's secret is
/// refused at activation, the login then needs the key (or a recovery code), and her recovery
/// codes are not replaced by codes shown to the attacker.
#[test]
fn enrollment_at_login_yields_to_a_factor_enrolled_meanwhile() {
    ensure_test_accounts();
    let env =
        Env::new("default_mode = \"required\"\nenroll_at_login = true\n[login]\nattempts = 1\n");
    let go = env_path(&env, "go");
    let ready = PathBuf::from(format!("{}.ready", go.display()));
    let attacker = {
        let address_env = (env.pamd.clone(), go.clone());
        std::thread::spawn(move || {
            let (pamd, go) = address_env;
            let mut cmd = std::process::Command::new(bin("pamdrive"));
            cmd.arg(&pamd)
                .arg("tf")
                .arg(ALICE)
                .args(["--rhost", "192.0.2.66"])
                .arg(format!("@oath-after:{}", go.display()))
                .arg(format!("@oath-after:{}", go.display()));
            let out = cmd.output().expect("pamdrive");
            serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .unwrap_or_else(|e| panic!("pamdrive ({e}): {out:?}"))
        })
    };
    // The attacker's login waits at the enrollment prompt; meanwhile Alice enrolls a key.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ready.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the login never prompted"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let key = env.soft_key("race", false);
    let codes = env.enroll_key(ALICE, &key, "blue");
    assert_eq!(codes.len(), 10);
    std::fs::write(&go, b"").expect("go");
    let r = attacker.join().expect("attacker thread");
    let text = r["transcript"].to_string();
    assert!(
        text.contains("Secret: "),
        "the login was an enrollment: {r}"
    );
    assert_eq!(r["rc"], rc::AUTH_ERR, "{r}");
    assert!(text.contains("A second factor was set up"), "{r}");
    assert!(!text.contains("Recovery codes:"), "{r}");
    // Nothing of the attacker's was stored: no app, her ten codes all still valid.
    assert_eq!(factor_kinds(&env, ALICE), ["key"]);
    assert_eq!(recovery_left(&env, ALICE), 10);
    let r = env.login_full("root", "tf", ALICE, Some("192.0.2.7"), &[&codes[3]]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    let log = audit(&env, ALICE);
    assert!(log.contains("a factor was enrolled meanwhile"), "{log}");
}

/// Item 5: a member of `admin_groups` cannot plant a known secret for root (or another admin),
/// release root's requirement, reset, unlock, extend grace or issue codes for them; only uid 0
/// can. The same admin still manages ordinary users.
#[test]
fn an_admin_cannot_take_over_root_or_another_admin() {
    ensure_test_accounts();
    // carol (tf-admins) and alice (tf-wheel) are both admins here; root must use 2FA.
    let env = Env::new(&format!(
        "default_mode = \"optional\"\nadmin_groups = [\"{ADMINS}\", \"{WHEEL}\"]\n\
         [users.root]\nmode = \"required\"\n"
    ));
    let dir = tempfile::tempdir().expect("tmp");
    let secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    let ga = dir.path().join("ga");
    std::fs::write(&ga, format!("{secret}\n\" TOTP_AUTH\n")).expect("ga file");
    // A root-owned file carol can read; the import runs as carol.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&ga, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    for target in ["root", ALICE] {
        for args in [
            vec![
                "admin",
                "import",
                "google-authenticator",
                target,
                ga.to_str().expect("path"),
            ],
            vec!["admin", "release", target],
            vec!["admin", "require", target],
            vec!["admin", "reset", target],
            vec!["admin", "unlock", target],
            vec!["admin", "grace", target],
            vec!["admin", "issue-codes", target],
        ] {
            let out = env.ctl_as(CAROL, &args, None);
            assert_ne!(out.code, 0, "{args:?}: {out:?}");
            assert!(
                out.stderr.contains("needs root"),
                "{args:?} says why: {out:?}"
            );
        }
        // The bus itself refuses, whatever the CLI does.
        let out = env.busctl_as(
            CAROL,
            "Admin",
            "ImportTotp",
            &["sssuuas", target, secret, "SHA1", "6", "30", "0"],
        );
        assert_ne!(out.code, 0, "{out:?}");
    }
    // root's login is not opened by the planted secret: root is required and has no factor.
    let r = env.login("tf", "root", &[&oathtool(secret, 0)]);
    assert_ne!(r.rc, rc::SUCCESS, "{r:?}");
    assert!(!audit(&env, "root").contains("admin-import"));
    // Read-only admin commands still work on them, and carol still manages ordinary users.
    env.ctl_as(CAROL, &["admin", "show", "root"], None).ok();
    env.ctl_as(CAROL, &["admin", "require", BOB], None).ok();
    env.ctl_as(CAROL, &["admin", "release", BOB], None).ok();
    // Root can do it all.
    env.ctl(&["admin", "require", ALICE]).ok();
    env.ctl(&["admin", "release", ALICE]).ok();
}

fn env_path(env: &Env, name: &str) -> PathBuf {
    env.dir
        .path()
        .join(format!("{name}-{}", std::process::id()))
}
