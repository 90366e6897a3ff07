//! COSE public keys (RFC 9052/9053) as FIDO2 authenticators emit them, and signature checks.
//!
//! Two algorithms are supported, the ones security keys make: ES256 (ECDSA on P-256 with
//! SHA-256, DER signatures) and EdDSA (Ed25519, 64-byte signatures). Anything else is refused
//! by name: an unknown algorithm never falls back to a default.

use minicbor::Decoder;
use p256::ecdsa::signature::MultipartVerifier as _;

use super::Fido2Error;
use super::cbor;

/// COSE algorithm id of ES256 (ECDSA w/ SHA-256).
pub const COSE_ALG_ES256: i64 = -7;
/// COSE algorithm id of EdDSA.
pub const COSE_ALG_EDDSA: i64 = -8;
/// Largest COSE key accepted. Real ones are 77 (ES256) or 42 (Ed25519) bytes.
pub const MAX_COSE_KEY_LEN: usize = 1024;

const KTY_OKP: i64 = 1;
const KTY_EC2: i64 = 2;
const CRV_P256: i64 = 1;
const CRV_ED25519: i64 = 6;

const LABEL_KTY: i64 = 1;
const LABEL_ALG: i64 = 3;
const LABEL_CRV: i64 = -1;
const LABEL_X: i64 = -2;
const LABEL_Y: i64 = -3;

/// More map entries than any key type defines is not a key.
const MAX_ENTRIES: u64 = 16;
/// Nesting allowed inside the values of labels this parser ignores (e.g. `key_ops`, an array).
const MAX_VALUE_DEPTH: u8 = 2;

/// Longest DER encoding of a P-256 ECDSA signature: SEQUENCE of two 33-byte INTEGERs.
const MAX_ES256_DER_LEN: usize = 72;
const ED25519_SIGNATURE_LEN: usize = 64;

/// A credential's public key, checked to be a valid point of its curve.
///
/// Public keys are not secret; `Debug` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CosePublicKey {
    /// ES256: ECDSA on P-256 with SHA-256.
    Es256(p256::ecdsa::VerifyingKey),
    /// EdDSA on Ed25519.
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl CosePublicKey {
    /// Parses a COSE_Key: exactly one CBOR map of at most [`MAX_COSE_KEY_LEN`] bytes, with
    /// integer labels, no duplicates, and the fields its algorithm requires.
    pub fn from_cose(bytes: &[u8]) -> Result<Self, Fido2Error> {
        if bytes.len() > MAX_COSE_KEY_LEN {
            return Err(Fido2Error::Malformed("COSE key longer than 1024 bytes"));
        }
        let mut d = Decoder::new(bytes);
        let key = decode(&mut d)?;
        if d.position() != bytes.len() {
            return Err(Fido2Error::Malformed("trailing bytes after the COSE key"));
        }
        Ok(key)
    }

    /// The COSE algorithm id: [`COSE_ALG_ES256`] or [`COSE_ALG_EDDSA`].
    pub fn algorithm(&self) -> i64 {
        match self {
            CosePublicKey::Es256(_) => COSE_ALG_ES256,
            CosePublicKey::Ed25519(_) => COSE_ALG_EDDSA,
        }
    }

    /// Checks `signature` over `authenticator_data || client_data_hash`, the message an
    /// authenticator signs for an assertion (CTAP2 §6.2, WebAuthn §6.3.3).
    ///
    /// ES256 signatures with a high S are accepted: WebAuthn has no low-S rule and real keys
    /// produce them. S is normalized before the check so this does not depend on the
    /// curve crate's policy; `(r, s)` and `(r, n - s)` are equally valid ECDSA signatures.
    pub fn verify(
        &self,
        authenticator_data: &[u8],
        client_data_hash: &[u8; 32],
        signature: &[u8],
    ) -> Result<(), Fido2Error> {
        match self {
            CosePublicKey::Es256(key) => {
                if signature.len() > MAX_ES256_DER_LEN {
                    return Err(Fido2Error::Malformed(
                        "ES256 signature longer than 72 bytes",
                    ));
                }
                let sig = p256::ecdsa::Signature::from_der(signature).map_err(|_| {
                    Fido2Error::Malformed("ES256 signature is not a DER-encoded (r, s) pair")
                })?;
                key.multipart_verify(
                    &[authenticator_data, client_data_hash.as_slice()],
                    &sig.normalize_s(),
                )
                .map_err(|_| Fido2Error::BadSignature)
            }
            CosePublicKey::Ed25519(key) => {
                let raw: &[u8; ED25519_SIGNATURE_LEN] = signature
                    .try_into()
                    .map_err(|_| Fido2Error::Malformed("Ed25519 signature is not 64 bytes"))?;
                let sig = ed25519_dalek::Signature::from_bytes(raw);
                let mut message = Vec::with_capacity(
                    authenticator_data
                        .len()
                        .saturating_add(client_data_hash.len()),
                );
                message.extend_from_slice(authenticator_data);
                message.extend_from_slice(client_data_hash);
                // Strict: refuses small-order keys and non-canonical R and S (no malleability).
                key.verify_strict(&message, &sig)
                    .map_err(|_| Fido2Error::BadSignature)
            }
        }
    }
}

/// The fields of a COSE key this parser reads; each may appear once.
#[derive(Default)]
struct Fields<'b> {
    kty: Option<i64>,
    alg: Option<i64>,
    crv: Option<i64>,
    x: Option<&'b [u8]>,
    y: Option<&'b [u8]>,
}

/// Decodes one COSE key map at the decoder's position, leaving it after the map.
fn decode(d: &mut Decoder<'_>) -> Result<CosePublicKey, Fido2Error> {
    let entries = cbor::map_header(
        d,
        MAX_ENTRIES,
        "COSE key is not a definite-length CBOR map of at most 16 entries",
    )?;
    let mut fields = Fields::default();
    let mut seen: Vec<i64> = Vec::new();
    for _ in 0..entries {
        let label = d
            .i64()
            .map_err(|_| Fido2Error::Malformed("COSE key label is not an integer"))?;
        if seen.contains(&label) {
            return Err(Fido2Error::Malformed("COSE key repeats a label"));
        }
        seen.push(label);
        match label {
            LABEL_KTY => fields.kty = Some(int(d, "COSE key type (kty) is not an integer")?),
            LABEL_ALG => fields.alg = Some(int(d, "COSE algorithm (alg) is not an integer")?),
            LABEL_CRV => fields.crv = Some(int(d, "COSE curve (crv) is not an integer")?),
            LABEL_X => fields.x = Some(bytes(d, "COSE x coordinate is not a byte string")?),
            LABEL_Y => fields.y = Some(bytes(d, "COSE y coordinate is not a byte string")?),
            _ => cbor::skip_item(d, MAX_VALUE_DEPTH, "COSE key has a malformed value")?,
        }
    }
    key_from_fields(&fields)
}

fn key_from_fields(f: &Fields<'_>) -> Result<CosePublicKey, Fido2Error> {
    let alg = f
        .alg
        .ok_or(Fido2Error::Malformed("COSE key names no algorithm (alg)"))?;
    match alg {
        COSE_ALG_ES256 => {
            if f.kty != Some(KTY_EC2) {
                return Err(Fido2Error::Malformed(
                    "ES256 key is not of key type EC2 (2)",
                ));
            }
            if f.crv != Some(CRV_P256) {
                return Err(Fido2Error::Malformed("ES256 key is not on curve P-256 (1)"));
            }
            let x = coordinate(f.x, "ES256 key x coordinate is not 32 bytes")?;
            let y = coordinate(f.y, "ES256 key y coordinate is not 32 bytes")?;
            // SEC1 uncompressed point: 0x04 || x || y.
            let mut sec1 = Vec::with_capacity(65);
            sec1.push(0x04);
            sec1.extend_from_slice(x);
            sec1.extend_from_slice(y);
            p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                .map(CosePublicKey::Es256)
                .map_err(|_| Fido2Error::Malformed("ES256 key is not a point on P-256"))
        }
        COSE_ALG_EDDSA => {
            if f.kty != Some(KTY_OKP) {
                return Err(Fido2Error::Malformed(
                    "EdDSA key is not of key type OKP (1)",
                ));
            }
            if f.crv != Some(CRV_ED25519) {
                return Err(Fido2Error::Malformed(
                    "EdDSA key is not on curve Ed25519 (6)",
                ));
            }
            if f.y.is_some() {
                return Err(Fido2Error::Malformed("Ed25519 key has a y coordinate"));
            }
            let x = coordinate(f.x, "Ed25519 key is not 32 bytes")?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(x)
                .map_err(|_| Fido2Error::Malformed("Ed25519 key is not a curve point"))?;
            if key.is_weak() {
                return Err(Fido2Error::Malformed("Ed25519 key has small order"));
            }
            Ok(CosePublicKey::Ed25519(key))
        }
        other => Err(Fido2Error::UnsupportedAlgorithm(other)),
    }
}

fn coordinate<'b>(value: Option<&'b [u8]>, what: &'static str) -> Result<&'b [u8; 32], Fido2Error> {
    value
        .and_then(|v| v.try_into().ok())
        .ok_or(Fido2Error::Malformed(what))
}

fn int(d: &mut Decoder<'_>, what: &'static str) -> Result<i64, Fido2Error> {
    d.i64().map_err(|_| Fido2Error::Malformed(what))
}

fn bytes<'b>(d: &mut Decoder<'b>, what: &'static str) -> Result<&'b [u8], Fido2Error> {
    d.bytes().map_err(|_| Fido2Error::Malformed(what))
}
