//! `twofactorctl`: enroll yourself, see your status, and (as an admin) manage other users.
// Denied, not forbidden: doctor/clock_sys.rs holds the one FFI call (ntp_adjtime).
#![deny(unsafe_code)]

mod backup;
mod doctor;
mod failure;
mod keys;
mod out;
mod safe_open;

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use clap::{CommandFactory, Parser, Subcommand};
use serde::Serialize;
use twofactor_bus::{AdminProxy, BusError, CodeResult, EnrollmentProxy, UserStatus};
use zeroize::Zeroizing;

use failure::{ErrorCode, Failure};
use twofactorctl::{import, import_u2f};

use out::{display_safe as safe, display_safe_lines as safe_lines, err, errln, outln};

/// Where codes come from, for the help texts.
const CODES_FROM_INPUT: &str = "Codes are never taken from the command line (every user can \
read it): they are asked for on the terminal, not echoed, or read as one line from standard \
input when it is not a terminal (echo \"$code\" | twofactorctl disable).";

/// Two-factor authentication for Unix logins: enrollment and administration.
#[derive(Parser, Debug)]
#[command(version, about, propagate_version = true, after_help = CODES_FROM_INPUT)]
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
    /// Machine-readable output: JSON on standard output; a failure is one JSON object
    /// {"error":{"code":...,"message":...}} on standard error (codes: see twofactorctl(1)).
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
    /// Remove one factor (needs a current code or a touch of an enrolled key).
    Remove {
        #[command(subcommand)]
        factor: RemoveFactor,
    },
    /// Remove all your factors (needs a current code or a recovery code, asked for; refused
    /// when 2FA is required for you).
    #[command(after_help = CODES_FROM_INPUT)]
    Disable,
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
    #[command(after_help = CODES_FROM_INPUT)]
    Totp {
        /// Only start: print the secret and the enrollment id, then exit.
        #[arg(long, conflicts_with = "confirm")]
        begin: bool,
        /// Finish the enrollment started with --begin: the app's current code is asked for
        /// (or read from standard input).
        #[arg(long, value_name = "ENROLLMENT_ID")]
        confirm: Option<String>,
        /// Do not draw the QR code.
        #[arg(long)]
        no_qr: bool,
    },
    /// A FIDO2 security key (USB): touch it twice; its PIN is asked when needed. If you
    /// already have a factor, a current code or a recovery code is asked for first (Enter
    /// alone: touch an enrolled key).
    #[command(after_help = CODES_FROM_INPUT)]
    Key {
        /// A name for the key, e.g. "yubikey-blue" (unique among your keys).
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum RemoveFactor {
    /// A security key, by the name it was enrolled with (see `status`). A current code or a
    /// recovery code is asked for (Enter alone: touch an enrolled key).
    #[command(after_help = CODES_FROM_INPUT)]
    Key {
        /// The key's name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum RecoveryAction {
    /// Replace your recovery codes with a new set (needs a current code or a recovery code,
    /// asked for).
    #[command(after_help = CODES_FROM_INPUT)]
    Regenerate,
}

#[derive(Subcommand, Debug)]
enum AdminAction {
    /// A user's effective policy, rule, factors and lockout.
    Show {
        /// The user's login name.
        user: String,
        #[command(flatten)]
        context: LoginContextArgs,
    },
    /// Starter recovery codes for a user who has not enrolled yet, to hand over.
    IssueCodes {
        /// The user's login name.
        user: String,
    },
    /// Import a user's factor from another tool.
    Import {
        #[command(subcommand)]
        source: ImportSource,
    },
    /// Restart a user's grace period now, or extend it.
    Grace {
        /// The user's login name.
        user: String,
        /// Move the end of the grace period later by this long (e.g. 7d) instead of
        /// restarting it from now.
        #[arg(long, value_name = "DURATION")]
        extend: Option<String>,
    },
    /// Require 2FA for a user, whatever the policy file says.
    Require {
        /// The user's login name.
        user: String,
    },
    /// Remove the per-user requirement.
    Release {
        /// The user's login name.
        user: String,
    },
    /// Wipe a user's factors and recovery codes.
    Reset {
        /// The user's login name.
        user: String,
    },
    /// End a user's lockout.
    Unlock {
        /// The user's login name.
        user: String,
    },
    /// Users the daemon has state for, and every account it can find that the policy
    /// requires 2FA of (enrolled or not). Says when required users may be missing.
    List {
        /// Only users in this state.
        #[arg(long, value_enum)]
        state: Option<ListState>,
    },
    /// The audit log.
    Audit {
        /// Only this user.
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// Only events since this time (RFC 3339, e.g. 2026-11-22T10:00:00Z) or this long ago
        /// (e.g. 2h).
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// At most this many (newest) entries.
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: u32,
    },
    /// Re-read the policy file (an invalid file is refused; the old policy stays).
    Reload,
    /// Write a consistent copy of the daemon's whole state (every secret) to FILE, mode 0600,
    /// while the daemon runs (root only). Put it back with `twofactord restore`.
    Backup {
        /// The file to create (an existing file is refused unless --force; never a symlink).
        file: std::path::PathBuf,
        /// Replace FILE if it exists (atomically; a symlink or non-regular file is still
        /// refused).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ImportSource {
    /// A ~/.google_authenticator file (libpam-google-authenticator): the secret, its step size,
    /// and the scratch codes as recovery codes. Reports what was mapped and what was dropped.
    GoogleAuthenticator {
        /// The user the file belongs to.
        user: String,
        /// The file (default: ~USER/.google_authenticator), owned by USER or root; symlinks
        /// are not followed.
        file: Option<std::path::PathBuf>,
    },
    /// A pam_u2f authfile (a user's ~/.config/Yubico/u2f_keys or a central file): each user's
    /// ES256 and EdDSA credentials become security keys named pam_u2f-1, pam_u2f-2, ...
    /// The whole file is checked first; one bad line and nothing is imported. A file owned by
    /// a user may hold only that user's line; only a root-owned file may name other users.
    PamU2f(PamU2fArgs),
}

/// `admin import pam-u2f`.
#[derive(clap::Args, Debug)]
struct PamU2fArgs {
    /// The authfile.
    file: std::path::PathBuf,
    /// Import only this user's line (the file must then be owned by this user or by root).
    #[arg(long)]
    user: Option<String>,
    /// The origin the keys were registered for: pam_u2f's origin= (default: pam://HOSTNAME).
    #[arg(long)]
    origin: Option<String>,
    /// pam_u2f's appid=, for old-format (pam_u2f < 1.1) lines (default: the origin).
    #[arg(long)]
    appid: Option<String>,
    /// Check the file and show what would be imported; needs no daemon, changes nothing.
    #[arg(long)]
    dry_run: bool,
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

fn time(t: i64) -> String {
    if t <= 0 {
        return "never".into();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t as u64)).to_string()
}

fn print_json<T: Serialize>(value: &T) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::new(ErrorCode::Internal, format!("json: {e}")))?;
    outln!("{}", out::json_safe(&text));
    Ok(())
}

/// `{"ok":true,"action":...,"user":...}`: the JSON of an admin action that returns nothing.
fn print_done(action: &str, user: &str) -> Result<(), Failure> {
    print_json(&serde_json::json!({ "ok": true, "action": action, "user": user }))
}

fn audit_line(e: &twofactor_bus::AuditEntry) -> String {
    // Every field is the daemon's copy of what a caller sent: escaped, so that no entry can
    // draw another line or move the cursor.
    let mut line = format!(
        "{} {} {} {}",
        time(e.time),
        safe(&e.user),
        safe(&e.event),
        safe(&e.result)
    );
    // A login is asked for by the PAM stack of a service, which runs as root: "by=root" would
    // read as if root did it. Say which service asked, and from where.
    if e.actor == "root" && !e.service.is_empty() {
        line.push_str(&format!(" via {}", safe(&e.service)));
        if !e.rhost.is_empty() {
            line.push_str(&format!(" from {}", safe(&e.rhost)));
        }
    } else {
        for (k, v) in [
            ("service", &e.service),
            ("rhost", &e.rhost),
            ("by", &e.actor),
        ] {
            if !v.is_empty() {
                line.push_str(&format!(" {k}={}", safe(v)));
            }
        }
    }
    if !e.detail.is_empty() {
        line.push_str(&format!(" ({})", safe(&e.detail)));
    }
    line
}

/// Why the daemon's policy in force is not the policy file (it serves its last good copy),
/// if so; `None` also when the daemon cannot say (an older daemon).
async fn policy_problem(enrollment: &EnrollmentProxy<'_>) -> Option<String> {
    let (_, problem) = enrollment.policy_status().await.ok()?;
    (!problem.is_empty()).then_some(problem)
}

/// `status` as JSON, with `policy_problem` when the daemon serves its last good policy.
fn status_json(s: &UserStatus, problem: Option<&str>) -> Result<serde_json::Value, Failure> {
    let mut v =
        serde_json::to_value(s).map_err(|e| Failure::new(ErrorCode::Internal, e.to_string()))?;
    if let Some(p) = problem {
        v["policy_problem"] = serde_json::Value::String(p.to_string());
    }
    Ok(v)
}

fn print_status(s: &UserStatus, problem: Option<&str>) {
    outln!("User:            {} (uid {})", safe(&s.user), s.uid);
    outln!("Mode:            {}", safe(&s.mode));
    outln!("Rule:            {}", safe(&s.rule));
    if let Some(p) = problem {
        outln!("Policy:          WARNING: {}", safe(p));
    }
    outln!(
        "Asked at login:  {}",
        match (s.enforced, s.enrolled, s.mode.as_str()) {
            (true, true, _) => "yes",
            (true, false, _) => "yes, but no factor is enrolled: logins are refused",
            (false, _, "disabled") => "no (disabled by policy)",
            _ => "no (enroll to turn it on)",
        }
    );
    if s.admin_required {
        outln!("Admin require:   yes");
    }
    if s.factors.is_empty() {
        outln!("Factors:         none");
    }
    for f in &s.factors {
        outln!(
            "Factor:          {} {} (added {}, last used {})",
            safe(&f.kind),
            safe(&f.name),
            time(f.created),
            time(f.last_used)
        );
    }
    outln!("Recovery codes:  {} left", s.recovery_codes_left);
    if s.grace_until > 0 {
        outln!("Grace period:    until {}", time(s.grace_until));
    }
    if s.locked_until > 0 {
        outln!("Locked until:    {}", time(s.locked_until));
    } else if s.failures > 0 {
        outln!("Failed attempts: {}", s.failures);
    }
    for w in &s.warnings {
        outln!("Warning:         {}", safe(w));
    }
}

fn read_line(prompt: &str, secret: bool) -> Result<Zeroizing<String>, Failure> {
    let stdin = std::io::stdin();
    if secret && stdin.is_terminal() {
        return rpassword::prompt_password(prompt)
            .map(Zeroizing::new)
            .map_err(|e| {
                Failure::new(
                    ErrorCode::InvalidInput,
                    format!("cannot read the code: {e}"),
                )
            });
    }
    // Under --json, standard error carries only the error object (a script gives the code on
    // standard input and needs no prompt).
    if !out::json_mode() {
        err!("{prompt}");
        let _ = std::io::stderr().flush();
    }
    let mut line = Zeroizing::new(String::new());
    stdin.lock().read_line(&mut line).map_err(|e| {
        Failure::new(
            ErrorCode::InvalidInput,
            format!("cannot read the code: {e}"),
        )
    })?;
    if line.is_empty() {
        return Err(Failure::new(
            ErrorCode::InvalidInput,
            "no code given (end of input)",
        ));
    }
    Ok(Zeroizing::new(line.trim().to_string()))
}

/// A current code or a recovery code: asked for on the terminal (not echoed), or one line of
/// standard input.
fn current_code() -> Result<Zeroizing<String>, Failure> {
    read_line("Current code (or a recovery code): ", true)
}

fn report_code_result(r: &CodeResult, json: bool) -> Result<(), Failure> {
    if json {
        print_json(r)?;
    } else {
        outln!("{}", safe_lines(&r.message));
        if !r.recovery_codes.is_empty() {
            outln!();
            outln!("Recovery codes: each works once, in place of a code from your app.");
            outln!("Store them somewhere safe now; they are not shown again.");
            for c in &r.recovery_codes {
                outln!("    {}", safe(c));
            }
        }
    }
    if r.accepted {
        Ok(())
    } else {
        Err(Failure::new(
            ErrorCode::CodeRejected,
            "the code was not accepted",
        ))
    }
}

/// Writes the completion script for `shell` to stdout (generated into memory first, so a
/// closed stdout ends the program quietly, not with a panic).
fn print_completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "twofactorctl", &mut script);
    out::stdout_bytes(&script);
    Ok(())
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
    // A dry run of a pam_u2f import only reads the file.
    if let Command::Admin {
        action: AdminAction::Import {
            source: ImportSource::PamU2f(args),
        },
    } = &cli.command
        && args.dry_run
    {
        return import_pam_u2f(None, args, cli.json).await;
    }
    let builder = match &cli.bus {
        Some(a) => zbus::connection::Builder::address(a.as_str()),
        None => zbus::connection::Builder::system(),
    };
    let conn = builder
        .method_timeout(Duration::from_secs(30))
        .build()
        .await
        .map_err(|e| failure::bus_unreachable(&e.to_string()))?;
    let enrollment = EnrollmentProxy::new(&conn)
        .await
        .map_err(|e| failure::transport(&e))?;
    let admin = AdminProxy::new(&conn)
        .await
        .map_err(|e| failure::transport(&e))?;
    let json = cli.json;
    match cli.command {
        Command::Status { context } => {
            let s = if context.is_empty() {
                enrollment.status("").await?
            } else {
                enrollment.explain("", context.to_map()).await?
            };
            let events = enrollment.recent_events(5).await?;
            let problem = policy_problem(&enrollment).await;
            if json {
                let mut v = status_json(&s, problem.as_deref())?;
                v["recent_events"] = serde_json::to_value(&events)
                    .map_err(|e| Failure::new(ErrorCode::Internal, e.to_string()))?;
                print_json(&v)?;
            } else {
                print_status(&s, problem.as_deref());
                if !events.is_empty() {
                    outln!("Recent events:");
                    for e in &events {
                        outln!("  {}", audit_line(e));
                    }
                }
            }
        }
        Command::Enroll {
            factor:
                EnrollFactor::Totp {
                    begin,
                    confirm,
                    no_qr,
                },
        } => {
            if let Some(id) = confirm {
                let code = read_line("Type the code your app shows now: ", true)?;
                if code.is_empty() {
                    return Err(Failure::new(ErrorCode::InvalidInput, "no code given"));
                }
                let r = enrollment.confirm_totp(&id, &code).await?;
                return report_code_result(&r, json);
            }
            let proof = keys::proof_for_totp(&enrollment).await?;
            let e = enrollment.begin_totp(&proof).await?;
            if json {
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
                    outln!("Scan this with your authenticator app:\n{q}");
                }
                outln!("Or enter this secret by hand: {}", safe(&e.secret_base32));
                outln!(
                    "({}, {} digits, every {} seconds)",
                    safe(&e.algorithm),
                    e.digits,
                    e.period
                );
                outln!("URI: {}", safe(&e.uri));
                if begin {
                    outln!(
                        "Finish with: twofactorctl enroll totp --confirm {} (it asks for the code)",
                        safe(&e.enrollment_id)
                    );
                    return Ok(());
                }
            }
            let _ = std::io::stdout().flush();
            loop {
                let code = read_line("Type the code your app shows now: ", false)?;
                let r = enrollment.confirm_totp(&e.enrollment_id, &code).await?;
                if r.accepted || code.is_empty() || json || !std::io::stdin().is_terminal() {
                    return report_code_result(&r, json);
                }
                errln!("{}", safe_lines(&r.message));
            }
        }
        Command::Recovery {
            action: RecoveryAction::Regenerate,
        } => {
            let code = current_code()?;
            let r = enrollment.regenerate_recovery_codes(&code).await?;
            report_code_result(&r, json)?;
        }
        Command::Enroll {
            factor: EnrollFactor::Key { name },
        } => keys::enroll(&enrollment, &name, json).await?,
        Command::Remove {
            factor: RemoveFactor::Key { name },
        } => keys::remove(&enrollment, &name, json).await?,
        Command::Disable => {
            let code = current_code()?;
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
                let problem = policy_problem(&enrollment).await;
                if json {
                    print_json(&status_json(&s, problem.as_deref())?)?
                } else {
                    print_status(&s, problem.as_deref())
                }
            }
            AdminAction::Require { user } => {
                admin.require(&user).await?;
                if json {
                    print_done("require", &user)?;
                } else {
                    outln!("2FA is now required for {}.", safe(&user));
                }
            }
            AdminAction::Release { user } => {
                admin.release(&user).await?;
                if json {
                    print_done("release", &user)?;
                } else {
                    outln!(
                        "The per-user requirement for {} is removed; the policy file decides.",
                        safe(&user)
                    );
                }
            }
            AdminAction::Reset { user } => {
                admin.reset(&user).await?;
                if json {
                    print_done("reset", &user)?;
                } else {
                    outln!(
                        "All factors and recovery codes of {} were removed.",
                        safe(&user)
                    );
                }
            }
            AdminAction::Unlock { user } => {
                admin.unlock(&user).await?;
                if json {
                    print_done("unlock", &user)?;
                } else {
                    outln!("{} is unlocked.", safe(&user));
                }
            }
            AdminAction::IssueCodes { user } => {
                let r = admin.issue_codes(&user).await?;
                report_code_result(&r, json)?;
            }
            AdminAction::Import {
                source: ImportSource::GoogleAuthenticator { user, file },
            } => {
                // The account first: the file must be the user's own (or root's).
                let account = nix::unistd::User::from_name(&user)
                    .ok()
                    .flatten()
                    .ok_or_else(|| {
                        Failure::new(ErrorCode::NoSuchUser, format!("no such user: {user}"))
                    })?;
                let path = file.unwrap_or_else(|| account.dir.join(".google_authenticator"));
                let owner = safe_open::ExpectedOwner::RootOr {
                    uid: account.uid.as_raw(),
                    name: &user,
                };
                let text = safe_open::read_user_file(&path, owner, MAX_GOOGLE_AUTHENTICATOR_LEN)
                    .map_err(|e| {
                        Failure::new(
                            ErrorCode::InvalidInput,
                            format!("{e}; nothing was imported"),
                        )
                    })?
                    .text;
                let ga = import::parse_google_authenticator(&text).map_err(|e| {
                    Failure::new(
                        ErrorCode::InvalidInput,
                        format!("{}: {e}; nothing was imported", out::path(&path)),
                    )
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
                    outln!("Imported {}: {}", out::path(&path), safe_lines(&message));
                    for m in &ga.mapped {
                        outln!("  mapped:  {}", safe(m));
                    }
                    for d in &ga.dropped {
                        outln!("  dropped: {}", safe(d));
                    }
                }
            }
            AdminAction::Import {
                source: ImportSource::PamU2f(args),
            } => import_pam_u2f(Some(&admin), &args, json).await?,
            AdminAction::Grace { user, extend } => {
                let secs = match extend {
                    None => 0,
                    Some(d) => humantime::parse_duration(&d)
                        .map_err(|e| {
                            Failure::new(ErrorCode::Usage, format!("--extend {d:?}: {e}"))
                        })?
                        .as_secs() as i64,
                };
                admin.grace(&user, secs).await?;
                let s = admin.show(&user).await?;
                if json {
                    print_json(&serde_json::json!({
                        "ok": true,
                        "action": "grace",
                        "user": user,
                        "grace_until": s.grace_until,
                    }))?;
                } else if s.grace_until > 0 {
                    outln!(
                        "The grace period of {} now ends {}.",
                        safe(&user),
                        time(s.grace_until)
                    );
                } else {
                    outln!(
                        "The grace period of {} starts at their next login that requires 2FA.",
                        safe(&user)
                    );
                }
            }
            AdminAction::List { state } => {
                let now = std::time::SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                let (all, partial, notes) = admin.list_users().await?;
                let users: Vec<UserStatus> = all
                    .into_iter()
                    .filter(|u| state.is_none_or(|st| st.matches(u, now)))
                    .collect();
                if json {
                    print_json(&serde_json::json!({
                        "users": users,
                        "partial": partial,
                        "notes": notes,
                    }))?;
                } else {
                    outln!("USER                    UID MODE      ENROLLED RECOVERY LOCKED");
                    for u in users {
                        outln!(
                            "{:<20} {:>6} {:<9} {:<8} {:>8} {}",
                            safe(&u.user),
                            u.uid,
                            safe(&u.mode),
                            if u.enrolled { "yes" } else { "no" },
                            u.recovery_codes_left,
                            if u.locked_until > 0 {
                                time(u.locked_until)
                            } else {
                                "-".into()
                            }
                        );
                    }
                    if partial {
                        errln!(
                            "note: users that 2FA is required of may be missing from this list:"
                        );
                        for n in &notes {
                            errln!("  {}", safe(n));
                        }
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
                        outln!("{}", audit_line(&e));
                    }
                }
            }
            AdminAction::Reload => {
                let msg = admin.reload_policy().await?;
                if json {
                    print_json(&serde_json::json!({
                        "ok": true,
                        "action": "reload",
                        "message": msg,
                    }))?;
                } else {
                    outln!("{}", safe_lines(&msg));
                }
            }
            AdminAction::Backup { file, force } => {
                backup::refuse_existing(&file, force)?;
                let (snapshot, size) = admin.backup().await?;
                let written = backup::write(&file, snapshot.into(), size, force)?;
                if json {
                    print_json(&serde_json::json!({ "file": file, "bytes": written }))?;
                } else {
                    outln!(
                        "Wrote the state ({written} bytes) to {} (mode 0600). It holds every \
                         secret: keep it like /etc/shadow. Restore it with: twofactord restore \
                         FILE (daemon stopped).",
                        out::path(&file)
                    );
                }
            }
        },
        // Answered above, before connecting.
        Command::Completions { .. } => {}
        Command::Doctor { .. } => {}
    }
    Ok(())
}

/// Largest ~/.google_authenticator read (the tool writes well under 1 KiB).
const MAX_GOOGLE_AUTHENTICATOR_LEN: u64 = 64 << 10;
/// Largest pam_u2f authfile read (a central file for thousands of users is far smaller).
const MAX_AUTHFILE_LEN: u64 = 4 << 20;
/// Most bad lines listed when an authfile is refused.
const MAX_LISTED_ERRORS: usize = 20;

/// Reads an authfile through [`safe_open`] and says whose lines it may hold: a root-owned
/// file anyone's, a user's file only that user's. With `--user U`, the file must be U's or
/// root's (the strict reading: naming U does not let root import U's keys from a third
/// user's file).
fn read_authfile(
    path: &std::path::Path,
    only: Option<&str>,
) -> Result<(Zeroizing<String>, Option<String>), Failure> {
    let refused = |e: safe_open::Refused| {
        Failure::new(
            ErrorCode::InvalidInput,
            format!("{e}; nothing was imported"),
        )
    };
    let file = match only {
        Some(name) => {
            let uid = nix::unistd::User::from_name(name)
                .ok()
                .flatten()
                .ok_or_else(|| {
                    Failure::new(ErrorCode::NoSuchUser, format!("no such user: {name}"))
                })?
                .uid
                .as_raw();
            safe_open::read_user_file(
                path,
                safe_open::ExpectedOwner::RootOr { uid, name },
                MAX_AUTHFILE_LEN,
            )
        }
        None => safe_open::read_user_file(path, safe_open::ExpectedOwner::Anyone, MAX_AUTHFILE_LEN),
    }
    .map_err(refused)?;
    if file.owner_uid == 0 {
        return Ok((file.text, None));
    }
    let owner = safe_open::user_name(file.owner_uid).ok_or_else(|| {
        Failure::new(
            ErrorCode::InvalidInput,
            format!(
                "{}: is owned by uid {}, which has no account; nothing was imported",
                out::path(path),
                file.owner_uid
            ),
        )
    })?;
    Ok((file.text, Some(owner)))
}

/// `admin import pam-u2f`: the whole file is parsed and checked first (all or nothing), then
/// each user's keys go to the daemon in one `ImportKeys` call, which stores all of them or
/// none. `admin` is `None` for a dry run.
async fn import_pam_u2f(
    admin: Option<&AdminProxy<'_>>,
    args: &PamU2fArgs,
    json: bool,
) -> Result<(), Failure> {
    #[derive(Serialize)]
    struct KeyRow {
        name: String,
        line: usize,
        algorithm: &'static str,
        rp_id: String,
        user_verification: bool,
        presence: bool,
        old_format: bool,
    }
    #[derive(Serialize)]
    struct UserRow {
        user: String,
        line: usize,
        keys: Vec<KeyRow>,
        imported: bool,
        message: String,
        error: Option<String>,
    }

    let path = &args.file;
    // pam_u2f's default origin, so that keys registered with its defaults keep working.
    let origin = args.origin.clone().unwrap_or_else(|| {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        format!("pam://{host}")
    });
    let appid = args.appid.clone().unwrap_or_else(|| origin.clone());
    for (flag, value) in [("--origin", &origin), ("--appid", &appid)] {
        if value.is_empty() || value.len() > 255 || !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Failure::new(
                ErrorCode::Usage,
                format!(
                    "{flag} {value:?}: an rp id is 1 to 255 printable characters without spaces"
                ),
            ));
        }
    }
    let (text, owner) = read_authfile(path, args.user.as_deref())?;
    let file_owner = match &owner {
        None => import_u2f::FileOwner::Root,
        Some(name) => import_u2f::FileOwner::User(name),
    };
    let located = |e: &import::ImportError| match e.line {
        Some(l) => format!("{}:{l}: {}", out::path(path), safe(&e.message)),
        None => format!("{}: {}", out::path(path), safe(&e.message)),
    };
    let users = import_u2f::parse_authfile(&text, file_owner)
        .and_then(|users| import_u2f::select_users(users, args.user.as_deref()))
        .map_err(|errors| {
            if let [one] = errors.as_slice() {
                return Failure::new(
                    ErrorCode::InvalidInput,
                    format!("{}; nothing was imported", located(one)),
                );
            }
            // Under --json the list goes into the one error object.
            let mut listed: Vec<String> =
                errors.iter().take(MAX_LISTED_ERRORS).map(located).collect();
            if errors.len() > MAX_LISTED_ERRORS {
                listed.push(format!("... and {} more", errors.len() - MAX_LISTED_ERRORS));
            }
            let summary = format!(
                "{}: {} problems; nothing was imported",
                out::path(path),
                errors.len()
            );
            if json {
                listed.push(summary);
                return Failure::new(ErrorCode::InvalidInput, listed.join("\n"));
            }
            for line in &listed {
                errln!("twofactorctl: {line}");
            }
            Failure::new(ErrorCode::InvalidInput, summary)
        })?;

    let mut rows = Vec::with_capacity(users.len());
    let mut refused: Option<Failure> = None;
    let mut refusals = 0usize;
    let mut fatal = None;
    for u in &users {
        let imports = u.key_imports(&origin, &appid);
        let keys: Vec<KeyRow> = u
            .credentials
            .iter()
            .zip(&imports)
            .map(|(c, k)| KeyRow {
                name: k.name.clone(),
                line: c.line,
                algorithm: c.algorithm.as_str(),
                rp_id: k.rp_id.clone(),
                user_verification: c.user_verification,
                presence: c.presence,
                old_format: c.legacy,
            })
            .collect();
        let outcome = match admin {
            None => Ok(None),
            Some(a) => a.import_keys(&u.name, &imports).await.map(Some),
        };
        let mut row = UserRow {
            user: u.name.clone(),
            line: u.line,
            keys,
            imported: false,
            message: String::new(),
            error: None,
        };
        let from = format!("{} line {}", out::path(path), u.line);
        match outcome {
            Ok(message) => {
                row.imported = message.is_some();
                row.message = message.unwrap_or_default();
                if !json {
                    let n = row.keys.len();
                    let keys = if n == 1 { "key" } else { "keys" };
                    let verb = if row.imported {
                        "Imported"
                    } else {
                        "Would import"
                    };
                    outln!("{verb} {n} {keys} for {} ({from}):", safe(&u.name));
                    for k in &row.keys {
                        outln!(
                            "  {}: {}, {}, rp {}{}",
                            safe(&k.name),
                            k.algorithm,
                            if k.user_verification {
                                "touch and PIN or built-in verification"
                            } else {
                                "touch"
                            },
                            safe(&k.rp_id),
                            if k.old_format {
                                " (old U2F format: registered for the appid)"
                            } else {
                                ""
                            }
                        );
                        if !k.presence {
                            outln!(
                                "    note: pam_u2f did not ask for a touch (no +presence); \
                                 twofactor always does"
                            );
                        }
                    }
                    // The daemon's own word (it may add warnings, e.g. about the rp id).
                    for line in row.message.lines() {
                        outln!("  {}", safe(line));
                    }
                }
            }
            Err(e) => {
                // The same for every user: stop at the first.
                let stop = matches!(e, BusError::ZBus(_) | BusError::AccessDenied(_));
                let failure = Failure::from(e);
                if stop {
                    fatal = Some(failure);
                    break;
                }
                if !json {
                    errln!(
                        "twofactorctl: {} ({from}): not imported: {}",
                        safe(&u.name),
                        safe_lines(&failure.message)
                    );
                }
                row.error = Some(failure.message.clone());
                refusals += 1;
                refused = Some(failure);
            }
        }
        rows.push(row);
    }
    if json {
        print_json(&serde_json::json!({
            "file": path,
            "owner": owner.as_deref().unwrap_or("root"),
            "origin": origin,
            "appid": appid,
            "dry_run": admin.is_none(),
            "users": rows,
        }))?;
    }
    if let Some(f) = fatal {
        let done: Vec<&str> = rows
            .iter()
            .filter(|r| r.imported)
            .map(|r| r.user.as_str())
            .collect();
        if done.is_empty() {
            return Err(f);
        }
        return Err(Failure::new(
            f.code,
            format!("{}; already imported: {}", f.message, done.join(", ")),
        ));
    }
    if let Some(Failure { code, .. }) = refused {
        let message = if refusals == users.len() {
            "nothing was imported".to_string()
        } else {
            format!(
                "{refusals} of {} users were not imported; the others were",
                users.len()
            )
        };
        return Err(Failure::new(code, message));
    }
    if admin.is_none() && !json {
        let keys: usize = rows.iter().map(|r| r.keys.len()).sum();
        outln!(
            "Dry run: {} users and {keys} keys checked; nothing was imported.",
            rows.len()
        );
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
    Err(Failure::new(
        ErrorCode::Usage,
        format!("--since {s:?}: give a time (2026-11-22T10:00:00Z) or an age (2h)"),
    ))
}

/// Whether the arguments use the removed `--code` (before a `--`, which ends the options).
/// Checked before parsing, to say why rather than clap's "unexpected argument".
fn uses_removed_code_flag(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    args.into_iter()
        .take_while(|a| a != "--")
        .any(|a| a == "--code" || a.as_encoded_bytes().starts_with(b"--code="))
}

/// Whether `--json` is among the options (before a `--`): known before parsing, so that a
/// usage error is reported as JSON too.
fn asks_for_json(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    args.into_iter()
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

/// Reports `failure` on standard error: a line of text, or under `--json` one JSON object
/// `{"error":{"code":...,"message":...}}`. Nothing for an empty message (the output said it).
fn report_failure(failure: &Failure, json: bool) {
    if failure.message.is_empty() {
        return;
    }
    if !json {
        errln!("twofactorctl: {}", safe_lines(&failure.message));
        return;
    }
    let value = serde_json::json!({
        "error": {
            "code": failure.code.as_str(),
            "message": failure.message,
        }
    });
    match serde_json::to_string(&value) {
        Ok(text) => errln!("{}", out::json_safe(&text)),
        Err(_) => errln!(
            "{{\"error\":{{\"code\":\"{}\",\"message\":\"\"}}}}",
            failure.code.as_str()
        ),
    }
}

fn main() -> ExitCode {
    let json = asks_for_json(std::env::args_os().skip(1));
    out::set_json_mode(json);
    let fail = |f: Failure| {
        report_failure(&f, json);
        ExitCode::from(f.exit_status())
    };
    if uses_removed_code_flag(std::env::args_os().skip(1)) {
        return fail(Failure::new(
            ErrorCode::Usage,
            "--code was removed: a code on the command line can be read by every user of this \
             machine. Type it when asked, or give it as one line on standard input (echo \
             \"$code\" | twofactorctl ...).",
        ));
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version (and their errors without --json) as clap prints them.
        Err(e) if !json || !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.render().to_string();
            return fail(Failure::new(ErrorCode::Usage, text.trim_end()));
        }
    };
    match zbus::block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => fail(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<std::ffi::OsString> {
        list.iter().map(std::ffi::OsString::from).collect()
    }

    #[test]
    fn the_removed_code_flag_is_recognised_in_every_form() {
        for list in [
            &["disable", "--code", "123456"][..],
            &["disable", "--code=123456"],
            &["--code", "1", "recovery", "regenerate"],
            &["enroll", "totp", "--confirm", "ID", "--code"],
        ] {
            assert!(uses_removed_code_flag(args(list)), "{list:?}");
        }
        for list in [
            &["disable"][..],
            &["enroll", "key", "--name=--code"],
            &["remove", "key", "--", "--code"],
            &["admin", "audit", "--user", "--codes"],
        ] {
            assert!(!uses_removed_code_flag(args(list)), "{list:?}");
        }
    }

    /// Every argument of every command says what it is in `--help`.
    #[test]
    fn every_argument_has_a_description() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{path} {} (the command)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "twofactorctl", &mut missing);
        assert_eq!(missing, Vec::<String>::new());
    }

    #[test]
    fn json_is_recognised_before_parsing() {
        assert!(asks_for_json(args(&["--json", "admin", "require"])));
        assert!(asks_for_json(args(&["admin", "require", "x", "--json"])));
        assert!(!asks_for_json(args(&["admin", "require", "--", "--json"])));
        assert!(!asks_for_json(args(&["status"])));
    }

    fn entry(service: &str, rhost: &str, actor: &str) -> twofactor_bus::AuditEntry {
        twofactor_bus::AuditEntry {
            time: 0,
            user: "tf-alice".into(),
            event: "login".into(),
            result: "failure".into(),
            service: service.into(),
            rhost: rhost.into(),
            actor: actor.into(),
            detail: String::new(),
        }
    }

    #[test]
    fn a_login_asked_for_by_a_service_says_via_which_not_by_root() {
        let line = audit_line(&entry("sshd", "192.0.2.7", "root"));
        assert!(line.ends_with(" via sshd from 192.0.2.7"), "{line}");
        assert!(!line.contains("by=root"), "{line}");
        let line = audit_line(&entry("login", "", "root"));
        assert!(line.ends_with(" via login"), "{line}");
        // Anything else keeps its fields: an admin's action, a user's own PAM stack.
        let line = audit_line(&entry("", "", "root"));
        assert!(line.ends_with(" by=root"), "{line}");
        let line = audit_line(&entry("xscreensaver", "", "tf-alice"));
        assert!(
            line.ends_with(" service=xscreensaver by=tf-alice"),
            "{line}"
        );
        // Escaped either way.
        let line = audit_line(&entry("sshd\n", "1\x1b", "root"));
        assert!(line.ends_with(" via sshd\\n from 1\\x1b"), "{line}");
    }

    #[test]
    fn no_command_takes_a_code_argument() {
        for list in [
            &["twofactorctl", "disable", "123456"][..],
            &["twofactorctl", "recovery", "regenerate", "123456"],
            &[
                "twofactorctl",
                "enroll",
                "totp",
                "--confirm",
                "ID",
                "123456",
            ],
            &["twofactorctl", "enroll", "key", "--name", "k", "123456"],
            &["twofactorctl", "remove", "key", "k", "123456"],
        ] {
            let e = Cli::try_parse_from(list).map(|_| ()).unwrap_err();
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::UnknownArgument,
                "{list:?}"
            );
        }
        Cli::command().debug_assert();
    }
}
