#![no_main]
//! cargo-fuzz target `login`: the body is twofactor_fuzz::login (shared with the stable bounded run).

libfuzzer_sys::fuzz_target!(|data: &[u8]| twofactor_fuzz::login(data));
