//! A security-key step: show the daemon's cue and ask the key for an assertion over the
//! daemon's client data. Nothing is decided here: the daemon verifies whatever comes back, and
//! any failure (no key, no touch, wrong PIN) is reported to it as a skip reason, so the login
//! goes on at the code prompt.

use std::time::Duration;

use twofactor_bus::{KeyAssertion, KeyRequest, skip_reason};
use twofactor_key::{AssertionRequest, Authenticator, KeyError, UserVerification};
use zeroize::Zeroizing;

use crate::conversation::{Conversation, ConversationError};
use crate::login::Log;

/// Shortest and longest touch wait the module accepts from the daemon.
const MIN_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

/// What to send the daemon for a key step.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyAnswer {
    /// `Assert` with this.
    Assertion(KeyAssertion),
    /// `SkipKey` with this reason.
    Skip(&'static str),
    /// The cue was a prompt and the user typed a code at it: `SkipKey` (declined), then this
    /// answers the code prompt that follows.
    Code(Zeroizing<String>),
}

/// Performs one key step.
pub fn perform(
    conv: &mut dyn Conversation,
    authenticator: &dyn Authenticator,
    cue: &str,
    request: &KeyRequest,
    log: Log<'_>,
) -> Result<KeyAnswer, ConversationError> {
    // An unknown requirement is treated as the strictest one.
    let uv =
        UserVerification::parse(&request.user_verification).unwrap_or(UserVerification::Required);
    if !authenticator.present() {
        log(false, "no security key present: on to the code prompt");
        return Ok(KeyAnswer::Skip(skip_reason::NO_DEVICE));
    }
    if request.press_enter {
        let answer = conv.prompt(cue, false)?;
        if !answer.trim().is_empty() {
            return Ok(KeyAnswer::Code(answer));
        }
    } else {
        conv.info(cue)?;
    }
    let timeout =
        Duration::from_millis(u64::from(request.timeout_ms)).clamp(MIN_TIMEOUT, MAX_TIMEOUT);
    let mut pin = |text: &str| -> Option<Zeroizing<String>> {
        conv.prompt(text, false).ok().filter(|p| !p.is_empty())
    };
    let result = authenticator.assert(
        &AssertionRequest {
            rp_id: &request.rp_id,
            client_data: &request.client_data,
            credential_ids: &request.credential_ids,
            user_verification: uv,
            timeout,
        },
        &mut pin,
    );
    match result {
        Ok(r) => Ok(KeyAnswer::Assertion(KeyAssertion {
            credential_id: r.credential_id,
            authenticator_data: r.authenticator_data,
            signature: r.signature,
        })),
        Err(e) => {
            log(false, &format!("security key not used: {e}"));
            if matches!(
                e,
                KeyError::PinInvalid
                    | KeyError::PinBlocked
                    | KeyError::PinNotSet
                    | KeyError::SeveralDevices
            ) {
                conv.error(&format!("{}.", capitalized(&e.to_string())))?;
            }
            Ok(KeyAnswer::Skip(e.skip_reason()))
        }
    }
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
