//! `twofactorctl doctor`: is this machine set up so that the second factor does what the policy
//! says? Each check reports `ok`, `warning` or `error`, the finding, and what to do about it.
//!
//! The checks only read: the kernel clock, the daemon on the bus, the policy file (through
//! `twofactord --check`), owners and modes of the policy and state, the PAM stacks, and
//! `sshd -T`. Each part sits in its own submodule with its interpretation separated from the
//! reading, so the tests feed it fixtures.

mod clock;
mod clock_sys;
mod files;
mod pam;
mod sshd;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::failure::{ErrorCode, Failure};
use crate::out::outln;

/// Where doctor looks (defaults: the installed locations).
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// The policy file.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/twofactor/policy.toml"
    )]
    pub policy: PathBuf,
    /// The daemon's state directory.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/twofactord")]
    pub state_dir: PathBuf,
    /// The PAM service directory.
    #[arg(long, value_name = "DIR", default_value = "/etc/pam.d")]
    pub pam_dir: PathBuf,
    /// sshd configuration file to check (`sshd -T -f FILE`; default: sshd's own).
    #[arg(long, value_name = "FILE")]
    pub sshd_config: Option<PathBuf>,
    /// Do not count the findings of this check (e.g. `clock` in a container whose host keeps
    /// the time): they are still shown, marked skipped. May be given more than once.
    #[arg(long, value_name = "CHECK")]
    pub skip: Vec<String>,
}

/// How bad a finding is. Any `Error` makes doctor exit 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Nothing to do.
    Ok,
    /// Works, but probably not as intended, or could not be checked.
    Warning,
    /// The second factor can be bypassed, or logins fail.
    Error,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Which check: `clock`, `daemon`, `policy`, `policy-file`, `state-dir`, `pam/SERVICE`,
    /// `sshd`.
    pub check: String,
    /// ok, warning or error.
    pub level: Level,
    /// What was found.
    pub message: String,
    /// What to do (`None` when there is nothing to do).
    pub fix: Option<String>,
}

impl Finding {
    /// Nothing to do.
    pub fn ok(check: &str, message: impl Into<String>) -> Finding {
        Finding {
            check: check.into(),
            level: Level::Ok,
            message: message.into(),
            fix: None,
        }
    }

    /// A warning with what to do.
    pub fn warning(check: &str, message: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            check: check.into(),
            level: Level::Warning,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    /// An error with what to do.
    pub fn error(check: &str, message: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            check: check.into(),
            level: Level::Error,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    /// The one-line text form.
    pub fn line(&self) -> String {
        let mut line = format!("{:<8}{}: {}", self.level.word(), self.check, self.message);
        if let Some(fix) = &self.fix {
            line.push_str(" -- fix: ");
            line.push_str(fix);
        }
        line
    }
}

/// Runs every check, prints the report, and fails (exit 1, no message) if any check found an
/// error.
pub async fn run(options: &Options, bus: Option<&str>, json: bool) -> Result<(), Failure> {
    let mut findings = vec![clock::check()];
    findings.push(check_daemon(bus).await);
    findings.extend(files::check_policy(
        &options.policy,
        files::twofactord_command().as_deref(),
    ));
    findings.extend(files::check_policy_permissions(&options.policy, 0));
    findings.extend(files::check_state_dir(
        &options.state_dir,
        &files::state_owners(),
    ));
    findings.extend(files::check_link_protection(Path::new(
        "/proc/sys/fs/protected_hardlinks",
    )));
    let applies = twofactor_applies(std::fs::read_to_string(&options.policy).ok().as_deref());
    let context = pam::Context {
        pam_dir: options.pam_dir.clone(),
        module_dirs: pam::system_module_dirs(),
        twofactor_applies: applies,
    };
    let mut sshd_stack = None;
    for service in pam::SERVICES {
        let report = pam::analyse(service, &context);
        if *service == "sshd" {
            sshd_stack = report.stack;
        }
        findings.extend(report.findings);
    }
    findings.extend(sshd::check(options.sshd_config.as_deref(), sshd_stack));
    skip(&mut findings, &options.skip);
    report(&findings, json)?;
    if findings.iter().any(|f| f.level == Level::Error) {
        // The report said it all; exit status 1.
        return Err(Failure::new(ErrorCode::Internal, String::new()));
    }
    Ok(())
}

/// Marks the findings of the checks named in `skipped` (by check name, or its prefix before
/// `/`: `pam` skips every `pam/SERVICE`) as skipped: shown, but not counted.
fn skip(findings: &mut [Finding], skipped: &[String]) {
    for f in findings.iter_mut() {
        let family = f.check.split('/').next().unwrap_or_default();
        if f.level != Level::Ok && skipped.iter().any(|s| *s == f.check || *s == family) {
            f.message = format!("(skipped: was {}) {}", f.level.word(), f.message);
            f.level = Level::Ok;
        }
    }
}

/// Prints the findings: one line each (and a count), or a JSON array.
fn report(findings: &[Finding], json: bool) -> Result<(), Failure> {
    if json {
        return crate::print_json(&findings);
    }
    for f in findings {
        // Messages quote files and other programs' output: escaped.
        outln!("{}", crate::out::display_safe_lines(&f.line()));
    }
    outln!("{}", summary(findings));
    Ok(())
}

fn summary(findings: &[Finding]) -> String {
    let count = |l| findings.iter().filter(|f| f.level == l).count();
    let (e, w) = (count(Level::Error), count(Level::Warning));
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    format!("doctor: {}, {}", plural(e, "error"), plural(w, "warning"))
}

/// Does the policy mean 2FA to apply to anyone? (A missing file: the built-in policy, whose
/// default_mode is "optional".) An unreadable or invalid file counts as yes: the policy check
/// reports it, and the PAM checks should then not stay quiet.
pub fn twofactor_applies(policy: Option<&str>) -> bool {
    let Some(text) = policy else {
        return true;
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return true;
    };
    let not_disabled = |v: Option<&toml::Value>| v.and_then(|m| m.as_str()) != Some("disabled");
    if not_disabled(table.get("default_mode")) {
        return true;
    }
    ["groups", "users", "services"].iter().any(|section| {
        table
            .get(*section)
            .and_then(|s| s.as_table())
            .is_some_and(|rules| {
                rules
                    .values()
                    .any(|rule| rule.get("mode").is_some() && not_disabled(rule.get("mode")))
            })
    })
}

/// Asks the daemon for the caller's status (`Enrollment.Status("")`), the call every user may
/// make.
async fn check_daemon(bus: Option<&str>) -> Finding {
    const CHECK: &str = "daemon";
    let which = bus.map_or_else(|| "the system bus".to_string(), |a| a.to_string());
    let builder = match bus {
        Some(a) => zbus::connection::Builder::address(a),
        None => zbus::connection::Builder::system(),
    };
    let conn = match builder
        .method_timeout(Duration::from_secs(10))
        .build()
        .await
    {
        Ok(c) => c,
        Err(e) => {
            return Finding::error(
                CHECK,
                format!("cannot connect to {which}: {e}"),
                "check the bus: systemctl status dbus",
            );
        }
    };
    let proxy = match twofactor_bus::EnrollmentProxy::new(&conn).await {
        Ok(proxy) => proxy,
        Err(e) => {
            return Finding::error(
                CHECK,
                Failure::from(twofactor_bus::BusError::ZBus(e)).message,
                "systemctl status twofactord; journalctl -u twofactord",
            );
        }
    };
    let status = proxy.status("").await;
    // The daemon serves its last good policy copy because the file was refused: logins work,
    // but not by the policy the admin sees in the file.
    if status.is_ok()
        && let Ok((in_force, problem)) = proxy.policy_status().await
        && !problem.is_empty()
    {
        return Finding::error(
            CHECK,
            format!("twofactord answers on {which} but does not use the policy file: {problem}"),
            format!(
                "fix the policy file (twofactord --check), then systemctl reload twofactord; \
                 until then {in_force} is in force"
            ),
        );
    }
    match status {
        Ok(s) => Finding::ok(
            CHECK,
            format!(
                "twofactord answers on {which} ({} has mode \"{}\": {})",
                s.user, s.mode, s.rule
            ),
        ),
        Err(e) => Finding::error(
            CHECK,
            Failure::from(e).message,
            "systemctl status twofactord; journalctl -u twofactord",
        ),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn skipped_checks_are_shown_but_not_counted() {
        let mut f = vec![
            Finding::error("clock", "not synchronized", "enable NTP"),
            Finding::error("pam/sshd", "locks out", "add pam_permit"),
            Finding::warning("pam/su", "fragile", "fix it"),
            Finding::error("sshd", "KbdInteractiveAuthentication no", "yes"),
        ];
        skip(&mut f, &["clock".to_string(), "pam".to_string()]);
        let levels: Vec<Level> = f.iter().map(|f| f.level).collect();
        assert_eq!(levels, [Level::Ok, Level::Ok, Level::Ok, Level::Error]);
        assert!(
            f[0].message
                .starts_with("(skipped: was error) not synchronized")
        );
        assert!(f[2].message.starts_with("(skipped: was warning)"));
        assert_eq!(summary(&f), "doctor: 1 error, 0 warnings");
    }

    use super::*;

    #[test]
    fn lines_say_level_check_finding_and_fix() {
        let f = Finding::error("pam/sudo", "bad", "do this");
        assert_eq!(f.line(), "error   pam/sudo: bad -- fix: do this");
        let f = Finding::ok("clock", "fine");
        assert_eq!(f.line(), "ok      clock: fine");
        let f = Finding::warning("sshd", "hmm", "look");
        assert_eq!(f.line(), "warning sshd: hmm -- fix: look");
    }

    #[test]
    fn json_has_check_level_message_fix() {
        let v = serde_json::to_value(vec![
            Finding::ok("clock", "fine"),
            Finding::error("daemon", "down", "start it"),
        ])
        .unwrap_or_default();
        assert_eq!(
            v,
            serde_json::json!([
                {"check": "clock", "level": "ok", "message": "fine", "fix": null},
                {"check": "daemon", "level": "error", "message": "down", "fix": "start it"},
            ])
        );
    }

    #[test]
    fn summary_counts() {
        let f = vec![
            Finding::ok("a", "x"),
            Finding::warning("b", "x", "y"),
            Finding::error("c", "x", "y"),
            Finding::error("d", "x", "y"),
        ];
        assert_eq!(summary(&f), "doctor: 2 errors, 1 warning");
        assert_eq!(summary(&[]), "doctor: 0 errors, 0 warnings");
    }

    #[test]
    fn policy_intent() {
        // Missing file: the built-in policy is "optional".
        assert!(twofactor_applies(None));
        assert!(twofactor_applies(Some("")));
        assert!(twofactor_applies(Some("default_mode = \"required\"\n")));
        assert!(!twofactor_applies(Some("default_mode = \"disabled\"\n")));
        assert!(twofactor_applies(Some(
            "default_mode = \"disabled\"\n[groups.wheel]\nmode = \"required\"\n"
        )));
        assert!(twofactor_applies(Some(
            "default_mode = \"disabled\"\n[services.sudo]\nmode = \"required\"\n"
        )));
        assert!(!twofactor_applies(Some(
            "default_mode = \"disabled\"\n[users.bob]\nmode = \"disabled\"\n[login]\nattempts = 3\n"
        )));
        // Invalid: assume it applies (the policy check reports the file).
        assert!(twofactor_applies(Some("default_mode = ")));
    }

    #[test]
    fn unreachable_bus_is_an_error() {
        let f = zbus::block_on(check_daemon(Some(
            "unix:path=/nonexistent/twofactor-doctor",
        )));
        assert_eq!(f.level, Level::Error, "{f:?}");
        assert!(f.message.contains("cannot connect"), "{f:?}");
    }
}
