//! The client's half of the security-key conversations with the daemon, shared by
//! `twofactorctl` (with the HID authenticator) and the tests (with the software one):
//! enrolling a key, and proving possession of one.

use std::time::Duration;

use twofactor_bus::{BusError, CodeResult, EnrollmentProxy, KeyAssertion, KeyRequest};

use crate::{
    AssertionRequest, Authenticator, KeyError, PinSource, RegistrationRequest, UserVerification,
};

/// Why a flow stopped.
#[derive(Debug)]
pub enum FlowError {
    /// The daemon refused (or could not be reached).
    Bus(BusError),
    /// The key could not be used.
    Key(KeyError),
    /// The daemon sent something the client cannot use.
    Protocol(String),
}

impl std::fmt::Display for FlowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlowError::Bus(e) => write!(f, "{}", e.message()),
            FlowError::Key(e) => write!(f, "{e}"),
            FlowError::Protocol(m) => write!(f, "unexpected answer from the daemon: {m}"),
        }
    }
}

impl From<BusError> for FlowError {
    fn from(e: BusError) -> Self {
        FlowError::Bus(e)
    }
}

impl From<KeyError> for FlowError {
    fn from(e: KeyError) -> Self {
        FlowError::Key(e)
    }
}

fn uv(s: &str) -> Result<UserVerification, FlowError> {
    UserVerification::parse(s)
        .ok_or_else(|| FlowError::Protocol(format!("user verification {s:?}")))
}

fn timeout(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms)).clamp(Duration::from_secs(1), Duration::from_secs(120))
}

/// Gets an assertion for a daemon's key request.
pub fn assert_request(
    authenticator: &dyn Authenticator,
    request: &KeyRequest,
    pin: PinSource<'_>,
) -> Result<KeyAssertion, FlowError> {
    let r = authenticator.assert(
        &AssertionRequest {
            rp_id: &request.rp_id,
            client_data: &request.client_data,
            credential_ids: &request.credential_ids,
            user_verification: uv(&request.user_verification)?,
            timeout: timeout(request.timeout_ms),
        },
        pin,
    )?;
    Ok(KeyAssertion {
        credential_id: r.credential_id,
        authenticator_data: r.authenticator_data,
        signature: r.signature,
    })
}

/// Enrolls a key: `BeginKey`, the key's makeCredential, `RegisterKey`, a test assertion,
/// `ConfirmKey`. `code` proves an existing factor (empty for the first one). `cue` is called
/// before each touch with what to tell the user.
pub async fn enroll(
    proxy: &EnrollmentProxy<'_>,
    authenticator: &dyn Authenticator,
    name: &str,
    code: &str,
    pin: PinSource<'_>,
    cue: &mut dyn FnMut(&str),
) -> Result<CodeResult, FlowError> {
    if !authenticator.present() {
        return Err(FlowError::Key(KeyError::NoDevice));
    }
    let en = proxy.begin_key(name, code).await?;
    let algorithms: Vec<i32> = en.algorithms.clone();
    cue("Touch your security key to create the credential.");
    let registration = authenticator.register(
        &RegistrationRequest {
            rp_id: &en.rp_id,
            client_data: &en.client_data,
            user_id: &en.user_id,
            user_name: &en.user_name,
            exclude_credential_ids: &en.exclude_credential_ids,
            algorithms: &algorithms,
            user_verification: uv(&en.user_verification)?,
            timeout: timeout(en.timeout_ms),
        },
        &mut *pin,
    )?;
    let request = proxy
        .register_key(&en.enrollment_id, &registration.authenticator_data)
        .await?;
    cue("Touch your security key again to confirm it.");
    let assertion = assert_request(authenticator, &request, pin)?;
    Ok(proxy.confirm_key(&en.enrollment_id, &assertion).await?)
}

/// Proves possession of one of the caller's keys; returns the daemon's single-use token,
/// which methods that need a current code accept in its place.
pub async fn prove(
    proxy: &EnrollmentProxy<'_>,
    authenticator: &dyn Authenticator,
    pin: PinSource<'_>,
    cue: &mut dyn FnMut(&str),
) -> Result<String, FlowError> {
    if !authenticator.present() {
        return Err(FlowError::Key(KeyError::NoDevice));
    }
    let (id, request) = proxy.begin_key_proof().await?;
    cue("Touch your security key.");
    let assertion = assert_request(authenticator, &request, pin)?;
    Ok(proxy.prove_with_key(&id, &assertion).await?)
}
