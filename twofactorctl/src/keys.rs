//! `enroll key` and `remove key`: the security key plugged into this machine (USB HID), driven
//! through the flows shared with the tests (`twofactor_key::flow`). The daemon makes every
//! challenge and checks every answer.
#![deny(unsafe_code)]

use std::cell::RefCell;
use std::io::IsTerminal;

use twofactor_bus::EnrollmentProxy;
use twofactor_key::flow::{self, FlowError};
use twofactor_key::hid::HidAuthenticator;
use twofactor_key::{Authenticator, KeyError};
use zeroize::Zeroizing;

use crate::failure::{ErrorCode, Failure};
use crate::out::note;
use crate::{read_line, report_code_result};

impl From<FlowError> for Failure {
    fn from(e: FlowError) -> Self {
        match e {
            FlowError::Bus(b) => Failure::from(b),
            FlowError::Key(KeyError::NoDevice) => Failure::new(
                ErrorCode::KeyError,
                "no security key found: plug one in (and check that you may use it: the \
                 plugdev group or a uaccess udev rule)",
            ),
            other => Failure::new(ErrorCode::KeyError, other.to_string()),
        }
    }
}

/// Asks for the key's PIN once per command (the enrollment needs it for both touches).
fn pin_source() -> impl FnMut(&str) -> Option<Zeroizing<String>> {
    let cached: RefCell<Option<Zeroizing<String>>> = RefCell::new(None);
    move |prompt: &str| {
        if let Some(p) = cached.borrow().as_ref() {
            return Some(p.clone());
        }
        if !std::io::stdin().is_terminal() {
            return None;
        }
        let pin = rpassword::prompt_password(format!("{prompt} "))
            .ok()
            .map(Zeroizing::new)
            .filter(|p| !p.is_empty())?;
        *cached.borrow_mut() = Some(pin.clone());
        Some(pin)
    }
}

fn cue(text: &str) {
    note(text);
}

/// A fresh proof for an account that has factors, asked for on the terminal (or read from
/// standard input): a code, or Enter alone to touch one of my keys.
async fn proof(
    enrollment: &EnrollmentProxy<'_>,
    authenticator: &dyn Authenticator,
    has_keys: bool,
) -> Result<Zeroizing<String>, Failure> {
    let typed = if has_keys {
        read_line(
            "Current code or recovery code (or press Enter to touch an enrolled key): ",
            true,
        )?
    } else {
        read_line("Current code (or a recovery code): ", true)?
    };
    if !typed.trim().is_empty() || !has_keys {
        return Ok(typed);
    }
    let mut pin = pin_source();
    let mut show = cue;
    let token = flow::prove(enrollment, authenticator, &mut pin, &mut show).await?;
    Ok(Zeroizing::new(token))
}

/// The proof `enroll totp` needs from an account that has a security key: a recovery code
/// typed at the prompt, or (Enter alone) a touch of an enrolled key. Empty when none is needed.
pub async fn proof_for_totp(
    enrollment: &EnrollmentProxy<'_>,
) -> Result<Zeroizing<String>, Failure> {
    let status = enrollment.status("").await?;
    if !status.factors.iter().any(|f| f.kind == "key") {
        return Ok(Zeroizing::new(String::new()));
    }
    note("This account has a security key: prove it before adding an authenticator app.");
    let authenticator = HidAuthenticator::new();
    let present = authenticator.present();
    proof(enrollment, &authenticator, present).await
}

/// `twofactorctl enroll key --name NAME`.
pub async fn enroll(
    enrollment: &EnrollmentProxy<'_>,
    name: &str,
    json: bool,
) -> Result<(), Failure> {
    let authenticator = HidAuthenticator::new();
    if !authenticator.present() {
        return Err(FlowError::Key(KeyError::NoDevice).into());
    }
    let status = enrollment.status("").await?;
    let has_keys = status.factors.iter().any(|f| f.kind == "key");
    let proof = if status.factors.is_empty() {
        Zeroizing::new(String::new())
    } else {
        proof(enrollment, &authenticator, has_keys).await?
    };
    let mut pin = pin_source();
    let mut show = cue;
    let result = flow::enroll(
        enrollment,
        &authenticator,
        name,
        &proof,
        &mut pin,
        &mut show,
    )
    .await?;
    report_code_result(&result, json)
}

/// `twofactorctl remove key NAME`.
pub async fn remove(
    enrollment: &EnrollmentProxy<'_>,
    name: &str,
    json: bool,
) -> Result<(), Failure> {
    let authenticator = HidAuthenticator::new();
    let status = enrollment.status("").await?;
    let has_keys = status.factors.iter().any(|f| f.kind == "key") && authenticator.present();
    let proof = proof(enrollment, &authenticator, has_keys).await?;
    let result = enrollment.remove_key(name, &proof).await?;
    report_code_result(&result, json)
}
