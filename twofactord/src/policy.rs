//! The admin's policy file: raw TOML structs, validated into a runtime [`Policy`].
//!
//! Parsing happens in two stages. The raw structs mirror the file with
//! `deny_unknown_fields`, so a typo is an error rather than a silently ignored key. Validation
//! turns them into the runtime policy. Every error names the file, the line, the column and the
//! problem.
//!
//! User and group rules are kept by name and matched at each login against the names NSS reports
//! for the account then ([`Account::name`], [`Account::groups`]), so an account or group that NSS
//! did not know when the policy loaded (created later, LDAP not reachable at boot) still gets its
//! rule. A name unknown at load is only a warning.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::identity::{self, Account};

/// The tristate of a policy rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No prompts; enrollment refused.
    Disabled,
    /// Users may enroll; once enrolled, 2FA is enforced for them.
    Optional,
    /// Users must use 2FA and may not disable it.
    Required,
}

impl Mode {
    /// The name used in the file and on the bus.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Disabled => "disabled",
            Mode::Optional => "optional",
            Mode::Required => "required",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub use crate::store::types::{Algorithm, RateLimit};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    default_mode: Option<Mode>,
    grace_period: Option<Spanned<String>>,
    enroll_at_login: Option<bool>,
    notify_command: Option<Spanned<Vec<String>>>,
    notify_timeout: Option<Spanned<String>>,
    notify_failure_interval: Option<Spanned<String>>,
    admin_groups: Option<Vec<Spanned<String>>>,
    login: Option<RawLogin>,
    totp: Option<RawTotp>,
    fido2: Option<RawFido2>,
    rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    groups: BTreeMap<Spanned<String>, RawRule>,
    #[serde(default)]
    users: BTreeMap<Spanned<String>, RawRule>,
    #[serde(default)]
    services: BTreeMap<Spanned<String>, RawServiceRule>,
    exemptions: Option<RawExemptions>,
    audit: Option<RawAudit>,
    store: Option<RawStore>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Option<Spanned<String>>,
    secret_key_file: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    offline_max_age: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    retention: Option<Spanned<String>>,
    max_records: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServiceRule {
    mode: Option<Mode>,
    remember: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawExemptions {
    #[serde(default)]
    networks: Vec<Spanned<String>>,
    #[serde(default)]
    groups: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogin {
    attempts: Option<Spanned<i64>>,
    prompt: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTotp {
    issuer: Option<Spanned<String>>,
    algorithm: Option<Algorithm>,
    digits: Option<Spanned<i64>>,
    period: Option<Spanned<i64>>,
    window: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFido2 {
    rp_id: Option<Spanned<String>>,
    user_verification: Option<UserVerification>,
    touch_timeout: Option<Spanned<String>>,
    press_enter: Option<bool>,
    keys_suffice: Option<bool>,
    #[serde(default)]
    remote_services: Vec<Spanned<String>>,
}

/// How much a key must verify the user (PIN or biometric) beyond a touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserVerification {
    /// A touch only.
    Discouraged,
    /// The PIN when the key has one.
    Preferred,
    /// Always (keys without a PIN cannot be used).
    Required,
}

impl UserVerification {
    /// The policy and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            UserVerification::Discouraged => "discouraged",
            UserVerification::Preferred => "preferred",
            UserVerification::Required => "required",
        }
    }
}

/// Security-key (FIDO2) settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fido2Policy {
    /// Relying party id for new credentials and for logins (default `pam://<hostname>`).
    pub rp_id: String,
    /// PIN/biometric requirement.
    pub user_verification: UserVerification,
    /// How long a login waits for a touch.
    pub touch_timeout: Duration,
    /// The cue is a prompt: touch and press Enter, or Enter alone for a code.
    pub press_enter: bool,
    /// Keys alone make a user enrolled. When false a key can only be added by a user who
    /// already has an authenticator app, so remote logins (which cannot use the key) always
    /// have TOTP.
    pub keys_suffice: bool,
    /// Services (PAM names) whose remote logins may still use a key.
    pub remote_services: Vec<String>,
}

impl Fido2Policy {
    /// Whether a login in this context may use a key.
    pub fn keys_usable(&self, service: &str, rhost: &str) -> bool {
        rhost.is_empty() || self.remote_services.iter().any(|s| s == service)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    max_failures: Option<Spanned<i64>>,
    lockout: Option<Spanned<String>>,
    escalation: Option<Spanned<i64>>,
    max_lockout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    mode: Mode,
    grace_period: Option<Spanned<String>>,
    enroll_at_login: Option<bool>,
}

/// TOTP parameters for new enrollments and verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpPolicy {
    /// Issuer shown in authenticator apps.
    pub issuer: String,
    /// Hash algorithm for new enrollments.
    pub algorithm: Algorithm,
    /// 6 or 8.
    pub digits: u8,
    /// Seconds per step.
    pub period: u64,
    /// Steps accepted on either side of the current one.
    pub window: u64,
}

/// `[audit]`: the audit log's retention, enforced by the daemon (at start, hourly, and after
/// every [`AuditRetention::check_every`] new records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditRetention {
    /// Records older than this are deleted.
    pub retention: Duration,
    /// Past this many records, the oldest are deleted.
    pub max_records: u64,
}

impl AuditRetention {
    /// The defaults: 400 days (a year and a margin), a million records (a few hundred MB).
    pub const DEFAULT: AuditRetention = AuditRetention {
        retention: Duration::from_secs(400 * 86_400),
        max_records: 1_000_000,
    };
    /// Shortest `audit.retention`.
    pub const MIN_RETENTION: Duration = Duration::from_secs(86_400);
    /// Longest `audit.retention` (100 years).
    pub const MAX_RETENTION: Duration = Duration::from_secs(36_500 * 86_400);
    /// `audit.max_records` bounds.
    pub const RECORDS: std::ops::RangeInclusive<i64> = 100..=1_000_000_000;

    /// New records between two checks: 1% of the cap (at most 10,000), so the log never
    /// exceeds its cap by more than about 1%.
    pub fn check_every(&self) -> u64 {
        (self.max_records / 100).clamp(1, 10_000)
    }
}

/// Where a rule came from, for "why" explanations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSource {
    /// e.g. `users.alice` or `groups.wheel`.
    pub key: String,
    /// 1-based line in the file.
    pub line: usize,
}

#[derive(Debug, Clone)]
struct Rule {
    mode: Mode,
    source: RuleSource,
    onboarding: RuleOnboarding,
}

/// Per-rule overrides of the onboarding settings.
#[derive(Debug, Clone, Copy, Default)]
struct RuleOnboarding {
    grace_period: Option<Duration>,
    enroll_at_login: Option<bool>,
}

/// How a required user who has not enrolled yet gets in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Onboarding {
    /// From the first login at which 2FA was required, the user may log in without it for this
    /// long (zero: no grace).
    pub grace_period: Duration,
    /// The user enrolls inside the login conversation (after the other factors passed).
    pub enroll_at_login: bool,
}

/// The validated runtime policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The file it came from (or `<built-in>`).
    pub path: PathBuf,
    /// Mode when no rule matches.
    pub default_mode: Mode,
    default_line: Option<usize>,
    /// `notify_command`, if set.
    pub notify: Option<crate::notify::NotifyCommand>,
    /// `[audit]`: how long and how much of the audit log the daemon keeps.
    pub audit: AuditRetention,
    /// `[store]`: where the state lives and the key that seals its secrets.
    pub store: StorePolicy,
    /// Onboarding defaults (top-level `grace_period`, `enroll_at_login`).
    pub onboarding: Onboarding,
    /// Groups (by name) whose members may call admin methods.
    pub admin_groups: Vec<String>,
    /// Prompts per login before the login is denied.
    pub attempts: u32,
    /// Prompt text.
    pub prompt: String,
    /// TOTP parameters.
    pub totp: TotpPolicy,
    /// Security keys.
    pub fido2: Fido2Policy,
    /// Rate limiting.
    pub rate_limit: RateLimit,
    /// `[users.NAME]`, by login name.
    users: HashMap<String, Rule>,
    /// `[groups.NAME]`, by group name.
    groups: HashMap<String, Rule>,
    services: HashMap<String, Rule>,
    remember: HashMap<String, (Duration, RuleSource)>,
    exempt_networks: Vec<(ipnet::IpNet, RuleSource)>,
    /// `exemptions.groups`, by group name.
    exempt_groups: HashMap<String, RuleSource>,
    /// Problems worth telling the admin that do not make the file invalid, e.g. names NSS did
    /// not know when the policy was loaded (their rules are kept).
    pub warnings: Vec<String>,
}

/// Why a user has the mode they have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// An admin's per-user requirement stored by the daemon.
    AdminRequire,
    /// A `[users.NAME]` rule.
    User(RuleSource),
    /// The strictest of the matching `[groups.NAME]` rules.
    Group(RuleSource),
    /// `default_mode`.
    Default(Option<usize>),
    /// A `[services.NAME]` rule raised the mode to required for this service.
    Service(RuleSource),
    /// An explicit exemption: `[services.NAME] mode = "disabled"`, a trusted network or an
    /// exempt group. Exemptions beat everything else, an admin's requirement included.
    Exempt(RuleSource),
}

/// The effective mode for one user, and the rule that produced it.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveMode {
    /// The mode.
    pub mode: Mode,
    /// The rule.
    pub reason: Reason,
}

impl EffectiveMode {
    /// A one-line explanation naming the rule and where it is.
    pub fn explain(&self, policy_path: &Path) -> String {
        let file = policy_path.display();
        match &self.reason {
            Reason::AdminRequire => {
                "admin requirement (set with `twofactorctl admin require`)".to_string()
            }
            Reason::User(s) | Reason::Group(s) | Reason::Service(s) => {
                format!("{} ({file}:{})", s.key, s.line)
            }
            Reason::Exempt(s) => format!("exemption {} ({file}:{})", s.key, s.line),
            Reason::Default(Some(line)) => format!("default_mode ({file}:{line})"),
            Reason::Default(None) => "built-in default".to_string(),
        }
    }
}

/// What a login is, as far as the policy is concerned: the PAM service and remote host.
/// Empty strings mean "no service" (e.g. `twofactorctl status`) and "local".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Context<'a> {
    /// PAM service name.
    pub service: &'a str,
    /// PAM_RHOST (an address; host names never match a network).
    pub rhost: &'a str,
}

/// A policy file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line, if known.
    pub line: Option<usize>,
    /// 1-based column, if known.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.path.display(), self.message),
            (Some(l), None) => write!(f, "{}:{l}: {}", self.path.display(), self.message),
            _ => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for PolicyError {}

/// Converts a byte offset into a 1-based (line, column).
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn err_at(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> PolicyError {
        let (line, column) = line_col(self.text, span.start);
        PolicyError {
            path: self.path.to_path_buf(),
            line: Some(line),
            column: Some(column),
            message: message.into(),
        }
    }

    fn line_of(&self, span: std::ops::Range<usize>) -> usize {
        line_col(self.text, span.start).0
    }

    fn int_in(
        &self,
        v: &Option<Spanned<i64>>,
        key: &str,
        allowed: std::ops::RangeInclusive<i64>,
        default: i64,
    ) -> Result<i64, PolicyError> {
        match v {
            None => Ok(default),
            Some(s) if allowed.contains(s.get_ref()) => Ok(*s.get_ref()),
            Some(s) => Err(self.err_at(
                s.span(),
                format!(
                    "{key} = {} is out of range ({}..={})",
                    s.get_ref(),
                    allowed.start(),
                    allowed.end()
                ),
            )),
        }
    }

    fn rule_onboarding(&self, rule: &RawRule) -> Result<RuleOnboarding, PolicyError> {
        Ok(RuleOnboarding {
            grace_period: match &rule.grace_period {
                None => None,
                Some(_) => {
                    Some(self.duration(&rule.grace_period, "grace_period", Duration::ZERO)?)
                }
            },
            enroll_at_login: rule.enroll_at_login,
        })
    }

    fn duration(
        &self,
        v: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, PolicyError> {
        let Some(s) = v else {
            return Ok(default);
        };
        let d = humantime::parse_duration(s.get_ref()).map_err(|e| {
            self.err_at(
                s.span(),
                format!(
                    "{key} = {:?} is not a duration ({e}); write e.g. \"30s\", \"5m\", \"1h\"",
                    s.get_ref()
                ),
            )
        })?;
        // Every duration has a ceiling, so that no arithmetic on times can overflow (a huge
        // lockout once wrapped around to "locked for 0 minutes").
        let max = max_duration(key);
        if d > max {
            return Err(self.err_at(
                s.span(),
                format!(
                    "{key} = {:?} is too long: at most \"{}d\"",
                    s.get_ref(),
                    max.as_secs() / 86_400
                ),
            ));
        }
        Ok(d)
    }

    /// Checks `[store]`: an absolute key file and password file, a PostgreSQL URL.
    fn store(&self, raw: &RawStore) -> Result<StorePolicy, PolicyError> {
        let mut out = StorePolicy::default();
        let absolute = |v: &Spanned<String>, key: &str| -> Result<PathBuf, PolicyError> {
            let p = PathBuf::from(v.get_ref());
            if !p.is_absolute() || v.get_ref().contains('\0') {
                return Err(self.err_at(
                    v.span(),
                    format!("store.{key} = {:?} must be an absolute path", v.get_ref()),
                ));
            }
            Ok(p)
        };
        if let Some(k) = &raw.secret_key_file {
            out.secret_key_file = absolute(k, "secret_key_file")?;
            out.secret_key_file_named = true;
        }
        if let Some(p) = &raw.password_file {
            out.password_file = Some(absolute(p, "password_file")?);
        }
        if let Some(u) = &raw.url {
            let url = u.get_ref();
            let scheme_ok = url.starts_with("postgresql://") || url.starts_with("postgres://");
            if !scheme_ok || url.chars().any(char::is_control) {
                return Err(self.err_at(
                    u.span(),
                    // Not echoed: a mistyped URL may hold a password.
                    "store.url is not a PostgreSQL connection URL (write e.g. \
                     \"postgresql://twofactor@db.example.net/twofactor?sslmode=verify-full\")",
                ));
            }
            // A password belongs in password_file or PGPASSFILE, never in the policy file.
            let authority = url
                .split_once("://")
                .map(|(_, rest)| rest.split(['/', '?']).next().unwrap_or(""))
                .unwrap_or("");
            if authority
                .rsplit_once('@')
                .is_some_and(|(userinfo, _)| userinfo.contains(':'))
                || url.contains("password=")
            {
                return Err(self.err_at(
                    u.span(),
                    "store.url holds a password: put it in store.password_file (a root-only \
                     file) or PGPASSFILE, never in the policy file",
                ));
            }
            out.url = Some(url.clone());
        }
        out.offline_max_age = self.duration(
            &raw.offline_max_age,
            "store.offline_max_age",
            StorePolicy::DEFAULT_OFFLINE_MAX_AGE,
        )?;
        Ok(out)
    }
}

/// `[store]`: the state backend and the key that seals secrets at rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorePolicy {
    /// A libpq-style connection URL of a PostgreSQL database shared by a fleet of hosts
    /// (`postgresql://USER@HOST/DB?sslmode=verify-full`, `host=/path` for a socket); `None`:
    /// the embedded SQLite store in the state directory.
    pub url: Option<String>,
    /// The 32-byte key (root-only file) that seals secrets at rest.
    pub secret_key_file: PathBuf,
    /// Whether `secret_key_file` was named in the policy (else it is the default, which may be
    /// absent on a host installed before keys existed).
    pub secret_key_file_named: bool,
    /// The database password (a root-only file); never in the policy file itself.
    pub password_file: Option<PathBuf>,
    /// How long a fleet host keeps serving, from its local cache, the users it served while the
    /// database is unreachable.
    pub offline_max_age: Duration,
}

impl StorePolicy {
    /// Where the package puts the sealing key.
    pub const DEFAULT_KEY_FILE: &'static str = "/etc/twofactor/store.key";
    /// Default `offline_max_age`.
    pub const DEFAULT_OFFLINE_MAX_AGE: Duration = Duration::from_secs(7 * 86_400);
}

impl Default for StorePolicy {
    fn default() -> Self {
        StorePolicy {
            url: None,
            secret_key_file: PathBuf::from(Self::DEFAULT_KEY_FILE),
            secret_key_file_named: false,
            password_file: None,
            offline_max_age: Self::DEFAULT_OFFLINE_MAX_AGE,
        }
    }
}

/// The longest value a duration key accepts: lockouts a month, grace periods a year, the audit
/// log's retention a century, anything else ten years.
pub fn max_duration(key: &str) -> Duration {
    const DAY: u64 = 86_400;
    let days = if key == "audit.retention" {
        36_500
    } else if key.starts_with("rate_limit.") {
        30
    } else if key.ends_with("grace_period") {
        366
    } else {
        3653
    };
    Duration::from_secs(days * DAY)
}

/// A policy file must be a regular file that only root (or the daemon's own user) can write.
fn check_ownership(meta: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(format!(
            "owned by uid {}: the policy must be owned by root",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "writable by group or others (mode {:04o}): run chmod go-w on it",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

pub(crate) fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn default_issuer() -> String {
    format!("twofactor@{}", hostname())
}

/// pam_u2f's default origin, so credentials it registered keep working.
fn default_rp_id() -> String {
    format!("pam://{}", hostname())
}

/// A PAM service name as it appears in /etc/pam.d.
fn valid_service(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && !s.contains(['/', ' '])
}

/// An rp id: printable ASCII without spaces, at most 255 bytes.
pub(crate) fn valid_rp_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_graphic())
}

impl Policy {
    /// The policy used when no file exists: optional for everybody, standard TOTP.
    pub fn builtin() -> Policy {
        Policy {
            path: PathBuf::from("<built-in>"),
            default_mode: Mode::Optional,
            default_line: None,
            onboarding: Onboarding::default(),
            notify: None,
            audit: AuditRetention::DEFAULT,
            store: StorePolicy::default(),
            admin_groups: Vec::new(),
            attempts: 3,
            prompt: "Verification code: ".into(),
            totp: TotpPolicy {
                issuer: default_issuer(),
                algorithm: Algorithm::SHA1,
                digits: 6,
                period: 30,
                window: 1,
            },
            fido2: Fido2Policy {
                rp_id: default_rp_id(),
                user_verification: UserVerification::Preferred,
                touch_timeout: Duration::from_secs(15),
                press_enter: false,
                keys_suffice: true,
                remote_services: Vec::new(),
            },
            rate_limit: RateLimit {
                max_failures: 5,
                lockout: Duration::from_secs(300),
                escalation: 2,
                max_lockout: Duration::from_secs(24 * 3600),
            },
            users: HashMap::new(),
            groups: HashMap::new(),
            services: HashMap::new(),
            remember: HashMap::new(),
            exempt_networks: Vec::new(),
            exempt_groups: HashMap::new(),
            warnings: Vec::new(),
        }
    }

    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        Policy::load_with_text(path).map(|(p, _)| p)
    }

    /// Reads and validates a policy file; also returns the text that was validated.
    pub fn load_with_text(path: &Path) -> Result<(Policy, String), PolicyError> {
        let fail = |message: String| PolicyError {
            path: path.to_path_buf(),
            line: None,
            column: None,
            message,
        };
        // Checks are made on the opened file, not the path, so the file read is the one
        // checked: owned by root (or the daemon's own uid), not writable by anybody else.
        let mut file = std::fs::File::open(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let meta = file
            .metadata()
            .map_err(|e| fail(format!("cannot stat: {e}")))?;
        check_ownership(&meta).map_err(fail)?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes)
            .map_err(|e| fail(format!("cannot read: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let offset = e.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
            let (line, column) = line_col(&text, offset);
            PolicyError {
                path: path.to_path_buf(),
                line: Some(line),
                column: Some(column),
                message: "the file is not valid UTF-8".into(),
            }
        })?;
        let policy = Policy::parse(path, &text, &identity::Nss)?;
        Ok((policy, text))
    }

    /// Parses and validates policy text. `accounts` is asked only whether the names in the
    /// file exist now, for warnings: rules are kept by name whatever it answers.
    pub fn parse(
        path: &Path,
        text: &str,
        accounts: &dyn identity::Accounts,
    ) -> Result<Policy, PolicyError> {
        let ctx = Ctx { path, text };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().to_string();
            match e.span() {
                Some(span) => ctx.err_at(span, message),
                None => PolicyError {
                    path: path.to_path_buf(),
                    line: None,
                    column: None,
                    message,
                },
            }
        })?;
        let mut policy = Policy::builtin();
        policy.path = path.to_path_buf();
        if let Some(mode) = raw.default_mode {
            policy.default_mode = mode;
            policy.default_line = text
                .lines()
                .position(|l| l.trim_start().starts_with("default_mode"))
                .map(|i| i + 1);
        }
        policy.onboarding.grace_period =
            ctx.duration(&raw.grace_period, "grace_period", Duration::ZERO)?;
        policy.onboarding.enroll_at_login = raw.enroll_at_login.unwrap_or(false);
        let notify_timeout = ctx.duration(
            &raw.notify_timeout,
            "notify_timeout",
            Duration::from_secs(10),
        )?;
        if let Some(t) = &raw.notify_timeout
            && (notify_timeout.is_zero() || notify_timeout > Duration::from_secs(300))
        {
            return Err(ctx.err_at(t.span(), "notify_timeout must be between 1s and 5m"));
        }
        let failure_interval = ctx.duration(
            &raw.notify_failure_interval,
            "notify_failure_interval",
            crate::notify::DEFAULT_FAILURE_INTERVAL,
        )?;
        if let Some(t) = &raw.notify_failure_interval
            && !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&failure_interval)
        {
            return Err(ctx.err_at(
                t.span(),
                "notify_failure_interval must be between 1s and 1h",
            ));
        }
        if let Some(cmd) = &raw.notify_command {
            let Some((program, args)) = cmd.get_ref().split_first() else {
                return Err(ctx.err_at(cmd.span(), "notify_command is empty"));
            };
            if !program.starts_with('/') {
                return Err(ctx.err_at(
                    cmd.span(),
                    "notify_command must start with an absolute program path",
                ));
            }
            policy.notify = Some(crate::notify::NotifyCommand {
                program: program.into(),
                args: args.to_vec(),
                timeout: notify_timeout,
                failure_interval,
            });
        }
        if let Some(s) = &raw.store {
            policy.store = ctx.store(s)?;
        }
        if let Some(a) = &raw.audit {
            let retention = ctx.duration(
                &a.retention,
                "audit.retention",
                AuditRetention::DEFAULT.retention,
            )?;
            if let Some(r) = &a.retention
                && !(AuditRetention::MIN_RETENTION..=AuditRetention::MAX_RETENTION)
                    .contains(&retention)
            {
                return Err(ctx.err_at(
                    r.span(),
                    "audit.retention must be between 1d and 36500d (100 years)",
                ));
            }
            let max_records = ctx.int_in(
                &a.max_records,
                "audit.max_records",
                AuditRetention::RECORDS,
                AuditRetention::DEFAULT.max_records as i64,
            )?;
            policy.audit = AuditRetention {
                retention,
                max_records: max_records as u64,
            };
        }
        if let Some(login) = &raw.login {
            policy.attempts = ctx.int_in(&login.attempts, "login.attempts", 1..=10, 3)? as u32;
            if let Some(p) = &login.prompt {
                policy.prompt = p.clone();
            }
        }
        if let Some(t) = &raw.totp {
            if let Some(issuer) = &t.issuer {
                let value = issuer.get_ref();
                if value.is_empty() || value.contains(':') || value.len() > 64 {
                    return Err(ctx.err_at(
                        issuer.span(),
                        "totp.issuer must be 1 to 64 characters without ':'",
                    ));
                }
                policy.totp.issuer = value.clone();
            }
            if let Some(a) = t.algorithm {
                policy.totp.algorithm = a;
            }
            if let Some(d) = &t.digits
                && *d.get_ref() != 6
                && *d.get_ref() != 8
            {
                return Err(ctx.err_at(d.span(), "totp.digits must be 6 or 8"));
            }
            policy.totp.digits = ctx.int_in(&t.digits, "totp.digits", 6..=8, 6)? as u8;
            policy.totp.period = ctx.int_in(&t.period, "totp.period", 15..=300, 30)? as u64;
            policy.totp.window = ctx.int_in(&t.window, "totp.window", 0..=10, 1)? as u64;
        }
        if let Some(f) = &raw.fido2 {
            if let Some(rp) = &f.rp_id {
                if !valid_rp_id(rp.get_ref()) {
                    return Err(ctx.err_at(
                        rp.span(),
                        "fido2.rp_id must be 1 to 255 printable characters without spaces, \
                         e.g. \"pam://host.example.org\"",
                    ));
                }
                policy.fido2.rp_id = rp.get_ref().clone();
            }
            if let Some(uv) = f.user_verification {
                policy.fido2.user_verification = uv;
            }
            let timeout = ctx.duration(
                &f.touch_timeout,
                "fido2.touch_timeout",
                policy.fido2.touch_timeout,
            )?;
            if let Some(t) = &f.touch_timeout
                && !(Duration::from_secs(1)..=Duration::from_secs(120)).contains(&timeout)
            {
                return Err(ctx.err_at(t.span(), "fido2.touch_timeout must be between 1s and 2m"));
            }
            policy.fido2.touch_timeout = timeout;
            if let Some(p) = f.press_enter {
                policy.fido2.press_enter = p;
            }
            if let Some(k) = f.keys_suffice {
                policy.fido2.keys_suffice = k;
            }
            for svc in &f.remote_services {
                if !valid_service(svc.get_ref()) {
                    return Err(ctx.err_at(
                        svc.span(),
                        format!(
                            "fido2.remote_services: {:?} is not a PAM service name",
                            svc.get_ref()
                        ),
                    ));
                }
                policy.fido2.remote_services.push(svc.get_ref().clone());
            }
        }
        if let Some(r) = &raw.rate_limit {
            policy.rate_limit.max_failures =
                ctx.int_in(&r.max_failures, "rate_limit.max_failures", 1..=1000, 5)? as u32;
            policy.rate_limit.escalation =
                ctx.int_in(&r.escalation, "rate_limit.escalation", 1..=100, 2)? as u32;
            policy.rate_limit.lockout =
                ctx.duration(&r.lockout, "rate_limit.lockout", policy.rate_limit.lockout)?;
            policy.rate_limit.max_lockout = ctx.duration(
                &r.max_lockout,
                "rate_limit.max_lockout",
                policy.rate_limit.max_lockout,
            )?;
            if policy.rate_limit.lockout < Duration::from_secs(1) {
                let span = r.lockout.as_ref().map(|s| s.span()).unwrap_or(0..0);
                return Err(ctx.err_at(span, "rate_limit.lockout must be at least 1s"));
            }
            if policy.rate_limit.max_lockout < policy.rate_limit.lockout {
                let span = r
                    .max_lockout
                    .as_ref()
                    .or(r.lockout.as_ref())
                    .map(|s| s.span())
                    .unwrap_or(0..0);
                return Err(ctx.err_at(
                    span,
                    "rate_limit.max_lockout must not be shorter than rate_limit.lockout",
                ));
            }
        }
        // Names are kept as written and matched at each login; NSS is asked here only so the
        // admin hears about a name it does not know (yet).
        let unknown = |what: &str, name: &str, line: usize, effect: &str| {
            format!(
                "{}:{line}: {what} {name:?} is not known to NSS now; {effect} is kept and will \
                 apply once NSS knows the name",
                path.display()
            )
        };
        for name in raw.admin_groups.iter().flatten() {
            if accounts.group_by_name(name.get_ref()).is_none() {
                let line = ctx.line_of(name.span());
                policy.warnings.push(unknown(
                    "admin group",
                    name.get_ref(),
                    line,
                    "the admin right of its members",
                ));
            }
            if !policy.admin_groups.contains(name.get_ref()) {
                policy.admin_groups.push(name.get_ref().clone());
            }
        }
        for (name, rule) in &raw.groups {
            let line = ctx.line_of(name.span());
            if accounts.group_by_name(name.get_ref()).is_none() {
                policy
                    .warnings
                    .push(unknown("group", name.get_ref(), line, "its rule"));
            }
            policy.groups.insert(
                name.get_ref().clone(),
                Rule {
                    mode: rule.mode,
                    source: RuleSource {
                        key: format!("groups.{}", name.get_ref()),
                        line,
                    },
                    onboarding: ctx.rule_onboarding(rule)?,
                },
            );
        }
        for (name, rule) in &raw.users {
            let line = ctx.line_of(name.span());
            if accounts.user_by_name(name.get_ref()).is_none() {
                policy
                    .warnings
                    .push(unknown("user", name.get_ref(), line, "its rule"));
            }
            policy.users.insert(
                name.get_ref().clone(),
                Rule {
                    mode: rule.mode,
                    source: RuleSource {
                        key: format!("users.{}", name.get_ref()),
                        line,
                    },
                    onboarding: ctx.rule_onboarding(rule)?,
                },
            );
        }
        for (name, rule) in &raw.services {
            let key = name.get_ref();
            if !valid_service(key) {
                return Err(ctx.err_at(name.span(), format!("{key:?} is not a PAM service name")));
            }
            let source = RuleSource {
                key: format!("services.{key}"),
                line: ctx.line_of(name.span()),
            };
            if let Some(window) = &rule.remember {
                let d = ctx.duration(&rule.remember, "remember", Duration::ZERO)?;
                if d > Duration::from_secs(3600) {
                    return Err(ctx.err_at(window.span(), "remember must be at most 1h"));
                }
                if !d.is_zero() {
                    policy.remember.insert(key.clone(), (d, source.clone()));
                }
            }
            let Some(mode) = rule.mode else { continue };
            if mode == Mode::Optional {
                policy.warnings.push(format!(
                    "{}:{}: services.{key}: mode = \"optional\" changes nothing (a service rule can \
                     only require 2FA or exempt the service)",
                    path.display(),
                    ctx.line_of(name.span())
                ));
            }
            policy.services.insert(
                key.clone(),
                Rule {
                    mode,
                    source,
                    onboarding: RuleOnboarding::default(),
                },
            );
        }
        if let Some(ex) = &raw.exemptions {
            for net in &ex.networks {
                let text = net.get_ref().trim();
                // A bare address is a one-address network.
                let parsed = text
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
                match parsed {
                    Ok(n) => policy.exempt_networks.push((
                        n.trunc(),
                        RuleSource {
                            key: format!("exemptions.networks {text}"),
                            line: ctx.line_of(net.span()),
                        },
                    )),
                    Err(_) => {
                        return Err(ctx.err_at(
                            net.span(),
                            format!(
                                "{text:?} is not a network: write an address or CIDR, e.g. \
                                 \"192.0.2.0/24\" or \"2001:db8::/32\""
                            ),
                        ));
                    }
                }
            }
            for g in &ex.groups {
                let line = ctx.line_of(g.span());
                if accounts.group_by_name(g.get_ref()).is_none() {
                    policy.warnings.push(unknown(
                        "exempt group",
                        g.get_ref(),
                        line,
                        "the exemption",
                    ));
                }
                // The first mention explains the exemption.
                policy
                    .exempt_groups
                    .entry(g.get_ref().clone())
                    .or_insert(RuleSource {
                        key: format!("exemptions.groups {}", g.get_ref()),
                        line,
                    });
            }
        }
        Ok(policy)
    }

    /// How long a successful second factor is remembered for a local login on `service`
    /// (same uid, same tty): `[services.NAME] remember`.
    pub fn remember_window(&self, service: &str) -> Option<(Duration, &RuleSource)> {
        self.remember.get(service).map(|(d, s)| (*d, s))
    }

    /// The exemption that applies to this login, if any: a service rule with mode "disabled",
    /// a trusted network containing the remote address, or an exempt group.
    fn exemption(&self, account: &Account, login: Context<'_>) -> Option<RuleSource> {
        if let Some(rule) = self.services.get(login.service)
            && rule.mode == Mode::Disabled
        {
            return Some(rule.source.clone());
        }
        if let Ok(addr) = login.rhost.parse::<std::net::IpAddr>() {
            // An IPv4 address written as IPv6 (::ffff:a.b.c.d) is still that IPv4 address.
            let addr = match addr {
                std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, std::net::IpAddr::V4),
                v4 => v4,
            };
            if let Some((_, src)) = self.exempt_networks.iter().find(|(n, _)| n.contains(&addr)) {
                return Some(src.clone());
            }
        }
        account
            .groups
            .iter()
            .find_map(|g| self.exempt_groups.get(g).cloned())
    }

    /// The mode for one login of `account`: exemptions (service "disabled", trusted network,
    /// exempt group) > the admin's requirement > user rule > strictest group rule > default,
    /// then a service rule "required" raises the result for that service.
    pub fn resolve_login(
        &self,
        account: &Account,
        admin_required: bool,
        login: Context<'_>,
    ) -> EffectiveMode {
        if let Some(src) = self.exemption(account, login) {
            return EffectiveMode {
                mode: Mode::Disabled,
                reason: Reason::Exempt(src),
            };
        }
        let base = self.resolve(account, admin_required);
        match self.services.get(login.service) {
            Some(rule) if rule.mode == Mode::Required && base.mode != Mode::Required => {
                EffectiveMode {
                    mode: Mode::Required,
                    reason: Reason::Service(rule.source.clone()),
                }
            }
            _ => base,
        }
    }

    /// The mode for `account`: admin requirement > user rule > strictest group rule > default.
    pub fn resolve(&self, account: &Account, admin_required: bool) -> EffectiveMode {
        if admin_required {
            return EffectiveMode {
                mode: Mode::Required,
                reason: Reason::AdminRequire,
            };
        }
        if let Some(rule) = self.users.get(&account.name) {
            return EffectiveMode {
                mode: rule.mode,
                reason: Reason::User(rule.source.clone()),
            };
        }
        let strictest = account
            .groups
            .iter()
            .filter_map(|g| self.groups.get(g))
            // Strictest mode first; among equals the earliest line, so the answer is stable.
            .min_by(|a, b| b.mode.cmp(&a.mode).then(a.source.line.cmp(&b.source.line)));
        if let Some(rule) = strictest {
            return EffectiveMode {
                mode: rule.mode,
                reason: Reason::Group(rule.source.clone()),
            };
        }
        EffectiveMode {
            mode: self.default_mode,
            reason: Reason::Default(self.default_line),
        }
    }

    /// The onboarding settings for `account`: each one from the user's rule if it sets it,
    /// else from the matching group rules (the most generous grace, enrollment at login if any
    /// group allows it), else the top-level default.
    pub fn onboarding(&self, account: &Account) -> Onboarding {
        let user = self.users.get(&account.name).map(|r| r.onboarding);
        let groups: Vec<RuleOnboarding> = account
            .groups
            .iter()
            .filter_map(|g| self.groups.get(g).map(|r| r.onboarding))
            .collect();
        let grace_period = user
            .and_then(|u| u.grace_period)
            .or_else(|| groups.iter().filter_map(|g| g.grace_period).max())
            .unwrap_or(self.onboarding.grace_period);
        let enroll_at_login = user
            .and_then(|u| u.enroll_at_login)
            .or_else(|| {
                let set: Vec<bool> = groups.iter().filter_map(|g| g.enroll_at_login).collect();
                (!set.is_empty()).then(|| set.contains(&true))
            })
            .unwrap_or(self.onboarding.enroll_at_login);
        Onboarding {
            grace_period,
            enroll_at_login,
        }
    }

    /// The rules the offline snapshot carries (see `twofactor_bus::offline`): the default,
    /// the user and group rules, and the services whose rule requires 2FA. Exemptions are left
    /// out: offline, nobody is exempt.
    pub fn offline_rules(&self) -> twofactor_bus::offline::Snapshot {
        use twofactor_bus::offline::RuleMode;
        let mode = |m: Mode| match m {
            Mode::Disabled => RuleMode::Disabled,
            Mode::Optional => RuleMode::Optional,
            Mode::Required => RuleMode::Required,
        };
        twofactor_bus::offline::Snapshot {
            default_mode: mode(self.default_mode),
            users: self
                .users
                .iter()
                .map(|(n, r)| (n.clone(), mode(r.mode)))
                .collect(),
            groups: self
                .groups
                .iter()
                .map(|(n, r)| (n.clone(), mode(r.mode)))
                .collect(),
            required_services: self
                .services
                .iter()
                .filter(|(_, r)| r.mode == Mode::Required)
                .map(|(n, _)| n.clone())
                .collect(),
            uids: Default::default(),
        }
    }

    /// The names of the `[users.NAME]` rules that say `mode = "required"` (for listings).
    pub fn required_user_rules(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .users
            .iter()
            .filter(|(_, r)| r.mode == Mode::Required)
            .map(|(n, _)| n.as_str())
            .collect();
        names.sort_unstable();
        names
    }

    /// The names of the `[groups.NAME]` rules that say `mode = "required"` (for listings).
    pub fn required_group_rules(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .groups
            .iter()
            .filter(|(_, r)| r.mode == Mode::Required)
            .map(|(n, _)| n.as_str())
            .collect();
        names.sort_unstable();
        names
    }

    /// Whether a login's decision reads the user's groups: a group rule or an exempt group.
    /// When not, `BeginLogin` looks the user up without them (the costly part of a lookup).
    pub fn login_reads_groups(&self) -> bool {
        !self.groups.is_empty() || !self.exempt_groups.is_empty()
    }

    /// Whether `account` may call admin methods: root, or a member of an `admin_groups` group
    /// by the group names NSS reported when `account` was looked up.
    pub fn is_admin(&self, account: &Account) -> bool {
        account.uid == 0 || account.groups.iter().any(|g| self.admin_groups.contains(g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Accounts;
    use crate::identity::tests::FakeAccounts;

    fn accounts() -> FakeAccounts {
        FakeAccounts::new()
            .user("alice", 1000, &[1000, 10, 27])
            .user("bob", 1001, &[1001, 27])
            .user("carol", 1002, &[1002])
            .group("wheel", 10)
            .group("sudo", 27)
            .group("alice", 1000)
            .group("bob", 1001)
            .group("carol", 1002)
    }

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(Path::new("/etc/twofactor/policy.toml"), text, &accounts())
    }

    fn mode_of(p: &Policy, name: &str, admin: bool) -> (Mode, String) {
        let acc = accounts().user_by_name(name).expect("test user");
        let eff = p.resolve(&acc, admin);
        (eff.mode, eff.explain(&p.path))
    }

    #[test]
    fn resolution_matrix() {
        let p = parse(
            r#"
default_mode = "optional"
[groups.wheel]
mode = "required"
[groups.sudo]
mode = "disabled"
[users.bob]
mode = "optional"
"#,
        )
        .expect("valid policy");
        // alice: wheel(required) and sudo(disabled) -> strictest group wins.
        let (m, why) = mode_of(&p, "alice", false);
        assert_eq!(m, Mode::Required);
        assert!(
            why.starts_with("groups.wheel (/etc/twofactor/policy.toml:3)"),
            "{why}"
        );
        // bob: user rule beats the group rule.
        let (m, why) = mode_of(&p, "bob", false);
        assert_eq!(m, Mode::Optional);
        assert!(why.starts_with("users.bob"), "{why}");
        // carol: no rule -> default, with its line.
        let (m, why) = mode_of(&p, "carol", false);
        assert_eq!(m, Mode::Optional);
        assert_eq!(why, "default_mode (/etc/twofactor/policy.toml:2)");
        // admin requirement beats everything, even a user rule.
        let (m, why) = mode_of(&p, "bob", true);
        assert_eq!(m, Mode::Required);
        assert!(why.contains("admin"));
    }

    #[test]
    fn group_rules_only_disabled_and_optional_pick_optional() {
        let p = parse(
            "default_mode = \"required\"\n[groups.wheel]\nmode = \"disabled\"\n[groups.sudo]\nmode = \"optional\"\n",
        )
        .expect("valid");
        assert_eq!(mode_of(&p, "alice", false).0, Mode::Optional);
        assert_eq!(mode_of(&p, "bob", false).0, Mode::Optional);
        assert_eq!(mode_of(&p, "carol", false).0, Mode::Required);
    }

    #[test]
    fn empty_file_is_the_builtin_default() {
        let p = parse("").expect("valid");
        assert_eq!(p.default_mode, Mode::Optional);
        assert_eq!(p.totp.digits, 6);
        assert_eq!(mode_of(&p, "carol", false).1, "built-in default");
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let e = parse("default_mode = \"optional\"\n[totp]\ndigits = 7\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert_eq!(e.column, Some(10));
        assert!(
            e.to_string()
                .starts_with("/etc/twofactor/policy.toml:3:10: "),
            "{e}"
        );
        assert!(e.message.contains("6 or 8"));

        let e = parse("default_mode = \"sometimes\"\n").unwrap_err();
        assert_eq!(e.line, Some(1));
        assert!(e.message.contains("unknown variant"), "{}", e.message);

        let e = parse("[totp]\nperiod = 30\ncolour = \"blue\"\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("unknown field"), "{}", e.message);

        let e = parse("[rate_limit]\nlockout = \"soon\"\n").unwrap_err();
        assert_eq!((e.line, e.column), (Some(2), Some(11)));
        assert!(e.message.contains("not a duration"));

        let e = parse("default_mode = \n").unwrap_err();
        assert_eq!(e.line, Some(1));

        let e = parse("[users.alice]\nmode = \"required\"\nmode = \"optional\"\n").unwrap_err();
        assert_eq!(e.line, Some(3));

        let e = parse("[rate_limit]\nlockout = \"500ms\"\n").unwrap_err();
        assert!(e.message.contains("at least 1s"), "{e}");

        let e = parse("[totp]\nwindow = -1\n").unwrap_err();
        assert!(e.message.contains("out of range"));

        let e = parse("[rate_limit]\nlockout = \"1h\"\nmax_lockout = \"5m\"\n").unwrap_err();
        assert!(e.message.contains("max_lockout"));

        // Durations that would overflow time arithmetic (this one once meant "no lockout").
        let e = parse(
            "[rate_limit]\nlockout = \"16000000000000w\"\nmax_lockout = \"16000000000000w\"\n",
        )
        .unwrap_err();
        assert!(e.message.contains("too long"), "{e}");
        assert_eq!(e.line, Some(2));
        let e = parse("grace_period = \"400d\"\n").unwrap_err();
        assert!(e.message.contains("too long: at most \"366d\""), "{e}");
        let e = parse("[services.sudo]\nremember = \"99999999999d\"\n").unwrap_err();
        assert!(e.message.contains("too long"), "{e}");
        assert!(parse("[rate_limit]\nlockout = \"30d\"\nmax_lockout = \"30d\"\n").is_ok());
    }

    #[test]
    fn the_store_section_is_checked() {
        let p = parse("").expect("valid");
        assert_eq!(p.store, StorePolicy::default());
        let p = parse(
            "[store]\nurl = \"postgresql://twofactor@db.example.net/twofactor?sslmode=verify-full\"\n\
             secret_key_file = \"/etc/twofactor/fleet.key\"\npassword_file = \"/etc/twofactor/db.pass\"\n\
             offline_max_age = \"3d\"\n",
        )
        .expect("valid");
        assert!(
            p.store
                .url
                .as_deref()
                .is_some_and(|u| u.contains("db.example.net"))
        );
        assert_eq!(
            p.store.secret_key_file,
            Path::new("/etc/twofactor/fleet.key")
        );
        assert!(p.store.secret_key_file_named);
        assert_eq!(p.store.offline_max_age, Duration::from_secs(3 * 86_400));
        for (bad, says) in [
            ("url = \"mysql://x/y\"", "not a PostgreSQL"),
            ("url = \"postgresql://u:secret@h/db\"", "holds a password"),
            (
                "url = \"postgresql://h/db?password=secret\"",
                "holds a password",
            ),
            ("secret_key_file = \"store.key\"", "absolute path"),
            ("password_file = \"pw\"", "absolute path"),
            ("offline_max_age = \"soon\"", "not a duration"),
            ("colour = \"blue\"", "unknown field"),
        ] {
            let e = parse(&format!("[store]\n{bad}\n")).unwrap_err();
            assert!(e.message.contains(says), "{bad}: {e}");
            assert_eq!(e.line, Some(2), "{bad}");
            assert!(
                !e.message.contains("secret@"),
                "the password is not echoed: {e}"
            );
        }
    }

    #[test]
    fn unknown_names_are_warnings_not_errors() {
        let p = parse("admin_groups = [\"nosuch\"]\n[users.ghost]\nmode = \"required\"\n")
            .expect("valid");
        assert_eq!(p.warnings.len(), 2);
        assert_eq!(p.admin_groups, ["nosuch"]);
    }

    /// The same host a while after the policy loaded: the groups `admins` and `contractors`
    /// and the user `dave` were created, bob was added to `admins` and carol to `contractors`.
    fn accounts_later() -> FakeAccounts {
        FakeAccounts::new()
            .user("alice", 1000, &[1000, 10, 27])
            .user("bob", 1001, &[1001, 27, 2000])
            .user("carol", 1002, &[1002, 2001])
            .user("dave", 1003, &[1003, 2000])
            .group("wheel", 10)
            .group("sudo", 27)
            .group("alice", 1000)
            .group("bob", 1001)
            .group("carol", 1002)
            .group("dave", 1003)
            .group("admins", 2000)
            .group("contractors", 2001)
    }

    #[test]
    fn rules_for_names_unknown_at_load_apply_once_nss_knows_them() {
        let p = parse(
            r#"
default_mode = "optional"
admin_groups = ["admins"]
[groups.admins]
mode = "required"
grace_period = "3d"
[users.dave]
mode = "disabled"
[exemptions]
groups = ["contractors"]
"#,
        )
        .expect("valid");
        // Four names NSS did not know at load: four warnings, every rule kept.
        assert_eq!(p.warnings.len(), 4, "{:#?}", p.warnings);
        for (w, what) in p.warnings.iter().zip([
            "3: admin group \"admins\"",
            "4: group \"admins\"",
            "7: user \"dave\"",
            "10: exempt group \"contractors\"",
        ]) {
            assert!(
                w.starts_with(&format!("/etc/twofactor/policy.toml:{what}")),
                "{w}"
            );
            assert!(
                w.contains("is kept and will apply once NSS knows the name"),
                "{w}"
            );
        }
        let at_load = accounts();
        let later = accounts_later();
        let sshd = Context {
            service: "sshd",
            rhost: "",
        };

        // bob, before and after he was added to the new group admins.
        let bob = at_load.user_by_name("bob").expect("bob");
        assert_eq!(p.resolve_login(&bob, false, sshd).mode, Mode::Optional);
        assert!(!p.is_admin(&bob));
        let bob = later.user_by_name("bob").expect("bob");
        let eff = p.resolve_login(&bob, false, sshd);
        assert_eq!(eff.mode, Mode::Required);
        assert_eq!(
            eff.explain(&p.path),
            "groups.admins (/etc/twofactor/policy.toml:4)"
        );
        assert!(p.is_admin(&bob));
        assert_eq!(p.onboarding(&bob).grace_period.as_secs(), 3 * 86400);

        // dave did not exist at load; his own rule beats the group rule.
        assert!(at_load.user_by_name("dave").is_none());
        let dave = later.user_by_name("dave").expect("dave");
        let eff = p.resolve_login(&dave, false, sshd);
        assert_eq!(eff.mode, Mode::Disabled);
        assert_eq!(
            eff.explain(&p.path),
            "users.dave (/etc/twofactor/policy.toml:7)"
        );
        assert!(p.is_admin(&dave));

        // carol, added to the new exempt group, is exempt even from an admin requirement.
        let carol = at_load.user_by_name("carol").expect("carol");
        assert_eq!(p.resolve_login(&carol, true, sshd).mode, Mode::Required);
        let carol = later.user_by_name("carol").expect("carol");
        let eff = p.resolve_login(&carol, true, sshd);
        assert_eq!(eff.mode, Mode::Disabled);
        assert!(
            eff.explain(&p.path)
                .starts_with("exemption exemptions.groups contractors (")
        );

        // A user taken out of the group loses its rule at the next lookup, too.
        let bob = at_load.user_by_name("bob").expect("bob");
        assert_eq!(p.resolve(&bob, false).mode, Mode::Optional);
    }

    #[test]
    fn known_names_give_no_warnings() {
        let p = parse(
            "admin_groups = [\"wheel\"]\n[groups.sudo]\nmode = \"required\"\n\
             [users.carol]\nmode = \"required\"\n[exemptions]\ngroups = [\"bob\"]\n",
        )
        .expect("valid");
        assert!(p.warnings.is_empty(), "{:#?}", p.warnings);
    }

    #[test]
    fn admin_groups_grant_admin() {
        let p = parse("admin_groups = [\"wheel\"]\n").expect("valid");
        let a = accounts();
        assert!(p.is_admin(&a.user_by_name("alice").expect("alice")));
        assert!(!p.is_admin(&a.user_by_name("bob").expect("bob")));
    }

    #[test]
    fn lockouts_escalate_and_are_capped() {
        let r = RateLimit {
            max_failures: 3,
            lockout: Duration::from_secs(60),
            escalation: 2,
            max_lockout: Duration::from_secs(300),
        };
        assert_eq!(r.lockout_for(1).as_secs(), 60);
        assert_eq!(r.lockout_for(2).as_secs(), 120);
        assert_eq!(r.lockout_for(3).as_secs(), 240);
        assert_eq!(r.lockout_for(4).as_secs(), 300);
        assert_eq!(r.lockout_for(200).as_secs(), 300);
    }

    #[test]
    fn service_rules_and_exemptions() {
        let p = parse(
            r#"
default_mode = "optional"
[services.sudo]
mode = "required"
[services.cron]
mode = "disabled"
[groups.wheel]
mode = "required"
[exemptions]
networks = ["192.0.2.0/24", "2001:db8::/32", "198.51.100.7"]
groups = ["sudo"]
"#,
        )
        .expect("valid");
        let a = accounts();
        let carol = a.user_by_name("carol").expect("carol");
        let alice = a.user_by_name("alice").expect("alice");
        let at = |service, rhost| Context { service, rhost };
        let explain = |e: EffectiveMode| (e.mode, e.explain(&p.path));
        // carol: optional by default; sudo raises it; cron exempts it.
        assert_eq!(
            p.resolve_login(&carol, false, at("sshd", "")).mode,
            Mode::Optional
        );
        let (m, why) = explain(p.resolve_login(&carol, false, at("sudo", "")));
        assert_eq!(m, Mode::Required);
        assert!(why.starts_with("services.sudo ("), "{why}");
        let (m, why) = explain(p.resolve_login(&carol, false, at("cron", "")));
        assert_eq!(m, Mode::Disabled);
        assert!(why.starts_with("exemption services.cron"), "{why}");
        // Trusted networks, IPv4, IPv6, a single address and a mapped IPv4; host names never.
        for rhost in [
            "192.0.2.77",
            "2001:db8::1",
            "198.51.100.7",
            "::ffff:192.0.2.1",
        ] {
            let (m, why) = explain(p.resolve_login(&carol, true, at("sshd", rhost)));
            assert_eq!(m, Mode::Disabled, "{rhost}");
            assert!(why.contains("exemptions.networks"), "{why}");
        }
        for rhost in [
            "192.0.3.1",
            "2001:db9::1",
            "198.51.100.8",
            "host.example.com",
        ] {
            assert_eq!(
                p.resolve_login(&carol, true, at("sshd", rhost)).mode,
                Mode::Required,
                "{rhost}"
            );
        }
        // alice is in wheel (required) and in the exempt group sudo: the exemption wins, even
        // over an admin requirement.
        let (m, why) = explain(p.resolve_login(&alice, true, at("sshd", "")));
        assert_eq!(m, Mode::Disabled);
        assert!(why.contains("exemptions.groups sudo"), "{why}");
        // Without context (status), only the base rules apply.
        assert_eq!(
            p.resolve_login(&carol, false, Context::default()).mode,
            Mode::Optional
        );
    }

    #[test]
    fn bad_networks_and_service_names_are_errors() {
        let e = parse("[exemptions]\nnetworks = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("not a network"), "{e}");
        let e = parse("[exemptions]\nnetworks = [\"lan\"]\n").unwrap_err();
        assert!(e.message.contains("not a network"), "{e}");
        let e = parse("[services.\"a b\"]\nmode = \"required\"\n").unwrap_err();
        assert!(e.message.contains("not a PAM service name"), "{e}");
        let e = parse("[services.sudo]\nmode = \"required\"\nremember = \"2h\"\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("at most 1h"), "{e}");
        let e = parse("[services.sudo]\nremember = 5\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        let p = parse("[services.sudo]\nremember = \"5m\"\n").expect("valid");
        assert_eq!(p.remember_window("sudo").map(|r| r.0.as_secs()), Some(300));
        assert!(p.remember_window("sshd").is_none());
        let p = parse("[services.sshd]\nmode = \"optional\"\n").expect("valid");
        assert_eq!(p.warnings.len(), 1);
    }

    #[test]
    fn onboarding_comes_from_the_user_then_groups_then_the_default() {
        let p = parse(
            r#"
grace_period = "7d"
[groups.wheel]
mode = "required"
grace_period = "14d"
enroll_at_login = true
[users.bob]
mode = "required"
grace_period = "0s"
"#,
        )
        .expect("valid");
        let a = accounts();
        let on = |n: &str| p.onboarding(&a.user_by_name(n).expect("user"));
        assert_eq!(on("alice").grace_period.as_secs(), 14 * 86400);
        assert!(on("alice").enroll_at_login);
        assert_eq!(on("bob").grace_period.as_secs(), 0);
        assert!(!on("bob").enroll_at_login);
        assert_eq!(on("carol").grace_period.as_secs(), 7 * 86400);
        let e = parse("grace_period = \"a week\"\n").unwrap_err();
        assert!(e.message.contains("not a duration"), "{e}");
    }

    #[test]
    fn notify_command_must_be_an_absolute_program() {
        let p = parse("notify_command = [\"/usr/local/bin/mail-2fa\", \"--to\", \"admin\"]\n")
            .expect("valid");
        let n = p.notify.expect("set");
        assert_eq!(n.program, PathBuf::from("/usr/local/bin/mail-2fa"));
        assert_eq!(n.args, ["--to", "admin"]);
        assert_eq!(n.timeout.as_secs(), 10);
        assert!(parse("notify_command = [\"mail-2fa\"]\n").is_err());
        assert!(parse("notify_command = []\n").is_err());
        assert!(parse("notify_command = \"/bin/true\"\n").is_err());
        assert!(parse("notify_timeout = \"1h\"\n").is_err());
        assert_eq!(n.failure_interval.as_secs(), 60);
        let p = parse("notify_command = [\"/bin/true\"]\nnotify_failure_interval = \"5s\"\n")
            .expect("valid");
        assert_eq!(p.notify.expect("set").failure_interval.as_secs(), 5);
        for bad in ["0s", "2h", "soon"] {
            let e = parse(&format!("notify_failure_interval = \"{bad}\"\n")).unwrap_err();
            assert!(e.message.contains("notify_failure_interval"), "{e}");
        }
    }

    #[test]
    fn audit_retention_has_sane_defaults_and_bounds() {
        let p = parse("").expect("valid");
        assert_eq!(p.audit, AuditRetention::DEFAULT);
        assert_eq!(p.audit.retention.as_secs(), 400 * 86_400);
        assert_eq!(p.audit.max_records, 1_000_000);
        assert_eq!(p.audit.check_every(), 10_000);
        let p = parse("[audit]\nretention = \"30d\"\nmax_records = 5000\n").expect("valid");
        assert_eq!(p.audit.retention.as_secs(), 30 * 86_400);
        assert_eq!(p.audit.max_records, 5000);
        assert_eq!(p.audit.check_every(), 50);
        // One key alone keeps the other's default.
        let p = parse("[audit]\nmax_records = 100\n").expect("valid");
        assert_eq!(p.audit.retention, AuditRetention::DEFAULT.retention);
        assert_eq!(p.audit.check_every(), 1);
        for (bad, what) in [
            ("retention = \"1h\"", "audit.retention"),
            ("retention = \"200y\"", "audit.retention"),
            ("retention = \"forever\"", "not a duration"),
            ("max_records = 10", "out of range"),
            ("max_records = -1", "out of range"),
            ("max_records = \"many\"", "invalid type"),
            ("keep = 3", "unknown field"),
        ] {
            let e = parse(&format!("[audit]\n{bad}\n")).unwrap_err();
            assert!(e.message.contains(what), "{bad}: {e}");
            assert_eq!(e.line, Some(2), "{bad}: {e}");
        }
    }

    #[test]
    fn files_others_can_write_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, "default_mode = \"required\"\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(
            Policy::load(&path).expect("valid").default_mode,
            Mode::Required
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).expect("chmod");
        let e = Policy::load(&path).expect_err("group-writable");
        assert!(e.message.contains("writable by group or others"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o646)).expect("chmod");
        assert!(Policy::load(&path).is_err());
        assert!(Policy::load(dir.path()).is_err());
    }

    #[test]
    fn fido2_settings_parse_and_are_checked() {
        let p = parse("").unwrap();
        assert!(p.fido2.rp_id.starts_with("pam://"));
        assert_eq!(p.fido2.user_verification, UserVerification::Preferred);
        assert!(p.fido2.keys_usable("login", ""));
        assert!(!p.fido2.keys_usable("sshd", "192.0.2.1"));
        let p = parse(
            "[fido2]\nrp_id = \"pam://fleet\"\nuser_verification = \"required\"\n\
             touch_timeout = \"30s\"\npress_enter = true\nkeys_suffice = false\n\
             remote_services = [\"cockpit\"]\n",
        )
        .unwrap();
        assert_eq!(p.fido2.rp_id, "pam://fleet");
        assert_eq!(p.fido2.user_verification, UserVerification::Required);
        assert_eq!(p.fido2.touch_timeout, Duration::from_secs(30));
        assert!(p.fido2.press_enter && !p.fido2.keys_suffice);
        assert!(p.fido2.keys_usable("cockpit", "192.0.2.1"));
        assert!(!p.fido2.keys_usable("sshd", "192.0.2.1"));
        for (bad, line) in [
            ("[fido2]\nrp_id = \"pam://a b\"\n", 2),
            ("[fido2]\nuser_verification = \"always\"\n", 2),
            ("[fido2]\n\ntouch_timeout = \"10m\"\n", 3),
            ("[fido2]\nremote_services = [\"a/b\"]\n", 2),
            ("[fido2]\nkeys = true\n", 2),
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.line, Some(line), "{bad}: {e}");
        }
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let text = include_str!("../../conf/policy.toml");
        let p = parse(text).expect("conf/policy.toml must be valid");
        assert_eq!(p.default_mode, Mode::Optional);
    }
}
