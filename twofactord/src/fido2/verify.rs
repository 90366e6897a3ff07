//! Assertion verification: the relying party's checks on a login.

use sha2::{Digest, Sha256};

use super::Fido2Error;
use super::auth_data::{
    AuthenticatorData, AuthenticatorFlags, MAX_CREDENTIAL_ID_LEN, RP_ID_HASH_LEN,
};
use super::cose::CosePublicKey;

/// What the policy demands of the user for this assertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirements {
    /// The UP flag must be set (a touch). Logins always ask for it.
    pub user_presence: bool,
    /// The UV flag must be set (PIN or biometric), when policy says `required`.
    pub user_verification: bool,
}

/// An enrolled credential as the daemon stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCredential {
    /// The id the key names in its assertions.
    pub credential_id: Vec<u8>,
    /// The public key from registration.
    pub public_key: CosePublicKey,
    /// The relying party id the credential was registered for.
    pub rp_id: String,
    /// The counter from the last accepted assertion (or registration).
    pub sign_count: u32,
}

impl StoredCredential {
    /// Builds a stored credential from its COSE-encoded public key, as kept in the store.
    pub fn from_cose(
        credential_id: Vec<u8>,
        public_key_cose: &[u8],
        rp_id: String,
        sign_count: u32,
    ) -> Result<Self, Fido2Error> {
        Ok(StoredCredential {
            credential_id,
            public_key: CosePublicKey::from_cose(public_key_cose)?,
            rp_id,
            sign_count,
        })
    }
}

/// An assertion as the client relays it from the key: all untrusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assertion<'a> {
    /// The credential the key used.
    pub credential_id: &'a [u8],
    /// The authenticatorData the key signed.
    pub authenticator_data: &'a [u8],
    /// The signature over `authenticator_data || clientDataHash`.
    pub signature: &'a [u8],
}

/// An accepted assertion. Store `sign_count` as the credential's new counter.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedAssertion {
    /// The counter the key reported.
    pub sign_count: u32,
    /// The flags the key reported (UP, UV, backup state).
    pub flags: AuthenticatorFlags,
}

/// SHA-256 of a relying party id, as authenticators put it at the start of authenticatorData.
pub fn rp_id_hash(rp_id: &str) -> [u8; RP_ID_HASH_LEN] {
    Sha256::digest(rp_id.as_bytes()).into()
}

/// Verifies a login assertion against the stored credential.
///
/// `client_data_hash` is the SHA-256 of the client data the daemon built itself for this
/// login's challenge; the key's signature covers it, which binds the assertion to that
/// challenge. The checks, in order:
/// 1. the credential id is the stored one;
/// 2. `expected_rp_id` (the policy's) is the one the credential was registered for;
/// 3. authenticatorData parses (bounds, flags consistent with its parts, nothing trailing);
/// 4. the signature over `authenticatorData || client_data_hash` verifies;
/// 5. `rpIdHash` is SHA-256 of the credential's rp id;
/// 6. UP and UV as `requirements` ask;
/// 7. the counter increased, unless both it and the stored one are 0.
///
/// The signature comes before the flag and counter checks so that a policy refusal (above
/// all "possible cloned key") is only reported for data the key really signed.
pub fn verify_assertion(
    stored: &StoredCredential,
    assertion: &Assertion<'_>,
    expected_rp_id: &str,
    client_data_hash: &[u8; 32],
    requirements: Requirements,
) -> Result<VerifiedAssertion, Fido2Error> {
    check_credential_id(&stored.credential_id, assertion.credential_id)?;
    if stored.rp_id != expected_rp_id {
        return Err(Fido2Error::RpIdMismatch);
    }
    check_signed_data(
        &stored.public_key,
        &rp_id_hash(&stored.rp_id),
        stored.sign_count,
        assertion,
        client_data_hash,
        requirements,
    )
}

pub(super) fn check_credential_id(stored: &[u8], received: &[u8]) -> Result<(), Fido2Error> {
    if received.is_empty() {
        return Err(Fido2Error::Malformed("credential id is empty"));
    }
    if received.len() > MAX_CREDENTIAL_ID_LEN {
        return Err(Fido2Error::Malformed(
            "credential id longer than 1023 bytes",
        ));
    }
    if stored != received {
        return Err(Fido2Error::WrongCredential);
    }
    Ok(())
}

/// Steps 3 to 7 of [`verify_assertion`], against an rpIdHash. The test vectors need this
/// directly: one of them publishes only the hash of its rp id.
pub(super) fn check_signed_data(
    public_key: &CosePublicKey,
    expected_rp_id_hash: &[u8; RP_ID_HASH_LEN],
    stored_sign_count: u32,
    assertion: &Assertion<'_>,
    client_data_hash: &[u8; 32],
    requirements: Requirements,
) -> Result<VerifiedAssertion, Fido2Error> {
    let auth_data = AuthenticatorData::parse(assertion.authenticator_data)?;
    public_key.verify(
        assertion.authenticator_data,
        client_data_hash,
        assertion.signature,
    )?;
    if &auth_data.rp_id_hash != expected_rp_id_hash {
        return Err(Fido2Error::RpIdMismatch);
    }
    check_user_flags(auth_data.flags, requirements)?;
    check_counter(stored_sign_count, auth_data.sign_count)?;
    Ok(VerifiedAssertion {
        sign_count: auth_data.sign_count,
        flags: auth_data.flags,
    })
}

pub(super) fn check_user_flags(
    flags: AuthenticatorFlags,
    requirements: Requirements,
) -> Result<(), Fido2Error> {
    if requirements.user_presence && !flags.user_present() {
        return Err(Fido2Error::UserPresenceMissing);
    }
    if requirements.user_verification && !flags.user_verified() {
        return Err(Fido2Error::UserVerificationMissing);
    }
    Ok(())
}

/// WebAuthn §6.1.1: a counter that does not increase means two copies of the key may exist,
/// or the assertion is replayed. Keys without a counter always report 0; that is fine as long
/// as the stored value is 0 too.
fn check_counter(stored: u32, received: u32) -> Result<(), Fido2Error> {
    if (stored != 0 || received != 0) && received <= stored {
        return Err(Fido2Error::CounterNotIncreased { stored, received });
    }
    Ok(())
}
