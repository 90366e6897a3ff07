//! The daemon's login and enrollment state machine, driven by arbitrary operations: logins by
//! any caller for any name with any context, any answers, skipped keys, cancels, enrollments,
//! disables, code regeneration, admin resets, the clock moving both ways.
//!
//! The harness learns secrets only from the engine's own outputs (an enrollment's secret, the
//! recovery codes it shows) and keeps an oracle of which answers are valid factors. The
//! invariants: a login ends in `Success` only after an answer that was a valid factor of the
//! login's user (a TOTP code of a fresh step, an unused recovery code); an enrollment, a
//! disable or a code regeneration is accepted only with a valid code; nothing panics.
//!
//! The oracle is deliberately permissive (it forgets a use only when the engine reports
//! success), so that a finding is always a real one.
//!
//! Security keys are outside this target: a key login needs a signature the harness would have
//! to make with a key the engine enrolled, and what the engine parses from a key (authenticator
//! data, COSE keys, attestations and assertions as they come over the bus) is the `fido2`
//! target's. Key logins, counters and their races are tested end to end (tests/tests/keys.rs,
//! crash.rs) with the software authenticator.

use std::collections::HashMap;
use std::path::Path;

use twofactor_bus::{LoginStep, Outcome, StepKind};
use twofactord::engine::{Caller, Engine};
use twofactord::policy::{Algorithm, Policy};
use twofactord::recovery;
use twofactord::store::SqliteStore;
use twofactord::testkit::ManualClock;
use twofactord::totp::{self, TotpParams, TotpSecret};

use crate::Input;
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
}

/// What made an answer a valid factor.
#[derive(Clone)]
enum Proof {
    Totp(i64),
    Recovery(String),
}

struct Login {
    handle: String,
    caller: Caller,
    uid: u32,
    proof: Option<Proof>,
}

struct Run {
    engine: Engine,
    clock: ManualClock,
    known: HashMap<u32, Known>,
    logins: Vec<Login>,
    stats: LoginStats,
}

/// What one run reached, so that a test can check the harness is not vacuous.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoginStats {
    /// Logins that ended in `Success` (each after a valid factor).
    pub successes: usize,
    /// Enrollments confirmed.
    pub enrollments: usize,
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
        }
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
        match input.below(12) {
            0 | 1 => self.begin_login(input),
            2..=4 => self.continue_login(input),
            5 => {
                if let Some(i) = self.pick_login(input) {
                    let reason = ["no-key", "timeout", "declined", ""][input.below(4)];
                    let l = &self.logins[i];
                    let r = self
                        .engine
                        .skip_key(&l.caller.clone(), &l.handle.clone(), reason);
                    self.after(i, r);
                }
            }
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
            _ => self.admin(input),
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
                self.logins.push(Login {
                    handle,
                    caller: who,
                    uid,
                    proof: None,
                });
                if self.logins.len() > 16 {
                    self.logins.remove(0);
                }
            }
        }
    }

    fn continue_login(&mut self, input: &mut Input<'_>) {
        let Some(i) = self.pick_login(input) else {
            return;
        };
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
        let StepKind::Done(outcome) = step.kind else {
            return;
        };
        let login = self.logins.remove(i);
        if outcome == Outcome::Success {
            let Some(proof) = login.proof else {
                panic!(
                    "login of uid {} succeeded without a valid factor",
                    login.uid
                );
            };
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
