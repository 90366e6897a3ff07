//! TEST ONLY: `libpam_twofactor_softkey.so` is `pam_twofactor.so` with the software
//! authenticator of `twofactor-softkey` plugged in where the shipped module has the USB HID
//! one. Everything else — argument parsing, the relay loop, the key step, the PAM
//! conversation — is the same `twofactor-pam` code the shipped module runs.
//!
//! Extra argument: `softkey=PATH`, the soft key's state file (taken out before the real
//! argument parser sees the rest). Without it, or if the file cannot be read, no key is
//! plugged in.
#![deny(unsafe_code)]

use std::path::PathBuf;

use twofactor_key::{
    AssertionRequest, AssertionResponse, Authenticator, KeyError, PinSource, RegistrationRequest,
    RegistrationResponse,
};
use twofactor_softkey::SoftKey;

/// The soft key named by `softkey=`, if any.
struct Plugged(Option<PathBuf>);

impl Plugged {
    fn key(&self) -> Option<SoftKey> {
        self.0.as_deref().and_then(|p| SoftKey::open(p).ok())
    }
}

impl Authenticator for Plugged {
    fn present(&self) -> bool {
        self.key().is_some_and(|k| k.present())
    }

    fn register(
        &self,
        request: &RegistrationRequest<'_>,
        pin: PinSource<'_>,
    ) -> Result<RegistrationResponse, KeyError> {
        self.key().ok_or(KeyError::NoDevice)?.register(request, pin)
    }

    fn assert(
        &self,
        request: &AssertionRequest<'_>,
        pin: PinSource<'_>,
    ) -> Result<AssertionResponse, KeyError> {
        self.key().ok_or(KeyError::NoDevice)?.assert(request, pin)
    }
}

mod hooks {
    #![allow(unsafe_code)]

    use std::ffi::CStr;
    use std::path::PathBuf;

    use pam::constants::{PamFlag, PamResultCode};
    use pam::module::{PamHandle, PamHooks};

    use super::Plugged;

    struct SoftTwoFactor;
    pam::pam_hooks!(SoftTwoFactor);

    impl PamHooks for SoftTwoFactor {
        fn sm_authenticate(
            pamh: &mut PamHandle,
            args: Vec<&CStr>,
            flags: PamFlag,
        ) -> PamResultCode {
            let mut path = None;
            let rest: Vec<&CStr> = args
                .into_iter()
                .filter(
                    |a| match a.to_str().ok().and_then(|s| s.strip_prefix("softkey=")) {
                        Some(p) => {
                            path = Some(PathBuf::from(p));
                            false
                        }
                        None => true,
                    },
                )
                .collect();
            twofactor_pam::authenticate(pamh, &rest, flags, &Plugged(path))
        }

        fn sm_setcred(_pamh: &mut PamHandle, _args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
            PamResultCode::PAM_SUCCESS
        }
    }
}
