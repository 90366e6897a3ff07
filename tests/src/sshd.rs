//! A real OpenSSH sshd on 127.0.0.1 for end-to-end tests.
//!
//! [`Sshd::start`] runs `/usr/sbin/sshd -D -e -f CONFIG` with its own configuration, host key,
//! authorized-keys files and pid file in a temporary directory, listening on a free port of
//! 127.0.0.1. Its PAM service comes from `pam_wrapper` (`LD_PRELOAD=libpam_wrapper.so
//! PAM_WRAPPER=1 PAM_WRAPPER_SERVICE_DIR=…`), so the service file `sshd` lives in the temporary
//! directory and `/etc/pam.d` is never touched; the service file loads the real
//! `pam_twofactor.so` with `bus=` pointing at the [`Env`]'s private bus (sshd clears the
//! environment of its PAM process, so the address must be a module argument).
//!
//! The client is the real `ssh`, driven by an `expect` script that answers the
//! `Password:` and `Verification code:` prompts ([`Sshd::ssh`]). Everything is bounded by
//! timeouts; sshd is stopped when the [`Sshd`] is dropped.
//!
//! Outside the temporary directory this touches only `/run/sshd` (created if missing: sshd's
//! privilege-separation directory) and, for password logins, the dedicated test user
//! [`SSH_PW_USER`], whose password is set to a random one per test process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{Env, bin, ensure_test_accounts, pam_module};

/// The sshd binary (started by absolute path: sshd re-executes itself by that path).
pub const SSHD: &str = "/usr/sbin/sshd";

/// A test user for password + code logins, created by [`ensure_ssh_password_user`]. It is a
/// separate user so that the shared `tf-*` users keep having no password.
pub const SSH_PW_USER: &str = "tf-sshpw";

/// What the remote command prints: `echo twofactor-ok-$((40+2))`, so the literal text appears
/// only if the command really ran on the server (it is not in the command line itself).
pub const MARKER: &str = "twofactor-ok-42";
const REMOTE_COMMAND: &str = "echo twofactor-ok-$((40+2))";

/// How sshd authenticates users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `AuthenticationMethods publickey,keyboard-interactive`; the PAM stack is our module only.
    PublicKeyAndCode,
    /// `AuthenticationMethods keyboard-interactive`; the PAM stack is `pam_unix` (the
    /// password, `requisite`) and then our module.
    PasswordAndCode,
}

/// A running sshd (stopped on drop).
pub struct Sshd {
    /// Configuration, keys, PAM service directory, logs (deleted on drop).
    pub dir: tempfile::TempDir,
    /// The port on 127.0.0.1.
    pub port: u16,
    /// sshd's stderr (`-e`, `LogLevel VERBOSE`).
    pub log_path: PathBuf,
    /// The client's private key (authorized for users with [`Sshd::authorize`]).
    pub client_key: PathBuf,
    child: Option<Child>,
    /// The PAM service file's text (identifies pam_wrapper's copies of it).
    service: String,
}

/// The result of one `ssh` run through the expect driver.
#[derive(Debug, Clone)]
pub struct SshResult {
    /// ssh's exit code (255 for refused authentication; 124 if the driver timed out).
    pub code: i32,
    /// Everything the client printed (one pty: remote stdout and ssh's messages).
    pub output: String,
    /// `Password:` prompts answered.
    pub password_prompts: usize,
    /// `Verification code:` prompts answered.
    pub code_prompts: usize,
}

impl SshResult {
    /// The remote command ran (and printed [`MARKER`]) and ssh exited 0.
    pub fn logged_in(&self) -> bool {
        self.code == 0 && self.output.contains(MARKER)
    }

    /// The server refused: non-zero exit, no remote output, "Permission denied".
    pub fn refused(&self) -> bool {
        self.code != 0 && !self.output.contains(MARKER) && self.output.contains("Permission denied")
    }
}

/// One `ssh` invocation being prepared (see [`Sshd::ssh`]).
pub struct Ssh<'a> {
    sshd: &'a Sshd,
    user: String,
    methods: String,
    password: Option<String>,
    codes: Vec<String>,
    key: bool,
}

impl Ssh<'_> {
    /// Answers `Password:` prompts with this.
    pub fn password(mut self, p: &str) -> Self {
        self.password = Some(p.to_string());
        self
    }

    /// Answers `Verification code:` prompts with these in order; the last one is repeated.
    pub fn codes(mut self, codes: &[&str]) -> Self {
        self.codes = codes.iter().map(|c| c.to_string()).collect();
        self
    }

    /// `PreferredAuthentications` (default `publickey,keyboard-interactive`).
    pub fn methods(mut self, m: &str) -> Self {
        self.methods = m.to_string();
        self
    }

    /// Whether to offer the client key (default yes).
    pub fn with_key(mut self, yes: bool) -> Self {
        self.key = yes;
        self
    }

    /// Runs `ssh … USER@127.0.0.1 COMMAND` under expect, bounded by timeouts.
    pub fn run(self) -> SshResult {
        let script = self.sshd.dir.path().join("drive.exp");
        if !script.exists() {
            std::fs::write(&script, EXPECT_SCRIPT).expect("expect script");
        }
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", "90", "expect", "-f"])
            .arg(&script)
            .arg("--");
        cmd.arg("ssh").args([
            "-F",
            "/dev/null",
            "-T",
            "-p",
            &self.sshd.port.to_string(),
            "-o",
            "BatchMode=no",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "IdentityAgent=none",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "PasswordAuthentication=no",
            "-o",
            "KbdInteractiveAuthentication=yes",
            "-o",
            "NumberOfPasswordPrompts=1",
            "-o",
            &format!("PreferredAuthentications={}", self.methods),
        ]);
        if self.key {
            cmd.arg("-i").arg(&self.sshd.client_key);
        } else {
            cmd.args(["-o", "PubkeyAuthentication=no"]);
        }
        cmd.arg(format!("{}@127.0.0.1", self.user))
            .arg(REMOTE_COMMAND);
        cmd.env("TF_SSH_PASSWORD", self.password.as_deref().unwrap_or(""))
            .env("TF_SSH_CODES", self.codes.join(" "))
            .stdin(Stdio::null());
        let out = cmd.output().expect("expect is installed (scripts/deps.sh)");
        let output = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let count = |key: &str| -> usize {
            output
                .lines()
                .filter_map(|l| l.trim().strip_prefix("EXPECT-PROMPTS "))
                .flat_map(|l| l.split_whitespace())
                .filter_map(|kv| kv.strip_prefix(key))
                .filter_map(|v| v.parse().ok())
                .next_back()
                .unwrap_or_else(|| panic!("no prompt count from the driver: {output}"))
        };
        SshResult {
            code: out.status.code().unwrap_or(-1),
            password_prompts: count("password="),
            code_prompts: count("code="),
            output,
        }
    }
}

/// The expect driver: `expect -f drive.exp -- ssh ARGS…`; answers from `TF_SSH_PASSWORD` and
/// `TF_SSH_CODES` (space-separated, the last one repeated); prints the prompt counts and exits
/// with ssh's exit status.
const EXPECT_SCRIPT: &str = r#"
set timeout 30
log_user 1
set password $env(TF_SSH_PASSWORD)
set codes [split $env(TF_SSH_CODES) " "]
set npw 0
set ncode 0
set nenroll 0
set secret ""
spawn -noecho {*}$argv
expect {
    -re {Password: $} {
        incr npw
        send -- "$password\r"
        exp_continue
    }
    -re {Secret: ([A-Z2-7]+)} {
        # Enrollment at login: the daemon shows a new secret; compute its code like an app.
        set secret $expect_out(1,string)
        exp_continue
    }
    -re {Code from your authenticator app: $} {
        incr nenroll
        send -- "[exec oathtool --totp -b $secret]\r"
        exp_continue
    }
    -re {Press Enter[^\n]*: $} {
        send -- "\r"
        exp_continue
    }
    -re {Verification code: $} {
        set i [expr {min($ncode, [llength $codes] - 1)}]
        incr ncode
        send -- "[lindex $codes $i]\r"
        exp_continue
    }
    timeout {
        puts "\nEXPECT-TIMEOUT"
        puts "EXPECT-PROMPTS password=$npw code=$ncode"
        exit 124
    }
    eof
}
set st [wait]
puts "\nEXPECT-PROMPTS password=$npw code=$ncode"
exit [lindex $st 3]
"#;

impl Sshd {
    /// Starts sshd for `env`'s bus with the given authentication. The client key is generated
    /// but authorized for nobody yet ([`Sshd::authorize`]).
    pub fn start(env: &Env, auth: Auth) -> Sshd {
        ensure_test_accounts();
        preflight();
        let dir = tempfile::Builder::new()
            .prefix("twofactor-sshd-")
            .tempdir()
            .expect("tempdir");
        // sshd reads authorized-keys files as the user: the directory must be searchable.
        set_mode(dir.path(), 0o755);
        let d = dir.path();
        let host_key = d.join("host_ed25519");
        keygen(&host_key, "twofactor-test-host");
        let client_key = d.join("client_ed25519");
        keygen(&client_key, "twofactor-test-client");
        let pamd = d.join("pam.d");
        std::fs::create_dir(&pamd).expect("pam.d");
        let service = write_pam_service(&pamd, env, auth);
        let log_path = d.join("sshd.log");
        let mut sshd = Sshd {
            dir,
            port: 0,
            log_path,
            client_key,
            child: None,
            service,
        };
        // The port is found by binding port 0 and released before sshd binds it: another
        // process may take it in between, so a failed bind is retried on a new port.
        for _ in 0..5 {
            let port = free_port();
            sshd.port = port;
            sshd.write_config(auth, &host_key);
            if sshd.spawn(&pamd) {
                return sshd;
            }
        }
        panic!("sshd could not listen: {}", sshd.log());
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("sshd_config")
    }

    fn write_config(&self, auth: Auth, host_key: &Path) {
        let d = self.dir.path();
        let methods = match auth {
            Auth::PublicKeyAndCode => "publickey,keyboard-interactive",
            Auth::PasswordAndCode => "keyboard-interactive",
        };
        let text = format!(
            "ListenAddress 127.0.0.1:{port}\n\
             HostKey {host_key}\n\
             PidFile {pid}\n\
             UsePAM yes\n\
             KbdInteractiveAuthentication yes\n\
             PasswordAuthentication no\n\
             PubkeyAuthentication {pubkey}\n\
             AuthenticationMethods {methods}\n\
             AuthorizedKeysFile {keys}/authorized_keys.%u\n\
             StrictModes no\n\
             PermitRootLogin no\n\
             PermitEmptyPasswords no\n\
             HostbasedAuthentication no\n\
             GSSAPIAuthentication no\n\
             X11Forwarding no\n\
             AllowTcpForwarding no\n\
             AllowAgentForwarding no\n\
             PermitTTY no\n\
             PrintMotd no\n\
             PrintLastLog no\n\
             UseDNS no\n\
             MaxAuthTries 10\n\
             MaxStartups 50\n\
             LoginGraceTime 60\n\
             LogLevel VERBOSE\n\
             AllowUsers tf-*\n",
            port = self.port,
            host_key = host_key.display(),
            pid = d.join("sshd.pid").display(),
            pubkey = if auth == Auth::PublicKeyAndCode {
                "yes"
            } else {
                "no"
            },
            keys = d.display(),
        );
        // OpenSSH ≥ 9.8 penalizes sources with failed logins (refusing their connections for a
        // while); tests fail on purpose from 127.0.0.1. Older versions reject the option.
        let penalties = "PerSourcePenalties no\n";
        std::fs::write(self.config_path(), format!("{text}{penalties}")).expect("sshd_config");
        if !self.config_ok() {
            std::fs::write(self.config_path(), &text).expect("sshd_config");
            assert!(
                self.config_ok(),
                "sshd rejects its configuration: {}",
                self.config_test_output()
            );
        }
    }

    fn config_test_output(&self) -> String {
        let out = Command::new(SSHD)
            .arg("-t")
            .arg("-f")
            .arg(self.config_path())
            .output()
            .expect("sshd -t");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn config_ok(&self) -> bool {
        Command::new(SSHD)
            .arg("-t")
            .arg("-f")
            .arg(self.config_path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Starts sshd and waits until it listens; false if it could not bind its port.
    fn spawn(&mut self, pamd: &Path) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("sshd log");
        let start_len = log.metadata().map(|m| m.len()).unwrap_or(0) as usize;
        let mut child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(self.config_path())
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LD_PRELOAD", pam_wrapper_lib())
            .env("PAM_WRAPPER", "1")
            .env("PAM_WRAPPER_SERVICE_DIR", pamd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sshd");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.log();
            let new = text.get(start_len..).unwrap_or("");
            if new.contains(&format!("Server listening on 127.0.0.1 port {}", self.port)) {
                self.child = Some(child);
                return true;
            }
            if let Ok(Some(status)) = child.try_wait() {
                if new.contains("Cannot bind any address") || new.contains("Address already in use")
                {
                    return false;
                }
                panic!("sshd exited with {status}: {text}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("sshd did not start listening: {text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// sshd's log so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            s = String::from_utf8_lossy(&bytes).into_owned();
        }
        s
    }

    /// Authorizes the client key for `user` (`AuthorizedKeysFile …/authorized_keys.%u`).
    pub fn authorize(&self, user: &str) {
        let public = std::fs::read_to_string(format!("{}.pub", self.client_key.display()))
            .expect("client public key");
        let path = self.dir.path().join(format!("authorized_keys.{user}"));
        std::fs::write(&path, public).expect("authorized_keys");
        set_mode(&path, 0o644);
    }

    /// An `ssh` run as `user`, to be configured and [`Ssh::run`].
    pub fn ssh(&self, user: &str) -> Ssh<'_> {
        Ssh {
            sshd: self,
            user: user.to_string(),
            methods: "publickey,keyboard-interactive".to_string(),
            password: None,
            codes: vec![String::new()],
            key: true,
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        remove_pam_wrapper_copies(&self.service);
    }
}

/// Writes the PAM service file `sshd` (sshd's program name is its PAM service name) and
/// returns its text.
fn write_pam_service(pamd: &Path, env: &Env, auth: Auth) -> String {
    let module = bin("libpam_twofactor.so");
    let permit = pam_module("pam_permit.so");
    let ours = format!(
        "auth required {} bus={} timeout=10\n",
        module.display(),
        env.address
    );
    let auth_lines = match auth {
        Auth::PublicKeyAndCode => ours,
        Auth::PasswordAndCode => format!(
            "auth requisite {}\n{ours}",
            pam_module("pam_unix.so").display()
        ),
    };
    let text = format!(
        "{auth_lines}account required {permit}\nsession required {permit}\n\
         password required {deny}\n",
        permit = permit.display(),
        deny = pam_module("pam_deny.so").display(),
    );
    std::fs::write(pamd.join("sshd"), &text).expect("pam service");
    std::fs::write(
        pamd.join("other"),
        format!("auth required {}\n", pam_module("pam_deny.so").display()),
    )
    .expect("other");
    text
}

/// pam_wrapper copies the service directory to `/tmp/pam.?` (one letter: only 62 names) in each
/// process that calls `pam_start`, and removes it at `exit`; sshd's connection processes end
/// with `_exit`, so their copies stay. pam_wrapper removes such stale copies later only if
/// their pid is at most 65535, so on machines with a larger `pid_max` they would pile up until
/// pam_wrapper finds no free name. This removes the copies of `service` whose process is gone.
fn remove_pam_wrapper_copies(service: &str) {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.len() == 5 && name.starts_with("pam.")) {
            continue;
        }
        let dir = entry.path();
        if std::fs::read_to_string(dir.join("sshd")).ok().as_deref() != Some(service) {
            continue;
        }
        let pid: i32 = std::fs::read_to_string(dir.join("pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(3);
        // SAFETY: kill(2) with signal 0 only checks whether the process exists.
        while pid > 0 && unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above.
        if pid > 0 && unsafe { libc::kill(pid, 0) } == 0 {
            continue;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// `libpam_wrapper.so` from the multiarch library directories.
pub fn pam_wrapper_lib() -> PathBuf {
    for dir in [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/lib/x86_64-linux-gnu",
        "/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
    ] {
        let p = Path::new(dir).join("libpam_wrapper.so");
        if p.exists() {
            return p;
        }
    }
    panic!("libpam_wrapper.so not found (Debian package libpam-wrapper; scripts/deps.sh)");
}

/// Checks what sshd needs from the machine and creates `/run/sshd`.
fn preflight() {
    assert!(
        Path::new(SSHD).exists(),
        "{SSHD} is missing (Debian package openssh-server; scripts/deps.sh)"
    );
    for tool in ["ssh", "ssh-keygen", "expect", "timeout"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false),
            "{tool} is missing (openssh-client, expect, coreutils; scripts/deps.sh)"
        );
    }
    assert!(
        Command::new("getent")
            .args(["passwd", "sshd"])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false),
        "sshd's privilege-separation user `sshd` is missing (openssh-server creates it)"
    );
    privsep_dir();
}

/// sshd's privilege-separation directory `/run/sshd` (root-owned, mode 755), which `sshd -t`
/// and `sshd -T` also need: created if missing, so that no test depends on another having run.
pub fn privsep_dir() {
    let run = Path::new("/run/sshd");
    if !run.exists() {
        let _ = std::fs::create_dir_all(run);
        set_mode(run, 0o755);
    }
}

fn keygen(path: &Path, comment: &str) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    set_mode(path, 0o600);
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Creates [`SSH_PW_USER`] if missing and sets its password to a random one, once per test
/// process; returns the password. (Idempotent; the password changes between processes, so
/// it is never a known constant on the machine.)
pub fn ensure_ssh_password_user() -> &'static str {
    static PASSWORD: OnceLock<String> = OnceLock::new();
    PASSWORD.get_or_init(|| {
        ensure_test_accounts();
        let exists = Command::new("getent")
            .args(["passwd", SSH_PW_USER])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !exists {
            let out = Command::new("useradd")
                .args(["--system", "--no-create-home", "--shell", "/bin/sh"])
                .arg(SSH_PW_USER)
                .output()
                .expect("useradd");
            // A parallel test process may have created it meanwhile (exit code 9).
            assert!(
                out.status.success() || out.status.code() == Some(9),
                "useradd {SSH_PW_USER}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut bytes = [0u8; 12];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .expect("/dev/urandom");
        let password: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let password = format!("Tf-{password}");
        let mut child = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chpasswd");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin
                .write_all(format!("{SSH_PW_USER}:{password}\n").as_bytes())
                .expect("chpasswd input");
        }
        let out = child.wait_with_output().expect("chpasswd");
        assert!(
            out.status.success(),
            "chpasswd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        password
    })
}
