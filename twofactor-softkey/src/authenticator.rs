//! The soft key as an [`Authenticator`]: real keys, real authenticatorData, real signatures.
//!
//! authenticatorData is `SHA-256(rp_id) | flags | counter (4, BE)`, for a registration followed
//! by `AAGUID (16) | credential id length (2, BE) | credential id | COSE key`. The signature
//! covers `authenticatorData || SHA-256(client_data)`: ES256 (DER) or Ed25519.
//!
//! The steps follow what a client of a real key sees through `HidAuthenticator`: the PIN is
//! asked first (a client collects it before sending the command), then the key checks the
//! algorithm, waits for the touch (`decline`: never comes), and only then reports an excluded
//! or unknown credential, as CTAP 2.1 keys do so that a credential's presence cannot be probed
//! without a touch.

use minicbor::Encoder;
use p256::ecdsa::signature::Signer as _;
use sha2::{Digest as _, Sha256};
use twofactor_key::{
    AssertionRequest, AssertionResponse, Authenticator, KeyError, PIN_PROMPT, PinSource,
    RegistrationRequest, RegistrationResponse, UserVerification,
};
use zeroize::Zeroizing;

use crate::SoftKey;
use crate::state::{Algorithm, CounterMode, PIN_RETRIES, SoftCredential, SoftKeyState};

const FLAG_UP: u8 = 0x01;
const FLAG_UV: u8 = 0x04;
const FLAG_AT: u8 = 0x40;

/// Credential ids are this many random bytes or up to [`CREDENTIAL_ID_EXTRA`] more.
const CREDENTIAL_ID_MIN: usize = 32;
const CREDENTIAL_ID_EXTRA: u8 = 32;

impl Authenticator for SoftKey {
    fn present(&self) -> bool {
        self.state().map(|s| s.present).unwrap_or(false)
    }

    fn register(
        &self,
        request: &RegistrationRequest<'_>,
        pin: PinSource<'_>,
    ) -> Result<RegistrationResponse, KeyError> {
        self.operate(|state| register(state, request, pin))
    }

    fn assert(
        &self,
        request: &AssertionRequest<'_>,
        pin: PinSource<'_>,
    ) -> Result<AssertionResponse, KeyError> {
        self.operate(|state| assert(state, request, pin))
    }
}

impl SoftKey {
    /// One operation on the state, under the file's lock; the state is written back whatever
    /// the outcome (a wrong PIN counts). A missing file is an unplugged key.
    fn operate<T>(
        &self,
        operation: impl FnOnce(&mut SoftKeyState) -> Result<T, KeyError>,
    ) -> Result<T, KeyError> {
        if !self.path().exists() {
            return Err(KeyError::NoDevice);
        }
        self.update(operation)
            .map_err(|e| KeyError::Device(e.to_string()))?
    }
}

fn register(
    state: &mut SoftKeyState,
    request: &RegistrationRequest<'_>,
    pin: PinSource<'_>,
) -> Result<RegistrationResponse, KeyError> {
    if !state.present {
        return Err(KeyError::NoDevice);
    }
    let verified = verify_user(state, request.user_verification, pin)?;
    if !request.algorithms.contains(&state.algorithm.cose()) {
        return Err(KeyError::Device(
            "the security key supports none of the requested algorithms".into(),
        ));
    }
    if state.decline {
        return Err(KeyError::Timeout);
    }
    if request
        .exclude_credential_ids
        .iter()
        .any(|id| find(state, request.rp_id, id).is_some())
    {
        return Err(KeyError::AlreadyEnrolled);
    }

    let credential = new_credential(request.rp_id, state.algorithm)?;
    let cose_key = cose_public_key(&credential)?;
    let id_len = u16::try_from(credential.credential_id.len())
        .map_err(|_| KeyError::Device("credential id too long".into()))?;
    let counter = next_counter(state);
    let mut data = authenticator_data(state, request.rp_id, verified, counter, FLAG_AT);
    data.extend_from_slice(&state.aaguid);
    data.extend_from_slice(&id_len.to_be_bytes());
    data.extend_from_slice(&credential.credential_id);
    data.extend_from_slice(&cose_key);
    state.credentials.push(credential);
    Ok(RegistrationResponse {
        authenticator_data: data,
    })
}

fn assert(
    state: &mut SoftKeyState,
    request: &AssertionRequest<'_>,
    pin: PinSource<'_>,
) -> Result<AssertionResponse, KeyError> {
    if !state.present {
        return Err(KeyError::NoDevice);
    }
    let verified = verify_user(state, request.user_verification, pin)?;
    if state.decline {
        return Err(KeyError::Timeout);
    }
    // The first allowed credential this key holds for the relying party.
    let credential = request
        .credential_ids
        .iter()
        .find_map(|id| find(state, request.rp_id, id))
        .cloned()
        .ok_or(KeyError::NotEnrolled)?;

    let counter = next_counter(state);
    let data = authenticator_data(state, request.rp_id, verified, counter, 0);
    let client_data_hash: [u8; 32] = Sha256::digest(request.client_data).into();
    let mut message = data.clone();
    message.extend_from_slice(&client_data_hash);
    let signature = sign(&credential, &message)?;
    Ok(AssertionResponse {
        credential_id: credential.credential_id,
        authenticator_data: data,
        signature,
    })
}

/// The credential `id` if this key made it for `rp_id`.
fn find<'s>(state: &'s SoftKeyState, rp_id: &str, id: &[u8]) -> Option<&'s SoftCredential> {
    state
        .credentials
        .iter()
        .find(|c| c.rp_id == rp_id && c.credential_id == id)
}

/// Asks for and checks the PIN when the policy wants it (required; preferred and the key has
/// one). `Ok(true)`: the user is verified.
fn verify_user(
    state: &mut SoftKeyState,
    policy: UserVerification,
    pin: PinSource<'_>,
) -> Result<bool, KeyError> {
    let ask = match (policy, state.pin.is_some()) {
        (UserVerification::Required, false) => return Err(KeyError::PinNotSet),
        (UserVerification::Required | UserVerification::Preferred, true) => true,
        _ => false,
    };
    if !ask {
        return Ok(false);
    }
    let given = pin(PIN_PROMPT)
        .filter(|p| !p.is_empty())
        .ok_or(KeyError::PinMissing)?;
    if state.pin_retries == 0 {
        return Err(KeyError::PinBlocked);
    }
    if state.pin.as_deref() == Some(&*given) {
        state.pin_retries = PIN_RETRIES;
        Ok(true)
    } else {
        state.pin_retries = state.pin_retries.saturating_sub(1);
        if state.pin_retries == 0 {
            Err(KeyError::PinBlocked)
        } else {
            Err(KeyError::PinInvalid)
        }
    }
}

/// Moves the counter as the mode says and returns the value to report.
fn next_counter(state: &mut SoftKeyState) -> u32 {
    state.counter = match state.counter_mode {
        CounterMode::Increment => state.counter.saturating_add(1),
        CounterMode::Repeat => state.counter,
        CounterMode::Rollback => state.counter.saturating_sub(1),
    };
    state.counter
}

/// `SHA-256(rp_id) | flags | counter`, honouring `omit_up`, `omit_uv` and `wrong_rp_id`.
fn authenticator_data(
    state: &SoftKeyState,
    rp_id: &str,
    verified: bool,
    counter: u32,
    extra_flags: u8,
) -> Vec<u8> {
    let rp_id_hash: [u8; 32] = if state.wrong_rp_id {
        Sha256::digest(format!("not-{rp_id}").as_bytes()).into()
    } else {
        Sha256::digest(rp_id.as_bytes()).into()
    };
    let mut flags = extra_flags;
    if !state.omit_up {
        flags |= FLAG_UP;
    }
    if verified && !state.omit_uv {
        flags |= FLAG_UV;
    }
    let mut data = Vec::with_capacity(37);
    data.extend_from_slice(&rp_id_hash);
    data.push(flags);
    data.extend_from_slice(&counter.to_be_bytes());
    data
}

fn random(buf: &mut [u8]) -> Result<(), KeyError> {
    getrandom::fill(buf).map_err(|_| KeyError::Device("no randomness".into()))
}

/// A new credential: a random id of 32 to 64 bytes and a fresh private key.
fn new_credential(rp_id: &str, algorithm: Algorithm) -> Result<SoftCredential, KeyError> {
    let mut extra = [0u8; 1];
    random(&mut extra)?;
    let extra = usize::from(extra[0] % (CREDENTIAL_ID_EXTRA + 1));
    let mut credential_id = vec![0u8; CREDENTIAL_ID_MIN + extra];
    random(&mut credential_id)?;

    let mut private_key = Zeroizing::new(vec![0u8; 32]);
    match algorithm {
        Algorithm::Ed25519 => random(&mut private_key)?,
        // A P-256 scalar must be below the group order; a random 32 bytes nearly always is.
        Algorithm::Es256 => loop {
            random(&mut private_key)?;
            if p256::ecdsa::SigningKey::from_slice(&private_key).is_ok() {
                break;
            }
        },
    }
    Ok(SoftCredential {
        rp_id: rp_id.to_string(),
        credential_id,
        algorithm,
        private_key,
    })
}

fn es256_key(credential: &SoftCredential) -> Result<p256::ecdsa::SigningKey, KeyError> {
    p256::ecdsa::SigningKey::from_slice(&credential.private_key)
        .map_err(|_| KeyError::Device("the soft key's P-256 private key is invalid".into()))
}

fn ed25519_key(credential: &SoftCredential) -> Result<ed25519_dalek::SigningKey, KeyError> {
    let seed: &[u8; 32] = credential.private_key.as_slice().try_into().map_err(|_| {
        KeyError::Device("the soft key's Ed25519 private key is not 32 bytes".into())
    })?;
    Ok(ed25519_dalek::SigningKey::from_bytes(seed))
}

/// The credential's public key as a canonical COSE_Key (keys in CTAP order: 1, 3, -1, -2, -3).
fn cose_public_key(credential: &SoftCredential) -> Result<Vec<u8>, KeyError> {
    let failed = |_| KeyError::Device("cannot encode the COSE key".into());
    let mut e = Encoder::new(Vec::new());
    match credential.algorithm {
        Algorithm::Es256 => {
            let point = es256_key(credential)?.verifying_key().to_sec1_point(false);
            // Uncompressed SEC1: 0x04 | x (32) | y (32).
            let (x, y) = point
                .as_bytes()
                .get(1..65)
                .map(|xy| xy.split_at(32))
                .ok_or_else(|| KeyError::Device("unexpected P-256 point encoding".into()))?;
            e.map(5)
                .and_then(|e| e.i64(1)?.i64(2)) // kty: EC2
                .and_then(|e| e.i64(3)?.i64(-7)) // alg: ES256
                .and_then(|e| e.i64(-1)?.i64(1)) // crv: P-256
                .and_then(|e| e.i64(-2)?.bytes(x))
                .and_then(|e| e.i64(-3)?.bytes(y))
                .map_err(failed)?;
        }
        Algorithm::Ed25519 => {
            let x = ed25519_key(credential)?.verifying_key().to_bytes();
            e.map(4)
                .and_then(|e| e.i64(1)?.i64(1)) // kty: OKP
                .and_then(|e| e.i64(3)?.i64(-8)) // alg: EdDSA
                .and_then(|e| e.i64(-1)?.i64(6)) // crv: Ed25519
                .and_then(|e| e.i64(-2)?.bytes(&x))
                .map_err(failed)?;
        }
    }
    Ok(e.into_writer())
}

/// Signs `message` (authenticatorData || clientDataHash): ES256 as DER, Ed25519 raw.
fn sign(credential: &SoftCredential, message: &[u8]) -> Result<Vec<u8>, KeyError> {
    let failed = |_| KeyError::Device("the soft key could not sign".into());
    match credential.algorithm {
        Algorithm::Es256 => {
            let signature: p256::ecdsa::DerSignature =
                es256_key(credential)?.try_sign(message).map_err(failed)?;
            Ok(signature.as_bytes().to_vec())
        }
        Algorithm::Ed25519 => {
            let signature = ed25519_key(credential)?.try_sign(message).map_err(failed)?;
            Ok(signature.to_bytes().to_vec())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(algorithm: Algorithm, key_byte: u8) -> SoftCredential {
        SoftCredential {
            rp_id: "example.org".into(),
            credential_id: vec![1; 32],
            algorithm,
            private_key: Zeroizing::new(vec![key_byte; 32]),
        }
    }

    #[test]
    fn cose_keys_are_canonical_and_of_the_right_size() {
        let es = cose_public_key(&credential(Algorithm::Es256, 3)).unwrap();
        assert_eq!(es.len(), 77);
        // map(5) 1:2 3:-7 -1:1 -2:bstr(32)
        assert_eq!(
            &es[..10],
            &[0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21, 0x58, 0x20]
        );
        assert_eq!(&es[42..45], &[0x22, 0x58, 0x20]);
        let ed = cose_public_key(&credential(Algorithm::Ed25519, 3)).unwrap();
        assert_eq!(ed.len(), 42);
        assert_eq!(
            &ed[..10],
            &[0xa4, 0x01, 0x01, 0x03, 0x27, 0x20, 0x06, 0x21, 0x58, 0x20]
        );
    }

    #[test]
    fn new_credentials_have_random_ids_of_32_to_64_bytes() {
        let a = new_credential("example.org", Algorithm::Es256).unwrap();
        let b = new_credential("example.org", Algorithm::Es256).unwrap();
        for c in [&a, &b] {
            assert!((32..=64).contains(&c.credential_id.len()));
            assert_eq!(c.private_key.len(), 32);
        }
        assert_ne!(a.credential_id, b.credential_id);
        assert_ne!(*a.private_key, *b.private_key);
    }

    #[test]
    fn counter_modes() {
        let mut state = SoftKeyState::new([0; 16], Algorithm::Es256);
        state.counter = 5;
        assert_eq!(next_counter(&mut state), 6);
        state.counter_mode = CounterMode::Repeat;
        assert_eq!(next_counter(&mut state), 6);
        state.counter_mode = CounterMode::Rollback;
        assert_eq!(next_counter(&mut state), 5);
        state.counter = 0;
        assert_eq!(next_counter(&mut state), 0);
        state.counter = u32::MAX;
        state.counter_mode = CounterMode::Increment;
        assert_eq!(next_counter(&mut state), u32::MAX);
    }

    #[test]
    fn a_broken_private_key_is_an_error() {
        let mut bad = credential(Algorithm::Es256, 0);
        assert!(sign(&bad, b"m").is_err());
        bad.algorithm = Algorithm::Ed25519;
        bad.private_key = Zeroizing::new(vec![1; 31]);
        assert!(sign(&bad, b"m").is_err());
        assert!(cose_public_key(&bad).is_err());
    }
}
