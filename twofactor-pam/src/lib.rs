//! The logic of `pam_twofactor.so`, a thin PAM module: it asks `twofactord` over D-Bus what the
//! login needs and relays the daemon's steps through the PAM conversation; a security-key step
//! goes to the [`Authenticator`](twofactor_key::Authenticator) the `.so` plugs in (HID in the
//! shipped module, a software key in the test build). It decides nothing itself.
//!
//! Module arguments: `bus=ADDRESS` (default: the system bus socket), `timeout=SECONDS`
//! (default 10), `failmode=closed|open` (default closed), `debug`.
//!
//! All unsafe code (the `extern "C"` entry points and syslog) lives in [`ffi`].
#![deny(unsafe_code)]

pub mod args;
pub mod conversation;
mod ffi;
pub mod keystep;
pub mod login;
pub mod outcome;

pub use args::{FailMode, ModuleArgs};
pub use ffi::authenticate;
pub use outcome::{Verdict, pam_code};
