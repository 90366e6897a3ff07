//! `pam_twofactor.so`: a thin PAM module. It asks `twofactord` over D-Bus what the login needs
//! and relays the daemon's steps through the PAM conversation; for a security-key step it asks
//! the key plugged into this machine (USB HID). It decides nothing itself.
//!
//! Module arguments: `bus=ADDRESS` (default: the system bus socket), `timeout=SECONDS`
//! (default 10), `failmode=closed|open` (default closed), `debug`.
//!
//! Everything but the entry points is in the `twofactor-pam` crate, which the test build of
//! the module (with a software authenticator instead of HID) links too.
#![deny(unsafe_code)]

/// The entry points libpam calls (defined by `pam_hooks!`, which needs unsafe code).
mod hooks {
    #![allow(unsafe_code)]

    use std::ffi::CStr;

    use pam::constants::{PamFlag, PamResultCode};
    use pam::module::{PamHandle, PamHooks};
    use twofactor_key::hid::HidAuthenticator;

    struct TwoFactor;
    pam::pam_hooks!(TwoFactor);

    impl PamHooks for TwoFactor {
        fn sm_authenticate(
            pamh: &mut PamHandle,
            args: Vec<&CStr>,
            flags: PamFlag,
        ) -> PamResultCode {
            twofactor_pam::authenticate(pamh, &args, flags, &HidAuthenticator::new())
        }

        fn sm_setcred(_pamh: &mut PamHandle, _args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
            PamResultCode::PAM_SUCCESS
        }
    }
}
