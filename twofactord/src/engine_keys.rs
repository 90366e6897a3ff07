//! Security keys in the engine: login key steps, enrollment, proofs of possession, removal
//! and import. The client (module or CLI) only relays; every check is here or in
//! [`crate::fido2`].
//!
//! Every challenge is made here: 32 random bytes inside client data that also names the
//! purpose, the user and this host. The daemon keeps its copy of the client data with the
//! session (bound to the caller's bus connection and uid, single use, short TTL) and hashes
//! that copy itself, so an assertion only verifies for the one challenge it was made for.

use sha2::{Digest, Sha256};
use twofactor_bus::{
    KeyAssertion, KeyEnrollment, KeyImport, KeyRequest, MAX_KEY_CREDENTIALS, MAX_KEYS_PER_USER,
    skip_reason,
};

use super::*;
use crate::fido2::{self, Fido2Error, Requirements, StoredCredential};
use crate::policy::UserVerification;
use crate::store::{Activation, Codes, Existing, KeyFactor};

use super::limits::{Cap, MAX_PENDING, MAX_PROOFS_PER_UID, MAX_TOKENS_PER_UID};

/// How long an enrollment waits for its two touches.
const KEY_ENROLL_TTL_SECS: i64 = 300;
/// How long a proof challenge waits for its touch.
const PROOF_TTL_SECS: i64 = 120;
/// How long a proof token may be used (once).
const TOKEN_TTL_SECS: i64 = 60;
/// Longest key name.
const MAX_KEY_NAME_LEN: usize = 64;
/// Tokens start with this, so a token is never mistaken for a code.
pub(super) const TOKEN_PREFIX: &str = "keyproof-";
/// Largest authenticatorData or signature accepted from the bus.
const MAX_BLOB_LEN: usize = 4096;

/// An enrollment between `BeginKey` and `ConfirmKey`.
pub(super) struct PendingKey {
    uid: u32,
    sender: String,
    name: String,
    rp_id: String,
    client_data: Vec<u8>,
    expires: i64,
    /// Set by `RegisterKey`: the checked credential waiting for its test assertion.
    registered: Option<KeyFactor>,
    /// `BeginKey` checked a proof of an existing factor. Without one the key may only become
    /// the account's first factor (checked again, atomically, when it is stored).
    proven: bool,
}

/// A proof challenge between `BeginKeyProof` and `ProveWithKey`.
pub(super) struct PendingProof {
    uid: u32,
    sender: String,
    rp_id: String,
    client_data: Vec<u8>,
    expires: i64,
}

/// Key state that lives only in memory: challenges are single-use and short-lived, capped per
/// user and in all (see `limits`), and dropped when their bus connection leaves.
#[derive(Default)]
pub(super) struct KeyChallenges {
    /// At most one per user.
    enrollments: HashMap<String, PendingKey>,
    /// At most `MAX_PROOFS_PER_UID` per user.
    proofs: HashMap<String, PendingProof>,
    /// token -> (uid, expires); at most `MAX_TOKENS_PER_UID` per user. Not bound to a
    /// connection: a token is made by one program and spent by another.
    tokens: HashMap<String, (u32, i64)>,
}

impl KeyChallenges {
    fn prune(&mut self, now: i64) {
        self.enrollments.retain(|_, p| p.expires > now);
        self.proofs.retain(|_, p| p.expires > now);
        self.tokens.retain(|_, (_, exp)| *exp > now);
    }

    /// Which cap, if any, keeps `uid` from starting a proof.
    fn proof_cap(&self, uid: u32) -> Option<Cap> {
        if self.proofs.values().filter(|p| p.uid == uid).count() >= MAX_PROOFS_PER_UID {
            Some(Cap::ProofsPerUser)
        } else if self.enrollments.len() + self.proofs.len() >= MAX_PENDING {
            Some(Cap::Pending)
        } else {
            None
        }
    }

    /// Keeps a new token of `uid`: the user's oldest unused token makes room past the per-user
    /// cap. `false`: the table is full of other users' tokens.
    pub(super) fn add_token(&mut self, token: String, uid: u32, expires: i64) -> bool {
        let mut mine: Vec<(i64, String)> = self
            .tokens
            .iter()
            .filter(|(_, (owner, _))| *owner == uid)
            .map(|(t, (_, exp))| (*exp, t.clone()))
            .collect();
        if mine.len() >= MAX_TOKENS_PER_UID {
            mine.sort();
            for (_, t) in mine.iter().take(mine.len() + 1 - MAX_TOKENS_PER_UID) {
                self.tokens.remove(t);
            }
        } else if self.tokens.len() >= MAX_PENDING {
            return false;
        }
        self.tokens.insert(token, (uid, expires));
        true
    }

    /// Drops the enrollments and proofs of a connection that left the bus.
    fn sender_gone(&mut self, sender: &str) {
        self.enrollments.retain(|_, p| p.sender != sender);
        self.proofs.retain(|_, p| p.sender != sender);
    }
}

/// Client data around a fresh challenge: WebAuthn's fields plus what binds it here.
pub(super) fn client_data(
    kind: &str,
    rp_id: &str,
    purpose: &str,
    user: &str,
) -> Result<Vec<u8>, BusError> {
    let mut challenge = [0u8; 32];
    getrandom::fill(&mut challenge)
        .map_err(|e| BusError::StateUnavailable(format!("no randomness available: {e}")))?;
    let challenge: String = challenge.iter().map(|b| format!("{b:02x}")).collect();
    let value = serde_json::json!({
        "type": kind,
        "challenge": challenge,
        "origin": rp_id,
        "crossOrigin": false,
        "purpose": purpose,
        "user": user,
        "host": crate::policy::hostname(),
    });
    serde_json::to_vec(&value)
        .map_err(|e| BusError::StateUnavailable(format!("cannot build client data: {e}")))
}

fn client_data_hash(client_data: &[u8]) -> [u8; 32] {
    Sha256::digest(client_data).into()
}

fn check_blob(what: &str, b: &[u8]) -> Result<(), BusError> {
    if b.is_empty() || b.len() > MAX_BLOB_LEN {
        return Err(BusError::InvalidArgument(format!(
            "{what} must be 1 to {MAX_BLOB_LEN} bytes"
        )));
    }
    Ok(())
}

fn check_assertion(a: &KeyAssertion) -> Result<(), BusError> {
    if a.credential_id.is_empty() || a.credential_id.len() > fido2::MAX_CREDENTIAL_ID_LEN {
        return Err(BusError::InvalidArgument(
            "credential id must be 1 to 1023 bytes".into(),
        ));
    }
    check_blob("authenticator data", &a.authenticator_data)?;
    check_blob("signature", &a.signature)
}

/// What a caller is told when a credential is already stored: never for whom.
const TAKEN_ENROLL: &str =
    "this security key cannot be enrolled: it is already enrolled (for this or another account)";
const TAKEN_IMPORT: &str = "a credential in the import is already enrolled (for this or another \
                            user), or a name is taken; nothing was imported";

fn check_key_name(name: &str) -> Result<(), BusError> {
    if name.trim().is_empty()
        || name.chars().count() > MAX_KEY_NAME_LEN
        || name.chars().any(char::is_control)
        || name != name.trim()
    {
        return Err(BusError::InvalidArgument(format!(
            "a key name is 1 to {MAX_KEY_NAME_LEN} printable characters, without leading or \
             trailing spaces"
        )));
    }
    Ok(())
}

fn requirements(uv: UserVerification) -> Requirements {
    Requirements {
        user_presence: true,
        user_verification: uv == UserVerification::Required,
    }
}

/// Verifies `assertion` by `key` over `client_data`. The outer error: the stored key itself
/// cannot be used (its COSE key no longer parses).
fn verify_with_key(
    key: &KeyFactor,
    client_data: &[u8],
    assertion: &KeyAssertion,
    uv: UserVerification,
) -> Result<Result<fido2::VerifiedAssertion, Fido2Error>, Fido2Error> {
    let stored = StoredCredential::from_cose(
        key.credential_id.clone(),
        &key.public_key_cose,
        key.rp_id.clone(),
        key.sign_count,
    )?;
    Ok(fido2::verify_assertion(
        &stored,
        &fido2::Assertion {
            credential_id: &assertion.credential_id,
            authenticator_data: &assertion.authenticator_data,
            signature: &assertion.signature,
        },
        &key.rp_id,
        &client_data_hash(client_data),
        requirements(uv),
    ))
}

/// The user's keys usable with `rp_id`.
fn usable<'a>(keys: &'a [KeyFactor], rp_id: &str) -> Vec<&'a KeyFactor> {
    keys.iter()
        .filter(|k| k.rp_id == rp_id)
        .take(MAX_KEY_CREDENTIALS)
        .collect()
}

/// Why an assertion failed, for the user and for the audit log.
fn refusal_text(e: &Fido2Error) -> &'static str {
    match e {
        Fido2Error::CounterNotIncreased { .. } => {
            "The security key was refused: its signature counter went backwards (possible cloned key)."
        }
        Fido2Error::UserVerificationMissing => {
            "The security key was refused: it did not verify your PIN, which the policy requires."
        }
        Fido2Error::UserPresenceMissing => {
            "The security key was refused: it did not report a touch."
        }
        _ => "The security key was refused.",
    }
}

impl Engine {
    pub(super) fn challenges(&self) -> Result<MutexGuard<'_, KeyChallenges>, BusError> {
        self.key_challenges
            .lock()
            .map_err(|_| BusError::StateUnavailable("key lock poisoned".into()))
    }

    /// Drops the key enrollments and proofs of a bus name that left the bus.
    pub(super) fn key_challenges_gone(&self, sender: &str) {
        if let Ok(mut ch) = self.challenges() {
            ch.sender_gone(sender);
        }
    }

    /// Whether the user counts as enrolled, and whether they have TOTP and keys.
    pub(super) fn factors_of(&self, store: &dyn Store, uid: u32) -> Result<Factors, BusError> {
        let totp = store.totp(uid).map_err(store_err)?.is_some();
        let keys = store.keys(uid).map_err(store_err)?;
        Ok(Factors { totp, keys })
    }

    /// The key step of a login: a fresh challenge for the user's keys.
    pub(super) fn key_step(
        &self,
        account: &Account,
        keys: &[KeyFactor],
    ) -> Result<(Stage, LoginStep), BusError> {
        let policy = self.policy();
        let f = &policy.fido2;
        let ids: Vec<Vec<u8>> = usable(keys, &f.rp_id)
            .into_iter()
            .map(|k| k.credential_id.clone())
            .collect();
        let client_data = client_data("webauthn.get", &f.rp_id, "login", &account.name)?;
        let request = KeyRequest {
            rp_id: f.rp_id.clone(),
            client_data: client_data.clone(),
            credential_ids: ids,
            user_verification: f.user_verification.as_str().into(),
            timeout_ms: u32::try_from(f.touch_timeout.as_millis()).unwrap_or(u32::MAX),
            press_enter: f.press_enter,
        };
        let cue = if f.press_enter {
            "Press Enter, then touch your security key (or type a code here instead): "
        } else {
            "Touch your security key."
        };
        Ok((
            Stage::Key {
                client_data,
                rp_id: f.rp_id.clone(),
            },
            LoginStep::key(cue, request),
        ))
    }

    /// The code prompt after the key step, with why the key was not used.
    fn code_step_after_key(&self, totp: bool, why: Option<&str>) -> LoginStep {
        let mut step = LoginStep::prompt(self.policy().prompt.clone(), false);
        if let Some(why) = why {
            step = step.error(why);
        }
        if totp {
            step
        } else {
            step.info("Type one of your recovery codes.")
        }
    }

    /// `Login.Assert`.
    pub(super) fn assert_login_inner(
        &self,
        caller: &Caller,
        handle: &str,
        assertion: &KeyAssertion,
    ) -> Result<LoginStep, BusError> {
        check_assertion(assertion)?;
        let now = self.clock.now();
        let mut session = self.take_session(caller, handle, now)?;
        let Stage::Key { client_data, rp_id } = session.stage.clone() else {
            self.sessions()?.insert(handle.to_string(), session);
            return Err(BusError::InvalidArgument(
                "this login is not waiting for a security key".into(),
            ));
        };
        let account = session.account.clone();
        let mut store = self.store()?;
        let state = store.user_state(account.uid).map_err(store_err)?;
        if let Some(until) = state.map(|s| s.locked_until).filter(|&t| t > now) {
            return Ok(LoginStep::done(Outcome::Denied).error(locked_message(until, now)));
        }
        let factors = self.factors_of(store.as_ref(), account.uid)?;
        let policy = self.policy();
        let result = self.check_key_assertion(
            store.as_mut(),
            &account,
            caller,
            &factors.keys,
            &rp_id,
            &client_data,
            assertion,
            policy.fido2.user_verification,
            Some(&session.ctx),
            "login",
        )?;
        drop(store);
        match result {
            Ok(_) => {
                self.remember(account.uid, &session.ctx, now);
                Ok(LoginStep::done(Outcome::Success))
            }
            Err((message, Some(until))) => Ok(LoginStep::done(Outcome::Denied).error(format!(
                "{message} Too many failed attempts: locked for {}.",
                minutes(until.saturating_sub(now))
            ))),
            Err((message, None)) => {
                session.attempts_left = session.attempts_left.saturating_sub(1);
                if session.attempts_left == 0 {
                    return Ok(LoginStep::done(Outcome::Denied).error(message));
                }
                session.enter(Stage::Code, now);
                self.sessions()?.insert(handle.to_string(), session);
                Ok(self.code_step_after_key(factors.totp, Some(&message)))
            }
        }
    }

    /// Verifies an assertion against the user's keys and, on success, stores the new counter
    /// (audited as `purpose` success). `Ok(Err((message, locked_until)))`: refused and counted.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn check_key_assertion(
        &self,
        store: &mut dyn Store,
        account: &Account,
        caller: &Caller,
        keys: &[KeyFactor],
        rp_id: &str,
        client_data: &[u8],
        assertion: &KeyAssertion,
        uv: UserVerification,
        ctx: Option<&LoginContext>,
        purpose: &str,
    ) -> Result<Result<String, (String, Option<i64>)>, BusError> {
        let now = self.clock.now();
        let Some(key) = keys
            .iter()
            .find(|k| k.rp_id == rp_id && k.credential_id == assertion.credential_id)
        else {
            let message = "That security key is not enrolled for this account.".to_string();
            let until = self.count_failure(
                store,
                account,
                caller,
                ctx,
                purpose,
                "key: credential not enrolled for this user".into(),
            )?;
            return Ok(Err((message, until)));
        };
        let checked = verify_with_key(key, client_data, assertion, uv).map_err(|e| {
            crate::log::error(&format!(
                "stored key {:?} of {} is unusable: {e}",
                key.name, account.name
            ));
            BusError::StateUnavailable("a stored key is unreadable; nothing was changed".into())
        })?;
        match checked {
            Ok(v) => {
                let r = self.record(
                    account,
                    caller,
                    purpose,
                    "success",
                    ctx,
                    format!("key {:?}", key.name),
                );
                if store
                    .accept_key_assertion(account.uid, &key.credential_id, v.sign_count, now, &r)
                    .map_err(store_err)?
                {
                    self.announce(&r);
                    return Ok(Ok(key.name.clone()));
                }
                // A valid signature over this login's own challenge whose counter another
                // login took first (two logins with one key at once): a race, not a guess.
                // Refused and audited as a replay, not counted. (A counter that went back is a
                // suspected clone, below, and counts.)
                let r = self.record(
                    account,
                    caller,
                    "replay",
                    "refused",
                    ctx,
                    format!(
                        "key {:?}: the counter was already used (for {purpose}); not counted",
                        key.name
                    ),
                );
                self.audit_folded(store, caller.uid, "replay-key", r);
                Ok(Err((
                    "The security key's answer was already used.".into(),
                    None,
                )))
            }
            Err(e) => {
                if let Fido2Error::CounterNotIncreased { stored, received } = e {
                    let r = self.record(
                        account,
                        caller,
                        "key-clone-suspected",
                        "failure",
                        ctx,
                        format!(
                            "key {:?}: signature counter {received} after {stored}: possible \
                             cloned key",
                            key.name
                        ),
                    );
                    self.audit(store, r);
                }
                let until = self.count_failure(
                    store,
                    account,
                    caller,
                    ctx,
                    purpose,
                    format!("key {:?}: {e}", key.name),
                )?;
                Ok(Err((refusal_text(&e).to_string(), until)))
            }
        }
    }

    /// `Login.SkipKey`: no assertion (no key, timeout, declined): on to the code prompt.
    pub(super) fn skip_key_inner(
        &self,
        caller: &Caller,
        handle: &str,
        reason: &str,
    ) -> Result<LoginStep, BusError> {
        if !skip_reason::ALL.contains(&reason) {
            return Err(BusError::InvalidArgument(format!(
                "unknown reason {reason:?}; one of {}",
                skip_reason::ALL.join(", ")
            )));
        }
        let now = self.clock.now();
        let mut session = self.take_session(caller, handle, now)?;
        if !matches!(session.stage, Stage::Key { .. }) {
            self.sessions()?.insert(handle.to_string(), session);
            return Err(BusError::InvalidArgument(
                "this login is not waiting for a security key".into(),
            ));
        }
        let totp = self
            .store()?
            .totp(session.account.uid)
            .map_err(store_err)?
            .is_some();
        let why = match reason {
            skip_reason::NO_DEVICE => Some("No security key found."),
            skip_reason::TIMEOUT => Some("The security key was not touched in time."),
            skip_reason::NOT_ENROLLED => {
                Some("That security key is not enrolled for this account.")
            }
            skip_reason::ERROR => Some("The security key could not be used."),
            _ => None,
        };
        crate::log::debug(&format!(
            "login of {}: key step skipped ({reason})",
            session.account.name
        ));
        session.enter(Stage::Code, now);
        self.sessions()?.insert(handle.to_string(), session);
        Ok(self.code_step_after_key(totp, why))
    }

    /// `Enrollment.BeginKey`.
    pub fn begin_key(
        &self,
        caller: &Caller,
        name: &str,
        code: &str,
    ) -> Result<KeyEnrollment, BusError> {
        let account = self.target(caller, "")?;
        self.authorize("Enrollment", "BeginKey", caller, Some(&account))?;
        check_key_name(name)?;
        let policy = self.policy();
        let f = &policy.fido2;
        let mut store = self.store()?;
        let eff = self.effective(store.as_ref(), &account, Context::default())?;
        if eff.mode == Mode::Disabled {
            return Err(BusError::NotAllowed(format!(
                "two-factor authentication is disabled for {} by {}",
                account.name,
                eff.explain(&policy.path)
            )));
        }
        let factors = self.factors_of(store.as_ref(), account.uid)?;
        if factors.keys.iter().any(|k| k.name == name) {
            return Err(BusError::NotAllowed(format!(
                "you already have a key named {name:?}"
            )));
        }
        if factors.keys.len() >= MAX_KEYS_PER_USER {
            return Err(BusError::NotAllowed(format!(
                "you have {MAX_KEYS_PER_USER} keys, the most allowed; remove one first"
            )));
        }
        if !f.keys_suffice && !factors.totp {
            return Err(BusError::NotAllowed(
                "the policy (fido2.keys_suffice = false) wants an authenticator app next to \
                 security keys, for remote logins: run `twofactorctl enroll totp` first"
                    .into(),
            ));
        }
        // Adding a factor to an account that has one needs a fresh proof of an existing one.
        let proven = factors.totp || !factors.keys.is_empty();
        if proven {
            match self.verify_code(store.as_mut(), &account, caller, code, None, "proof")? {
                CodeVerdict::Totp | CodeVerdict::Recovery { .. } | CodeVerdict::KeyProof => {}
                other => {
                    return Err(BusError::NotAllowed(format!(
                        "adding a key needs a current code or a touch of an enrolled key: {}",
                        refused(other, self.clock.now()).message
                    )));
                }
            }
        }
        drop(store);
        let now = self.clock.now();
        let client_data = client_data("webauthn.create", &f.rp_id, "enroll", &account.name)?;
        let mut user_id = [0u8; 16];
        getrandom::fill(&mut user_id)
            .map_err(|e| BusError::StateUnavailable(format!("no randomness available: {e}")))?;
        let id = random_handle()?;
        let expires = now.saturating_add(KEY_ENROLL_TTL_SECS);
        {
            let mut ch = self.challenges()?;
            ch.prune(now);
            // One enrollment per user at a time: a new one replaces the user's last.
            ch.enrollments.retain(|_, p| p.uid != account.uid);
            if ch.enrollments.len() + ch.proofs.len() >= MAX_PENDING {
                drop(ch);
                return Err(self.over_cap(Cap::Pending, &account, caller, None));
            }
            ch.enrollments.insert(
                id.clone(),
                PendingKey {
                    uid: account.uid,
                    sender: caller.sender.clone(),
                    name: name.to_string(),
                    rp_id: f.rp_id.clone(),
                    client_data: client_data.clone(),
                    expires,
                    registered: None,
                    proven,
                },
            );
        }
        Ok(KeyEnrollment {
            enrollment_id: id,
            rp_id: f.rp_id.clone(),
            user_id: user_id.to_vec(),
            user_name: account.name.clone(),
            client_data,
            exclude_credential_ids: usable(&factors.keys, &f.rp_id)
                .into_iter()
                .map(|k| k.credential_id.clone())
                .collect(),
            user_verification: f.user_verification.as_str().into(),
            algorithms: vec![fido2::COSE_ALG_ES256 as i32, fido2::COSE_ALG_EDDSA as i32],
            timeout_ms: 60_000,
            expires,
        })
    }

    /// Takes a pending key enrollment of the caller out of the map.
    fn take_enrollment(&self, caller: &Caller, id: &str) -> Result<PendingKey, BusError> {
        let now = self.clock.now();
        let mut ch = self.challenges()?;
        ch.prune(now);
        match ch.enrollments.remove(id) {
            Some(p) if p.uid == caller.uid && p.sender == caller.sender => Ok(p),
            Some(p) => {
                ch.enrollments.insert(id.to_string(), p);
                Err(BusError::NoSuchSession("no such enrollment".into()))
            }
            None => Err(BusError::NoSuchSession(
                "no such enrollment, or it expired; start again".into(),
            )),
        }
    }

    /// `Enrollment.RegisterKey`: checks the new credential and asks for a test assertion.
    pub fn register_key(
        &self,
        caller: &Caller,
        enrollment_id: &str,
        authenticator_data: &[u8],
    ) -> Result<KeyRequest, BusError> {
        let account = self.target(caller, "")?;
        self.authorize("Enrollment", "RegisterKey", caller, Some(&account))?;
        check_blob("authenticator data", authenticator_data)?;
        let mut pending = self.take_enrollment(caller, enrollment_id)?;
        if pending.registered.is_some() {
            return Err(BusError::NoSuchSession(
                "this enrollment already has its key; start again".into(),
            ));
        }
        // The enrollment is used up whatever happens below: a failed registration starts over.
        let policy = self.policy();
        let uv = policy.fido2.user_verification;
        let credential = fido2::RegisteredCredential::from_authenticator_data(authenticator_data)
            .and_then(|c| {
                if c.rp_id_hash != fido2::rp_id_hash(&pending.rp_id) {
                    return Err(Fido2Error::RpIdMismatch);
                }
                Ok(c)
            })
            .and_then(|c| {
                let flags = c.flags;
                if !flags.user_present() {
                    return Err(Fido2Error::UserPresenceMissing);
                }
                if uv == UserVerification::Required && !flags.user_verified() {
                    return Err(Fido2Error::UserVerificationMissing);
                }
                Ok(c)
            })
            .map_err(|e| {
                BusError::InvalidArgument(format!("the new credential is refused: {e}"))
            })?;
        // A credential already stored, for this user or any other, is refused here, with one
        // answer (import_keys' rule): the step and the words never say whose it is.
        // `add_keys` refuses it again atomically at ConfirmKey (a race), with the same words.
        let taken = self
            .store()?
            .credential_enrolled(&pending.rp_id, &credential.credential_id)
            .map_err(store_err)?;
        if taken {
            return Err(BusError::NotAllowed(TAKEN_ENROLL.into()));
        }
        let now = self.clock.now();
        let key = KeyFactor {
            name: pending.name.clone(),
            credential_id: credential.credential_id.clone(),
            public_key_cose: credential.public_key_cose.clone(),
            rp_id: pending.rp_id.clone(),
            sign_count: credential.sign_count,
            user_verification: credential.flags.user_verified(),
            source: "enrolled".into(),
            created: now,
            last_used: 0,
        };
        pending.client_data = client_data(
            "webauthn.get",
            &pending.rp_id,
            "enroll-proof",
            &account.name,
        )?;
        let request = KeyRequest {
            rp_id: pending.rp_id.clone(),
            client_data: pending.client_data.clone(),
            credential_ids: vec![key.credential_id.clone()],
            user_verification: uv.as_str().into(),
            timeout_ms: 60_000,
            press_enter: false,
        };
        pending.registered = Some(key);
        self.challenges()?
            .enrollments
            .insert(enrollment_id.to_string(), pending);
        Ok(request)
    }

    /// `Enrollment.ConfirmKey`: the test assertion proves possession; the key becomes active.
    pub fn confirm_key(
        &self,
        caller: &Caller,
        enrollment_id: &str,
        assertion: &KeyAssertion,
    ) -> Result<CodeResult, BusError> {
        let account = self.target(caller, "")?;
        self.authorize("Enrollment", "ConfirmKey", caller, Some(&account))?;
        check_assertion(assertion)?;
        let pending = self.take_enrollment(caller, enrollment_id)?;
        let Some(mut key) = pending.registered else {
            return Err(BusError::NoSuchSession(
                "this enrollment has no key yet (RegisterKey first)".into(),
            ));
        };
        let policy = self.policy();
        let verified = verify_with_key(
            &key,
            &pending.client_data,
            assertion,
            policy.fido2.user_verification,
        )
        .map_err(|e| BusError::InvalidArgument(format!("the new credential is refused: {e}")))?;
        let v = match verified {
            Ok(v) => v,
            Err(e) => {
                let r = self.record(
                    &account,
                    caller,
                    "enroll",
                    "failure",
                    None,
                    format!("key {:?}: test assertion refused: {e}", key.name),
                );
                let mut store = self.store()?;
                self.audit_folded(store.as_mut(), caller.uid, "enroll-key-refused", r);
                return Ok(CodeResult {
                    accepted: false,
                    message: format!("The key's test signature was refused ({e}); start again."),
                    recovery_codes: Vec::new(),
                });
            }
        };
        let now = self.clock.now();
        key.sign_count = v.sign_count;
        key.last_used = now;
        key.created = now;
        let mut store = self.store()?;
        // The first factor comes with recovery codes; a user who has unused codes (their own,
        // or an admin's starter codes) keeps them: a confirmation never replaces codes.
        let (shown, stored) = new_recovery_set()?;
        let r = self.record(
            &account,
            caller,
            "enroll",
            "success",
            None,
            format!("key {:?} ({})", key.name, key.rp_id),
        );
        let existing = if pending.proven {
            Existing::Proven
        } else {
            Existing::NoFactor
        };
        self.invalidate_offline();
        let activation = store
            .add_keys(
                account.uid,
                &account.name,
                std::slice::from_ref(&key),
                Codes::IfNone(&stored),
                existing,
                &r,
            )
            .map_err(store_err)?;
        let codes_set = match activation {
            Activation::Done { codes_set } => codes_set,
            // Same answer whether this account or another holds the credential.
            Activation::Taken => return Err(BusError::NotAllowed(TAKEN_ENROLL.into())),
            Activation::FactorExists => {
                let r = self.record(
                    &account,
                    caller,
                    "enroll",
                    "failure",
                    None,
                    format!(
                        "key {:?}: a factor was enrolled after this enrollment began without a \
                         proof",
                        key.name
                    ),
                );
                self.audit_folded(store.as_mut(), caller.uid, "enroll-key-raced", r);
                return Ok(CodeResult {
                    accepted: false,
                    message: "A second factor was set up for this account after this \
                              enrollment began. Start again: adding a key now needs a proof of \
                              the factor you have."
                        .into(),
                    recovery_codes: Vec::new(),
                });
            }
        };
        self.announce(&r);
        let mut message = format!("Your security key {:?} is enrolled.", key.name);
        // A key-only user would spend a recovery code at every remote login: say so now,
        // while they can still add an app (best effort: the key is enrolled either way).
        let admin_required = store
            .user_state(account.uid)
            .ok()
            .flatten()
            .is_some_and(|s| s.admin_required);
        if let Ok(factors) = self.factors_of(store.as_ref(), account.uid)
            && factors.remote_logins_use_recovery_codes(
                &policy,
                &account,
                admin_required,
                Context::default(),
            )
        {
            let left = store
                .unused_recovery(account.uid)
                .map(|c| c.len())
                .unwrap_or(0);
            message.push('\n');
            message.push_str(&keys_only_warning(left));
        }
        Ok(CodeResult {
            accepted: true,
            message,
            recovery_codes: if codes_set {
                shown.iter().map(|c| c.to_string()).collect()
            } else {
                Vec::new()
            },
        })
    }

    /// `Enrollment.BeginKeyProof`.
    pub fn begin_key_proof(&self, caller: &Caller) -> Result<(String, KeyRequest), BusError> {
        let account = self.target(caller, "")?;
        self.authorize("Enrollment", "BeginKeyProof", caller, Some(&account))?;
        let policy = self.policy();
        let f = &policy.fido2;
        let keys = self.store()?.keys(account.uid).map_err(store_err)?;
        let ids: Vec<Vec<u8>> = usable(&keys, &f.rp_id)
            .into_iter()
            .map(|k| k.credential_id.clone())
            .collect();
        if ids.is_empty() {
            return Err(BusError::NotAllowed(
                "you have no security key enrolled for this host".into(),
            ));
        }
        let now = self.clock.now();
        let client_data = client_data("webauthn.get", &f.rp_id, "proof", &account.name)?;
        let id = random_handle()?;
        {
            let mut ch = self.challenges()?;
            ch.prune(now);
            if let Some(cap) = ch.proof_cap(account.uid) {
                drop(ch);
                return Err(self.over_cap(cap, &account, caller, None));
            }
            ch.proofs.insert(
                id.clone(),
                PendingProof {
                    uid: account.uid,
                    sender: caller.sender.clone(),
                    rp_id: f.rp_id.clone(),
                    client_data: client_data.clone(),
                    expires: now.saturating_add(PROOF_TTL_SECS),
                },
            );
        }
        Ok((
            id,
            KeyRequest {
                rp_id: f.rp_id.clone(),
                client_data,
                credential_ids: ids,
                user_verification: f.user_verification.as_str().into(),
                timeout_ms: 60_000,
                press_enter: false,
            },
        ))
    }

    /// `Enrollment.ProveWithKey`: a verified touch becomes a single-use token.
    pub fn prove_with_key(
        &self,
        caller: &Caller,
        proof_id: &str,
        assertion: &KeyAssertion,
    ) -> Result<String, BusError> {
        let account = self.target(caller, "")?;
        self.authorize("Enrollment", "ProveWithKey", caller, Some(&account))?;
        check_assertion(assertion)?;
        let now = self.clock.now();
        let proof = {
            let mut ch = self.challenges()?;
            ch.prune(now);
            match ch.proofs.remove(proof_id) {
                Some(p) if p.uid == caller.uid && p.sender == caller.sender => p,
                Some(p) => {
                    ch.proofs.insert(proof_id.to_string(), p);
                    return Err(BusError::NoSuchSession("no such proof".into()));
                }
                None => {
                    return Err(BusError::NoSuchSession(
                        "no such proof, or it expired".into(),
                    ));
                }
            }
        };
        let mut store = self.store()?;
        if let Some(until) = store
            .user_state(account.uid)
            .map_err(store_err)?
            .map(|s| s.locked_until)
            .filter(|&t| t > now)
        {
            return Err(BusError::NotAllowed(locked_message(until, now)));
        }
        let keys = store.keys(account.uid).map_err(store_err)?;
        let policy = self.policy();
        let result = self.check_key_assertion(
            store.as_mut(),
            &account,
            caller,
            &keys,
            &proof.rp_id,
            &proof.client_data,
            assertion,
            policy.fido2.user_verification,
            None,
            "proof",
        )?;
        drop(store);
        match result {
            Ok(_) => {
                let token = format!("{TOKEN_PREFIX}{}", random_handle()?);
                let kept = {
                    let mut ch = self.challenges()?;
                    ch.prune(now);
                    ch.add_token(
                        token.clone(),
                        account.uid,
                        now.saturating_add(TOKEN_TTL_SECS),
                    )
                };
                if kept {
                    Ok(token)
                } else {
                    Err(self.over_cap(Cap::Tokens, &account, caller, None))
                }
            }
            Err((message, _)) => Err(BusError::NotAllowed(message)),
        }
    }

    /// Consumes a proof token of `uid`; true if it was valid.
    pub(super) fn consume_token(&self, uid: u32, token: &str) -> Result<bool, BusError> {
        let now = self.clock.now();
        let mut ch = self.challenges()?;
        ch.prune(now);
        match ch.tokens.remove(token) {
            Some((owner, _)) if owner == uid => Ok(true),
            Some(other) => {
                ch.tokens.insert(token.to_string(), other);
                Ok(false)
            }
            None => Ok(false),
        }
    }

    /// `Enrollment.RemoveKey`.
    pub fn remove_key(
        &self,
        caller: &Caller,
        name: &str,
        code: &str,
    ) -> Result<CodeResult, BusError> {
        let account = self.target(caller, "")?;
        self.authorize("Enrollment", "RemoveKey", caller, Some(&account))?;
        check_key_name(name)?;
        let mut store = self.store()?;
        let factors = self.factors_of(store.as_ref(), account.uid)?;
        if !factors.keys.iter().any(|k| k.name == name) {
            return Err(BusError::NotAllowed(format!(
                "you have no key named {name:?}"
            )));
        }
        let eff = self.effective(store.as_ref(), &account, Context::default())?;
        let policy = self.policy();
        let last = !factors.totp && factors.keys.len() == 1;
        if last && eff.mode == Mode::Required {
            return Err(BusError::NotAllowed(format!(
                "{name:?} is your only second factor and two-factor authentication is required \
                 for {} by {}; enroll another factor first",
                account.name,
                eff.explain(&policy.path)
            )));
        }
        match self.verify_code(store.as_mut(), &account, caller, code, None, "proof")? {
            CodeVerdict::Totp | CodeVerdict::Recovery { .. } | CodeVerdict::KeyProof => {}
            other => return Ok(refused(other, self.clock.now())),
        }
        let r = self.record(
            &account,
            caller,
            "factor-removed",
            "success",
            None,
            format!("key {name:?}"),
        );
        if !store.remove_key(account.uid, name, &r).map_err(store_err)? {
            return Err(BusError::NotAllowed(format!(
                "you have no key named {name:?}"
            )));
        }
        self.announce(&r);
        if last {
            // No factor left: the recovery codes of an account without factors go too.
            store.reset(account.uid).map_err(store_err)?;
            self.forget_remembered(account.uid);
        }
        Ok(CodeResult {
            accepted: true,
            message: if last {
                format!("The key {name:?} is removed; you have no second factor left.")
            } else {
                format!("The key {name:?} is removed.")
            },
            recovery_codes: Vec::new(),
        })
    }

    /// `Admin.ImportKeys`: credentials registered elsewhere (pam_u2f), all or nothing.
    pub fn import_keys(
        &self,
        caller: &Caller,
        user: &str,
        keys: &[KeyImport],
    ) -> Result<String, BusError> {
        let account = self.target(caller, user)?;
        self.authorize("Admin", "ImportKeys", caller, Some(&account))?;
        if keys.is_empty() {
            return Err(BusError::InvalidArgument("no keys to import".into()));
        }
        let mut store = self.store()?;
        let existing = store.keys(account.uid).map_err(store_err)?;
        if existing.len() + keys.len() > MAX_KEYS_PER_USER {
            return Err(BusError::NotAllowed(format!(
                "{} would have more than {MAX_KEYS_PER_USER} keys",
                account.name
            )));
        }
        let now = self.clock.now();
        let mut new = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            let n = i + 1;
            check_key_name(&k.name)
                .map_err(|e| BusError::InvalidArgument(format!("key {n}: {}", e.message())))?;
            if !crate::policy::valid_rp_id(&k.rp_id) {
                return Err(BusError::InvalidArgument(format!(
                    "key {n}: {:?} is not an rp id",
                    k.rp_id
                )));
            }
            if k.credential_id.is_empty() || k.credential_id.len() > fido2::MAX_CREDENTIAL_ID_LEN {
                return Err(BusError::InvalidArgument(format!(
                    "key {n}: the credential id must be 1 to 1023 bytes"
                )));
            }
            fido2::CosePublicKey::from_cose(&k.public_key_cose)
                .map_err(|e| BusError::InvalidArgument(format!("key {n} ({:?}): {e}", k.name)))?;
            let clash = existing.iter().chain(new.iter()).any(|e: &KeyFactor| {
                e.name == k.name || (e.rp_id == k.rp_id && e.credential_id == k.credential_id)
            });
            if clash {
                return Err(BusError::NotAllowed(format!(
                    "key {n} ({:?}): {} already has a key with this name or credential",
                    k.name, account.name
                )));
            }
            new.push(KeyFactor {
                name: k.name.clone(),
                credential_id: k.credential_id.clone(),
                public_key_cose: k.public_key_cose.clone(),
                rp_id: k.rp_id.clone(),
                sign_count: 0,
                user_verification: k.user_verification,
                source: "imported".into(),
                created: now,
                last_used: 0,
            });
        }
        let policy = self.policy();
        let other_rp: Vec<&str> = new
            .iter()
            .filter(|k| k.rp_id != policy.fido2.rp_id)
            .map(|k| k.rp_id.as_str())
            .collect();
        let r = self.record(
            &account,
            caller,
            "enroll",
            "success",
            None,
            format!(
                "{} imported key(s): {}",
                new.len(),
                new.iter()
                    .map(|k| format!("{:?} ({})", k.name, k.rp_id))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        // Another user may hold the same credential: the store refuses it (`Taken`), and the
        // answer does not say whose it is. (An admin's import may add to existing factors, so
        // `FactorExists` cannot come back.)
        self.invalidate_offline();
        let added = store
            .add_keys(
                account.uid,
                &account.name,
                &new,
                Codes::Keep,
                Existing::Proven,
                &r,
            )
            .map_err(store_err)?;
        if added != (Activation::Done { codes_set: false }) {
            return Err(BusError::NotAllowed(TAKEN_IMPORT.into()));
        }
        self.announce(&r);
        let mut msg = format!("imported {} key(s) for {}", new.len(), account.name);
        if !other_rp.is_empty() {
            msg.push_str(&format!(
                "\nwarning: {} key(s) were registered for another rp id than this policy's \
                 fido2.rp_id ({}): they will not be offered at login until fido2.rp_id matches",
                other_rp.len(),
                policy.fido2.rp_id
            ));
        }
        Ok(msg)
    }
}

/// A user's factors.
pub(super) struct Factors {
    pub(super) totp: bool,
    pub(super) keys: Vec<KeyFactor>,
}

impl Factors {
    /// Whether the user counts as enrolled under `policy`.
    pub(super) fn enrolled(&self, policy: &Policy) -> bool {
        self.totp || (!self.keys.is_empty() && policy.fido2.keys_suffice)
    }

    /// Whether security keys are this user's only factor and still make them enrolled
    /// (`fido2.keys_suffice`), while their remote logins are asked for a second factor that a
    /// key cannot give: an SSH user cannot touch a key plugged into this host, so each such
    /// login uses up a recovery code. Remote logins are those of `login` when it has a remote
    /// host, else of sshd; they do not ask when the policy exempts them or lets that service
    /// use keys (`fido2.remote_services`).
    pub(super) fn remote_logins_use_recovery_codes(
        &self,
        policy: &Policy,
        account: &Account,
        admin_required: bool,
        login: Context<'_>,
    ) -> bool {
        if self.totp || self.keys.is_empty() || !self.enrolled(policy) {
            return false;
        }
        let remote = if login.rhost.is_empty() {
            Context {
                service: REMOTE_SERVICE,
                rhost: "",
            }
        } else {
            login
        };
        // Any non-empty remote host: keys_usable only asks whether the login is remote.
        if policy.fido2.keys_usable(remote.service, "remote") {
            return false;
        }
        policy.resolve_login(account, admin_required, remote).mode != Mode::Disabled
    }
}

/// The service whose logins stand for "remote logins" when no login context is given.
const REMOTE_SERVICE: &str = "sshd";

/// The warning shown after enrolling a key, in `status` and at a remote login when keys are
/// the only factor and remote logins need recovery codes.
pub(super) fn keys_only_warning(codes_left: usize) -> String {
    format!(
        "Security keys are the only factor, and a key cannot be used for a remote login (ssh): \
         each remote login uses up one recovery code ({codes_left} left). Add an authenticator \
         app for remote logins: `twofactorctl enroll totp`."
    )
}

#[cfg(test)]
impl KeyChallenges {
    /// A proof of `uid` on a connection of its own (tests fill the table with these).
    pub(super) fn insert_test_proof(&mut self, id: &str, uid: u32, expires: i64) {
        self.proofs.insert(
            id.to_string(),
            PendingProof {
                uid,
                sender: format!(":test.{id}"),
                rp_id: String::new(),
                client_data: Vec::new(),
                expires,
            },
        );
    }

    pub(super) fn tokens_of(&self, uid: u32) -> usize {
        self.tokens.values().filter(|(o, _)| *o == uid).count()
    }

    pub(super) fn has_token(&self, token: &str) -> bool {
        self.tokens.contains_key(token)
    }

    pub(super) fn token_count(&self) -> usize {
        self.tokens.len()
    }
}
