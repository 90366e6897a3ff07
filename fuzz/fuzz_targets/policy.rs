#![no_main]
//! cargo-fuzz target `policy`: the body is twofactor_fuzz::policy (shared with the stable bounded run).

libfuzzer_sys::fuzz_target!(|data: &[u8]| twofactor_fuzz::policy(data));
