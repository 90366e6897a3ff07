//! The test kit: real parts in a private world.
//!
//! An [`Env`] is a private system-like `dbus-daemon` (with the shipped bus policy included), the
//! real `twofactord` on it with a temporary state directory and policy file, and PAM service
//! files that load the real `pam_twofactor.so`. Logins go through real libpam (`pamdrive`,
//! built on `pam_start_confdir`); codes come from `oathtool`; other callers are real uids
//! (`setpriv`). Nothing here touches the system's bus, PAM configuration or state, except that
//! [`ensure_test_accounts`] creates a few `tf-*` test users and groups.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repo")
        .to_path_buf()
}

/// The directory holding the built binaries (`target/debug`), found from the test executable
/// (which lives in `target/debug/deps`), so `CARGO_TARGET_DIR` is honoured.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// A built binary; panics with a hint if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` before the tests (make test does)",
        p.display()
    );
    p
}

/// Test accounts: (name, groups).
pub const ALICE: &str = "tf-alice";
/// A second ordinary user.
pub const BOB: &str = "tf-bob";
/// A member of the admin group `tf-admins`.
pub const CAROL: &str = "tf-carol";
/// Group of alice (used for group rules).
pub const WHEEL: &str = "tf-wheel";
/// Admin group (carol).
pub const ADMINS: &str = "tf-admins";

/// Creates the test users and groups if missing (needs root). Idempotent and safe to call from
/// parallel tests.
pub fn ensure_test_accounts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for g in [WHEEL, ADMINS] {
            if !ok(Command::new("getent").args(["group", g])) {
                run_checked(Command::new("groupadd").args(["--system", g]));
            }
        }
        for (u, groups) in [(ALICE, WHEEL), (BOB, ""), (CAROL, ADMINS)] {
            if !ok(Command::new("getent").args(["passwd", u])) {
                let mut c = Command::new("useradd");
                c.args(["--system", "--no-create-home", "--shell", "/bin/sh"]);
                if !groups.is_empty() {
                    c.args(["--groups", groups]);
                }
                c.arg(u);
                run_checked(&mut c);
            }
        }
    });
}

/// Makes the test process's login session one that `/proc` shows, as every real login's is.
///
/// A login program (sshd, login, a screen locker's session) is its session's leader or runs
/// under one. A test runner may instead start the tests in a session whose leader lives outside
/// this pid namespace (a container's CI runner): `/proc` then shows session 0, the module
/// rightly sends no session identity, and nothing is remembered. The test process then starts
/// a session of its own (setsid), once, before any login; the logins it runs are in that
/// session, as the logins of one terminal are. Panics if that is impossible.
pub fn ensure_visible_session() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: getsid/setsid only read or change this process's session; no memory is
        // involved.
        let sid = unsafe { libc::getsid(0) };
        if sid <= 0 || !Path::new(&format!("/proc/{sid}/stat")).exists() {
            // SAFETY: as above.
            let rc = unsafe { libc::setsid() };
            assert!(
                rc > 0,
                "cannot start a session of the test's own: {}",
                std::io::Error::last_os_error()
            );
        }
    });
}

fn ok(c: &mut Command) -> bool {
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn run_checked(c: &mut Command) {
    let out = c.output().expect("spawn");
    assert!(
        out.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// uid of a user through NSS.
pub fn uid_of(user: &str) -> u32 {
    let out = Command::new("id").args(["-u", user]).output().expect("id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("uid")
}

/// Unix time now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// If the current 30-second step ends within 3 seconds, waits for the next one, so that a
/// code computed now is checked in the same step.
pub fn wait_for_fresh_step() {
    let into = now() % 30;
    if into >= 27 {
        std::thread::sleep(Duration::from_secs((30 - into) as u64 + 1));
    }
}

/// A TOTP code from `oathtool` (independent of our code), at now + `offset` seconds.
pub fn oathtool(secret: &str, offset: i64) -> String {
    oathtool_with(secret, offset, &[])
}

/// `oathtool` with extra arguments (e.g. `--totp=sha256`, `--digits=8`).
pub fn oathtool_with(secret: &str, offset: i64, extra: &[&str]) -> String {
    let at = format!("@{}", now() + offset);
    let mut cmd = Command::new("oathtool");
    if !extra.iter().any(|a| a.starts_with("--totp")) {
        cmd.arg("--totp");
    }
    let out = cmd
        .args(extra)
        .args(["-b", secret, "-N", &at])
        .output()
        .expect("oathtool is installed (scripts/deps.sh installs it)");
    assert!(
        out.status.success(),
        "oathtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Output of a command, decoded.
#[derive(Debug, Clone)]
pub struct Out {
    /// Exit code (-1 if killed).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Out {
    fn from(o: Output) -> Out {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Parses stdout as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }

    /// Asserts success and returns self.
    pub fn ok(self) -> Out {
        assert_eq!(self.code, 0, "command failed: {self:?}");
        self
    }
}

/// One message the module showed, in order.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Shown {
    /// `prompt`, `prompt-echo`, `info`, `error` or `unexpected-prompt`.
    pub style: String,
    /// The text.
    pub text: String,
}

/// The result of one PAM authentication.
#[derive(Debug, Clone, Deserialize)]
pub struct PamResult {
    /// pam_authenticate's return code.
    pub rc: i32,
    /// pam_strerror of it.
    pub error: String,
    /// Everything the conversation saw.
    pub transcript: Vec<Shown>,
    /// Answers not asked for.
    pub answers_left: usize,
    /// Threads in the process before pam_start.
    pub threads_before: usize,
    /// After pam_authenticate returned.
    pub threads_after_auth: usize,
    /// After pam_end.
    pub threads_after_end: usize,
}

/// libpam return codes used in assertions.
pub mod rc {
    /// PAM_SUCCESS.
    pub const SUCCESS: i32 = 0;
    /// PAM_PERM_DENIED.
    pub const PERM_DENIED: i32 = 6;
    /// PAM_AUTH_ERR.
    pub const AUTH_ERR: i32 = 7;
    /// PAM_AUTHINFO_UNAVAIL.
    pub const AUTHINFO_UNAVAIL: i32 = 9;
    /// PAM_CONV_ERR.
    pub const CONV_ERR: i32 = 19;
    /// PAM_IGNORE.
    pub const IGNORE: i32 = 25;
}

impl PamResult {
    /// Number of prompts shown.
    pub fn prompts(&self) -> usize {
        self.transcript
            .iter()
            .filter(|s| s.style.starts_with("prompt"))
            .count()
    }

    /// Whether any message contains `needle`.
    pub fn said(&self, needle: &str) -> bool {
        self.transcript.iter().any(|s| s.text.contains(needle))
    }
}

/// libfaketime's preload library (Debian package faketime).
pub fn libfaketime() -> PathBuf {
    for dir in [
        "/usr/lib/x86_64-linux-gnu/faketime",
        "/usr/lib/aarch64-linux-gnu/faketime",
        "/usr/lib/faketime",
    ] {
        let p = Path::new(dir).join("libfaketime.so.1");
        if p.exists() {
            return p;
        }
    }
    panic!("libfaketime.so.1 not found (scripts/deps.sh installs faketime)");
}

/// The system's PAM module directory (for pam_permit.so).
pub fn pam_module(name: &str) -> PathBuf {
    for dir in [
        "/lib/x86_64-linux-gnu/security",
        "/usr/lib/x86_64-linux-gnu/security",
        "/lib/aarch64-linux-gnu/security",
        "/usr/lib/aarch64-linux-gnu/security",
        "/lib/security",
        "/usr/lib/security",
        "/lib64/security",
    ] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} not found");
}

/// A private world: bus, daemon, policy, state and PAM services.
pub struct Env {
    /// Root of everything (deleted on drop).
    pub dir: tempfile::TempDir,
    bus: Child,
    daemon: Option<Child>,
    /// The bus address.
    pub address: String,
    /// The policy file the daemon reads.
    pub policy: PathBuf,
    /// The daemon's state directory.
    pub state: PathBuf,
    /// The PAM service directory (pam_start_confdir).
    pub pamd: PathBuf,
    /// The daemon's stderr.
    pub daemon_log: PathBuf,
    /// The daemon's offline snapshot (`--offline-snapshot`). The services Env writes do not
    /// read it (`offline=none`); tests of the snapshot write services that do.
    pub offline: PathBuf,
    /// The key that seals the state (`--secret-key-file`), made in the world's directory as
    /// the package makes it (root, 0600); the next start uses whatever this says (`None`: no
    /// key, the state in clear).
    pub key_file: Option<PathBuf>,
    /// A program and arguments the daemon (as root) is started through, which must exec it in
    /// place (e.g. `unshare --net`, to give it a network of its own). Empty: started directly.
    pub daemon_wrapper: Vec<String>,
}

/// The bus configuration (`tests/private-bus.conf.in`, shared with the demo), with `extra`
/// rules after the shipped policy.
fn bus_config(socket: &Path, extra: &str) -> String {
    let shipped = repo().join("packaging/dbus/org.twofactor.TwoFactor1.conf");
    assert!(shipped.exists(), "{} is missing", shipped.display());
    include_str!("../private-bus.conf.in")
        .replace("@SOCKET@", &socket.display().to_string())
        .replace("@SHIPPED@", &shipped.display().to_string())
        .replace("@EXTRA@", extra)
}

/// Extra bus rules that let `user` own the daemon's name, as the shipped policy lets only root
/// and the daemon's user (for [`Env::with_bus_rules`]: an impostor, or the real daemon run as
/// an ordinary user).
pub fn may_own_the_name(user: &str) -> String {
    format!(
        "<policy user=\"{user}\"><allow own=\"{}\"/></policy>",
        twofactor_bus::BUS_NAME
    )
}

impl Env {
    /// A world with `policy` as the policy file, the daemon running.
    pub fn new(policy: &str) -> Env {
        Env::with_bus_rules(policy, "")
    }

    /// As [`Env::new`], with `extra` rules in the bus configuration (see [`may_own_the_name`]).
    pub fn with_bus_rules(policy: &str, extra: &str) -> Env {
        ensure_test_accounts();
        Env::without_test_accounts(policy, extra)
    }

    /// As [`Env::with_bus_rules`], without creating the `tf-*` test accounts (the benchmark
    /// brings its own users).
    pub fn without_test_accounts(policy: &str, extra: &str) -> Env {
        Env::build(policy, extra, None)
    }

    /// As [`Env::new`], the daemon given `key` (`--secret-key-file`) instead of a key of its
    /// own: the hosts of a fleet share one key.
    pub fn with_key(policy: &str, key: &Path) -> Env {
        ensure_test_accounts();
        Env::build(policy, "", Some(key))
    }

    fn build(policy: &str, extra: &str, key: Option<&Path>) -> Env {
        ensure_visible_session();
        let dir = tempfile::Builder::new()
            .prefix("twofactor-test-")
            .tempdir()
            .expect("tempdir");
        // Other uids must reach the bus socket; the state directory stays private.
        set_mode(dir.path(), 0o755);
        let socket = dir.path().join("bus");
        let conf = dir.path().join("bus.conf");
        std::fs::write(&conf, bus_config(&socket, extra)).expect("bus config");
        let mut bus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--nopidfile", "--print-address"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon is installed (scripts/deps.sh installs it)");
        let address = {
            use std::io::BufRead;
            let stdout = bus.stdout.take().expect("stdout");
            let mut line = String::new();
            std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .expect("bus address");
            line.trim().to_string()
        };
        assert!(address.starts_with("unix:"), "bad bus address {address:?}");
        let policy_path = dir.path().join("policy.toml");
        std::fs::write(&policy_path, policy).expect("policy");
        let state = dir.path().join("state");
        let pamd = dir.path().join("pam.d");
        std::fs::create_dir(&pamd).expect("pam.d");
        let daemon_log = dir.path().join("daemon.log");
        let offline = dir.path().join("offline");
        let key_file = match key {
            Some(k) => k.to_path_buf(),
            None => {
                let k = dir.path().join("store.key");
                run_checked(Command::new(bin("twofactord")).arg("genkey").arg(&k));
                k
            }
        };
        let mut env = Env {
            dir,
            bus,
            daemon: None,
            address,
            policy: policy_path,
            state,
            pamd,
            daemon_log,
            offline,
            key_file: Some(key_file),
            daemon_wrapper: Vec::new(),
        };
        env.write_pam_services();
        env.start_daemon();
        env
    }

    fn write_pam_services(&self) {
        let module = bin("libpam_twofactor.so");
        let permit = pam_module("pam_permit.so");
        let services = [
            ("tf", "timeout=5 offline=none".to_string()),
            (
                "tf-open",
                "timeout=5 failmode=open offline=none".to_string(),
            ),
            ("tf-badarg", "timeout=5 failmode=sometimes".to_string()),
            ("tf-t2", "timeout=2 offline=none".to_string()),
        ];
        for (name, extra) in services {
            let text = format!(
                "auth required {} bus={} {extra}\nauth required {}\naccount required {}\n",
                module.display(),
                self.address,
                permit.display(),
                permit.display()
            );
            std::fs::write(self.pamd.join(name), text).expect("service");
        }
        // The module alone: its own return code is what pam_authenticate reports.
        let alone = format!(
            "auth required {} bus={} timeout=5 offline=none\n",
            module.display(),
            self.address
        );
        std::fs::write(self.pamd.join("tf-alone"), alone).expect("service");
        std::fs::write(
            self.pamd.join("other"),
            format!("auth required {}\n", pam_module("pam_deny.so").display()),
        )
        .expect("other");
    }

    /// Starts the daemon and waits until it owns its name.
    pub fn start_daemon(&mut self) {
        self.start_daemon_at(None);
    }

    /// Restarts the daemon with its clock moved by `offset` (libfaketime, e.g. "+8d"), or back
    /// to the real clock with `None`. State is kept.
    pub fn restart_daemon_at(&mut self, offset: Option<&str>) {
        self.stop_daemon();
        self.start_daemon_at(offset);
    }

    fn start_daemon_at(&mut self, offset: Option<&str>) {
        self.start_daemon_as_at("root", offset);
    }

    /// Starts the daemon as `user` (its state directory is made theirs), and waits until it
    /// owns its name (the bus must let `user` own it: [`may_own_the_name`]).
    pub fn start_daemon_as(&mut self, user: &str) {
        if user != "root" {
            std::fs::create_dir_all(&self.state).expect("state dir");
            let uid = uid_of(user);
            // What a daemon of another uid left there (the database) becomes theirs too.
            let entries = std::fs::read_dir(&self.state).expect("state dir");
            for path in entries.map(|e| e.expect("entry").path()) {
                std::os::unix::fs::chown(&path, Some(uid), Some(uid)).expect("chown state");
            }
            std::os::unix::fs::chown(&self.state, Some(uid), Some(uid)).expect("chown state");
            set_mode(&self.state, 0o700);
            // The key too: the daemon accepts a key file of its own uid (as a credential).
            if let Some(key) = &self.key_file {
                std::os::unix::fs::chown(key, Some(uid), Some(uid)).expect("chown key");
            }
        }
        self.start_daemon_as_at(user, None);
    }

    /// The running daemon's pid.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    fn start_daemon_as_at(&mut self, user: &str, offset: Option<&str>) {
        if let Err(e) = self.try_start_daemon_as_at(user, offset) {
            panic!("{e}");
        }
    }

    /// Starts the daemon as root and waits until it owns its name; `Err` with its log if it
    /// exits instead (a refusal to start).
    pub fn try_start_daemon(&mut self) -> Result<(), String> {
        self.try_start_daemon_as_at("root", None)
    }

    fn try_start_daemon_as_at(&mut self, user: &str, offset: Option<&str>) -> Result<(), String> {
        assert!(self.daemon.is_none(), "daemon already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.daemon_log)
            .expect("log");
        // setpriv execs the daemon in place: the child's pid is the daemon's.
        let mut cmd = match self.daemon_wrapper.split_first() {
            None => as_user(user, &bin("twofactord")),
            Some((program, args)) => {
                assert_eq!(user, "root", "a wrapped daemon runs as root");
                let mut c = Command::new(program);
                c.args(args).arg(bin("twofactord"));
                c
            }
        };
        if let Some(o) = offset {
            // libfaketime preloaded into the daemon itself (the `faketime` wrapper would fork,
            // and the pid we stop would not be the daemon's).
            cmd.env("LD_PRELOAD", libfaketime()).env("FAKETIME", o);
        }
        cmd.args(["--bus", &self.address])
            .arg("--policy")
            .arg(&self.policy)
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--offline-snapshot")
            .arg(&self.offline);
        if let Some(key) = &self.key_file {
            cmd.arg("--secret-key-file").arg(key);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("twofactord");
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.name_owned() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.daemon.as_mut().map(|c| c.try_wait()) {
                self.daemon = None;
                return Err(format!("twofactord exited with {status}: {}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("twofactord did not take its bus name: {}", self.log());
    }

    /// Stops the daemon (SIGTERM) and waits for it.
    pub fn stop_daemon(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
            // A daemon that still owns the name would answer for the next one.
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.name_owned() {
                assert!(
                    Instant::now() < deadline,
                    "the stopped daemon still owns its name"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Kills the daemon with SIGKILL (no cleanup, no flush: a crash or a power cut of the
    /// process) and waits until its bus name is released. Start it again with
    /// [`Env::start_daemon`] or [`Env::restart_daemon_at`].
    pub fn kill_daemon(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.name_owned() {
                assert!(
                    Instant::now() < deadline,
                    "the killed daemon still owns its name"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Stops and starts the daemon (state must survive).
    pub fn restart_daemon(&mut self) {
        self.stop_daemon();
        self.start_daemon();
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the daemon: a hung daemon.
    pub fn freeze_daemon(&self, frozen: bool) {
        if let Some(c) = &self.daemon {
            let sig = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// Sends SIGHUP to the daemon (policy reload).
    pub fn hup_daemon(&self) {
        if let Some(c) = &self.daemon {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGHUP) };
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.daemon_log).unwrap_or_default()
    }

    /// Whether some connection owns the daemon's bus name.
    pub fn name_owned(&self) -> bool {
        let out = Command::new("busctl")
            .arg(format!("--address={}", self.address))
            .args([
                "call",
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "NameHasOwner",
                "s",
                twofactor_bus::BUS_NAME,
            ])
            .output();
        matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).trim() == "b true")
    }

    /// Replaces the policy file (does not reload).
    pub fn write_policy(&self, text: &str) {
        std::fs::write(&self.policy, text).expect("policy");
    }

    /// `twofactorctl --bus ADDRESS ARGS…` as root.
    pub fn ctl(&self, args: &[&str]) -> Out {
        self.ctl_as("root", args, None)
    }

    /// `twofactorctl` as `user` (through setpriv), with optional standard input.
    pub fn ctl_as(&self, user: &str, args: &[&str], stdin: Option<&str>) -> Out {
        let mut cmd = as_user(user, &bin("twofactorctl"));
        cmd.args(["--bus", &self.address]).args(args);
        run_with_stdin(cmd, stdin)
    }

    /// `busctl call` on the daemon's object as `user`.
    pub fn busctl_as(
        &self,
        user: &str,
        interface: &str,
        method: &str,
        sig_and_args: &[&str],
    ) -> Out {
        let mut cmd = as_user(user, Path::new("/usr/bin/busctl"));
        cmd.arg(format!("--address={}", self.address))
            .args([
                "call",
                twofactor_bus::BUS_NAME,
                twofactor_bus::OBJECT_PATH,
                &format!("org.twofactor.TwoFactor1.{interface}"),
                method,
            ])
            .args(sig_and_args);
        run_with_stdin(cmd, None)
    }

    /// Enrolls `user` with TOTP as that user (begin, then confirm with an oathtool code given
    /// on standard input).
    /// `admin audit --user USER`: the user's audit records, as JSON objects.
    pub fn audit_of(&self, user: &str) -> Vec<serde_json::Value> {
        match self
            .ctl(&["--json", "admin", "audit", "--user", user])
            .ok()
            .json()
        {
            serde_json::Value::Array(records) => records,
            other => panic!("admin audit: not a list: {other}"),
        }
    }

    /// `recovery regenerate` as `user`, proven with `code` (a code of the set before); asserts
    /// it was accepted and returns the first code of the new set.
    pub fn regenerate_recovery(&self, user: &str, code: &str) -> String {
        let r = self
            .ctl_as(
                user,
                &["--json", "recovery", "regenerate"],
                Some(&format!("{code}\n")),
            )
            .ok()
            .json();
        assert_eq!(r["accepted"], true, "{r}");
        r["recovery_codes"][0]
            .as_str()
            .expect("a new set")
            .to_string()
    }

    pub fn enroll(&self, user: &str) -> Enrolled {
        let begin = self
            .ctl_as(user, &["--json", "enroll", "totp", "--begin"], None)
            .ok()
            .json();
        let secret = begin["secret"].as_str().expect("secret").to_string();
        let id = begin["enrollment_id"].as_str().expect("id").to_string();
        wait_for_fresh_step();
        let code = oathtool(&secret, 0);
        // The code on standard input: never on a command line.
        let done = self
            .ctl_as(
                user,
                &["--json", "enroll", "totp", "--confirm", &id],
                Some(&format!("{code}\n")),
            )
            .ok()
            .json();
        assert_eq!(done["accepted"], true, "{done}");
        let recovery = done["recovery_codes"]
            .as_array()
            .expect("codes")
            .iter()
            .map(|c| c.as_str().expect("code").to_string())
            .collect();
        Enrolled {
            secret,
            recovery,
            first_code: code,
        }
    }

    /// One PAM authentication of `user` through service `service`, run as root.
    pub fn login(&self, service: &str, user: &str, answers: &[&str]) -> PamResult {
        self.login_full("root", service, user, None, answers)
    }

    /// A PAM authentication run by `caller` (a uid other than root tests authorization), with an
    /// optional remote host.
    pub fn login_full(
        &self,
        caller: &str,
        service: &str,
        user: &str,
        rhost: Option<&str>,
        answers: &[&str],
    ) -> PamResult {
        self.login_tty(caller, service, user, rhost, None, answers)
    }

    /// As [`Env::login_full`], with a PAM_TTY.
    pub fn login_tty(
        &self,
        caller: &str,
        service: &str,
        user: &str,
        rhost: Option<&str>,
        tty: Option<&str>,
        answers: &[&str],
    ) -> PamResult {
        self.login_with(
            &LoginOptions {
                caller,
                rhost,
                tty,
                ..LoginOptions::default()
            },
            service,
            user,
            answers,
        )
    }

    /// A PAM authentication with every option of `pamdrive`.
    pub fn login_with(
        &self,
        opts: &LoginOptions<'_>,
        service: &str,
        user: &str,
        answers: &[&str],
    ) -> PamResult {
        let LoginOptions {
            caller,
            rhost,
            tty,
            silent,
            new_session,
        } = *opts;
        let mut cmd = as_user(caller, &bin("pamdrive"));
        if new_session {
            use std::os::unix::process::CommandExt;
            // SAFETY: setsid(2) is async-signal-safe, and the forked child (not yet a process
            // group leader) calls nothing else before exec.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::setsid() == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                })
            };
        }
        cmd.arg(&self.pamd).arg(service).arg(user);
        if silent {
            cmd.arg("--silent");
        }
        if let Some(r) = rhost {
            cmd.args(["--rhost", r]);
        }
        if let Some(t) = tty {
            cmd.args(["--tty", t]);
        }
        cmd.args(answers);
        let out = run_with_stdin(cmd, None);
        assert_eq!(out.code, 0, "pamdrive failed: {out:?}");
        // The module never writes to the application's stdout or stderr.
        assert_eq!(out.stderr, "", "the module wrote to stderr");
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("pamdrive output ({e}): {out:?}"))
    }
}

/// Options of one PAM authentication ([`Env::login_with`]).
#[derive(Debug, Clone, Copy)]
pub struct LoginOptions<'a> {
    /// Who runs the PAM stack (`root`, or a test user: authorization).
    pub caller: &'a str,
    /// PAM_RHOST.
    pub rhost: Option<&'a str>,
    /// PAM_TTY.
    pub tty: Option<&'a str>,
    /// pam_authenticate(PAM_SILENT).
    pub silent: bool,
    /// Run in a new session (setsid): another session leader than the test's.
    pub new_session: bool,
}

impl Default for LoginOptions<'_> {
    fn default() -> Self {
        LoginOptions {
            caller: "root",
            rhost: None,
            tty: None,
            silent: false,
            new_session: false,
        }
    }
}

/// A software security key for the tests (dev-only `twofactor-softkey`): its state file, which
/// the PAM module (through `libpam_twofactor_softkey.so`), `softkey-ctl` and the test share.
pub struct TestKey {
    /// The key.
    pub key: twofactor_softkey::SoftKey,
    /// The PAM service whose module uses this key.
    pub service: String,
}

impl TestKey {
    /// The key's state file.
    pub fn path(&self) -> &Path {
        self.key.path()
    }

    /// Changes the key's state (knobs, PIN, counter), keeping the file usable by every uid.
    pub fn set(&self, change: impl FnOnce(&mut twofactor_softkey::SoftKeyState)) {
        self.key.update(change).expect("soft key update");
        open_up(self.key.path());
    }
}

/// Soft keys are shared by processes of several uids (the module runs as root, `softkey-ctl`
/// as the user): keep the state file and its lock readable and writable by all (tests only).
fn open_up(path: &Path) {
    set_mode(path, 0o666);
    let lock = PathBuf::from(format!("{}.lock", path.display()));
    if !lock.exists() {
        std::fs::write(&lock, b"").expect("lock file");
    }
    set_mode(&lock, 0o666);
}

impl Env {
    /// A new software key named `name` (ES256 unless `ed25519`), and a PAM service `tf-key-NAME`
    /// whose module uses it.
    pub fn soft_key(&self, name: &str, ed25519: bool) -> TestKey {
        let dir = self.dir.path().join("keys");
        if !dir.exists() {
            std::fs::create_dir(&dir).expect("keys dir");
            set_mode(&dir, 0o777);
        }
        let path = dir.join(format!("{name}.json"));
        let alg = if ed25519 {
            twofactor_softkey::Algorithm::Ed25519
        } else {
            twofactor_softkey::Algorithm::Es256
        };
        let key = twofactor_softkey::SoftKey::create(&path, alg).expect("soft key");
        open_up(&path);
        let service = format!("tf-key-{name}");
        self.write_key_service(&service, &path, "");
        TestKey { key, service }
    }

    /// Writes PAM service `service` with the soft-key build of the module using `keyfile`.
    pub fn write_key_service(&self, service: &str, keyfile: &Path, extra: &str) {
        let module = bin("libpam_twofactor_softkey.so");
        let permit = pam_module("pam_permit.so");
        let text = format!(
            "auth required {} bus={} timeout=5 offline=none softkey={} {extra}
auth required {}
account required {}
",
            module.display(),
            self.address,
            keyfile.display(),
            permit.display(),
            permit.display()
        );
        std::fs::write(self.pamd.join(service), text).expect("service");
    }

    /// Runs `softkey-ctl` (the CLI's key flows with the soft key) as `user`.
    pub fn softkey_ctl(&self, user: &str, key: &TestKey, args: &[&str]) -> serde_json::Value {
        self.softkey_ctl_with_proof(user, key, args, None)
    }

    /// `softkey-ctl` with a proof (a code, a recovery code or a touch token) on its standard
    /// input, as `twofactorctl enroll key` reads it.
    pub fn softkey_ctl_with_proof(
        &self,
        user: &str,
        key: &TestKey,
        args: &[&str],
        proof: Option<&str>,
    ) -> serde_json::Value {
        let mut cmd = as_user(user, &bin("softkey-ctl"));
        cmd.arg(&self.address).arg(key.path()).args(args);
        let input = proof.map(|p| format!("{p}\n"));
        let out = run_with_stdin(cmd, input.as_deref());
        open_up(key.path());
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("softkey-ctl output ({e}): {out:?}"))
    }

    /// Enrolls `key` as `name` for `user` (first factor: no proof); returns the recovery codes.
    pub fn enroll_key(&self, user: &str, key: &TestKey, name: &str) -> Vec<String> {
        let v = self.softkey_ctl(user, key, &["enroll", name]);
        assert_eq!(v["accepted"], true, "{v}");
        v["recovery_codes"]
            .as_array()
            .expect("codes")
            .iter()
            .map(|c| c.as_str().expect("code").to_string())
            .collect()
    }

    /// A login through `key`'s service (local unless `rhost`), run as root.
    pub fn key_login(
        &self,
        key: &TestKey,
        user: &str,
        rhost: Option<&str>,
        answers: &[&str],
    ) -> PamResult {
        let r = self.login_full("root", &key.service, user, rhost, answers);
        open_up(key.path());
        r
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop_daemon();
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

/// A running `flood` (tests/src/bin/flood.rs): bus connections of one uid holding logins or key
/// proofs open until dropped.
pub struct Flood {
    child: Child,
    /// Its counts: accepted, refused, other errors.
    pub result: serde_json::Value,
}

impl Flood {
    /// Starts `flood` as `user` with `args` (`login CONNECTIONS CALLS USER`, `proof CONNECTIONS
    /// CALLS`) and waits for its counts.
    pub fn start(env: &Env, user: &str, args: &[&str]) -> Flood {
        use std::io::BufRead;
        let mut child = as_user(user, &bin("flood"))
            .arg(&env.address)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("flood");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("flood output");
        let result: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("flood output ({e}): {line:?}\n{}", env.log()));
        Flood { child, result }
    }

    /// One of its counts (`accepted`, `refused`).
    pub fn count(&self, what: &str) -> u64 {
        self.result[what].as_u64().expect("count")
    }

    /// Closes its input: it drops its connections and exits.
    pub fn stop(mut self) {
        drop(self.child.stdin.take());
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "flood: {status}");
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// What enrollment produced.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// Base32 secret.
    pub secret: String,
    /// The 10 recovery codes.
    pub recovery: Vec<String>,
    /// The code used to confirm (already spent).
    pub first_code: String,
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A command run as `user` (root: as is).
pub fn as_user(user: &str, program: &Path) -> Command {
    if user == "root" {
        return Command::new(program);
    }
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={user}"),
        &format!("--regid={user}"),
        "--init-groups",
        "--",
    ])
    .arg(program);
    c
}

fn run_with_stdin(mut cmd: Command, stdin: Option<&str>) -> Out {
    use std::io::Write;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    if let Some(input) = stdin {
        let mut s = child.stdin.take().expect("stdin");
        let _ = s.write_all(input.as_bytes());
    }
    Out::from(child.wait_with_output().expect("wait"))
}

/// pam_u2f authfiles as `pamu2fcfg` writes them, from credentials made on a soft key (for the
/// `admin import pam-u2f` tests).
pub mod pam_u2f {
    use super::TestKey;
    use std::time::Duration;
    use twofactor_key::Authenticator;

    /// This host's default pam_u2f origin and rp id, `pam://HOSTNAME`.
    pub fn default_rp_id() -> String {
        format!(
            "pam://{}",
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .expect("hostname")
                .trim()
        )
    }

    /// Registers a credential on `key` for this host's default pam_u2f rp id; its
    /// authenticatorData.
    pub fn credential(key: &TestKey, user: &str) -> Vec<u8> {
        let rp_id = default_rp_id();
        key.key
            .register(
                &twofactor_key::RegistrationRequest {
                    rp_id: &rp_id,
                    client_data: b"{}",
                    user_id: user.as_bytes(),
                    user_name: user,
                    exclude_credential_ids: &[],
                    algorithms: &[-7],
                    user_verification: twofactor_key::UserVerification::Discouraged,
                    timeout: Duration::from_secs(5),
                },
                &mut |_: &str| None,
            )
            .expect("register")
            .authenticator_data
    }

    /// A pam_u2f authfile line (`user:keyhandle,pubkey,es256,+presence`) for a credential, from
    /// its registration authenticatorData: base64 key handle and base64 raw x||y public key.
    pub fn line(user: &str, auth_data: &[u8]) -> String {
        // authData: rpIdHash(32) flags(1) counter(4) aaguid(16) idlen(2) id COSE-key
        let id_len = usize::from(u16::from_be_bytes([auth_data[53], auth_data[54]]));
        let id = &auth_data[55..55 + id_len];
        let cose = &auth_data[55 + id_len..];
        // x (-2, 0x21) and y (-3, 0x22) of the EC2 COSE key, each a 32-byte byte string.
        let coordinate = |label: u8| -> &[u8] {
            let pos = cose
                .windows(3)
                .position(|w| w == [label, 0x58, 0x20])
                .expect("coordinate");
            &cose[pos + 3..pos + 35]
        };
        let xy = [coordinate(0x21), coordinate(0x22)].concat();
        format!("{user}:{},{},es256,+presence", b64(id), b64(&xy))
    }

    /// Standard base64 with padding.
    pub fn b64(bytes: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

pub mod pam;
pub mod postgres;
pub mod sshd;
