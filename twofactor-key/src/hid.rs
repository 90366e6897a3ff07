//! Real security keys over USB HID, through `ctap-hid-fido2`.
//!
//! One operation is three steps:
//! 1. open the only FIDO key plugged in and read its getInfo (PIN set? `alwaysUv`? PIN
//!    protocols);
//! 2. decide whether the PIN is needed ([`uv::pin_plan`]) and, if so, ask for it through the
//!    caller's [`PinSource`] — outside everything below, so a prompt on the terminal works;
//! 3. send makeCredential or getAssertion, with a watchdog that sends CTAPHID_CANCEL when
//!    `request.timeout` has passed ([`watchdog`]), so nobody waits forever for a touch.
//!
//! Every call into the library goes through [`quiet::call`]: a panic in it (it has `unwrap`s on
//! device data) becomes [`KeyError::Device`], and stdout is pointed at `/dev/null` meanwhile
//! because the library prints there on some answers whatever its configuration says.
//!
//! The library takes a "challenge" and hashes it itself (`util::create_clientdata_hash`:
//! SHA-256) into the clientDataHash it sends. We pass the daemon's client data as that
//! challenge, so the key signs `authData || SHA-256(client_data)`, which is what the daemon
//! verifies.
#![forbid(unsafe_code)]

mod quiet;
mod status;
mod uv;
mod watchdog;

use ctap_hid_fido2::fidokey::{
    CredentialSupportedKeyType, GetAssertionArgsBuilder, MakeCredentialArgsBuilder,
};
use ctap_hid_fido2::public_key_credential_user_entity::PublicKeyCredentialUserEntity;
use ctap_hid_fido2::{FidoKeyHid, LibCfg};
use zeroize::Zeroizing;

use crate::{
    AssertionRequest, AssertionResponse, Authenticator, KeyError, PIN_PROMPT, PinSource,
    RegistrationRequest, RegistrationResponse,
};
use uv::{KeyCaps, Operation, PinPlan};

/// COSE ES256.
const COSE_ES256: i32 = -7;
/// COSE EdDSA (Ed25519).
const COSE_EDDSA: i32 = -8;

/// The security key plugged into this machine, reached through hidraw.
///
/// Holds no device between calls: each operation finds the key anew, so a key plugged in
/// after the start is found and an unplugged one is reported as [`KeyError::NoDevice`].
pub struct HidAuthenticator {
    config: LibCfg,
}

impl std::fmt::Debug for HidAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HidAuthenticator").finish_non_exhaustive()
    }
}

impl Default for HidAuthenticator {
    fn default() -> Self {
        Self::new()
    }
}

impl HidAuthenticator {
    /// An authenticator with the library's own output turned off (no log, no "touch the
    /// sensor" line: the caller tells the user what to do, in its own words and channel).
    pub fn new() -> Self {
        let mut config = LibCfg::init();
        config.enable_log = false;
        config.enable_keep_alive_msg = false;
        config.keep_alive_msg = String::new();
        config.keep_alive_msg_to_stderr = true;
        HidAuthenticator { config }
    }

    /// Step 1: the only key, opened, with what its getInfo says.
    fn open(&self) -> Result<OpenKey, KeyError> {
        quiet::call(|| {
            let mut devices = ctap_hid_fido2::get_fidokey_devices();
            if devices.len() > 1 {
                return Err(KeyError::SeveralDevices);
            }
            let found = devices.pop().ok_or(KeyError::NoDevice)?;
            let mut device = FidoKeyHid::new(&[found.param], &self.config).map_err(|_| {
                KeyError::Device(
                    "cannot open the security key (is this user allowed to use it?)".into(),
                )
            })?;
            let info = device.get_info().map_err(|e| status::on_get_info(&e))?;
            device.pin_protocol_version = uv::pin_protocol(&info.pin_uv_auth_protocols);
            Ok(OpenKey {
                device,
                caps: KeyCaps::from_options(&info.options),
            })
        })?
    }
}

/// A key opened for one operation.
struct OpenKey {
    device: FidoKeyHid,
    caps: KeyCaps,
}

/// Step 2: the PIN if the plan says to ask for it. `None` or an empty answer: the user
/// declined.
fn pin_for(plan: PinPlan, pin: PinSource<'_>) -> Result<Option<Zeroizing<String>>, KeyError> {
    match plan {
        PinPlan::Skip => Ok(None),
        PinPlan::Ask => match pin(PIN_PROMPT) {
            Some(p) if !p.is_empty() => Ok(Some(p)),
            _ => Err(KeyError::PinMissing),
        },
    }
}

/// The library's key types for the requested COSE algorithms, in the request's order;
/// algorithms it cannot ask for are left out.
fn key_types(algorithms: &[i32]) -> Vec<CredentialSupportedKeyType> {
    algorithms
        .iter()
        .filter_map(|&alg| match alg {
            COSE_ES256 => Some(CredentialSupportedKeyType::Ecdsa256),
            COSE_EDDSA => Some(CredentialSupportedKeyType::Ed25519),
            _ => None,
        })
        .collect()
}

/// Runs one touch-waiting operation on `device` with every guard: stdout silenced, panics
/// caught, the wait cancelled after `timeout`; a CTAP error becomes its [`KeyError`].
fn guarded<T, E: std::fmt::Display>(
    device: &FidoKeyHid,
    timeout: std::time::Duration,
    operation: impl FnOnce() -> Result<T, E>,
) -> Result<T, KeyError> {
    let watched = quiet::call(|| watchdog::run(device, timeout, operation))??;
    watched
        .result
        .map_err(|e| status::on_operation(&e, watched.cancelled))
}

impl Authenticator for HidAuthenticator {
    fn present(&self) -> bool {
        // Enumeration prints nothing; only a panic needs catching.
        std::panic::catch_unwind(|| !ctap_hid_fido2::get_fidokey_devices().is_empty())
            .unwrap_or(false)
    }

    fn register(
        &self,
        request: &RegistrationRequest<'_>,
        pin: PinSource<'_>,
    ) -> Result<RegistrationResponse, KeyError> {
        let types = key_types(request.algorithms);
        if types.is_empty() {
            return Err(KeyError::Device(
                "none of the requested algorithms is supported (ES256, EdDSA)".into(),
            ));
        }
        let key = self.open()?;
        let plan = uv::pin_plan(request.user_verification, key.caps, Operation::Register)?;
        let pin = pin_for(plan, pin)?;

        let user = PublicKeyCredentialUserEntity::new(
            Some(request.user_id),
            Some(request.user_name),
            Some(request.user_name),
        );
        // Non-resident: the credential id the daemon stores is all the key needs.
        let mut builder =
            MakeCredentialArgsBuilder::new(request.rp_id, request.client_data).user_entity(&user);
        for key_type in types {
            builder = builder.key_type(key_type);
        }
        for id in request.exclude_credential_ids {
            builder = builder.exclude_authenticator(id);
        }
        builder = match pin.as_deref() {
            Some(p) => builder.pin(p),
            None => builder.without_pin_and_uv(),
        };
        let args = builder.build();

        let attestation = guarded(&key.device, request.timeout, || {
            key.device.make_credential_with_args(&args)
        })?;
        if attestation.auth_data.is_empty() {
            return Err(KeyError::Device(
                "the security key returned no authenticator data".into(),
            ));
        }
        Ok(RegistrationResponse {
            authenticator_data: attestation.auth_data,
        })
    }

    fn assert(
        &self,
        request: &AssertionRequest<'_>,
        pin: PinSource<'_>,
    ) -> Result<AssertionResponse, KeyError> {
        let key = self.open()?;
        if request.credential_ids.is_empty() {
            // No resident credentials are ever made, so nothing could answer.
            return Err(KeyError::NotEnrolled);
        }
        let plan = uv::pin_plan(request.user_verification, key.caps, Operation::Assert)?;
        let pin = pin_for(plan, pin)?;

        let mut builder = GetAssertionArgsBuilder::new(request.rp_id, request.client_data);
        for id in request.credential_ids {
            builder = builder.add_credential_id(id);
        }
        builder = match pin.as_deref() {
            Some(p) => builder.pin(p),
            None => builder.without_pin_and_uv(),
        };
        let args = builder.build();

        let assertion = guarded(&key.device, request.timeout, || {
            key.device.get_assertion_with_args(&args)
        })?
        .into_iter()
        .next()
        .ok_or_else(|| KeyError::Device("the security key returned no assertion".into()))?;

        // CTAP lets a key leave out the credential when the allow list had only one.
        let credential_id = match (assertion.credential_id.is_empty(), request.credential_ids) {
            (false, _) => assertion.credential_id,
            (true, [only]) => only.clone(),
            (true, _) => {
                return Err(KeyError::Device(
                    "the security key did not say which credential it used".into(),
                ));
            }
        };
        Ok(AssertionResponse {
            credential_id,
            authenticator_data: assertion.auth_data,
            signature: assertion.signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UserVerification;
    use std::time::Duration;

    #[test]
    fn key_types_follow_the_request_order_and_skip_unknown_algorithms() {
        let types = key_types(&[COSE_EDDSA, -257, COSE_ES256]);
        let ids: Vec<i32> = types.iter().map(|t| *t as i32).collect();
        assert_eq!(ids, vec![COSE_EDDSA, COSE_ES256]);
        assert!(key_types(&[-257, -35]).is_empty());
    }

    #[test]
    fn a_declined_or_empty_pin_is_missing_and_a_skipped_one_is_not_asked() {
        let mut asked = 0;
        let mut declined = |_: &str| {
            asked += 1;
            None
        };
        assert_eq!(
            pin_for(PinPlan::Ask, &mut declined).err(),
            Some(KeyError::PinMissing)
        );
        let mut empty = |_: &str| Some(Zeroizing::new(String::new()));
        assert_eq!(
            pin_for(PinPlan::Ask, &mut empty).err(),
            Some(KeyError::PinMissing)
        );
        assert!(matches!(pin_for(PinPlan::Skip, &mut declined), Ok(None)));
        assert_eq!(asked, 1);
        let mut given = |prompt: &str| {
            assert_eq!(prompt, PIN_PROMPT);
            Some(Zeroizing::new("1234".to_string()))
        };
        let pin = pin_for(PinPlan::Ask, &mut given).ok().flatten();
        assert_eq!(pin.as_deref().map(String::as_str), Some("1234"));
    }

    #[test]
    fn debug_shows_no_configuration() {
        assert_eq!(
            format!("{:?}", HidAuthenticator::new()),
            "HidAuthenticator { .. }"
        );
    }

    // This machine has no hidraw device: every operation must say so, cleanly, without
    // asking for a PIN. These run in a child process because `assert`/`register` point fd 1
    // at /dev/null while they look, which would swallow this test process's own output.
    #[test]
    fn without_a_key_nothing_is_present_and_operations_say_no_device() {
        let _ = quiet::tests::in_child(
            "hid::tests::without_a_key_nothing_is_present_and_operations_say_no_device",
            || {
                if std::fs::read_dir("/dev")
                    .map(|d| {
                        d.flatten()
                            .any(|e| e.file_name().to_string_lossy().starts_with("hidraw"))
                    })
                    .unwrap_or(false)
                {
                    eprintln!("skipped: this machine has hidraw devices");
                    return;
                }
                let key = HidAuthenticator::new();
                assert!(!key.present());
                let mut never = |_: &str| -> Option<Zeroizing<String>> {
                    panic!("no PIN may be asked without a key")
                };
                let ids = vec![vec![1u8; 32]];
                let assertion = AssertionRequest {
                    rp_id: "example.org",
                    client_data: b"{}",
                    credential_ids: &ids,
                    user_verification: UserVerification::Required,
                    timeout: Duration::from_secs(1),
                };
                assert_eq!(
                    key.assert(&assertion, &mut never).err(),
                    Some(KeyError::NoDevice)
                );
                let registration = RegistrationRequest {
                    rp_id: "example.org",
                    client_data: b"{}",
                    user_id: b"user",
                    user_name: "user",
                    exclude_credential_ids: &[],
                    algorithms: &[COSE_ES256],
                    user_verification: UserVerification::Required,
                    timeout: Duration::from_secs(1),
                };
                assert_eq!(
                    key.register(&registration, &mut never).err(),
                    Some(KeyError::NoDevice)
                );
            },
        );
    }
}
