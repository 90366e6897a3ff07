#![no_main]
//! cargo-fuzz target `fido2`: the body is twofactor_fuzz::fido2 (shared with the stable bounded run).

libfuzzer_sys::fuzz_target!(|data: &[u8]| twofactor_fuzz::fido2(data));
