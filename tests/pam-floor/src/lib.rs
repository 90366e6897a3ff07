//! BENCHMARK ONLY: `libpam_bench_floor.so`, the floor of our shape for `make bench`. What any
//! login through a daemon must do at least, and nothing more: connect to the bus, call
//! `Begin(user)` on the floor service (which looks the caller up with
//! `GetConnectionUnixUser`), prompt once through the PAM conversation, call
//! `Continue(handle, answer)` (which makes one durable SQLite commit), close. No policy, no
//! secret, no check of the answer: the floor says how fast the shape can be, not what it decides.
//!
//! Module argument: `bus=ADDRESS` (required).
#![deny(unsafe_code)]

/// The floor service's bus name, object and interface (tests/src/bin/bench-floor.rs).
const NAME: &str = "org.twofactor.BenchFloor1";
const PATH: &str = "/org/twofactor/BenchFloor1";

/// One login: connect, Begin, prompt, Continue, close. `Err` carries nothing: any failure is
/// a refusal (the benchmark counts it).
fn login(address: &str, user: &str, ask: &mut dyn FnMut() -> Option<String>) -> Result<bool, ()> {
    zbus::block_on(async {
        let conn = zbus::connection::Builder::address(address)
            .build()
            .await
            .map_err(|_| ())?;
        let outcome = async {
            let handle: String = conn
                .call_method(Some(NAME), PATH, Some(NAME), "Begin", &(user,))
                .await
                .map_err(|_| ())?
                .body()
                .deserialize()
                .map_err(|_| ())?;
            let answer = ask().ok_or(())?;
            conn.call_method(Some(NAME), PATH, Some(NAME), "Continue", &(handle, answer))
                .await
                .map_err(|_| ())?
                .body()
                .deserialize::<bool>()
                .map_err(|_| ())
        }
        .await;
        let _ = conn.close().await;
        outcome
    })
}

/// The entry points libpam calls (defined by `pam_hooks!`, which needs unsafe code).
mod hooks {
    #![allow(unsafe_code)]

    use std::ffi::CStr;

    use pam::constants::{PAM_PROMPT_ECHO_OFF, PamFlag, PamResultCode};
    use pam::conv::Conv;
    use pam::module::{PamHandle, PamHooks};

    struct Floor;
    pam::pam_hooks!(Floor);

    impl PamHooks for Floor {
        fn sm_authenticate(
            pamh: &mut PamHandle,
            args: Vec<&CStr>,
            _flags: PamFlag,
        ) -> PamResultCode {
            let Some(address) = args
                .iter()
                .filter_map(|a| a.to_str().ok())
                .find_map(|a| a.strip_prefix("bus="))
                .map(str::to_string)
            else {
                return PamResultCode::PAM_SERVICE_ERR;
            };
            let user = match pamh.get_user(None) {
                Ok(u) => u,
                Err(code) => return code,
            };
            let conv = match pamh.get_item::<Conv<'_>>() {
                Ok(Some(c)) => c,
                _ => return PamResultCode::PAM_CONV_ERR,
            };
            let mut ask = || match conv.send(PAM_PROMPT_ECHO_OFF, "Verification code: ") {
                Ok(Some(answer)) => answer.as_str().ok().map(str::to_string),
                _ => None,
            };
            match super::login(&address, &user, &mut ask) {
                Ok(true) => PamResultCode::PAM_SUCCESS,
                Ok(false) => PamResultCode::PAM_AUTH_ERR,
                Err(()) => PamResultCode::PAM_AUTHINFO_UNAVAIL,
            }
        }

        fn sm_setcred(_pamh: &mut PamHandle, _args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
            PamResultCode::PAM_SUCCESS
        }
    }
}
