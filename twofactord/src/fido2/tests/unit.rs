//! One test per refusal, on the vectors and on assertions signed by fixed software keys.

use super::*;

const RP: &str = "pam://host.example";
const CRED: &[u8] = b"0123456789abcdef-credential";
const CDH: [u8; 32] = [0x5a; 32];
const UP: u8 = AuthenticatorFlags::USER_PRESENT;
const UV: u8 = AuthenticatorFlags::USER_VERIFIED;
const AT: u8 = AuthenticatorFlags::ATTESTED_CREDENTIAL_DATA;
const ED: u8 = AuthenticatorFlags::EXTENSION_DATA;
const NONE: Requirements = Requirements {
    user_presence: false,
    user_verification: false,
};
const UP_UV: Requirements = Requirements {
    user_presence: true,
    user_verification: true,
};

fn keys() -> [TestKey; 2] {
    [TestKey::es256(), TestKey::ed25519()]
}

/// Signs `auth_data` with `key` and verifies it against a credential stored with `stored_count`.
fn check(
    key: &TestKey,
    auth_data: &[u8],
    stored_count: u32,
    req: Requirements,
) -> Result<VerifiedAssertion, Fido2Error> {
    let signature = key.sign(auth_data, &CDH);
    let assertion = Assertion {
        credential_id: CRED,
        authenticator_data: auth_data,
        signature: &signature,
    };
    verify_assertion(
        &key.stored(CRED, RP, stored_count),
        &assertion,
        RP,
        &CDH,
        req,
    )
}

fn malformed<T: std::fmt::Debug>(r: Result<T, Fido2Error>) -> &'static str {
    match r {
        Err(Fido2Error::Malformed(what)) => what,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn software_keys_pass_and_report_counter_and_flags() {
    for key in keys() {
        let ad = auth_data(RP, UP | UV, 7, &[]);
        let ok = check(&key, &ad, 6, UP_UV).unwrap();
        assert_eq!(ok.sign_count, 7);
        assert!(ok.flags.user_present() && ok.flags.user_verified());
        assert_eq!(ok.flags.bits(), UP | UV);
    }
}

#[test]
fn authenticator_data_truncated_at_every_length_is_malformed() {
    let key = TestKey::es256();
    let mut samples: Vec<Vec<u8>> = vectors().into_iter().map(|v| v.auth_data).collect();
    samples.extend(
        vectors()
            .into_iter()
            .filter_map(|v| v.registration.map(|r| r.auth_data)),
    );
    samples.push(auth_data(
        RP,
        UP | AT | ED,
        1,
        &[attested(CRED, &key.cose()), vec![0xa1, 0x01, 0x02]].concat(),
    ));
    for full in samples {
        assert!(AuthenticatorData::parse(&full).is_ok());
        // A signature that verifies over the whole data, none of the truncations.
        let signature = key.sign(&full, &CDH);
        for len in 0..full.len() {
            malformed(AuthenticatorData::parse(&full[..len]));
            // And the verifier refuses it the same way, before looking at the signature.
            let assertion = Assertion {
                credential_id: CRED,
                authenticator_data: &full[..len],
                signature: &signature,
            };
            malformed(verify_assertion(
                &key.stored(CRED, RP, 0),
                &assertion,
                RP,
                &CDH,
                NONE,
            ));
        }
    }
}

#[test]
fn credential_id_length_is_bounded() {
    let key = TestKey::es256();
    let cose = key.cose();
    // credIdLen 0xffff, 1024 and 0 are refused before anything is read.
    for (len, what) in [
        (0xffffu16, "credential id longer than 1023 bytes"),
        (1024, "credential id longer than 1023 bytes"),
        (0, "credential id is empty"),
    ] {
        let mut tail = vec![0u8; 16];
        tail.extend_from_slice(&len.to_be_bytes());
        tail.extend_from_slice(&[0xcc; 64]);
        tail.extend_from_slice(&cose);
        assert_eq!(
            malformed(AuthenticatorData::parse(&auth_data(RP, UP | AT, 0, &tail))),
            what
        );
    }
    // A length larger than what follows is a truncation.
    let mut tail = vec![0u8; 16];
    tail.extend_from_slice(&900u16.to_be_bytes());
    tail.extend_from_slice(&cose);
    malformed(AuthenticatorData::parse(&auth_data(RP, UP | AT, 0, &tail)));
    // 1023 bytes is the largest accepted.
    let id = vec![0xcc; 1023];
    let ad = auth_data(RP, UP | AT, 0, &attested(&id, &cose));
    let parsed = AuthenticatorData::parse(&ad).unwrap();
    let cred = parsed.attested_credential_data.unwrap();
    assert_eq!(cred.credential_id, id.as_slice());
    assert_eq!(cred.public_key_cose, cose.as_slice());
}

#[test]
fn oversized_inputs_are_refused() {
    let key = TestKey::es256();
    // authenticatorData over 4096 bytes.
    let big = auth_data(RP, UP | ED, 0, &vec![0u8; 4096]);
    assert_eq!(
        malformed(AuthenticatorData::parse(&big)),
        "authenticator data longer than 4096 bytes"
    );
    // A COSE key over 1024 bytes (an unknown label with a long byte string).
    let mut cose = key.cose();
    cose[0] = 0xa6;
    cose.extend_from_slice(&[0x04, 0x59, 0x04, 0x00]);
    cose.extend_from_slice(&[0u8; 1024]);
    assert_eq!(
        malformed(CosePublicKey::from_cose(&cose)),
        "COSE key longer than 1024 bytes"
    );
    let ad = auth_data(RP, UP | AT, 0, &attested(CRED, &cose));
    assert_eq!(
        malformed(AuthenticatorData::parse(&ad)),
        "COSE key longer than 1024 bytes"
    );
    // The same key with a short unknown value is accepted: unknown labels are skipped.
    let mut cose = key.cose();
    cose[0] = 0xa6;
    cose.extend_from_slice(&[0x04, 0x42, 0x00, 0x00]);
    assert_eq!(
        CosePublicKey::from_cose(&cose).unwrap(),
        CosePublicKey::from_cose(&key.cose()).unwrap()
    );
    // Assertion credential ids over 1023 bytes, and empty ones.
    let ad = auth_data(RP, UP, 1, &[]);
    let signature = key.sign(&ad, &CDH);
    for id in [vec![0u8; 1024], vec![0u8; 70_000], vec![]] {
        let assertion = Assertion {
            credential_id: &id,
            authenticator_data: &ad,
            signature: &signature,
        };
        malformed(verify_assertion(
            &key.stored(CRED, RP, 0),
            &assertion,
            RP,
            &CDH,
            NONE,
        ));
    }
    // An attestation object over 16 KiB.
    malformed(AttestationObject::parse(&vec![0u8; 16 * 1024 + 1]));
    // Signatures longer than the algorithm allows.
    let es = CosePublicKey::from_cose(&TestKey::es256().cose()).unwrap();
    let ed = CosePublicKey::from_cose(&TestKey::ed25519().cose()).unwrap();
    malformed(es.verify(&ad, &CDH, &[0x30; 73]));
    malformed(ed.verify(&ad, &CDH, &[0; 65]));
    malformed(ed.verify(&ad, &CDH, &[0; 63]));
    malformed(es.verify(&ad, &CDH, &[]));
}

#[test]
fn trailing_bytes_are_refused() {
    let key = TestKey::es256();
    for v in vectors() {
        let mut ad = v.auth_data.clone();
        ad.push(0);
        assert_eq!(
            malformed(AuthenticatorData::parse(&ad)),
            "trailing bytes after the authenticator data"
        );
        let mut cose = v.cose_key.clone();
        cose.push(0);
        assert_eq!(
            malformed(CosePublicKey::from_cose(&cose)),
            "trailing bytes after the COSE key"
        );
        // And through the verifier, with a valid signature over the longer data.
        let signature = key.sign(&ad, &CDH);
        let assertion = Assertion {
            credential_id: CRED,
            authenticator_data: &ad,
            signature: &signature,
        };
        malformed(verify_assertion(
            &key.stored(CRED, &v.rp_id.clone().unwrap_or_default(), 0),
            &assertion,
            &v.rp_id.clone().unwrap_or_default(),
            &CDH,
            NONE,
        ));
    }
    // After the attested credential data when ED is not set, and after the extensions.
    let with_cred = auth_data(
        RP,
        UP | AT,
        0,
        &[attested(CRED, &key.cose()), vec![0x00]].concat(),
    );
    malformed(AuthenticatorData::parse(&with_cred));
    let with_ext = auth_data(RP, UP | ED, 0, &[0xa1, 0x01, 0x02, 0x00]);
    malformed(AuthenticatorData::parse(&with_ext));
    // After an attestation object.
    let v = vector("webauthn-rs/test_subdomain_origin/es256");
    let mut att = v.registration.unwrap().attestation_object.unwrap();
    att.push(0);
    assert_eq!(
        malformed(AttestationObject::parse(&att)),
        "trailing bytes after the attestation object"
    );
}

#[test]
fn flags_must_match_the_parts_present() {
    let key = TestKey::es256();
    // AT without credential data, ED without extensions.
    malformed(AuthenticatorData::parse(&auth_data(RP, UP | AT, 0, &[])));
    malformed(AuthenticatorData::parse(&auth_data(RP, UP | ED, 0, &[])));
    // Credential data or extensions without their flag are trailing bytes.
    malformed(AuthenticatorData::parse(&auth_data(
        RP,
        UP,
        0,
        &attested(CRED, &key.cose()),
    )));
    malformed(AuthenticatorData::parse(&auth_data(RP, UP, 0, &[0xa0])));
    // Backed up but not backup eligible.
    malformed(AuthenticatorData::parse(&auth_data(
        RP,
        UP | AuthenticatorFlags::BACKED_UP,
        0,
        &[],
    )));
    let both = AuthenticatorFlags::BACKED_UP | AuthenticatorFlags::BACKUP_ELIGIBLE;
    let flags = AuthenticatorData::parse(&auth_data(RP, UP | both, 0, &[]))
        .unwrap()
        .flags;
    assert!(flags.backup_eligible() && flags.backed_up());
    // Extensions and credential data together, in that order.
    let ext = [
        0xa2, 0x6b, b'c', b'r', b'e', b'd', b'P', b'r', b'o', b't', b'e', b'c', b't', 0x02, 0x61,
        b'x', 0x82, 0x01, 0xa0,
    ];
    let ad = auth_data(
        RP,
        UP | AT | ED,
        3,
        &[attested(CRED, &key.cose()), ext.to_vec()].concat(),
    );
    let parsed = AuthenticatorData::parse(&ad).unwrap();
    assert_eq!(parsed.extensions, Some(&ext[..]));
    assert_eq!(parsed.attested_credential_data.unwrap().credential_id, CRED);
    // A signed assertion with extensions verifies.
    let ad = auth_data(RP, UP | ED, 3, &ext);
    assert_eq!(check(&key, &ad, 0, UP_ONLY).unwrap().sign_count, 3);
}

#[test]
fn bad_cbor_is_malformed_and_allocates_nothing() {
    let ok = TestKey::es256().cose();
    let mut cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff],
        vec![0x80],                   // an array, not a map
        vec![0xbf, 0x01, 0x02, 0xff], // indefinite-length map
        vec![0xa1, 0x01],             // value missing
        vec![0xa1, 0x61, b'x', 0x01], // text label
        vec![
            0xa1, 0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ], // label below i64
        vec![0xbb, 0, 0, 0, 1, 0, 0, 0, 0], // map claiming 2^32 entries
        vec![0xb1],                   // 17 entries
        vec![0xa1, 0x21, 0x5a, 0xff, 0xff, 0xff, 0xff, 0x00], // x claims a 4 GB byte string
        vec![
            0xa1, 0x21, 0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ], // 2^64 - 1
        vec![
            0xa1, 0x04, 0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ], // array of 2^64 - 1
        vec![0xa1, 0x04, 0x5f, 0x41, 0x00, 0xff], // indefinite byte string in an ignored value
        vec![0xa2, 0x01, 0x02, 0x01, 0x02], // duplicate label
    ];
    // Deep nesting in an ignored value.
    let mut deep = vec![0xa1, 0x04];
    deep.extend(std::iter::repeat_n(0x81, 5000));
    deep.push(0x00);
    cases.push(deep);
    // Wrong types in the known labels.
    for (at, byte) in [(2, 0x61), (4, 0x40), (6, 0xf5), (8, 0x18)] {
        let mut c = ok.clone();
        c[at] = byte;
        cases.push(c);
    }
    for case in &cases {
        assert!(
            matches!(
                CosePublicKey::from_cose(case),
                Err(Fido2Error::Malformed(_))
            ),
            "{case:02x?}: {:?}",
            CosePublicKey::from_cose(case)
        );
        // The same bytes where authenticatorData expects a COSE key.
        let ad = auth_data(RP, UP | AT, 0, &attested(CRED, case));
        malformed(AuthenticatorData::parse(&ad));
    }
    // Extensions: not a map, truncated, huge claimed lengths, indefinite, too deep.
    let mut deep_ext = vec![0xa1, 0x01];
    deep_ext.extend(std::iter::repeat_n(0xa1, 50));
    for ext in [
        vec![0x01],
        vec![0x80],
        vec![0xa1, 0x01],
        vec![0xa1, 0x01, 0x5a, 0xff, 0xff, 0xff, 0xff],
        vec![0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        vec![0xbf, 0xff],
        vec![0xa1, 0x01, 0x81, 0x81, 0x81, 0x81, 0x81, 0x00],
        deep_ext,
        vec![0xa1, 0x01, 0xff],
        vec![0xa1, 0x01, 0x1c], // reserved additional info
    ] {
        malformed(AuthenticatorData::parse(&auth_data(RP, UP | ED, 0, &ext)));
    }
    // Attestation objects.
    let reg = vector("webauthn-rs/test_subdomain_origin/es256")
        .registration
        .unwrap();
    let att = reg.attestation_object.unwrap();
    for bad in [
        vec![],
        vec![0xa0],                    // empty map: fields missing
        vec![0xa1, 0x01, 0x02],        // integer key
        vec![0xbf, 0xff],              // indefinite
        att[..att.len() - 1].to_vec(), // truncated
        [
            &[0xa4][..],
            &att[1..],
            &[0x63, b'f', b'm', b't', 0x61, b'x'][..],
        ]
        .concat(), // fmt twice
        vec![0xa1, 0x63, b'f', b'm', b't', 0x7a, 0xff, 0xff, 0xff, 0xff], // fmt claims 4 GB
        vec![0xa1, 0x63, b'f', b'm', b't', 0x60], // empty fmt
        vec![0xa1, 0x63, b'f', b'm', b't', 0x62, b'a', b' '], // not printable
        vec![0xa1, 0x67, b'a', b't', b't', b'S', b't', b'm', b't', 0x80], // attStmt not a map
    ] {
        malformed(AttestationObject::parse(&bad));
    }
    // fmt none, empty attStmt, the real authData: parses.
    let mut none = vec![0xa3, 0x63, b'f', b'm', b't', 0x64, b'n', b'o', b'n', b'e'];
    none.extend_from_slice(&[0x67, b'a', b't', b't', b'S', b't', b'm', b't', 0xa0]);
    none.extend_from_slice(&[
        0x68,
        b'a',
        b'u',
        b't',
        b'h',
        b'D',
        b'a',
        b't',
        b'a',
        0x58,
        reg.auth_data.len() as u8,
    ]);
    none.extend_from_slice(&reg.auth_data);
    let object = AttestationObject::parse(&none).unwrap();
    assert_eq!(
        (object.fmt, object.att_stmt, object.auth_data),
        ("none", &[0xa0][..], reg.auth_data.as_slice())
    );
}

/// `es` (an ES256 COSE key) with an x coordinate of `len` bytes.
fn es_with_x(es: &[u8], len: u8) -> Vec<u8> {
    let mut c = es[..8].to_vec();
    c.extend_from_slice(&[0x58, len]);
    c.extend(std::iter::repeat_n(0x11, usize::from(len)));
    c.extend_from_slice(&es[42..]);
    c
}

#[test]
fn unknown_algorithms_are_named() {
    // RS256 (kty RSA), ES384, ES512, PS256, a made-up one: refused with their id.
    for (alg, cbor_alg) in [
        (-257, vec![0x39, 0x01, 0x00]),
        (-35, vec![0x38, 0x22]),
        (-36, vec![0x38, 0x23]),
        (-37, vec![0x38, 0x24]),
        (-47, vec![0x38, 0x2e]),
        (42, vec![0x18, 0x2a]),
    ] {
        let mut cose = vec![0xa4, 0x01, 0x02, 0x03];
        cose.extend_from_slice(&cbor_alg);
        cose.extend_from_slice(&[0x20, 0x01, 0x21, 0x41, 0x00]);
        assert_eq!(
            CosePublicKey::from_cose(&cose),
            Err(Fido2Error::UnsupportedAlgorithm(alg))
        );
        let ad = auth_data(RP, UP | AT, 0, &attested(CRED, &cose));
        assert_eq!(
            AuthenticatorData::parse(&ad),
            Err(Fido2Error::UnsupportedAlgorithm(alg))
        );
    }
    let es = TestKey::es256().cose();
    let ed = TestKey::ed25519().cose();
    let edit = |base: &[u8], at: usize, byte: u8| {
        let mut c = base.to_vec();
        c[at] = byte;
        c
    };
    for (cose, what) in [
        (edit(&es, 2, 0x01), "ES256 key is not of key type EC2 (2)"),
        (edit(&es, 6, 0x02), "ES256 key is not on curve P-256 (1)"),
        (edit(&ed, 2, 0x02), "EdDSA key is not of key type OKP (1)"),
        (edit(&ed, 6, 0x07), "EdDSA key is not on curve Ed25519 (6)"),
        (edit(&es, 3, 0x04), "COSE key names no algorithm (alg)"), // label 3 → 4
        (es_with_x(&es, 31), "ES256 key x coordinate is not 32 bytes"),
        (es_with_x(&es, 33), "ES256 key x coordinate is not 32 bytes"),
        (
            [&[0xa4][..], &es[1..es.len() - 35]].concat(),
            "ES256 key y coordinate is not 32 bytes",
        ),
        (
            edit(&es, 12, es[12] ^ 0x01),
            "ES256 key is not a point on P-256",
        ),
        (
            [&[0xa5][..], &ed[1..], &[0x22, 0x41, 0x00][..]].concat(),
            "Ed25519 key has a y coordinate",
        ),
    ] {
        assert_eq!(malformed(CosePublicKey::from_cose(&cose)), what);
    }
    // Small-order Ed25519 keys (the identity point) are refused.
    let mut weak = ed[..10].to_vec();
    let mut identity = [0u8; 32];
    identity[0] = 1;
    weak.extend_from_slice(&identity);
    assert_eq!(
        malformed(CosePublicKey::from_cose(&weak)),
        "Ed25519 key has small order"
    );
}

#[test]
fn counter_rollback_and_equal_counter_mean_a_possible_clone() {
    for key in keys() {
        let ad = auth_data(RP, UP, 10, &[]);
        assert_eq!(check(&key, &ad, 9, UP_ONLY).unwrap().sign_count, 10);
        for stored in [10, 11, u32::MAX] {
            let err = check(&key, &ad, stored, UP_ONLY).unwrap_err();
            assert_eq!(
                err,
                Fido2Error::CounterNotIncreased {
                    stored,
                    received: 10
                }
            );
            assert!(err.to_string().contains("possible cloned key"));
        }
        // A key that stops counting after it counted.
        let zero = auth_data(RP, UP, 0, &[]);
        assert_eq!(
            check(&key, &zero, 5, UP_ONLY),
            Err(Fido2Error::CounterNotIncreased {
                stored: 5,
                received: 0
            })
        );
        // Keys without a counter: both 0 is fine; starting to count is fine.
        assert_eq!(check(&key, &zero, 0, UP_ONLY).unwrap().sign_count, 0);
        assert_eq!(
            check(&key, &auth_data(RP, UP, 1, &[]), 0, UP_ONLY)
                .unwrap()
                .sign_count,
            1
        );
        let max = auth_data(RP, UP, u32::MAX, &[]);
        assert!(check(&key, &max, u32::MAX - 1, UP_ONLY).is_ok());
    }
}

#[test]
fn rp_id_mismatch_is_refused() {
    for key in keys() {
        // The key signed for another relying party.
        let ad = auth_data("evil.example", UP, 1, &[]);
        assert_eq!(check(&key, &ad, 0, UP_ONLY), Err(Fido2Error::RpIdMismatch));
        // The policy's rp id is not the one the credential was registered for.
        let ad = auth_data(RP, UP, 1, &[]);
        let signature = key.sign(&ad, &CDH);
        let assertion = Assertion {
            credential_id: CRED,
            authenticator_data: &ad,
            signature: &signature,
        };
        assert_eq!(
            verify_assertion(
                &key.stored(CRED, RP, 0),
                &assertion,
                "pam://other-host",
                &CDH,
                UP_ONLY
            ),
            Err(Fido2Error::RpIdMismatch)
        );
    }
    // A real vector checked against another stored rp id.
    let v = vector("webauthn-rs/test_authentication/es256");
    let stored = StoredCredential::from_cose(
        v.stored_credential_id(),
        &v.cose_key,
        "example.org".into(),
        0,
    )
    .unwrap();
    let p = v.parts();
    let assertion = Assertion {
        credential_id: &p.credential_id,
        authenticator_data: &p.auth_data,
        signature: &p.signature,
    };
    assert_eq!(
        verify_assertion(
            &stored,
            &assertion,
            "example.org",
            &p.client_data_hash,
            UP_ONLY
        ),
        Err(Fido2Error::RpIdMismatch)
    );
}

#[test]
fn user_verification_required_but_missing() {
    for key in keys() {
        let ad = auth_data(RP, UP, 1, &[]);
        assert_eq!(
            check(&key, &ad, 0, UP_UV),
            Err(Fido2Error::UserVerificationMissing)
        );
        assert!(check(&key, &ad, 0, UP_ONLY).is_ok());
        let ad = auth_data(RP, UV, 1, &[]);
        assert_eq!(
            check(&key, &ad, 0, UP_UV),
            Err(Fido2Error::UserPresenceMissing)
        );
        let ad = auth_data(RP, 0, 1, &[]);
        assert!(check(&key, &ad, 0, NONE).is_ok());
    }
    for v in vectors()
        .into_iter()
        .filter(|v| v.expected_valid && v.up && !v.uv)
    {
        assert_eq!(
            v.verify(0, UP_UV),
            Err(Fido2Error::UserVerificationMissing),
            "{}",
            v.id
        );
    }
}

#[test]
fn wrong_credential_id_is_refused() {
    for v in vectors() {
        let mut p = v.parts();
        p.credential_id[0] ^= 0x01;
        assert_eq!(
            verify_parts(&v, &p, 0, NONE),
            Err(Fido2Error::WrongCredential),
            "{}",
            v.id
        );
        p.credential_id = v.stored_credential_id();
        p.credential_id.push(0);
        assert_eq!(
            verify_parts(&v, &p, 0, NONE),
            Err(Fido2Error::WrongCredential),
            "{}",
            v.id
        );
    }
    // The right id with another key's signature: bad signature.
    let ad = auth_data(RP, UP, 1, &[]);
    let signature = TestKey::es256().sign(&ad, &CDH);
    let other = TestKey::Es256(p256::ecdsa::SigningKey::from_slice(&[0x43; 32]).unwrap());
    let assertion = Assertion {
        credential_id: CRED,
        authenticator_data: &ad,
        signature: &signature,
    };
    assert_eq!(
        verify_assertion(&other.stored(CRED, RP, 0), &assertion, RP, &CDH, UP_ONLY),
        Err(Fido2Error::BadSignature)
    );
}

#[test]
fn signatures_bind_the_client_data_hash_and_the_algorithm() {
    for key in keys() {
        let ad = auth_data(RP, UP, 1, &[]);
        let signature = key.sign(&ad, &CDH);
        let stored = key.stored(CRED, RP, 0);
        let assertion = Assertion {
            credential_id: CRED,
            authenticator_data: &ad,
            signature: &signature,
        };
        assert!(verify_assertion(&stored, &assertion, RP, &CDH, UP_ONLY).is_ok());
        let mut other = CDH;
        other[31] ^= 0x80;
        assert_eq!(
            verify_assertion(&stored, &assertion, RP, &other, UP_ONLY),
            Err(Fido2Error::BadSignature)
        );
    }
    // An Ed25519 signature against an ES256 key is not DER; an ES256 one against Ed25519 is
    // not 64 bytes (or fails).
    let ad = auth_data(RP, UP, 1, &[]);
    let es = TestKey::es256();
    let ed = TestKey::ed25519();
    let es_key = CosePublicKey::from_cose(&es.cose()).unwrap();
    let ed_key = CosePublicKey::from_cose(&ed.cose()).unwrap();
    assert!(es_key.verify(&ad, &CDH, &ed.sign(&ad, &CDH)).is_err());
    assert!(ed_key.verify(&ad, &CDH, &es.sign(&ad, &CDH)).is_err());
    // A raw 64-byte (r || s) ES256 signature is not what CTAP sends: refused.
    let der = p256::ecdsa::Signature::from_der(&es.sign(&ad, &CDH)).unwrap();
    malformed(es_key.verify(&ad, &CDH, &der.to_bytes()));
}

#[test]
fn registration_checks() {
    let key = TestKey::ed25519();
    let reg_ad = auth_data(RP, UP | AT, 0, &attested(CRED, &key.cose()));
    let cred = RegisteredCredential::from_authenticator_data(&reg_ad).unwrap();
    assert_eq!(cred.credential_id, CRED);
    assert_eq!(cred.public_key_cose, key.cose());
    assert_eq!(cred.public_key.algorithm(), COSE_ALG_EDDSA);
    assert_eq!(cred.sign_count, 0);
    // No attested credential data: nothing to register.
    malformed(RegisteredCredential::from_authenticator_data(&auth_data(
        RP,
        UP,
        0,
        &[],
    )));
}

#[test]
fn error_messages_name_the_failure() {
    let all = [
        Fido2Error::Malformed("credential id is empty"),
        Fido2Error::WrongCredential,
        Fido2Error::RpIdMismatch,
        Fido2Error::UserPresenceMissing,
        Fido2Error::UserVerificationMissing,
        Fido2Error::BadSignature,
        Fido2Error::CounterNotIncreased {
            stored: 5,
            received: 3,
        },
        Fido2Error::UnsupportedAlgorithm(-257),
    ];
    let texts: Vec<String> = all.iter().map(ToString::to_string).collect();
    for (i, t) in texts.iter().enumerate() {
        assert!(!t.is_empty());
        assert!(texts.iter().skip(i + 1).all(|u| u != t));
    }
    assert!(texts[0].contains("credential id is empty"));
    assert!(texts[6].contains("stored 5, received 3") && texts[6].contains("possible cloned key"));
    assert!(texts[7].contains("-257"));
}
