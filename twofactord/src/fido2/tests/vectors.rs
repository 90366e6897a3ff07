//! Every row of `fido2_vectors.json` through the verifier, under every combination of
//! requirements: real-device assertions are accepted or refused exactly for the policy reason
//! their flags imply; tampered copies are refused as bad signatures.

use sha2::{Digest, Sha256};

use super::*;

/// What the verifier must say about a vector under `req` with a stored counter of 0.
fn expected(v: &Vector, req: Requirements) -> Result<VerifiedAssertion, Fido2Error> {
    if !v.expected_valid {
        // The signature is checked before the flags, so a tampered copy fails there whatever
        // its flags say.
        return Err(Fido2Error::BadSignature);
    }
    if req.user_presence && !v.up {
        return Err(Fido2Error::UserPresenceMissing);
    }
    if req.user_verification && !v.uv {
        return Err(Fido2Error::UserVerificationMissing);
    }
    let flags = AuthenticatorData::parse(&v.auth_data).unwrap().flags;
    Ok(VerifiedAssertion {
        sign_count: v.sign_count,
        flags,
    })
}

#[test]
fn the_file_has_the_rows_the_issue_names() {
    let all = vectors();
    assert_eq!(all.iter().filter(|v| v.expected_valid).count(), 7);
    assert_eq!(all.iter().filter(|v| !v.expected_valid).count(), 3);
    for v in all.iter().filter(|v| !v.expected_valid) {
        assert!(v.notes.starts_with("TAMPERED"), "{}", v.id);
    }
}

#[test]
fn every_vector_gets_the_verdict_its_flags_and_signature_imply() {
    for v in vectors() {
        for req in ALL_REQUIREMENTS {
            let got = v.verify(0, req);
            assert_eq!(got, expected(&v, req), "{} with {req:?}", v.id);
        }
        eprintln!(
            "{:<75} up={} uv={} valid={} -> {:?}",
            v.id,
            v.up,
            v.uv,
            v.expected_valid,
            ALL_REQUIREMENTS.map(|r| v.verify(0, r).map(|ok| ok.sign_count))
        );
    }
}

#[test]
fn real_assertions_pass_under_the_login_policy_unless_up_is_missing() {
    // The login policy requires a touch; only the libfido2 row (flags 0x00) lacks one.
    for v in vectors().into_iter().filter(|v| v.expected_valid) {
        let got = v.verify(0, UP_ONLY);
        if v.up {
            assert!(got.is_ok(), "{}: {got:?}", v.id);
        } else {
            assert_eq!(got, Err(Fido2Error::UserPresenceMissing), "{}", v.id);
        }
    }
}

#[test]
fn tampered_copies_fail_their_signature() {
    let tampered: Vec<_> = vectors()
        .into_iter()
        .filter(|v| !v.expected_valid)
        .collect();
    for v in &tampered {
        for req in ALL_REQUIREMENTS {
            assert_eq!(v.verify(0, req), Err(Fido2Error::BadSignature), "{}", v.id);
        }
        // Each differs from its original row in exactly what its note says.
        let original = vector(
            v.id.strip_prefix("TAMPERED/")
                .unwrap()
                .rsplit_once('/')
                .unwrap()
                .0,
        );
        assert!(original.expected_valid);
        assert_eq!(v.signature, original.signature, "{}", v.id);
        assert_eq!(v.cose_key, original.cose_key, "{}", v.id);
        if v.notes.contains("signCount") {
            assert_ne!(v.auth_data, original.auth_data);
            assert_eq!(v.client_data_hash, original.client_data_hash);
            assert_eq!(v.sign_count + 1, original.sign_count);
        } else if v.notes.contains("clientDataHash") {
            assert_eq!(v.auth_data, original.auth_data);
            assert_ne!(v.client_data_hash, original.client_data_hash);
        } else if v.notes.contains("UV flag") {
            assert_eq!(v.auth_data[32] & !0x04, original.auth_data[32]);
            assert!(v.uv && !original.uv);
            // Even a policy that requires UV sees a bad signature, not a verified user.
            let req = Requirements {
                user_presence: true,
                user_verification: true,
            };
            assert_eq!(v.verify(0, req), Err(Fido2Error::BadSignature));
        } else {
            panic!("{}: unexpected tampering note {:?}", v.id, v.notes);
        }
    }
    assert_eq!(tampered.len(), 3);
}

#[test]
fn vector_fields_agree_with_the_parsed_bytes() {
    for v in vectors() {
        let key = CosePublicKey::from_cose(&v.cose_key).unwrap();
        assert_eq!(key.algorithm(), v.alg, "{}", v.id);

        let ad = AuthenticatorData::parse(&v.auth_data).unwrap();
        assert_eq!(ad.rp_id_hash, v.rp_id_hash, "{}", v.id);
        assert_eq!(ad.sign_count, v.sign_count, "{}", v.id);
        assert_eq!(ad.flags.user_present(), v.up, "{}", v.id);
        assert_eq!(ad.flags.user_verified(), v.uv, "{}", v.id);
        assert_eq!(ad.flags.attested_credential_data(), v.at, "{}", v.id);
        assert_eq!(ad.flags.extension_data(), v.ed, "{}", v.id);
        assert!(ad.attested_credential_data.is_none() && ad.extensions.is_none());

        if let Some(rp_id) = &v.rp_id {
            assert_eq!(rp_id_hash(rp_id), v.rp_id_hash, "{}", v.id);
        }
        // Where the client data is published, its hash is what the daemon would compute.
        if let Some(cd) = &v.client_data_json {
            let h: [u8; 32] = Sha256::digest(cd.as_bytes()).into();
            if v.notes.contains("clientDataHash") {
                assert_ne!(h, v.client_data_hash, "{}", v.id);
            } else {
                assert_eq!(h, v.client_data_hash, "{}", v.id);
            }
        }
    }
}

#[test]
fn high_s_and_low_s_forms_of_every_es256_signature_verify() {
    let mut high_seen = 0;
    for v in vectors()
        .into_iter()
        .filter(|v| v.expected_valid && v.alg == COSE_ALG_ES256)
    {
        let sig = p256::ecdsa::Signature::from_der(&v.signature).unwrap();
        let low = sig.normalize_s();
        let is_high = low != sig;
        assert_eq!(Some(is_high), v.ecdsa_high_s, "{}", v.id);
        high_seen += usize::from(is_high);

        // Both (r, s) and (r, n - s) verify; the vector's own form was checked above.
        let high = p256::ecdsa::Signature::from_scalars(low.r().to_bytes(), (-*low.s()).to_bytes())
            .unwrap();
        for form in [low, high] {
            let mut p = v.parts();
            p.signature = form.to_der().as_bytes().to_vec();
            let req = Requirements {
                user_presence: false,
                user_verification: false,
            };
            assert!(verify_parts(&v, &p, 0, req).is_ok(), "{}", v.id);
        }
    }
    assert!(high_seen >= 4, "the vectors exercise high-S signatures");
}

#[test]
fn counters_follow_the_either_nonzero_rule() {
    for v in vectors().into_iter().filter(|v| v.expected_valid) {
        let req = Requirements {
            user_presence: false,
            user_verification: false,
        };
        let n = v.sign_count;
        assert!(n > 0, "every vector has a counter");
        assert_eq!(
            v.verify(n - 1, req).map(|ok| ok.sign_count),
            Ok(n),
            "{}",
            v.id
        );
        for stored in [n, n + 1, u32::MAX] {
            assert_eq!(
                v.verify(stored, req),
                Err(Fido2Error::CounterNotIncreased {
                    stored,
                    received: n
                }),
                "{}",
                v.id
            );
        }
    }
}

#[test]
fn registrations_carry_the_credential_their_assertions_use() {
    let mut checked = 0;
    for v in vectors().into_iter().filter(|v| v.expected_valid) {
        let Some(reg) = &v.registration else { continue };
        let cred = RegisteredCredential::from_authenticator_data(&reg.auth_data).unwrap();
        assert_eq!(
            Some(&cred.credential_id),
            v.credential_id.as_ref(),
            "{}",
            v.id
        );
        assert_eq!(cred.public_key_cose, v.cose_key, "{}", v.id);
        assert_eq!(
            cred.public_key,
            CosePublicKey::from_cose(&v.cose_key).unwrap()
        );
        assert_eq!(cred.rp_id_hash, v.rp_id_hash, "{}", v.id);
        assert!(cred.flags.attested_credential_data() && cred.flags.user_present());
        assert!(cred.sign_count < v.sign_count, "{}", v.id);

        // The registration's counter is the first stored value; the assertion follows it.
        let req = UP_ONLY;
        assert_eq!(
            v.verify(cred.sign_count, req).map(|ok| ok.sign_count),
            Ok(v.sign_count),
            "{}",
            v.id
        );

        if let Some(att) = &reg.attestation_object {
            let object = AttestationObject::parse(att).unwrap();
            assert_eq!(object.fmt, reg.fmt, "{}", v.id);
            assert_eq!(object.auth_data, reg.auth_data.as_slice(), "{}", v.id);
            assert!(object.att_stmt.len() > 100, "fido-u2f carries sig and x5c");
            let rp_id = v.rp_id.as_deref().unwrap();
            assert_eq!(verify_registration(att, rp_id, req).unwrap(), cred);
            assert_eq!(
                verify_registration(att, "other.example", req),
                Err(Fido2Error::RpIdMismatch)
            );
            let uv = Requirements {
                user_presence: true,
                user_verification: true,
            };
            assert_eq!(
                verify_registration(att, rp_id, uv),
                Err(Fido2Error::UserVerificationMissing)
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 2);
}
