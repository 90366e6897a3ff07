//! twofactorctl's own input and output: codes never on a command line (every user can read
//! /proc/PID/cmdline), and a reader that goes away (`| head`) ends it quietly.

#![allow(clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use twofactor_tests::*;

fn enrolled(env: &Env, user: &str) -> bool {
    env.ctl(&["--json", "admin", "show", user]).ok().json()["enrolled"] == true
}

#[test]
fn the_removed_code_flag_is_refused_with_a_reason_and_changes_nothing() {
    let env = Env::new("default_mode = \"optional\"\n");
    let e = env.enroll(ALICE);
    let begin = env
        .ctl_as(BOB, &["--json", "enroll", "totp", "--begin"], None)
        .ok()
        .json();
    let id = begin["enrollment_id"].as_str().expect("id");
    let secret = begin["secret"].as_str().expect("secret");
    wait_for_fresh_step();
    for (user, args) in [
        (ALICE, vec!["disable", "--code", &e.recovery[0]]),
        (ALICE, vec!["disable", &format!("--code={}", e.recovery[0])]),
        (
            ALICE,
            vec!["recovery", "regenerate", "--code", &e.recovery[0]],
        ),
        (ALICE, vec!["remove", "key", "k", "--code", &e.recovery[0]]),
        (
            ALICE,
            vec!["enroll", "key", "--name", "k", "--code", &e.recovery[0]],
        ),
        (
            BOB,
            vec![
                "enroll",
                "totp",
                "--confirm",
                id,
                "--code",
                &oathtool(secret, 0),
            ],
        ),
    ] {
        let r = env.ctl_as(user, &args, None);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(r.stderr.contains("--code was removed"), "{args:?}: {r:?}");
        assert!(r.stderr.contains("standard input"), "{args:?}: {r:?}");
        // The value is not repeated back.
        assert!(!r.stderr.contains(&e.recovery[0]), "{r:?}");
    }
    // Nothing happened: alice keeps her factor and all her codes; bob is not enrolled.
    let st = env.ctl(&["--json", "admin", "show", ALICE]).ok().json();
    assert_eq!(st["enrolled"], true, "{st}");
    assert_eq!(st["recovery_codes_left"], 10, "{st}");
    assert!(!enrolled(&env, BOB));
    // The help says where codes come from.
    let help = env.ctl(&["disable", "--help"]).ok().stdout;
    assert!(help.contains("standard input"), "{help}");
    assert!(!help.contains("--code"), "{help}");
    // The recovery code given above was never used: it still works, from standard input.
    let r = env
        .ctl_as(
            ALICE,
            &["--json", "recovery", "regenerate"],
            Some(&format!("{}\n", e.recovery[0])),
        )
        .ok()
        .json();
    assert_eq!(r["accepted"], true, "{r}");
}

/// Reads `child`'s standard error until it holds `needle` (a prompt), or panics after 20 s.
fn wait_for_prompt(stderr: &mut impl Read, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        assert!(Instant::now() < deadline, "no prompt {needle:?}: {seen:?}");
        let n = stderr.read(&mut buf).expect("read stderr");
        assert!(n > 0, "stderr closed before the prompt: {seen:?}");
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[test]
fn a_code_waits_on_standard_input_and_never_shows_in_proc_cmdline() {
    let env = Env::new("default_mode = \"optional\"\n");
    let e = env.enroll(ALICE);
    wait_for_fresh_step();
    let code = oathtool(&e.secret, 30);

    let mut cmd = as_user(ALICE, &bin("twofactorctl"));
    cmd.args(["--bus", &env.address, "disable"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut stderr = child.stderr.take().expect("stderr");
    // The prompt is written once the program waits for its code (setpriv has exec'd by then:
    // the pid is twofactorctl's).
    let prompt = wait_for_prompt(&mut stderr, "Current code");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).expect("cmdline");
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert!(
        args.first().is_some_and(|a| a.ends_with("twofactorctl")),
        "{args:?}"
    );
    assert_eq!(args[1..], ["--bus", &env.address, "disable"], "{args:?}");
    // Any uid can read it: that is why the code must not be there.
    let as_bob = Command::new("setpriv")
        .args([
            &format!("--reuid={BOB}"),
            &format!("--regid={BOB}"),
            "--init-groups",
            "--",
        ])
        .args(["cat", &format!("/proc/{}/cmdline", child.id())])
        .output()
        .expect("setpriv cat");
    assert!(as_bob.status.success(), "{as_bob:?}");
    assert!(
        !String::from_utf8_lossy(&as_bob.stdout).contains(&code),
        "{as_bob:?}"
    );

    // Now the code, on standard input.
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(format!("{code}\n").as_bytes())
        .expect("write code");
    drop(stdin);
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).expect("stderr");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{prompt}{rest} {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!enrolled(&env, ALICE), "disable with the code from stdin");
    // No code in what was printed either.
    assert!(!prompt.contains(&code) && !rest.contains(&code));
}

#[test]
fn end_of_input_instead_of_a_code_is_a_clear_error() {
    let env = Env::new("default_mode = \"optional\"\n");
    env.enroll(ALICE);
    // Standard input is /dev/null: no code.
    let r = env.ctl_as(ALICE, &["disable"], None);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("no code given"), "{r:?}");
    assert!(!r.stderr.contains("panicked"), "{r:?}");
    assert!(enrolled(&env, ALICE));
}

/// Runs twofactorctl as root with its standard output a pipe whose reading end is already
/// closed: every write fails with EPIPE.
fn with_closed_stdout(env: Option<&Env>, args: &[&str]) -> (Option<i32>, Option<i32>, String) {
    use std::os::unix::process::ExitStatusExt;
    let mut cmd = Command::new(bin("twofactorctl"));
    if let Some(env) = env {
        cmd.args(["--bus", &env.address]);
    }
    // The reading end is closed before the child starts: its first write fails, whatever the
    // timing (closing it after the spawn raced the child's writes into the pipe's buffer).
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn");
    drop(cmd);
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code(),
        out.status.signal(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let env = Env::new("default_mode = \"optional\"\n");
    env.enroll(ALICE);
    env.enroll(BOB);
    for args in [
        &["admin", "show", ALICE][..],
        &["admin", "audit"],
        &["--json", "admin", "audit"],
        &["admin", "list"],
    ] {
        let (code, signal, stderr) = with_closed_stdout(Some(&env), args);
        // As a process ended by SIGPIPE reports itself in a shell, and nothing on stderr.
        assert_eq!((code, signal), (Some(141), None), "{args:?}: {stderr}");
        assert_eq!(stderr, "", "{args:?}");
    }
    // Without a daemon too.
    let (code, _, stderr) = with_closed_stdout(None, &["completions", "bash"]);
    assert_eq!(code, Some(141), "{stderr}");
    assert_eq!(stderr, "");

    // A real pipeline: `| head -2` takes its lines, the rest ends quietly.
    let script = format!(
        "{} --bus '{}' admin audit | head -n 2; echo \"status=${{PIPESTATUS[0]}}\"",
        bin("twofactorctl").display(),
        env.address
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].contains(" enroll "), "{stdout}");
    // 0 when the two lines were all it wrote before head left, 141 otherwise.
    assert!(
        lines[2] == "status=0" || lines[2] == "status=141",
        "{stdout} {stderr}"
    );
}
