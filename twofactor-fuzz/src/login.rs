//! The daemon's login and enrollment state machine, driven by arbitrary operations: logins by
//! any caller for any name with any context, any answers, skipped keys and codes typed at the
//! key's cue, security-key assertions, cancels, TOTP and security-key enrollments, disables,
//! code regeneration, admin resets, the clock moving both ways.
//!
//! The harness learns secrets only from the engine's own outputs (an enrollment's secret, the
//! recovery codes it shows, the challenges of key steps) and keeps an oracle of which answers
//! are valid factors. Its security keys are its own ([`crate::keys`]): enrolled through
//! `BeginKey`, `RegisterKey` and `ConfirmKey` as a client would, then used at logins' key steps
//! with assertions that are honest, replayed, rolled back or counterless, signed over another
//! challenge, made by another user's key, or mutated, as the input chooses.
//!
//! The invariants: a login ends in `Success` only after an answer that was a valid factor of
//! the login's user (a TOTP code of a fresh step, an unused recovery code, an assertion by a key
//! enrolled for that user over that login's challenge, reporting a touch, with a counter above
//! the last one accepted or a counterless key's 0); an enrollment, a disable or a code
//! regeneration is accepted only with a valid code; a key enrollment of a user who has a factor
//! begins only with a valid code, registers only a credential for the policy's relying party
//! that reports a touch, and is confirmed only by its caller with a valid assertion by the
//! registered credential over the enrollment's challenge; nothing panics.
//!
//! The oracle is deliberately permissive (it forgets a use only when the engine reports
//! success, it knows a key's counter only from assertions the engine accepted, and it accepts
//! any answer naming a credential the engine registered from mutated data), so that a finding
//! is always a real one. What the engine parses from a key's bytes is the `fido2` target's;
//! here the bytes reach the engine through its login and enrollment calls.

use std::collections::HashMap;
use std::path::Path;

use twofactor_bus::{KeyAssertion, LoginStep, Outcome, StepKind};
use twofactord::engine::{Caller, Engine};
use twofactord::policy::{Algorithm, Policy};
use twofactord::recovery;
use twofactord::store::SqliteStore;
use twofactord::testkit::ManualClock;
use twofactord::totp::{self, TotpParams, TotpSecret};

use crate::Input;
use crate::keys::{self, FLAG_UP, FLAG_UV, FuzzKey};
use crate::parsers::accounts;

/// A step boundary.
const T0: i64 = 1_800_000_000;
const PERIOD: i64 = 30;
const WINDOW: i64 = 1;
const MAX_OPS: usize = 200;

/// The policies a run picks from (all with SHA1, 6 digits, 30 s, window 1: the oracle's).
pub const POLICIES: &[&str] = &[
    "default_mode = \"optional\"\nadmin_groups = [\"wheel\"]\n",
    "default_mode = \"required\"\n[rate_limit]\nmax_failures = 3\nlockout = \"1m\"\n",
    "default_mode = \"optional\"\n[users.bob]\nmode = \"required\"\n[login]\nattempts = 5\n",
    // Keys: a PIN required, the cue a prompt (a code may be typed there), sshd's remote logins
    // may use a key.
    "default_mode = \"optional\"\n[login]\nattempts = 2\n[fido2]\nrp_id = \"pam://fuzz\"\n\
     user_verification = \"required\"\npress_enter = true\nremote_services = [\"sshd\"]\n",
    // Keys only next to an authenticator app.
    "default_mode = \"required\"\nadmin_groups = [\"wheel\"]\n[fido2]\nkeys_suffice = false\n",
];

/// (uid, name) of the accounts; uid 4242 has no account.
const PEOPLE: &[(u32, &str)] = &[
    (0, "root"),
    (1000, "alice"),
    (1001, "bob"),
    (1002, "carol"),
    (4242, "ghost"),
];

#[derive(Default)]
struct Known {
    /// The confirmed TOTP secret.
    secret: Option<TotpSecret>,
    /// Last accepted step, as far as the oracle knows for sure.
    last_step: Option<i64>,
    /// Recovery codes shown and not yet seen used.
    recovery: Vec<String>,
    /// Enrollments begun: id -> secret.
    pending: HashMap<String, TotpSecret>,
    /// Security keys confirmed.
    keys: Vec<KnownKey>,
    /// Key enrollments begun: id -> what the harness knows of it.
    key_pending: HashMap<String, PendingKey>,
}

/// A security key confirmed for a user.
struct KnownKey {
    /// Index in `Run::keys`; `None`: the engine registered it from data the harness had
    /// mutated, so the oracle does not know its private key and takes any answer naming it.
    key: Option<usize>,
    credential_id: Vec<u8>,
    rp_id: String,
    /// The counter last accepted, as far as the oracle knows for sure (at most the engine's).
    last: u32,
}

/// A key enrollment between `BeginKey` and `ConfirmKey`.
struct PendingKey {
    rp_id: String,
    registered: Option<Registered>,
}

/// The credential `RegisterKey` accepted, and the challenge of its test assertion.
#[derive(Clone)]
struct Registered {
    key: Option<usize>,
    credential_id: Vec<u8>,
    counter: u32,
    client_data: Vec<u8>,
}

/// What made an answer a valid factor.
#[derive(Clone)]
enum Proof {
    Totp(i64),
    Recovery(String),
    /// An assertion by this credential with this counter.
    Key(Vec<u8>, u32),
}

struct Login {
    handle: String,
    caller: Caller,
    uid: u32,
    proof: Option<Proof>,
    /// At a key step: its client data (the challenge) and relying party.
    challenge: Option<(Vec<u8>, String)>,
}

struct Run {
    engine: Engine,
    clock: ManualClock,
    known: HashMap<u32, Known>,
    logins: Vec<Login>,
    /// Every security key the harness made, enrolled or not.
    keys: Vec<FuzzKey>,
    stats: LoginStats,
}

/// What one run reached, so that a test can check the harness is not vacuous.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoginStats {
    /// Logins that ended in `Success` (each after a valid factor).
    pub successes: usize,
    /// TOTP enrollments confirmed.
    pub enrollments: usize,
    /// Of `successes`, those ended by a security key's assertion.
    pub key_successes: usize,
    /// Security-key enrollments confirmed.
    pub key_enrollments: usize,
}

fn caller(uid: u32) -> Caller {
    Caller {
        uid,
        sender: format!(":1.{uid}"),
    }
}

fn code_at(secret: &TotpSecret, at: i64) -> String {
    let p = TotpParams {
        algorithm: Algorithm::SHA1,
        digits: 6,
        period: 30,
    };
    totp::code_at(secret, p, u64::try_from(at).unwrap_or(0)).to_string()
}

/// The fresh step `answer` is a code for, if any.
fn totp_step(secret: &TotpSecret, last: Option<i64>, answer: &str, now: i64) -> Option<i64> {
    let current = now.div_euclid(PERIOD);
    (current - WINDOW..=current + WINDOW)
        .rev()
        .filter(|s| last.is_none_or(|l| *s > l) && *s >= 0)
        .find(|s| code_at(secret, s * PERIOD) == answer)
}

impl Run {
    fn known(&mut self, uid: u32) -> &mut Known {
        self.known.entry(uid).or_default()
    }

    /// Whether `answer` is a valid factor of `uid` now.
    fn proof(&self, uid: u32, answer: &str) -> Option<Proof> {
        let k = self.known.get(&uid)?;
        let now = twofactord::engine::Clock::now(&self.clock);
        if let Some(s) = k.secret.as_ref()
            && let Some(step) = totp_step(s, k.last_step, answer, now)
        {
            return Some(Proof::Totp(step));
        }
        let typed = recovery::normalize(answer)?;
        k.recovery
            .iter()
            .find(|c| recovery::normalize(c).is_some_and(|n| *n == *typed))
            .map(|c| Proof::Recovery(c.clone()))
    }

    fn spend(&mut self, uid: u32, proof: &Proof) {
        let k = self.known(uid);
        match proof {
            Proof::Totp(step) => k.last_step = Some(k.last_step.map_or(*step, |l| l.max(*step))),
            Proof::Recovery(code) => k.recovery.retain(|c| c != code),
            Proof::Key(id, counter) => {
                for key in k.keys.iter_mut().filter(|key| key.credential_id == *id) {
                    key.last = key.last.max(*counter);
                }
            }
        }
    }

    /// Whether `a` is a valid assertion of `uid` over `client_data`, by a key enrolled for
    /// them (see [`keys::valid_assertion`]).
    fn key_proof(&self, uid: u32, client_data: &[u8], a: &KeyAssertion) -> Option<Proof> {
        let k = self.known.get(&uid)?;
        k.keys
            .iter()
            .filter(|key| key.credential_id == a.credential_id)
            .find_map(|key| match key.key {
                Some(i) => {
                    keys::valid_assertion(&self.keys[i], &key.rp_id, client_data, key.last, a)
                }
                None => Some(counter_of(a).unwrap_or(0)),
            })
            .map(|counter| Proof::Key(a.credential_id.clone(), counter))
    }

    /// An answer: a current code, a neighbour's code, a recovery code, or anything.
    fn answer(&self, input: &mut Input<'_>, uid: u32) -> String {
        let now = twofactord::engine::Clock::now(&self.clock);
        let k = self.known.get(&uid);
        match input.below(6) {
            0 | 1 => match k.and_then(|k| k.secret.as_ref()) {
                Some(s) => code_at(s, now + PERIOD * (i64::from(input.byte() % 5) - 2)),
                None => input.short_text(),
            },
            2 => match k.filter(|k| !k.recovery.is_empty()) {
                Some(k) => {
                    let c = &k.recovery[input.below(k.recovery.len())];
                    if input.byte() & 1 == 0 {
                        c.clone()
                    } else {
                        c.to_uppercase().replace('-', " ")
                    }
                }
                None => input.short_text(),
            },
            3 => {
                // Somebody else's valid code.
                let other = PEOPLE[input.below(PEOPLE.len())].0;
                match self.known.get(&other).and_then(|k| k.secret.as_ref()) {
                    Some(s) => code_at(s, now),
                    None => "000000".into(),
                }
            }
            _ => input.short_text(),
        }
    }

    fn step(&mut self, input: &mut Input<'_>) {
        // Operations 0 to 11 came first: committed seeds keep their meaning.
        match input.below(16) {
            0 | 1 => self.begin_login(input),
            2..=4 => self.continue_login(input),
            5 => self.skip_key(input),
            6 => {
                if let Some(i) = self.pick_login(input) {
                    let who = if input.byte() & 1 == 0 {
                        self.logins[i].caller.clone()
                    } else {
                        caller(PEOPLE[input.below(PEOPLE.len())].0)
                    };
                    if self
                        .engine
                        .cancel_login(&who, &self.logins[i].handle)
                        .is_ok()
                        && who.uid != self.logins[i].caller.uid
                        && who.sender != self.logins[i].caller.sender
                    {
                        panic!("a login was cancelled by another caller");
                    }
                }
            }
            7 => self.enroll(input),
            8 => self.confirm(input),
            9 => {
                let secs = match input.below(4) {
                    0 => -i64::from(input.byte()),
                    1 => i64::from(input.byte()) * 60,
                    _ => i64::from(input.byte() % 40),
                };
                self.clock.advance(secs);
            }
            10 => self.weaken(input),
            11 => self.admin(input),
            12 => self.begin_key(input),
            13 => self.register_key(input),
            14 => self.confirm_key(input),
            _ => self.assert(input),
        }
    }

    fn pick_login(&self, input: &mut Input<'_>) -> Option<usize> {
        (!self.logins.is_empty()).then(|| input.below(self.logins.len()))
    }

    fn begin_login(&mut self, input: &mut Input<'_>) {
        let who = caller(PEOPLE[input.below(PEOPLE.len())].0);
        let (uid, user) = match input.below(8) {
            7 => (u32::MAX, input.short_text()),
            i => {
                let p = PEOPLE[i % PEOPLE.len()];
                (p.0, p.1.to_string())
            }
        };
        let mut context = HashMap::new();
        for _ in 0..input.below(4) {
            let key = match input.below(7) {
                0 | 1 => "service".to_string(),
                2 => "rhost".to_string(),
                3 => "tty".to_string(),
                4 => "session".to_string(),
                5 => "ruser".to_string(),
                _ => input.short_text(),
            };
            let value = match input.below(4) {
                0 => "sshd".to_string(),
                1 => "sudo".to_string(),
                _ => input.text(),
            };
            context.insert(key, value);
        }
        if let Ok((handle, step)) = self.engine.begin_login(&who, &user, &context) {
            assert!(
                step.kind != StepKind::Done(Outcome::Success),
                "BeginLogin succeeded before any factor"
            );
            assert!(
                who.uid == 0 || who.uid == uid,
                "uid {} began a login for {user:?}",
                who.uid
            );
            if !matches!(step.kind, StepKind::Done(_)) {
                let challenge = match step.kind {
                    StepKind::Key { request, .. } => Some((request.client_data, request.rp_id)),
                    _ => None,
                };
                self.logins.push(Login {
                    handle,
                    caller: who,
                    uid,
                    proof: None,
                    challenge,
                });
                if self.logins.len() > 16 {
                    self.logins.remove(0);
                }
            }
        }
    }

    fn continue_login(&mut self, input: &mut Input<'_>) {
        if let Some(i) = self.pick_login(input) {
            self.answer_login(i, input);
        }
    }

    /// Skips a key step, for any reason (some unknown); or, as the PAM module does when the
    /// user types a code at the key's cue, skips as declined and answers the code prompt.
    fn skip_key(&mut self, input: &mut Input<'_>) {
        let Some(i) = self.pick_login(input) else {
            return;
        };
        let reasons = [
            "no-key",
            "timeout",
            "declined",
            "",
            "no-device",
            "not-enrolled",
            "error",
        ];
        let reason = reasons[input.below(reasons.len())];
        let code_at_cue = input.byte() & 1 == 1;
        let (who, handle) = (self.logins[i].caller.clone(), self.logins[i].handle.clone());
        let r = self.engine.skip_key(&who, &handle, reason);
        let prompt = matches!(&r, Ok(s) if matches!(s.kind, StepKind::Prompt { .. }));
        self.after(i, r);
        if code_at_cue && prompt {
            // `after` removes only a finished login: `i` is still this one.
            self.answer_login(i, input);
        }
    }

    /// Answers login `i`'s prompt.
    fn answer_login(&mut self, i: usize, input: &mut Input<'_>) {
        let uid = self.logins[i].uid;
        let answer = self.answer(input, uid);
        let proof = self.proof(uid, &answer);
        if let Some(p) = proof {
            self.logins[i].proof = Some(p);
        }
        let (who, handle) = (self.logins[i].caller.clone(), self.logins[i].handle.clone());
        let r = self.engine.continue_login(&who, &handle, &answer);
        self.after(i, r);
    }

    /// Checks a login's step; forgets a finished login.
    fn after(&mut self, i: usize, r: Result<LoginStep, twofactor_bus::BusError>) {
        let Ok(step) = r else { return };
        let outcome = match step.kind {
            StepKind::Done(outcome) => outcome,
            StepKind::Key { request, .. } => {
                self.logins[i].challenge = Some((request.client_data, request.rp_id));
                return;
            }
            StepKind::Prompt { .. } => {
                self.logins[i].challenge = None;
                return;
            }
        };
        let login = self.logins.remove(i);
        if outcome == Outcome::Success {
            let Some(proof) = login.proof else {
                panic!(
                    "login of uid {} succeeded without a valid factor",
                    login.uid
                );
            };
            if matches!(proof, Proof::Key(..)) {
                self.stats.key_successes += 1;
            }
            self.spend(login.uid, &proof);
            self.stats.successes += 1;
        }
    }

    fn enroll(&mut self, input: &mut Input<'_>) {
        let uid = PEOPLE[input.below(PEOPLE.len())].0;
        let code = self.answer(input, uid);
        if let Ok(en) = self.engine.begin_totp(&caller(uid), &code) {
            let Some(bytes) = base32::decode(
                base32::Alphabet::Rfc4648 { padding: false },
                &en.secret_base32,
            ) else {
                panic!("an enrollment secret that is not base32");
            };
            self.known(uid)
                .pending
                .insert(en.enrollment_id, TotpSecret::from_bytes(bytes));
        }
    }

    fn confirm(&mut self, input: &mut Input<'_>) {
        let uid = PEOPLE[input.below(PEOPLE.len())].0;
        let now = twofactord::engine::Clock::now(&self.clock);
        let pending: Vec<String> = self.known(uid).pending.keys().cloned().collect();
        let id = if pending.is_empty() || input.byte() & 3 == 0 {
            input.short_text()
        } else {
            pending[input.below(pending.len())].clone()
        };
        let secret = self
            .known(uid)
            .pending
            .get(&id)
            .map(|s| TotpSecret::from_bytes(s.as_bytes().to_vec()));
        let code = match &secret {
            Some(s) if input.byte() & 1 == 0 => {
                code_at(s, now + PERIOD * (i64::from(input.byte() % 5) - 2))
            }
            _ => self.answer(input, uid),
        };
        let Ok(r) = self.engine.confirm_totp(&caller(uid), &id, &code) else {
            return;
        };
        if !r.accepted {
            return;
        }
        let Some(secret) = secret else {
            panic!("uid {uid} confirmed an enrollment it did not begin");
        };
        let Some(step) = totp_step(&secret, None, &code, now) else {
            panic!("an enrollment was confirmed with a wrong code");
        };
        let k = self.known(uid);
        k.pending.remove(&id);
        k.secret = Some(secret);
        k.last_step = Some(step);
        self.stats.enrollments += 1;
        let k = self.known(uid);
        if !r.recovery_codes.is_empty() {
            k.recovery = r.recovery_codes.clone();
        }
    }

    /// Disable and regenerate: accepted only with a valid code.
    fn weaken(&mut self, input: &mut Input<'_>) {
        let uid = PEOPLE[input.below(PEOPLE.len())].0;
        let code = self.answer(input, uid);
        let proof = self.proof(uid, &code);
        let disable = input.byte() & 1 == 0;
        let r = if disable {
            self.engine.disable(&caller(uid), &code)
        } else {
            self.engine.regenerate_recovery(&caller(uid), &code)
        };
        let Ok(r) = r else { return };
        if !r.accepted {
            return;
        }
        let Some(proof) = proof else {
            panic!("uid {uid}: disable/regenerate accepted without a valid code");
        };
        self.spend(uid, &proof);
        let k = self.known(uid);
        if disable {
            k.secret = None;
            k.recovery.clear();
            k.keys.clear();
        } else {
            k.recovery = r.recovery_codes.clone();
        }
    }

    fn admin(&mut self, input: &mut Input<'_>) {
        let by = caller(PEOPLE[input.below(PEOPLE.len())].0);
        let (uid, name) = PEOPLE[input.below(PEOPLE.len())];
        match input.below(4) {
            0 => {
                if self.engine.reset(&by, name).is_ok() {
                    let k = self.known(uid);
                    k.secret = None;
                    k.recovery.clear();
                    k.keys.clear();
                }
            }
            1 => {
                let _ = self.engine.unlock(&by, name);
            }
            2 => {
                if let Ok(r) = self.engine.issue_codes(&by, name)
                    && r.accepted
                {
                    self.known(uid).recovery = r.recovery_codes.clone();
                }
            }
            _ => self.engine.sender_gone(&by.sender),
        }
    }
}

/// The counter in an assertion's authenticatorData.
fn counter_of(a: &KeyAssertion) -> Option<u32> {
    Some(u32::from_be_bytes(
        a.authenticator_data.get(33..37)?.try_into().ok()?,
    ))
}

/// Maybe changes `bytes` as the input says: a flipped byte, or new bytes altogether.
fn mutate(input: &mut Input<'_>, bytes: &mut Vec<u8>) {
    match input.below(8) {
        0 if !bytes.is_empty() => {
            let at = usize::from(u16::from_le_bytes([input.byte(), input.byte()])) % bytes.len();
            bytes[at] ^= input.byte().max(1);
        }
        1 => *bytes = input.field().to_vec(),
        2 => bytes.truncate(input.below(bytes.len() + 1)),
        _ => {}
    }
}

/// Security keys: enrollment through the engine's calls, assertions at key steps.
impl Run {
    /// A key enrollment the harness began (anyone's), or a made-up id: (owner, id).
    fn pick_key_enrollment(&self, input: &mut Input<'_>) -> (u32, String) {
        let mut all: Vec<(u32, String)> = self
            .known
            .iter()
            .flat_map(|(uid, k)| k.key_pending.keys().map(|id| (*uid, id.clone())))
            .collect();
        // HashMap order differs between processes: sorted, an input replays exactly.
        all.sort();
        if all.is_empty() || input.byte() & 7 == 0 {
            (PEOPLE[input.below(PEOPLE.len())].0, input.short_text())
        } else {
            all.swap_remove(input.below(all.len()))
        }
    }

    /// The caller of an enrollment step: mostly its owner, sometimes anyone.
    fn enrollment_caller(&self, input: &mut Input<'_>, owner: u32) -> u32 {
        if input.byte() & 7 == 0 {
            PEOPLE[input.below(PEOPLE.len())].0
        } else {
            owner
        }
    }

    /// An assertion as the input chooses: by `preferred` (the key expected to answer) or any
    /// key the harness made; honest, replayed, with a repeated, rolled-back, zero or arbitrary
    /// counter; over `client_data` or another login's challenge or anything; for `rp_id` or
    /// another; with a touch and a PIN or any flags; then maybe mutated.
    fn make_assertion(
        &mut self,
        input: &mut Input<'_>,
        preferred: Option<usize>,
        rp_id: &str,
        client_data: &[u8],
    ) -> KeyAssertion {
        let which = match preferred {
            Some(k) if input.byte() & 3 != 0 => Some(k),
            _ if self.keys.is_empty() => None,
            _ => Some(input.below(self.keys.len())),
        };
        let Some(k) = which else {
            return KeyAssertion {
                credential_id: input.field().to_vec(),
                authenticator_data: input.field().to_vec(),
                signature: input.field().to_vec(),
            };
        };
        let how = input.below(10);
        if how == 9
            && let Some(old) = self.keys[k].last.clone()
        {
            return old;
        }
        let counter = match how {
            5 => self.keys[k].counter,
            6 => self.keys[k]
                .counter
                .saturating_sub(1 + u32::from(input.byte())),
            7 => 0,
            8 => input.u32(),
            _ => self.keys[k].counter.saturating_add(1),
        };
        let flags = match input.below(8) {
            0 => input.byte(),
            1 => FLAG_UP,
            _ => FLAG_UP | FLAG_UV,
        };
        let signed_over = match input.below(8) {
            0 => input.text().into_bytes(),
            1 => {
                let others: Vec<&Vec<u8>> = self
                    .logins
                    .iter()
                    .filter_map(|l| l.challenge.as_ref().map(|c| &c.0))
                    .collect();
                if others.is_empty() {
                    Vec::new()
                } else {
                    others[input.below(others.len())].clone()
                }
            }
            _ => client_data.to_vec(),
        };
        let rp = if input.below(16) == 0 {
            "pam://elsewhere"
        } else {
            rp_id
        };
        let key = &mut self.keys[k];
        let mut a = key.assert(rp, flags, counter, &signed_over);
        key.counter = key.counter.max(counter);
        key.last = Some(a.clone());
        if input.byte() & 3 == 0 {
            match input.below(3) {
                0 => mutate(input, &mut a.credential_id),
                1 => mutate(input, &mut a.authenticator_data),
                _ => mutate(input, &mut a.signature),
            }
        }
        a
    }

    /// `BeginKey`: a user who has a factor must prove it with a code.
    fn begin_key(&mut self, input: &mut Input<'_>) {
        let uid = PEOPLE[input.below(PEOPLE.len())].0;
        let name = match input.below(4) {
            0 => input.short_text(),
            n => format!("key {n}"),
        };
        let code = self.answer(input, uid);
        let proof = self.proof(uid, &code);
        let Ok(en) = self.engine.begin_key(&caller(uid), &name, &code) else {
            return;
        };
        let k = self.known(uid);
        if k.secret.is_some() || !k.keys.is_empty() {
            let Some(proof) = proof else {
                panic!("uid {uid}: a key enrollment began without a proof of the factor it has");
            };
            self.spend(uid, &proof);
        }
        self.known(uid).key_pending.insert(
            en.enrollment_id,
            PendingKey {
                rp_id: en.rp_id,
                registered: None,
            },
        );
    }

    /// `RegisterKey`: a new key's (or an old key's) registration, maybe mutated.
    fn register_key(&mut self, input: &mut Input<'_>) {
        let (owner, id) = self.pick_key_enrollment(input);
        let uid = self.enrollment_caller(input, owner);
        let rp_id = self
            .known
            .get(&owner)
            .and_then(|k| k.key_pending.get(&id))
            .map_or_else(|| "pam://fuzz".to_string(), |p| p.rp_id.clone());
        let k = if self.keys.is_empty() || input.byte() & 3 != 0 {
            let n = u32::try_from(self.keys.len()).unwrap_or(u32::MAX);
            let Some(key) = FuzzKey::new(n, input.byte() & 1 == 1) else {
                return;
            };
            self.keys.push(key);
            self.keys.len() - 1
        } else {
            input.below(self.keys.len())
        };
        let flags = match input.below(8) {
            0 => input.byte(),
            _ => FLAG_UP | FLAG_UV,
        };
        let key = &mut self.keys[k];
        key.counter = key.counter.saturating_add(1);
        let mut data = key.registration(&rp_id, flags, key.counter);
        if input.byte() & 3 == 0 {
            mutate(input, &mut data);
        }
        let Ok(request) = self.engine.register_key(&caller(uid), &id, &data) else {
            return;
        };
        let Some((counter, credential_id, rest)) = keys::registered(&data) else {
            panic!("RegisterKey accepted authenticatorData without a credential: {data:02x?}");
        };
        let Some(pending) = self.known.get(&uid).and_then(|k| k.key_pending.get(&id)) else {
            panic!("uid {uid} registered a key in an enrollment it did not begin");
        };
        if data.get(..32) != Some(&keys::rp_id_hash(&pending.rp_id)[..])
            || data.get(32).is_none_or(|f| f & FLAG_UP == 0)
        {
            panic!("RegisterKey accepted a credential of another relying party or without a touch");
        }
        let key = &self.keys[k];
        let known =
            (credential_id == key.credential_id && rest.starts_with(&key.cose())).then_some(k);
        let registered = Registered {
            key: known,
            credential_id: credential_id.to_vec(),
            counter,
            client_data: request.client_data,
        };
        if let Some(p) = self.known(uid).key_pending.get_mut(&id) {
            p.registered = Some(registered);
        }
    }

    /// `ConfirmKey`: the test assertion, honest or not.
    fn confirm_key(&mut self, input: &mut Input<'_>) {
        let (owner, id) = self.pick_key_enrollment(input);
        let uid = self.enrollment_caller(input, owner);
        let pending = self.known.get(&owner).and_then(|k| k.key_pending.get(&id));
        let rp_id = pending.map_or_else(|| "pam://fuzz".to_string(), |p| p.rp_id.clone());
        let registered = pending.and_then(|p| p.registered.clone());
        let (preferred, client_data) = registered
            .as_ref()
            .map_or((None, Vec::new()), |r| (r.key, r.client_data.clone()));
        let a = self.make_assertion(input, preferred, &rp_id, &client_data);
        let Ok(r) = self.engine.confirm_key(&caller(uid), &id, &a) else {
            return;
        };
        if !r.accepted {
            return;
        }
        let Some(PendingKey {
            rp_id,
            registered: Some(reg),
        }) = self.known(uid).key_pending.remove(&id)
        else {
            panic!("uid {uid} confirmed a key enrollment it did not begin and register");
        };
        let counter = match reg.key {
            Some(k) => {
                let valid = a.credential_id == reg.credential_id
                    && keys::valid_assertion(
                        &self.keys[k],
                        &rp_id,
                        &reg.client_data,
                        reg.counter,
                        &a,
                    )
                    .is_some();
                if !valid {
                    panic!("uid {uid}: a key enrollment was confirmed with an invalid assertion");
                }
                counter_of(&a).unwrap_or(0)
            }
            None => counter_of(&a).unwrap_or(0),
        };
        let k = self.known(uid);
        k.keys.push(KnownKey {
            key: reg.key,
            credential_id: reg.credential_id,
            rp_id,
            last: counter,
        });
        if !r.recovery_codes.is_empty() {
            k.recovery = r.recovery_codes.clone();
        }
        self.stats.key_enrollments += 1;
    }

    /// `Assert` at a login's key step (or at any other step: refused).
    fn assert(&mut self, input: &mut Input<'_>) {
        let Some(i) = self.pick_login(input) else {
            return;
        };
        let uid = self.logins[i].uid;
        let challenge = self.logins[i].challenge.clone();
        let (client_data, rp_id) = challenge
            .clone()
            .unwrap_or_else(|| (input.text().into_bytes(), "pam://fuzz".into()));
        let mine: Vec<usize> = self
            .known
            .get(&uid)
            .map(|k| k.keys.iter().filter_map(|key| key.key).collect())
            .unwrap_or_default();
        let preferred = (!mine.is_empty()).then(|| mine[input.below(mine.len())]);
        let a = self.make_assertion(input, preferred, &rp_id, &client_data);
        // Only a login at a key step can take an assertion.
        let proof = challenge.and_then(|(cd, _)| self.key_proof(uid, &cd, &a));
        let (who, handle) = (self.logins[i].caller.clone(), self.logins[i].handle.clone());
        let r = self.engine.assert_login(&who, &handle, &a);
        // An assertion ends a login in success by itself: an earlier answer does not count.
        let success = matches!(&r, Ok(s) if s.kind == StepKind::Done(Outcome::Success));
        if success && proof.is_none() {
            panic!(
                "login of uid {uid} succeeded with an assertion that is not valid: {:02x?}",
                (&a.credential_id, &a.authenticator_data, &a.signature)
            );
        }
        if success {
            self.logins[i].proof = proof;
        }
        self.after(i, r);
    }
}

/// One run: the first byte picks the policy, the rest are operations.
pub fn login(data: &[u8]) {
    let _ = login_stats(data);
}

/// [`login`], telling what the run reached.
pub fn login_stats(data: &[u8]) -> LoginStats {
    let mut input = Input::new(data);
    let text = POLICIES[input.below(POLICIES.len())];
    let Ok(policy) = Policy::parse(Path::new("/fuzz/policy.toml"), text, &accounts()) else {
        panic!("a harness policy does not parse");
    };
    let Ok(store) = SqliteStore::in_memory() else {
        panic!("no in-memory store");
    };
    let clock = ManualClock::at(T0);
    let engine = Engine::new(
        Box::new(store),
        policy,
        None,
        Box::new(accounts()),
        Box::new(clock.clone()),
    );
    let mut run = Run {
        engine,
        clock,
        known: HashMap::new(),
        logins: Vec::new(),
        keys: Vec::new(),
        stats: LoginStats::default(),
    };
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        run.step(&mut input);
    }
    run.stats
}
