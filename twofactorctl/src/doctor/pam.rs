//! PAM stacks: does a service load pam_twofactor.so, with which control, where — and what does
//! libpam then do when the module fails, succeeds or answers PAM_IGNORE?
//!
//! The `auth` lines of a service are read as libpam reads them (`@include`, `include`,
//! `substack`, `-auth`, bracket controls, comments, continued lines), and the stack is then
//! run through a model of libpam's dispatcher (`pam_dispatch.c`: impressions, ok/done/bad/die/
//! reset/jumps, substacks) in a few scenarios: a wrong code with the right password, a valid
//! code with a wrong password, and so on. What a scenario yields is the finding; the control
//! flag only explains it. Other modules are assumed to succeed (the attacker knows the
//! password), except `pam_deny` and, in the scenarios with a wrong password, the password
//! modules.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use super::Finding;

/// The services doctor looks at.
pub const SERVICES: &[&str] = &["sshd", "sudo", "login", "su", "common-auth"];

/// Modules that check a password (or another first factor of their own).
const PASSWORD_MODULES: &[&str] = &[
    "pam_unix.so",
    "pam_unix2.so",
    "pam_sss.so",
    "pam_ldap.so",
    "pam_krb5.so",
    "pam_winbind.so",
    "pam_userdb.so",
    "pam_pwdfile.so",
    "pam_systemd_home.so",
];

/// How deep `@include`/`include`/`substack` are followed (libpam allows more; real stacks use
/// one or two levels).
const MAX_INCLUDE_DEPTH: usize = 4;

const FIX_CONTROL: &str = "use `auth required pam_twofactor.so`, after the password module \
     (after `@include common-auth`); see pam_twofactor(8)";

/// The PAM return values the analysis needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    /// PAM_SUCCESS.
    Success,
    /// PAM_IGNORE: 2FA does not apply to this login.
    Ignore,
    /// PAM_AUTH_ERR: wrong code, lockout, required but not enrolled.
    AuthErr,
    /// PAM_AUTHINFO_UNAVAIL: the daemon cannot be reached.
    AuthinfoUnavail,
    /// PAM_MAXTRIES.
    Maxtries,
    /// PAM_CONV_ERR: the conversation failed.
    ConvErr,
    /// PAM_SERVICE_ERR: bad module arguments.
    ServiceErr,
}

impl Ret {
    /// The name in bracket controls.
    fn token(self) -> &'static str {
        match self {
            Ret::Success => "success",
            Ret::Ignore => "ignore",
            Ret::AuthErr => "auth_err",
            Ret::AuthinfoUnavail => "authinfo_unavail",
            Ret::Maxtries => "maxtries",
            Ret::ConvErr => "conv_err",
            Ret::ServiceErr => "service_err",
        }
    }

    /// What it means coming from our module, for messages.
    fn meaning(self) -> &'static str {
        match self {
            Ret::Success => "a valid code",
            Ret::Ignore => "2FA not applying to the user",
            Ret::AuthErr => "a wrong code (or a lockout)",
            Ret::AuthinfoUnavail => "an unreachable daemon",
            Ret::Maxtries => "too many wrong codes",
            Ret::ConvErr => "a failed conversation",
            Ret::ServiceErr => "a misconfigured module",
        }
    }
}

/// Every way the module says "no".
const MODULE_FAILURES: [Ret; 5] = [
    Ret::AuthErr,
    Ret::AuthinfoUnavail,
    Ret::Maxtries,
    Ret::ConvErr,
    Ret::ServiceErr,
];

/// What libpam does with a module's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Not counted.
    Ignore,
    /// A failure; go on.
    Bad,
    /// A failure; stop.
    Die,
    /// A success (if nothing failed before); go on.
    Ok,
    /// A success; stop unless something failed before.
    Done,
    /// Forget everything so far.
    Reset,
    /// Skip this many following modules.
    Jump(usize),
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "ignore" => Action::Ignore,
            "bad" => Action::Bad,
            "die" => Action::Die,
            "ok" => Action::Ok,
            "done" => Action::Done,
            "reset" => Action::Reset,
            n => Action::Jump(n.parse().ok().filter(|n| *n > 0)?),
        })
    }
}

/// A line's control field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// `required`.
    Required,
    /// `requisite`.
    Requisite,
    /// `sufficient`.
    Sufficient,
    /// `optional`.
    Optional,
    /// `[value=action …]`: (value, action) in order; an action libpam cannot parse is `bad`.
    Bracket(Vec<(String, Action)>),
    /// Anything else: libpam counts every result of the line as a failure.
    Invalid,
}

impl Control {
    fn parse(text: &str) -> Control {
        if let Some(inner) = text.strip_prefix('[') {
            let inner = inner.strip_suffix(']').unwrap_or(inner);
            let pairs = inner
                .split_whitespace()
                .filter_map(|pair| {
                    let (value, action) = pair.split_once('=')?;
                    Some((
                        value.to_ascii_lowercase(),
                        Action::parse(&action.to_ascii_lowercase()).unwrap_or(Action::Bad),
                    ))
                })
                .collect();
            return Control::Bracket(pairs);
        }
        match text.to_ascii_lowercase().as_str() {
            "required" => Control::Required,
            "requisite" => Control::Requisite,
            "sufficient" => Control::Sufficient,
            "optional" => Control::Optional,
            _ => Control::Invalid,
        }
    }

    /// libpam's action for `ret` (the keywords are shorthands for bracket controls; in a bracket
    /// the value's own entry wins, then `default`, then `bad`).
    pub fn action(&self, ret: Ret) -> Action {
        match self {
            Control::Required => match ret {
                Ret::Success => Action::Ok,
                Ret::Ignore => Action::Ignore,
                _ => Action::Bad,
            },
            Control::Requisite => match ret {
                Ret::Success => Action::Ok,
                Ret::Ignore => Action::Ignore,
                _ => Action::Die,
            },
            Control::Sufficient => match ret {
                Ret::Success => Action::Done,
                _ => Action::Ignore,
            },
            Control::Optional => match ret {
                Ret::Success => Action::Ok,
                _ => Action::Ignore,
            },
            Control::Bracket(pairs) => pairs
                .iter()
                .rev()
                .find(|(v, _)| v == ret.token())
                .or_else(|| pairs.iter().find(|(v, _)| v == "default"))
                .map_or(Action::Bad, |(_, a)| *a),
            Control::Invalid => Action::Bad,
        }
    }
}

/// One `auth` line that loads a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleLine {
    /// The file it is written in.
    pub file: PathBuf,
    /// 1-based line number (of the line's start).
    pub line: usize,
    /// `-auth`: skipped silently when the module cannot be loaded.
    pub dash: bool,
    /// The control as written.
    pub control_text: String,
    /// The control.
    pub control: Control,
    /// The module as written (name or path).
    pub module: String,
}

impl ModuleLine {
    fn base(&self) -> &str {
        self.module.rsplit('/').next().unwrap_or(&self.module)
    }

    /// pam_twofactor.so, by name or by path (the build tree's is libpam_twofactor.so).
    pub fn is_twofactor(&self) -> bool {
        matches!(self.base(), "pam_twofactor.so" | "libpam_twofactor.so")
    }

    fn is_password(&self) -> bool {
        PASSWORD_MODULES.contains(&self.base())
    }

    fn is_deny(&self) -> bool {
        self.base() == "pam_deny.so"
    }

    /// Well-known modules whose success is limited to callers an attacker is not: they fail
    /// for the logins the analysis is about. `pam_rootok` succeeds only when the caller is
    /// root (stock Debian's `su` starts with `auth sufficient pam_rootok.so`): root can become
    /// anyone anyway, so its success is no bypass of a second factor.
    fn fails_for_others(&self) -> bool {
        matches!(self.base(), "pam_rootok.so")
    }

    fn place(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// A stack of `auth` entries, includes resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A module line.
    Module(ModuleLine),
    /// `auth substack FILE`: done/die end only the substack, jumps stay inside, it counts as one
    /// module for jumps around it, and reset goes back to the state at its start.
    Substack(Vec<Item>),
}

/// One logical line, split into words (a `[...]` group is one word).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            break;
        };
        let mut word = String::new();
        if first == '[' {
            for c in chars.by_ref() {
                word.push(c);
                if c == ']' {
                    break;
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        out.push(word);
    }
    out
}

/// The logical lines of a PAM file: comments removed, `\`-continued lines joined; each with the
/// number of its first physical line.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let raw = raw.split('#').next().unwrap_or("");
        let (part, continued) = match raw.trim_end().strip_suffix('\\') {
            Some(p) => (p, true),
            None => (raw, false),
        };
        let (start, mut acc) = pending.take().unwrap_or((i + 1, String::new()));
        acc.push(' ');
        acc.push_str(part);
        if continued {
            pending = Some((start, acc));
        } else if !acc.trim().is_empty() {
            out.push((start, acc));
        }
    }
    if let Some((start, acc)) = pending.filter(|(_, a)| !a.trim().is_empty()) {
        out.push((start, acc));
    }
    out
}

/// Where doctor looks.
#[derive(Debug, Clone)]
pub struct Context {
    /// The PAM service directory.
    pub pam_dir: PathBuf,
    /// Where modules named without a path are looked for.
    pub module_dirs: Vec<PathBuf>,
    /// Whether the policy means 2FA to apply to anyone.
    pub twofactor_applies: bool,
}

/// libpam's module directories on this system (multiarch and not).
pub fn system_module_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = [
        "/lib/security",
        "/lib64/security",
        "/usr/lib/security",
        "/usr/lib64/security",
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect();
    for base in ["/lib", "/usr/lib"] {
        if let Ok(entries) = std::fs::read_dir(base) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().contains("-linux-") {
                    dirs.push(e.path().join("security"));
                }
            }
        }
    }
    dirs.retain(|d| d.is_dir());
    dirs
}

struct Loader<'a> {
    context: &'a Context,
    /// Problems met while reading (missing includes, too deep).
    notes: Vec<String>,
}

impl Loader<'_> {
    fn path(&self, name: &str) -> PathBuf {
        if name.starts_with('/') {
            PathBuf::from(name)
        } else {
            self.context.pam_dir.join(name)
        }
    }

    /// The `auth` entries of `name`, or `None` if the file does not exist.
    fn load(&mut self, name: &str, depth: usize) -> Option<Vec<Item>> {
        let path = self.path(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                self.notes
                    .push(format!("cannot read {}: {e}", path.display()));
                return Some(Vec::new());
            }
        };
        let mut items = Vec::new();
        for (number, line) in logical_lines(&text) {
            let w = words(&line);
            let Some(first) = w.first() else { continue };
            let at = format!("{}:{number}", path.display());
            if first.eq_ignore_ascii_case("@include") {
                if let Some(target) = w.get(1) {
                    items.extend(self.include(target, depth, &at).unwrap_or_default());
                }
                continue;
            }
            let (dash, kind) = match first.strip_prefix('-') {
                Some(k) => (true, k),
                None => (false, first.as_str()),
            };
            if !kind.eq_ignore_ascii_case("auth") {
                continue;
            }
            // libpam installs a line it cannot use (no module, a missing include) as one that
            // always fails.
            let must_fail = |what: String| {
                Item::Module(ModuleLine {
                    file: path.clone(),
                    line: number,
                    dash: false,
                    control_text: String::new(),
                    control: Control::Invalid,
                    module: what,
                })
            };
            let (Some(control_text), Some(module)) = (w.get(1), w.get(2)) else {
                self.notes.push(format!(
                    "{at}: incomplete auth line (libpam fails every login through it)"
                ));
                items.push(must_fail("(incomplete line)".into()));
                continue;
            };
            match control_text.to_ascii_lowercase().as_str() {
                control @ ("include" | "substack") => match self.include(module, depth, &at) {
                    Some(included) if control == "include" => items.extend(included),
                    Some(included) => items.push(Item::Substack(included)),
                    None => items.push(must_fail(format!("(missing {module})"))),
                },
                _ => items.push(Item::Module(ModuleLine {
                    file: path.clone(),
                    line: number,
                    dash,
                    control_text: control_text.clone(),
                    control: Control::parse(control_text),
                    module: module.clone(),
                })),
            }
        }
        Some(items)
    }

    /// The included file's entries; `None` (and a note) if it does not exist.
    fn include(&mut self, target: &str, depth: usize, at: &str) -> Option<Vec<Item>> {
        if depth >= MAX_INCLUDE_DEPTH {
            self.notes.push(format!(
                "{at}: includes nested too deep to follow ({target})"
            ));
            return Some(Vec::new());
        }
        let items = self.load(target, depth + 1);
        if items.is_none() {
            self.notes.push(format!(
                "{at}: includes {}, which does not exist",
                self.path(target).display()
            ));
        }
        items
    }
}

/// The `auth` stack of a service (`None`: no such file), and problems met reading it.
pub fn load_stack(service: &str, context: &Context) -> (Option<Vec<Item>>, Vec<String>) {
    let mut loader = Loader {
        context,
        notes: Vec::new(),
    };
    let items = loader.load(service, 0);
    (items, loader.notes)
}

/// The module lines in the order libpam calls them when nothing jumps.
fn flatten(items: &[Item]) -> Vec<&ModuleLine> {
    let mut out = Vec::new();
    for item in items {
        match item {
            Item::Module(m) => out.push(m),
            Item::Substack(sub) => out.extend(flatten(sub)),
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Impression {
    Undef,
    Positive,
    Negative,
}

/// libpam's running verdict.
#[derive(Debug, Clone, Copy)]
struct Verdict {
    impression: Impression,
    success: bool,
}

const START: Verdict = Verdict {
    impression: Impression::Undef,
    success: false,
};

/// One pass over `items` as `_pam_dispatch_aux` makes it; `base` is the verdict at the start of
/// this (sub)stack, for `reset`. Returns at done/die (ending only this level).
fn dispatch(items: &[Item], v: &mut Verdict, base: Verdict, result: &dyn Fn(&ModuleLine) -> Ret) {
    let mut i = 0;
    while i < items.len() {
        match &items[i] {
            Item::Substack(sub) => {
                let at_start = *v;
                dispatch(sub, v, at_start, result);
            }
            Item::Module(m) => {
                let ret = result(m);
                match m.control.action(ret) {
                    Action::Reset => *v = base,
                    action @ (Action::Ok | Action::Done) => {
                        let clean = v.impression == Impression::Undef
                            || (v.impression == Impression::Positive && v.success);
                        // PAM_IGNORE never makes an impression.
                        if clean && ret != Ret::Ignore {
                            v.impression = Impression::Positive;
                            v.success = ret == Ret::Success;
                        }
                        // done decides only on a success so far (not after an ignore).
                        if action == Action::Done && v.impression == Impression::Positive {
                            return;
                        }
                    }
                    action @ (Action::Bad | Action::Die) => {
                        if v.impression != Impression::Negative {
                            v.impression = Impression::Negative;
                            v.success = false;
                        }
                        if action == Action::Die {
                            return;
                        }
                    }
                    Action::Ignore => {}
                    Action::Jump(n) => {
                        if i + n >= items.len() {
                            // "bad jump in stack": a failure, and the end of this level.
                            v.impression = Impression::Negative;
                            v.success = false;
                            return;
                        }
                        i += n;
                    }
                }
            }
        }
        i += 1;
    }
}

/// Does the stack let the login in when our module returns `code` and the password modules
/// accept (or refuse) the password?
fn succeeds(items: &[Item], code: Ret, password_ok: bool) -> bool {
    let result = |m: &ModuleLine| {
        if m.is_twofactor() {
            code
        } else if m.is_deny() || m.fails_for_others() || (m.is_password() && !password_ok) {
            Ret::AuthErr
        } else {
            Ret::Success
        }
    };
    let mut v = START;
    dispatch(items, &mut v, START, &result);
    v.impression == Impression::Positive && v.success
}

/// What is insecure about a stack, in words (empty: nothing).
fn bypasses(items: &[Item], has_password: bool) -> Vec<String> {
    let mut out = Vec::new();
    let accepted: Vec<&str> = MODULE_FAILURES
        .iter()
        .filter(|r| succeeds(items, **r, true))
        .map(|r| r.meaning())
        .collect();
    if let Some((last, rest)) = accepted.split_last() {
        let list = if rest.is_empty() {
            last.to_string()
        } else {
            format!("{} or {last}", rest.join(", "))
        };
        out.push(format!(
            "the login goes through when pam_twofactor reports {list}"
        ));
    }
    if has_password && succeeds(items, Ret::Success, false) {
        out.push("a valid code alone logs in, without the password".into());
    }
    if has_password && succeeds(items, Ret::Ignore, false) {
        out.push(
            "users to whom 2FA does not apply (PAM_IGNORE) log in without their password".into(),
        );
    }
    out
}

/// The line's control, when it does not count the module's failures as failures.
fn control_pitfall(m: &ModuleLine) -> Option<String> {
    let text = &m.control_text;
    match &m.control {
        Control::Required | Control::Requisite => None,
        Control::Sufficient => Some(format!(
            "\"{text}\": a valid code ends the stack as a success at once, skipping every \
             module after it (placed before the password module, it makes the password \
             unnecessary), and a wrong code or an unreachable daemon is ignored"
        )),
        Control::Optional => Some(format!(
            "\"{text}\": a wrong code or an unreachable daemon is ignored"
        )),
        Control::Invalid => Some(format!(
            "\"{text}\" is not a control libpam knows: it counts every result of the line as \
             a failure"
        )),
        Control::Bracket(_) => {
            let lax: Vec<String> = MODULE_FAILURES
                .iter()
                .filter_map(|r| {
                    let a = m.control.action(*r);
                    (!matches!(a, Action::Bad | Action::Die))
                        .then(|| format!("{}={}", r.token(), action_word(a)))
                })
                .collect();
            (!lax.is_empty()).then(|| {
                format!(
                    "\"{text}\" does not count the module's failures as failures ({}): a \
                     failure must never be ignored, only `bad` or `die` are safe for them",
                    lax.join(" ")
                )
            })
        }
    }
}

fn action_word(a: Action) -> String {
    match a {
        Action::Ignore => "ignore".into(),
        Action::Bad => "bad".into(),
        Action::Die => "die".into(),
        Action::Ok => "ok".into(),
        Action::Done => "done".into(),
        Action::Reset => "reset".into(),
        Action::Jump(n) => n.to_string(),
    }
}

/// What the sshd check needs to know about sshd's stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackFacts {
    /// pam_twofactor is in it.
    pub twofactor: bool,
    /// A password module is in it (else PAM checks no first factor for sshd).
    pub password: bool,
}

/// A service's findings, and facts about its stack (`None`: no such service file).
#[derive(Debug, Clone)]
pub struct ServiceReport {
    /// The report lines.
    pub findings: Vec<Finding>,
    /// Facts about the stack.
    pub stack: Option<StackFacts>,
}

fn module_found(m: &ModuleLine, dirs: &[PathBuf]) -> bool {
    if m.module.starts_with('/') {
        Path::new(&m.module).exists()
    } else {
        dirs.iter().any(|d| d.join(&m.module).exists())
    }
}

/// Reads and judges the `auth` stack of `service`.
pub fn analyse(service: &str, context: &Context) -> ServiceReport {
    let check = format!("pam/{service}");
    let file = context.pam_dir.join(service);
    let (items, notes) = load_stack(service, context);
    let Some(items) = items else {
        return ServiceReport {
            findings: vec![Finding::ok(
                &check,
                format!("{} does not exist (nothing to check)", file.display()),
            )],
            stack: None,
        };
    };
    let mut findings: Vec<Finding> = notes
        .into_iter()
        .map(|n| Finding::warning(&check, n, "create the file or correct the line"))
        .collect();
    let modules = flatten(&items);
    let ours: Vec<&ModuleLine> = modules
        .iter()
        .copied()
        .filter(|m| m.is_twofactor())
        .collect();
    let first_password = modules.iter().position(|m| m.is_password());
    let facts = StackFacts {
        twofactor: !ours.is_empty(),
        password: first_password.is_some(),
    };
    if ours.is_empty() {
        let wanted = context.twofactor_applies && matches!(service, "sshd" | "sudo");
        findings.push(if wanted {
            Finding::warning(
                &check,
                format!(
                    "{} does not load pam_twofactor.so: {service} never asks for a second \
                     factor, although the policy means 2FA to apply",
                    file.display()
                ),
                format!(
                    "add `auth required pam_twofactor.so` after `@include common-auth` in {}, \
                     or for every service: `pam-auth-update --enable twofactor`",
                    file.display()
                ),
            )
        } else if context.twofactor_applies {
            Finding::ok(
                &check,
                format!("{} does not load pam_twofactor.so", file.display()),
            )
        } else {
            Finding::ok(
                &check,
                format!(
                    "{} does not load pam_twofactor.so (2FA is disabled by the policy)",
                    file.display()
                ),
            )
        });
        return ServiceReport {
            findings,
            stack: Some(facts),
        };
    }

    let holes = bypasses(&items, facts.password);
    let mut holes_reported = false;
    for m in &ours {
        if let Some(pitfall) = control_pitfall(m) {
            holes_reported = true;
            let at = m.place();
            findings.push(if holes.is_empty() {
                Finding::warning(
                    &check,
                    format!(
                        "{at}: {pitfall}; in this stack other modules still refuse such logins, \
                         but that is fragile"
                    ),
                    FIX_CONTROL,
                )
            } else {
                Finding::error(
                    &check,
                    format!("{at}: {pitfall}; here {}", holes.join("; ")),
                    FIX_CONTROL,
                )
            });
        }
    }
    if !holes.is_empty() && !holes_reported {
        findings.push(Finding::error(
            &check,
            format!(
                "the stack around pam_twofactor.so ({}) lets logins through: {}",
                ours.iter()
                    .map(|m| m.place())
                    .collect::<Vec<_>>()
                    .join(", "),
                holes.join("; ")
            ),
            "no module before pam_twofactor.so may end the stack with success (`sufficient`, \
             `success=done`); see pam_twofactor(8)",
        ));
    }
    if let Some(p) = first_password {
        let password = modules[p];
        let early: Vec<&ModuleLine> = ours
            .iter()
            .copied()
            .filter(|m| {
                modules
                    .iter()
                    .position(|x| std::ptr::eq(*x, *m))
                    .is_some_and(|i| i < p)
            })
            .collect();
        for m in early {
            findings.push(Finding::warning(
                &check,
                format!(
                    "{}: pam_twofactor.so comes before the password module ({} at {}): anyone \
                     who tries a user name is asked for a code (and shown enrollment at login) \
                     before the password is checked, and their wrong codes count towards the \
                     user's lockout",
                    m.place(),
                    password.base(),
                    password.place()
                ),
                "move the line after the password module (after `@include common-auth`)",
            ));
        }
    }
    // Each load is a login of its own: the second asks again, and refuses the code the first
    // accepted as a replay, so an enrolled user with an app gets in only by waiting for the
    // next code. That breaks every login of the service: an error.
    if ours.len() > 1 {
        findings.push(Finding::error(
            &check,
            format!(
                "pam_twofactor.so is loaded {} times ({}): users are asked for a code each time, \
                 and the second prompt refuses the code the first accepted (a replay), so users \
                 with an authenticator app must wait for the next code to log in",
                ours.len(),
                ours.iter()
                    .map(|m| m.place())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "keep one: either the pam-auth-update profile (common-auth) or a line per service",
        ));
    }
    // A user to whom 2FA does not apply (optional mode, nothing enrolled) gets PAM_IGNORE from
    // the module: with nothing else in the stack to succeed, libpam refuses them. That locks
    // out every such user (root included) the moment the stack is used: an error.
    if succeeds(&items, Ret::Success, true) && !succeeds(&items, Ret::Ignore, true) {
        findings.push(Finding::error(
            &check,
            "users to whom 2FA does not apply (PAM_IGNORE: optional mode and nothing enrolled, \
             an exempt network or service) cannot log in: no other module makes the stack \
             succeed, so every user who has not enrolled is locked out",
            "put the module after the password module; if something outside PAM checked the \
             first factor (sshd's AuthenticationMethods publickey,keyboard-interactive), follow \
             it with `auth required pam_permit.so`",
        ));
    } else if !succeeds(&items, Ret::Success, true) {
        findings.push(Finding::warning(
            &check,
            "even the right password and a valid code are refused by this stack",
            "check the stack's controls (bracket jumps, pam_deny); see pam_twofactor(8)",
        ));
    }
    for m in &ours {
        if !module_found(m, &context.module_dirs) {
            let at = m.place();
            findings.push(if m.dash {
                Finding::error(
                    &check,
                    format!(
                        "{at}: {} cannot be found, and the line starts with '-': libpam skips \
                         it silently, so no second factor is asked",
                        m.module
                    ),
                    "install pam_twofactor.so (make install, or the package)",
                )
            } else {
                Finding::warning(
                    &check,
                    format!(
                        "{at}: {} cannot be found in the PAM module directories: if it is \
                         really missing, every login through {service} fails",
                        m.module
                    ),
                    "install pam_twofactor.so (make install, or the package)",
                )
            });
        }
    }
    if findings.is_empty() {
        let m = ours[0];
        findings.push(Finding::ok(
            &check,
            format!(
                "pam_twofactor.so is \"{}\"{} ({})",
                m.control_text,
                if facts.password {
                    " after the password module"
                } else {
                    ", with no password module in the stack"
                },
                m.place()
            ),
        ));
    }
    ServiceReport {
        findings,
        stack: Some(facts),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::super::Level;
    use super::*;

    /// A PAM directory with the given files, and a module directory holding pam_twofactor.so.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    const DEBIAN_COMMON_AUTH: &str = "\
# here are the per-package modules (the \"Primary\" block)
auth\t[success=1 default=ignore]\tpam_unix.so nullok
# here's the fallback if no module succeeds
auth\trequisite\t\t\tpam_deny.so
auth\trequired\t\t\tpam_permit.so
auth\toptional\t\t\tpam_cap.so
";

    impl Fixture {
        fn new(files: &[(&str, &str)]) -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("pam.d")).unwrap();
            std::fs::create_dir(dir.path().join("security")).unwrap();
            std::fs::write(dir.path().join("security/pam_twofactor.so"), "").unwrap();
            for (name, text) in files {
                std::fs::write(dir.path().join("pam.d").join(name), text).unwrap();
            }
            Fixture { dir }
        }

        fn context(&self) -> Context {
            Context {
                pam_dir: self.dir.path().join("pam.d"),
                module_dirs: vec![self.dir.path().join("security")],
                twofactor_applies: true,
            }
        }

        fn analyse(&self, service: &str) -> ServiceReport {
            analyse(service, &self.context())
        }
    }

    fn levels(r: &ServiceReport) -> Vec<Level> {
        r.findings.iter().map(|f| f.level).collect()
    }

    fn text(r: &ServiceReport) -> String {
        r.findings
            .iter()
            .map(|f| f.line())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn stack_of(text: &str) -> Vec<Item> {
        let f = Fixture::new(&[("s", text)]);
        load_stack("s", &f.context()).0.unwrap()
    }

    #[test]
    fn good_stack_is_ok() {
        let f = Fixture::new(&[
            ("common-auth", DEBIAN_COMMON_AUTH),
            (
                "sudo",
                "#%PAM-1.0\n@include common-auth\nauth required pam_twofactor.so\n@include common-account\n",
            ),
            ("common-account", "account required pam_unix.so\n"),
        ]);
        let r = f.analyse("sudo");
        assert_eq!(levels(&r), [Level::Ok], "{}", text(&r));
        assert!(
            text(&r).contains("\"required\" after the password module"),
            "{}",
            text(&r)
        );
        assert_eq!(
            r.stack,
            Some(StackFacts {
                twofactor: true,
                password: true
            })
        );
        // The same with requisite, and with the module in common-auth (pam-auth-update).
        let f = Fixture::new(&[
            (
                "common-auth",
                &format!("{DEBIAN_COMMON_AUTH}auth\trequisite\tpam_twofactor.so\n"),
            ),
            (
                "sshd",
                "@include common-auth\naccount required pam_nologin.so\n",
            ),
        ]);
        let r = f.analyse("sshd");
        assert_eq!(levels(&r), [Level::Ok], "{}", text(&r));
        let r = f.analyse("common-auth");
        assert_eq!(levels(&r), [Level::Ok], "{}", text(&r));
    }

    #[test]
    fn sufficient_is_an_error_before_or_after_the_password() {
        // After the password: a wrong code is ignored.
        let f = Fixture::new(&[
            ("common-auth", DEBIAN_COMMON_AUTH),
            (
                "sudo",
                "@include common-auth\nauth sufficient pam_twofactor.so\n",
            ),
        ]);
        let r = f.analyse("sudo");
        assert_eq!(levels(&r), [Level::Error], "{}", text(&r));
        let t = text(&r);
        assert!(t.contains("\"sufficient\""), "{t}");
        assert!(t.contains("reports a wrong code"), "{t}");
        assert!(t.contains("an unreachable daemon"), "{t}");
        assert!(
            r.findings[0]
                .fix
                .as_deref()
                .unwrap()
                .contains("auth required pam_twofactor.so")
        );
        // Before the password: a valid code alone logs in.
        let f = Fixture::new(&[
            ("common-auth", DEBIAN_COMMON_AUTH),
            (
                "sudo",
                "auth sufficient pam_twofactor.so\n@include common-auth\n",
            ),
        ]);
        let r = f.analyse("sudo");
        let t = text(&r);
        assert_eq!(r.findings[0].level, Level::Error, "{t}");
        assert!(t.contains("a valid code alone logs in"), "{t}");
        // (and it comes before the password)
        assert!(t.contains("before the password module"), "{t}");
    }

    #[test]
    fn optional_is_an_error() {
        let f = Fixture::new(&[(
            "login",
            "auth requisite pam_unix.so\nauth optional /lib/security/pam_twofactor.so\n",
        )]);
        let r = f.analyse("login");
        let t = text(&r);
        assert_eq!(r.findings[0].level, Level::Error, "{t}");
        assert!(
            t.contains("a wrong code or an unreachable daemon is ignored"),
            "{t}"
        );
    }

    #[test]
    fn success_done_default_ignore_is_an_error() {
        // After the password: default=ignore swallows failures; pam_permit grants the login.
        let f = Fixture::new(&[
            ("common-auth", DEBIAN_COMMON_AUTH),
            (
                "sudo",
                "@include common-auth\nauth [success=done default=ignore] pam_twofactor.so\n",
            ),
        ]);
        let r = f.analyse("sudo");
        let t = text(&r);
        assert_eq!(levels(&r), [Level::Error], "{t}");
        assert!(t.contains("auth_err=ignore"), "{t}");
        assert!(t.contains("authinfo_unavail=ignore"), "{t}");
        // Before the password, it also lets a valid code replace the password.
        let f = Fixture::new(&[
            ("common-auth", DEBIAN_COMMON_AUTH),
            (
                "sudo",
                "auth [success=done default=ignore] pam_twofactor.so\n@include common-auth\n",
            ),
        ]);
        let t = text(&f.analyse("sudo"));
        assert!(t.contains("a valid code alone logs in"), "{t}");
    }

    #[test]
    fn lax_bracket_saved_by_pam_deny_is_a_warning() {
        // Failures are ignored by the line itself, but fall through to pam_deny: safe, fragile.
        // Users without 2FA (PAM_IGNORE) are then refused too, which is an error (a lockout).
        let f = Fixture::new(&[(
            "su",
            "auth requisite pam_unix.so\nauth [success=1 default=ignore] pam_twofactor.so\n\
             auth requisite pam_deny.so\nauth required pam_permit.so\n",
        )]);
        let r = f.analyse("su");
        let t = text(&r);
        assert_eq!(levels(&r), [Level::Warning, Level::Error], "{t}");
        assert!(t.contains("fragile"), "{t}");
        assert!(t.contains("cannot log in"), "{t}");
    }

    /// Stock Debian's su: `auth sufficient pam_rootok.so` first. Its success is for root
    /// callers only (root can become anyone anyway), so it is no bypass: the recommended setup
    /// is clean, and doctor can be used in monitoring.
    #[test]
    fn stock_debian_su_with_pam_rootok_is_ok() {
        let f = Fixture::new(&[
            ("common-auth", DEBIAN_COMMON_AUTH),
            (
                "su",
                "auth       sufficient pam_rootok.so
session       required   pam_env.so readenv=1
                 @include common-auth
auth required pam_twofactor.so
",
            ),
        ]);
        let r = f.analyse("su");
        assert_eq!(levels(&r), [Level::Ok], "{}", text(&r));
        // pam_rootok is no excuse for a real hole after it.
        let f = Fixture::new(&[
            ("common-auth", DEBIAN_COMMON_AUTH),
            (
                "su",
                "auth sufficient pam_rootok.so
@include common-auth
                 auth sufficient pam_twofactor.so
",
            ),
        ]);
        let r = f.analyse("su");
        assert!(levels(&r).contains(&Level::Error), "{}", text(&r));
    }

    #[test]
    fn safe_bracket_controls_are_ok() {
        let f = Fixture::new(&[(
            "su",
            "auth requisite pam_unix.so\n\
             auth [success=ok ignore=ignore default=bad] pam_twofactor.so\n",
        )]);
        let r = f.analyse("su");
        assert_eq!(levels(&r), [Level::Ok], "{}", text(&r));
        let f = Fixture::new(&[(
            "su",
            "auth requisite pam_unix.so\nauth [default=die success=ok ignore=ignore] pam_twofactor.so\n",
        )]);
        assert_eq!(levels(&f.analyse("su")), [Level::Ok]);
    }

    #[test]
    fn module_before_the_password_is_a_warning() {
        let f = Fixture::new(&[
            ("common-auth", DEBIAN_COMMON_AUTH),
            (
                "login",
                "auth required pam_twofactor.so\n@include common-auth\n",
            ),
        ]);
        let r = f.analyse("login");
        let t = text(&r);
        assert_eq!(levels(&r), [Level::Warning], "{t}");
        assert!(
            t.contains("before the password module (pam_unix.so at"),
            "{t}"
        );
        assert!(t.contains("common-auth:2"), "{t}");
    }

    #[test]
    fn includes_are_followed() {
        // @include, include and substack; the module sits in the included file.
        let f = Fixture::new(&[
            ("common-auth", DEBIAN_COMMON_AUTH),
            ("twofactor-auth", "auth required pam_twofactor.so\n"),
            ("a", "@include common-auth\n@include twofactor-auth\n"),
            (
                "b",
                "auth include common-auth\nauth include twofactor-auth\n",
            ),
            (
                "c",
                "auth substack common-auth\nauth required pam_twofactor.so\n",
            ),
        ]);
        for s in ["a", "b", "c"] {
            let r = f.analyse(s);
            assert_eq!(levels(&r), [Level::Ok], "{s}: {}", text(&r));
            assert!(
                text(&r).contains("twofactor-auth:1") || s == "c",
                "{}",
                text(&r)
            );
        }
        // A missing include is reported.
        let f = Fixture::new(&[(
            "sudo",
            "@include common-auth\nauth required pam_twofactor.so\n",
        )]);
        let r = f.analyse("sudo");
        assert!(text(&r).contains("which does not exist"), "{}", text(&r));
    }

    #[test]
    fn substack_confines_done() {
        // Fedora's layout: `sufficient pam_unix` ends only the substack; the module still runs.
        let system_auth =
            "auth required pam_env.so\nauth sufficient pam_unix.so\nauth required pam_deny.so\n";
        let f = Fixture::new(&[
            ("password-auth", system_auth),
            (
                "sshd",
                "auth substack password-auth\nauth required pam_twofactor.so\n",
            ),
            (
                "sudo",
                "auth include password-auth\nauth required pam_twofactor.so\n",
            ),
        ]);
        assert_eq!(
            levels(&f.analyse("sshd")),
            [Level::Ok],
            "{}",
            text(&f.analyse("sshd"))
        );
        // With include, pam_unix's `sufficient` ends the whole stack before the module.
        let r = f.analyse("sudo");
        assert_eq!(levels(&r), [Level::Error], "{}", text(&r));
        assert!(
            text(&r).contains("the stack around pam_twofactor.so"),
            "{}",
            text(&r)
        );
    }

    #[test]
    fn missing_module_depends_on_the_policy_and_service() {
        let f = Fixture::new(&[
            ("common-auth", DEBIAN_COMMON_AUTH),
            ("sshd", "@include common-auth\n"),
            ("login", "@include common-auth\n"),
        ]);
        let r = f.analyse("sshd");
        assert_eq!(levels(&r), [Level::Warning], "{}", text(&r));
        assert!(text(&r).contains("never asks for a second factor"));
        assert_eq!(
            r.stack,
            Some(StackFacts {
                twofactor: false,
                password: true
            })
        );
        // login: not where the policy is usually meant first; an ok line.
        assert_eq!(levels(&f.analyse("login")), [Level::Ok]);
        // 2FA disabled by the policy: nothing to warn about.
        let mut c = f.context();
        c.twofactor_applies = false;
        let r = analyse("sshd", &c);
        assert_eq!(levels(&r), [Level::Ok]);
        assert!(text(&r).contains("disabled by the policy"));
        // No such service file at all.
        let r = f.analyse("sudo");
        assert_eq!(levels(&r), [Level::Ok]);
        assert_eq!(r.stack, None);
    }

    #[test]
    fn key_and_code_stack_has_no_password_module() {
        // Variant B of packaging/pam/sshd: fine for PAM, the sshd check must demand a key.
        let f = Fixture::new(&[(
            "sshd",
            "#@include common-auth\nauth required pam_twofactor.so\nauth required pam_permit.so\n",
        )]);
        let r = f.analyse("sshd");
        assert_eq!(levels(&r), [Level::Ok], "{}", text(&r));
        assert!(text(&r).contains("no password module"));
        assert_eq!(
            r.stack,
            Some(StackFacts {
                twofactor: true,
                password: false
            })
        );
        // Without pam_permit, users without 2FA are refused: the README recipe that locked out
        // every unenrolled user, root included. An error.
        let f = Fixture::new(&[("sshd", "auth required pam_twofactor.so\n")]);
        let r = f.analyse("sshd");
        assert_eq!(levels(&r), [Level::Error], "{}", text(&r));
        assert!(text(&r).contains("locked out"), "{}", text(&r));
    }

    #[test]
    fn loaded_twice_and_dash_lines() {
        let f = Fixture::new(&[
            (
                "common-auth",
                &format!("{DEBIAN_COMMON_AUTH}auth required pam_twofactor.so\n"),
            ),
            (
                "sudo",
                "@include common-auth\nauth required pam_twofactor.so\n",
            ),
            (
                "su",
                "auth requisite pam_unix.so\n-auth required pam_nonexistent_twofactor/pam_twofactor.so\n",
            ),
        ]);
        let r = f.analyse("sudo");
        assert_eq!(levels(&r), [Level::Error], "{}", text(&r));
        assert!(text(&r).contains("loaded 2 times"));
        assert!(text(&r).contains("replay"), "{}", text(&r));
        // A `-auth` line whose module is missing is skipped by libpam: no second factor.
        let r = f.analyse("su");
        assert_eq!(levels(&r), [Level::Error], "{}", text(&r));
        assert!(text(&r).contains("skips it silently"));
    }

    #[test]
    fn parsing_follows_libpam() {
        let items = stack_of(
            "# comment\n\
             auth [success=2 default=ignore \\\n  ignore=ignore] pam_unix.so nullok # trailing\n\
             \n\
             -AUTH Required pam_twofactor.so debug [bus=unix:path=/x y]\n\
             account required pam_unix.so\n\
             password include common-password\n\
             auth bogus pam_x.so\n",
        );
        let m = flatten(&items);
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!(m[0].line, 2);
        assert_eq!(m[0].module, "pam_unix.so");
        assert_eq!(
            m[0].control,
            Control::Bracket(vec![
                ("success".into(), Action::Jump(2)),
                ("default".into(), Action::Ignore),
                ("ignore".into(), Action::Ignore),
            ])
        );
        assert_eq!(m[1].line, 5);
        assert!(m[1].dash);
        assert_eq!(m[1].control, Control::Required);
        assert!(m[1].is_twofactor());
        assert_eq!(m[2].control, Control::Invalid);
    }

    #[test]
    fn controls_map_results_like_libpam() {
        use Action::*;
        let c = |s: &str| Control::parse(s);
        assert_eq!(c("required").action(Ret::AuthErr), Bad);
        assert_eq!(c("required").action(Ret::Ignore), Ignore);
        assert_eq!(c("requisite").action(Ret::AuthinfoUnavail), Die);
        assert_eq!(c("sufficient").action(Ret::Success), Done);
        assert_eq!(c("sufficient").action(Ret::AuthErr), Ignore);
        assert_eq!(c("optional").action(Ret::AuthErr), Ignore);
        let b = c("[success=done auth_err=die default=ignore]");
        assert_eq!(b.action(Ret::Success), Done);
        assert_eq!(b.action(Ret::AuthErr), Die);
        assert_eq!(b.action(Ret::Maxtries), Ignore);
        // No entry and no default: bad.
        assert_eq!(c("[success=ok]").action(Ret::ConvErr), Bad);
        // An action libpam cannot parse: bad.
        assert_eq!(c("[success=ok auth_err=maybe]").action(Ret::AuthErr), Bad);
    }

    #[test]
    fn dispatcher_model() {
        // Debian's common-auth alone: the password decides.
        let items = stack_of(DEBIAN_COMMON_AUTH);
        assert!(succeeds(&items, Ret::Success, true));
        assert!(!succeeds(&items, Ret::Success, false));
        // A stack of ignores fails.
        let items = stack_of("auth required pam_twofactor.so\n");
        assert!(!succeeds(&items, Ret::Ignore, true));
        assert!(succeeds(&items, Ret::Success, true));
        // A jump past the end fails.
        let items = stack_of(
            "auth [success=3 default=bad] pam_twofactor.so\nauth required pam_permit.so\n",
        );
        assert!(!succeeds(&items, Ret::Success, true));
        // reset forgets an earlier failure.
        let items = stack_of(
            "auth required pam_deny.so\nauth [success=reset default=bad] pam_twofactor.so\nauth required pam_permit.so\n",
        );
        assert!(succeeds(&items, Ret::Success, true));
        // die inside a substack ends only the substack; its failure stays.
        let f = Fixture::new(&[
            (
                "inner",
                "auth requisite pam_deny.so\nauth sufficient pam_permit.so\n",
            ),
            (
                "outer",
                "auth substack inner\nauth required pam_twofactor.so\n",
            ),
        ]);
        let items = load_stack("outer", &f.context()).0.unwrap();
        assert!(!succeeds(&items, Ret::Success, true));
        // done decides only after a success: after PAM_IGNORE the stack goes on.
        let items = stack_of(
            "auth [ignore=done default=bad] pam_twofactor.so\nauth required pam_permit.so\n",
        );
        assert!(succeeds(&items, Ret::Ignore, true));
        // A missing include (not @include) is a line that always fails.
        let items = stack_of("auth include nowhere\nauth required pam_permit.so\n");
        assert!(!succeeds(&items, Ret::Success, true));
        let items = stack_of("@include nowhere\nauth required pam_permit.so\n");
        assert!(succeeds(&items, Ret::Success, true));
        // ok does not turn a failure into success.
        let items = stack_of("auth [default=ok] pam_twofactor.so\nauth required pam_permit.so\n");
        assert!(!succeeds(&items, Ret::AuthErr, true));
    }
}
