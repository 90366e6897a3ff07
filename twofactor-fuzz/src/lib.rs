//! The bodies of twofactor's fuzz targets, one function per parser of untrusted input and one
//! for the daemon's login state machine. Each takes arbitrary bytes, must never panic on them,
//! and panics itself only when an invariant breaks (that is the finding).
//!
//! Two drivers run them: `fuzz/` (cargo-fuzz, libFuzzer, nightly: `make fuzz`) and the bounded
//! deterministic run in `tests/bounded.rs` (stable, part of `make test`), which mutates the
//! committed seed corpus `fuzz/corpus/<target>/` with a fixed-seed generator.
//!
//! Dev-only: nothing that ships depends on this crate.
#![forbid(unsafe_code)]
// A test harness: a broken invariant is reported by panicking, which is what a fuzzer catches.
#![allow(clippy::panic)]

mod input;
mod keys;
mod login;
mod parsers;

pub use input::{Input, fields};
pub use login::{LoginStats, login, login_stats};
pub use parsers::{fido2, google_authenticator, policy, u2f_authfile};

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/` call it.
pub const TARGETS: &[(&str, Target)] = &[
    ("policy", policy),
    ("google_authenticator", google_authenticator),
    ("u2f_authfile", u2f_authfile),
    ("fido2", fido2),
    ("login", login),
];
