//! The caps on open logins, key enrollments, proofs and tokens (`engine_limits.rs`), and how
//! long each login stage waits.

use super::*;
use crate::engine::limits::{
    CODE_TTL_SECS, ENROLL_AT_LOGIN_TTL_SECS, KEY_TTL_SECS, LOGIN_MAX_SECS, MAX_PENDING,
    MAX_PROOFS_PER_UID, MAX_SESSIONS, MAX_SESSIONS_NON_ROOT, MAX_SESSIONS_PER_TARGET,
    MAX_SESSIONS_PER_UID, MAX_TOKENS_PER_UID,
};
use crate::store::KeyFactor;

/// `uid` on its own bus connection number `n`.
fn on_conn(uid: u32, n: usize) -> Caller {
    Caller {
        uid,
        sender: format!(":2.{uid}.{n}"),
    }
}

fn begin(e: &Engine, c: &Caller, user: &str) -> Result<(String, LoginStep), BusError> {
    e.begin_login(c, user, &ctx())
}

/// The audit records `event` of `user`.
fn audited(e: &Engine, user: &str, event: &str) -> Vec<AuditEntry> {
    e.audit_log(&root(), user, 0, 1000)
        .expect("audit")
        .into_iter()
        .filter(|a| a.event == event)
        .collect()
}

/// A login session of `uid` for itself, as if begun by that uid on connection `n`.
fn fake_session(uid: u32, n: usize, now: i64) -> LoginSession {
    LoginSession {
        sender: format!(":3.{uid}.{n}"),
        caller_uid: uid,
        account: Account {
            name: format!("u{uid}"),
            uid,
            gids: vec![uid],
            groups: Vec::new(),
        },
        ctx: LoginContext::default(),
        attempts_left: 3,
        expires: now + CODE_TTL_SECS,
        deadline: now + LOGIN_MAX_SECS,
        stage: Stage::Code,
        authenticated: false,
    }
}

/// Gives `uid` a security key (never checked here: proofs only need one to exist).
fn give_key(e: &Engine, uid: u32, name: &str) {
    let policy = e.policy();
    let key = KeyFactor {
        name: "k".into(),
        credential_id: vec![1, 2, 3],
        public_key_cose: vec![0xa0],
        rp_id: policy.fido2.rp_id.clone(),
        sign_count: 0,
        user_verification: false,
        source: "enrolled".into(),
        created: T0,
        last_used: 0,
    };
    let account = e.accounts.user_by_uid(uid).expect("account");
    let r = e.record(&account, &root(), "enroll", "success", None, "test key");
    let mut store = e.store().expect("store");
    let done = store
        .add_keys(uid, name, &[key], Codes::Keep, Existing::Proven, &r)
        .expect("add key");
    assert!(matches!(done, Activation::Done { .. }));
}

#[test]
fn a_non_root_caller_holds_at_most_a_few_logins_and_is_audited_once_a_minute() {
    let (e, clock) = engine("");
    let _ = enroll(&e, &clock, 1000);
    let _ = enroll(&e, &clock, 1001);
    // bob on many connections: only MAX_SESSIONS_PER_UID logins of his are kept.
    let mut accepted = 0;
    let mut refused = 0;
    for n in 0..4 * MAX_SESSIONS_PER_UID {
        match begin(&e, &on_conn(1001, n), "bob") {
            Ok((h, _)) => {
                assert!(!h.is_empty());
                accepted += 1;
            }
            Err(BusError::NotAllowed(m)) => {
                assert!(m.contains("too many logins"), "{m}");
                refused += 1;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(accepted, MAX_SESSIONS_PER_UID);
    assert_eq!(refused, 3 * MAX_SESSIONS_PER_UID);
    // Neither alice's login nor root's login of bob is in the way.
    let (h, step) = begin(&e, &root(), "alice").expect("alice");
    assert!(matches!(step.kind, StepKind::Prompt { .. }));
    assert!(!h.is_empty());
    let (h, _) = begin(&e, &on_conn(0, 1), "bob").expect("root for bob");
    assert!(!h.is_empty());
    // alice's own non-root login too.
    assert!(begin(&e, &on_conn(1000, 1), "alice").is_ok());
    // One audit record for the whole flood, naming the cap.
    let records = audited(&e, "bob", "limit-reached");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].result, "refused");
    assert!(
        records[0].detail.contains("per non-root caller"),
        "{}",
        records[0].detail
    );
    // A minute later the next refusal is recorded, with the count of the unrecorded ones.
    clock.advance(61);
    assert!(begin(&e, &on_conn(1001, 99), "bob").is_err());
    let records = audited(&e, "bob", "limit-reached");
    assert_eq!(records.len(), 2, "{records:?}");
    let n = 3 * MAX_SESSIONS_PER_UID - 1;
    assert!(
        records
            .iter()
            .any(|r| r.detail.contains(&format!("{n} more refused"))),
        "{records:?}"
    );
    assert!(audited(&e, "alice", "limit-reached").is_empty());
}

#[test]
fn one_target_user_holds_at_most_a_few_logins_whoever_asks() {
    let (e, clock) = engine("");
    let _ = enroll(&e, &clock, 1000);
    let _ = enroll(&e, &clock, 1001);
    // Root (sshd: one connection per remote attempt) for alice over and over.
    for n in 0..MAX_SESSIONS_PER_TARGET {
        begin(&e, &on_conn(0, n), "alice").expect("under the cap");
    }
    for n in 0..5 {
        let err = begin(&e, &on_conn(0, 100 + n), "alice").expect_err("over the cap");
        assert!(matches!(err, BusError::NotAllowed(_)), "{err:?}");
    }
    // bob's logins are not in alice's cap.
    let (h, _) = begin(&e, &on_conn(0, 200), "bob").expect("bob");
    let ok = e
        .continue_login(&on_conn(0, 200), &h, "000000")
        .expect("continue");
    assert!(matches!(ok.kind, StepKind::Prompt { .. }), "{ok:?}");
    let records = audited(&e, "alice", "limit-reached");
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(records[0].detail.contains("per user"), "{records:?}");
    // Unanswered ones expire and make room; a cancelled one frees its place at once.
    clock.advance(CODE_TTL_SECS + 1);
    let handles: Vec<String> = (0..MAX_SESSIONS_PER_TARGET)
        .map(|n| {
            begin(&e, &on_conn(0, 300 + n), "alice")
                .expect("room again")
                .0
        })
        .collect();
    assert!(begin(&e, &on_conn(0, 401), "alice").is_err());
    e.cancel_login(&on_conn(0, 300), &handles[0])
        .expect("cancel");
    begin(&e, &on_conn(0, 402), "alice").expect("room after a cancel");
}

#[test]
fn non_root_callers_leave_the_rest_of_the_table_to_root() {
    let (e, clock) = engine("");
    let _ = enroll(&e, &clock, 1000);
    let _ = enroll(&e, &clock, 1001);
    let now = clock.now();
    {
        let mut sessions = e.sessions().expect("sessions");
        // Many non-root users, each within its own cap, together at their share.
        for i in 0..MAX_SESSIONS_NON_ROOT {
            let uid = 5000 + (i / MAX_SESSIONS_PER_UID) as u32;
            sessions.insert(format!("n{i}"), fake_session(uid, i, now));
        }
    }
    let err = begin(&e, &on_conn(1001, 1), "bob").expect_err("non-root share is full");
    assert!(matches!(err, BusError::NotAllowed(_)), "{err:?}");
    // Root's callers still find room, for any user.
    begin(&e, &on_conn(0, 1), "bob").expect("root for bob");
    begin(&e, &on_conn(0, 2), "alice").expect("root for alice");
    let records = audited(&e, "bob", "limit-reached");
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(records[0].detail.contains("non-root callers together"));
    // Only a full table stops root.
    {
        let mut sessions = e.sessions().expect("sessions");
        let mut i = 0;
        while sessions.len() < MAX_SESSIONS {
            let mut s = fake_session(0, i, now);
            s.account.uid = 100_000 + i as u32;
            sessions.insert(format!("r{i}"), s);
            i += 1;
        }
    }
    let err = begin(&e, &on_conn(0, 3), "alice").expect_err("table full");
    assert!(matches!(err, BusError::NotAllowed(_)), "{err:?}");
    // Unanswered logins expire and free the table.
    clock.advance(CODE_TTL_SECS + 1);
    begin(&e, &on_conn(0, 4), "alice").expect("room again");
    begin(&e, &on_conn(1001, 2), "bob").expect("room again for bob");
}

#[test]
fn each_stage_waits_its_own_time() {
    let (e, clock) = engine("[login]\nattempts = 3\n");
    let s = enroll(&e, &clock, 1000);
    clock.advance(30);
    // An unanswered code prompt expires quickly.
    let (h, _) = begin(&e, &root(), "alice").expect("begin");
    clock.advance(CODE_TTL_SECS + 1);
    assert!(matches!(
        e.continue_login(&root(), &h, &code(&s, clock.now())),
        Err(BusError::NoSuchSession(_))
    ));
    // Each answer starts the wait again.
    let (h, _) = begin(&e, &root(), "alice").expect("begin");
    clock.advance(CODE_TTL_SECS - 10);
    let again = e.continue_login(&root(), &h, "000000").expect("wrong");
    assert!(matches!(again.kind, StepKind::Prompt { .. }));
    clock.advance(CODE_TTL_SECS - 10);
    let done = e
        .continue_login(&root(), &h, &code(&s, clock.now()))
        .expect("right");
    assert_eq!(outcome(&done), Some(Outcome::Success));
    // No login outlives its deadline, however often it is answered.
    clock.advance(30);
    let (h, _) = begin(&e, &root(), "alice").expect("begin");
    let mut waited = 0;
    loop {
        clock.advance(CODE_TTL_SECS - 1);
        waited += CODE_TTL_SECS - 1;
        // A misdirected answer (a key skip at a code prompt) is refused and the login put back.
        match e.skip_key(&root(), &h, twofactor_bus::skip_reason::TIMEOUT) {
            Err(BusError::InvalidArgument(_)) => {
                assert!(waited < LOGIN_MAX_SECS, "alive after {waited}s");
            }
            Err(BusError::NoSuchSession(_)) => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(waited >= LOGIN_MAX_SECS, "{waited}");
    // The key step waits longer than a code prompt; the code prompt after it, its own time.
    give_key(&e, 1001, "bob");
    let (h, step) = begin(&e, &root(), "bob").expect("begin");
    assert!(matches!(step.kind, StepKind::Key { .. }), "{step:?}");
    clock.advance(KEY_TTL_SECS - 1);
    let step = e
        .skip_key(&root(), &h, twofactor_bus::skip_reason::TIMEOUT)
        .expect("still waiting for the key");
    assert!(matches!(step.kind, StepKind::Prompt { .. }), "{step:?}");
    clock.advance(CODE_TTL_SECS + 1);
    assert!(matches!(
        e.continue_login(&root(), &h, "000000"),
        Err(BusError::NoSuchSession(_))
    ));
}

#[test]
fn enrollment_at_login_waits_longer_than_a_code_prompt() {
    let (e, clock) = engine(
        "default_mode = \"optional\"\n[groups.wheel]\nmode = \"required\"\nenroll_at_login = true\n",
    );
    let (h, step) = begin(&e, &root(), "alice").expect("begin");
    let secret = secret_shown(&step);
    // Left unanswered, it ends after its own wait.
    clock.advance(ENROLL_AT_LOGIN_TTL_SECS + 1);
    assert!(matches!(
        e.continue_login(&root(), &h, &code(&secret, clock.now())),
        Err(BusError::NoSuchSession(_))
    ));
    // Answered well past a code prompt's wait: setting up an app takes a while.
    let (h, step) = begin(&e, &root(), "alice").expect("begin");
    let secret = secret_shown(&step);
    clock.advance(4 * CODE_TTL_SECS);
    let ack = e
        .continue_login(&root(), &h, &code(&secret, clock.now()))
        .expect("code");
    assert!(notices_text(&ack).contains("Recovery codes"), "{ack:?}");
    // Storing the recovery codes gets the same time.
    clock.advance(4 * CODE_TTL_SECS);
    let done = e.continue_login(&root(), &h, "").expect("ack");
    assert_eq!(outcome(&done), Some(Outcome::Success));
}

fn secret_shown(step: &LoginStep) -> TotpSecret {
    let text = notices_text(step);
    let b32 = text
        .split("Secret: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("secret");
    TotpSecret::from_bytes(
        base32::decode(base32::Alphabet::Rfc4648 { padding: false }, b32).expect("b32"),
    )
}

#[test]
fn key_proofs_are_capped_per_user_and_dropped_with_their_connection() {
    let (e, clock) = engine("");
    let alice = enroll(&e, &clock, 1000);
    give_key(&e, 1001, "bob");
    let flood = on_conn(1001, 1);
    for _ in 0..MAX_PROOFS_PER_UID {
        e.begin_key_proof(&flood).expect("under the cap");
    }
    for n in 0..10 {
        let err = e
            .begin_key_proof(&on_conn(1001, 10 + n))
            .expect_err("over the cap");
        assert!(matches!(err, BusError::NotAllowed(_)), "{err:?}");
    }
    assert_eq!(audited(&e, "bob", "limit-reached").len(), 1);
    // alice is not affected: her key enrollment starts.
    clock.advance(30);
    e.begin_key(&on_conn(1000, 1), "alice-key", &code(&alice, clock.now()))
        .expect("alice's enrollment");
    // The flooding connection leaves the bus: its proofs go with it.
    e.sender_gone(&flood.sender);
    for _ in 0..MAX_PROOFS_PER_UID {
        e.begin_key_proof(&on_conn(1001, 2)).expect("room again");
    }
    // Expired proofs go too.
    clock.advance(121);
    e.begin_key_proof(&on_conn(1001, 3)).expect("expired");
}

#[test]
fn key_enrollments_are_dropped_with_their_connection() {
    let (e, _clock) = engine("");
    let a = on_conn(1000, 1);
    // Another connection leaving does not touch it.
    let en = e.begin_key(&a, "k1", "").expect("begin");
    e.sender_gone(":9.9");
    let err = e
        .register_key(&a, &en.enrollment_id, &[0u8; 40])
        .expect_err("garbage");
    assert!(matches!(err, BusError::InvalidArgument(_)), "{err:?}");
    // Its own connection leaving does.
    let en = e.begin_key(&a, "k1", "").expect("begin");
    e.sender_gone(&a.sender);
    let err = e
        .register_key(&a, &en.enrollment_id, &[0u8; 40])
        .expect_err("gone");
    assert!(matches!(err, BusError::NoSuchSession(_)), "{err:?}");
}

#[test]
fn the_pending_key_table_refuses_when_full_and_says_so_in_the_audit_log() {
    let (e, _clock) = engine("");
    {
        let mut ch = e.challenges().expect("challenges");
        for i in 0..MAX_PENDING {
            let uid = 5000 + (i / MAX_PROOFS_PER_UID) as u32;
            ch.insert_test_proof(&format!("p{i}"), uid, T0 + 100);
        }
    }
    let err = e.begin_key(&on_conn(1000, 1), "k1", "").expect_err("full");
    assert!(matches!(err, BusError::NotAllowed(_)), "{err:?}");
    let records = audited(&e, "alice", "limit-reached");
    assert_eq!(records.len(), 1, "{records:?}");
}

#[test]
fn proof_tokens_are_capped_per_user_oldest_first() {
    let mut ch = keys::KeyChallenges::default();
    for i in 0..MAX_TOKENS_PER_UID + 2 {
        assert!(ch.add_token(format!("t{i}"), 1001, T0 + i as i64));
    }
    assert_eq!(ch.tokens_of(1001), MAX_TOKENS_PER_UID);
    assert!(!ch.has_token("t0") && !ch.has_token("t1"));
    assert!(ch.has_token(&format!("t{}", MAX_TOKENS_PER_UID + 1)));
    // Other users' tokens fill the table: a new user is refused, a user with tokens renews.
    let mut i = 0;
    while ch.token_count() < MAX_PENDING {
        let uid = 6000 + (i / MAX_TOKENS_PER_UID) as u32;
        assert!(ch.add_token(format!("o{i}"), uid, T0 + 50));
        i += 1;
    }
    assert!(!ch.add_token("new".into(), 1000, T0 + 60));
    assert!(ch.add_token("renew".into(), 1001, T0 + 60));
}
