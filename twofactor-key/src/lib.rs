//! The client side of security keys, shared by `pam_twofactor` and `twofactorctl`.
//!
//! The daemon is the relying party and builds every challenge; a client only relays: it asks a
//! key (through an [`Authenticator`]) to sign what the daemon sent, and sends the result back.
//! Nothing here decides whether a key is accepted.
//!
//! - [`Authenticator`]: what a key can do (make a credential, make an assertion). The HID
//!   implementation ([`hid::HidAuthenticator`], feature `hid`) talks to real keys through
//!   `ctap-hid-fido2`; a software authenticator for tests lives in the dev-only crate
//!   `twofactor-softkey` and never reaches a shipped binary.

use std::time::Duration;

use zeroize::Zeroizing;

pub mod flow;
#[cfg(feature = "hid")]
pub mod hid;

/// How much the relying party wants the user verified (PIN or biometric) beyond a touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserVerification {
    /// A touch only; never ask for the PIN.
    Discouraged,
    /// Ask for the PIN when the key has one.
    Preferred,
    /// The key must verify the user; a key without a PIN cannot be used.
    Required,
}

impl UserVerification {
    /// Parses the wire name (`discouraged`, `preferred`, `required`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "discouraged" => UserVerification::Discouraged,
            "preferred" => UserVerification::Preferred,
            "required" => UserVerification::Required,
            _ => return None,
        })
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            UserVerification::Discouraged => "discouraged",
            UserVerification::Preferred => "preferred",
            UserVerification::Required => "required",
        }
    }
}

/// A request for an assertion (login, proof of possession).
#[derive(Debug, Clone, Copy)]
pub struct AssertionRequest<'a> {
    /// Relying party id.
    pub rp_id: &'a str,
    /// The client data the daemon built; the key signs its SHA-256.
    pub client_data: &'a [u8],
    /// The credentials that may answer (never empty for a login).
    pub credential_ids: &'a [Vec<u8>],
    /// PIN/biometric policy.
    pub user_verification: UserVerification,
    /// How long to wait for a touch before giving up (and cancelling the key).
    pub timeout: Duration,
}

/// A request for a new credential (enrollment).
#[derive(Debug, Clone, Copy)]
pub struct RegistrationRequest<'a> {
    /// Relying party id.
    pub rp_id: &'a str,
    /// The client data the daemon built; the key signs its SHA-256.
    pub client_data: &'a [u8],
    /// The user handle.
    pub user_id: &'a [u8],
    /// The login name.
    pub user_name: &'a str,
    /// A key holding one of these is already enrolled: refuse it.
    pub exclude_credential_ids: &'a [Vec<u8>],
    /// COSE algorithms acceptable to the daemon, preferred first.
    pub algorithms: &'a [i32],
    /// PIN/biometric policy.
    pub user_verification: UserVerification,
    /// How long to wait for a touch.
    pub timeout: Duration,
}

/// What a key returned for an assertion request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionResponse {
    /// The credential used.
    pub credential_id: Vec<u8>,
    /// The signed authenticatorData.
    pub authenticator_data: Vec<u8>,
    /// The signature over `authenticator_data || SHA-256(client_data)`.
    pub signature: Vec<u8>,
}

/// What a key returned for a registration request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationResponse {
    /// authenticatorData with the attested credential data (credential id and COSE key).
    pub authenticator_data: Vec<u8>,
}

/// Why no key answered. Every message is fit for the user; none contains a PIN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// No security key is plugged in.
    NoDevice,
    /// More than one key is plugged in and the operation needs exactly one.
    SeveralDevices,
    /// Nobody touched the key within the timeout (the key was told to stop waiting).
    Timeout,
    /// The key holds none of the allowed credentials.
    NotEnrolled,
    /// The key already holds one of the excluded credentials (registration).
    AlreadyEnrolled,
    /// User verification is required but the key has no PIN (or UV) set up.
    PinNotSet,
    /// The PIN was needed and none was given.
    PinMissing,
    /// The PIN is wrong.
    PinInvalid,
    /// The key refuses PINs until it is re-plugged or reset.
    PinBlocked,
    /// The user or the program cancelled.
    Cancelled,
    /// Anything else the key or the HID layer reported.
    Device(String),
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::NoDevice => f.write_str("no security key found"),
            KeyError::SeveralDevices => {
                f.write_str("more than one security key is plugged in; leave only one")
            }
            KeyError::Timeout => f.write_str("the security key was not touched in time"),
            KeyError::NotEnrolled => f.write_str("this security key is not enrolled"),
            KeyError::AlreadyEnrolled => f.write_str("this security key is already enrolled"),
            KeyError::PinNotSet => f.write_str(
                "user verification is required but this security key has no PIN; set one first",
            ),
            KeyError::PinMissing => f.write_str("the security key's PIN is needed"),
            KeyError::PinInvalid => f.write_str("wrong PIN for the security key"),
            KeyError::PinBlocked => f.write_str(
                "the security key's PIN is blocked; re-plug the key (or reset it if it stays blocked)",
            ),
            KeyError::Cancelled => f.write_str("cancelled"),
            KeyError::Device(m) => write!(f, "security key error: {m}"),
        }
    }
}

impl std::error::Error for KeyError {}

impl KeyError {
    /// The `Login.SkipKey` reason for this error.
    pub fn skip_reason(&self) -> &'static str {
        use twofactor_bus::skip_reason;
        match self {
            KeyError::NoDevice => skip_reason::NO_DEVICE,
            KeyError::Timeout => skip_reason::TIMEOUT,
            KeyError::NotEnrolled => skip_reason::NOT_ENROLLED,
            KeyError::Cancelled | KeyError::PinMissing => skip_reason::DECLINED,
            _ => skip_reason::ERROR,
        }
    }
}

/// The prompt an [`Authenticator`] passes to its [`PinSource`] when it needs the key's PIN.
pub const PIN_PROMPT: &str = "Security key PIN: ";

/// Asks the user for the key's PIN (`prompt` is the text to show); `None`: the user declined.
pub type PinSource<'a> = &'a mut dyn FnMut(&str) -> Option<Zeroizing<String>>;

/// A FIDO2 authenticator as a client sees it.
///
/// Implementations ask for the PIN through `pin` only when it is needed: user verification
/// `required`, or `preferred` and the key has a PIN. They hash `client_data` themselves
/// (SHA-256) to get the clientDataHash the key signs.
pub trait Authenticator {
    /// Whether any key is present (cheap; no touch).
    fn present(&self) -> bool;
    /// makeCredential.
    fn register(
        &self,
        request: &RegistrationRequest<'_>,
        pin: PinSource<'_>,
    ) -> Result<RegistrationResponse, KeyError>;
    /// getAssertion.
    fn assert(
        &self,
        request: &AssertionRequest<'_>,
        pin: PinSource<'_>,
    ) -> Result<AssertionResponse, KeyError>;
}
