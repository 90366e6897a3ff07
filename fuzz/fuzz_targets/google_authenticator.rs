#![no_main]
//! cargo-fuzz target `google_authenticator`: the body is twofactor_fuzz::google_authenticator (shared with the stable bounded run).

libfuzzer_sys::fuzz_target!(|data: &[u8]| twofactor_fuzz::google_authenticator(data));
