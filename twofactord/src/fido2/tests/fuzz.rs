//! A deterministic mutation loop: random changes (fixed seed) to each real assertion's bytes.
//! Nothing may panic, and no changed signed byte may be accepted.

use super::*;

/// splitmix64: tiny, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// One to three random edits: bit flips, byte sets, inserts, deletes, truncation, extension,
/// and CBOR-ish lengths (0xff, 0x5a...).
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(3) {
        let len = bytes.len();
        match rng.below(8) {
            0 | 1 if len > 0 => {
                let i = rng.below(len);
                bytes[i] ^= 1 << rng.below(8);
            }
            2 if len > 0 => {
                let i = rng.below(len);
                bytes[i] = rng.byte();
            }
            3 => {
                let i = rng.below(len + 1);
                bytes.insert(i, rng.byte());
            }
            4 if len > 0 => {
                bytes.remove(rng.below(len));
            }
            5 => bytes.truncate(rng.below(len + 1)),
            6 => {
                let n = rng.below(8);
                for _ in 0..n {
                    bytes.push(rng.byte());
                }
            }
            _ if len > 0 => {
                let i = rng.below(len);
                bytes[i] = [0xff, 0x5a, 0x5b, 0xbb, 0x9b, 0xbf, 0x00, 0x80][rng.below(8)];
            }
            _ => bytes.push(rng.byte()),
        }
    }
}

const NONE: Requirements = Requirements {
    user_presence: false,
    user_verification: false,
};

/// Signature checks are slow in debug builds; the parsers get many more rounds on their own.
const VERIFY_ROUNDS_PER_VECTOR: usize = 600;
const PARSE_ROUNDS_PER_INPUT: usize = 20_000;

#[test]
fn mutated_assertions_never_pass() {
    let mut rng = Rng(0x7466_6964_6f32); // fixed seed: failures reproduce
    let mut rejected = 0usize;
    for v in vectors().into_iter().filter(|v| v.expected_valid) {
        let original = v.parts();
        let original_key = CosePublicKey::from_cose(&original.cose_key).unwrap();
        assert!(verify_parts(&v, &original, 0, NONE).is_ok(), "{}", v.id);
        for round in 0..VERIFY_ROUNDS_PER_VECTOR {
            let mut p = original.clone();
            let part = round % 5;
            match part {
                0 => mutate(&mut rng, &mut p.auth_data),
                1 => mutate(&mut rng, &mut p.signature),
                2 => mutate(&mut rng, &mut p.cose_key),
                3 => {
                    let i = rng.below(32);
                    p.client_data_hash[i] ^= 1 << rng.below(8);
                }
                _ => mutate(&mut rng, &mut p.credential_id),
            }
            if p == original {
                continue;
            }
            match verify_parts(&v, &p, 0, NONE) {
                Err(_) => rejected += 1,
                Ok(ok) => {
                    // Only a COSE key re-encoding the same public key may still pass (e.g. an
                    // added unknown label); every other byte is signed or compared.
                    assert_eq!(part, 2, "{} accepted a mutation: {p:02x?}", v.id);
                    assert_eq!(CosePublicKey::from_cose(&p.cose_key).unwrap(), original_key);
                    assert_eq!(ok.sign_count, v.sign_count);
                }
            }
        }
    }
    assert!(rejected > 7 * VERIFY_ROUNDS_PER_VECTOR * 9 / 10);
}

#[test]
fn mutated_inputs_never_panic_the_parsers() {
    let mut rng = Rng(0x6669_646f_3270_6172);
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for v in vectors() {
        inputs.push(v.auth_data.clone());
        inputs.push(v.cose_key.clone());
        if let Some(reg) = v.registration {
            inputs.push(reg.auth_data);
            inputs.extend(reg.attestation_object);
        }
    }
    let key = TestKey::es256();
    inputs.push(auth_data(
        "pam://fuzz",
        0xc1,
        1,
        &[
            attested(b"fuzz-credential-id", &key.cose()),
            vec![0xa1, 0x01, 0x82, 0xa0, 0x40],
        ]
        .concat(),
    ));
    for input in &inputs {
        for _ in 0..PARSE_ROUNDS_PER_INPUT {
            let mut m = input.clone();
            mutate(&mut rng, &mut m);
            let _ = AuthenticatorData::parse(&m);
            let _ = CosePublicKey::from_cose(&m);
            let _ = AttestationObject::parse(&m);
            let _ = RegisteredCredential::from_authenticator_data(&m);
        }
    }
    // Plain random bytes too.
    for _ in 0..PARSE_ROUNDS_PER_INPUT {
        let len = rng.below(300);
        let m: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
        let _ = AuthenticatorData::parse(&m);
        let _ = CosePublicKey::from_cose(&m);
        let _ = AttestationObject::parse(&m);
    }
}
