//! Registration: the attestation object (WebAuthn §6.5) and the credential it carries.
//!
//! The attestation statement is parsed for shape only (`fmt` a short text, `attStmt` a bounded
//! map) and not verified: the daemon's policy is self/none attestation, and it proves
//! possession with a test assertion right after registration instead.

use minicbor::Decoder;
use minicbor::data::Type;

use super::auth_data::{AuthenticatorData, AuthenticatorFlags, RP_ID_HASH_LEN};
use super::cose::CosePublicKey;
use super::verify::{Requirements, check_user_flags, rp_id_hash};
use super::{Fido2Error, cbor};

/// Largest attestation object accepted (room for an attestation certificate chain).
pub const MAX_ATTESTATION_OBJECT_LEN: usize = 16 * 1024;
/// Longest attestation format identifier accepted (registered ones are under 20 bytes).
const MAX_FMT_LEN: usize = 32;
/// Nesting allowed in `attStmt` (e.g. map → `x5c` array → certificate bytes).
const MAX_ATT_STMT_DEPTH: u8 = 4;
/// A map with more entries than the three defined ones (plus a few future ones) is refused.
const MAX_ENTRIES: u64 = 8;

/// An attestation object split into its parts; the slices borrow from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationObject<'a> {
    /// The attestation statement format, e.g. `packed`, `fido-u2f`, `none`.
    pub fmt: &'a str,
    /// The raw CBOR map of the attestation statement (not verified).
    pub att_stmt: &'a [u8],
    /// The raw authenticatorData.
    pub auth_data: &'a [u8],
}

impl<'a> AttestationObject<'a> {
    /// Parses the CBOR map `{fmt, attStmt, authData}`; each key exactly once, unknown keys
    /// skipped within bounds, nothing after the map.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Fido2Error> {
        if bytes.len() > MAX_ATTESTATION_OBJECT_LEN {
            return Err(Fido2Error::Malformed(
                "attestation object longer than 16384 bytes",
            ));
        }
        let mut d = Decoder::new(bytes);
        let entries = cbor::map_header(
            &mut d,
            MAX_ENTRIES,
            "attestation object is not a definite-length CBOR map of at most 8 entries",
        )?;
        let mut fmt = None;
        let mut att_stmt = None;
        let mut auth_data = None;
        for _ in 0..entries {
            let key = d.str().map_err(|_| {
                Fido2Error::Malformed("attestation object key is not a text string")
            })?;
            match key {
                "fmt" => {
                    let value = d.str().map_err(|_| {
                        Fido2Error::Malformed("attestation fmt is not a text string")
                    })?;
                    if value.is_empty()
                        || value.len() > MAX_FMT_LEN
                        || !value.bytes().all(|b| b.is_ascii_graphic())
                    {
                        return Err(Fido2Error::Malformed(
                            "attestation fmt is not a short printable identifier",
                        ));
                    }
                    set_once(&mut fmt, value, "attestation object repeats fmt")?;
                }
                "attStmt" => {
                    let what = "attestation statement is not a valid CBOR map";
                    if d.datatype().map_err(|_| Fido2Error::Malformed(what))? != Type::Map {
                        return Err(Fido2Error::Malformed(what));
                    }
                    let start = d.position();
                    cbor::skip_item(&mut d, MAX_ATT_STMT_DEPTH, what)?;
                    let raw = bytes
                        .get(start..d.position())
                        .ok_or(Fido2Error::Malformed(what))?;
                    set_once(&mut att_stmt, raw, "attestation object repeats attStmt")?;
                }
                "authData" => {
                    let raw = d.bytes().map_err(|_| {
                        Fido2Error::Malformed("attestation authData is not a byte string")
                    })?;
                    set_once(&mut auth_data, raw, "attestation object repeats authData")?;
                }
                _ => cbor::skip_item(
                    &mut d,
                    MAX_ATT_STMT_DEPTH,
                    "attestation object has a malformed value",
                )?,
            }
        }
        if d.position() != bytes.len() {
            return Err(Fido2Error::Malformed(
                "trailing bytes after the attestation object",
            ));
        }
        Ok(AttestationObject {
            fmt: fmt.ok_or(Fido2Error::Malformed("attestation object has no fmt"))?,
            att_stmt: att_stmt.ok_or(Fido2Error::Malformed("attestation object has no attStmt"))?,
            auth_data: auth_data
                .ok_or(Fido2Error::Malformed("attestation object has no authData"))?,
        })
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, what: &'static str) -> Result<(), Fido2Error> {
    if slot.is_some() {
        return Err(Fido2Error::Malformed(what));
    }
    *slot = Some(value);
    Ok(())
}

/// A new credential taken from a registration's authenticatorData, ready to be stored.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredCredential {
    /// The credential id the key will name in its assertions.
    pub credential_id: Vec<u8>,
    /// The public key's COSE encoding, to store.
    pub public_key_cose: Vec<u8>,
    /// The public key, parsed and checked.
    pub public_key: CosePublicKey,
    /// The authenticator model's id (all zero for U2F keys).
    pub aaguid: [u8; 16],
    /// SHA-256 of the relying party id the key registered for.
    pub rp_id_hash: [u8; RP_ID_HASH_LEN],
    /// The counter at registration: the first value to store.
    pub sign_count: u32,
    /// The flags the key reported.
    pub flags: AuthenticatorFlags,
}

impl RegisteredCredential {
    /// Takes the credential out of a registration's authenticatorData, which must carry
    /// attested credential data (AT flag). Checks structure only; see [`verify_registration`].
    pub fn from_authenticator_data(auth_data: &[u8]) -> Result<Self, Fido2Error> {
        let parsed = AuthenticatorData::parse(auth_data)?;
        let credential = parsed
            .attested_credential_data
            .ok_or(Fido2Error::Malformed(
                "registration authenticator data carries no attested credential data",
            ))?;
        Ok(RegisteredCredential {
            credential_id: credential.credential_id.to_vec(),
            public_key_cose: credential.public_key_cose.to_vec(),
            public_key: credential.public_key,
            aaguid: credential.aaguid,
            rp_id_hash: parsed.rp_id_hash,
            sign_count: parsed.sign_count,
            flags: parsed.flags,
        })
    }
}

/// Checks a registration's attestation object and returns the credential to store: the
/// structure, `rpIdHash == SHA-256(expected_rp_id)`, and the UP/UV flags `requirements` ask
/// for. The attestation statement itself is not verified (self/none attestation policy).
pub fn verify_registration(
    attestation_object: &[u8],
    expected_rp_id: &str,
    requirements: Requirements,
) -> Result<RegisteredCredential, Fido2Error> {
    let object = AttestationObject::parse(attestation_object)?;
    let credential = RegisteredCredential::from_authenticator_data(object.auth_data)?;
    if credential.rp_id_hash != rp_id_hash(expected_rp_id) {
        return Err(Fido2Error::RpIdMismatch);
    }
    check_user_flags(credential.flags, requirements)?;
    Ok(credential)
}
