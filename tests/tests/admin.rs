//! Enrollment, self-service, admin commands, authorization with real callers of other uids,
//! policy reload, and the committed interface XML — all through the real daemon on a real bus.

use twofactor_tests::*;

fn policy_with_admins() -> String {
    format!("default_mode = \"optional\"\nadmin_groups = [\"{ADMINS}\"]\n")
}

/// Extracts (interface, method, [(name, type, direction)]) from introspection XML, ignoring
/// comments, docs and the standard interfaces.
fn contract(xml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut ours = false;
    let mut in_comment = false;
    for line in xml.lines() {
        let line = line.trim();
        if in_comment {
            in_comment = !line.contains("-->");
            continue;
        }
        if line.starts_with("<!--") {
            in_comment = !line.contains("-->");
            continue;
        }
        if line.starts_with("<interface ") {
            ours = line.contains("org.twofactor.TwoFactor1.");
        }
        if ours
            && (line.starts_with("<interface")
                || line.starts_with("<method")
                || line.starts_with("<arg")
                || line.starts_with("<signal")
                || line.starts_with("<property"))
        {
            out.push(line.to_string());
        }
    }
    out
}

#[test]
fn committed_interface_xml_matches_live_introspection() {
    let env = Env::new("");
    let out = std::process::Command::new("busctl")
        .arg(format!("--address={}", env.address))
        .args([
            "introspect",
            "--xml-interface",
            twofactor_bus::BUS_NAME,
            twofactor_bus::OBJECT_PATH,
        ])
        .output()
        .expect("busctl");
    let live = String::from_utf8_lossy(&out.stdout);
    let committed = contract(twofactor_bus::INTERFACE_XML);
    assert!(committed.len() > 30, "{committed:?}");
    assert_eq!(contract(&live), committed);
}

#[test]
fn enroll_interactively_through_stdin_then_status_explains_the_rule() {
    let env = Env::new(&format!(
        "default_mode = \"optional\"\n[groups.{WHEEL}]\nmode = \"required\"\n"
    ));
    // Interactive form: the CLI prints the QR code and the secret, then reads the code on stdin.
    let mut child = as_user(ALICE, &bin("twofactorctl"))
        .args(["--bus", &env.address, "enroll", "totp"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    use std::io::{BufRead, Write};
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut secret = String::new();
    let mut seen = String::new();
    let mut line = String::new();
    while stdout.read_line(&mut line).expect("read") > 0 {
        seen.push_str(&line);
        if let Some(s) = line.strip_prefix("Or enter this secret by hand: ") {
            secret = s.trim().to_string();
        }
        if line.starts_with("URI: ") {
            break;
        }
        line.clear();
    }
    assert!(!secret.is_empty(), "{seen}");
    assert!(seen.contains("otpauth://totp/"), "{seen}");
    assert!(
        seen.contains('█') || seen.contains('▀') || seen.contains('▄'),
        "QR code drawn: {seen}"
    );
    wait_for_fresh_step();
    let code = oathtool(&secret, 0);
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{code}\n").as_bytes())
        .expect("write");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("rest");
    let status = child.wait().expect("wait");
    assert!(status.success(), "{rest}");
    assert!(rest.contains("Recovery codes"), "{rest}");
    assert_eq!(
        rest.lines()
            .filter(|l| l.trim().len() == 19 && l.trim().matches('-').count() == 3)
            .count(),
        10,
        "{rest}"
    );

    let st = env.ctl_as(ALICE, &["--json", "status"], None).ok().json();
    assert_eq!(st["mode"], "required");
    assert!(
        st["rule"]
            .as_str()
            .unwrap()
            .starts_with(&format!("groups.{WHEEL} (")),
        "{st}"
    );
    assert_eq!(st["enrolled"], true);
    assert_eq!(st["recovery_codes_left"], 10);
    assert_eq!(st["factors"][0]["kind"], "totp");
    let human = env.ctl_as(ALICE, &["status"], None).ok().stdout;
    assert!(
        human.contains("Recent events:") && human.contains(" enroll success"),
        "{human}"
    );
    assert_eq!(st["recent_events"][0]["event"], "enroll", "{st}");
    assert!(
        human.contains("Rule:            groups.tf-wheel"),
        "{human}"
    );
    // Enrolling twice is refused with a clear message.
    let again = env.ctl_as(ALICE, &["enroll", "totp", "--begin"], None);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("already enrolled"), "{again:?}");
}

#[test]
fn a_wrong_confirmation_code_leaves_the_factor_inactive() {
    let env = Env::new("");
    let begin = env
        .ctl_as(BOB, &["--json", "enroll", "totp", "--begin"], None)
        .ok()
        .json();
    let id = begin["enrollment_id"].as_str().unwrap();
    let r = env.ctl_as(
        BOB,
        &["--json", "enroll", "totp", "--confirm", id],
        Some("000000\n"),
    );
    assert_eq!(r.code, 4, "{r:?}");
    assert_eq!(r.json()["accepted"], false);
    let st = env.ctl_as(BOB, &["--json", "status"], None).ok().json();
    assert_eq!(st["enrolled"], false);
    // Not enrolled under optional: logins are not asked.
    assert_eq!(env.login("tf", BOB, &[]).prompts(), 0);
    // Someone else cannot confirm bob's enrollment.
    let secret = begin["secret"].as_str().unwrap();
    let r = env.ctl_as(
        ALICE,
        &["enroll", "totp", "--confirm", id],
        Some(&format!("{}\n", oathtool(secret, 0))),
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("no such enrollment"), "{r:?}");
}

#[test]
fn disable_needs_a_code_and_is_refused_when_required() {
    let env = Env::new(&policy_with_admins());
    let e = env.enroll(ALICE);
    let r = env.ctl_as(ALICE, &["disable"], Some("000000\n"));
    assert_eq!(r.code, 4, "{r:?}");
    assert_eq!(
        env.ctl(&["--json", "admin", "show", ALICE]).ok().json()["enrolled"],
        true
    );
    // An admin requirement makes disable impossible, whatever the code.
    env.ctl(&["admin", "require", ALICE]).ok();
    let r = env.ctl_as(
        ALICE,
        &["disable"],
        Some(&format!("{}\n", oathtool(&e.secret, 30))),
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("cannot be disabled"), "{r:?}");
    let st = env.ctl(&["--json", "admin", "show", ALICE]).ok().json();
    assert_eq!(st["mode"], "required");
    assert_eq!(st["admin_required"], true);
    assert!(st["rule"].as_str().unwrap().contains("admin"), "{st}");
    // Released: the user may disable with a current code.
    env.ctl(&["admin", "release", ALICE]).ok();
    let r = env
        .ctl_as(
            ALICE,
            &["--json", "disable"],
            Some(&format!("{}\n", oathtool(&e.secret, 30))),
        )
        .ok();
    assert_eq!(r.json()["accepted"], true);
    assert_eq!(
        env.ctl(&["--json", "admin", "show", ALICE]).ok().json()["enrolled"],
        false
    );
    let audit = env.ctl(&["admin", "audit", "--user", ALICE]).ok().stdout;
    for ev in ["enroll", "admin-require", "admin-release", "disable"] {
        assert!(audit.contains(&format!(" {ev} ")), "{ev}: {audit}");
    }
}

#[test]
fn admin_require_overrides_a_user_rule_and_release_restores_it() {
    let env = Env::new(&format!(
        "default_mode = \"optional\"\n[users.{BOB}]\nmode = \"disabled\"\n"
    ));
    assert_eq!(env.login("tf-alone", BOB, &[]).prompts(), 0);
    env.ctl(&["admin", "require", BOB]).ok();
    let r = env.login("tf", BOB, &[]);
    assert_eq!(r.rc, rc::AUTH_ERR, "required and not enrolled: {r:?}");
    env.ctl(&["admin", "release", BOB]).ok();
    let st = env.ctl(&["--json", "admin", "show", BOB]).ok().json();
    assert_eq!(st["mode"], "disabled");
    assert!(
        st["rule"].as_str().unwrap().starts_with("users.tf-bob"),
        "{st}"
    );
}

#[test]
fn regenerate_revokes_the_old_codes_and_reset_wipes_everything() {
    let env = Env::new("");
    let e = env.enroll(ALICE);
    let r = env
        .ctl_as(
            ALICE,
            &["--json", "recovery", "regenerate"],
            Some(&format!("{}\n", e.recovery[0])),
        )
        .ok()
        .json();
    assert_eq!(r["accepted"], true);
    let fresh: Vec<String> = r["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(fresh.len(), 10);
    let old = &e.recovery[1];
    let r = env.login("tf", ALICE, &[old, old, old]);
    assert_eq!(r.rc, rc::AUTH_ERR, "old codes are revoked: {r:?}");
    assert_eq!(env.login("tf", ALICE, &[&fresh[0]]).rc, rc::SUCCESS);
    env.ctl(&["admin", "reset", ALICE]).ok();
    let st = env.ctl(&["--json", "admin", "show", ALICE]).ok().json();
    assert_eq!(
        (st["enrolled"].clone(), st["recovery_codes_left"].clone()),
        (false.into(), 0.into())
    );
    assert_eq!(env.login("tf", ALICE, &[]).prompts(), 0);
}

#[test]
fn authorization_matrix_with_real_callers() {
    let env = Env::new(&policy_with_admins());
    env.enroll(ALICE);
    // (caller, interface, method, signature+args, allowed)
    let rows: Vec<(&str, &str, &str, Vec<&str>, bool)> = vec![
        // Login: own account, or root for anyone.
        (
            BOB,
            "Login",
            "BeginLogin",
            vec!["sa{ss}", ALICE, "0"],
            false,
        ),
        (BOB, "Login", "BeginLogin", vec!["sa{ss}", BOB, "0"], true),
        (
            "root",
            "Login",
            "BeginLogin",
            vec!["sa{ss}", ALICE, "0"],
            true,
        ),
        // Even an admin may not start logins for others: only root (the PAM stack).
        (
            CAROL,
            "Login",
            "BeginLogin",
            vec!["sa{ss}", ALICE, "0"],
            false,
        ),
        // Status: own, or admins.
        (BOB, "Enrollment", "Status", vec!["s", ALICE], false),
        (BOB, "Enrollment", "Status", vec!["s", ""], true),
        (CAROL, "Enrollment", "Status", vec!["s", ALICE], true),
        // Admin methods: root and admin-group members only.
        (BOB, "Admin", "Show", vec!["s", ALICE], false),
        (BOB, "Admin", "Require", vec!["s", ALICE], false),
        (BOB, "Admin", "Release", vec!["s", ALICE], false),
        (BOB, "Admin", "Reset", vec!["s", ALICE], false),
        (BOB, "Admin", "Unlock", vec!["s", ALICE], false),
        (BOB, "Admin", "ListUsers", vec![], false),
        (BOB, "Admin", "Audit", vec!["sxu", "", "0", "10"], false),
        (BOB, "Admin", "ReloadPolicy", vec![], false),
        (ALICE, "Admin", "Reset", vec!["s", ALICE], false),
        (CAROL, "Admin", "Show", vec!["s", ALICE], true),
        (CAROL, "Admin", "Unlock", vec!["s", ALICE], true),
        (CAROL, "Admin", "ListUsers", vec![], true),
        (CAROL, "Admin", "Audit", vec!["sxu", "", "0", "10"], true),
        (CAROL, "Admin", "ReloadPolicy", vec![], true),
        ("root", "Admin", "Require", vec!["s", BOB], true),
        ("root", "Admin", "Release", vec!["s", BOB], true),
    ];
    for (caller, iface, method, args, allowed) in rows {
        let out = env.busctl_as(caller, iface, method, &args);
        if allowed {
            assert_eq!(
                out.code, 0,
                "{caller} {iface}.{method} should be allowed: {out:?}"
            );
        } else {
            assert_ne!(
                out.code, 0,
                "{caller} {iface}.{method} should be denied: {out:?}"
            );
            assert!(
                out.stderr.contains("ccess denied")
                    || out.stderr.contains("only do this for your own")
                    || out.stderr.contains("needs root"),
                "{caller} {iface}.{method}: {out:?}"
            );
        }
    }
    // A reset by an unprivileged user changed nothing.
    assert_eq!(
        env.ctl(&["--json", "admin", "show", ALICE]).ok().json()["enrolled"],
        true
    );
    // The CLI says so too, with its own exit status.
    let out = env.ctl_as(BOB, &["admin", "reset", ALICE], None);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("access denied"), "{out:?}");
    // Self-only methods act on the caller whatever the caller is: root enrolling acts on root.
    // A non-root PAM stack (e.g. a screen locker running as bob) cannot check alice's code.
    // The daemon's AccessDenied is an answer: a denial, under any failmode.
    let r = env.login_full(BOB, "tf", ALICE, None, &["123456"]);
    assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
    assert_eq!(r.prompts(), 0);
    // An unprivileged user cannot take the daemon's name on the bus.
    let out = as_user(BOB, std::path::Path::new("/usr/bin/busctl"))
        .arg(format!("--address={}", env.address))
        .args([
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "RequestName",
            "su",
            twofactor_bus::BUS_NAME,
            "4",
        ])
        .output()
        .expect("busctl");
    assert!(!out.status.success(), "{out:?}");
}

#[test]
fn sessions_are_bound_to_the_connection_that_began_them() {
    let env = Env::new("");
    env.enroll(BOB);
    // Bob begins his own login with busctl; the handle is useless on another connection.
    let out = env
        .busctl_as(
            BOB,
            "Login",
            "BeginLogin",
            &["sa{ss}", BOB, "1", "service", "x"],
        )
        .ok();
    let handle = out.stdout.split('"').nth(1).expect("handle").to_string();
    assert_eq!(handle.len(), 32, "{out:?}");
    let out = env.busctl_as(BOB, "Login", "Continue", &["ss", &handle, "123456"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("no such login"), "{out:?}");
    // Unknown context keys are refused.
    let out = env.busctl_as(
        BOB,
        "Login",
        "BeginLogin",
        &["sa{ss}", BOB, "1", "evil", "x"],
    );
    assert!(out.stderr.contains("unknown context key"), "{out:?}");
}

#[test]
fn policy_reload_refuses_an_invalid_file_and_keeps_the_old_policy() {
    let env = Env::new(&format!(
        "default_mode = \"optional\"\n[users.{BOB}]\nmode = \"required\"\n"
    ));
    env.write_policy("default_mode = \"optional\"\n[totp]\ndigits = 7\n");
    let out = env.ctl(&["admin", "reload"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("policy.toml:3:10: totp.digits must be 6 or 8"),
        "{out:?}"
    );
    assert!(out.stderr.contains("stays in force"), "{out:?}");
    assert_eq!(
        env.ctl(&["--json", "admin", "show", BOB]).ok().json()["mode"],
        "required"
    );
    // SIGHUP reloads a valid file.
    env.write_policy(&format!(
        "default_mode = \"optional\"\n[users.{BOB}]\nmode = \"disabled\"\n"
    ));
    env.hup_daemon();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mode = env.ctl(&["--json", "admin", "show", BOB]).ok().json()["mode"].clone();
        if mode == "disabled" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload: {}",
            env.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn check_validates_policy_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "default_mode = \"optional\"\ncolour = \"blue\"\n").expect("write");
    let out = std::process::Command::new(bin("twofactord"))
        .arg("--check")
        .arg(&bad)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:2:1: unknown field `colour`"),
        "{err}"
    );
    let out = std::process::Command::new(bin("twofactord"))
        .arg("--check")
        .arg(repo().join("conf/policy.toml"))
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn notify_command_gets_account_events_and_never_blocks_a_login() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("events");
    let policy = format!(
        "default_mode = \"optional\"\nnotify_command = [\"/bin/sh\", \"-c\", \"cat >> {}\"]\n",
        out.display()
    );
    let env = Env::new(&policy);
    let e = env.enroll(ALICE);
    assert_eq!(env.login("tf", ALICE, &[&e.recovery[0]]).rc, rc::SUCCESS);
    env.ctl(&["admin", "unlock", ALICE]).ok();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let events = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if text.lines().count() >= 3 || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let names: Vec<String> = events
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            assert_eq!(v["user"], ALICE);
            v["event"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(
        names,
        ["enroll", "recovery-code-used", "admin-unlock"],
        "{events}"
    );
    // Never a secret or a code.
    assert!(
        !events.contains(&e.secret) && !events.contains(&e.recovery[0]),
        "{events}"
    );

    // A command that hangs is killed; logins go on at full speed meanwhile.
    env.write_policy(
        "default_mode = \"optional\"\nnotify_command = [\"/bin/sleep\", \"60\"]\nnotify_timeout = \"1s\"\n",
    );
    env.ctl(&["admin", "reload"]).ok();
    let started = std::time::Instant::now();
    for code in &e.recovery[1..4] {
        assert_eq!(env.login("tf", ALICE, &[code]).rc, rc::SUCCESS);
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn rolling_out_required_with_starter_codes_grace_and_compliance_lists() {
    let env = Env::new(&format!(
        "default_mode = \"optional\"\n[groups.{WHEEL}]\nmode = \"required\"\n\
         [users.{BOB}]\nmode = \"required\"\ngrace_period = \"7d\"\n[services.tf-alone]\nmode = \"disabled\"\n"
    ));
    // alice: required, no grace: refused. The admin issues starter codes.
    assert_eq!(env.login("tf", ALICE, &[]).rc, rc::AUTH_ERR);
    let out = env
        .ctl(&["--json", "admin", "issue-codes", ALICE])
        .ok()
        .json();
    let codes: Vec<String> = out["recovery_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("code").to_string())
        .collect();
    assert_eq!(codes.len(), 10);
    let r = env.login("tf", ALICE, &[&codes[0]]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    assert!(r.said("twofactorctl enroll totp"), "{r:?}");
    // bob: in his grace period (started by this first login; the prompt only confirms).
    let r = env.login("tf", BOB, &[""]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    assert!(r.said("7 days left"), "{r:?}");
    let st = env.ctl(&["--json", "admin", "show", BOB]).ok().json();
    assert!(
        st["grace_until"].as_i64().expect("grace") > now() + 6 * 86_400,
        "{st}"
    );
    let out = env.ctl(&["admin", "grace", BOB, "--extend", "2d"]).ok();
    assert!(out.stdout.contains("now ends"), "{out:?}");
    let st2 = env.ctl(&["--json", "admin", "show", BOB]).ok().json();
    assert_eq!(
        st2["grace_until"].as_i64().expect("grace") - st["grace_until"].as_i64().expect("grace"),
        2 * 86_400
    );
    // Who is not compliant yet?
    env.ctl(&["admin", "require", CAROL]).ok();
    let names = |state: &str| -> Vec<String> {
        let v = env
            .ctl(&["--json", "admin", "list", "--state", state])
            .ok()
            .json();
        v["users"]
            .as_array()
            .expect("list")
            .iter()
            .map(|u| u["user"].as_str().expect("user").to_string())
            .collect()
    };
    assert_eq!(names("in-grace"), [BOB]);
    let unenrolled = names("required-unenrolled");
    assert!(unenrolled.contains(&ALICE.to_string()) && unenrolled.contains(&CAROL.to_string()));
    assert!(names("enrolled").is_empty());
    // Explaining a login for a service and a remote host.
    let out = env
        .ctl(&["admin", "show", ALICE, "--service", "tf-alone"])
        .ok()
        .stdout;
    assert!(out.contains("Mode:            disabled"), "{out}");
    assert!(out.contains("exemption services.tf-alone"), "{out}");
    let out = env
        .ctl_as(
            ALICE,
            &["status", "--service", "tf", "--rhost", "192.0.2.1"],
            None,
        )
        .ok()
        .stdout;
    assert!(out.contains("Rule:            groups.tf-wheel"), "{out}");
}

/// A ~/.google_authenticator file written by the real `google-authenticator` tool.
#[allow(clippy::expect_used)]
fn google_authenticator_file(dir: &std::path::Path, extra: &[&str]) -> std::path::PathBuf {
    let path = dir.join("google_authenticator");
    let _ = std::fs::remove_file(&path);
    let out = std::process::Command::new("google-authenticator")
        .args([
            "-t", "-d", "-f", "-C", "-q", "-Q", "NONE", "-r", "3", "-R", "30", "-w", "5", "-e", "4",
        ])
        .args(extra)
        .arg("-s")
        .arg(&path)
        .args(["-l", "test", "-i", "test"])
        .output()
        .expect("google-authenticator is installed (scripts/deps.sh)");
    assert!(out.status.success(), "{out:?}");
    path
}

#[test]
fn import_google_authenticator_files_written_by_the_real_tool() {
    let env = Env::new("default_mode = \"optional\"\n");
    let dir = tempfile::tempdir().expect("tmp");
    let file = google_authenticator_file(dir.path(), &[]);
    let text = std::fs::read_to_string(&file).expect("read");
    let secret = text.lines().next().expect("secret").to_string();
    let scratch: Vec<&str> = text
        .lines()
        .filter(|l| l.len() == 8 && !l.starts_with('"'))
        .collect();
    assert_eq!(scratch.len(), 4, "{text}");
    let out = env
        .ctl(&[
            "--json",
            "admin",
            "import",
            "google-authenticator",
            ALICE,
            &file.display().to_string(),
        ])
        .ok()
        .json();
    let dropped = out["dropped"].to_string();
    assert!(
        dropped.contains("WINDOW_SIZE 5") && dropped.contains("RATE_LIMIT 3 30"),
        "{out}"
    );
    assert!(
        out["mapped"].to_string().contains("4 scratch codes"),
        "{out}"
    );
    // The old app keeps working: a code from oathtool for the same secret logs in, once.
    let code = oathtool(&secret, 0);
    assert_eq!(env.login("tf", ALICE, &[&code]).rc, rc::SUCCESS);
    assert_eq!(
        env.login("tf", ALICE, &[&code, &code, &code]).rc,
        rc::AUTH_ERR
    );
    // Scratch codes work once each, as recovery codes.
    assert_eq!(env.login("tf", ALICE, &[scratch[0]]).rc, rc::SUCCESS);
    assert_eq!(
        env.login("tf", ALICE, &[scratch[0], scratch[0], scratch[0]])
            .rc,
        rc::AUTH_ERR
    );
    let st = env.ctl(&["--json", "admin", "show", ALICE]).ok().json();
    assert_eq!(st["recovery_codes_left"], 3);
    // Importing again over an existing factor is refused; nothing changes.
    let again = env.ctl(&[
        "admin",
        "import",
        "google-authenticator",
        ALICE,
        &file.display().to_string(),
    ]);
    assert_eq!(again.code, 1, "{again:?}");
    assert!(
        again.stderr.contains("already has an authenticator"),
        "{again:?}"
    );
    // A damaged file: a line-numbered error, and nothing imported for bob.
    let bad = dir.path().join("bad");
    std::fs::write(&bad, text.replace(scratch[1], "12ab5678")).expect("write");
    let out = env.ctl(&[
        "admin",
        "import",
        "google-authenticator",
        BOB,
        &bad.display().to_string(),
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("line ") && out.stderr.contains("nothing was imported"),
        "{out:?}"
    );
    assert!(!out.stderr.contains(&secret), "{out:?}");
    assert_eq!(
        env.ctl(&["--json", "admin", "show", BOB]).ok().json()["enrolled"],
        false
    );
    // A 60-second step is carried over.
    let slow = google_authenticator_file(dir.path(), &["-S", "60"]);
    let slow_secret = std::fs::read_to_string(&slow)
        .expect("read")
        .lines()
        .next()
        .expect("s")
        .to_string();
    env.ctl(&[
        "admin",
        "import",
        "google-authenticator",
        BOB,
        &slow.display().to_string(),
    ])
    .ok();
    let code = oathtool_with(&slow_secret, 0, &["--time-step-size=60s"]);
    assert_eq!(env.login("tf", BOB, &[&code]).rc, rc::SUCCESS);
    // Only admins import.
    let out = env.ctl_as(
        CAROL,
        &[
            "admin",
            "import",
            "google-authenticator",
            CAROL,
            &file.display().to_string(),
        ],
        None,
    );
    assert_ne!(out.code, 0, "{out:?}");
}
