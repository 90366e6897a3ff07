//! The C boundary: PAM entry points and syslog. The only unsafe code of the module.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};

use pam::constants::{PAM_SILENT, PamFlag, PamResultCode};
use pam::conv::Conv;
use pam::items::{RHost, Service, Tty};
use pam::module::PamHandle;
use twofactor_key::Authenticator;

use crate::args::ModuleArgs;
use crate::conversation::{Conversation, PamConversation, Silent};
use crate::login;
use crate::outcome::{Verdict, pam_code};
use crate::session;

/// Writes one line to syslog (authpriv). No `openlog`: the host program's ident stays.
/// The text of a syslog line. The service name, the user name and the daemon's words are not
/// the module's own: every control character in them is shown as an escape (no forged syslog
/// line, no terminal control for whoever reads the log), and so is a NUL.
fn syslog_line(service: &str, msg: &str) -> String {
    twofactor_bus::text::display_safe(&format!("pam_twofactor({service}): {msg}")).into_owned()
}

fn syslog(error: bool, service: &str, msg: &str) {
    let prio = libc::LOG_AUTHPRIV | if error { libc::LOG_ERR } else { libc::LOG_INFO };
    if let Ok(c) = CString::new(syslog_line(service, msg)) {
        // SAFETY: the format is a literal "%s" and its one argument a valid NUL-terminated string.
        unsafe { libc::syslog(prio, c"%s".as_ptr(), c.as_ptr()) };
    }
}

fn item_string(c: Option<&CStr>) -> String {
    c.map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn authenticate_inner(
    pamh: &mut PamHandle,
    args: &[&CStr],
    flags: PamFlag,
    authenticator: &dyn Authenticator,
) -> PamResultCode {
    let service = pamh
        .get_item::<Service<'_>>()
        .ok()
        .flatten()
        .map(|s| item_string(Some(s.0)))
        .unwrap_or_default();
    let strs: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let args = match ModuleArgs::parse(strs.iter().map(String::as_str)) {
        Ok(a) => a,
        Err(e) => {
            syslog(true, &service, &format!("bad module arguments: {e}"));
            return pam_code(Verdict::Misconfigured, crate::FailMode::Closed).to_pam();
        }
    };
    let user = match pamh.get_user(None) {
        Ok(u) => u,
        Err(code) => {
            syslog(true, &service, "cannot get the user name");
            return code;
        }
    };
    let rhost = item_string(pamh.get_item::<RHost<'_>>().ok().flatten().map(|r| r.0));
    let tty = item_string(pamh.get_item::<Tty<'_>>().ok().flatten().map(|t| t.0));
    let conv = match pamh.get_item::<Conv<'_>>() {
        Ok(Some(c)) => c,
        _ => {
            syslog(
                true,
                &service,
                "the application has no conversation function",
            );
            return pam_code(Verdict::ConversationFailed, args.failmode).to_pam();
        }
    };
    let mut pam_conversation = PamConversation(conv);
    // PAM_SILENT: the application wants no messages, only the prompts.
    let mut silent;
    let conversation: &mut dyn Conversation = if flags & PAM_SILENT != 0 {
        silent = Silent(&mut pam_conversation);
        &mut silent
    } else {
        &mut pam_conversation
    };
    // Only a local login on a terminal can be remembered: only then is the session identified.
    let session = if rhost.is_empty() && !tty.is_empty() {
        session::identity(&tty)
    } else {
        String::new()
    };
    let context = [
        ("service", service.as_str()),
        ("rhost", rhost.as_str()),
        ("tty", tty.as_str()),
        ("session", session.as_str()),
    ];
    let log = |error: bool, msg: &str| {
        if error || args.debug {
            syslog(error, &service, msg);
        }
    };
    let mut verdict = login::authenticate(
        &args.bus,
        args.timeout,
        conversation,
        authenticator,
        &user,
        &context,
        &log,
    );
    if verdict == Verdict::Unreachable && args.failmode == crate::FailMode::Closed {
        verdict = login::unreachable_verdict(args.offline.as_deref(), &user, &service, &log);
    }
    let code = pam_code(verdict, args.failmode);
    if verdict == Verdict::Unreachable && args.failmode == crate::FailMode::Closed {
        let _ = conversation.error(
            "Two-factor authentication is unavailable right now; the login is refused. \
             Try again later or contact your administrator.",
        );
    }
    if verdict == Verdict::Unreachable && args.failmode == crate::FailMode::Open {
        syslog(
            true,
            &service,
            &format!(
                "twofactord unreachable: failmode=open lets the login of {user} through without a second factor"
            ),
        );
    }
    if args.debug {
        syslog(
            false,
            &service,
            &format!("user {user}: {verdict:?} -> {code:?}"),
        );
    }
    code.to_pam()
}

/// `pam_sm_authenticate`: runs the login with `authenticator` for security-key steps. `flags`
/// are the application's: with `PAM_SILENT`, no informational or error message is shown.
///
/// pam-bindings also catches panics (as PAM_ABORT); this keeps the answer "unavailable".
pub fn authenticate(
    pamh: &mut PamHandle,
    args: &[&CStr],
    flags: PamFlag,
    authenticator: &dyn Authenticator,
) -> PamResultCode {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        authenticate_inner(pamh, args, flags, authenticator)
    }))
    .unwrap_or(PamResultCode::PAM_AUTHINFO_UNAVAIL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_lines_cannot_be_forged_by_names_or_replies() {
        let line = syslog_line(
            "sshd\nx",
            "user alice\n\rpam_twofactor(sshd): root login \x1b[2Jsuccess\0",
        );
        assert!(!line.chars().any(char::is_control), "{line}");
        assert!(line.contains("\\n") && line.contains("\\x1b") && line.contains("\\x00"));
        assert!(CString::new(line).is_ok());
        assert_eq!(syslog_line("su", "plain"), "pam_twofactor(su): plain");
    }
}
