//! sshd: with pam_twofactor in sshd's PAM stack, is sshd set up to run that stack, to let it
//! ask for a code, and not to let users in some other way? Read from `sshd -T` (the effective
//! configuration).
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::Finding;
use super::pam::StackFacts;

const CHECK: &str = "sshd";

/// For Match blocks that need a connection to evaluate.
const CONNECTION_SPEC: &str = "user=root,host=localhost,addr=127.0.0.1";

/// Methods that log in without sshd's PAM auth stack.
const NON_PAM_METHODS: &[&str] = &["publickey", "hostbased", "gssapi-with-mic"];

/// `sshd -T` output: keyword (lower case) → value. A keyword printed more than once keeps its
/// first value (the ones looked at here are printed once).
#[derive(Debug, Clone, Default)]
pub struct SshdConfig(HashMap<String, String>);

impl SshdConfig {
    /// Parses `sshd -T` output.
    pub fn parse(text: &str) -> SshdConfig {
        let mut map = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            let (key, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            if !key.is_empty() {
                map.entry(key.to_ascii_lowercase())
                    .or_insert_with(|| value.trim().to_string());
            }
        }
        SshdConfig(map)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn yes(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| v.eq_ignore_ascii_case("yes"))
    }
}

fn kbdint(method: &str) -> bool {
    method == "keyboard-interactive" || method.starts_with("keyboard-interactive:")
}

/// The sets of methods that each log a user in: `AuthenticationMethods`, or (for `any`) every
/// enabled method on its own.
fn method_lists(cfg: &SshdConfig) -> Vec<Vec<String>> {
    match cfg.get("authenticationmethods") {
        Some(v) if !v.is_empty() && v != "any" => v
            .split_whitespace()
            .map(|list| list.split(',').map(str::to_string).collect())
            .collect(),
        _ => [
            ("publickey", "pubkeyauthentication"),
            ("password", "passwordauthentication"),
            ("keyboard-interactive", "kbdinteractiveauthentication"),
            ("hostbased", "hostbasedauthentication"),
            ("gssapi-with-mic", "gssapiauthentication"),
        ]
        .into_iter()
        .filter(|(method, key)| {
            cfg.yes(key)
                || (*method == "keyboard-interactive"
                    && cfg.get(key).is_none()
                    && cfg.yes("challengeresponseauthentication"))
        })
        .map(|(method, _)| vec![method.to_string()])
        .collect(),
    }
}

/// Judges sshd's effective configuration, given sshd's PAM stack.
pub fn judge(cfg: &SshdConfig, stack: StackFacts) -> Vec<Finding> {
    let mut findings = Vec::new();
    if !cfg.yes("usepam") {
        findings.push(Finding::error(
            CHECK,
            "UsePAM is no: sshd never runs its PAM stack, so SSH logins are never asked for a \
             code although pam_twofactor.so is in it",
            "UsePAM yes in sshd_config, then `systemctl reload ssh`",
        ));
        return findings;
    }
    let kbd_key = if cfg.get("kbdinteractiveauthentication").is_some() {
        "kbdinteractiveauthentication"
    } else {
        "challengeresponseauthentication"
    };
    let kbd_on = cfg.yes(kbd_key);
    if !kbd_on {
        // The module is in sshd's stack, yet key logins skip it: an error, not a warning.
        findings.push(Finding::error(
            CHECK,
            "KbdInteractiveAuthentication is no: sshd cannot show the code prompt; SSH logins \
             are not asked for a code (with a key they skip it, with a password they fail)",
            "KbdInteractiveAuthentication yes in sshd_config (ChallengeResponseAuthentication \
             before OpenSSH 8.7)",
        ));
    }
    let lists = method_lists(cfg);
    let explicit = cfg
        .get("authenticationmethods")
        .is_some_and(|v| !v.is_empty() && v != "any");
    let enabled = |m: &str| lists.iter().any(|l| l.iter().any(|x| x == m));
    let password_usable = enabled("password") && cfg.yes("passwordauthentication");
    // Sets of methods that log in without the code prompt.
    let without_code: Vec<String> = lists
        .iter()
        .filter(|l| !l.iter().any(|m| kbdint(m) || m == "password"))
        .map(|l| l.join(","))
        .collect();
    if !without_code.is_empty() {
        let msg = if explicit {
            format!(
                "AuthenticationMethods lets users in with {} alone, which never runs the PAM \
                 auth stack: SSH logins that way are not asked for a code",
                without_code.join(" or ")
            )
        } else {
            format!(
                "AuthenticationMethods is not set, so one method suffices, and {} never runs \
                 the PAM auth stack: SSH logins that way are not asked for a code",
                without_code.join(" or ")
            )
        };
        findings.push(Finding::warning(
            CHECK,
            msg,
            "AuthenticationMethods publickey,keyboard-interactive (key + code) or \
             keyboard-interactive (password + code) in sshd_config",
        ));
    }
    if !stack.password {
        // PAM checks no first factor here: sshd must, before keyboard-interactive.
        let unguarded: Vec<String> = lists
            .iter()
            .filter(|l| {
                l.iter().any(|m| kbdint(m))
                    && !l.iter().any(|m| NON_PAM_METHODS.contains(&m.as_str()))
            })
            .map(|l| l.join(","))
            .collect();
        if !unguarded.is_empty() && kbd_on {
            findings.push(Finding::error(
                CHECK,
                format!(
                    "sshd's PAM stack checks no password, and {} logs in through PAM alone: a \
                     code is the only secret, and users to whom 2FA does not apply need none",
                    unguarded.join(" or ")
                ),
                "AuthenticationMethods publickey,keyboard-interactive in sshd_config, or \
                 `@include common-auth` before pam_twofactor.so in the sshd PAM file",
            ));
        }
    }
    if password_usable {
        findings.push(Finding::warning(
            CHECK,
            "PasswordAuthentication is yes: sshd's password method answers every PAM prompt \
             with the password, so the password is sent as the code: such logins of users with \
             2FA fail, and count towards their lockout",
            "PasswordAuthentication no in sshd_config (the password is still asked, through \
             keyboard-interactive)",
        ));
    }
    if findings.is_empty() {
        findings.push(Finding::ok(
            CHECK,
            format!(
                "UsePAM yes, KbdInteractiveAuthentication yes, AuthenticationMethods {}",
                cfg.get("authenticationmethods").unwrap_or("any")
            ),
        ));
    }
    findings
}

fn sshd_binary() -> Option<PathBuf> {
    let known = ["/usr/sbin/sshd", "/usr/bin/sshd", "/sbin/sshd"]
        .into_iter()
        .map(PathBuf::from);
    let in_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("sshd"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    known.chain(in_path).find(|p| p.is_file())
}

/// `sshd -T [-f FILE]`, again with `-C` if sshd wants a connection for Match blocks.
fn sshd_t(sshd: &Path, config: Option<&Path>) -> Result<String, String> {
    let run = |with_spec: bool| {
        let mut cmd = Command::new(sshd);
        cmd.arg("-T");
        if let Some(f) = config {
            cmd.arg("-f").arg(f);
        }
        if with_spec {
            cmd.args(["-C", CONNECTION_SPEC]);
        }
        cmd.output()
            .map_err(|e| format!("cannot run {}: {e}", sshd.display()))
    };
    let out = run(false)?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let out2 = run(true)?;
    if out2.status.success() {
        return Ok(String::from_utf8_lossy(&out2.stdout).into_owned());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(format!(
        "{} -T failed: {}",
        sshd.display(),
        err.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    ))
}

/// The sshd check: only meaningful when pam_twofactor is in sshd's PAM stack.
pub fn check(config: Option<&Path>, stack: Option<StackFacts>) -> Vec<Finding> {
    let Some(stack) = stack.filter(|s| s.twofactor) else {
        return vec![Finding::ok(
            CHECK,
            "pam_twofactor.so is not in sshd's PAM stack: sshd's settings do not matter to it",
        )];
    };
    if !nix::unistd::geteuid().is_root() {
        return vec![Finding::warning(
            CHECK,
            "not checked: `sshd -T` needs root",
            "run twofactorctl doctor as root",
        )];
    }
    let Some(sshd) = sshd_binary() else {
        return vec![Finding::warning(
            CHECK,
            "sshd's PAM stack loads pam_twofactor.so, but sshd is not installed here: not checked",
            "install openssh-server, or check UsePAM, KbdInteractiveAuthentication and \
             AuthenticationMethods by hand",
        )];
    };
    match sshd_t(&sshd, config) {
        Ok(text) => judge(&SshdConfig::parse(&text), stack),
        Err(e) => vec![Finding::warning(
            CHECK,
            format!("not checked: {e}"),
            "fix the configuration (`sshd -t` shows the problem)",
        )],
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::super::Level;
    use super::*;

    const WITH_PASSWORD: StackFacts = StackFacts {
        twofactor: true,
        password: true,
    };
    const KEY_AND_CODE: StackFacts = StackFacts {
        twofactor: true,
        password: false,
    };

    /// `sshd -T`-like output: Debian's defaults with `extra` lines put first (first wins).
    fn config(extra: &str) -> SshdConfig {
        SshdConfig::parse(&format!(
            "{extra}\nport 22\naddressfamily any\nlistenaddress [::]:22\nlistenaddress 0.0.0.0:22\n\
             usepam yes\nhostbasedauthentication no\npubkeyauthentication yes\n\
             gssapiauthentication no\npasswordauthentication yes\n\
             kbdinteractiveauthentication no\nauthenticationmethods any\n\
             pubkeyauthoptions none\n"
        ))
    }

    fn levels(f: &[Finding]) -> Vec<Level> {
        f.iter().map(|f| f.level).collect()
    }

    fn text(f: &[Finding]) -> String {
        f.iter().map(|f| f.line()).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn parses_keywords_and_values() {
        let c = config("");
        assert_eq!(c.get("usepam"), Some("yes"));
        assert_eq!(c.get("listenaddress"), Some("[::]:22"));
        assert_eq!(c.get("authenticationmethods"), Some("any"));
        let c =
            SshdConfig::parse("AuthenticationMethods publickey,keyboard-interactive password\n");
        assert_eq!(
            method_lists(&c),
            vec![
                vec!["publickey".to_string(), "keyboard-interactive".to_string()],
                vec!["password".to_string()]
            ]
        );
    }

    #[test]
    fn recommended_password_and_code_is_ok() {
        let c = config(
            "passwordauthentication no\nkbdinteractiveauthentication yes\n\
             authenticationmethods keyboard-interactive",
        );
        let f = judge(&c, WITH_PASSWORD);
        assert_eq!(levels(&f), [Level::Ok], "{}", text(&f));
        assert!(
            f[0].message
                .contains("AuthenticationMethods keyboard-interactive")
        );
    }

    #[test]
    fn recommended_key_and_code_is_ok() {
        let c = config(
            "passwordauthentication no\nkbdinteractiveauthentication yes\n\
             authenticationmethods publickey,keyboard-interactive:pam",
        );
        let f = judge(&c, KEY_AND_CODE);
        assert_eq!(levels(&f), [Level::Ok], "{}", text(&f));
    }

    #[test]
    fn debian_defaults_warn_three_times() {
        // kbd-interactive off, no AuthenticationMethods (a key alone), password on.
        let f = judge(&config(""), WITH_PASSWORD);
        assert_eq!(
            levels(&f),
            [Level::Error, Level::Warning, Level::Warning],
            "{}",
            text(&f)
        );
        let t = text(&f);
        assert!(t.contains("KbdInteractiveAuthentication is no"), "{t}");
        assert!(t.contains("AuthenticationMethods is not set"), "{t}");
        assert!(t.contains("publickey never runs"), "{t}");
        assert!(t.contains("PasswordAuthentication is yes"), "{t}");
    }

    #[test]
    fn use_pam_no_is_an_error() {
        let f = judge(&config("usepam no"), WITH_PASSWORD);
        assert_eq!(levels(&f), [Level::Error], "{}", text(&f));
    }

    #[test]
    fn challenge_response_counts_for_old_sshd() {
        let c = SshdConfig::parse(
            "usepam yes\nchallengeresponseauthentication yes\npasswordauthentication no\n\
             pubkeyauthentication no\nauthenticationmethods any\n",
        );
        let f = judge(&c, WITH_PASSWORD);
        assert_eq!(levels(&f), [Level::Ok], "{}", text(&f));
    }

    #[test]
    fn a_list_without_keyboard_interactive_is_a_warning() {
        let c = config(
            "passwordauthentication no\nkbdinteractiveauthentication yes\n\
             authenticationmethods publickey,keyboard-interactive publickey",
        );
        let f = judge(&c, WITH_PASSWORD);
        assert_eq!(levels(&f), [Level::Warning], "{}", text(&f));
        assert!(
            f[0].message.contains("with publickey alone"),
            "{}",
            text(&f)
        );
    }

    #[test]
    fn no_password_in_pam_needs_a_key_first() {
        // Key + code PAM stack (no pam_unix), but sshd lets keyboard-interactive alone in.
        let c = config(
            "passwordauthentication no\nkbdinteractiveauthentication yes\n\
             authenticationmethods keyboard-interactive",
        );
        let f = judge(&c, KEY_AND_CODE);
        assert_eq!(levels(&f), [Level::Error], "{}", text(&f));
        assert!(f[0].message.contains("checks no password"));
        // "any" with pubkey on: kbd-interactive alone is one of the ways in.
        let c = config("passwordauthentication no\nkbdinteractiveauthentication yes");
        let f = judge(&c, KEY_AND_CODE);
        assert!(levels(&f).contains(&Level::Error), "{}", text(&f));
    }

    #[test]
    fn no_module_in_sshd_stack_skips_the_check() {
        let f = check(None, None);
        assert_eq!(levels(&f), [Level::Ok]);
        let f = check(
            None,
            Some(StackFacts {
                twofactor: false,
                password: true,
            }),
        );
        assert_eq!(levels(&f), [Level::Ok]);
    }

    #[test]
    fn real_sshd_with_a_config_file() {
        // Runs the real `sshd -T -f FILE` where it can (root, sshd installed, host keys).
        let Some(sshd) = sshd_binary() else { return };
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        // `sshd -T` needs its privilege-separation directory, which only exists once sshd ran:
        // make it, so that this test does not depend on another having run first.
        if !std::path::Path::new("/run/sshd").exists() {
            std::fs::create_dir_all("/run/sshd").unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("host_key");
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .is_ok_and(|s| s.success());
        if !made {
            return;
        }
        let conf = dir.path().join("sshd_config");
        std::fs::write(
            &conf,
            format!(
                "HostKey {}\nUsePAM yes\nKbdInteractiveAuthentication yes\n\
                 PasswordAuthentication no\nAuthenticationMethods publickey,keyboard-interactive\n\
                 Match User nobody\n  PasswordAuthentication yes\n",
                key.display()
            ),
        )
        .unwrap();
        let text = sshd_t(&sshd, Some(&conf)).unwrap();
        let f = judge(&SshdConfig::parse(&text), KEY_AND_CODE);
        assert_eq!(levels(&f), [Level::Ok], "{}", text);
        let f = check(Some(&conf), Some(KEY_AND_CODE));
        assert_eq!(levels(&f), [Level::Ok], "{}", self::text(&f));
    }
}
