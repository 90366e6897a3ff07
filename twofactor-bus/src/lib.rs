//! The D-Bus contract shared by `twofactord`, `pam_twofactor` and `twofactorctl`.
//!
//! Everything that crosses the bus is defined here once: the bus name, the object path, the
//! interface names, the wire types, the error names and the client proxies. The committed
//! interface XML (`interface.xml`) is the documented contract; a test compares it with the
//! daemon's live introspection.
#![forbid(unsafe_code)]

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use zbus::{Type, proxy};

pub mod offline;
pub mod text;

/// Well-known bus name owned by `twofactord` on the system bus.
pub const BUS_NAME: &str = "org.twofactor.TwoFactor1";
/// The one object that carries all three interfaces.
pub const OBJECT_PATH: &str = "/org/twofactor/TwoFactor1";
/// Interface used by the PAM module.
pub const LOGIN_INTERFACE: &str = "org.twofactor.TwoFactor1.Login";
/// Interface for a user's own enrollment.
pub const ENROLLMENT_INTERFACE: &str = "org.twofactor.TwoFactor1.Enrollment";
/// Interface for administrators.
pub const ADMIN_INTERFACE: &str = "org.twofactor.TwoFactor1.Admin";
/// The account `twofactord` runs as (packaging/sysusers.d). The PAM module talks to the owner of
/// [`BUS_NAME`] only if it runs as this user or as root.
pub const DAEMON_USER: &str = "_twofactord";
/// Prefix of every D-Bus error name the daemon returns.
pub const ERROR_PREFIX: &str = "org.twofactor.TwoFactor1.Error";

/// The committed interface description; the daemon's introspection must match it.
pub const INTERFACE_XML: &str = include_str!("../interface.xml");

/// The closed set of D-Bus errors. A wrong code is never one of these: it is a login result.
#[derive(zbus::DBusError, Debug, Clone, PartialEq)]
#[zbus(prefix = "org.twofactor.TwoFactor1.Error")]
pub enum BusError {
    /// A transport error on the client side (never sent by the daemon).
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The caller may not call this method, or not for this user.
    AccessDenied(String),
    /// The named user does not exist (or the name is not a valid user name).
    NoSuchUser(String),
    /// An argument is malformed (too long, bad characters, unknown key).
    InvalidArgument(String),
    /// The login or enrollment handle is unknown, expired or belongs to another caller.
    NoSuchSession(String),
    /// Policy forbids this operation for this user.
    NotAllowed(String),
    /// The daemon could not read or write its state; nothing was changed.
    StateUnavailable(String),
    /// The policy file is invalid; the running policy stays in force.
    InvalidPolicy(String),
}

impl BusError {
    /// Short, stable name of the error (the last part of its D-Bus name).
    pub fn kind(&self) -> &'static str {
        match self {
            BusError::ZBus(_) => "Transport",
            BusError::AccessDenied(_) => "AccessDenied",
            BusError::NoSuchUser(_) => "NoSuchUser",
            BusError::InvalidArgument(_) => "InvalidArgument",
            BusError::NoSuchSession(_) => "NoSuchSession",
            BusError::NotAllowed(_) => "NotAllowed",
            BusError::StateUnavailable(_) => "StateUnavailable",
            BusError::InvalidPolicy(_) => "InvalidPolicy",
        }
    }

    /// The human-readable message.
    pub fn message(&self) -> String {
        match self {
            BusError::ZBus(e) => e.to_string(),
            BusError::AccessDenied(m)
            | BusError::NoSuchUser(m)
            | BusError::InvalidArgument(m)
            | BusError::NoSuchSession(m)
            | BusError::NotAllowed(m)
            | BusError::StateUnavailable(m)
            | BusError::InvalidPolicy(m) => m.clone(),
        }
    }
}

/// Keys of the login context passed to `BeginLogin`.
pub mod context {
    /// The PAM service name (`sshd`, `sudo`, `login`, …).
    pub const SERVICE: &str = "service";
    /// PAM_RHOST: the remote host, empty for local logins.
    pub const RHOST: &str = "rhost";
    /// PAM_TTY.
    pub const TTY: &str = "tty";
    /// PAM_RUSER.
    pub const RUSER: &str = "ruser";
    /// An opaque identity of the login session the PAM module runs in (terminal device and its
    /// change time, session leader and its start time, audit session): a remembered login
    /// (`remember`) is honoured only for the same identity, and only from a root caller.
    pub const SESSION: &str = "session";
}

/// Most credential ids one key request may name.
pub const MAX_KEY_CREDENTIALS: usize = 32;

/// Most security keys one user may hold (enrolled and imported together).
pub const MAX_KEYS_PER_USER: usize = 16;

/// What a client asks a security key for: an assertion over client data the daemon built.
///
/// The key signs `authenticatorData || SHA-256(client_data)`; the daemon recomputes the hash
/// over its own copy, so the client cannot change what is signed.
#[derive(Serialize, Deserialize, Type, Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyRequest {
    /// The relying party id, e.g. `pam://host.example.org`.
    pub rp_id: String,
    /// The client data (JSON with the daemon's single-use challenge).
    pub client_data: Vec<u8>,
    /// The credentials the key may use (the user's keys for this rp id).
    pub credential_ids: Vec<Vec<u8>>,
    /// `discouraged`, `preferred` or `required` (PIN or biometric).
    pub user_verification: String,
    /// How long to wait for the touch, in milliseconds.
    pub timeout_ms: u32,
    /// For logins: the cue is a prompt; the user touches the key and presses Enter, or
    /// presses Enter alone to type a code instead.
    pub press_enter: bool,
}

/// An assertion a client relays from a key: untrusted until the daemon verified it.
#[derive(Serialize, Deserialize, Type, Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyAssertion {
    /// The credential the key used.
    pub credential_id: Vec<u8>,
    /// The authenticatorData the key signed.
    pub authenticator_data: Vec<u8>,
    /// The signature over `authenticator_data || SHA-256(client_data)`.
    pub signature: Vec<u8>,
}

/// Why the client answered a key step without an assertion (`Login.SkipKey`).
pub mod skip_reason {
    /// No security key is plugged in.
    pub const NO_DEVICE: &str = "no-device";
    /// Nobody touched the key in time.
    pub const TIMEOUT: &str = "timeout";
    /// The user chose to type a code instead.
    pub const DECLINED: &str = "declined";
    /// The key holds none of the user's credentials.
    pub const NOT_ENROLLED: &str = "not-enrolled";
    /// The key failed or refused (wrong PIN, PIN blocked, device error).
    pub const ERROR: &str = "error";
    /// Every reason the daemon accepts.
    pub const ALL: &[&str] = &[NO_DEVICE, TIMEOUT, DECLINED, NOT_ENROLLED, ERROR];
}

/// A security-key enrollment: what the client needs for the key's makeCredential.
#[derive(Serialize, Deserialize, Type, Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyEnrollment {
    /// Handle for `RegisterKey` and `ConfirmKey`.
    pub enrollment_id: String,
    /// The relying party id the credential is made for.
    pub rp_id: String,
    /// The user handle (opaque, made by the daemon).
    pub user_id: Vec<u8>,
    /// The login name (shown by some keys).
    pub user_name: String,
    /// The client data (JSON with the daemon's single-use challenge).
    pub client_data: Vec<u8>,
    /// The user's credentials for this rp id: a key that holds one is refused.
    pub exclude_credential_ids: Vec<Vec<u8>>,
    /// `discouraged`, `preferred` or `required`.
    pub user_verification: String,
    /// COSE algorithms the daemon accepts, preferred first (-7 ES256, -8 EdDSA).
    pub algorithms: Vec<i32>,
    /// How long to wait for the touch, in milliseconds.
    pub timeout_ms: u32,
    /// Unix time after which the enrollment is void.
    pub expires: i64,
}

/// One credential to import for a user (from a pam_u2f authfile).
#[derive(Serialize, Deserialize, Type, Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyImport {
    /// A name for the key (unique per user).
    pub name: String,
    /// The relying party id it was registered for (pam_u2f: its `origin`).
    pub rp_id: String,
    /// The credential id (pam_u2f: the key handle).
    pub credential_id: Vec<u8>,
    /// The public key as a COSE_Key (ES256 or EdDSA).
    pub public_key_cose: Vec<u8>,
    /// Whether the credential was registered with user verification (PIN).
    pub user_verification: bool,
}

/// One step of the login conversation as it travels on the bus.
///
/// `kind` is one of [`StepKind`]'s names; `notices` are shown before the step is performed.
#[derive(Serialize, Deserialize, Type, Debug, Clone, PartialEq, Eq)]
pub struct WireStep {
    /// `prompt`, `key` or `done`.
    pub kind: String,
    /// Prompt text for `prompt`; the cue ("Touch your security key") for `key`.
    pub text: String,
    /// Whether the answer to a prompt may be echoed.
    pub echo: bool,
    /// For `done`: `success`, `denied`, `not-required` or `unavailable`.
    pub outcome: String,
    /// Messages to show first: (is_error, text).
    pub notices: Vec<(bool, String)>,
    /// For `key`: what to ask the key for (empty otherwise).
    pub key: KeyRequest,
}

/// What the module is asked to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// Ask the user and send the answer with `Continue`.
    Prompt { text: String, echo: bool },
    /// Show the cue, get an assertion from a security key and send it with `Assert`, or
    /// `SkipKey` when there is none (no key, timeout, the user declined).
    Key { cue: String, request: KeyRequest },
    /// The conversation is over.
    Done(Outcome),
}

/// A decoded login step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginStep {
    /// Messages to show before performing `kind`.
    pub notices: Vec<Notice>,
    /// The action.
    pub kind: StepKind,
}

/// A message for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Shown as an error (`PAM_ERROR_MSG`) rather than information (`PAM_TEXT_INFO`).
    pub error: bool,
    /// The text.
    pub text: String,
}

/// The result of a login conversation.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The second factor was verified.
    Success,
    /// Wrong code, locked out, required but not enrolled, …
    Denied,
    /// Policy says 2FA does not apply to this login.
    NotRequired,
    /// The daemon cannot decide (state unreadable, …): never success.
    Unavailable,
}

impl Outcome {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::NotRequired => "not-required",
            Outcome::Unavailable => "unavailable",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Outcome> {
        Some(match s {
            "success" => Outcome::Success,
            "denied" => Outcome::Denied,
            "not-required" => Outcome::NotRequired,
            "unavailable" => Outcome::Unavailable,
            _ => return None,
        })
    }
}

/// A step the client could not understand: the module fails closed on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

impl LoginStep {
    /// A prompt step.
    pub fn prompt(text: impl Into<String>, echo: bool) -> Self {
        LoginStep {
            notices: Vec::new(),
            kind: StepKind::Prompt {
                text: text.into(),
                echo,
            },
        }
    }

    /// A security-key step.
    pub fn key(cue: impl Into<String>, request: KeyRequest) -> Self {
        LoginStep {
            notices: Vec::new(),
            kind: StepKind::Key {
                cue: cue.into(),
                request,
            },
        }
    }

    /// A final step.
    pub fn done(outcome: Outcome) -> Self {
        LoginStep {
            notices: Vec::new(),
            kind: StepKind::Done(outcome),
        }
    }

    /// Adds an informational message.
    pub fn info(mut self, text: impl Into<String>) -> Self {
        self.notices.push(Notice {
            error: false,
            text: text.into(),
        });
        self
    }

    /// Adds an error message.
    pub fn error(mut self, text: impl Into<String>) -> Self {
        self.notices.push(Notice {
            error: true,
            text: text.into(),
        });
        self
    }
}

impl From<LoginStep> for WireStep {
    fn from(step: LoginStep) -> Self {
        let notices = step
            .notices
            .into_iter()
            .map(|n| (n.error, n.text))
            .collect();
        match step.kind {
            StepKind::Prompt { text, echo } => WireStep {
                kind: "prompt".into(),
                text,
                echo,
                outcome: String::new(),
                notices,
                key: KeyRequest::default(),
            },
            StepKind::Key { cue, request } => WireStep {
                kind: "key".into(),
                text: cue,
                echo: false,
                outcome: String::new(),
                notices,
                key: request,
            },
            StepKind::Done(outcome) => WireStep {
                kind: "done".into(),
                text: String::new(),
                echo: false,
                outcome: outcome.as_str().into(),
                notices,
                key: KeyRequest::default(),
            },
        }
    }
}

impl TryFrom<WireStep> for LoginStep {
    type Error = ProtocolError;

    fn try_from(w: WireStep) -> Result<Self, ProtocolError> {
        let notices = w
            .notices
            .into_iter()
            .map(|(error, text)| Notice { error, text })
            .collect();
        let kind = match w.kind.as_str() {
            "prompt" => StepKind::Prompt {
                text: w.text,
                echo: w.echo,
            },
            "key" => {
                if w.key.rp_id.is_empty() || w.key.client_data.is_empty() {
                    return Err(ProtocolError(
                        "a key step without an rp id or client data".into(),
                    ));
                }
                if w.key.credential_ids.len() > MAX_KEY_CREDENTIALS {
                    return Err(ProtocolError(
                        "a key step naming too many credentials".into(),
                    ));
                }
                StepKind::Key {
                    cue: w.text,
                    request: w.key,
                }
            }
            "done" => StepKind::Done(
                Outcome::parse(&w.outcome)
                    .ok_or_else(|| ProtocolError(format!("unknown outcome {:?}", w.outcome)))?,
            ),
            other => return Err(ProtocolError(format!("unknown step kind {other:?}"))),
        };
        Ok(LoginStep { notices, kind })
    }
}

/// A factor as shown to users and admins (never its secret).
#[derive(Serialize, Deserialize, Type, Debug, Clone, PartialEq, Eq)]
pub struct FactorInfo {
    /// `totp` or `key`.
    pub kind: String,
    /// A name for the factor.
    pub name: String,
    /// Unix time it was activated.
    pub created: i64,
    /// Unix time of its last successful use, 0 if never.
    pub last_used: i64,
}

/// Everything `status` and `admin show` print about one user.
#[derive(Serialize, Deserialize, Type, Debug, Clone, PartialEq, Eq)]
pub struct UserStatus {
    /// Login name.
    pub user: String,
    /// Numeric uid: the identity.
    pub uid: u32,
    /// Effective mode for a plain login: `disabled`, `optional` or `required`.
    pub mode: String,
    /// The rule that produced `mode`, e.g. `groups.wheel (/etc/twofactor/policy.toml:12)`.
    pub rule: String,
    /// Whether the user has an active second factor.
    pub enrolled: bool,
    /// Whether a second factor is asked for at login (mode and enrollment together).
    pub enforced: bool,
    /// Whether an admin set a per-user requirement.
    pub admin_required: bool,
    /// The active factors.
    pub factors: Vec<FactorInfo>,
    /// Unused recovery codes.
    pub recovery_codes_left: u32,
    /// Unix time until which the user is locked out, 0 if not locked.
    pub locked_until: i64,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// For a required user who has not enrolled: the end of their grace period (0: none).
    pub grace_until: i64,
    /// Warnings for the user or an admin, one sentence or two each: security keys are the
    /// only factor and remote logins use up recovery codes, few recovery codes are left.
    pub warnings: Vec<String>,
}

/// A TOTP enrollment that waits for its first code.
#[derive(Serialize, Deserialize, Type, Clone, PartialEq, Eq)]
pub struct TotpEnrollment {
    /// Handle for `ConfirmTotp`.
    pub enrollment_id: String,
    /// The secret, base32 without padding: shown once, to be put into an app.
    pub secret_base32: String,
    /// The `otpauth://totp/...` URI (contains the secret).
    pub uri: String,
    /// `SHA1`, `SHA256` or `SHA512`.
    pub algorithm: String,
    /// 6 or 8.
    pub digits: u32,
    /// Seconds per step.
    pub period: u32,
    /// Unix time after which the enrollment is void.
    pub expires: i64,
}

impl std::fmt::Debug for TotpEnrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpEnrollment")
            .field("enrollment_id", &self.enrollment_id)
            .field("secret_base32", &"<redacted>")
            .field("uri", &"<redacted>")
            .field("algorithm", &self.algorithm)
            .field("digits", &self.digits)
            .field("period", &self.period)
            .field("expires", &self.expires)
            .finish()
    }
}

/// The answer to an operation that needs a code: accepted or not, why, and any new codes.
#[derive(Serialize, Deserialize, Type, Clone, PartialEq, Eq)]
pub struct CodeResult {
    /// Whether the code was accepted and the operation done.
    pub accepted: bool,
    /// What happened, for the user.
    pub message: String,
    /// New recovery codes (shown once), if the operation made any.
    pub recovery_codes: Vec<String>,
}

impl std::fmt::Debug for CodeResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeResult")
            .field("accepted", &self.accepted)
            .field("message", &self.message)
            .field("recovery_codes", &self.recovery_codes.len())
            .finish()
    }
}

/// One audit-log entry.
#[derive(Serialize, Deserialize, Type, Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Unix time.
    pub time: i64,
    /// The user the event is about.
    pub user: String,
    /// Event name, e.g. `login`, `enroll`, `lockout`, `admin-require`.
    pub event: String,
    /// `success`, `failure`, or a short result word.
    pub result: String,
    /// PAM service, if any.
    pub service: String,
    /// Remote host, if any.
    pub rhost: String,
    /// Who did it (login name of the bus caller).
    pub actor: String,
    /// Details (never a secret or a code).
    pub detail: String,
}

/// The Login interface, used by the PAM module.
#[proxy(
    interface = "org.twofactor.TwoFactor1.Login",
    default_service = "org.twofactor.TwoFactor1",
    default_path = "/org/twofactor/TwoFactor1"
)]
pub trait Login {
    /// Starts a login for `user` (empty: the caller) with a context (`service`, `rhost`, `tty`,
    /// `ruser`, `session`).
    fn begin_login(
        &self,
        user: &str,
        context: HashMap<&str, &str>,
    ) -> Result<(String, WireStep), BusError>;
    /// Answers the current prompt.
    #[zbus(name = "Continue")]
    fn continue_(&self, handle: &str, answer: &str) -> Result<WireStep, BusError>;
    /// Abandons a login.
    fn cancel(&self, handle: &str) -> Result<(), BusError>;
    /// Answers a key step with the key's assertion.
    fn assert(&self, handle: &str, assertion: &KeyAssertion) -> Result<WireStep, BusError>;
    /// Answers a key step without an assertion; `reason` is one of [`skip_reason`]'s.
    fn skip_key(&self, handle: &str, reason: &str) -> Result<WireStep, BusError>;
}

/// The Enrollment interface: self-service for the caller's own account.
#[proxy(
    interface = "org.twofactor.TwoFactor1.Enrollment",
    default_service = "org.twofactor.TwoFactor1",
    default_path = "/org/twofactor/TwoFactor1"
)]
pub trait Enrollment {
    /// Status of `user` (empty: the caller; another user needs the admin right).
    fn status(&self, user: &str) -> Result<UserStatus, BusError>;
    /// Status of `user` (empty: the caller) for one login context: keys `service`, `rhost`.
    fn explain(&self, user: &str, context: HashMap<&str, &str>) -> Result<UserStatus, BusError>;
    /// Starts a TOTP enrollment for the caller. A caller who already has a security key
    /// proves it with `code` (a recovery code or a key-proof token); others pass "".
    fn begin_totp(&self, code: &str) -> Result<TotpEnrollment, BusError>;
    /// Activates a pending TOTP enrollment with a current code.
    fn confirm_totp(&self, enrollment_id: &str, code: &str) -> Result<CodeResult, BusError>;
    /// Replaces the caller's recovery codes; needs a current code.
    fn regenerate_recovery_codes(&self, code: &str) -> Result<CodeResult, BusError>;
    /// Removes all of the caller's factors; needs a current code; refused when 2FA is required.
    fn disable(&self, code: &str) -> Result<CodeResult, BusError>;
    /// The caller's own latest audit entries, oldest first.
    fn recent_events(&self, limit: u32) -> Result<Vec<AuditEntry>, BusError>;
    /// Starts enrolling a security key named `name` for the caller. A caller who already has a
    /// factor proves it with `code` (a current code, a recovery code or a key-proof token).
    fn begin_key(&self, name: &str, code: &str) -> Result<KeyEnrollment, BusError>;
    /// Hands the new credential (the makeCredential authenticatorData) to the daemon, which
    /// checks it and asks for one test assertion.
    fn register_key(
        &self,
        enrollment_id: &str,
        authenticator_data: &[u8],
    ) -> Result<KeyRequest, BusError>;
    /// Activates the key with the test assertion; the first factor also gets recovery codes.
    fn confirm_key(
        &self,
        enrollment_id: &str,
        assertion: &KeyAssertion,
    ) -> Result<CodeResult, BusError>;
    /// Asks for an assertion from one of the caller's keys, as a fresh proof.
    fn begin_key_proof(&self) -> Result<(String, KeyRequest), BusError>;
    /// Checks the proof; returns a single-use token, valid for a minute, that the methods
    /// needing a current code accept in its place.
    fn prove_with_key(&self, proof_id: &str, assertion: &KeyAssertion) -> Result<String, BusError>;
    /// Removes one of the caller's keys; needs a current code (or a key-proof token).
    fn remove_key(&self, name: &str, code: &str) -> Result<CodeResult, BusError>;
    /// The policy in force (its file) and, when that is not the policy file, why not.
    fn policy_status(&self) -> Result<(String, String), BusError>;
}

/// The Admin interface: uid 0 or members of the policy's admin groups.
#[proxy(
    interface = "org.twofactor.TwoFactor1.Admin",
    default_service = "org.twofactor.TwoFactor1",
    default_path = "/org/twofactor/TwoFactor1"
)]
pub trait Admin {
    /// Status of any user.
    fn show(&self, user: &str) -> Result<UserStatus, BusError>;
    /// Sets the per-user requirement.
    fn require(&self, user: &str) -> Result<(), BusError>;
    /// Clears the per-user requirement.
    fn release(&self, user: &str) -> Result<(), BusError>;
    /// Wipes a user's factors, recovery codes and pending enrollments.
    fn reset(&self, user: &str) -> Result<(), BusError>;
    /// Ends a lockout and clears the failure count.
    fn unlock(&self, user: &str) -> Result<(), BusError>;
    /// Starter recovery codes for a user who has not enrolled.
    fn issue_codes(&self, user: &str) -> Result<CodeResult, BusError>;
    /// Restarts the grace period now (`extend_seconds` 0) or moves its start later.
    fn grace(&self, user: &str, extend_seconds: i64) -> Result<(), BusError>;
    /// Imports an authenticator secret and recovery codes made elsewhere for a user with no
    /// factor (all or nothing).
    fn import_totp(
        &self,
        user: &str,
        secret_base32: &str,
        algorithm: &str,
        digits: u32,
        period: u32,
        recovery_codes: &[&str],
    ) -> Result<String, BusError>;
    /// Imports security-key credentials made elsewhere (a pam_u2f authfile) for a user, all or
    /// nothing.
    fn import_keys(&self, user: &str, keys: &[KeyImport]) -> Result<String, BusError>;
    /// Every user the daemon has state for, and every account it found that the policy
    /// requires 2FA of: (users, partial, notes). `partial`: required users may be missing
    /// (enumeration bounded or not offered by a directory service); `notes` say why.
    fn list_users(&self) -> Result<(Vec<UserStatus>, bool, Vec<String>), BusError>;
    /// Audit entries for `user` (empty: all) since `since` (unix time), newest last.
    fn audit(&self, user: &str, since: i64, limit: u32) -> Result<Vec<AuditEntry>, BusError>;
    /// Re-reads the policy file; an invalid file is refused and the old policy stays.
    fn reload_policy(&self) -> Result<String, BusError>;
    /// A consistent snapshot of the whole state (root only): an open, read-only descriptor of
    /// an SQLite database, and its size in bytes.
    fn backup(&self) -> Result<(zbus::OwnedFd, u64), BusError>;
}

/// Draws `text` (an otpauth URI) as a QR code with Unicode half blocks and forced colours
/// (black modules on a white ground, each line reset at its end, as google-authenticator does),
/// so that it scans on light and dark terminal themes alike. For a terminal that shows escape
/// sequences as they come (the CLI, a console login); see [`qr_text_plain`] for the rest.
pub fn qr_text(text: &str) -> Option<String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let art = code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Dark)
        .light_color(Dense1x2::Light)
        .quiet_zone(true)
        .build();
    // Foreground black (30), background white (47): a half block is a black module.
    Some(
        art.lines()
            .map(|l| format!("\u{1b}[30;47m{l}\u{1b}[0m"))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// The same QR code without escape sequences, for channels that strip or mangle them (an SSH
/// client shows the server's keyboard-interactive text with escapes made visible). Without
/// colours the theme decides: light modules are drawn as blocks, so it reads on dark
/// terminals (the common default of SSH clients); on a light theme it is inverted, so the
/// secret and the URI are always shown beside it.
pub fn qr_text_plain(text: &str) -> Option<String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_round_trip_through_the_wire_form() {
        let steps = [
            LoginStep::prompt("Verification code: ", false).info("hello"),
            LoginStep::done(Outcome::Success),
            LoginStep::done(Outcome::Denied).error("wrong code"),
            LoginStep::done(Outcome::NotRequired),
            LoginStep::done(Outcome::Unavailable),
            LoginStep::key(
                "Touch your security key",
                KeyRequest {
                    rp_id: "pam://host".into(),
                    client_data: b"{}".to_vec(),
                    credential_ids: vec![vec![1, 2, 3]],
                    user_verification: "preferred".into(),
                    timeout_ms: 15_000,
                    press_enter: false,
                },
            )
            .info("hi"),
        ];
        for step in steps {
            let wire = WireStep::from(step.clone());
            assert_eq!(LoginStep::try_from(wire).ok(), Some(step));
        }
    }

    #[test]
    fn unknown_kinds_and_outcomes_are_protocol_errors() {
        let mut w = WireStep::from(LoginStep::done(Outcome::Success));
        w.outcome = "maybe".into();
        assert!(LoginStep::try_from(w.clone()).is_err());
        w.kind = "teleport".into();
        assert!(LoginStep::try_from(w.clone()).is_err());
        w.kind = "key".into();
        w.outcome = String::new();
        assert!(
            LoginStep::try_from(w.clone()).is_err(),
            "key step without a request"
        );
        w.key.rp_id = "pam://h".into();
        w.key.client_data = b"{}".to_vec();
        assert!(LoginStep::try_from(w.clone()).is_ok());
        w.key.credential_ids = vec![vec![0]; MAX_KEY_CREDENTIALS + 1];
        assert!(LoginStep::try_from(w).is_err());
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let e = TotpEnrollment {
            enrollment_id: "id".into(),
            secret_base32: "JBSWY3DPEHPK3PXP".into(),
            uri: "otpauth://totp/x?secret=JBSWY3DPEHPK3PXP".into(),
            algorithm: "SHA1".into(),
            digits: 6,
            period: 30,
            expires: 0,
        };
        assert!(!format!("{e:?}").contains("JBSWY3DP"));
        let r = CodeResult {
            accepted: true,
            message: String::new(),
            recovery_codes: vec!["abcd-efgh".into()],
        };
        assert!(!format!("{r:?}").contains("abcd"));
    }
}
