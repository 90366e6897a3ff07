//! `twofactorctl`: enroll yourself, see your status, and (as an admin) manage other users.
// Denied, not forbidden: doctor/clock_sys.rs holds the one FFI call (ntp_adjtime).
#![deny(unsafe_code)]

mod doctor;
mod import;

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use clap::{CommandFactory, Parser, Subcommand};
use serde::Serialize;
use twofactor_bus::{AdminProxy, BusError, CodeResult, EnrollmentProxy, UserStatus};
use zeroize::Zeroizing;

/// Two-factor authentication for Unix logins: enrollment and administration.
#[derive(Parser, Debug)]
#[command(version, about, propagate_version = true)]
struct Cli {
    /// D-Bus address of the bus twofactord is on (default: $DBUS_SYSTEM_BUS_ADDRESS, then the
    /// system bus).
    #[arg(
        long,
        global = true,
        value_name = "ADDRESS",
        env = "DBUS_SYSTEM_BUS_ADDRESS"
    )]
    bus: Option<String>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Your effective policy, the rule that produced it, your factors and recovery codes.
    Status {
        #[command(flatten)]
        context: LoginContextArgs,
    },
    /// Enroll a second factor.
    Enroll {
        #[command(subcommand)]
        factor: EnrollFactor,
    },
    /// Recovery codes.
    Recovery {
        #[command(subcommand)]
        action: RecoveryAction,
    },
    /// Remove all your factors (needs a current code; refused when 2FA is required for you).
    Disable {
        /// A current code or a recovery code (asked for when missing).
        #[arg(long)]
        code: Option<String>,
    },
    /// Administration (root or a member of the policy's admin_groups).
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Print a shell completion script on standard output (needs no daemon).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Check this machine's setup: clock, daemon, policy, permissions, PAM stacks, sshd.
    Doctor {
        #[command(flatten)]
        options: doctor::Options,
    },
}

#[derive(Subcommand, Debug)]
enum EnrollFactor {
    /// An authenticator app (TOTP): shows a QR code, then asks for the current code.
    Totp {
        /// The current code, for scripts (with --confirm, or after --begin).
        #[arg(long)]
        code: Option<String>,
        /// Only start: print the secret and the enrollment id, then exit.
        #[arg(long, conflicts_with_all = ["confirm", "code"])]
        begin: bool,
        /// Finish the enrollment started with --begin.
        #[arg(long, value_name = "ENROLLMENT_ID", requires = "code")]
        confirm: Option<String>,
        /// Do not draw the QR code.
        #[arg(long)]
        no_qr: bool,
    },
}

#[derive(Subcommand, Debug)]
enum RecoveryAction {
    /// Replace your recovery codes with a new set (needs a current code).
    Regenerate {
        /// A current code or a recovery code (asked for when missing).
        #[arg(long)]
        code: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum AdminAction {
    /// A user's effective policy, rule, factors and lockout.
    Show {
        user: String,
        #[command(flatten)]
        context: LoginContextArgs,
    },
    /// Starter recovery codes for a user who has not enrolled yet, to hand over.
    IssueCodes { user: String },
    /// Import a user's factor from another tool.
    Import {
        #[command(subcommand)]
        source: ImportSource,
    },
    /// Restart a user's grace period now, or extend it.
    Grace {
        user: String,
        /// Move the end of the grace period later by this long (e.g. 7d) instead of
        /// restarting it from now.
        #[arg(long, value_name = "DURATION")]
        extend: Option<String>,
    },
    /// Require 2FA for a user, whatever the policy file says.
    Require { user: String },
    /// Remove the per-user requirement.
    Release { user: String },
    /// Wipe a user's factors and recovery codes.
    Reset { user: String },
    /// End a user's lockout.
    Unlock { user: String },
    /// Every user the daemon has state for.
    List {
        /// Only users in this state.
        #[arg(long, value_enum)]
        state: Option<ListState>,
    },
    /// The audit log.
    Audit {
        /// Only this user.
        #[arg(long)]
        user: Option<String>,
        /// Only events since this time (RFC 3339, e.g. 2026-11-22T10:00:00Z) or this long ago
        /// (e.g. 2h).
        #[arg(long)]
        since: Option<String>,
        /// At most this many (newest) entries.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Re-read the policy file (an invalid file is refused; the old policy stays).
    Reload,
}

#[derive(Subcommand, Debug)]
enum ImportSource {
    /// A ~/.google_authenticator file (libpam-google-authenticator): the secret, its step size,
    /// and the scratch codes as recovery codes. Reports what was mapped and what was dropped.
    GoogleAuthenticator {
        /// The user the file belongs to.
        user: String,
        /// The file (default: ~USER/.google_authenticator).
        file: Option<std::path::PathBuf>,
    },
}

/// A login to explain: the mode can depend on the PAM service and the remote host.
#[derive(clap::Args, Debug, Default)]
struct LoginContextArgs {
    /// Explain for this PAM service (e.g. sshd, sudo).
    #[arg(long, value_name = "SERVICE")]
    service: Option<String>,
    /// Explain for a login from this remote address.
    #[arg(long, value_name = "ADDRESS")]
    rhost: Option<String>,
}

impl LoginContextArgs {
    fn is_empty(&self) -> bool {
        self.service.is_none() && self.rhost.is_none()
    }

    fn to_map(&self) -> std::collections::HashMap<&str, &str> {
        let mut m = std::collections::HashMap::new();
        if let Some(s) = &self.service {
            m.insert("service", s.as_str());
        }
        if let Some(r) = &self.rhost {
            m.insert("rhost", r.as_str());
        }
        m
    }
}

/// Compliance states for `admin list --state`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ListState {
    /// 2FA is required but no factor is enrolled (and no grace period is running).
    RequiredUnenrolled,
    /// Required, not enrolled, within the grace period.
    InGrace,
    /// Locked out now.
    Locked,
    /// Has a factor.
    Enrolled,
}

impl ListState {
    fn matches(self, u: &UserStatus, now: i64) -> bool {
        let unenrolled_required = u.mode == "required" && !u.enrolled;
        match self {
            ListState::RequiredUnenrolled => unenrolled_required && u.grace_until <= now,
            ListState::InGrace => unenrolled_required && u.grace_until > now,
            ListState::Locked => u.locked_until > now,
            ListState::Enrolled => u.enrolled,
        }
    }
}

/// A failure to report: message and exit status.
struct Failure(String, u8);

impl From<BusError> for Failure {
    fn from(e: BusError) -> Self {
        match e {
            BusError::ZBus(zbus::Error::MethodError(name, msg, _))
                if name.as_str() == "org.freedesktop.DBus.Error.ServiceUnknown"
                    || name.as_str() == "org.freedesktop.DBus.Error.NameHasNoOwner" =>
            {
                Failure(
                    format!(
                        "twofactord is not running ({})",
                        msg.unwrap_or_else(|| name.to_string())
                    ),
                    1,
                )
            }
            BusError::ZBus(e) => Failure(format!("cannot talk to twofactord: {e}"), 1),
            BusError::AccessDenied(m) => Failure(format!("access denied: {m}"), 3),
            other => Failure(other.message(), 1),
        }
    }
}

fn time(t: i64) -> String {
    if t <= 0 {
        return "never".into();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t as u64)).to_string()
}

fn print_json<T: Serialize>(value: &T) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Failure(format!("json: {e}"), 1))?;
    println!("{text}");
    Ok(())
}

fn audit_line(e: &twofactor_bus::AuditEntry) -> String {
    let mut line = format!("{} {} {} {}", time(e.time), e.user, e.event, e.result);
    for (k, v) in [
        ("service", &e.service),
        ("rhost", &e.rhost),
        ("by", &e.actor),
    ] {
        if !v.is_empty() {
            line.push_str(&format!(" {k}={v}"));
        }
    }
    if !e.detail.is_empty() {
        line.push_str(&format!(" ({})", e.detail));
    }
    line
}

fn print_status(s: &UserStatus) {
    println!("User:            {} (uid {})", s.user, s.uid);
    println!("Mode:            {}", s.mode);
    println!("Rule:            {}", s.rule);
    println!(
        "Asked at login:  {}",
        match (s.enforced, s.enrolled, s.mode.as_str()) {
            (true, true, _) => "yes",
            (true, false, _) => "yes, but no factor is enrolled: logins are refused",
            (false, _, "disabled") => "no (disabled by policy)",
            _ => "no (enroll to turn it on)",
        }
    );
    if s.admin_required {
        println!("Admin require:   yes");
    }
    if s.factors.is_empty() {
        println!("Factors:         none");
    }
    for f in &s.factors {
        println!(
            "Factor:          {} {} (added {}, last used {})",
            f.kind,
            f.name,
            time(f.created),
            time(f.last_used)
        );
    }
    println!("Recovery codes:  {} left", s.recovery_codes_left);
    if s.grace_until > 0 {
        println!("Grace period:    until {}", time(s.grace_until));
    }
    if s.locked_until > 0 {
        println!("Locked until:    {}", time(s.locked_until));
    } else if s.failures > 0 {
        println!("Failed attempts: {}", s.failures);
    }
}

fn read_line(prompt: &str, secret: bool) -> Result<Zeroizing<String>, Failure> {
    let stdin = std::io::stdin();
    if secret && stdin.is_terminal() {
        return rpassword::prompt_password(prompt)
            .map(Zeroizing::new)
            .map_err(|e| Failure(format!("cannot read the code: {e}"), 1));
    }
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut line = Zeroizing::new(String::new());
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure(format!("cannot read the code: {e}"), 1))?;
    if line.is_empty() {
        return Err(Failure("no code given (end of input)".into(), 1));
    }
    Ok(Zeroizing::new(line.trim().to_string()))
}

fn code_or_prompt(code: Option<String>) -> Result<Zeroizing<String>, Failure> {
    match code {
        Some(c) => Ok(Zeroizing::new(c)),
        None => read_line("Current code (or a recovery code): ", true),
    }
}

fn report_code_result(r: &CodeResult, json: bool) -> Result<(), Failure> {
    if json {
        print_json(r)?;
    } else {
        println!("{}", r.message);
        if !r.recovery_codes.is_empty() {
            println!();
            println!("Recovery codes: each works once, in place of a code from your app.");
            println!("Store them somewhere safe now; they are not shown again.");
            for c in &r.recovery_codes {
                println!("    {c}");
            }
        }
    }
    if r.accepted {
        Ok(())
    } else if json {
        Err(Failure(String::new(), 4))
    } else {
        Err(Failure("the code was not accepted".into(), 4))
    }
}

/// Writes the completion script for `shell` to stdout (generated into memory first, so a
/// closed stdout is an error, not a panic).
fn print_completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "twofactorctl", &mut script);
    std::io::stdout()
        .write_all(&script)
        .map_err(|e| Failure(format!("cannot write the completion script: {e}"), 1))
}

async fn run(cli: Cli) -> Result<(), Failure> {
    // The only command that needs no daemon: answered before connecting to the bus.
    if let Command::Completions { shell } = cli.command {
        return print_completions(shell);
    }
    // Doctor reports an unreachable bus itself, so it connects on its own.
    if let Command::Doctor { options } = &cli.command {
        return doctor::run(options, cli.bus.as_deref(), cli.json).await;
    }
    let builder = match &cli.bus {
        Some(a) => zbus::connection::Builder::address(a.as_str()),
        None => zbus::connection::Builder::system(),
    };
    let conn = builder
        .method_timeout(Duration::from_secs(30))
        .build()
        .await
        .map_err(|e| Failure(format!("cannot connect to the system bus: {e}"), 1))?;
    let enrollment = EnrollmentProxy::new(&conn)
        .await
        .map_err(|e| Failure(e.to_string(), 1))?;
    let admin = AdminProxy::new(&conn)
        .await
        .map_err(|e| Failure(e.to_string(), 1))?;
    let json = cli.json;
    match cli.command {
        Command::Status { context } => {
            let s = if context.is_empty() {
                enrollment.status("").await?
            } else {
                enrollment.explain("", context.to_map()).await?
            };
            let events = enrollment.recent_events(5).await?;
            if json {
                let mut v = serde_json::to_value(&s).map_err(|e| Failure(e.to_string(), 1))?;
                v["recent_events"] =
                    serde_json::to_value(&events).map_err(|e| Failure(e.to_string(), 1))?;
                print_json(&v)?;
            } else {
                print_status(&s);
                if !events.is_empty() {
                    println!("Recent events:");
                    for e in &events {
                        println!("  {}", audit_line(e));
                    }
                }
            }
        }
        Command::Enroll {
            factor:
                EnrollFactor::Totp {
                    code,
                    begin,
                    confirm,
                    no_qr,
                },
        } => {
            if let Some(id) = confirm {
                let code = code.unwrap_or_default();
                let r = enrollment.confirm_totp(&id, &code).await?;
                return report_code_result(&r, json);
            }
            let e = enrollment.begin_totp().await?;
            if json && (begin || code.is_none()) {
                #[derive(Serialize)]
                struct Begin<'a> {
                    enrollment_id: &'a str,
                    secret: &'a str,
                    uri: &'a str,
                    algorithm: &'a str,
                    digits: u32,
                    period: u32,
                    expires: i64,
                }
                print_json(&Begin {
                    enrollment_id: &e.enrollment_id,
                    secret: &e.secret_base32,
                    uri: &e.uri,
                    algorithm: &e.algorithm,
                    digits: e.digits,
                    period: e.period,
                    expires: e.expires,
                })?;
                if begin {
                    return Ok(());
                }
            } else if !json {
                if !no_qr && let Some(q) = twofactor_bus::qr_text(&e.uri) {
                    println!("Scan this with your authenticator app:\n{q}");
                }
                println!("Or enter this secret by hand: {}", e.secret_base32);
                println!(
                    "({}, {} digits, every {} seconds)",
                    e.algorithm, e.digits, e.period
                );
                println!("URI: {}", e.uri);
                if begin {
                    println!(
                        "Finish with: twofactorctl enroll totp --confirm {} --code CODE",
                        e.enrollment_id
                    );
                    return Ok(());
                }
            }
            let _ = std::io::stdout().flush();
            loop {
                let code = match &code {
                    Some(c) => Zeroizing::new(c.clone()),
                    None => read_line("Type the code your app shows now: ", false)?,
                };
                let r = enrollment.confirm_totp(&e.enrollment_id, &code).await?;
                if r.accepted || code.is_empty() || json || !std::io::stdin().is_terminal() {
                    return report_code_result(&r, json);
                }
                eprintln!("{}", r.message);
            }
        }
        Command::Recovery {
            action: RecoveryAction::Regenerate { code },
        } => {
            let code = code_or_prompt(code)?;
            let r = enrollment.regenerate_recovery_codes(&code).await?;
            report_code_result(&r, json)?;
        }
        Command::Disable { code } => {
            let code = code_or_prompt(code)?;
            let r = enrollment.disable(&code).await?;
            report_code_result(&r, json)?;
        }
        Command::Admin { action } => match action {
            AdminAction::Show { user, context } => {
                let s = if context.is_empty() {
                    admin.show(&user).await?
                } else {
                    enrollment.explain(&user, context.to_map()).await?
                };
                if json {
                    print_json(&s)?
                } else {
                    print_status(&s)
                }
            }
            AdminAction::Require { user } => {
                admin.require(&user).await?;
                println!("2FA is now required for {user}.");
            }
            AdminAction::Release { user } => {
                admin.release(&user).await?;
                println!(
                    "The per-user requirement for {user} is removed; the policy file decides."
                );
            }
            AdminAction::Reset { user } => {
                admin.reset(&user).await?;
                println!("All factors and recovery codes of {user} were removed.");
            }
            AdminAction::Unlock { user } => {
                admin.unlock(&user).await?;
                println!("{user} is unlocked.");
            }
            AdminAction::IssueCodes { user } => {
                let r = admin.issue_codes(&user).await?;
                report_code_result(&r, json)?;
            }
            AdminAction::Import {
                source: ImportSource::GoogleAuthenticator { user, file },
            } => {
                let path = match file {
                    Some(p) => p,
                    None => nix::unistd::User::from_name(&user)
                        .ok()
                        .flatten()
                        .map(|u| u.dir.join(".google_authenticator"))
                        .ok_or_else(|| Failure(format!("no such user: {user}"), 1))?,
                };
                let text = std::fs::read_to_string(&path)
                    .map(zeroize::Zeroizing::new)
                    .map_err(|e| Failure(format!("{}: {e}", path.display()), 1))?;
                let ga = import::parse_google_authenticator(&text).map_err(|e| {
                    Failure(format!("{}: {e}; nothing was imported", path.display()), 1)
                })?;
                let codes: Vec<&str> = ga.scratch_codes.iter().map(|c| c.as_str()).collect();
                let message = admin
                    .import_totp(&user, &ga.secret, "SHA1", 6, ga.period, &codes)
                    .await?;
                if json {
                    print_json(&serde_json::json!({
                        "user": user,
                        "file": path,
                        "mapped": ga.mapped,
                        "dropped": ga.dropped,
                        "message": message,
                    }))?;
                } else {
                    println!("Imported {}: {message}", path.display());
                    for m in &ga.mapped {
                        println!("  mapped:  {m}");
                    }
                    for d in &ga.dropped {
                        println!("  dropped: {d}");
                    }
                }
            }
            AdminAction::Grace { user, extend } => {
                let secs = match extend {
                    None => 0,
                    Some(d) => humantime::parse_duration(&d)
                        .map_err(|e| Failure(format!("--extend {d:?}: {e}"), 2))?
                        .as_secs() as i64,
                };
                admin.grace(&user, secs).await?;
                let s = admin.show(&user).await?;
                if s.grace_until > 0 {
                    println!(
                        "The grace period of {user} now ends {}.",
                        time(s.grace_until)
                    );
                } else {
                    println!(
                        "The grace period of {user} starts at their next login that requires 2FA."
                    );
                }
            }
            AdminAction::List { state } => {
                let now = std::time::SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                let users: Vec<UserStatus> = admin
                    .list_users()
                    .await?
                    .into_iter()
                    .filter(|u| state.is_none_or(|st| st.matches(u, now)))
                    .collect();
                if json {
                    print_json(&users)?;
                } else {
                    println!("USER                    UID MODE      ENROLLED RECOVERY LOCKED");
                    for u in users {
                        println!(
                            "{:<20} {:>6} {:<9} {:<8} {:>8} {}",
                            u.user,
                            u.uid,
                            u.mode,
                            if u.enrolled { "yes" } else { "no" },
                            u.recovery_codes_left,
                            if u.locked_until > 0 {
                                time(u.locked_until)
                            } else {
                                "-".into()
                            }
                        );
                    }
                }
            }
            AdminAction::Audit { user, since, limit } => {
                let since = match since {
                    None => 0,
                    Some(s) => parse_since(&s)?,
                };
                let entries = admin
                    .audit(user.as_deref().unwrap_or(""), since, limit)
                    .await?;
                if json {
                    print_json(&entries)?;
                } else {
                    for e in entries {
                        println!("{}", audit_line(&e));
                    }
                }
            }
            AdminAction::Reload => {
                let msg = admin.reload_policy().await?;
                println!("{msg}");
            }
        },
        // Answered above, before connecting.
        Command::Completions { .. } => {}
        Command::Doctor { .. } => {}
    }
    Ok(())
}

fn parse_since(s: &str) -> Result<i64, Failure> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0));
    }
    if let Ok(d) = humantime::parse_duration(s) {
        let now = std::time::SystemTime::now();
        let then = now.checked_sub(d).unwrap_or(UNIX_EPOCH);
        return Ok(then
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0));
    }
    Err(Failure(
        format!("--since {s:?}: give a time (2026-11-22T10:00:00Z) or an age (2h)"),
        2,
    ))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match zbus::block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg, code)) => {
            if !msg.is_empty() {
                eprintln!("twofactorctl: {msg}");
            }
            ExitCode::from(code)
        }
    }
}
