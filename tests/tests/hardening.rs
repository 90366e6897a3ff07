//! Hardening around the daemon: the PAM module talks only to a daemon that runs as root or as
//! the daemon's own user, takes nonsense from it as a denial (never as "unreachable", which
//! failmode=open would pass), and the daemon keeps its memory out of core dumps and out of
//! reach of other processes of its user. Real libpam, the real module, a real bus.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::BufRead;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use twofactor_tests::*;

const OPTIONAL: &str = "default_mode = \"optional\"\n";

/// `fake-daemon` (tests/src/bin) owning the daemon's name as some user; killed on drop.
struct FakeDaemon {
    child: Child,
    record: PathBuf,
}

impl FakeDaemon {
    /// Starts it as `user` and waits until it owns the name (it says `ready`).
    fn start(env: &Env, user: &str, record: &Path) -> FakeDaemon {
        FakeDaemon::start_answering(env, user, record, "honest")
    }

    /// As [`FakeDaemon::start`], answering as `mode` says (see tests/src/bin/fake-daemon.rs).
    fn start_answering(env: &Env, user: &str, record: &Path, mode: &str) -> FakeDaemon {
        // The fake writes one line per call it receives; it may run as another uid.
        std::fs::write(record, b"").expect("record file");
        std::fs::set_permissions(record, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .expect("chmod record");
        let mut child = as_user(user, &bin("fake-daemon"))
            .arg(&env.address)
            .arg(record)
            .arg(mode)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("fake-daemon");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("fake-daemon output");
        assert_eq!(
            line.trim(),
            "ready",
            "fake-daemon as {user} did not take the name"
        );
        FakeDaemon {
            child,
            record: record.to_path_buf(),
        }
    }

    /// The calls it received.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.record)
            .expect("record")
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Kills it and waits until the bus has released the name.
    fn stop(mut self, env: &Env) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        while env.name_owned() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_module_sends_nothing_to_a_name_owner_that_is_not_root_or_the_daemon_user() {
    // A bus whose policy (wrongly) lets bob own the daemon's name.
    let mut env = Env::with_bus_rules(OPTIONAL, &may_own_the_name(BOB));
    env.stop_daemon();
    let impostor = FakeDaemon::start(&env, BOB, &env.dir.path().join("impostor.calls"));
    // Under both failmodes, and with a password module after it: a denial, not "unreachable"
    // (which failmode=open would pass), no prompt, and the impostor got no call at all.
    for service in ["tf", "tf-open", "tf-alone"] {
        let r = env.login(service, ALICE, &["123456"]);
        assert_eq!((r.rc, r.prompts()), (rc::AUTH_ERR, 0), "{service}: {r:?}");
    }
    assert_eq!(impostor.calls(), Vec::<String>::new());
    impostor.stop(&env);

    // The same fake run by root is a trusted owner: the module talks to it, so the refusal
    // above came from the owner's uid and nothing else.
    let trusted = FakeDaemon::start(&env, "root", &env.dir.path().join("trusted.calls"));
    let r = env.login("tf", ALICE, &["123456"]);
    assert_eq!((r.rc, r.prompts()), (rc::SUCCESS, 1), "{r:?}");
    assert_eq!(
        trusted.calls(),
        [format!("begin {ALICE}"), "continue 123456".into()]
    );
    trusted.stop(&env);

    // No owner at all stays "unreachable" (failmode=open passes it).
    let r = env.login("tf-alone", ALICE, &[]);
    assert_eq!(r.rc, rc::AUTHINFO_UNAVAIL, "{r:?}");
}

#[test]
fn the_real_daemon_run_by_an_ordinary_user_is_not_trusted_and_is_not_dumpable() {
    let mut env = Env::with_bus_rules(OPTIONAL, &may_own_the_name(BOB));
    env.stop_daemon();
    env.start_daemon_as(BOB);
    let pid = env.daemon_pid().expect("daemon pid");
    let proc = PathBuf::from(format!("/proc/{pid}"));
    // It really runs as bob...
    let status = std::fs::read_to_string(proc.join("status")).expect("status");
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line");
    let bob = uid_of(BOB);
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|u| u == bob.to_string()),
        "{uid_line}"
    );
    // ...yet its /proc files belong to root: the kernel does that for a process whose
    // "dumpable" attribute is off (proc(5)), which also means no core file and no ptrace or
    // /proc/PID/mem access by bob's other processes.
    for f in ["mem", "environ", "status", "maps"] {
        let meta = std::fs::metadata(proc.join(f)).expect("proc file");
        assert_eq!(meta.uid(), 0, "/proc/{pid}/{f} of a non-dumpable daemon");
    }
    // Any other process of bob's is dumpable: its /proc files are bob's. (A shell that has
    // said it runs: it has long finished exec, which makes a process dumpable again after
    // setpriv changed its uid.)
    let mut other = as_user(BOB, Path::new("/bin/sh"))
        .args(["-c", "echo ready; read line"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sh");
    let mut line = String::new();
    std::io::BufReader::new(other.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("sh output");
    assert_eq!(line.trim(), "ready");
    let meta = std::fs::metadata(format!("/proc/{}/mem", other.id())).expect("proc file");
    drop(other.stdin.take());
    let _ = other.wait();
    assert_eq!(meta.uid(), bob, "an ordinary process of bob");

    // And the module does not talk to a daemon that runs as bob.
    let r = env.login("tf-open", ALICE, &["123456"]);
    assert_eq!((r.rc, r.prompts()), (rc::AUTH_ERR, 0), "{r:?}");
}

#[test]
fn a_trusted_owner_answering_nonsense_is_a_denial_under_both_failmodes() {
    let mut env = Env::new(OPTIONAL);
    env.stop_daemon();
    // Enough answers for the longest conversation the module holds (32 steps), so that the
    // endless one ends on the module's limit, not on the user running out of answers.
    let answers = ["123456"; 40];
    // (mode, prompts the user sees)
    for (mode, prompts) in [
        ("bad-step", 0),
        ("wrong-type", 0),
        ("odd-error", 0),
        ("bad-outcome", 1),
        ("endless", 32),
    ] {
        let record = env.dir.path().join(format!("{mode}.calls"));
        let fake = FakeDaemon::start_answering(&env, "root", &record, mode);
        // failmode=closed alone and with a password module after it, and failmode=open with
        // a password module after it (a pass would be PAM_SUCCESS there).
        for service in ["tf-alone", "tf", "tf-open"] {
            let r = env.login(service, ALICE, &answers);
            assert_eq!(
                (r.rc, r.prompts()),
                (rc::AUTH_ERR, prompts),
                "{mode} {service}: {r:?}"
            );
        }
        // The module did talk to it: the answer decided, not silence.
        let calls = fake.calls();
        assert_eq!(
            calls
                .iter()
                .filter(|c| **c == format!("begin {ALICE}"))
                .count(),
            3,
            "{mode}: {calls:?}"
        );
        fake.stop(&env);
    }
    // A daemon that says it cannot decide fails the login as unavailable under both failmodes:
    // never ignored (pam_twofactor(8)).
    let record = env.dir.path().join("unavailable.calls");
    let fake = FakeDaemon::start_answering(&env, "root", &record, "unavailable");
    for service in ["tf-alone", "tf", "tf-open"] {
        let r = env.login(service, ALICE, &answers);
        assert_eq!(
            (r.rc, r.prompts()),
            (rc::AUTHINFO_UNAVAIL, 1),
            "unavailable {service}: {r:?}"
        );
    }
    fake.stop(&env);
    // The control: the honest fake (as root) is believed, under failmode=open too.
    let record = env.dir.path().join("honest.calls");
    let fake = FakeDaemon::start(&env, "root", &record);
    let r = env.login("tf-open", ALICE, &answers);
    assert_eq!((r.rc, r.prompts()), (rc::SUCCESS, 1), "{r:?}");
    fake.stop(&env);
}
