//! The pure parsers of `twofactorctl`: files a user or an admin hands to `admin import`, which
//! are untrusted input. A library target so that the fuzz harness (`twofactor-fuzz`) drives the
//! very code the CLI runs; the CLI itself is `main.rs`.
#![forbid(unsafe_code)]

pub mod import;
pub mod import_u2f;
