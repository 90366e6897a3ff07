//! The logic of `pam_twofactor.so`, a thin PAM module: it asks `twofactord` over D-Bus what the
//! login needs and relays the daemon's steps through the PAM conversation; a security-key step
//! goes to the [`Authenticator`](twofactor_key::Authenticator) the `.so` plugs in (HID in the
//! shipped module, a software key in the test build). It decides nothing itself.
//!
//! Module arguments: `bus=ADDRESS` (default: the system bus socket), `timeout=SECONDS`
//! (default 10), `failmode=closed|open` (default closed), `offline=PATH|none` (default
//! `/run/twofactor/offline`: see [`offline`]), `debug`.
//!
//! Before any answer is sent, the owner of the daemon's bus name must be root or the daemon's
//! own user, and every call goes to that one connection. With `PAM_SILENT` no informational or
//! error message is shown (prompts are).
//!
//! All unsafe code (the `extern "C"` entry points and syslog) lives in [`ffi`].
#![deny(unsafe_code)]

pub mod args;
pub mod conversation;
mod ffi;
pub mod keystep;
pub mod login;
pub mod offline;
pub mod outcome;
pub mod session;

pub use args::{FailMode, ModuleArgs};
pub use ffi::authenticate;
pub use outcome::{Verdict, pam_code};
