//! `twofactorctl --json`: every user and admin command prints JSON on standard output, and
//! every failure one JSON object `{"error":{"code":...,"message":...}}` on standard error,
//! with a code from the closed set of twofactorctl(1) and the exit status it has without
//! `--json`. And a daemon that is not there is said in words, with what to run.

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use twofactor_tests::*;

fn policy() -> String {
    format!("default_mode = \"optional\"\nadmin_groups = [\"{ADMINS}\"]\n")
}

/// A successful `--json` command: exit 0, one JSON document on stdout, nothing on stderr (no
/// prompt: the code comes from standard input).
fn ok_json(out: Out, what: &str) -> serde_json::Value {
    assert_eq!(out.code, 0, "{what}: {out:?}");
    assert_eq!(out.stderr, "", "{what}: stderr is not empty: {out:?}");
    out.json()
}

/// A failed `--json` command: the exit status, and stderr is exactly one JSON object
/// {"error":{"code","message"}} with `code`; returns the message.
fn err_json(out: &Out, code: &str, status: i32, what: &str) -> String {
    assert_eq!(out.code, status, "{what}: {out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stderr)
        .unwrap_or_else(|e| panic!("{what}: stderr is not one JSON object ({e}): {out:?}"));
    let obj = v.as_object().expect("an object");
    assert_eq!(obj.len(), 1, "{what}: {v}");
    let err = v["error"].as_object().expect("error object");
    assert_eq!(err.len(), 2, "{what}: {v}");
    assert_eq!(v["error"]["code"], code, "{what}: {v}");
    let message = v["error"]["message"].as_str().expect("message").to_string();
    assert!(!message.is_empty(), "{what}: {v}");
    message
}

fn ctl_json(env: &Env, user: &str, args: &[&str], stdin: Option<&str>) -> Out {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    env.ctl_as(user, &all, stdin)
}

/// twofactorctl with an explicit bus address (no --bus from the kit).
fn ctl_at(address: &str, args: &[&str]) -> Out {
    let out = Command::new(bin("twofactorctl"))
        .args(["--bus", address])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("twofactorctl");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn every_user_command_prints_json() {
    let env = Env::new(&policy());
    // status before anything: the status object, with warnings and recent events.
    let s = ok_json(ctl_json(&env, ALICE, &["status"], None), "status");
    assert_eq!(s["user"], ALICE);
    assert!(
        s["warnings"].is_array() && s["recent_events"].is_array(),
        "{s}"
    );
    let s = ok_json(
        ctl_json(
            &env,
            ALICE,
            &["status", "--service", "sshd", "--rhost", "192.0.2.7"],
            None,
        ),
        "status --service --rhost",
    );
    assert_eq!(s["mode"], "optional", "{s}");

    // enroll totp --begin / --confirm (the kit's enroll runs both with --json and parses them).
    let e = env.enroll(ALICE);

    // recovery regenerate, with a recovery code on standard input.
    let r = ok_json(
        ctl_json(
            &env,
            ALICE,
            &["recovery", "regenerate"],
            Some(&format!("{}\n", e.recovery[0])),
        ),
        "recovery regenerate",
    );
    assert_eq!(r["accepted"], true, "{r}");
    let codes: Vec<String> = r["recovery_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("code").to_string())
        .collect();
    assert_eq!(codes.len(), 10, "{r}");

    // remove key: a soft key enrolled next to the app (proof: a recovery code), then removed
    // with twofactorctl and another recovery code.
    let key = env.soft_key("rm", false);
    let v = env.softkey_ctl_with_proof(ALICE, &key, &["enroll", "rm"], Some(&codes[0]));
    assert_eq!(v["accepted"], true, "{v}");
    let r = ok_json(
        ctl_json(
            &env,
            ALICE,
            &["remove", "key", "rm"],
            Some(&format!("{}\n", codes[1])),
        ),
        "remove key",
    );
    assert_eq!(r["accepted"], true, "{r}");
    let s = ok_json(ctl_json(&env, ALICE, &["status"], None), "status");
    assert!(
        !s["factors"]
            .as_array()
            .expect("factors")
            .iter()
            .any(|f| f["kind"] == "key"),
        "{s}"
    );

    // disable, with a recovery code.
    let r = ok_json(
        ctl_json(&env, ALICE, &["disable"], Some(&format!("{}\n", codes[2]))),
        "disable",
    );
    assert_eq!(r["accepted"], true, "{r}");
    let s = ok_json(ctl_json(&env, ALICE, &["status"], None), "status");
    assert_eq!(s["enrolled"], false, "{s}");
}

#[test]
fn every_admin_command_prints_json() {
    let env = Env::new(&policy());
    env.enroll(ALICE);
    // root and a member of the admin group alike.
    for admin in ["root", CAROL] {
        let s = ok_json(
            ctl_json(&env, admin, &["admin", "show", ALICE], None),
            "admin show",
        );
        assert_eq!((&s["user"], &s["enrolled"]), (&ALICE.into(), &true.into()));
        let s = ok_json(
            ctl_json(
                &env,
                admin,
                &["admin", "show", ALICE, "--service", "sshd"],
                None,
            ),
            "admin show --service",
        );
        assert_eq!(s["user"], ALICE);
        for action in ["require", "release", "unlock"] {
            let v = ok_json(ctl_json(&env, admin, &["admin", action, BOB], None), action);
            assert_eq!(
                v,
                serde_json::json!({"ok": true, "action": action, "user": BOB}),
                "{action}"
            );
        }
        let list = ok_json(ctl_json(&env, admin, &["admin", "list"], None), "list");
        assert!(
            list["users"]
                .as_array()
                .expect("list")
                .iter()
                .any(|u| u["user"] == ALICE),
            "{list}"
        );
        assert!(list["partial"].is_boolean(), "{list}");
        let audit = ok_json(
            ctl_json(&env, admin, &["admin", "audit", "--user", BOB], None),
            "audit",
        );
        let events: Vec<&str> = audit
            .as_array()
            .expect("audit")
            .iter()
            .map(|e| e["event"].as_str().expect("event"))
            .collect();
        assert!(
            events.contains(&"admin-require") && events.contains(&"admin-release"),
            "{audit}"
        );
    }
    // The requirement is real: require shows in admin show.
    ok_json(
        ctl_json(&env, "root", &["admin", "require", BOB], None),
        "require",
    );
    let s = ok_json(
        ctl_json(&env, "root", &["admin", "show", BOB], None),
        "show",
    );
    assert_eq!(s["admin_required"], true, "{s}");

    // grace: the new end of the grace period.
    env.write_policy(&format!(
        "{}[users.{BOB}]\nmode = \"required\"\ngrace_period = \"7d\"\n",
        policy()
    ));
    let v = ok_json(ctl_json(&env, "root", &["admin", "reload"], None), "reload");
    assert_eq!((&v["ok"], &v["action"]), (&true.into(), &"reload".into()));
    assert!(v["message"].is_string(), "{v}");
    let v = ok_json(
        ctl_json(
            &env,
            "root",
            &["admin", "grace", BOB, "--extend", "1d"],
            None,
        ),
        "grace",
    );
    assert_eq!(
        (&v["ok"], &v["action"], &v["user"]),
        (&true.into(), &"grace".into(), &BOB.into())
    );
    assert!(v["grace_until"].is_i64(), "{v}");

    // issue-codes for the unenrolled bob: a code result with ten codes.
    let v = ok_json(
        ctl_json(&env, "root", &["admin", "issue-codes", BOB], None),
        "issue-codes",
    );
    assert_eq!(v["accepted"], true, "{v}");
    assert_eq!(
        v["recovery_codes"].as_array().map(Vec::len),
        Some(10),
        "{v}"
    );

    // reset alice: her factors are gone.
    let v = ok_json(
        ctl_json(&env, "root", &["admin", "reset", ALICE], None),
        "reset",
    );
    assert_eq!(v["action"], "reset");
    let s = ok_json(
        ctl_json(&env, "root", &["admin", "show", ALICE], None),
        "show",
    );
    assert_eq!(s["enrolled"], false, "{s}");

    // import google-authenticator, for carol (no factor yet).
    let ga = env.dir.path().join("google_authenticator");
    std::fs::write(
        &ga,
        "RK6R5YLJPYZ56WPX7ZUIA22Z7Q\n\" TOTP_AUTH\n41576704\n56341732\n",
    )
    .expect("write");
    set_mode(&ga, 0o600);
    let v = ok_json(
        ctl_json(
            &env,
            "root",
            &[
                "admin",
                "import",
                "google-authenticator",
                CAROL,
                ga.to_str().expect("path"),
            ],
            None,
        ),
        "import google-authenticator",
    );
    assert_eq!(v["user"], CAROL, "{v}");
    assert!(v["mapped"].is_array() && v["message"].is_string(), "{v}");

    // import pam-u2f, dry run and for real, for alice (reset above).
    let key = env.soft_key("u2f", false);
    let authfile = env.dir.path().join("u2f_keys");
    std::fs::write(
        &authfile,
        format!(
            "{}\n",
            pam_u2f::line(ALICE, &pam_u2f::credential(&key, ALICE))
        ),
    )
    .expect("write");
    set_mode(&authfile, 0o600);
    let file = authfile.to_str().expect("path");
    for dry in [true, false] {
        let mut args = vec!["admin", "import", "pam-u2f", file];
        if dry {
            args.push("--dry-run");
        }
        let v = ok_json(ctl_json(&env, "root", &args, None), "import pam-u2f");
        assert_eq!(v["dry_run"], dry, "{v}");
        assert_eq!(v["users"][0]["user"], ALICE, "{v}");
        assert_eq!(v["users"][0]["imported"], !dry, "{v}");
    }
    assert_eq!(env.key_login(&key, ALICE, None, &[]).rc, rc::SUCCESS);
}

#[test]
fn every_error_is_one_json_object_on_stderr_with_a_stable_code() {
    let env = Env::new(&policy());
    let e = env.enroll(ALICE);

    // usage (2): a bad value, an unknown option, the removed --code, a missing argument.
    for args in [
        &["admin", "audit", "--since", "the day before"][..],
        &["admin", "frobnicate"],
        &["status", "--no-such-option"],
        &["disable", "--code", "123456"],
        &["admin", "require"],
        &["admin", "grace", BOB, "--extend", "soon"],
    ] {
        let out = ctl_json(&env, "root", args, None);
        err_json(&out, "usage", 2, &format!("{args:?}"));
        assert_eq!(out.stdout, "", "{args:?}: {out:?}");
    }
    // --help is still help, on stdout.
    let out = ctl_json(&env, "root", &["admin", "require", "--help"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("The user's login name"), "{out:?}");

    // access-denied (3): an ordinary user's admin command, or another user's status.
    let out = ctl_json(&env, BOB, &["admin", "show", ALICE], None);
    err_json(&out, "access-denied", 3, "bob: admin show");
    let out = ctl_json(&env, BOB, &["admin", "require", ALICE], None);
    err_json(&out, "access-denied", 3, "bob: admin require");

    // no-such-user (1).
    let out = ctl_json(&env, "root", &["admin", "show", "tf-nosuchuser"], None);
    let m = err_json(&out, "no-such-user", 1, "admin show tf-nosuchuser");
    assert!(m.contains("tf-nosuchuser"), "{m}");
    let out = ctl_json(&env, "root", &["admin", "unlock", "tf-nosuchuser"], None);
    err_json(&out, "no-such-user", 1, "admin unlock tf-nosuchuser");

    // invalid-argument (1): a name that cannot be a user name.
    let out = ctl_json(&env, "root", &["admin", "require", "a b"], None);
    err_json(&out, "invalid-argument", 1, "admin require 'a b'");

    // not-allowed (1): a second authenticator app.
    let out = ctl_json(&env, ALICE, &["enroll", "totp", "--begin"], None);
    err_json(&out, "not-allowed", 1, "enroll totp again");

    // no-such-session (1): an enrollment id that was never made.
    let out = ctl_json(
        &env,
        ALICE,
        &["enroll", "totp", "--confirm", "no-such-enrollment"],
        Some("123456\n"),
    );
    err_json(&out, "no-such-session", 1, "confirm an unknown enrollment");

    // code-rejected (4): the result on stdout, the error on stderr.
    let out = ctl_json(&env, ALICE, &["disable"], Some("not-a-code\n"));
    err_json(&out, "code-rejected", 4, "disable with a wrong code");
    assert_eq!(out.json()["accepted"], false, "{out:?}");

    // invalid-input (1): no code on standard input; an import file that is not there.
    let out = ctl_json(&env, ALICE, &["disable"], None);
    let m = err_json(&out, "invalid-input", 1, "disable without a code");
    assert!(m.contains("no code given"), "{m}");
    let missing = env.dir.path().join("no-such-file");
    let out = ctl_json(
        &env,
        "root",
        &[
            "admin",
            "import",
            "google-authenticator",
            BOB,
            missing.to_str().expect("path"),
        ],
        None,
    );
    err_json(&out, "invalid-input", 1, "import a missing file");
    // A bad authfile: every problem in the one error object.
    let bad = env.dir.path().join("bad_u2f_keys");
    std::fs::write(&bad, format!("{BOB}:x,y,rs256\n{BOB}:a\n")).expect("write");
    set_mode(&bad, 0o600);
    let out = ctl_json(
        &env,
        "root",
        &["admin", "import", "pam-u2f", bad.to_str().expect("path")],
        None,
    );
    err_json(&out, "invalid-input", 1, "import a bad authfile");

    // key-error (1): no security key is plugged into this machine.
    let out = ctl_json(&env, BOB, &["enroll", "key", "--name", "k"], None);
    let m = err_json(&out, "key-error", 1, "enroll key without a key");
    assert!(m.contains("no security key found"), "{m}");

    // invalid-policy (1): reload refuses a broken file; the old policy stays.
    env.write_policy("default_mode = \"sometimes\"\n");
    let out = ctl_json(&env, "root", &["admin", "reload"], None);
    err_json(&out, "invalid-policy", 1, "reload a broken policy");
    env.write_policy(&policy());
    ok_json(ctl_json(&env, "root", &["admin", "reload"], None), "reload");

    // The daemon still works, and nothing above changed alice.
    let s = ok_json(ctl_json(&env, ALICE, &["status"], None), "status");
    assert_eq!(s["enrolled"], true, "{s}");
    assert!(!e.recovery.is_empty());
}

#[test]
fn a_stopped_daemon_is_said_in_words_with_what_to_run() {
    let mut env = Env::new(&policy());
    env.enroll(ALICE);
    env.stop_daemon();
    for (user, args) in [
        (ALICE, &["status"][..]),
        ("root", &["admin", "require", BOB]),
        ("root", &["admin", "reload"]),
    ] {
        let out = env.ctl_as(user, args, None);
        assert_eq!(out.code, 69, "{args:?}: {out:?}");
        let text = out.stderr.trim();
        assert!(
            text.starts_with("twofactorctl: twofactord is not running."),
            "{args:?}: {out:?}"
        );
        assert!(
            text.contains("systemctl status twofactord")
                && text.contains("journalctl -u twofactord"),
            "{args:?}: {out:?}"
        );
        let out = ctl_json(&env, user, args, None);
        let m = err_json(&out, "daemon-unavailable", 69, &format!("{args:?}"));
        assert!(m.contains("is not running"), "{m}");
    }
    // Back: the same commands work again.
    env.start_daemon();
    ok_json(ctl_json(&env, ALICE, &["status"], None), "status");
}

#[test]
fn a_bus_address_without_a_socket_is_said_in_words() {
    let dir = tempfile::tempdir().expect("tempdir");
    let address = format!("unix:path={}", dir.path().join("no-bus").display());
    let out = ctl_at(&address, &["status"]);
    assert_eq!(out.code, 69, "{out:?}");
    assert!(
        out.stderr.contains("cannot reach twofactord")
            && out
                .stderr
                .contains("cannot connect to the D-Bus system bus")
            && out.stderr.contains("systemctl status dbus twofactord"),
        "{out:?}"
    );
    let out = ctl_at(&address, &["--json", "admin", "list"]);
    err_json(&out, "daemon-unavailable", 69, "no socket");
}

#[test]
fn a_daemon_the_bus_fails_to_start_is_said_in_words() {
    // A bus that may start the daemon on demand, from a service file whose program fails (as
    // the system bus does through its launch helper).
    let services = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        services.path().join("org.twofactor.TwoFactor1.service"),
        "[D-BUS Service]\nName=org.twofactor.TwoFactor1\nExec=/bin/false\nUser=root\n",
    )
    .expect("service file");
    let mut env = Env::with_bus_rules(
        &policy(),
        &format!("<servicedir>{}</servicedir>", services.path().display()),
    );
    env.stop_daemon();
    let out = env.ctl_as(ALICE, &["status"], None);
    assert_eq!(out.code, 69, "{out:?}");
    assert!(
        out.stderr
            .starts_with("twofactorctl: twofactord failed to start")
            && out.stderr.contains("journalctl -u twofactord"),
        "{out:?}"
    );
    let out = ctl_json(&env, ALICE, &["status"], None);
    let m = err_json(&out, "daemon-unavailable", 69, "activation fails");
    assert!(m.contains("Spawn"), "the bus's own words are kept: {m}");
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
