//! Logins through real libpam, the real module, a real bus and the real daemon, with codes
//! from oathtool.

use twofactor_tests::*;

const OPTIONAL: &str = "default_mode = \"optional\"\n";

#[test]
fn a_valid_code_logs_in_and_a_replayed_one_is_refused() {
    let env = Env::new(OPTIONAL);
    let e = env.enroll(ALICE);
    // The confirmation code's step is already spent: the same code again is a replay.
    let replay = env.login("tf", ALICE, &[&e.first_code, &e.first_code, &e.first_code]);
    assert_eq!(replay.rc, rc::AUTH_ERR, "{replay:?}");
    assert!(replay.said("already used"), "{replay:?}");

    // A code for the next step is fresh.
    let next = oathtool(&e.secret, 30);
    let ok = env.login("tf", ALICE, &[&next]);
    assert_eq!(ok.rc, rc::SUCCESS, "{ok:?}");
    assert_eq!(ok.prompts(), 1);
    assert_eq!(ok.transcript[0].text, "Verification code: ");
    assert_eq!(ok.transcript[0].style, "prompt");
    // And then refused when replayed.
    let again = env.login("tf", ALICE, &[&next, &next, &next]);
    assert_eq!(again.rc, rc::AUTH_ERR, "{again:?}");
    assert!(again.said("already used"));
}

#[test]
fn a_wrong_code_is_refused_and_retries_are_bounded() {
    let env = Env::new(OPTIONAL);
    let e = env.enroll(ALICE);
    let good = oathtool(&e.secret, 30);
    let wrong = if good == "000000" { "111111" } else { "000000" };
    // Three attempts per login (the default), all wrong.
    let r = env.login("tf", ALICE, &[wrong, wrong, wrong, wrong]);
    assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
    assert_eq!(r.prompts(), 3);
    assert_eq!(r.answers_left, 1);
    assert!(r.said("Wrong code."));
    // A wrong code then the right one in the same login succeeds.
    let r = env.login("tf", ALICE, &[wrong, &good]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    assert_eq!(r.prompts(), 2);
}

#[test]
fn codes_one_step_early_or_late_pass_three_steps_off_do_not() {
    let env = Env::new(OPTIONAL);
    let e = env.enroll(ALICE);
    let e_bob = env.enroll(BOB);
    wait_for_fresh_step();
    // Three steps off: refused (bob, whose last accepted step is the enrollment's).
    for off in [-90, 90] {
        let code = oathtool(&e_bob.secret, off);
        let r = env.login("tf", BOB, &[&code, &code, &code]);
        assert_eq!(r.rc, rc::AUTH_ERR, "offset {off}: {r:?}");
    }
    // One step late (the app's clock is ahead) is accepted.
    let r = env.login("tf", ALICE, &[&oathtool(&e.secret, 30)]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    // One step late on a fresh user.
    let carol = env.enroll(CAROL);
    let r = env.login("tf", CAROL, &[&oathtool(&carol.secret, 30)]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    // An early code (−1 step) after a later one was accepted counts as a replay.
    let early = oathtool(&carol.secret, -30);
    let r = env.login("tf", CAROL, &[&early, &early, &early]);
    assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
}

#[test]
fn a_code_one_step_behind_is_accepted() {
    let env = Env::new(OPTIONAL);
    // Enroll without spending the current step: begin + confirm with the *next* step's code,
    // then log in with the current one minus one step would be a replay; instead use a user
    // whose last step is the enrollment's and a code from the step after next minus one.
    let begin = env
        .ctl_as(ALICE, &["--json", "enroll", "totp", "--begin"], None)
        .ok()
        .json();
    let secret = begin["secret"].as_str().unwrap().to_string();
    let id = begin["enrollment_id"].as_str().unwrap().to_string();
    wait_for_fresh_step();
    // Confirm with a code one step behind: accepted within the window.
    let behind = oathtool(&secret, -30);
    let r = env
        .ctl_as(
            ALICE,
            &["--json", "enroll", "totp", "--confirm", &id],
            Some(&format!("{behind}\n")),
        )
        .ok()
        .json();
    assert_eq!(r["accepted"], true, "{r}");
    // The current step is later than the confirmed one: accepted.
    let r = env.login("tf", ALICE, &[&oathtool(&secret, 0)]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
}

#[test]
fn a_recovery_code_works_once() {
    let env = Env::new(OPTIONAL);
    let e = env.enroll(ALICE);
    assert_eq!(e.recovery.len(), 10);
    let code = e.recovery[3].clone();
    let r = env.login("tf", ALICE, &[&code]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    assert!(r.said("9 recovery codes left"), "{r:?}");
    let r = env.login("tf", ALICE, &[&code, &code, &code]);
    assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
    // Typed sloppily (upper case, spaces) a fresh one still works.
    let sloppy = e.recovery[4].to_uppercase().replace('-', " ");
    let r = env.login("tf", ALICE, &[&sloppy]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    let st = env.ctl(&["--json", "admin", "show", ALICE]).ok().json();
    assert_eq!(st["recovery_codes_left"], 8);
    let audit = env.ctl(&["admin", "audit", "--user", ALICE]).ok().stdout;
    assert!(audit.contains("recovery-code-used"), "{audit}");
    assert!(
        !audit.contains(&code) && !audit.contains(&e.secret),
        "{audit}"
    );
    // No code or secret in the daemon's log.
    assert!(!env.log().contains(&code));
    assert!(!env.log().contains(&e.secret));
}

#[test]
fn lockout_escalates_survives_a_restart_and_admin_unlock_ends_it() {
    let mut env =
        Env::new("default_mode = \"optional\"\n[rate_limit]\nmax_failures = 3\nlockout = \"1h\"\n");
    let e = env.enroll(ALICE);
    let r = env.login("tf", ALICE, &["000001", "000002", "000003"]);
    assert_eq!(r.rc, rc::AUTH_ERR);
    assert!(r.said("locked"), "{r:?}");
    // The right code is refused while locked, without a prompt.
    let good = oathtool(&e.secret, 30);
    let r = env.login("tf", ALICE, &[&good]);
    assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
    assert_eq!(r.prompts(), 0);
    assert!(r.said("Too many failed attempts"));
    env.restart_daemon();
    let r = env.login("tf", ALICE, &[&good]);
    assert_eq!(r.rc, rc::AUTH_ERR, "lock must survive a restart: {r:?}");
    let st = env.ctl(&["--json", "admin", "show", ALICE]).ok().json();
    assert!(st["locked_until"].as_i64().unwrap() > now() + 3000, "{st}");
    env.ctl(&["admin", "unlock", ALICE]).ok();
    let r = env.login("tf", ALICE, &[&good]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    let audit = env.ctl(&["--json", "admin", "audit", "--user", ALICE]);
    assert_eq!(audit.code, 0, "{audit:?}\n{}", env.log());
    let audit = audit.json();
    let events: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(events.contains(&"lockout"), "{events:?}");
    assert!(events.contains(&"admin-unlock"), "{events:?}");
}

#[test]
fn replay_state_survives_a_restart() {
    let mut env = Env::new(OPTIONAL);
    let e = env.enroll(ALICE);
    let code = oathtool(&e.secret, 30);
    assert_eq!(env.login("tf", ALICE, &[&code]).rc, rc::SUCCESS);
    env.restart_daemon();
    let r = env.login("tf", ALICE, &[&code, &code, &code]);
    assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
    assert!(r.said("already used"));
}

#[test]
fn optional_and_unenrolled_is_ignored_without_a_prompt() {
    let env = Env::new(OPTIONAL);
    let r = env.login("tf-alone", BOB, &[]);
    assert_eq!(r.rc, rc::PERM_DENIED, "{r:?}");
    assert_eq!(r.prompts(), 0);
    // In a stack with a password module after it, the stack decides.
    let r = env.login("tf", BOB, &[]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    assert_eq!(r.prompts(), 0);
}

#[test]
fn disabled_users_are_never_asked_even_when_enrolled() {
    let env = Env::new(OPTIONAL);
    let e = env.enroll(ALICE);
    env.write_policy(&format!("{OPTIONAL}[users.{ALICE}]\nmode = \"disabled\"\n"));
    env.ctl(&["admin", "reload"]).ok();
    let r = env.login("tf-alone", ALICE, &[]);
    assert_eq!(r.prompts(), 0, "{r:?}");
    assert_eq!(r.rc, rc::PERM_DENIED);
    drop(e);
}

#[test]
fn required_and_unenrolled_is_denied_with_how_to_enroll() {
    let env = Env::new(&format!(
        "{OPTIONAL}[groups.{WHEEL}]\nmode = \"required\"\n"
    ));
    let r = env.login("tf", ALICE, &[]);
    assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
    assert_eq!(r.prompts(), 0);
    assert!(r.said("twofactorctl enroll totp"), "{r:?}");
    // bob is not in the group: optional, not enrolled.
    assert_eq!(env.login("tf", BOB, &[]).rc, rc::SUCCESS);
}

#[test]
fn a_stopped_daemon_fails_closed_unless_failmode_is_open() {
    let mut env = Env::new(OPTIONAL);
    let _ = env.enroll(ALICE);
    env.stop_daemon();
    let r = env.login("tf", ALICE, &["123456"]);
    assert_eq!(r.rc, rc::AUTHINFO_UNAVAIL, "{r:?}");
    assert_eq!(r.prompts(), 0);
    assert!(r.said("unavailable"), "the user is told: {r:?}");
    // Not even an unenrolled user is let through: "cannot reach" is never "not enrolled".
    assert_eq!(env.login("tf", BOB, &[]).rc, rc::AUTHINFO_UNAVAIL);
    // failmode=open turns only this case into PAM_IGNORE (the rest of the stack decides).
    assert_eq!(env.login("tf-open", ALICE, &[]).rc, rc::SUCCESS);
    // A typo in the module arguments is a service error, never success.
    env.start_daemon();
    let r = env.login("tf-badarg", ALICE, &["123456"]);
    assert_eq!(r.rc, 3, "PAM_SERVICE_ERR expected: {r:?}");
}

#[test]
fn a_hung_daemon_times_out_and_fails_closed_with_a_message() {
    let env = Env::new(OPTIONAL);
    let _ = env.enroll(ALICE);
    env.freeze_daemon(true);
    let started = std::time::Instant::now();
    let r = env.login("tf-t2", ALICE, &["123456"]);
    let took = started.elapsed();
    env.freeze_daemon(false);
    assert_eq!(r.rc, rc::AUTHINFO_UNAVAIL, "{r:?}");
    assert!(r.said("unavailable"), "{r:?}");
    assert_eq!(r.prompts(), 0);
    // Bounded by timeout=2 (generously: the machine may be loaded), not hanging.
    assert!(took < std::time::Duration::from_secs(30), "{took:?}");
    // Thawed, it answers again.
    assert_eq!(env.login("tf", BOB, &[]).rc, rc::SUCCESS);
}

#[test]
fn the_module_leaves_no_threads_behind() {
    let env = Env::new(OPTIONAL);
    let e = env.enroll(ALICE);
    let r = env.login("tf", ALICE, &[&oathtool(&e.secret, 30)]);
    assert_eq!(r.rc, rc::SUCCESS);
    assert_eq!(r.threads_before, 1, "{r:?}");
    assert_eq!(r.threads_after_auth, r.threads_before, "{r:?}");
    assert_eq!(r.threads_after_end, r.threads_before, "{r:?}");
}

#[test]
fn bad_answers_get_clear_errors_and_leave_state_intact() {
    let env = Env::new(OPTIONAL);
    let e = env.enroll(ALICE);
    let long = "1".repeat(5000);
    let r = env.login("tf", ALICE, &[&long, "12ab56", "123456"]);
    assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
    assert!(r.said("too long"), "{r:?}");
    assert!(r.said("not a valid code"), "{r:?}");
    assert!(r.said("Wrong code."), "{r:?}");
    // Enter alone ends the login (not counted as a guess).
    let r = env.login("tf", ALICE, &["", "123456"]);
    assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
    assert!(r.said("No code was entered."), "{r:?}");
    assert_eq!(r.prompts(), 1, "{r:?}");
    // The factor is intact: a good code still works.
    let r = env.login("tf", ALICE, &[&oathtool(&e.secret, 30)]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
}

#[test]
fn unknown_and_odd_user_names() {
    let env = Env::new(OPTIONAL);
    let r = env.login("tf", "tf-nosuchuser", &[]);
    assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
    for bad in ["a b", "x:y", "../etc/passwd", "tab\tname"] {
        let out = env.busctl_as("root", "Login", "BeginLogin", &["sa{ss}", bad, "0"]);
        assert_ne!(out.code, 0, "{bad}: {out:?}");
        assert!(
            out.stderr.contains("not allowed")
                || out.stderr.contains("InvalidArgument")
                || out.stderr.contains("control characters"),
            "{bad}: {out:?}"
        );
    }
    let out = env.ctl(&["admin", "show", "tf-nosuchuser"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no such user"), "{out:?}");
    // The daemon is still fine.
    env.ctl(&["admin", "show", ALICE]).ok();
}

#[test]
fn concurrent_logins_one_code_wins_once_and_different_users_all_pass() {
    let env = Env::new(OPTIONAL);
    let users = [ALICE, BOB, CAROL, "root"];
    let secrets: Vec<String> = users.iter().map(|u| env.enroll(u).secret).collect();
    // Six logins of one user with one code, at once: exactly one may succeed.
    let code = oathtool(&secrets[0], 30);
    let wins = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| s.spawn(|| env.login("tf", ALICE, &[&code, &code, &code]).rc))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .filter(|rc| *rc == rc::SUCCESS)
            .count()
    });
    assert_eq!(wins, 1, "one code, one login");
    // Different users at once (each with their next step's code): no spurious failure.
    let codes: Vec<String> = secrets[1..].iter().map(|s| oathtool(s, 30)).collect();
    let env = &env;
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = users[1..]
            .iter()
            .zip(&codes)
            .map(|(u, c)| s.spawn(move || env.login("tf", u, &[c]).rc))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect::<Vec<_>>()
    });
    assert_eq!(results, vec![rc::SUCCESS; 3]);
    assert_eq!(
        env.login("tf", ALICE, &[&code, &code, &code]).rc,
        rc::AUTH_ERR
    );
}

#[test]
fn service_rules_and_trusted_networks_through_real_logins() {
    let env = Env::new(
        "default_mode = \"optional\"\n[services.tf]\nmode = \"required\"\n\
         [exemptions]\nnetworks = [\"192.0.2.0/24\", \"2001:db8::/32\"]\n",
    );
    // The service rule raises bob (optional, not enrolled) to required on service "tf" only.
    let r = env.login("tf", BOB, &[]);
    assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
    assert!(r.said("twofactorctl enroll totp"), "{r:?}");
    assert_eq!(env.login("tf-alone", BOB, &[]).rc, rc::PERM_DENIED);
    // From a trusted network the login is exempt, and that is audited with the rule.
    for rhost in ["192.0.2.10", "2001:db8::5"] {
        let r = env.login_full("root", "tf", BOB, Some(rhost), &[]);
        assert_eq!(r.rc, rc::SUCCESS, "{rhost}: {r:?}");
        assert_eq!(r.prompts(), 0);
    }
    let r = env.login_full("root", "tf", BOB, Some("198.51.100.1"), &[]);
    assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
    let audit = env.ctl(&["admin", "audit", "--user", BOB]).ok().stdout;
    assert!(
        audit.contains("exemption-applied") && audit.contains("exemptions.networks 192.0.2.0/24"),
        "{audit}"
    );
    // Explain shows the mode for a given service and remote host, with the rule.
    let out = env.busctl_as(
        BOB,
        "Enrollment",
        "Explain",
        &["sa{ss}", "", "1", "service", "tf"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("\"required\" \"services.tf ("),
        "{out:?}"
    );
    let out = env.busctl_as(
        BOB,
        "Enrollment",
        "Explain",
        &["sa{ss}", "", "2", "service", "tf", "rhost", "192.0.2.1"],
    );
    assert!(
        out.stdout
            .contains("\"disabled\" \"exemption exemptions.networks"),
        "{out:?}"
    );
    // Not for another user without the admin right.
    let out = env.busctl_as(BOB, "Enrollment", "Explain", &["sa{ss}", ALICE, "0"]);
    assert_ne!(out.code, 0, "{out:?}");
}

#[test]
fn remember_skips_the_prompt_for_the_same_local_tty_only() {
    let env = Env::new(
        "default_mode = \"optional\"\n[login]\nattempts = 1\n[services.tf]\nremember = \"5m\"\n",
    );
    let e = env.enroll(ALICE);
    let code = oathtool(&e.secret, 30);
    let tty = Some("/dev/pts/7");
    let r = env.login_tty("root", "tf", ALICE, None, tty, &[&code]);
    assert_eq!((r.rc, r.prompts()), (rc::SUCCESS, 1), "{r:?}");
    let r = env.login_tty("root", "tf", ALICE, None, tty, &[]);
    assert_eq!((r.rc, r.prompts()), (rc::SUCCESS, 0), "remembered: {r:?}");
    // Another terminal, or a remote login from the same terminal name, is asked again.
    let r = env.login_tty("root", "tf", ALICE, None, Some("/dev/pts/8"), &["000000"]);
    assert_eq!((r.rc, r.prompts()), (rc::AUTH_ERR, 1), "{r:?}");
    let r = env.login_tty("root", "tf", ALICE, Some("192.0.2.9"), tty, &["000000"]);
    assert_eq!((r.rc, r.prompts()), (rc::AUTH_ERR, 1), "{r:?}");
    let audit = env.ctl(&["admin", "audit", "--user", ALICE]).ok().stdout;
    assert!(
        audit.contains("remembered on /dev/pts/7 (services.tf = 5m)"),
        "{audit}"
    );
}

#[test]
fn grace_period_runs_out_on_the_daemon_clock_faketime() {
    let mut env = Env::new("default_mode = \"required\"\ngrace_period = \"7d\"\n");
    // First required login: the grace period starts; the user is told and let through.
    let r = env.login("tf", ALICE, &[""]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    assert!(r.said("7 days left"), "{r:?}");
    // Six days later (the daemon's clock, through libfaketime): still in, 1 day left.
    env.restart_daemon_at(Some("+6d"));
    let r = env.login("tf", ALICE, &[""]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    assert!(r.said("1 days left"), "{r:?}");
    // Eight days later: refused, with what to do.
    env.restart_daemon_at(Some("+8d"));
    let r = env.login("tf", ALICE, &[]);
    assert_eq!(r.rc, rc::AUTH_ERR, "{r:?}");
    assert!(r.said("grace period"), "{r:?}");
    // An admin extends it (on the same clock): in again.
    env.ctl(&["admin", "grace", ALICE, "--extend", "3d"]).ok();
    let r = env.login("tf", ALICE, &[""]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
}

/// A real pseudo-terminal: its controlling side (kept open for the test) and the device name
/// of its terminal side (`/dev/pts/N`).
fn open_pty() -> (std::os::fd::OwnedFd, String) {
    use std::os::fd::FromRawFd;
    // SAFETY: posix_openpt takes flags only and returns a new descriptor or -1.
    let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY) };
    assert!(fd >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a descriptor we just opened and own nowhere else.
    let master = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: `fd` is an open pty master; `name` is a writable buffer of the length given.
    let ok = unsafe {
        libc::grantpt(fd) == 0
            && libc::unlockpt(fd) == 0
            && libc::ptsname_r(fd, name.as_mut_ptr(), name.len()) == 0
    };
    assert!(ok, "pty setup: {}", std::io::Error::last_os_error());
    // SAFETY: ptsname_r wrote a NUL-terminated string into `name`.
    let tty = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    (master, tty)
}

#[test]
fn remember_is_bound_to_the_session_that_earned_it() {
    let env = Env::new(
        "default_mode = \"optional\"\n[login]\nattempts = 1\n[services.tf]\nremember = \"5m\"\n",
    );
    let e = env.enroll(ALICE);
    let (_pty, tty) = open_pty();
    let here = LoginOptions {
        tty: Some(&tty),
        ..LoginOptions::default()
    };
    let r = env.login_with(&here, "tf", ALICE, &[&oathtool(&e.secret, 30)]);
    assert_eq!((r.rc, r.prompts()), (rc::SUCCESS, 1), "{r:?}");
    let r = env.login_with(&here, "tf", ALICE, &[]);
    assert_eq!((r.rc, r.prompts()), (rc::SUCCESS, 0), "remembered: {r:?}");
    // Another session on the same terminal device (another session leader) is asked; the
    // user gives no answer here (pamdrive refuses the prompt), so nothing is counted.
    let elsewhere = LoginOptions {
        new_session: true,
        ..here
    };
    let r = env.login_with(&elsewhere, "tf", ALICE, &[]);
    assert_eq!((r.rc, r.prompts()), (rc::CONV_ERR, 1), "new session: {r:?}");
    // The session that earned it still has it.
    let r = env.login_with(&here, "tf", ALICE, &[]);
    assert_eq!((r.rc, r.prompts()), (rc::SUCCESS, 0), "{r:?}");
    // The terminal handed over again, as login programs do for a new session (chown/chmod of
    // the device): asked, even by the same session leader.
    std::fs::set_permissions(&tty, std::os::unix::fs::PermissionsExt::from_mode(0o620))
        .expect("chmod pty");
    let r = env.login_with(&here, "tf", ALICE, &[]);
    assert_eq!(
        (r.rc, r.prompts()),
        (rc::CONV_ERR, 1),
        "tty handed over: {r:?}"
    );
}

#[test]
fn remember_is_never_honoured_for_an_unprivileged_caller() {
    let env = Env::new(
        "default_mode = \"optional\"\n[login]\nattempts = 1\n[services.tf]\nremember = \"5m\"\n",
    );
    let e = env.enroll(ALICE);
    let (_pty, tty) = open_pty();
    // alice's own PAM stack (a screen locker runs as the user) could send any session
    // identity: its success is not remembered, for it or for root in the same session.
    let own = LoginOptions {
        caller: ALICE,
        tty: Some(&tty),
        ..LoginOptions::default()
    };
    let r = env.login_with(&own, "tf", ALICE, &[&e.recovery[0]]);
    assert_eq!((r.rc, r.prompts()), (rc::SUCCESS, 1), "{r:?}");
    let r = env.login_with(&own, "tf", ALICE, &[]);
    assert_eq!((r.rc, r.prompts()), (rc::CONV_ERR, 1), "{r:?}");
    let root = LoginOptions {
        caller: "root",
        ..own
    };
    let r = env.login_with(&root, "tf", ALICE, &[]);
    assert_eq!((r.rc, r.prompts()), (rc::CONV_ERR, 1), "{r:?}");
    // Nor does a root success let alice's own stack through.
    let r = env.login_with(&root, "tf", ALICE, &[&e.recovery[1]]);
    assert_eq!((r.rc, r.prompts()), (rc::SUCCESS, 1), "{r:?}");
    let r = env.login_with(&root, "tf", ALICE, &[]);
    assert_eq!(
        (r.rc, r.prompts()),
        (rc::SUCCESS, 0),
        "remembered for root: {r:?}"
    );
    let r = env.login_with(&own, "tf", ALICE, &[]);
    assert_eq!((r.rc, r.prompts()), (rc::CONV_ERR, 1), "{r:?}");
}

#[test]
fn pam_silent_shows_no_messages_but_still_prompts() {
    let mut env = Env::new(OPTIONAL);
    let e = env.enroll(ALICE);
    let silent = LoginOptions {
        silent: true,
        ..LoginOptions::default()
    };
    // A wrong code, then a recovery code: without PAM_SILENT the user reads why the first was
    // refused and how many recovery codes are left.
    let loud = env.login("tf", ALICE, &["000000", &e.recovery[0]]);
    assert_eq!(loud.rc, rc::SUCCESS, "{loud:?}");
    let styles =
        |r: &PamResult| -> Vec<String> { r.transcript.iter().map(|s| s.style.clone()).collect() };
    assert_eq!(
        styles(&loud),
        ["prompt", "error", "prompt", "info"],
        "{loud:?}"
    );
    // With it: the same two prompts and nothing else, and the same outcome.
    let quiet = env.login_with(&silent, "tf", ALICE, &["000000", &e.recovery[1]]);
    assert_eq!(quiet.rc, rc::SUCCESS, "{quiet:?}");
    assert_eq!(styles(&quiet), ["prompt", "prompt"], "{quiet:?}");
    // The module's own message (the daemon is unreachable) is silenced too.
    env.stop_daemon();
    let loud = env.login("tf", ALICE, &[]);
    assert_eq!(loud.rc, rc::AUTHINFO_UNAVAIL, "{loud:?}");
    assert!(loud.said("unavailable"), "{loud:?}");
    let quiet = env.login_with(&silent, "tf", ALICE, &[]);
    assert_eq!(quiet.rc, rc::AUTHINFO_UNAVAIL, "{quiet:?}");
    assert!(quiet.transcript.is_empty(), "{quiet:?}");
}
