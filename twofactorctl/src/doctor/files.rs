//! The policy (valid? through the daemon's own `--check`) and who may change the policy and
//! read the state (owners and modes).
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::Finding;

/// The daemon's system user (sysusers.d/twofactord.conf).
const DAEMON_USER: &str = "_twofactord";

/// How to run `twofactord`: next to this executable (a build tree, or both installed in one
/// place), then the installed path, then `$PATH`.
pub fn twofactord_command() -> Option<Vec<OsString>> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("twofactord")));
    let installed = Some(PathBuf::from("/usr/sbin/twofactord"));
    let in_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("twofactord"))
            .find(|p| p.is_file())
    });
    [beside, installed, in_path]
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .map(|p| vec![p.into_os_string()])
}

/// Checks the policy file with `COMMAND --check FILE`: its warnings are passed through.
pub fn check_policy(path: &Path, twofactord: Option<&[OsString]>) -> Vec<Finding> {
    const CHECK: &str = "policy";
    let shown = path.display();
    if !path.exists() {
        return vec![Finding::warning(
            CHECK,
            format!(
                "{shown} does not exist: the built-in policy is in force (default_mode = \"optional\": users may enroll, nobody is required to)"
            ),
            format!("if that is not what you want, write {shown} (every key: twofactor-policy(5))"),
        )];
    }
    let Some((program, args)) = twofactord.and_then(|c| c.split_first()) else {
        return vec![Finding::warning(
            CHECK,
            format!("cannot check {shown}: twofactord is not installed here"),
            "install twofactord, then run `twofactord --check FILE`",
        )];
    };
    let out = match Command::new(program)
        .args(args)
        .arg("--check")
        .arg(path)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            return vec![Finding::warning(
                CHECK,
                format!("cannot run {} --check: {e}", Path::new(program).display()),
                "run `twofactord --check FILE` by hand",
            )];
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let problem: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let problem = if problem.is_empty() {
            format!("twofactord --check failed ({})", out.status)
        } else {
            problem.join("; ")
        };
        return vec![Finding::error(
            CHECK,
            format!("{shown} is invalid: {problem}"),
            format!(
                "correct it (`twofactord --check {shown}` shows FILE:LINE:COLUMN), then \
                 `systemctl reload twofactord`; until then a running daemon keeps its old \
                 policy and a starting one refuses to start"
            ),
        )];
    }
    let mut findings: Vec<Finding> = stderr
        .lines()
        .filter_map(|l| l.trim().strip_prefix("warning:"))
        .map(|w| {
            Finding::warning(
                CHECK,
                format!("{shown}: {}", w.trim()),
                "see twofactor-policy(5)",
            )
        })
        .collect();
    if findings.is_empty() {
        findings.push(Finding::ok(CHECK, format!("{shown} is valid")));
    }
    findings
}

fn owner_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => format!("uid {uid}"),
    }
}

/// The policy file must be owned by `trusted_uid` (root) and not writable by group or others,
/// and so must the directory it is in: whoever can change it can turn 2FA off. Checked on the
/// opened file, as the daemon will read it.
pub fn check_policy_permissions(path: &Path, trusted_uid: u32) -> Vec<Finding> {
    const CHECK: &str = "policy-file";
    let shown = path.display();
    let meta = match std::fs::File::open(path).and_then(|f| f.metadata()) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return vec![Finding::ok(
                CHECK,
                format!("{shown} does not exist (nothing to check)"),
            )];
        }
        Err(e) => {
            return vec![Finding::warning(
                CHECK,
                format!(
                    "cannot open {shown} as {}: {e}",
                    owner_name(nix::unistd::geteuid().as_raw())
                ),
                "run twofactorctl doctor as root",
            )];
        }
    };
    let mut findings = Vec::new();
    let mode = meta.permissions().mode() & 0o7777;
    let want = owner_name(trusted_uid);
    if meta.uid() != trusted_uid || mode & 0o022 != 0 {
        let mut why = Vec::new();
        if meta.uid() != trusted_uid {
            why.push(format!("owned by {}", owner_name(meta.uid())));
        }
        if mode & 0o022 != 0 {
            why.push(format!("writable by group or others (mode {mode:04o})"));
        }
        findings.push(Finding::error(
            CHECK,
            format!(
                "{shown} is {}: whoever can change it can turn 2FA off",
                why.join(" and ")
            ),
            format!("chown {want} {shown} && chmod go-w {shown}"),
        ));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(dmeta) = std::fs::metadata(dir)
    {
        let dmode = dmeta.permissions().mode() & 0o7777;
        let sticky = dmode & 0o1000 != 0;
        if dmeta.uid() != trusted_uid || (dmode & 0o022 != 0 && !sticky) {
            findings.push(Finding::error(
                CHECK,
                format!(
                    "{} (owned by {}, mode {dmode:04o}) lets others replace {shown}",
                    dir.display(),
                    owner_name(dmeta.uid())
                ),
                format!("chown {want} {0} && chmod go-w {0}", dir.display()),
            ));
        }
    }
    if findings.is_empty() {
        findings.push(Finding::ok(
            CHECK,
            format!("{shown} is owned by {want} and not writable by others (mode {mode:04o})"),
        ));
    }
    findings
}

/// Who may own the state directory: root, and the daemon's user if it exists.
pub fn state_owners() -> Vec<u32> {
    let mut owners = vec![0];
    if let Ok(Some(u)) = nix::unistd::User::from_name(DAEMON_USER) {
        owners.push(u.uid.as_raw());
    }
    owners
}

/// The state directory holds every secret: it must exist, be mode 0700, owned by one of
/// `owners`, and nothing in it may be readable by others.
pub fn check_state_dir(dir: &Path, owners: &[u32]) -> Vec<Finding> {
    const CHECK: &str = "state-dir";
    let shown = dir.display();
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return vec![Finding::error(
                CHECK,
                format!("{shown} does not exist: the daemon keeps its secrets and state there"),
                "start the daemon (`systemctl enable --now twofactord`: systemd creates it, \
                 mode 0700, owned by _twofactord)",
            )];
        }
        Err(e) => {
            return vec![Finding::warning(
                CHECK,
                format!(
                    "cannot examine {shown} as {}: {e}",
                    owner_name(nix::unistd::geteuid().as_raw())
                ),
                "run twofactorctl doctor as root",
            )];
        }
    };
    if !meta.is_dir() {
        return vec![Finding::error(
            CHECK,
            format!("{shown} is not a directory"),
            format!("move it away; the daemon creates {shown} (mode 0700)"),
        )];
    }
    let mut findings = Vec::new();
    let mode = meta.permissions().mode() & 0o7777;
    let owner_list = owners
        .iter()
        .map(|u| owner_name(*u))
        .collect::<Vec<_>>()
        .join(" or ");
    if mode != 0o700 {
        let why = if mode & 0o077 != 0 {
            "other users can look inside, where the secrets are"
        } else {
            "the daemon needs exactly rwx for its owner"
        };
        findings.push(Finding::error(
            CHECK,
            format!("{shown} has mode {mode:04o}, not 0700: {why}"),
            format!("chmod 700 {shown}"),
        ));
    }
    if !owners.contains(&meta.uid()) {
        findings.push(Finding::error(
            CHECK,
            format!(
                "{shown} is owned by {}, not by {owner_list}: that user can read every secret",
                owner_name(meta.uid())
            ),
            format!(
                "chown -R {DAEMON_USER}:{DAEMON_USER} {shown} (or root, if the daemon runs as root)"
            ),
        ));
    }
    // As non-root the directory is closed (0700): what is inside is out of doctor's sight.
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            let mut open: Vec<String> = entries
                .flatten()
                .filter_map(|e| {
                    let mode = e.metadata().ok()?.permissions().mode() & 0o777;
                    (mode & 0o077 != 0)
                        .then(|| format!("{} ({mode:04o})", e.file_name().to_string_lossy()))
                })
                .collect();
            open.sort();
            if !open.is_empty() {
                findings.push(Finding::error(
                    CHECK,
                    format!(
                        "in {shown}, other users have permissions on {}",
                        open.join(", ")
                    ),
                    format!("chmod -R go= {shown}"),
                ));
            }
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            findings.push(Finding::warning(
                CHECK,
                format!(
                    "cannot look inside {shown} as {}: the files in it were not checked",
                    owner_name(nix::unistd::geteuid().as_raw())
                ),
                "run twofactorctl doctor as root",
            ));
        }
        Err(_) => {}
    }
    if findings.is_empty() {
        findings.push(Finding::ok(
            CHECK,
            format!(
                "{shown} has mode 0700 and is owned by {}",
                owner_name(meta.uid())
            ),
        ));
    }
    findings
}

/// `fs.protected_hardlinks` (read from `sysctl`, the `/proc/sys/fs/protected_hardlinks` file):
/// off, a user may hard-link a file they cannot read (such as /etc/shadow) into their home, and
/// the imports, which run as root on files in users' homes, refuse a file with a second name
/// but cannot close the race of a link made and removed while they open it. Unknown (no /proc,
/// as in a container being built) is not a finding.
pub fn check_link_protection(sysctl: &Path) -> Option<Finding> {
    const CHECK: &str = "hardlinks";
    let value = std::fs::read_to_string(sysctl).ok()?;
    Some(if value.trim() == "0" {
        Finding::warning(
            CHECK,
            "fs.protected_hardlinks is 0: users may hard-link files they cannot read (such as \
             /etc/shadow) into their homes, which root's imports of users' files \
             (`admin import google-authenticator`, `admin import pam-u2f`) can be raced into \
             reading",
            "set fs.protected_hardlinks = 1 (sysctl; systemd's default) in /etc/sysctl.d/",
        )
    } else {
        Finding::ok(CHECK, "fs.protected_hardlinks is on")
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::super::Level;
    use super::*;

    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn levels(f: &[Finding]) -> Vec<Level> {
        f.iter().map(|f| f.level).collect()
    }

    /// A private directory (0755, owned by the test's user) with a policy file in it.
    fn policy_in_dir(mode: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        let p = dir.path().join("policy.toml");
        std::fs::write(&p, "default_mode = \"optional\"\n").unwrap();
        chmod(&p, mode);
        (dir, p)
    }

    #[test]
    fn policy_file_owned_and_not_writable_by_others_is_ok() {
        let (_d, p) = policy_in_dir(0o644);
        let f = check_policy_permissions(&p, me());
        assert_eq!(levels(&f), [Level::Ok], "{f:?}");
        let (_d, p) = policy_in_dir(0o600);
        assert_eq!(levels(&check_policy_permissions(&p, me())), [Level::Ok]);
    }

    #[test]
    fn policy_file_writable_by_group_or_others_is_an_error() {
        for mode in [0o664, 0o646, 0o666] {
            let (_d, p) = policy_in_dir(mode);
            let f = check_policy_permissions(&p, me());
            assert_eq!(levels(&f), [Level::Error], "{mode:o} {f:?}");
            assert!(f[0].message.contains(&format!("{mode:04o}")), "{f:?}");
            assert!(f[0].fix.as_deref().unwrap().contains("chmod go-w"));
        }
    }

    #[test]
    fn policy_file_owned_by_someone_else_is_an_error() {
        let (_d, p) = policy_in_dir(0o644);
        // The file (and its directory) belong to the test's user, not to this "trusted" uid.
        let other = me().wrapping_add(4242);
        let f = check_policy_permissions(&p, other);
        assert_eq!(levels(&f), [Level::Error, Level::Error], "{f:?}");
        assert!(f[0].message.contains("owned by"), "{f:?}");
        assert!(f[1].message.contains("lets others replace"), "{f:?}");
    }

    #[test]
    fn policy_directory_writable_by_others_is_an_error_unless_sticky() {
        let (d, p) = policy_in_dir(0o644);
        chmod(d.path(), 0o777);
        let f = check_policy_permissions(&p, me());
        assert_eq!(levels(&f), [Level::Error], "{f:?}");
        chmod(d.path(), 0o1777);
        assert_eq!(levels(&check_policy_permissions(&p, me())), [Level::Ok]);
        chmod(d.path(), 0o755);
    }

    #[test]
    fn missing_policy_file_has_no_permissions_to_check() {
        let d = tempfile::tempdir().unwrap();
        let f = check_policy_permissions(&d.path().join("none.toml"), me());
        assert_eq!(levels(&f), [Level::Ok]);
    }

    #[test]
    fn state_dir_0700_owned_is_ok() {
        let d = tempfile::tempdir().unwrap();
        chmod(d.path(), 0o700);
        std::fs::write(d.path().join("state.sqlite3"), "x").unwrap();
        chmod(&d.path().join("state.sqlite3"), 0o600);
        let f = check_state_dir(d.path(), &[0, me()]);
        assert_eq!(levels(&f), [Level::Ok], "{f:?}");
    }

    #[test]
    fn state_dir_open_to_others_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        for mode in [0o755, 0o750, 0o711, 0o500] {
            chmod(d.path(), mode);
            let f = check_state_dir(d.path(), &[me()]);
            assert_eq!(levels(&f), [Level::Error], "{mode:o} {f:?}");
            assert!(f[0].message.contains(&format!("{mode:04o}")));
            assert_eq!(
                f[0].fix.as_deref(),
                Some(&*format!("chmod 700 {}", d.path().display()))
            );
        }
        chmod(d.path(), 0o700);
    }

    #[test]
    fn state_dir_owned_by_another_user_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        chmod(d.path(), 0o700);
        let f = check_state_dir(d.path(), &[me().wrapping_add(4242)]);
        assert_eq!(levels(&f), [Level::Error], "{f:?}");
        assert!(f[0].message.contains("owned by"));
    }

    #[test]
    fn state_files_readable_by_others_are_an_error() {
        let d = tempfile::tempdir().unwrap();
        chmod(d.path(), 0o700);
        let db = d.path().join("state.sqlite3");
        std::fs::write(&db, "x").unwrap();
        chmod(&db, 0o644);
        let f = check_state_dir(d.path(), &[me()]);
        assert_eq!(levels(&f), [Level::Error], "{f:?}");
        assert!(f[0].message.contains("state.sqlite3 (0644)"), "{f:?}");
    }

    #[test]
    fn state_dir_missing_or_not_a_directory_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let f = check_state_dir(&d.path().join("none"), &[me()]);
        assert_eq!(levels(&f), [Level::Error]);
        assert!(f[0].message.contains("does not exist"));
        let file = d.path().join("file");
        std::fs::write(&file, "").unwrap();
        let f = check_state_dir(&file, &[me()]);
        assert_eq!(levels(&f), [Level::Error]);
        assert!(f[0].message.contains("not a directory"));
    }

    #[test]
    fn state_dir_closed_to_a_non_root_caller_is_a_warning() {
        // Root reads any directory; for others a directory without read permission stays shut.
        if nix::unistd::geteuid().is_root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        chmod(d.path(), 0o300);
        let f = check_state_dir(d.path(), &[me()]);
        chmod(d.path(), 0o700);
        assert_eq!(levels(&f), [Level::Error, Level::Warning], "{f:?}");
        assert!(f[1].message.contains("were not checked"), "{f:?}");
    }

    #[test]
    fn state_dir_out_of_reach_is_a_warning() {
        // A directory we cannot search: only meaningful when not root (root reads anything).
        if nix::unistd::geteuid().is_root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let inner = d.path().join("inner");
        std::fs::create_dir(&inner).unwrap();
        chmod(d.path(), 0o000);
        let f = check_state_dir(&inner, &[0]);
        chmod(d.path(), 0o700);
        assert_eq!(levels(&f), [Level::Warning], "{f:?}");
    }

    /// A stand-in for `twofactord`, run through `sh -c SCRIPT sh --check FILE`.
    fn fake(script: &str) -> Vec<OsString> {
        ["sh", "-c", script, "sh"]
            .into_iter()
            .map(OsString::from)
            .collect()
    }

    #[test]
    fn valid_policy_is_ok_and_warnings_pass_through() {
        let (_d, p) = policy_in_dir(0o644);
        let f = check_policy(
            &p,
            Some(&fake(
                "test \"$1\" = --check && test -f \"$2\" && echo \"$2: policy is valid\"",
            )),
        );
        assert_eq!(levels(&f), [Level::Ok], "{f:?}");
        let f = check_policy(
            &p,
            Some(&fake(
                "echo 'warning: [users.bob] has no such user' >&2; echo 'warning: unknown key x' >&2; echo valid",
            )),
        );
        assert_eq!(levels(&f), [Level::Warning, Level::Warning], "{f:?}");
        assert!(
            f[0].message.ends_with("[users.bob] has no such user"),
            "{f:?}"
        );
        assert!(f[1].message.ends_with("unknown key x"), "{f:?}");
    }

    #[test]
    fn invalid_policy_is_an_error_with_the_checkers_words() {
        let (_d, p) = policy_in_dir(0o644);
        let f = check_policy(
            &p,
            Some(&fake(
                "echo \"$2:3:14: unknown mode \\\"sometimes\\\"\" >&2; exit 1",
            )),
        );
        assert_eq!(levels(&f), [Level::Error], "{f:?}");
        assert!(f[0].message.contains(":3:14: unknown mode"), "{f:?}");
    }

    #[test]
    fn missing_policy_or_checker_is_a_warning() {
        let d = tempfile::tempdir().unwrap();
        let f = check_policy(&d.path().join("policy.toml"), Some(&fake("exit 0")));
        assert_eq!(levels(&f), [Level::Warning]);
        assert!(f[0].message.contains("built-in policy"), "{f:?}");
        let (_d, p) = policy_in_dir(0o644);
        assert_eq!(levels(&check_policy(&p, None)), [Level::Warning]);
        let missing = vec![OsString::from("/nonexistent/twofactord")];
        assert_eq!(levels(&check_policy(&p, Some(&missing))), [Level::Warning]);
    }

    #[test]
    fn unprotected_hardlinks_are_a_warning_and_no_proc_is_not_a_finding() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("protected_hardlinks");
        assert!(check_link_protection(&f).is_none());
        std::fs::write(&f, "0\n").unwrap();
        let w = check_link_protection(&f).unwrap();
        assert_eq!(w.level, Level::Warning);
        assert!(w.message.contains("/etc/shadow"), "{}", w.message);
        std::fs::write(&f, "1\n").unwrap();
        assert_eq!(check_link_protection(&f).unwrap().level, Level::Ok);
    }
}
