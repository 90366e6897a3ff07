//! The soft key's output checked by the daemon's real verifier (`twofactord::fido2`): what it
//! makes honestly is accepted, and each knob makes the verifier refuse for the right reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: failing loudly is the point

use std::time::Duration;

use sha2::{Digest, Sha256};
use twofactor_key::{
    AssertionRequest, AssertionResponse, Authenticator, KeyError, PIN_PROMPT, RegistrationRequest,
    UserVerification,
};
use twofactor_softkey::{Algorithm, CounterMode, SoftKey};
use twofactord::fido2::{
    Assertion, Fido2Error, RegisteredCredential, Requirements, StoredCredential, rp_id_hash,
    verify_assertion, verify_registration,
};
use zeroize::Zeroizing;

const RP_ID: &str = "login.example.org";
const ES256: i32 = -7;
const EDDSA: i32 = -8;

const TOUCH: Requirements = Requirements {
    user_presence: true,
    user_verification: false,
};
const TOUCH_AND_PIN: Requirements = Requirements {
    user_presence: true,
    user_verification: true,
};

struct Fixture {
    _dir: tempfile::TempDir,
    key: SoftKey,
}

fn new_key(algorithm: Algorithm) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = SoftKey::create(dir.path().join("key.json"), algorithm).unwrap();
    Fixture { _dir: dir, key }
}

/// A PIN source that must not be asked.
fn no_prompt(prompt: &str) -> Option<Zeroizing<String>> {
    panic!("unexpected PIN prompt {prompt:?}")
}

fn registration<'a>(
    algorithms: &'a [i32],
    exclude: &'a [Vec<u8>],
    uv: UserVerification,
) -> RegistrationRequest<'a> {
    RegistrationRequest {
        rp_id: RP_ID,
        client_data: b"{\"type\":\"webauthn.create\",\"challenge\":\"enroll\"}",
        user_id: b"user-handle-1000",
        user_name: "alice",
        exclude_credential_ids: exclude,
        algorithms,
        user_verification: uv,
        timeout: Duration::from_secs(5),
    }
}

const LOGIN_CLIENT_DATA: &[u8] = b"{\"type\":\"webauthn.get\",\"challenge\":\"login-1\"}";

fn assertion_request(ids: &[Vec<u8>], uv: UserVerification) -> AssertionRequest<'_> {
    AssertionRequest {
        rp_id: RP_ID,
        client_data: LOGIN_CLIENT_DATA,
        credential_ids: ids,
        user_verification: uv,
        timeout: Duration::from_secs(5),
    }
}

/// Registers with `key` and returns the credential as the daemon stores it.
fn enroll(key: &SoftKey, algorithms: &[i32]) -> StoredCredential {
    let response = key
        .register(
            &registration(algorithms, &[], UserVerification::Discouraged),
            &mut no_prompt,
        )
        .unwrap();
    let credential = RegisteredCredential::from_authenticator_data(&response.authenticator_data)
        .expect("the verifier parses the registration");
    assert_eq!(credential.rp_id_hash, rp_id_hash(RP_ID));
    assert!(credential.flags.user_present());
    assert!(credential.flags.attested_credential_data());
    assert_eq!(credential.aaguid, key.state().unwrap().aaguid);
    StoredCredential {
        credential_id: credential.credential_id,
        public_key: credential.public_key,
        rp_id: RP_ID.to_string(),
        sign_count: credential.sign_count,
    }
}

fn login(key: &SoftKey, stored: &StoredCredential, uv: UserVerification) -> AssertionResponse {
    login_with(key, stored, uv, &mut no_prompt).unwrap()
}

fn login_with(
    key: &SoftKey,
    stored: &StoredCredential,
    uv: UserVerification,
    pin: &mut dyn FnMut(&str) -> Option<Zeroizing<String>>,
) -> Result<AssertionResponse, KeyError> {
    let ids = vec![stored.credential_id.clone()];
    key.assert(&assertion_request(&ids, uv), pin)
}

fn verify(
    stored: &StoredCredential,
    response: &AssertionResponse,
    requirements: Requirements,
) -> Result<u32, Fido2Error> {
    let client_data_hash: [u8; 32] = Sha256::digest(LOGIN_CLIENT_DATA).into();
    verify_assertion(
        stored,
        &Assertion {
            credential_id: &response.credential_id,
            authenticator_data: &response.authenticator_data,
            signature: &response.signature,
        },
        RP_ID,
        &client_data_hash,
        requirements,
    )
    .map(|v| v.sign_count)
}

/// The attestation object a browser would relay: `{fmt: "none", attStmt: {}, authData}`.
fn attestation_object(auth_data: &[u8]) -> Vec<u8> {
    let mut e = minicbor::Encoder::new(Vec::new());
    e.map(3)
        .unwrap()
        .str("fmt")
        .unwrap()
        .str("none")
        .unwrap()
        .str("attStmt")
        .unwrap()
        .map(0)
        .unwrap()
        .str("authData")
        .unwrap()
        .bytes(auth_data)
        .unwrap();
    e.into_writer()
}

#[test]
fn honest_keys_are_accepted_es256_and_ed25519() {
    for (algorithm, cose) in [(Algorithm::Es256, ES256), (Algorithm::Ed25519, EDDSA)] {
        let f = new_key(algorithm);
        let mut stored = enroll(&f.key, &[ES256, EDDSA]);
        assert_eq!(i32::try_from(stored.public_key.algorithm()).unwrap(), cose);
        for _ in 0..3 {
            let response = login(&f.key, &stored, UserVerification::Discouraged);
            assert_eq!(response.credential_id, stored.credential_id);
            let count = verify(&stored, &response, TOUCH).expect("accepted");
            assert!(count > stored.sign_count);
            stored.sign_count = count;
        }
        assert_eq!(f.key.state().unwrap().counter, stored.sign_count);
    }
}

#[test]
fn registration_passes_verify_registration() {
    let f = new_key(Algorithm::Es256);
    let response = f
        .key
        .register(
            &registration(&[ES256], &[], UserVerification::Discouraged),
            &mut no_prompt,
        )
        .unwrap();
    let object = attestation_object(&response.authenticator_data);
    let _accepted = verify_registration(&object, RP_ID, TOUCH).expect("accepted");
    assert_eq!(
        verify_registration(&object, "other.example.org", TOUCH).unwrap_err(),
        Fido2Error::RpIdMismatch
    );
    assert_eq!(
        verify_registration(&object, RP_ID, TOUCH_AND_PIN).unwrap_err(),
        Fido2Error::UserVerificationMissing
    );
}

#[test]
fn the_signature_binds_the_client_data() {
    let f = new_key(Algorithm::Ed25519);
    let stored = enroll(&f.key, &[EDDSA]);
    let response = login(&f.key, &stored, UserVerification::Discouraged);
    let other_hash: [u8; 32] = Sha256::digest(b"another challenge").into();
    let result = verify_assertion(
        &stored,
        &Assertion {
            credential_id: &response.credential_id,
            authenticator_data: &response.authenticator_data,
            signature: &response.signature,
        },
        RP_ID,
        &other_hash,
        TOUCH,
    );
    assert_eq!(result.unwrap_err(), Fido2Error::BadSignature);
}

#[test]
fn omit_up_is_refused_for_missing_presence() {
    let f = new_key(Algorithm::Es256);
    let stored = enroll(&f.key, &[ES256]);
    f.key.update(|s| s.omit_up = true).unwrap();
    let response = login(&f.key, &stored, UserVerification::Discouraged);
    assert_eq!(
        verify(&stored, &response, TOUCH).unwrap_err(),
        Fido2Error::UserPresenceMissing
    );
}

#[test]
fn user_verification_needs_the_pin_and_omit_uv_is_refused() {
    let f = new_key(Algorithm::Es256);
    let mut stored = enroll(&f.key, &[ES256]);

    // Required, but the key has no PIN.
    assert_eq!(
        login_with(&f.key, &stored, UserVerification::Required, &mut no_prompt).unwrap_err(),
        KeyError::PinNotSet
    );

    f.key.set_knob("pin", "2468").unwrap();
    let mut prompts = Vec::new();
    let response = login_with(&f.key, &stored, UserVerification::Required, &mut |prompt| {
        prompts.push(prompt.to_string());
        Some(Zeroizing::new("2468".to_string()))
    })
    .unwrap();
    assert_eq!(prompts, vec![PIN_PROMPT.to_string()]);
    let mut right_pin = |_: &str| Some(Zeroizing::new("2468".to_string()));
    stored.sign_count = verify(&stored, &response, TOUCH_AND_PIN).expect("verified");

    // Preferred asks too when the key has a PIN; discouraged never does.
    let response =
        login_with(&f.key, &stored, UserVerification::Preferred, &mut right_pin).unwrap();
    stored.sign_count = verify(&stored, &response, TOUCH_AND_PIN).expect("verified");
    let response = login(&f.key, &stored, UserVerification::Discouraged);
    assert_eq!(
        verify(&stored, &response, TOUCH_AND_PIN).unwrap_err(),
        Fido2Error::UserVerificationMissing
    );
    stored.sign_count = verify(&stored, &response, TOUCH).expect("a touch is enough");

    // The key "forgets" to set UV after a right PIN.
    f.key.update(|s| s.omit_uv = true).unwrap();
    let response = login_with(&f.key, &stored, UserVerification::Required, &mut right_pin).unwrap();
    assert_eq!(
        verify(&stored, &response, TOUCH_AND_PIN).unwrap_err(),
        Fido2Error::UserVerificationMissing
    );
}

#[test]
fn wrong_declined_and_blocked_pins() {
    let f = new_key(Algorithm::Es256);
    let stored = enroll(&f.key, &[ES256]);
    f.key.set_knob("pin", "2468").unwrap();
    let mut declined = |_: &str| None;
    assert_eq!(
        login_with(&f.key, &stored, UserVerification::Required, &mut declined).unwrap_err(),
        KeyError::PinMissing
    );
    let mut wrong = |_: &str| Some(Zeroizing::new("1111".to_string()));
    for _ in 0..7 {
        assert_eq!(
            login_with(&f.key, &stored, UserVerification::Required, &mut wrong).unwrap_err(),
            KeyError::PinInvalid
        );
    }
    assert_eq!(
        login_with(&f.key, &stored, UserVerification::Required, &mut wrong).unwrap_err(),
        KeyError::PinBlocked
    );
    let mut right = |_: &str| Some(Zeroizing::new("2468".to_string()));
    assert_eq!(
        login_with(&f.key, &stored, UserVerification::Required, &mut right).unwrap_err(),
        KeyError::PinBlocked
    );
    // Setting the PIN again unblocks it (a reset, for tests).
    f.key.set_knob("pin", "2468").unwrap();
    login_with(&f.key, &stored, UserVerification::Required, &mut right).unwrap();
}

#[test]
fn repeated_or_rolled_back_counters_are_refused() {
    for mode in [CounterMode::Repeat, CounterMode::Rollback] {
        let f = new_key(Algorithm::Es256);
        let mut stored = enroll(&f.key, &[ES256]);
        let response = login(&f.key, &stored, UserVerification::Discouraged);
        stored.sign_count = verify(&stored, &response, TOUCH).unwrap();

        f.key.update(|s| s.counter_mode = mode).unwrap();
        let response = login(&f.key, &stored, UserVerification::Discouraged);
        assert!(
            matches!(
                verify(&stored, &response, TOUCH),
                Err(Fido2Error::CounterNotIncreased { stored: 2, received }) if received <= 2
            ),
            "{mode:?}"
        );
    }
}

#[test]
fn wrong_rp_id_is_refused() {
    let f = new_key(Algorithm::Ed25519);
    let stored = enroll(&f.key, &[EDDSA]);
    f.key.update(|s| s.wrong_rp_id = true).unwrap();
    let response = login(&f.key, &stored, UserVerification::Discouraged);
    assert_eq!(
        verify(&stored, &response, TOUCH).unwrap_err(),
        Fido2Error::RpIdMismatch
    );
    // A registration made so is refused too.
    let response = f
        .key
        .register(
            &registration(&[EDDSA], &[], UserVerification::Discouraged),
            &mut no_prompt,
        )
        .unwrap();
    assert_eq!(
        verify_registration(
            &attestation_object(&response.authenticator_data),
            RP_ID,
            TOUCH
        )
        .unwrap_err(),
        Fido2Error::RpIdMismatch
    );
}

#[test]
fn another_key_is_not_enrolled_and_its_credential_is_refused() {
    let alice = new_key(Algorithm::Es256);
    let mallory = new_key(Algorithm::Es256);
    let stored = enroll(&alice.key, &[ES256]);
    // Mallory's key holds none of the allowed credentials.
    assert_eq!(
        login_with(
            &mallory.key,
            &stored,
            UserVerification::Discouraged,
            &mut no_prompt
        )
        .unwrap_err(),
        KeyError::NotEnrolled
    );
    // Its own credential, offered for Alice's, is refused.
    let own = enroll(&mallory.key, &[ES256]);
    let response = login(&mallory.key, &own, UserVerification::Discouraged);
    assert_eq!(
        verify(&stored, &response, TOUCH).unwrap_err(),
        Fido2Error::WrongCredential
    );
    // And an assertion for the right id signed by the wrong key (a forged id) is refused.
    let forged = AssertionResponse {
        credential_id: stored.credential_id.clone(),
        ..response
    };
    assert_eq!(
        verify(&stored, &forged, TOUCH).unwrap_err(),
        Fido2Error::BadSignature
    );
}

#[test]
fn the_key_picks_the_first_allowed_credential_it_holds_for_the_rp() {
    let f = new_key(Algorithm::Es256);
    let first = enroll(&f.key, &[ES256]);
    let second = enroll(&f.key, &[ES256]);
    let unknown = vec![9u8; 40];
    let ids = vec![
        unknown,
        second.credential_id.clone(),
        first.credential_id.clone(),
    ];
    let response = f
        .key
        .assert(
            &assertion_request(&ids, UserVerification::Discouraged),
            &mut no_prompt,
        )
        .unwrap();
    assert_eq!(response.credential_id, second.credential_id);
    verify(&second, &response, TOUCH).unwrap();
    // Another relying party: nothing.
    let request = AssertionRequest {
        rp_id: "other.example.org",
        ..assertion_request(&ids, UserVerification::Discouraged)
    };
    assert_eq!(
        f.key.assert(&request, &mut no_prompt).unwrap_err(),
        KeyError::NotEnrolled
    );
}

#[test]
fn registration_rules() {
    let f = new_key(Algorithm::Ed25519);
    // The key makes Ed25519 only: a request without it fails.
    assert!(matches!(
        f.key.register(
            &registration(&[ES256], &[], UserVerification::Discouraged),
            &mut no_prompt
        ),
        Err(KeyError::Device(_))
    ));
    let stored = enroll(&f.key, &[ES256, EDDSA]);
    let exclude = vec![stored.credential_id.clone()];
    assert_eq!(
        f.key
            .register(
                &registration(&[EDDSA], &exclude, UserVerification::Discouraged),
                &mut no_prompt
            )
            .unwrap_err(),
        KeyError::AlreadyEnrolled
    );
    assert_eq!(
        f.key
            .register(
                &registration(&[EDDSA], &[], UserVerification::Required),
                &mut no_prompt
            )
            .unwrap_err(),
        KeyError::PinNotSet
    );
    f.key.set_knob("pin", "1357").unwrap();
    let mut right = |_: &str| Some(Zeroizing::new("1357".to_string()));
    let response = f
        .key
        .register(
            &registration(&[EDDSA], &[], UserVerification::Required),
            &mut right,
        )
        .unwrap();
    let credential =
        RegisteredCredential::from_authenticator_data(&response.authenticator_data).unwrap();
    assert!(credential.flags.user_verified());
    let mut wrong = |_: &str| Some(Zeroizing::new("0000".to_string()));
    assert_eq!(
        f.key
            .register(
                &registration(&[EDDSA], &[], UserVerification::Preferred),
                &mut wrong
            )
            .unwrap_err(),
        KeyError::PinInvalid
    );
    assert_eq!(f.key.state().unwrap().credentials.len(), 2);
}

#[test]
fn absent_declined_and_missing_keys() {
    let f = new_key(Algorithm::Es256);
    let stored = enroll(&f.key, &[ES256]);
    assert!(f.key.present());

    f.key.update(|s| s.decline = true).unwrap();
    assert_eq!(
        login_with(
            &f.key,
            &stored,
            UserVerification::Discouraged,
            &mut no_prompt
        )
        .unwrap_err(),
        KeyError::Timeout
    );

    f.key.set_knob("present", "false").unwrap();
    assert!(!f.key.present());
    assert_eq!(
        login_with(&f.key, &stored, UserVerification::Required, &mut no_prompt).unwrap_err(),
        KeyError::NoDevice
    );

    std::fs::remove_file(f.key.path()).unwrap();
    assert!(!f.key.present());
    assert_eq!(
        login_with(
            &f.key,
            &stored,
            UserVerification::Discouraged,
            &mut no_prompt
        )
        .unwrap_err(),
        KeyError::NoDevice
    );
}

#[test]
fn two_handles_on_one_file_are_one_key() {
    let f = new_key(Algorithm::Es256);
    let other = SoftKey::open(f.key.path()).unwrap();
    let mut stored = enroll(&f.key, &[ES256]);
    // The credential made through one handle answers through the other, and the counter is
    // shared.
    for key in [&other, &f.key, &other] {
        let response = login(key, &stored, UserVerification::Discouraged);
        stored.sign_count = verify(&stored, &response, TOUCH).unwrap();
    }
    assert_eq!(stored.sign_count, 4);
}
