//! authenticatorData (WebAuthn §6.1): the bytes an authenticator signs.
//!
//! ```text
//! rpIdHash 32 | flags 1 | signCount 4 (BE) | [attested credential data] | [extensions]
//! attested credential data = AAGUID 16 | credIdLen 2 (BE) | credId | COSE key (CBOR)
//! extensions               = CBOR map
//! ```
//! The parser reads it front to back through a cursor that checks each length against what is
//! left; every part must be exactly where the flags say, and nothing may follow the last one.

use super::Fido2Error;
use super::cbor;
use super::cose::{CosePublicKey, MAX_COSE_KEY_LEN};

/// Length of the SHA-256 hash of the relying party id at the start of authenticatorData.
pub const RP_ID_HASH_LEN: usize = 32;
/// Longest credential id accepted (the WebAuthn limit).
pub const MAX_CREDENTIAL_ID_LEN: usize = 1023;
/// Longest authenticatorData accepted: the largest credential id and COSE key with room left for
/// extensions. An assertion's is usually 37 bytes.
pub const MAX_AUTHENTICATOR_DATA_LEN: usize = 4096;

/// Nesting allowed inside the extensions map (its values are small maps, arrays or scalars).
const MAX_EXTENSION_DEPTH: u8 = 4;
/// Nesting allowed while finding where the COSE key ends; [`CosePublicKey::from_cose`] then
/// applies the key's own, stricter rules.
const MAX_COSE_KEY_DEPTH: u8 = 3;

/// The flags byte of authenticatorData.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthenticatorFlags(u8);

impl AuthenticatorFlags {
    /// UP: the user touched the key.
    pub const USER_PRESENT: u8 = 0x01;
    /// UV: the key verified the user (PIN or biometric).
    pub const USER_VERIFIED: u8 = 0x04;
    /// BE: the credential may be backed up (synced passkey).
    pub const BACKUP_ELIGIBLE: u8 = 0x08;
    /// BS: the credential is backed up.
    pub const BACKED_UP: u8 = 0x10;
    /// AT: attested credential data follows the counter.
    pub const ATTESTED_CREDENTIAL_DATA: u8 = 0x40;
    /// ED: an extensions map ends the data.
    pub const EXTENSION_DATA: u8 = 0x80;

    /// Wraps a flags byte as read.
    pub fn from_bits(bits: u8) -> Self {
        AuthenticatorFlags(bits)
    }

    /// The raw byte.
    pub fn bits(self) -> u8 {
        self.0
    }

    fn has(self, flag: u8) -> bool {
        self.0 & flag != 0
    }

    /// UP.
    pub fn user_present(self) -> bool {
        self.has(Self::USER_PRESENT)
    }

    /// UV.
    pub fn user_verified(self) -> bool {
        self.has(Self::USER_VERIFIED)
    }

    /// BE.
    pub fn backup_eligible(self) -> bool {
        self.has(Self::BACKUP_ELIGIBLE)
    }

    /// BS.
    pub fn backed_up(self) -> bool {
        self.has(Self::BACKED_UP)
    }

    /// AT.
    pub fn attested_credential_data(self) -> bool {
        self.has(Self::ATTESTED_CREDENTIAL_DATA)
    }

    /// ED.
    pub fn extension_data(self) -> bool {
        self.has(Self::EXTENSION_DATA)
    }
}

/// The credential a registration creates, as carried in authenticatorData.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedCredentialData<'a> {
    /// The authenticator model's id (all zero for U2F keys).
    pub aaguid: [u8; 16],
    /// The credential id, 1 to [`MAX_CREDENTIAL_ID_LEN`] bytes.
    pub credential_id: &'a [u8],
    /// The public key's COSE encoding, as the daemon should store it.
    pub public_key_cose: &'a [u8],
    /// The public key, parsed and checked.
    pub public_key: CosePublicKey,
}

/// Parsed authenticatorData; the slices borrow from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatorData<'a> {
    /// SHA-256 of the relying party id the authenticator signed for.
    pub rp_id_hash: [u8; RP_ID_HASH_LEN],
    /// The flags byte.
    pub flags: AuthenticatorFlags,
    /// The signature counter (0 when the authenticator keeps none).
    pub sign_count: u32,
    /// Present exactly when the AT flag is set.
    pub attested_credential_data: Option<AttestedCredentialData<'a>>,
    /// The raw extensions map, present exactly when the ED flag is set.
    pub extensions: Option<&'a [u8]>,
}

impl<'a> AuthenticatorData<'a> {
    /// Parses and bounds-checks authenticatorData. Trailing bytes are an error.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Fido2Error> {
        if bytes.len() > MAX_AUTHENTICATOR_DATA_LEN {
            return Err(Fido2Error::Malformed(
                "authenticator data longer than 4096 bytes",
            ));
        }
        let mut r = Reader(bytes);
        let rp_id_hash = r.array::<RP_ID_HASH_LEN>("authenticator data truncated in rpIdHash")?;
        let [flags] = r.array::<1>("authenticator data truncated before its flags")?;
        let flags = AuthenticatorFlags::from_bits(flags);
        let sign_count = u32::from_be_bytes(r.array("authenticator data truncated in signCount")?);
        if flags.backed_up() && !flags.backup_eligible() {
            return Err(Fido2Error::Malformed(
                "authenticator data flags say backed up but not backup eligible",
            ));
        }

        let attested_credential_data = if flags.attested_credential_data() {
            Some(attested_credential_data(&mut r)?)
        } else {
            None
        };

        let extensions = if flags.extension_data() {
            let rest = r.rest();
            if rest.is_empty() {
                return Err(Fido2Error::Malformed(
                    "authenticator data flags extensions but has none",
                ));
            }
            let what = "authenticator data extensions are not a valid CBOR map";
            // CBOR major type 5 is a map.
            if rest.first().is_none_or(|&b| b >> 5 != 5) {
                return Err(Fido2Error::Malformed(what));
            }
            let len = cbor::item_len(rest, MAX_EXTENSION_DEPTH, what)?;
            Some(r.take(len, what)?)
        } else {
            None
        };

        if !r.rest().is_empty() {
            return Err(Fido2Error::Malformed(
                "trailing bytes after the authenticator data",
            ));
        }
        Ok(AuthenticatorData {
            rp_id_hash,
            flags,
            sign_count,
            attested_credential_data,
            extensions,
        })
    }
}

fn attested_credential_data<'a>(
    r: &mut Reader<'a>,
) -> Result<AttestedCredentialData<'a>, Fido2Error> {
    let aaguid = r.array::<16>("attested credential data truncated in the AAGUID")?;
    let id_len = u16::from_be_bytes(r.array("attested credential data truncated in credIdLen")?);
    let id_len = usize::from(id_len);
    if id_len == 0 {
        return Err(Fido2Error::Malformed("credential id is empty"));
    }
    if id_len > MAX_CREDENTIAL_ID_LEN {
        return Err(Fido2Error::Malformed(
            "credential id longer than 1023 bytes",
        ));
    }
    let credential_id = r.take(
        id_len,
        "attested credential data truncated in the credential id",
    )?;
    let what = "credential public key is not a valid CBOR item";
    let key_len = cbor::item_len(r.rest(), MAX_COSE_KEY_DEPTH, what)?;
    if key_len > MAX_COSE_KEY_LEN {
        return Err(Fido2Error::Malformed("COSE key longer than 1024 bytes"));
    }
    let public_key_cose = r.take(key_len, what)?;
    let public_key = CosePublicKey::from_cose(public_key_cose)?;
    Ok(AttestedCredentialData {
        aaguid,
        credential_id,
        public_key_cose,
        public_key,
    })
}

/// A cursor over untrusted bytes: every read checks the length left.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Fido2Error> {
        let (head, tail) = self
            .0
            .split_at_checked(n)
            .ok_or(Fido2Error::Malformed(what))?;
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Fido2Error> {
        let (head, tail) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(Fido2Error::Malformed(what))?;
        self.0 = tail;
        Ok(*head)
    }

    fn rest(&self) -> &'a [u8] {
        self.0
    }
}
