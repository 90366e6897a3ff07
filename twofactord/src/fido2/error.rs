//! Why a FIDO2 credential or assertion was refused.

use std::fmt;

/// Why the verifier refused its input.
///
/// Every variant says what failed, never the bytes that failed: the messages can go to the
/// audit log and to the bus as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fido2Error {
    /// The input does not have the structure the specifications require (truncated, too long,
    /// bad CBOR, wrong lengths or types). The text names the part.
    Malformed(&'static str),
    /// The assertion names another credential than the stored one.
    WrongCredential,
    /// The relying party id is not the one the credential was made for.
    RpIdMismatch,
    /// The user-present flag is not set, but presence (a touch) is required.
    UserPresenceMissing,
    /// The user-verified flag is not set, but verification (PIN or biometric) is required.
    UserVerificationMissing,
    /// The signature does not verify with the credential's public key.
    BadSignature,
    /// The signature counter did not increase although one side is non-zero: the credential may
    /// have been cloned, or the assertion is replayed.
    CounterNotIncreased {
        /// The counter stored from the last accepted assertion.
        stored: u32,
        /// The counter in this assertion.
        received: u32,
    },
    /// The COSE key names an algorithm other than ES256 (-7) and EdDSA (-8).
    UnsupportedAlgorithm(i64),
}

impl fmt::Display for Fido2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fido2Error::Malformed(what) => write!(f, "malformed FIDO2 data: {what}"),
            Fido2Error::WrongCredential => {
                f.write_str("the assertion is for a different credential")
            }
            Fido2Error::RpIdMismatch => {
                f.write_str("the relying party id does not match the credential's")
            }
            Fido2Error::UserPresenceMissing => {
                f.write_str("user presence is required but the key did not report a touch")
            }
            Fido2Error::UserVerificationMissing => f.write_str(
                "user verification is required but the key did not verify the user (PIN or biometric)",
            ),
            Fido2Error::BadSignature => f.write_str("the signature does not verify"),
            Fido2Error::CounterNotIncreased { stored, received } => write!(
                f,
                "the signature counter did not increase (stored {stored}, received {received}): \
                 possible cloned key"
            ),
            Fido2Error::UnsupportedAlgorithm(alg) => {
                write!(f, "unsupported COSE algorithm {alg} (supported: ES256 -7, EdDSA -8)")
            }
        }
    }
}

impl std::error::Error for Fido2Error {}
