//! The library's errors, turned into [`KeyError`]s.
//!
//! `ctap-hid-fido2` reports everything as `anyhow` text. A key's CTAP status comes out as
//! `response_status err = 0x2E CTAP2_ERR_NO_CREDENTIALS    No valid credentials provided.`
//! (its `ctapdef::get_ctap_status_message`; unknown codes as just `0x5`), so the status byte is
//! read back from the hexadecimal number after `response_status err = 0x`. The rest of the
//! text is only used, cleaned, for errors without a meaning of their own here.

use std::fmt::Display;

use crate::KeyError;

const STATUS_PREFIX: &str = "response_status err = 0x";

/// Longest library text passed on inside [`KeyError::Device`].
const MAX_MESSAGE_LEN: usize = 160;

/// CTAP status bytes this module gives a meaning to (CTAP 2.1 §8.2).
mod ctap {
    pub const INVALID_COMMAND: u8 = 0x01;
    pub const CREDENTIAL_EXCLUDED: u8 = 0x19;
    pub const INVALID_CREDENTIAL: u8 = 0x22;
    pub const UNSUPPORTED_ALGORITHM: u8 = 0x26;
    pub const OPERATION_DENIED: u8 = 0x27;
    pub const KEEPALIVE_CANCEL: u8 = 0x2D;
    pub const NO_CREDENTIALS: u8 = 0x2E;
    pub const USER_ACTION_TIMEOUT: u8 = 0x2F;
    pub const PIN_INVALID: u8 = 0x31;
    pub const PIN_BLOCKED: u8 = 0x32;
    pub const PIN_AUTH_BLOCKED: u8 = 0x34;
    pub const PIN_NOT_SET: u8 = 0x35;
    pub const PIN_REQUIRED: u8 = 0x36;
    pub const ACTION_TIMEOUT: u8 = 0x3A;
}

/// The CTAP status byte in a library error, if it carries one.
pub(super) fn ctap_status(message: &str) -> Option<u8> {
    let (_, rest) = message.split_once(STATUS_PREFIX)?;
    let digits: &str = rest
        .find(|c: char| !c.is_ascii_hexdigit())
        .map_or(rest, |end| rest.get(..end).unwrap_or(rest));
    if digits.is_empty() || digits.len() > 2 {
        return None;
    }
    u8::from_str_radix(digits, 16).ok()
}

/// The status's name as the library spells it (`CTAP2_ERR_…`), if it gave one.
fn status_name(message: &str) -> Option<&str> {
    let (_, rest) = message.split_once(STATUS_PREFIX)?;
    rest.split_whitespace()
        .nth(1)
        .filter(|word| word.starts_with("CTAP"))
}

/// The meaning of a CTAP status byte. `cancelled`: our watchdog sent CTAPHID_CANCEL, so an
/// interrupted or timed-out wait is a timeout, not the user's choice.
///
/// One row for each status with a meaning; the rest are device errors named by their code.
pub(super) fn from_status(status: u8, cancelled: bool, name: Option<&str>) -> KeyError {
    match status {
        ctap::NO_CREDENTIALS | ctap::INVALID_CREDENTIAL => KeyError::NotEnrolled,
        ctap::CREDENTIAL_EXCLUDED => KeyError::AlreadyEnrolled,
        ctap::PIN_INVALID => KeyError::PinInvalid,
        ctap::PIN_BLOCKED | ctap::PIN_AUTH_BLOCKED => KeyError::PinBlocked,
        ctap::PIN_NOT_SET => KeyError::PinNotSet,
        ctap::PIN_REQUIRED => KeyError::PinMissing,
        ctap::USER_ACTION_TIMEOUT | ctap::ACTION_TIMEOUT => KeyError::Timeout,
        ctap::KEEPALIVE_CANCEL | ctap::OPERATION_DENIED if cancelled => KeyError::Timeout,
        ctap::KEEPALIVE_CANCEL | ctap::OPERATION_DENIED => KeyError::Cancelled,
        ctap::UNSUPPORTED_ALGORITHM => {
            KeyError::Device("the security key supports none of the requested algorithms".into())
        }
        ctap::INVALID_COMMAND => {
            KeyError::Device("the security key does not support this FIDO2 command".into())
        }
        other => KeyError::Device(match name {
            Some(name) => format!("the security key answered {name} (0x{other:02X})"),
            None => format!("the security key answered CTAP status 0x{other:02X}"),
        }),
    }
}

/// Maps an error of makeCredential/getAssertion (including the PIN steps inside them).
pub(super) fn on_operation(error: &impl Display, cancelled: bool) -> KeyError {
    // `{:#}` shows an anyhow chain in one line.
    let message = format!("{error:#}");
    if let Some(status) = ctap_status(&message) {
        return from_status(status, cancelled, status_name(&message));
    }
    if message.starts_with("read err") || message.starts_with("write error") {
        return KeyError::Device("lost contact with the security key".into());
    }
    if message.contains("FIDO device not found") {
        return KeyError::NoDevice;
    }
    if message.contains("Multiple FIDO devices found") {
        return KeyError::SeveralDevices;
    }
    // `get_pin_token` refuses an empty PIN before talking to the key.
    if message.starts_with("pin not set") {
        return KeyError::PinMissing;
    }
    KeyError::Device(clean(&message))
}

/// Maps an error of getInfo, the first CTAP2 command sent: a key that does not know it speaks
/// only U2F (CTAP1).
pub(super) fn on_get_info(error: &impl Display) -> KeyError {
    let message = format!("{error:#}");
    if ctap_status(&message) == Some(ctap::INVALID_COMMAND) {
        return KeyError::Device(
            "this security key supports only U2F, not FIDO2; use a FIDO2 key".into(),
        );
    }
    on_operation(&message, false)
}

/// The library's text, fit for a user: one line, printable, bounded.
fn clean(message: &str) -> String {
    let mut out = String::new();
    for word in message.split_whitespace() {
        if out.len() + word.len() >= MAX_MESSAGE_LEN {
            out.push_str(" …");
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().filter(|c| !c.is_control()));
    }
    if out.is_empty() {
        "the security key library reported an unnamed error".into()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The library's text for a status, built as `ctapdef::get_ctap_status_message` does.
    fn library_text(status: u8, rest: &str) -> String {
        format!("response_status err = 0x{status:02X} {rest}")
    }

    #[test]
    fn status_bytes_are_read_from_the_library_text() {
        let cases = [
            (
                "response_status err = 0x2E CTAP2_ERR_NO_CREDENTIALS    No valid credentials provided.",
                Some(0x2E),
            ),
            (
                "response_status err = 0x19 CTAP2_ERR_CREDENTIAL_EXCLUDED   Valid credential found in the exclude list.",
                Some(0x19),
            ),
            ("response_status err = 0x5", Some(0x05)),
            (
                "response_status err = 0xFF CTAP2_ERR_VENDOR_LAST",
                Some(0xFF),
            ),
            ("response_status err = 0x123", None),
            ("response_status err = 0x", None),
            ("response_status err = SW_WRONG_DATA (0x6A80)", None),
            ("read err = 0xFE", None),
            ("Failed to open device.", None),
        ];
        for (text, want) in cases {
            assert_eq!(ctap_status(text), want, "{text}");
        }
        assert_eq!(
            status_name("response_status err = 0x2F CTAP2_ERR_USER_ACTION_TIMEOUT   Timeout"),
            Some("CTAP2_ERR_USER_ACTION_TIMEOUT")
        );
        assert_eq!(status_name("response_status err = 0x5"), None);
    }

    #[test]
    fn each_status_with_a_meaning_maps_to_its_error() {
        // (status, cancelled by the watchdog, expected)
        let table = [
            (0x2E, false, KeyError::NotEnrolled),
            (0x22, false, KeyError::NotEnrolled),
            (0x19, false, KeyError::AlreadyEnrolled),
            (0x31, false, KeyError::PinInvalid),
            (0x32, false, KeyError::PinBlocked),
            (0x34, false, KeyError::PinBlocked),
            (0x35, false, KeyError::PinNotSet),
            (0x36, false, KeyError::PinMissing),
            (0x2F, false, KeyError::Timeout),
            (0x3A, false, KeyError::Timeout),
            (0x2D, false, KeyError::Cancelled),
            (0x2D, true, KeyError::Timeout),
            (0x27, false, KeyError::Cancelled),
            (0x27, true, KeyError::Timeout),
            // A status that has nothing to do with the cancel stays what it is.
            (0x31, true, KeyError::PinInvalid),
            (0x2E, true, KeyError::NotEnrolled),
        ];
        for (status, cancelled, want) in table {
            let text = library_text(status, "CTAP2_ERR_X text");
            assert_eq!(
                on_operation(&text, cancelled),
                want,
                "0x{status:02X} cancelled={cancelled}"
            );
        }
    }

    #[test]
    fn other_statuses_are_device_errors_named_by_code() {
        let text = "response_status err = 0x26 CTAP2_ERR_UNSUPPORTED_ALGORITHM Authenticator does not support requested algorithm.";
        assert!(
            matches!(on_operation(&text, false), KeyError::Device(m) if m.contains("none of the requested algorithms"))
        );
        let text =
            "response_status err = 0x28 CTAP2_ERR_KEY_STORE_FULL    Internal key storage is full.";
        assert_eq!(
            on_operation(&text, false),
            KeyError::Device("the security key answered CTAP2_ERR_KEY_STORE_FULL (0x28)".into())
        );
        assert_eq!(
            on_operation(&"response_status err = 0x5", false),
            KeyError::Device("the security key answered CTAP status 0x05".into())
        );
    }

    #[test]
    fn transport_and_library_errors() {
        assert_eq!(
            on_operation(&"read err = 0xFE", false),
            KeyError::Device("lost contact with the security key".into())
        );
        assert_eq!(
            on_operation(&"FIDO device not found.", false),
            KeyError::NoDevice
        );
        assert_eq!(
            on_operation(&"Multiple FIDO devices found.", false),
            KeyError::SeveralDevices
        );
        assert_eq!(on_operation(&"pin not set", false), KeyError::PinMissing);
        assert_eq!(
            on_operation(&"Nonce verification failed", false),
            KeyError::Device("Nonce verification failed".into())
        );
        let long = format!("{}\n\u{7}end", "word ".repeat(100));
        let KeyError::Device(m) = on_operation(&long, false) else {
            panic!("not a device error")
        };
        assert!(m.len() <= MAX_MESSAGE_LEN + 4, "{m}");
        assert!(!m.contains('\n') && !m.contains('\u{7}'));
        assert!(matches!(on_operation(&"  ", false), KeyError::Device(m) if !m.is_empty()));
    }

    #[test]
    fn get_info_on_a_u2f_only_key_says_so() {
        let text = "response_status err = 0x01 CTAP1_ERR_INVALID_COMMAND The command is not a valid CTAP command.";
        assert!(matches!(on_get_info(&text), KeyError::Device(m) if m.contains("only U2F")));
        assert_eq!(
            on_get_info(&"read err = 0xFE"),
            KeyError::Device("lost contact with the security key".into())
        );
    }
}
