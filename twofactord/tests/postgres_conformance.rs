//! The store conformance suite, atomic races and durability against a real PostgreSQL that the
//! test starts itself (initdb in a temporary directory, Unix socket only).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../tests/src/postgres.rs"]
mod pg;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};

use pg::PgServer;
use twofactord::recovery::StoredCode;
use twofactord::store::postgres::{PgOptions, PostgresStore};
use twofactord::store::seal::SealingKey;
use twofactord::store::*;

fn names(uid: u32) -> Option<String> {
    Some(match uid {
        1000 => "alice".into(),
        1001 => "bob".into(),
        other => format!("u{other}"),
    })
}

fn options(url: String, key: Option<SealingKey>, host: &str) -> PgOptions {
    PgOptions {
        url,
        password: None,
        key,
        host: host.into(),
        name_of: Arc::new(names),
        create_schema: true,
    }
}

static DB: AtomicU32 = AtomicU32::new(0);

/// A fresh database on `server`; its URL as the superuser.
fn fresh(server: &PgServer) -> String {
    let db = format!("t{}", DB.fetch_add(1, Ordering::Relaxed));
    server.create_db(&db);
    server.url(&db, "postgres")
}

fn rec(event: &str) -> AuditRecord {
    AuditRecord {
        uid: 1000,
        user: "alice".into(),
        event: event.into(),
        result: "success".into(),
        ..Default::default()
    }
}

fn enrolled(s: &mut PostgresStore, step: u64) {
    s.put_pending_totp(&PendingTotp {
        id: "p".into(),
        uid: 1000,
        secret: TotpSecret::from_bytes(vec![9; 20]),
        params: TotpParams {
            algorithm: Algorithm::SHA1,
            digits: 6,
            period: 30,
        },
        expires: i64::MAX,
        proven: false,
    })
    .unwrap();
    assert_eq!(
        s.activate_totp(1000, "alice", "p", step, 1, Codes::Keep, Existing::NoFactor)
            .unwrap(),
        Activation::Done { codes_set: false }
    );
}

/// One server for the whole file (starting one costs seconds); every check has its own
/// database.
#[test]
fn postgres_backend() {
    if !pg::available() {
        panic!("PostgreSQL 15 is not installed (scripts/deps.sh installs it)");
    }
    let mut server = PgServer::start();

    // The suite, without and with a sealing key.
    conformance::run_all(|| PostgresStore::open(options(fresh(&server), None, "h1")).unwrap());
    conformance::run_all(|| {
        let key = SealingKey::from_bytes([3; 32]);
        PostgresStore::open(options(fresh(&server), Some(key), "h1")).unwrap()
    });

    sealed_at_rest(&server);
    two_hosts_one_step_exactly_one_wins(&server);
    one_recovery_code_two_hosts(&server);
    failures_lock_across_hosts(&server);
    uid_mismatch_is_refused_and_audited(&server);
    audit_records_the_host(&server);
    least_privilege_role(&server);
    durable_across_a_crash(&mut server);
    breaker_refuses_without_trying_then_recovers(&mut server);
}

fn sealed_at_rest(server: &PgServer) {
    let url = fresh(server);
    let key = SealingKey::from_bytes([5; 32]);
    let mut s = PostgresStore::open(options(url.clone(), Some(key), "h1")).unwrap();
    enrolled(&mut s, 10);
    let db = url.split('/').nth(3).unwrap().split('?').next().unwrap();
    // What a dump would show: the sealed format, not the secret.
    let hex = server.sql(db, "SELECT encode(secret, 'hex') FROM twofactor.totp");
    assert!(hex.starts_with("54465331"), "not sealed: {hex}");
    assert!(!hex.contains(&"09".repeat(20)));
    assert_eq!(
        s.totp(1000).unwrap().unwrap().secret.as_bytes(),
        &[9u8; 20][..]
    );
    // Another key opens nothing: an error, never "not enrolled".
    let other = PostgresStore::open(options(
        url.clone(),
        Some(SealingKey::from_bytes([6; 32])),
        "h2",
    ))
    .unwrap();
    assert!(other.totp(1000).is_err());
    // A row moved to another account does not open either.
    server.sql(
        db,
        "INSERT INTO twofactor.accounts VALUES ('bob', 1001, 'h', 0);
         INSERT INTO twofactor.totp SELECT 'bob', secret, algorithm, digits, period, created,
             last_used FROM twofactor.totp WHERE name = 'alice'",
    );
    assert!(s.totp(1001).is_err());
}

fn two_hosts_one_step_exactly_one_wins(server: &PgServer) {
    let url = fresh(server);
    let mut a = PostgresStore::open(options(url.clone(), None, "a")).unwrap();
    enrolled(&mut a, 10);
    for round in 0..20u64 {
        let step = 11 + round;
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|h| {
                let url = url.clone();
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let mut s = PostgresStore::open(options(url, None, h)).unwrap();
                    barrier.wait();
                    s.accept_totp_step(1000, step, 5, &rec("login")).unwrap()
                })
            })
            .collect();
        let wins = handles
            .into_iter()
            .filter(|_| true)
            .map(|h| h.join().unwrap())
            .filter(|w| *w)
            .count();
        assert_eq!(wins, 1, "round {round}: {wins} hosts accepted step {step}");
    }
    assert_eq!(
        a.user_state(1000).unwrap().unwrap().last_totp_step,
        Some(30)
    );
    // Each accepted step audited once.
    assert_eq!(a.audit(Some(1000), 0, 1000).unwrap().len(), 20);
}

fn one_recovery_code_two_hosts(server: &PgServer) {
    let url = fresh(server);
    let mut a = PostgresStore::open(options(url.clone(), None, "a")).unwrap();
    let codes: Vec<StoredCode> = (0..20)
        .map(|i| StoredCode {
            id: 0,
            salt: vec![i; 16],
            hash: vec![i; 32],
        })
        .collect();
    a.replace_recovery(1000, &codes).unwrap();
    for code in a.unused_recovery(1000).unwrap() {
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|h| {
                let url = url.clone();
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let mut s = PostgresStore::open(options(url, None, h)).unwrap();
                    barrier.wait();
                    s.consume_recovery(1000, code.id, 5, &rec("recovery"))
                        .unwrap()
                })
            })
            .collect();
        let wins = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|w| *w)
            .count();
        assert_eq!(wins, 1, "code {} used {wins} times", code.id);
    }
    assert!(a.unused_recovery(1000).unwrap().is_empty());
}

fn failures_lock_across_hosts(server: &PgServer) {
    let url = fresh(server);
    let limit = RateLimit {
        max_failures: 40,
        lockout: std::time::Duration::from_secs(60),
        escalation: 2,
        max_lockout: std::time::Duration::from_secs(600),
    };
    // 2 hosts x 20 concurrent failures: every one counted, so exactly one starts the lockout.
    let handles: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|h| {
            let url = url.clone();
            let limit = limit.clone();
            std::thread::spawn(move || {
                let mut s = PostgresStore::open(options(url, None, h)).unwrap();
                (0..20)
                    .filter(|_| {
                        s.record_failure(1000, "alice", 100, &limit, &rec("failure"))
                            .unwrap()
                            .locked_until
                            .is_some()
                    })
                    .count()
            })
        })
        .collect();
    let lockouts: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(lockouts, 1);
    let s = PostgresStore::open(options(url, None, "c")).unwrap();
    let st = s.user_state(1000).unwrap().unwrap();
    assert_eq!((st.failures, st.lock_level, st.locked_until), (0, 1, 160));
}

fn uid_mismatch_is_refused_and_audited(server: &PgServer) {
    let url = fresh(server);
    let mut a = PostgresStore::open(options(url.clone(), None, "a")).unwrap();
    enrolled(&mut a, 10);
    // Host b's NSS gives alice another uid.
    let mut b = PostgresStore::open(PgOptions {
        name_of: Arc::new(|uid| (uid == 2000).then(|| "alice".to_string())),
        ..options(url.clone(), None, "b")
    })
    .unwrap();
    let e = b.totp(2000).unwrap_err();
    assert!(
        e.0.contains("uid 1000 in the fleet") && e.0.contains("uid 2000"),
        "{e}"
    );
    assert!(b.accept_totp_step(2000, 11, 5, &rec("login")).is_err());
    assert!(b.user_state(2000).is_err());
    assert!(
        b.record_failure(2000, "alice", 5, &conformance_limit(), &rec("f"))
            .is_err()
    );
    // A: nothing changed; the refusal is audited.
    assert_eq!(
        a.user_state(1000).unwrap().unwrap().last_totp_step,
        Some(10)
    );
    assert_eq!(a.user_state(1000).unwrap().unwrap().failures, 0);
    let audit = a.audit(None, 0, 100).unwrap();
    let refused: Vec<_> = audit
        .iter()
        .filter(|r| r.event == "identity-mismatch")
        .collect();
    assert!(!refused.is_empty());
    assert!(refused.iter().all(|r| r.result == "refused"
        && r.uid == 2000
        && r.user == "alice"
        && r.detail.contains("fleet uid 1000")
        && r.detail.ends_with("host b")));
    // A host that has no name for a uid fails closed.
    let c = PostgresStore::open(PgOptions {
        name_of: Arc::new(|_| None),
        ..options(url, None, "c")
    })
    .unwrap();
    assert!(c.totp(1000).is_err());
}

fn conformance_limit() -> RateLimit {
    RateLimit {
        max_failures: 3,
        lockout: std::time::Duration::from_secs(60),
        escalation: 2,
        max_lockout: std::time::Duration::from_secs(600),
    }
}

fn audit_records_the_host(server: &PgServer) {
    let url = fresh(server);
    let mut a = PostgresStore::open(options(url.clone(), None, "host-a")).unwrap();
    let mut b = PostgresStore::open(options(url, None, "host-b")).unwrap();
    a.append_audit(&rec("one")).unwrap();
    let mut with_detail = rec("two");
    with_detail.detail = "via sshd".into();
    b.append_audit(&with_detail).unwrap();
    let log = a.audit(None, 0, 10).unwrap();
    let details: Vec<_> = log.iter().map(|r| r.detail.as_str()).collect();
    assert_eq!(details, ["host host-a", "via sshd; host host-b"]);
}

fn least_privilege_role(server: &PgServer) {
    let url = fresh(server);
    let db = url.split('/').nth(3).unwrap().split('?').next().unwrap();
    // The owner creates the schema once.
    drop(PostgresStore::open(options(url.clone(), None, "owner")).unwrap());
    server.sql(
        db,
        "CREATE ROLE tfd_lp LOGIN;
         GRANT USAGE ON SCHEMA twofactor TO tfd_lp;
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA twofactor TO tfd_lp;
         GRANT USAGE ON ALL SEQUENCES IN SCHEMA twofactor TO tfd_lp;",
    );
    let lp_url = server.url(db, "tfd_lp");
    let mut s = PostgresStore::open(options(lp_url.clone(), None, "h")).unwrap();
    enrolled(&mut s, 10);
    assert!(s.accept_totp_step(1000, 11, 5, &rec("login")).unwrap());
    // A grant taken away: the store says exactly which one, at open and at use.
    server.sql(db, "REVOKE INSERT ON twofactor.audit FROM tfd_lp");
    let e = PostgresStore::open(options(lp_url.clone(), None, "h")).unwrap_err();
    assert!(
        e.0.contains("GRANT INSERT ON twofactor.audit TO tfd_lp"),
        "{e}"
    );
    let e = s.accept_totp_step(1000, 12, 5, &rec("login")).unwrap_err();
    assert!(
        e.0.contains("permission denied for table audit")
            && e.0.contains("GRANT INSERT ON twofactor.audit"),
        "{e}"
    );
    // Failed closed: the step was not taken either.
    assert_eq!(
        s.user_state(1000).unwrap().unwrap().last_totp_step,
        Some(11)
    );
    server.sql(
        db,
        "REVOKE USAGE ON SEQUENCE twofactor.audit_id_seq FROM tfd_lp",
    );
    let e = PostgresStore::open(options(lp_url.clone(), None, "h")).unwrap_err();
    assert!(
        e.0.contains("GRANT USAGE ON SEQUENCE twofactor.audit_id_seq TO tfd_lp"),
        "{e}"
    );
    // A role that may not create the schema in an empty database says so.
    server.create_db("lp_empty");
    server.sql("lp_empty", "REVOKE CREATE ON SCHEMA public FROM PUBLIC");
    let e = PostgresStore::open(options(server.url("lp_empty", "tfd_lp"), None, "h")).unwrap_err();
    assert!(e.0.contains("may not create the twofactor schema"), "{e}");
}

fn durable_across_a_crash(server: &mut PgServer) {
    let url = fresh(server);
    {
        // No breaker: the first call after the restart tries at once.
        let mut s = PostgresStore::open(options(url.clone(), None, "a"))
            .unwrap()
            .with_breaker(std::time::Duration::ZERO);
        enrolled(&mut s, 10);
        assert!(s.accept_totp_step(1000, 42, 5, &rec("login")).unwrap());
        s.replace_recovery(
            1000,
            &[StoredCode {
                id: 0,
                salt: vec![1; 16],
                hash: vec![2; 32],
            }],
        )
        .unwrap();
        let id = s.unused_recovery(1000).unwrap()[0].id;
        assert!(s.consume_recovery(1000, id, 6, &rec("recovery")).unwrap());
        // The connection dies with the server: the next call fails, closed.
        server.kill9();
        assert!(s.accept_totp_step(1000, 43, 7, &rec("login")).is_err());
        assert!(s.totp(1000).is_err());
        server.restart();
        // The same store reconnects by itself and sees the state.
        assert_eq!(
            s.user_state(1000).unwrap().unwrap().last_totp_step,
            Some(42)
        );
    }
    let mut s = PostgresStore::open(options(url, None, "b")).unwrap();
    assert_eq!(
        s.user_state(1000).unwrap().unwrap().last_totp_step,
        Some(42)
    );
    assert!(!s.accept_totp_step(1000, 42, 8, &rec("login")).unwrap());
    assert!(s.unused_recovery(1000).unwrap().is_empty());
    assert!(s.totp(1000).unwrap().is_some());
}

fn breaker_refuses_without_trying_then_recovers(server: &mut PgServer) {
    let url = fresh(server);
    let hold = std::time::Duration::from_secs(2);
    let mut s = PostgresStore::open(options(url, None, "a"))
        .unwrap()
        .with_breaker(hold);
    enrolled(&mut s, 10);
    assert!(!s.breaker_open());
    server.stop();
    // The open connection fails first, then a new one cannot be made: the breaker opens.
    for _ in 0..3 {
        if s.breaker_open() {
            break;
        }
        assert!(s.user_state(1000).is_err());
    }
    assert!(s.breaker_open());
    // Refused without trying (an error, never "not enrolled" nor a success), and counted.
    let before = s.skipped_calls();
    let e = s.accept_totp_step(1000, 11, 5, &rec("login")).unwrap_err();
    assert!(e.0.contains("not tried again"), "{e}");
    assert!(s.totp(1000).is_err());
    assert_eq!(s.skipped_calls(), before + 2);
    server.restart();
    // Back, but not tried before the hold ends; then the next call reconnects.
    std::thread::sleep(hold + std::time::Duration::from_millis(200));
    assert!(!s.breaker_open());
    assert_eq!(
        s.user_state(1000).unwrap().unwrap().last_totp_step,
        Some(10)
    );
    assert!(s.accept_totp_step(1000, 11, 5, &rec("login")).unwrap());
}
