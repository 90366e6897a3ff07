//! `twofactorctl doctor` against the real daemon on a private bus, with fixture PAM directories,
//! the real `twofactord --check`, and (where installed) the real `sshd -T`.
#![allow(clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use twofactor_tests::*;

const POLICY: &str = "default_mode = \"optional\"\n";

const COMMON_AUTH: &str = "\
auth\t[success=1 default=ignore]\tpam_unix.so nullok
auth\trequisite\t\t\tpam_deny.so
auth\trequired\t\t\tpam_permit.so
";

/// A PAM directory with Debian's common-auth, and `sudo` (and `sshd`, if given) as written.
fn pam_dir(env: &Env, name: &str, sudo: &str, sshd: Option<&str>) -> PathBuf {
    let dir = env.dir.path().join(name);
    std::fs::create_dir(&dir).expect("pam dir");
    std::fs::write(dir.join("common-auth"), COMMON_AUTH).expect("common-auth");
    std::fs::write(dir.join("sudo"), sudo).expect("sudo");
    if let Some(text) = sshd {
        std::fs::write(dir.join("sshd"), text).expect("sshd");
    }
    dir
}

fn module() -> String {
    bin("libpam_twofactor.so").display().to_string()
}

/// An sshd configuration set up for password + code, with its own host key; `None` when
/// `ssh-keygen` is missing.
fn sshd_config(env: &Env) -> Option<PathBuf> {
    let key = env.dir.path().join("ssh_host_ed25519_key");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        return None;
    }
    // `sshd -T` refuses to run without it (a fresh machine has none until sshd first starts).
    twofactor_tests::sshd::privsep_dir();
    let conf = env.dir.path().join("sshd_config");
    std::fs::write(
        &conf,
        format!(
            "HostKey {}\nUsePAM yes\nKbdInteractiveAuthentication yes\nPasswordAuthentication no\n\
             AuthenticationMethods keyboard-interactive\n",
            key.display()
        ),
    )
    .expect("sshd_config");
    Some(conf)
}

/// Runs `twofactorctl --bus ADDRESS [--json] doctor --policy … --state-dir … --pam-dir DIR …`
/// (the policy: the daemon's, unless `extra` names one).
fn doctor(env: &Env, json: bool, pam: &Path, extra: &[&str]) -> Out {
    let policy = env.policy.display().to_string();
    let policy = if extra.contains(&"--policy") {
        None
    } else {
        Some(policy)
    };
    let state = env.state.display().to_string();
    let pam = pam.display().to_string();
    let mut args = Vec::new();
    if json {
        args.push("--json");
    }
    args.push("doctor");
    if let Some(p) = &policy {
        args.extend(["--policy", p]);
    }
    args.extend(["--state-dir", &state, "--pam-dir", &pam]);
    args.extend(extra);
    env.ctl(&args)
}

/// The findings, each checked to be well-formed.
fn findings(out: &Out) -> Vec<serde_json::Value> {
    let all = out.json().as_array().cloned().expect("a JSON array");
    for f in &all {
        assert!(f["check"].as_str().is_some_and(|c| !c.is_empty()), "{f}");
        assert!(
            matches!(f["level"].as_str(), Some("ok" | "warning" | "error")),
            "{f}"
        );
        assert!(f["message"].as_str().is_some_and(|m| !m.is_empty()), "{f}");
        match f["level"].as_str() {
            Some("ok") => assert!(f["fix"].is_null(), "{f}"),
            _ => assert!(f["fix"].as_str().is_some_and(|x| !x.is_empty()), "{f}"),
        }
    }
    all
}

fn of<'a>(all: &'a [serde_json::Value], check: &str) -> Vec<&'a serde_json::Value> {
    all.iter().filter(|f| f["check"] == check).collect()
}

/// The clock line is there and well-formed, whatever this machine's clock says; returns whether
/// it is an error.
fn clock_is_error(all: &[serde_json::Value]) -> bool {
    let clock = of(all, "clock");
    assert_eq!(clock.len(), 1, "{all:?}");
    clock[0]["level"] == "error"
}

fn exit_matches_errors(out: &Out, all: &[serde_json::Value]) {
    let errors = all.iter().any(|f| f["level"] == "error");
    assert_eq!(out.code, if errors { 1 } else { 0 }, "{out:?}");
}

#[test]
fn good_setup_has_nothing_but_the_clock_to_report() {
    let env = Env::new(POLICY);
    // Whatever the umask, the policy file is as an admin would leave it.
    std::fs::set_permissions(&env.policy, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let good = format!("@include common-auth\nauth required {}\n", module());
    let pam = pam_dir(&env, "pam-good", &good, Some(&good));
    let conf = sshd_config(&env);
    let conf_text = conf.as_ref().map(|c| c.display().to_string());
    let extra: Vec<&str> = match &conf_text {
        Some(c) => vec!["--sshd-config", c],
        None => vec![],
    };
    let out = doctor(&env, true, &pam, &extra);
    let all = findings(&out);
    exit_matches_errors(&out, &all);
    // Only the clock may be an error here (this machine's clock may not be synchronized).
    assert_eq!(out.code == 1, clock_is_error(&all), "{all:?}");
    for f in &all {
        if f["check"] == "clock" || (f["check"] == "sshd" && conf.is_none()) {
            continue;
        }
        assert_eq!(f["level"], "ok", "{f}");
    }
    let daemon = of(&all, "daemon");
    assert_eq!(daemon.len(), 1);
    assert!(
        daemon[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("twofactord answers")),
        "{daemon:?}"
    );
    assert!(
        of(&all, "pam/sudo")[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"required\" after the password module"))
    );
    for check in [
        "policy",
        "policy-file",
        "state-dir",
        "pam/sshd",
        "pam/login",
        "pam/su",
        "pam/common-auth",
        "sshd",
    ] {
        assert!(!of(&all, check).is_empty(), "no {check} line: {all:?}");
    }
}

#[test]
fn sufficient_is_an_error_and_exit_1() {
    let env = Env::new(POLICY);
    let pam = pam_dir(
        &env,
        "pam-sufficient",
        &format!("@include common-auth\nauth sufficient {}\n", module()),
        None,
    );
    let out = doctor(&env, true, &pam, &[]);
    assert_eq!(out.code, 1, "{out:?}");
    let all = findings(&out);
    clock_is_error(&all);
    assert_eq!(of(&all, "daemon")[0]["level"], "ok", "{all:?}");
    let sudo = of(&all, "pam/sudo");
    assert_eq!(sudo[0]["level"], "error", "{sudo:?}");
    assert!(
        sudo[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("sufficient") && m.contains("reports a wrong code")),
        "{sudo:?}"
    );
    // sshd has no service file here, and the policy applies: nothing for sshd to say.
    assert_eq!(of(&all, "pam/sshd")[0]["level"], "ok");
    assert_eq!(of(&all, "sshd")[0]["level"], "ok");
}

#[test]
fn text_report_and_problems_outside_pam() {
    let mut env = Env::new(POLICY);
    let pam = pam_dir(
        &env,
        "pam-text",
        &format!(
            "auth [success=done default=ignore] {}\n@include common-auth\n",
            module()
        ),
        None,
    );
    // A policy with a warning (a rule for a user who does not exist), checked by the real
    // twofactord, and an invalid one.
    let warned = env.dir.path().join("warned.toml");
    std::fs::write(
        &warned,
        "default_mode = \"optional\"\n[users.tf-doctor-nobody]\nmode = \"required\"\n",
    )
    .expect("policy");
    let out = doctor(
        &env,
        true,
        &pam,
        &["--policy", &warned.display().to_string()],
    );
    let all = findings(&out);
    let policy = of(&all, "policy");
    assert_eq!(policy.len(), 1, "{all:?}");
    assert_eq!(policy[0]["level"], "warning", "{policy:?}");
    assert!(
        policy[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("tf-doctor-nobody"))
    );

    let invalid = env.dir.path().join("invalid.toml");
    std::fs::write(&invalid, "default_mode = \"sometimes\"\n").expect("policy");
    let out = doctor(
        &env,
        false,
        &pam,
        &["--policy", &invalid.display().to_string()],
    );
    assert_eq!(out.code, 1, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    for l in &lines[..lines.len() - 1] {
        assert!(
            l.starts_with("ok ") || l.starts_with("warning ") || l.starts_with("error "),
            "{l}"
        );
    }
    assert!(
        lines.last().is_some_and(|l| l.starts_with("doctor: ")),
        "{out:?}"
    );
    assert!(
        out.stdout.lines().any(|l| l.starts_with("error   policy: ")
            && l.contains("invalid.toml")
            && l.contains(" -- fix: ")),
        "{out:?}"
    );
    // success=done before the password: a valid code alone would log in.
    assert!(
        out.stdout.lines().any(
            |l| l.starts_with("error   pam/sudo: ") && l.contains("a valid code alone logs in")
        ),
        "{out:?}"
    );

    // The daemon stopped: an error saying so.
    env.stop_daemon();
    let out = doctor(&env, true, &pam, &[]);
    assert_eq!(out.code, 1);
    let all = findings(&out);
    let daemon = of(&all, "daemon");
    assert_eq!(daemon[0]["level"], "error", "{daemon:?}");
    assert!(
        daemon[0]["fix"]
            .as_str()
            .is_some_and(|f| f.contains("systemctl status twofactord")),
        "{daemon:?}"
    );
}
