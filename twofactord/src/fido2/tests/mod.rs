//! Tests of the FIDO2 verifier: the shared real-device vectors, unit tests of each refusal, and
//! a deterministic mutation loop.
#![allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

mod fuzz;
mod json;
mod unit;
mod vectors;

use super::verify::{check_credential_id, check_signed_data};
use super::*;

const VECTORS_JSON: &str = include_str!("../../../tests/data/fido2_vectors.json");

/// Stands in for the credential id of vectors that do not publish one.
const PLACEHOLDER_CREDENTIAL_ID: &[u8] = b"vector-without-published-credential-id";

pub fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

pub fn hex32(s: &str) -> [u8; 32] {
    hex(s).try_into().unwrap()
}

#[derive(Debug, Clone)]
pub struct Registration {
    pub fmt: String,
    pub attestation_object: Option<Vec<u8>>,
    pub auth_data: Vec<u8>,
}

/// One row of `fido2_vectors.json`.
#[derive(Debug, Clone)]
pub struct Vector {
    pub id: String,
    pub alg: i64,
    pub rp_id: Option<String>,
    pub rp_id_hash: [u8; 32],
    pub auth_data: Vec<u8>,
    pub client_data_json: Option<String>,
    pub client_data_hash: [u8; 32],
    pub signature: Vec<u8>,
    pub cose_key: Vec<u8>,
    pub credential_id: Option<Vec<u8>>,
    pub sign_count: u32,
    pub up: bool,
    pub uv: bool,
    pub at: bool,
    pub ed: bool,
    pub ecdsa_high_s: Option<bool>,
    pub expected_valid: bool,
    pub notes: String,
    pub registration: Option<Registration>,
}

pub fn vectors() -> Vec<Vector> {
    let doc = json::parse(VECTORS_JSON);
    doc.get("vectors")
        .arr()
        .iter()
        .map(|v| {
            let flags = v.get("flags");
            let registration = v.get("registration");
            Vector {
                id: v.get("id").str().unwrap().to_owned(),
                alg: v.get("alg").int(),
                rp_id: v.get("rp_id").str().map(str::to_owned),
                rp_id_hash: hex32(v.get("rp_id_hash_hex").str().unwrap()),
                auth_data: hex(v.get("auth_data_hex").str().unwrap()),
                client_data_json: v.get("client_data_json").str().map(str::to_owned),
                client_data_hash: hex32(v.get("client_data_hash_hex").str().unwrap()),
                signature: hex(v.get("signature_hex").str().unwrap()),
                cose_key: hex(v.get("cose_public_key_hex").str().unwrap()),
                credential_id: v.get("credential_id_hex").str().map(hex),
                sign_count: u32::try_from(v.get("sign_count").int()).unwrap(),
                up: flags.get("up").bool(),
                uv: flags.get("uv").bool(),
                at: flags.get("at").bool(),
                ed: flags.get("ed").bool(),
                ecdsa_high_s: match v.get("ecdsa_high_s") {
                    j if j.is_null() => None,
                    j => Some(j.bool()),
                },
                expected_valid: v.get("expected_valid").bool(),
                notes: v.get("notes").str().unwrap().to_owned(),
                registration: (!registration.is_null()).then(|| Registration {
                    fmt: registration.get("fmt").str().unwrap().to_owned(),
                    attestation_object: registration.get("attestation_object_hex").str().map(hex),
                    auth_data: hex(registration.get("auth_data_hex").str().unwrap()),
                }),
            }
        })
        .collect()
}

pub fn vector(id: &str) -> Vector {
    vectors().into_iter().find(|v| v.id == id).unwrap()
}

/// The byte strings of one assertion, so tests can change any of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parts {
    pub credential_id: Vec<u8>,
    pub auth_data: Vec<u8>,
    pub signature: Vec<u8>,
    pub cose_key: Vec<u8>,
    pub client_data_hash: [u8; 32],
}

impl Vector {
    pub fn stored_credential_id(&self) -> Vec<u8> {
        self.credential_id
            .clone()
            .unwrap_or_else(|| PLACEHOLDER_CREDENTIAL_ID.to_vec())
    }

    pub fn parts(&self) -> Parts {
        Parts {
            credential_id: self.stored_credential_id(),
            auth_data: self.auth_data.clone(),
            signature: self.signature.clone(),
            cose_key: self.cose_key.clone(),
            client_data_hash: self.client_data_hash,
        }
    }

    pub fn verify(
        &self,
        stored_sign_count: u32,
        req: Requirements,
    ) -> Result<VerifiedAssertion, Fido2Error> {
        verify_parts(self, &self.parts(), stored_sign_count, req)
    }
}

/// Runs `parts` through the verifier with the vector's credential stored (its id, the COSE key
/// in `parts`, its rp id). One vector publishes only its rp id's hash; it goes through the same
/// checks with that hash.
pub fn verify_parts(
    v: &Vector,
    p: &Parts,
    stored_sign_count: u32,
    req: Requirements,
) -> Result<VerifiedAssertion, Fido2Error> {
    let public_key = CosePublicKey::from_cose(&p.cose_key)?;
    let assertion = Assertion {
        credential_id: &p.credential_id,
        authenticator_data: &p.auth_data,
        signature: &p.signature,
    };
    match &v.rp_id {
        Some(rp_id) => {
            let stored = StoredCredential {
                credential_id: v.stored_credential_id(),
                public_key,
                rp_id: rp_id.clone(),
                sign_count: stored_sign_count,
            };
            verify_assertion(&stored, &assertion, rp_id, &p.client_data_hash, req)
        }
        None => {
            check_credential_id(&v.stored_credential_id(), &p.credential_id)?;
            check_signed_data(
                &public_key,
                &v.rp_id_hash,
                stored_sign_count,
                &assertion,
                &p.client_data_hash,
                req,
            )
        }
    }
}

pub const ALL_REQUIREMENTS: [Requirements; 4] = [
    Requirements {
        user_presence: false,
        user_verification: false,
    },
    Requirements {
        user_presence: true,
        user_verification: false,
    },
    Requirements {
        user_presence: false,
        user_verification: true,
    },
    Requirements {
        user_presence: true,
        user_verification: true,
    },
];

pub const UP_ONLY: Requirements = Requirements {
    user_presence: true,
    user_verification: false,
};

/// A software key with a fixed private key, to sign authenticatorData the vectors do not have.
pub enum TestKey {
    Es256(p256::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

impl TestKey {
    pub fn es256() -> Self {
        TestKey::Es256(p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).unwrap())
    }

    pub fn ed25519() -> Self {
        TestKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[0x24; 32]))
    }

    pub fn cose(&self) -> Vec<u8> {
        match self {
            TestKey::Es256(k) => {
                let point = k.verifying_key().to_sec1_point(false);
                let sec1 = point.as_bytes();
                let mut out = vec![0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21, 0x58, 0x20];
                out.extend_from_slice(&sec1[1..33]);
                out.extend_from_slice(&[0x22, 0x58, 0x20]);
                out.extend_from_slice(&sec1[33..65]);
                out
            }
            TestKey::Ed25519(k) => {
                let mut out = vec![0xa4, 0x01, 0x01, 0x03, 0x27, 0x20, 0x06, 0x21, 0x58, 0x20];
                out.extend_from_slice(k.verifying_key().as_bytes());
                out
            }
        }
    }

    pub fn sign(&self, auth_data: &[u8], client_data_hash: &[u8; 32]) -> Vec<u8> {
        use p256::ecdsa::signature::Signer;
        let message = [auth_data, client_data_hash].concat();
        match self {
            TestKey::Es256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(&message);
                sig.to_der().as_bytes().to_vec()
            }
            TestKey::Ed25519(k) => k.sign(&message).to_bytes().to_vec(),
        }
    }

    pub fn stored(&self, credential_id: &[u8], rp_id: &str, sign_count: u32) -> StoredCredential {
        StoredCredential::from_cose(
            credential_id.to_vec(),
            &self.cose(),
            rp_id.to_owned(),
            sign_count,
        )
        .unwrap()
    }
}

/// authenticatorData for an assertion: rpIdHash, flags, counter, then `tail` as is.
pub fn auth_data(rp_id: &str, flags: u8, sign_count: u32, tail: &[u8]) -> Vec<u8> {
    let mut out = rp_id_hash(rp_id).to_vec();
    out.push(flags);
    out.extend_from_slice(&sign_count.to_be_bytes());
    out.extend_from_slice(tail);
    out
}

/// Attested credential data: zero AAGUID, the id with its length, the COSE key.
pub fn attested(credential_id: &[u8], cose: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 16];
    out.extend_from_slice(&u16::try_from(credential_id.len()).unwrap().to_be_bytes());
    out.extend_from_slice(credential_id);
    out.extend_from_slice(cose);
    out
}
