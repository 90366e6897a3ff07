//! Engine tests with an injected clock, fake accounts and an in-memory store.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use twofactor_bus::StepKind;

use super::*;
use crate::identity::tests::FakeAccounts;
use crate::store::SqliteStore;

#[path = "engine_limits_tests.rs"]
mod limits;

#[derive(Clone)]
struct FakeClock(Arc<AtomicI64>);

impl Clock for FakeClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl FakeClock {
    fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

const T0: i64 = 1_800_000_000; // a step boundary (divisible by 30)

fn accounts() -> FakeAccounts {
    FakeAccounts::new()
        .user("root", 0, &[0])
        .user("alice", 1000, &[1000, 10])
        .user("bob", 1001, &[1001])
        .group("wheel", 10)
}

fn engine(policy: &str) -> (Engine, FakeClock) {
    let clock = FakeClock(Arc::new(AtomicI64::new(T0)));
    let policy =
        Policy::parse(Path::new("/test/policy.toml"), policy, &accounts()).expect("policy");
    let store = SqliteStore::in_memory().expect("store");
    let e = Engine::new(
        Box::new(store),
        policy,
        None,
        Box::new(accounts()),
        Box::new(clock.clone()),
    );
    (e, clock)
}

fn caller(uid: u32) -> Caller {
    Caller {
        uid,
        sender: format!(":1.{uid}"),
    }
}

fn root() -> Caller {
    caller(0)
}

/// Enrolls `uid` at the clock's current time; returns the secret.
fn enroll(e: &Engine, clock: &FakeClock, uid: u32) -> TotpSecret {
    let en = e.begin_totp(&caller(uid), "").expect("begin");
    let secret = TotpSecret::from_bytes(
        base32::decode(
            base32::Alphabet::Rfc4648 { padding: false },
            &en.secret_base32,
        )
        .expect("base32"),
    );
    let code = code(&secret, clock.now());
    let r = e
        .confirm_totp(&caller(uid), &en.enrollment_id, &code)
        .expect("confirm");
    assert!(r.accepted, "{}", r.message);
    assert_eq!(r.recovery_codes.len(), 10);
    secret
}

fn code(secret: &TotpSecret, at: i64) -> String {
    let p = TotpParams {
        algorithm: crate::policy::Algorithm::SHA1,
        digits: 6,
        period: 30,
    };
    totp::code_at(secret, p, at as u64).to_string()
}

fn ctx() -> HashMap<String, String> {
    HashMap::from([("service".to_string(), "sshd".to_string())])
}

/// Begins a login of `user` as root and answers with `answers`; returns the final step.
fn login(e: &Engine, user: &str, answers: &[&str]) -> LoginStep {
    let (handle, mut step) = e.begin_login(&root(), user, &ctx()).expect("begin");
    for a in answers {
        match step.kind {
            StepKind::Prompt { .. } => {
                step = e.continue_login(&root(), &handle, a).expect("continue");
            }
            StepKind::Done(_) | StepKind::Key { .. } => {
                panic!("no prompt for answer {a}: {step:?}")
            }
        }
    }
    step
}

fn outcome(step: &LoginStep) -> Option<Outcome> {
    match step.kind {
        StepKind::Done(o) => Some(o),
        StepKind::Prompt { .. } | StepKind::Key { .. } => None,
    }
}

fn notices(step: &LoginStep) -> String {
    step.notices
        .iter()
        .map(|n| n.text.clone())
        .collect::<Vec<_>>()
        .join(" | ")
}

#[test]
fn replay_is_refused_and_the_next_step_is_accepted() {
    let (e, clock) = engine("[login]\nattempts = 1\n");
    let s = enroll(&e, &clock, 1000);
    clock.advance(30);
    let c = code(&s, clock.now());
    assert_eq!(outcome(&login(&e, "alice", &[&c])), Some(Outcome::Success));
    let again = login(&e, "alice", &[&c]);
    assert_eq!(outcome(&again), Some(Outcome::Denied));
    assert!(notices(&again).contains("already used"));
    clock.advance(30);
    assert_eq!(
        outcome(&login(&e, "alice", &[&code(&s, clock.now())])),
        Some(Outcome::Success)
    );
}

#[test]
fn window_is_one_step_each_side() {
    let (e, clock) = engine("[login]\nattempts = 1\n[rate_limit]\nmax_failures = 100\n");
    let s = enroll(&e, &clock, 1000);
    clock.advance(300);
    let now = clock.now();
    for off in [-90, 90, -60, 60] {
        let step = login(&e, "alice", &[&code(&s, now + off)]);
        assert_eq!(outcome(&step), Some(Outcome::Denied), "offset {off}");
    }
    assert_eq!(
        outcome(&login(&e, "alice", &[&code(&s, now - 30)])),
        Some(Outcome::Success)
    );
    assert_eq!(
        outcome(&login(&e, "alice", &[&code(&s, now)])),
        Some(Outcome::Success)
    );
    assert_eq!(
        outcome(&login(&e, "alice", &[&code(&s, now + 30)])),
        Some(Outcome::Success)
    );
}

#[test]
fn lockout_escalates_and_expires() {
    let (e, clock) = engine(
        "[login]\nattempts = 1\n[rate_limit]\nmax_failures = 2\nlockout = \"1m\"\nescalation = 3\nmax_lockout = \"5m\"\n",
    );
    let s = enroll(&e, &clock, 1000);
    let fail = |e: &Engine| login(e, "alice", &["000000"]);
    let _ = fail(&e);
    let locked = fail(&e);
    assert!(
        notices(&locked).contains("locked for 1 minute"),
        "{}",
        notices(&locked)
    );
    // Locked: no prompt at all, even for a right code.
    clock.advance(30);
    let (_, step) = e.begin_login(&root(), "alice", &ctx()).expect("begin");
    assert_eq!(outcome(&step), Some(Outcome::Denied));
    assert!(notices(&step).contains("Too many failed attempts"));
    // After the lockout the second round locks for 3 minutes.
    clock.advance(31);
    let _ = fail(&e);
    let locked = fail(&e);
    assert!(
        notices(&locked).contains("locked for 3 minutes"),
        "{}",
        notices(&locked)
    );
    clock.advance(181);
    let _ = fail(&e);
    let locked = fail(&e);
    // 9 minutes capped at 5.
    assert!(
        notices(&locked).contains("locked for 5 minutes"),
        "{}",
        notices(&locked)
    );
    clock.advance(301);
    assert_eq!(
        outcome(&login(&e, "alice", &[&code(&s, clock.now())])),
        Some(Outcome::Success)
    );
    // Success reset the escalation.
    let _ = fail(&e);
    assert!(notices(&fail(&e)).contains("locked for 1 minute"));
}

#[test]
fn a_wrong_code_through_proof_paths_counts_too() {
    let (e, clock) = engine("[rate_limit]\nmax_failures = 2\n");
    let _ = enroll(&e, &clock, 1000);
    let r = e.disable(&caller(1000), "000000").expect("disable");
    assert!(!r.accepted);
    let r = e
        .regenerate_recovery(&caller(1000), "111111")
        .expect("regen");
    assert!(!r.accepted);
    assert!(r.message.contains("locked"), "{}", r.message);
    let st = e
        .status(&caller(1000), "", ("Enrollment", "Status"))
        .expect("status");
    assert!(st.locked_until > clock.now());
}

#[test]
fn unconfirmed_enrollments_expire() {
    let (e, clock) = engine("");
    let en = e.begin_totp(&caller(1000), "").expect("begin");
    let secret = TotpSecret::from_bytes(
        base32::decode(
            base32::Alphabet::Rfc4648 { padding: false },
            &en.secret_base32,
        )
        .expect("base32"),
    );
    clock.advance(601);
    let err = e
        .confirm_totp(
            &caller(1000),
            &en.enrollment_id,
            &code(&secret, clock.now()),
        )
        .expect_err("expired");
    assert!(matches!(err, BusError::NoSuchSession(_)), "{err:?}");
    let st = e
        .status(&caller(1000), "", ("Enrollment", "Status"))
        .expect("status");
    assert!(!st.enrolled);
}

#[test]
fn logins_expire_and_are_bound_to_their_sender() {
    let (e, clock) = engine("");
    let _ = enroll(&e, &clock, 1000);
    let (handle, _) = e.begin_login(&root(), "alice", &ctx()).expect("begin");
    let other = Caller {
        uid: 0,
        sender: ":1.999".into(),
    };
    assert!(matches!(
        e.continue_login(&other, &handle, "123456"),
        Err(BusError::NoSuchSession(_))
    ));
    clock.advance(301);
    assert!(matches!(
        e.continue_login(&root(), &handle, "123456"),
        Err(BusError::NoSuchSession(_))
    ));
    let (handle, _) = e.begin_login(&root(), "alice", &ctx()).expect("begin");
    e.sender_gone(&root().sender);
    assert!(e.continue_login(&root(), &handle, "123456").is_err());
}

#[test]
fn modes_decide_who_is_asked() {
    let (e, clock) = engine(
        "default_mode = \"optional\"\n[users.bob]\nmode = \"disabled\"\n[groups.wheel]\nmode = \"required\"\n",
    );
    // alice: required (wheel), not enrolled: denied, with how to enroll.
    let (_, step) = e.begin_login(&root(), "alice", &ctx()).expect("begin");
    assert_eq!(outcome(&step), Some(Outcome::Denied));
    assert!(notices(&step).contains("twofactorctl enroll totp"));
    // bob: disabled: never asked; enrollment refused.
    let (_, step) = e.begin_login(&root(), "bob", &ctx()).expect("begin");
    assert_eq!(outcome(&step), Some(Outcome::NotRequired));
    assert!(matches!(
        e.begin_totp(&caller(1001), ""),
        Err(BusError::NotAllowed(_))
    ));
    // root: optional, unenrolled -> not required; enrolled -> prompt.
    let (_, step) = e.begin_login(&root(), "root", &ctx()).expect("begin");
    assert_eq!(outcome(&step), Some(Outcome::NotRequired));
    let _ = enroll(&e, &clock, 0);
    let (_, step) = e.begin_login(&root(), "root", &ctx()).expect("begin");
    assert!(matches!(step.kind, StepKind::Prompt { .. }));
    // alice enrolled: asked; may not disable.
    let s = enroll(&e, &clock, 1000);
    clock.advance(30);
    let err = e
        .disable(&caller(1000), &code(&s, clock.now()))
        .expect_err("required");
    assert!(matches!(err, BusError::NotAllowed(m) if m.contains("groups.wheel")));
}

#[test]
fn callers_cannot_act_for_others() {
    let (e, clock) = engine("");
    let _ = enroll(&e, &clock, 1000);
    assert!(matches!(
        e.begin_login(&caller(1001), "alice", &ctx()),
        Err(BusError::AccessDenied(_))
    ));
    // An unknown user name tells a non-root caller nothing.
    assert!(matches!(
        e.begin_login(&caller(1001), "nosuch", &ctx()),
        Err(BusError::AccessDenied(_))
    ));
    assert!(matches!(
        e.status(&caller(1001), "alice", ("Enrollment", "Status")),
        Err(BusError::AccessDenied(_))
    ));
    assert!(matches!(
        e.reset(&caller(1001), "alice"),
        Err(BusError::AccessDenied(_))
    ));
    assert!(
        e.status(&caller(1000), "alice", ("Enrollment", "Status"))
            .is_ok()
    );
}

#[test]
fn secrets_never_reach_errors_or_audit() {
    let (e, clock) = engine("");
    let en = e.begin_totp(&caller(1000), "").expect("begin");
    let dbg = format!("{en:?}");
    assert!(!dbg.contains(&en.secret_base32));
    let secret = TotpSecret::from_bytes(
        base32::decode(
            base32::Alphabet::Rfc4648 { padding: false },
            &en.secret_base32,
        )
        .expect("base32"),
    );
    let good = code(&secret, clock.now());
    let r = e
        .confirm_totp(&caller(1000), &en.enrollment_id, &good)
        .expect("confirm");
    let entries = e.audit_log(&root(), "", 0, 100).expect("audit");
    let text = format!("{entries:?}");
    assert!(!text.contains(&en.secret_base32));
    assert!(!text.contains(&good));
    for c in &r.recovery_codes {
        assert!(!text.contains(c.as_str()));
    }
}

#[test]
fn remember_is_local_per_tty_and_service_and_expires() {
    let (e, clock) = engine("[login]\nattempts = 1\n[services.sudo]\nremember = \"5m\"\n");
    let s = enroll(&e, &clock, 1000);
    let ctx_of = |service: &str, tty: &str, rhost: &str| {
        HashMap::from([
            ("service".to_string(), service.to_string()),
            ("tty".to_string(), tty.to_string()),
            ("rhost".to_string(), rhost.to_string()),
            (
                "session".to_string(),
                "leader=100:5;tty=34816:1".to_string(),
            ),
        ])
    };
    let begin = |c: &HashMap<String, String>| e.begin_login(&root(), "alice", c).expect("begin");
    clock.advance(30);
    let sudo1 = ctx_of("sudo", "/dev/pts/1", "");
    let (h, step) = begin(&sudo1);
    assert!(matches!(step.kind, StepKind::Prompt { .. }));
    let done = e
        .continue_login(&root(), &h, &code(&s, clock.now()))
        .expect("continue");
    assert_eq!(outcome(&done), Some(Outcome::Success));
    // Same uid, tty and service within 5 minutes: not asked.
    clock.advance(120);
    assert_eq!(outcome(&begin(&sudo1).1), Some(Outcome::Success));
    // Another tty, another service, or remote: asked.
    assert!(outcome(&begin(&ctx_of("sudo", "/dev/pts/2", "")).1).is_none());
    assert!(outcome(&begin(&ctx_of("login", "/dev/pts/1", "")).1).is_none());
    assert!(outcome(&begin(&ctx_of("sudo", "/dev/pts/1", "192.0.2.1")).1).is_none());
    // Expired after the window.
    clock.advance(181);
    assert!(outcome(&begin(&sudo1).1).is_none());
    // A remote success is never remembered.
    clock.advance(30);
    let remote = ctx_of("sudo", "/dev/pts/1", "192.0.2.1");
    let (h, _) = begin(&remote);
    let done = e
        .continue_login(&root(), &h, &code(&s, clock.now()))
        .expect("continue");
    assert_eq!(outcome(&done), Some(Outcome::Success));
    assert!(outcome(&begin(&sudo1).1).is_none());
}

#[test]
fn remember_is_bound_to_the_session_and_to_root_callers() {
    let (e, clock) = engine("[login]\nattempts = 1\n[services.sudo]\nremember = \"5m\"\n");
    let s = enroll(&e, &clock, 1000);
    let ctx_of = |session: Option<&str>| {
        let mut c = HashMap::from([
            ("service".to_string(), "sudo".to_string()),
            ("tty".to_string(), "/dev/pts/1".to_string()),
        ]);
        if let Some(id) = session {
            c.insert("session".to_string(), id.to_string());
        }
        c
    };
    let earned = ctx_of(Some("leader=100:5"));
    let login = |who: &Caller, c: &HashMap<String, String>| {
        let (h, step) = e.begin_login(who, "alice", c).expect("begin");
        assert!(matches!(step.kind, StepKind::Prompt { .. }), "{step:?}");
        clock.advance(30);
        let done = e
            .continue_login(who, &h, &code(&s, clock.now()))
            .expect("continue");
        assert_eq!(outcome(&done), Some(Outcome::Success));
    };
    let asked = |who: &Caller, c: &HashMap<String, String>| {
        outcome(&e.begin_login(who, "alice", c).expect("begin").1).is_none()
    };
    // Without a session identity, a success is not remembered.
    login(&root(), &ctx_of(None));
    assert!(asked(&root(), &ctx_of(None)));
    // With one, only that session is let through: another session on the same terminal (a
    // new leader, a re-created device) is asked, and so is a login without an identity.
    login(&root(), &earned);
    assert!(!asked(&root(), &earned));
    assert!(asked(&root(), &ctx_of(Some("leader=101:9"))));
    assert!(asked(&root(), &ctx_of(None)));
    // An unprivileged caller (alice's own PAM stack) could forge the identity: never honoured,
    // and its successes are never remembered for anyone.
    assert!(asked(&caller(1000), &earned));
    let other = ctx_of(Some("leader=200:7"));
    login(&caller(1000), &other);
    assert!(asked(&caller(1000), &other));
    assert!(asked(&root(), &other));
    // The identity is checked like every other context value.
    let mut bad = earned.clone();
    bad.insert("session".to_string(), "x\0y".to_string());
    assert!(matches!(
        e.begin_login(&root(), "alice", &bad),
        Err(BusError::InvalidArgument(_))
    ));
}

fn notices_text(step: &LoginStep) -> String {
    notices(step)
}

#[test]
fn starter_codes_let_a_required_user_in_once_each_then_enrollment() {
    let (e, clock) = engine("default_mode = \"required\"\n[login]\nattempts = 1\n");
    // Without codes or grace: refused, told how to enroll.
    let (_, step) = e.begin_login(&root(), "alice", &ctx()).expect("begin");
    assert_eq!(outcome(&step), Some(Outcome::Denied));
    // Only admins issue codes; not for enrolled users.
    assert!(matches!(
        e.issue_codes(&caller(1001), "alice"),
        Err(BusError::AccessDenied(_))
    ));
    let codes = e
        .issue_codes(&root(), "alice")
        .expect("issue")
        .recovery_codes;
    assert_eq!(codes.len(), 10);
    let (h, step) = e.begin_login(&root(), "alice", &ctx()).expect("begin");
    assert!(matches!(step.kind, StepKind::Prompt { .. }));
    assert!(notices_text(&step).contains("recovery codes your administrator gave you"));
    let done = e.continue_login(&root(), &h, &codes[0]).expect("continue");
    assert_eq!(outcome(&done), Some(Outcome::Success));
    assert!(notices_text(&done).contains("twofactorctl enroll totp"));
    // Used once.
    let step = login(&e, "alice", &[&codes[0]]);
    assert_eq!(outcome(&step), Some(Outcome::Denied));
    let audit = format!(
        "{:?}",
        e.audit_log(&root(), "alice", 0, 100).expect("audit")
    );
    assert!(audit.contains("admin-issue-codes") && audit.contains("recovery-code-used"));
    // Enrolling an app keeps the nine unused starter codes: a confirmation never replaces codes.
    let en = e.begin_totp(&caller(1000), "").expect("begin");
    let secret = TotpSecret::from_bytes(
        base32::decode(
            base32::Alphabet::Rfc4648 { padding: false },
            &en.secret_base32,
        )
        .expect("base32"),
    );
    let r = e
        .confirm_totp(
            &caller(1000),
            &en.enrollment_id,
            &code(&secret, clock.now()),
        )
        .expect("confirm");
    assert!(r.accepted, "{}", r.message);
    assert!(r.recovery_codes.is_empty());
    let st = e
        .status(&caller(1000), "", ("Enrollment", "Status"))
        .expect("status");
    assert_eq!(st.recovery_codes_left, 9);
    clock.advance(30);
    assert_eq!(
        outcome(&login(&e, "alice", &[&codes[1]])),
        Some(Outcome::Success)
    );
    assert!(matches!(
        e.issue_codes(&root(), "alice"),
        Err(BusError::NotAllowed(_))
    ));
}

#[test]
fn enrollment_at_login_shows_the_secret_and_activates_on_a_valid_code() {
    let (e, clock) = engine(
        "default_mode = \"optional\"\n[groups.wheel]\nmode = \"required\"\nenroll_at_login = true\n",
    );
    let (h, step) = e.begin_login(&root(), "alice", &ctx()).expect("begin");
    let text = notices_text(&step);
    assert!(text.contains("Secret: "), "{text}");
    assert!(text.contains("otpauth://totp/"), "{text}");
    let secret_b32 = text
        .split("Secret: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("secret")
        .to_string();
    let secret = TotpSecret::from_bytes(
        base32::decode(base32::Alphabet::Rfc4648 { padding: false }, &secret_b32).expect("b32"),
    );
    // A wrong code re-prompts; a valid one enrolls and shows the recovery codes.
    let again = e.continue_login(&root(), &h, "000000").expect("continue");
    assert!(matches!(again.kind, StepKind::Prompt { .. }));
    let ack = e
        .continue_login(&root(), &h, &code(&secret, clock.now()))
        .expect("continue");
    // The recovery codes come with a prompt, so that every application shows them.
    assert!(
        matches!(ack.kind, StepKind::Prompt { echo: true, .. }),
        "{ack:?}"
    );
    assert!(notices_text(&ack).contains("Recovery codes"));
    let done = e.continue_login(&root(), &h, "").expect("continue");
    assert_eq!(outcome(&done), Some(Outcome::Success));
    let st = e
        .status(&caller(1000), "", ("Enrollment", "Status"))
        .expect("status");
    assert!(st.enrolled);
    assert_eq!(st.recovery_codes_left, 10);
    // From now on, a normal code prompt.
    clock.advance(30);
    assert_eq!(
        outcome(&login(&e, "alice", &[&code(&secret, clock.now())])),
        Some(Outcome::Success)
    );
    // bob (not in wheel, optional) is not offered enrollment.
    let (_, step) = e.begin_login(&root(), "bob", &ctx()).expect("begin");
    assert_eq!(outcome(&step), Some(Outcome::NotRequired));
}

#[test]
fn grace_period_counts_from_the_first_required_login_and_admins_can_extend_it() {
    let (e, clock) = engine("default_mode = \"required\"\ngrace_period = \"7d\"\n");
    let (h, step) = e.begin_login(&root(), "alice", &ctx()).expect("begin");
    // The deadline comes with a prompt (so sshd shows it); any answer lets the stack decide.
    assert!(
        matches!(step.kind, StepKind::Prompt { echo: true, .. }),
        "{step:?}"
    );
    let done = e.continue_login(&root(), &h, "").expect("ack");
    assert_eq!(outcome(&done), Some(Outcome::NotRequired));
    assert!(
        notices_text(&step).contains("7 days left"),
        "{}",
        notices_text(&step)
    );
    let st = e
        .status(&caller(1000), "", ("Enrollment", "Status"))
        .expect("status");
    assert_eq!(st.grace_until, T0 + 7 * 86_400);
    clock.advance(6 * 86_400);
    let (_, step) = e.begin_login(&root(), "alice", &ctx()).expect("begin");
    assert!(
        notices_text(&step).contains("1 days left"),
        "{}",
        notices_text(&step)
    );
    clock.advance(86_400);
    let (_, step) = e.begin_login(&root(), "alice", &ctx()).expect("begin");
    assert_eq!(outcome(&step), Some(Outcome::Denied));
    assert!(
        notices_text(&step).contains("grace period"),
        "{}",
        notices_text(&step)
    );
    // An admin extends by 2 days: in again.
    e.grace(&root(), "alice", 2 * 86_400).expect("extend");
    let (_, step) = e.begin_login(&root(), "alice", &ctx()).expect("begin");
    assert!(notices_text(&step).contains("days left"));
    // Or restarts it from now.
    clock.advance(10 * 86_400);
    e.grace(&root(), "alice", 0).expect("restart");
    let (_, step) = e.begin_login(&root(), "alice", &ctx()).expect("begin");
    assert!(notices_text(&step).contains("7 days left"));
    assert!(matches!(
        e.grace(&caller(1001), "alice", 0),
        Err(BusError::AccessDenied(_))
    ));
    assert!(matches!(
        e.grace(&root(), "alice", -5),
        Err(BusError::InvalidArgument(_))
    ));
}

/// An admin-group member manages ordinary users, but only root changes root's or another
/// admin's factors, requirement, grace, codes or lockout (an admin cannot plant a known secret
/// for root, then release root, then log in as root).
#[test]
fn admins_cannot_change_root_or_other_admins() {
    let accounts = FakeAccounts::new()
        .user("root", 0, &[0])
        .user("alice", 1000, &[1000, 10])
        .user("bob", 1001, &[1001])
        .user("carol", 1002, &[1002, 10])
        .group("wheel", 10);
    let clock = FakeClock(Arc::new(AtomicI64::new(T0)));
    let policy = Policy::parse(
        Path::new("/test/policy.toml"),
        "admin_groups = [\"wheel\"]\n",
        &accounts,
    )
    .expect("policy");
    let e = Engine::new(
        Box::new(SqliteStore::in_memory().expect("store")),
        policy,
        None,
        Box::new(accounts),
        Box::new(clock.clone()),
    );
    let alice = caller(1000);
    let secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    let denied = |r: Result<(), BusError>, what: &str| {
        assert!(matches!(r, Err(BusError::AccessDenied(_))), "{what}: {r:?}");
    };
    for target in ["root", "carol", "alice"] {
        denied(
            e.import_totp(&alice, target, secret, "SHA1", 6, 30, &[])
                .map(|_| ()),
            &format!("import for {target}"),
        );
        denied(e.set_required(&alice, target, false), "release");
        denied(e.set_required(&alice, target, true), "require");
        denied(e.reset(&alice, target), "reset");
        denied(e.unlock(&alice, target), "unlock");
        denied(e.grace(&alice, target, 0), "grace");
        denied(e.issue_codes(&alice, target).map(|_| ()), "issue-codes");
        denied(
            e.import_keys(&alice, target, &[]).map(|_| ()),
            "import keys",
        );
    }
    // Read-only admin methods still work on them.
    assert!(e.status(&alice, "root", ("Admin", "Show")).is_ok());
    // Ordinary users: the admin may.
    e.set_required(&alice, "bob", true).expect("require bob");
    e.import_totp(&alice, "bob", secret, "SHA1", 6, 30, &[])
        .expect("import for bob");
    e.unlock(&alice, "bob").expect("unlock bob");
    e.reset(&alice, "bob").expect("reset bob");
    // Root may do all of it to anyone.
    e.import_totp(&root(), "carol", secret, "SHA1", 6, 30, &[])
        .expect("root imports for an admin");
    e.set_required(&root(), "root", true)
        .expect("root requires root");
    e.reset(&root(), "carol").expect("root resets an admin");
    // Nothing was stored for root by alice.
    let st = e.status(&root(), "root", ("Admin", "Show")).expect("show");
    assert!(!st.enrolled);
}

/// An enrolled authenticator app is never replaced by another enrollment or an import, and
/// its recovery codes stay. (The race with a key enrolled meanwhile is in the end-to-end
/// tests, with a software key; the store's conformance suite checks the atomic refusal.)
#[test]
fn an_app_confirmation_never_overwrites_an_app() {
    let (e, clock) = engine("default_mode = \"optional\"\n");
    let secret = enroll(&e, &clock, 1000);
    let before = e
        .status(&caller(1000), "", ("Enrollment", "Status"))
        .expect("status")
        .recovery_codes_left;
    // A second enrollment cannot start, and an admin import cannot replace the app.
    assert!(matches!(
        e.begin_totp(&caller(1000), ""),
        Err(BusError::NotAllowed(_))
    ));
    assert!(matches!(
        e.import_totp(
            &root(),
            "alice",
            "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
            "SHA1",
            6,
            30,
            &[]
        ),
        Err(BusError::NotAllowed(_))
    ));
    clock.advance(30);
    assert_eq!(
        outcome(&login(&e, "alice", &[&code(&secret, clock.now())])),
        Some(Outcome::Success)
    );
    let after = e
        .status(&caller(1000), "", ("Enrollment", "Status"))
        .expect("status")
        .recovery_codes_left;
    assert_eq!(before, after);
}

/// Only guesses count toward the lockout: Enter alone, an answer of no code's shape, a replay
/// of a code that was valid (also when two logins race with it) and a stale key-proof token are
/// refused without counting; wrong codes still lock.
#[test]
fn only_guesses_count_toward_the_lockout() {
    let (e, clock) = engine("[login]\nattempts = 3\n[rate_limit]\nmax_failures = 2\n");
    let s = enroll(&e, &clock, 1000);
    let locked = |e: &Engine| {
        e.status(&caller(1000), "", ("Enrollment", "Status"))
            .expect("status")
            .locked_until
            > clock.now()
    };
    // Enter alone ends the login at once, many times over.
    for _ in 0..5 {
        let done = login(&e, "alice", &[""]);
        assert_eq!(outcome(&done), Some(Outcome::Denied));
        assert!(notices(&done).contains("No code was entered"));
    }
    // Not the shape of any code, and a stale proof token.
    for _ in 0..3 {
        let step = login(&e, "alice", &["hello", "12", "keyproof-0000"]);
        assert_eq!(outcome(&step), Some(Outcome::Denied));
    }
    assert!(!locked(&e));
    // The one valid code, used once, then replayed by many logins (and by proof paths).
    clock.advance(30);
    let c = code(&s, clock.now());
    assert_eq!(outcome(&login(&e, "alice", &[&c])), Some(Outcome::Success));
    for _ in 0..5 {
        let step = login(&e, "alice", &[&c, &c, &c]);
        assert_eq!(outcome(&step), Some(Outcome::Denied));
        assert!(
            notices(&step).contains("already used"),
            "{}",
            notices(&step)
        );
    }
    let r = e.regenerate_recovery(&caller(1000), &c).expect("regen");
    assert!(!r.accepted);
    assert!(!locked(&e), "replays and non-guesses locked the user out");
    let audit = format!(
        "{:?}",
        e.audit_log(&root(), "alice", 0, 1000).expect("audit")
    );
    assert!(audit.contains("replay"), "{audit}");
    // Two wrong codes lock, as before.
    let _ = login(&e, "alice", &["000000", "999999"]);
    assert!(locked(&e));
}

#[test]
fn a_login_reads_groups_only_when_the_policy_names_one() {
    let (e, _) = engine("default_mode = \"optional\"\n[groups.wheel]\nmode = \"required\"\n");
    // Looked up without groups (the policy named none then), the login's account gets them
    // for a later question once the policy names a group.
    let bare = e
        .accounts
        .user_by_name_without_groups("alice")
        .expect("alice");
    assert!(bare.groups.is_empty());
    assert_eq!(e.with_groups(&bare).groups, ["wheel"]);
    let (e, _) = engine("default_mode = \"optional\"\n");
    assert!(!e.policy().login_reads_groups());
    assert!(e.with_groups(&bare).groups.is_empty());
    let (e, _) = engine("[exemptions]\ngroups = [\"wheel\"]\n");
    assert!(e.policy().login_reads_groups());
}

/// An engine whose accounts answer from a cache once looked up (as the daemon's).
fn engine_with_cache(policy: &str) -> (Engine, FakeClock) {
    let clock = FakeClock(Arc::new(AtomicI64::new(T0)));
    let policy =
        Policy::parse(Path::new("/test/policy.toml"), policy, &accounts()).expect("policy");
    let e = Engine::new(
        Box::new(SqliteStore::in_memory().expect("store")),
        policy,
        None,
        Box::new(crate::identity::Cached::new(
            accounts(),
            crate::identity::ACCOUNT_TTL,
        )),
        Box::new(clock.clone()),
    );
    (e, clock)
}

fn audit_count(e: &Engine) -> usize {
    e.audit_log(&root(), "alice", 0, 1000).expect("audit").len()
}

#[test]
fn a_login_is_begun_at_once_only_when_nothing_has_to_wait() {
    let (e, clock) = engine_with_cache(
        "default_mode = \"optional\"\n[exemptions]\nnetworks = [\"192.0.2.0/24\"]\n",
    );
    // Not looked up yet: NSS would be asked.
    assert!(e.try_begin_login(&root(), "alice", &ctx()).is_none());
    let secret = enroll(&e, &clock, 1000);
    let (_, step) = e.begin_login(&root(), "alice", &ctx()).expect("begin");
    assert!(matches!(step.kind, StepKind::Prompt { .. }));
    // Known now: answered at once, a login like any other.
    let (handle, step) = e
        .try_begin_login(&root(), "alice", &ctx())
        .expect("at once")
        .expect("begin");
    assert!(matches!(step.kind, StepKind::Prompt { .. }));
    clock.advance(30);
    let done = e
        .continue_login(&root(), &handle, &code(&secret, clock.now()))
        .expect("continue");
    assert_eq!(outcome(&done), Some(Outcome::Success));
    // The store busy (a commit in progress): not at once.
    {
        let _busy = e.store.lock().expect("store");
        assert!(e.try_begin_login(&root(), "alice", &ctx()).is_none());
    }
    // Anything that writes (here an exemption, which is audited) is left to the worker, and
    // nothing is written meanwhile.
    let remote = HashMap::from([
        ("service".to_string(), "sshd".to_string()),
        ("rhost".to_string(), "192.0.2.7".to_string()),
    ]);
    let before = audit_count(&e);
    assert!(e.try_begin_login(&root(), "alice", &remote).is_none());
    assert_eq!(audit_count(&e), before);
    let (_, step) = e.begin_login(&root(), "alice", &remote).expect("begin");
    assert_eq!(outcome(&step), Some(Outcome::NotRequired));
    assert_eq!(audit_count(&e), before + 1);
    // Errors are answers too: another caller's login of alice.
    assert!(matches!(
        e.try_begin_login(&caller(1001), "alice", &ctx()),
        Some(Err(BusError::AccessDenied(_)))
    ));
}

/// The audit records of `user` whose detail contains `needle`.
fn audited_with(e: &Engine, user: &str, needle: &str) -> Vec<AuditEntry> {
    e.audit_log(&root(), user, 0, 10_000)
        .expect("audit")
        .into_iter()
        .filter(|a| a.detail.contains(needle))
        .collect()
}

/// How many refusals `entries` stand for: one each, plus the "and N more" of a summary.
fn refusals(entries: &[AuditEntry]) -> u64 {
    entries
        .iter()
        .map(|a| {
            a.detail
                .split("; and ")
                .nth(1)
                .and_then(|t| t.split(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(1)
        })
        .sum()
}

#[test]
fn a_locked_out_users_flood_is_audited_once_a_minute_with_the_count() {
    let (e, clock) = engine(
        "[login]\nattempts = 1\n[rate_limit]\nmax_failures = 1\nlockout = \"1h\"\n\
         [audit]\nmax_records = 100\n",
    );
    let _ = enroll(&e, &clock, 1000);
    let _ = enroll(&e, &clock, 1001);
    let bob = caller(1001);
    let _ = login(&e, "bob", &["000000"]);
    // Bob, locked out, asks for his own login 3,000 times in two and a half minutes.
    for i in 0..3000 {
        if i % 20 == 19 {
            clock.advance(1);
        }
        let (handle, step) = e.begin_login(&bob, "bob", &ctx()).expect("begin");
        assert!(handle.is_empty());
        assert_eq!(outcome(&step), Some(Outcome::Denied));
    }
    e.flush_folded(true);
    let locked = audited_with(&e, "bob", "locked out");
    assert!(locked.len() <= 6, "{locked:?}");
    assert_eq!(refusals(&locked), 3000, "{locked:?}");
    assert!(
        locked
            .iter()
            .any(|a| a.detail.contains("more in the last minute")),
        "{locked:?}"
    );
    // Alice's enrollment, older than the whole flood, survives a prune to 100 records.
    let _ = e.prune_audit().expect("prune");
    assert_eq!(audited_with(&e, "alice", "totp").len(), 1);
    // Root's callers (sshd) are folded apart from bob's own calls: their first is recorded.
    let before = audited_with(&e, "bob", "locked out").len();
    let _ = e.begin_login(&root(), "bob", &ctx()).expect("begin");
    assert_eq!(audited_with(&e, "bob", "locked out").len(), before + 1);
}

#[test]
fn replays_and_failed_enrollments_are_folded_too_but_wrong_codes_never() {
    let (e, clock) = engine("[login]\nattempts = 1\n[rate_limit]\nmax_failures = 1000\n");
    let s = enroll(&e, &clock, 1000);
    clock.advance(30);
    let c = code(&s, clock.now());
    assert_eq!(outcome(&login(&e, "alice", &[&c])), Some(Outcome::Success));
    for _ in 0..50 {
        let _ = login(&e, "alice", &[&c]);
    }
    let replays = audited_with(&e, "alice", "already used time step");
    assert_eq!(replays.len(), 1, "{replays:?}");
    // Wrong codes: every one recorded (the lockout bounds them).
    for _ in 0..20 {
        let _ = login(&e, "alice", &["000000"]);
    }
    assert_eq!(audited_with(&e, "alice", "Wrong code").len(), 20);
    clock.advance(61);
    e.flush_folded(false);
    let replays = audited_with(&e, "alice", "already used time step");
    assert_eq!(refusals(&replays), 50, "{replays:?}");
}

/// Issue 10 item 4: a recovery code that was valid but is already used is a replay: refused,
/// audited as `replay`, not counted; a code that never was is a guess and counts.
#[test]
fn a_used_recovery_code_is_a_replay_not_a_guess() {
    let (e, clock) = engine("[login]\nattempts = 3\n[rate_limit]\nmax_failures = 2\n");
    let s = enroll(&e, &clock, 1000);
    clock.advance(30);
    let r = e
        .regenerate_recovery(&caller(1000), &code(&s, clock.now()))
        .expect("regenerate");
    assert!(r.accepted, "{}", r.message);
    let used = r.recovery_codes[0].clone();
    assert_eq!(
        outcome(&login(&e, "alice", &[&used])),
        Some(Outcome::Success)
    );
    let locked = |e: &Engine| {
        e.status(&caller(1000), "", ("Enrollment", "Status"))
            .expect("status")
            .locked_until
            > clock.now()
    };
    // Replayed many times, in logins and proofs: never a lockout.
    for _ in 0..10 {
        let step = login(
            &e,
            "alice",
            &[&used, &used.to_uppercase(), &used.replace('-', "")],
        );
        assert_eq!(outcome(&step), Some(Outcome::Denied));
        assert!(
            notices(&step).contains("recovery code was already used"),
            "{}",
            notices(&step)
        );
    }
    let r = e.disable(&caller(1000), &used).expect("disable");
    assert!(!r.accepted);
    assert!(r.message.contains("already used"), "{}", r.message);
    assert!(
        !locked(&e),
        "replays of a used recovery code locked her out"
    );
    assert_eq!(
        e.store()
            .expect("store")
            .user_state(1000)
            .expect("state")
            .map(|s| s.failures),
        Some(0)
    );
    let replays = audited_with(&e, "alice", "a recovery code that was already used");
    // Folded: one record for root's logins, one for her own proof (another caller).
    assert_eq!(replays.len(), 2, "{replays:?}");
    assert!(
        replays
            .iter()
            .all(|r| r.event == "replay" && r.result == "refused"),
        "{replays:?}"
    );
    assert_eq!(
        (replays[0].actor.as_str(), replays[1].actor.as_str()),
        ("root", "alice")
    );
    // After a new set, the old codes are unknown: guesses, counted.
    clock.advance(30);
    let r = e
        .regenerate_recovery(&caller(1000), &code(&s, clock.now()))
        .expect("regenerate");
    assert!(r.accepted);
    let _ = login(&e, "alice", &[&used, &used]);
    assert!(locked(&e), "codes of a replaced set are guesses");
}

/// A key assertion whose signature is valid but whose counter another login took first (the
/// race between reading the keys and accepting the counter) is a replay, not a failure.
#[test]
fn a_key_counter_taken_by_a_concurrent_login_is_a_replay_not_a_failure() {
    use crate::fido2::tests::{TestKey, auth_data};
    use crate::store::{Codes, Existing, KeyFactor};
    use sha2::{Digest, Sha256};
    use twofactor_bus::KeyAssertion;
    let (e, _clock) = engine("[rate_limit]\nmax_failures = 1\n");
    let rp = e.policy().fido2.rp_id.clone();
    let tk = TestKey::es256();
    let stored = |sign_count| KeyFactor {
        name: "blue".into(),
        credential_id: b"cred-0123456789abcdef".to_vec(),
        public_key_cose: tk.cose(),
        rp_id: rp.clone(),
        sign_count,
        user_verification: false,
        source: "enrolled".into(),
        created: T0,
        last_used: 0,
    };
    let alice = accounts().user_by_name("alice").expect("alice");
    let mut store = e.store().expect("store");
    let added = store
        .add_keys(
            1000,
            "alice",
            &[stored(10)],
            Codes::Keep,
            Existing::NoFactor,
            &AuditRecord::default(),
        )
        .expect("add");
    assert_eq!(added, Activation::Done { codes_set: false });
    // This login read the key when its counter was 5; another login has since taken 10.
    let client_data = b"{\"type\":\"webauthn.get\"}".to_vec();
    let cdh: [u8; 32] = Sha256::digest(&client_data).into();
    let ad = auth_data(&rp, crate::fido2::AuthenticatorFlags::USER_PRESENT, 7, &[]);
    let assertion = KeyAssertion {
        credential_id: stored(5).credential_id,
        signature: tk.sign(&ad, &cdh),
        authenticator_data: ad,
    };
    let verdict = e
        .check_key_assertion(
            store.as_mut(),
            &alice,
            &root(),
            &[stored(5)],
            &rp,
            &client_data,
            &assertion,
            crate::policy::UserVerification::Discouraged,
            None,
            "login",
        )
        .expect("checked");
    assert_eq!(
        verdict,
        Err((
            "The security key's answer was already used.".to_string(),
            None
        ))
    );
    let state = store.user_state(1000).expect("state");
    assert!(
        state
            .as_ref()
            .is_none_or(|s| s.failures == 0 && s.locked_until == 0),
        "{state:?}"
    );
    drop(store);
    let replays = audited_with(&e, "alice", "the counter was already used");
    assert_eq!(replays.len(), 1);
    assert_eq!(replays[0].event, "replay");
}

/// Issue 10 item 7: time arithmetic saturates. A clock at the end of time wraps nothing (the
/// debug build these tests run in panics on any overflow); a clock before 1970 checks no code
/// and counts nothing.
#[test]
fn times_at_either_end_of_the_clock_neither_wrap_nor_count() {
    let (e, clock) = engine(
        "default_mode = \"optional\"\n[login]\nattempts = 1\n[rate_limit]\nmax_failures = 1\n\
         lockout = \"30d\"\nmax_lockout = \"30d\"\n",
    );
    let _ = enroll(&e, &clock, 1000);
    // The end of time: an enrollment's, a login's and a lockout's deadlines saturate.
    clock.advance(i64::MAX - T0 - 10);
    let en = e.begin_totp(&caller(1001), "").expect("begin");
    assert_eq!(en.expires, i64::MAX);
    let wrong = login(&e, "alice", &["000000"]);
    assert_eq!(outcome(&wrong), Some(Outcome::Denied));
    let (_, step) = e.begin_login(&root(), "alice", &ctx()).expect("begin");
    assert_eq!(outcome(&step), Some(Outcome::Denied));
    assert!(
        notices(&step).contains("Try again in"),
        "{}",
        notices(&step)
    );
    e.unlock(&root(), "alice").expect("unlock");
    // Before 1970: logins fail closed, and no code is checked (an enrollment's first code
    // either); nothing is counted.
    clock.advance(-(i64::MAX - 10));
    clock.advance(-3600);
    assert!(clock.now() < 0);
    let (handle, step) = e.begin_login(&root(), "alice", &ctx()).expect("begin");
    assert!(handle.is_empty());
    assert_eq!(outcome(&step), Some(Outcome::Denied));
    let err = e
        .confirm_totp(&caller(1001), &en.enrollment_id, "123456")
        .expect_err("no code is checked before 1970");
    assert!(matches!(err, BusError::StateUnavailable(_)), "{err:?}");
    let st = e.status(&root(), "alice", ("Admin", "Show")).expect("show");
    assert_eq!((st.failures, st.locked_until), (0, 0), "{st:?}");
}

/// Exemption notices: one record per login through root's callers (real logins), folded when
/// a user asks about themself over and over.
#[test]
fn exemption_notices_are_folded_only_for_a_user_asking_about_themself() {
    let (e, _clock) = engine("default_mode = \"required\"\n[exemptions]\ngroups = [\"wheel\"]\n");
    for _ in 0..5 {
        let _ = e.begin_login(&root(), "alice", &ctx()).expect("begin");
        let _ = e
            .begin_login(&caller(1000), "alice", &ctx())
            .expect("begin");
    }
    let exempt = e
        .audit_log(&root(), "alice", 0, 1000)
        .expect("audit")
        .into_iter()
        .filter(|a| a.event == "exemption-applied")
        .collect::<Vec<_>>();
    assert_eq!(exempt.iter().filter(|a| a.actor == "root").count(), 5);
    assert_eq!(exempt.iter().filter(|a| a.actor == "alice").count(), 1);
    e.flush_folded(true);
    let folded = audited_with(&e, "alice", "; and 4 more in the last minute");
    assert_eq!(folded.len(), 1, "{folded:?}");
    assert_eq!(folded[0].actor, "alice");
}
