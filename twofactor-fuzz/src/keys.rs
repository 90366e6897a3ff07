//! A deterministic software security key for the login harness: what `twofactor-softkey` makes
//! (the same authenticatorData, COSE keys and signatures: ES256 as DER, Ed25519 raw), without
//! its state file and its randomness. A fuzz target must be fast and replay a finding exactly:
//! the soft key writes and fsyncs a JSON file at every touch and draws its credential ids and
//! private keys from the system's randomness, so a crashing input would not crash again.
//!
//! Here a key is its index: the private key and the credential id are hashes of it, and the
//! signature counter is a field the harness sets, so it can make honest, replayed and
//! rolled-back assertions at will. [`valid_assertion`] is the oracle's own check of an
//! assertion, written from WebAuthn, not from the daemon's verifier.

use p256::ecdsa::signature::{Signer as _, Verifier as _};
use sha2::{Digest as _, Sha256};
use twofactor_bus::KeyAssertion;

/// authenticatorData flags.
pub const FLAG_UP: u8 = 0x01;
pub const FLAG_UV: u8 = 0x04;
const FLAG_AT: u8 = 0x40;

enum Signing {
    Es256(p256::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

/// One credential of a software key.
pub struct FuzzKey {
    /// The credential id (32 to 63 bytes).
    pub credential_id: Vec<u8>,
    signing: Signing,
    /// The counter of the last operation; an honest key reports one more next time.
    pub counter: u32,
    /// The last assertion it made (for replays).
    pub last: Option<KeyAssertion>,
}

fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// SHA-256 of a relying party id, as keys put it first in authenticatorData.
pub fn rp_id_hash(rp_id: &str) -> [u8; 32] {
    hash(&[rp_id.as_bytes()])
}

/// `rpIdHash | flags | counter (BE)`.
pub fn auth_data(rp_id: &str, flags: u8, counter: u32) -> Vec<u8> {
    let mut data = rp_id_hash(rp_id).to_vec();
    data.push(flags);
    data.extend_from_slice(&counter.to_be_bytes());
    data
}

impl FuzzKey {
    /// Key number `n`: ES256 when `ed25519` is false. `None` in the (never seen) case that the
    /// hash is not a valid P-256 scalar.
    pub fn new(n: u32, ed25519: bool) -> Option<FuzzKey> {
        let seed = hash(&[b"twofactor-fuzz key", &n.to_le_bytes()]);
        let signing = if ed25519 {
            Signing::Ed25519(ed25519_dalek::SigningKey::from_bytes(&seed))
        } else {
            Signing::Es256(p256::ecdsa::SigningKey::from_slice(&seed).ok()?)
        };
        let id = hash(&[b"twofactor-fuzz credential", &n.to_le_bytes()]);
        let len = 32 + usize::from(id[0] % 32);
        let mut credential_id = id.to_vec();
        credential_id.extend_from_slice(&hash(&[&id]));
        credential_id.truncate(len);
        Some(FuzzKey {
            credential_id,
            signing,
            counter: 0,
            last: None,
        })
    }

    /// The public key as a canonical COSE_Key (CTAP order: 1, 3, -1, -2, -3).
    pub fn cose(&self) -> Vec<u8> {
        match &self.signing {
            Signing::Es256(k) => {
                let point = k.verifying_key().to_sec1_point(false);
                let sec1 = point.as_bytes();
                // map(5) 1:2 (EC2) 3:-7 (ES256) -1:1 (P-256) -2:bstr(32)
                let mut out = vec![0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21, 0x58, 0x20];
                out.extend_from_slice(sec1.get(1..33).unwrap_or_default());
                out.extend_from_slice(&[0x22, 0x58, 0x20]);
                out.extend_from_slice(sec1.get(33..65).unwrap_or_default());
                out
            }
            Signing::Ed25519(k) => {
                // map(4) 1:1 (OKP) 3:-8 (EdDSA) -1:6 (Ed25519) -2:bstr(32)
                let mut out = vec![0xa4, 0x01, 0x01, 0x03, 0x27, 0x20, 0x06, 0x21, 0x58, 0x20];
                out.extend_from_slice(k.verifying_key().as_bytes());
                out
            }
        }
    }

    /// authenticatorData of a registration: `auth_data | AAGUID (zero) | id length | id | COSE`.
    pub fn registration(&self, rp_id: &str, flags: u8, counter: u32) -> Vec<u8> {
        let mut data = auth_data(rp_id, flags | FLAG_AT, counter);
        data.extend_from_slice(&[0u8; 16]);
        let len = u16::try_from(self.credential_id.len()).unwrap_or(u16::MAX);
        data.extend_from_slice(&len.to_be_bytes());
        data.extend_from_slice(&self.credential_id);
        data.extend_from_slice(&self.cose());
        data
    }

    /// The signature over `auth_data || SHA-256(client_data)`.
    pub fn sign(&self, auth_data: &[u8], client_data: &[u8]) -> Vec<u8> {
        let message = [auth_data, &hash(&[client_data])].concat();
        match &self.signing {
            Signing::Es256(k) => {
                let s: p256::ecdsa::Signature = k.sign(&message);
                s.to_der().as_bytes().to_vec()
            }
            Signing::Ed25519(k) => {
                use ed25519_dalek::Signer as _;
                k.sign(&message).to_bytes().to_vec()
            }
        }
    }

    /// An assertion for `rp_id` over `client_data` with this counter and these flags.
    pub fn assert(&self, rp_id: &str, flags: u8, counter: u32, client_data: &[u8]) -> KeyAssertion {
        let data = auth_data(rp_id, flags, counter);
        KeyAssertion {
            credential_id: self.credential_id.clone(),
            signature: self.sign(&data, client_data),
            authenticator_data: data,
        }
    }

    /// Whether `signature` is this key's over `auth_data || SHA-256(client_data)`. Lenient
    /// where a verifier may be (a high S, a non-strict Ed25519 check): the oracle must never
    /// call valid what a careful verifier refuses, but may call valid what it refuses.
    fn signed(&self, auth_data: &[u8], client_data: &[u8], signature: &[u8]) -> bool {
        let message = [auth_data, &hash(&[client_data])].concat();
        match &self.signing {
            Signing::Es256(k) => p256::ecdsa::Signature::from_der(signature)
                .or_else(|_| p256::ecdsa::Signature::from_slice(signature))
                .is_ok_and(|s| {
                    let vk = k.verifying_key();
                    vk.verify(&message, &s).is_ok() || vk.verify(&message, &s.normalize_s()).is_ok()
                }),
            Signing::Ed25519(k) => <&[u8; 64]>::try_from(signature).is_ok_and(|raw| {
                let s = ed25519_dalek::Signature::from_bytes(raw);
                ed25519_dalek::Verifier::verify(&k.verifying_key(), &message, &s).is_ok()
            }),
        }
    }
}

/// The oracle's check of an assertion by `key` for a credential registered for `rp_id`, over
/// `client_data`, after `last` (the counter last accepted, as far as the harness knows for
/// sure): the id is the key's, the signature is the key's over this client data, the data
/// names the relying party and reports a touch, and the counter increased (or the key has no
/// counter: it and the last one are 0). `Some(counter)` when valid.
pub fn valid_assertion(
    key: &FuzzKey,
    rp_id: &str,
    client_data: &[u8],
    last: u32,
    a: &KeyAssertion,
) -> Option<u32> {
    if a.credential_id != key.credential_id
        || !key.signed(&a.authenticator_data, client_data, &a.signature)
    {
        return None;
    }
    let data = &a.authenticator_data;
    let flags = *data.get(32)?;
    let counter = u32::from_be_bytes(data.get(33..37)?.try_into().ok()?);
    let fresh = counter > last || (counter == 0 && last == 0);
    (data.get(..32)? == rp_id_hash(rp_id) && flags & FLAG_UP != 0 && fresh).then_some(counter)
}

/// What a registration's authenticatorData says: (counter, credential id, the rest: the COSE
/// key and anything after it). `None`: too short to say.
pub fn registered(data: &[u8]) -> Option<(u32, &[u8], &[u8])> {
    let counter = u32::from_be_bytes(data.get(33..37)?.try_into().ok()?);
    let len = usize::from(u16::from_be_bytes(data.get(53..55)?.try_into().ok()?));
    let id = data.get(55..55 + len)?;
    Some((counter, id, data.get(55 + len..)?))
}
