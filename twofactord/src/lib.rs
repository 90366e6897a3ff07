//! `twofactord`: the privileged daemon that owns every secret and every decision of twofactor.
//!
//! Layers, from the bus inwards: [`service`] identifies the caller and forwards to the
//! [`engine::Engine`], which applies [`authz`], [`policy`], the factors ([`totp`],
//! [`recovery`]) and the [`store`].
// All unsafe code is the one system call in `clock` and the account enumeration in `nss_enum`;
// every other module forbids it.
#![deny(unsafe_code)]

pub mod authz;
pub mod clock;
pub mod engine;
pub mod fido2;
pub mod identity;
pub mod local_passwd;
pub mod log;
pub mod notify;
pub mod nss_enum;
pub mod policy;
pub mod recovery;
pub mod restore;
pub mod service;
pub mod store;
#[doc(hidden)]
pub mod testkit;
pub mod totp;
pub mod workers;
