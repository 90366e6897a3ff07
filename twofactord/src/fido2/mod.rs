//! FIDO2 relying-party verification: the daemon's side of security-key logins.
//!
//! Everything here parses bytes a client relayed from a key, so all of it is untrusted input:
//! it is parsed by hand with a bounds-checked cursor ([`AuthenticatorData`]) and a bounded
//! CBOR reader (COSE keys, extensions, attestation objects), with a size limit on every part
//! and no panics (indexing and unchecked arithmetic are denied by lint below). Malformed input
//! is refused with [`Fido2Error::Malformed`] naming the part.
//!
//! A login assertion is accepted by [`verify_assertion`] only if:
//! - its credential id is the stored credential's (the key is this user's);
//! - the rp id is the credential's and `authData[0..32] == SHA-256(rp_id)` (the key signed for
//!   this relying party, not for a website that relayed the challenge);
//! - the signature over `authData || clientDataHash` verifies with the stored key (ES256 with
//!   DER signatures, high S accepted as real keys make them; Ed25519). The daemon computes
//!   `clientDataHash` over client data it built itself around its single-use challenge, so a
//!   valid signature also proves the assertion is fresh;
//! - UP is set when presence is required, UV when verification is required;
//! - the counter increased whenever it or the stored one is non-zero; otherwise
//!   [`Fido2Error::CounterNotIncreased`]: possibly a cloned key, to be audited.
//!
//! [`verify_registration`] extracts a new credential from an attestation object. The
//! attestation statement is not verified (self/none attestation policy).
//!
//! Not here: challenges, client data, storage and the bus. Callers bring the stored credential
//! and the client data hash.
#![forbid(unsafe_code)]
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

mod auth_data;
mod cbor;
mod cose;
mod error;
mod registration;
mod verify;

#[cfg(test)]
pub(crate) mod tests;

pub use auth_data::{
    AttestedCredentialData, AuthenticatorData, AuthenticatorFlags, MAX_AUTHENTICATOR_DATA_LEN,
    MAX_CREDENTIAL_ID_LEN, RP_ID_HASH_LEN,
};
pub use cose::{COSE_ALG_EDDSA, COSE_ALG_ES256, CosePublicKey, MAX_COSE_KEY_LEN};
pub use error::Fido2Error;
pub use registration::{
    AttestationObject, MAX_ATTESTATION_OBJECT_LEN, RegisteredCredential, verify_registration,
};
pub use verify::{
    Assertion, Requirements, StoredCredential, VerifiedAssertion, rp_id_hash, verify_assertion,
};
