//! The suite every [`Store`] backend must pass. Call [`run_all`] from a test with a factory
//! for empty stores.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use std::time::Duration;

fn limit() -> RateLimit {
    RateLimit {
        max_failures: 3,
        lockout: Duration::from_secs(60),
        escalation: 2,
        max_lockout: Duration::from_secs(3600),
    }
}

fn pending(uid: u32, id: &str) -> PendingTotp {
    PendingTotp {
        id: id.into(),
        uid,
        secret: TotpSecret::from_bytes(vec![7; 20]),
        params: TotpParams {
            algorithm: Algorithm::SHA256,
            digits: 8,
            period: 30,
        },
        expires: 1000,
        proven: false,
    }
}

fn rec() -> AuditRecord {
    AuditRecord {
        uid: 1000,
        event: "test".into(),
        ..Default::default()
    }
}

fn codes(n: usize) -> Vec<StoredCode> {
    (0..n)
        .map(|i| StoredCode {
            id: 0,
            salt: vec![i as u8; 16],
            hash: vec![i as u8; 32],
        })
        .collect()
}

/// Runs every check, each on a fresh store.
pub fn run_all<S: Store>(mut make: impl FnMut() -> S) {
    enrollment_lifecycle(&mut make());
    replay_is_atomic(&mut make());
    recovery_codes_are_single_use(&mut make());
    failures_lock_and_escalate(&mut make());
    admin_flags_reset_and_unlock(&mut make());
    audit_filters_and_orders(&mut make());
    audit_is_pruned_by_age_and_by_count(&mut make());
    users_are_isolated(&mut make());
    grace_starts_once(&mut make());
    keys_lifecycle(&mut make());
    first_factor_only_when_unproven(&mut make());
}

/// An enrollment that began without a proof activates only as the first factor; a
/// confirmation never replaces the codes a user has.
fn first_factor_only_when_unproven(s: &mut impl Store) {
    assert_eq!(
        s.add_keys(
            1000,
            "alice",
            &[key("blue", 1)],
            Codes::IfNone(&codes(3)),
            Existing::NoFactor,
            &rec()
        )
        .unwrap(),
        Activation::Done { codes_set: true }
    );
    let before = s.unused_recovery(1000).unwrap();
    s.put_pending_totp(&pending(1000, "p")).unwrap();
    assert_eq!(
        s.activate_totp(
            1000,
            "alice",
            "p",
            7,
            20,
            Codes::IfNone(&codes(10)),
            Existing::NoFactor
        )
        .unwrap(),
        Activation::FactorExists
    );
    assert_eq!(s.totp(1000).unwrap(), None);
    assert!(s.pending_totp("p").unwrap().is_some());
    assert_eq!(
        s.activate_totp(
            1000,
            "alice",
            "p",
            7,
            20,
            Codes::IfNone(&codes(10)),
            Existing::Proven
        )
        .unwrap(),
        Activation::Done { codes_set: false }
    );
    assert!(s.totp(1000).unwrap().is_some());
    assert_eq!(s.unused_recovery(1000).unwrap(), before);
}

fn key(name: &str, id: u8) -> KeyFactor {
    KeyFactor {
        name: name.into(),
        credential_id: vec![id; 40],
        public_key_cose: vec![0xa0],
        rp_id: "pam://h".into(),
        sign_count: 5,
        user_verification: false,
        source: "enrolled".into(),
        created: 100,
        last_used: 0,
    }
}

fn keys_lifecycle(s: &mut impl Store) {
    assert!(s.keys(1000).unwrap().is_empty());
    assert_eq!(
        s.add_keys(
            1000,
            "alice",
            &[key("blue", 1)],
            Codes::IfNone(&codes(2)),
            Existing::NoFactor,
            &rec()
        )
        .unwrap(),
        Activation::Done { codes_set: true }
    );
    assert_eq!(s.keys(1000).unwrap(), vec![key("blue", 1)]);
    assert_eq!(s.unused_recovery(1000).unwrap().len(), 2);
    // Held by somebody, for this rp id only (the answer names nobody).
    assert!(s.credential_enrolled("pam://h", &[1; 40]).unwrap());
    assert!(!s.credential_enrolled("pam://other", &[1; 40]).unwrap());
    assert!(!s.credential_enrolled("pam://h", &[2; 40]).unwrap());
    assert!(s.known_uids().unwrap().contains(&1000));
    // Same name, or the same credential for anybody: refused, nothing partial.
    let before = s.audit(None, 0, 100).unwrap().len();
    assert_eq!(
        s.add_keys(
            1000,
            "alice",
            &[key("red", 2), key("blue", 3)],
            Codes::Keep,
            Existing::Proven,
            &rec()
        )
        .unwrap(),
        Activation::Taken
    );
    assert!(
        s.add_keys(
            1001,
            "bob",
            &[key("x", 1)],
            Codes::Keep,
            Existing::Proven,
            &rec()
        )
        .unwrap()
            == Activation::Taken
    );
    assert_eq!(s.keys(1000).unwrap().len(), 1);
    assert!(s.keys(1001).unwrap().is_empty());
    assert_eq!(s.audit(None, 0, 100).unwrap().len(), before);
    // Counter: must increase; the same counter twice wins once.
    let _ = s
        .record_failure(1000, "alice", 10, &limit(), &rec())
        .unwrap();
    assert!(
        !s.accept_key_assertion(1000, &[1; 40], 5, 200, &rec())
            .unwrap()
    );
    assert!(
        !s.accept_key_assertion(1000, &[1; 40], 4, 200, &rec())
            .unwrap()
    );
    assert!(
        s.accept_key_assertion(1000, &[1; 40], 6, 200, &rec())
            .unwrap()
    );
    assert!(
        !s.accept_key_assertion(1000, &[1; 40], 6, 201, &rec())
            .unwrap()
    );
    assert!(
        !s.accept_key_assertion(1001, &[1; 40], 7, 201, &rec())
            .unwrap()
    );
    let k = &s.keys(1000).unwrap()[0];
    assert_eq!((k.sign_count, k.last_used), (6, 200));
    assert_eq!(s.user_state(1000).unwrap().unwrap().failures, 0);
    // Keys whose counter stays 0 (some keys never count): 0 after 0 is accepted.
    let mut zero = key("zero", 9);
    zero.sign_count = 0;
    // Unproven: refused, since alice has a key; proven: added, her codes kept.
    assert_eq!(
        s.add_keys(
            1000,
            "alice",
            std::slice::from_ref(&zero),
            Codes::IfNone(&codes(5)),
            Existing::NoFactor,
            &rec()
        )
        .unwrap(),
        Activation::FactorExists
    );
    assert_eq!(
        s.add_keys(
            1000,
            "alice",
            &[zero],
            Codes::IfNone(&codes(5)),
            Existing::Proven,
            &rec()
        )
        .unwrap(),
        Activation::Done { codes_set: false }
    );
    assert_eq!(s.unused_recovery(1000).unwrap().len(), 2);
    assert!(
        s.accept_key_assertion(1000, &[9; 40], 0, 300, &rec())
            .unwrap()
    );
    assert!(!s.remove_key(1000, "nope", &rec()).unwrap());
    assert!(s.remove_key(1000, "blue", &rec()).unwrap());
    assert_eq!(s.keys(1000).unwrap().len(), 1);
    s.reset(1000).unwrap();
    assert!(s.keys(1000).unwrap().is_empty());
    assert!(!s.credential_enrolled("pam://h", &[9; 40]).unwrap());
}

fn grace_starts_once(s: &mut impl Store) {
    assert_eq!(s.start_grace(1000, "alice", 100).unwrap(), 100);
    assert_eq!(s.start_grace(1000, "alice", 200).unwrap(), 100);
    assert_eq!(
        s.user_state(1000).unwrap().unwrap().required_since,
        Some(100)
    );
    s.set_grace_start(1000, "alice", Some(300)).unwrap();
    assert_eq!(s.start_grace(1000, "alice", 400).unwrap(), 300);
    s.set_grace_start(1000, "alice", None).unwrap();
    assert_eq!(s.start_grace(1000, "alice", 500).unwrap(), 500);
    assert_eq!(s.user_state(1001).unwrap(), None);
}

fn enrollment_lifecycle(s: &mut impl Store) {
    assert_eq!(s.totp(1000).unwrap(), None);
    assert_eq!(s.user_state(1000).unwrap(), None);
    s.put_pending_totp(&pending(1000, "p1")).unwrap();
    // A second begin replaces the first.
    s.put_pending_totp(&pending(1000, "p2")).unwrap();
    assert_eq!(s.pending_totp("p1").unwrap(), None);
    assert_eq!(s.pending_totp("p2").unwrap(), Some(pending(1000, "p2")));
    // Another user's id does not activate.
    assert!(
        s.activate_totp(1001, "bob", "p2", 5, 10, Codes::Keep, Existing::Proven)
            .is_err()
    );
    assert_eq!(
        s.activate_totp(
            1000,
            "alice",
            "p2",
            5,
            10,
            Codes::IfNone(&codes(10)),
            Existing::NoFactor
        )
        .unwrap(),
        Activation::Done { codes_set: true }
    );
    assert_eq!(s.pending_totp("p2").unwrap(), None);
    let f = s.totp(1000).unwrap().expect("active");
    assert_eq!(f.secret, pending(1000, "p2").secret);
    assert_eq!(f.params.digits, 8);
    assert_eq!(f.created, 10);
    assert_eq!(s.user_state(1000).unwrap().unwrap().last_totp_step, Some(5));
    assert_eq!(s.unused_recovery(1000).unwrap().len(), 10);
    // Activation is single-use, and an app is never replaced, proven or not.
    assert_eq!(
        s.activate_totp(1000, "alice", "p2", 6, 11, Codes::Keep, Existing::Proven)
            .unwrap(),
        Activation::FactorExists
    );
    s.put_pending_totp(&pending(1000, "p4")).unwrap();
    assert_eq!(
        s.activate_totp(
            1000,
            "alice",
            "p4",
            6,
            11,
            Codes::Replace(&codes(1)),
            Existing::Proven
        )
        .unwrap(),
        Activation::FactorExists
    );
    assert_eq!(s.totp(1000).unwrap().unwrap().secret, f.secret);
    assert_eq!(s.unused_recovery(1000).unwrap().len(), 10);
    // A proof is recorded with the pending enrollment.
    let mut proven = pending(1005, "p5");
    proven.proven = true;
    s.put_pending_totp(&proven).unwrap();
    assert!(s.pending_totp("p5").unwrap().unwrap().proven);
    // Expiry.
    s.put_pending_totp(&pending(1002, "p3")).unwrap();
    assert_eq!(s.drop_expired_pending(999).unwrap(), 0);
    // p3, and p4 and p5 above.
    assert_eq!(s.drop_expired_pending(1001).unwrap(), 3);
    assert_eq!(s.pending_totp("p3").unwrap(), None);
}

fn replay_is_atomic(s: &mut impl Store) {
    s.put_pending_totp(&pending(1000, "p")).unwrap();
    let _ = s
        .activate_totp(1000, "alice", "p", 100, 1, Codes::Keep, Existing::NoFactor)
        .unwrap();
    assert!(!s.accept_totp_step(1000, 100, 2, &rec()).unwrap());
    assert!(!s.accept_totp_step(1000, 99, 2, &rec()).unwrap());
    assert!(s.accept_totp_step(1000, 101, 3, &rec()).unwrap());
    assert!(!s.accept_totp_step(1000, 101, 3, &rec()).unwrap());
    assert_eq!(s.totp(1000).unwrap().unwrap().last_used, 3);
    // Only the accepted step was audited, in the same transaction.
    assert_eq!(s.audit(Some(1000), 0, 100).unwrap().len(), 1);
}

fn recovery_codes_are_single_use(s: &mut impl Store) {
    s.replace_recovery(1000, &codes(3)).unwrap();
    let unused = s.unused_recovery(1000).unwrap();
    assert_eq!(unused.len(), 3);
    assert_eq!(unused[1].salt, vec![1; 16]);
    assert!(s.consume_recovery(1000, unused[1].id, 5, &rec()).unwrap());
    assert!(!s.consume_recovery(1000, unused[1].id, 6, &rec()).unwrap());
    // Not another user's code.
    assert!(!s.consume_recovery(1001, unused[0].id, 6, &rec()).unwrap());
    assert_eq!(s.unused_recovery(1000).unwrap().len(), 2);
    // The used code is kept, hashed, marked used: a replay is told from a guess.
    assert_eq!(s.used_recovery(1000).unwrap(), vec![unused[1].clone()]);
    assert!(s.used_recovery(1001).unwrap().is_empty());
    assert!(s.consume_recovery(1000, unused[2].id, 6, &rec()).unwrap());
    let used = s.used_recovery(1000).unwrap();
    assert_eq!(used, vec![unused[1].clone(), unused[2].clone()]);
    // A new set replaces the used codes too.
    s.replace_recovery(1000, &codes(10)).unwrap();
    assert_eq!(s.unused_recovery(1000).unwrap().len(), 10);
    assert!(s.used_recovery(1000).unwrap().is_empty());
    assert!(!s.consume_recovery(1000, unused[0].id, 7, &rec()).unwrap());
    // And a reset, everything.
    let id = s.unused_recovery(1000).unwrap()[0].id;
    assert!(s.consume_recovery(1000, id, 8, &rec()).unwrap());
    assert_eq!(s.used_recovery(1000).unwrap().len(), 1);
    s.reset(1000).unwrap();
    assert!(s.used_recovery(1000).unwrap().is_empty());
}

fn failures_lock_and_escalate(s: &mut impl Store) {
    let l = limit();
    assert_eq!(
        s.record_failure(1000, "alice", 100, &l, &rec())
            .unwrap()
            .locked_until,
        None
    );
    assert_eq!(
        s.record_failure(1000, "alice", 101, &l, &rec())
            .unwrap()
            .locked_until,
        None
    );
    let o = s.record_failure(1000, "alice", 102, &l, &rec()).unwrap();
    assert_eq!(o.locked_until, Some(162));
    let st = s.user_state(1000).unwrap().unwrap();
    assert_eq!((st.failures, st.lock_level, st.locked_until), (0, 1, 162));
    for t in 200..202 {
        let _ = s.record_failure(1000, "alice", t, &l, &rec()).unwrap();
    }
    assert_eq!(
        s.record_failure(1000, "alice", 202, &l, &rec())
            .unwrap()
            .locked_until,
        Some(322)
    );
    // A success resets failures and escalation.
    s.replace_recovery(1000, &codes(1)).unwrap();
    let id = s.unused_recovery(1000).unwrap()[0].id;
    assert!(s.consume_recovery(1000, id, 400, &rec()).unwrap());
    let st = s.user_state(1000).unwrap().unwrap();
    assert_eq!((st.failures, st.lock_level), (0, 0));
}

fn admin_flags_reset_and_unlock(s: &mut impl Store) {
    s.set_admin_required(1000, "alice", true).unwrap();
    assert!(s.user_state(1000).unwrap().unwrap().admin_required);
    s.put_pending_totp(&pending(1000, "p")).unwrap();
    let _ = s
        .activate_totp(
            1000,
            "alice",
            "p",
            1,
            1,
            Codes::Replace(&codes(2)),
            Existing::NoFactor,
        )
        .unwrap();
    s.put_pending_totp(&pending(1000, "q")).unwrap();
    assert_eq!(s.offline_uids().unwrap(), [1000]);
    s.reset(1000).unwrap();
    assert_eq!(s.totp(1000).unwrap(), None);
    assert!(s.unused_recovery(1000).unwrap().is_empty());
    assert_eq!(s.pending_totp("q").unwrap(), None);
    // The admin requirement survives a reset; release clears it.
    assert!(s.user_state(1000).unwrap().unwrap().admin_required);
    assert_eq!(s.offline_uids().unwrap(), [1000]);
    s.set_admin_required(1000, "alice", false).unwrap();
    assert!(!s.user_state(1000).unwrap().unwrap().admin_required);
    assert_eq!(s.offline_uids().unwrap(), Vec::<u32>::new());
    let l = limit();
    for t in 0..3 {
        let _ = s.record_failure(1000, "alice", t, &l, &rec()).unwrap();
    }
    assert!(s.user_state(1000).unwrap().unwrap().locked_until > 0);
    s.unlock(1000).unwrap();
    let st = s.user_state(1000).unwrap().unwrap();
    assert_eq!((st.failures, st.lock_level, st.locked_until), (0, 0, 0));
}

fn audit_filters_and_orders(s: &mut impl Store) {
    for (t, uid) in [(10, 1000), (20, 1001), (30, 1000), (40, 1000)] {
        s.append_audit(&AuditRecord {
            time: t,
            uid,
            user: format!("u{uid}"),
            event: "login".into(),
            result: "success".into(),
            ..Default::default()
        })
        .unwrap();
    }
    let all = s.audit(None, 0, 100).unwrap();
    assert_eq!(
        all.iter().map(|r| r.time).collect::<Vec<_>>(),
        [10, 20, 30, 40]
    );
    let alice = s.audit(Some(1000), 15, 100).unwrap();
    assert_eq!(alice.iter().map(|r| r.time).collect::<Vec<_>>(), [30, 40]);
    let newest = s.audit(None, 0, 2).unwrap();
    assert_eq!(newest.iter().map(|r| r.time).collect::<Vec<_>>(), [30, 40]);
}

fn audit_is_pruned_by_age_and_by_count(s: &mut impl Store) {
    let times = |s: &dyn Store| -> Vec<i64> {
        s.audit(None, 0, 1000)
            .unwrap()
            .iter()
            .map(|r| r.time)
            .collect()
    };
    // Nothing to prune in an empty log.
    assert_eq!(s.prune_audit(100, 10, 50).unwrap(), 0);
    for t in 1..=30 {
        s.append_audit(&AuditRecord {
            time: t,
            uid: 1000 + (t as u32 % 2),
            event: "login".into(),
            result: "failure".into(),
            ..Default::default()
        })
        .unwrap();
    }
    // By age: records before time 6 go; in batches of at most `batch`.
    assert_eq!(s.prune_audit(6, 1000, 3).unwrap(), 3);
    assert_eq!(times(s).first(), Some(&4));
    assert_eq!(s.prune_audit(6, 1000, 3).unwrap(), 2);
    assert_eq!(s.prune_audit(6, 1000, 3).unwrap(), 0);
    assert_eq!(times(s), (6..=30).collect::<Vec<_>>());
    // By count: the newest `keep_max` stay (here both users have as many records).
    assert_eq!(s.prune_audit(0, 10, 1000).unwrap(), 15);
    assert_eq!(times(s), (21..=30).collect::<Vec<_>>());
    assert_eq!(s.prune_audit(0, 10, 1000).unwrap(), 0);
    // Both at once, age first, within one batch.
    assert_eq!(s.prune_audit(23, 5, 4).unwrap(), 4);
    assert_eq!(times(s), (25..=30).collect::<Vec<_>>());
    assert_eq!(s.prune_audit(23, 5, 4).unwrap(), 1);
    assert_eq!(times(s), (26..=30).collect::<Vec<_>>());
    // New records still append after a prune; a cap of 0 empties the log.
    s.append_audit(&rec()).unwrap();
    assert_eq!(s.audit(None, 0, 1000).unwrap().len(), 6);
    assert_eq!(s.prune_audit(0, u64::MAX, 1000).unwrap(), 0);
    assert_eq!(s.prune_audit(0, 0, 1000).unwrap(), 6);
    assert!(s.audit(None, 0, 1000).unwrap().is_empty());

    // Over the cap after one user's flood: that user's oldest records go, not the others'.
    for (t, uid) in [(100, 1000), (101, 1002), (102, 1000)] {
        s.append_audit(&AuditRecord {
            time: t,
            uid,
            ..Default::default()
        })
        .unwrap();
    }
    for t in 200..260 {
        s.append_audit(&AuditRecord {
            time: t,
            uid: 1001,
            ..Default::default()
        })
        .unwrap();
    }
    assert_eq!(s.prune_audit(0, 20, 1000).unwrap(), 43);
    let left = s.audit(None, 0, 1000).unwrap();
    assert_eq!(left.len(), 20);
    let of = |uid: u32| left.iter().filter(|r| r.uid == uid).count();
    assert_eq!((of(1000), of(1002), of(1001)), (2, 1, 17), "{left:?}");
    // The flooder keeps their newest.
    assert_eq!(
        left.iter().filter(|r| r.uid == 1001).map(|r| r.time).min(),
        Some(243)
    );
    // In batches too: the cap is reached over several calls.
    for t in 300..330 {
        s.append_audit(&AuditRecord {
            time: t,
            uid: 1001,
            ..Default::default()
        })
        .unwrap();
    }
    assert_eq!(s.prune_audit(0, 20, 7).unwrap(), 7);
    let mut rounds = 1;
    while s.prune_audit(0, 20, 7).unwrap() > 0 {
        rounds += 1;
    }
    assert_eq!(rounds, 5);
    let left = s.audit(None, 0, 1000).unwrap();
    let of = |uid: u32| left.iter().filter(|r| r.uid == uid).count();
    assert_eq!((of(1000), of(1002), of(1001)), (2, 1, 17), "{left:?}");
    assert_eq!(s.prune_audit(0, 0, 1000).unwrap(), 20);
}

fn users_are_isolated(s: &mut impl Store) {
    s.put_pending_totp(&pending(1000, "a")).unwrap();
    let _ = s
        .activate_totp(
            1000,
            "alice",
            "a",
            50,
            1,
            Codes::IfNone(&codes(2)),
            Existing::NoFactor,
        )
        .unwrap();
    assert_eq!(s.totp(1001).unwrap(), None);
    assert!(s.unused_recovery(1001).unwrap().is_empty());
    assert!(s.accept_totp_step(1000, 51, 2, &rec()).unwrap());
    assert_eq!(s.known_uids().unwrap(), vec![1000]);
}
