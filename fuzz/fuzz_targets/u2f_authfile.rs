#![no_main]
//! cargo-fuzz target `u2f_authfile`: the body is twofactor_fuzz::u2f_authfile (shared with the stable bounded run).

libfuzzer_sys::fuzz_target!(|data: &[u8]| twofactor_fuzz::u2f_authfile(data));
