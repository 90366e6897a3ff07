//! The relay loop: ask the daemon for the next step, perform it, send the answer.

use std::time::Duration;

use twofactor_bus::{
    BUS_NAME, BusError, DAEMON_USER, KeyAssertion, LoginProxy, LoginStep, StepKind, WireStep,
    skip_reason,
};
use twofactor_key::Authenticator;

use crate::conversation::Conversation;
use crate::keystep::{self, KeyAnswer};
use crate::outcome::Verdict;

/// A step the daemon sends can only be this long a conversation; more is a daemon fault.
const MAX_STEPS: usize = 32;

/// Why a call to the daemon gave no step. Only [`LinkError::Unreachable`] may be passed by
/// `failmode=open`: any reply from the daemon is final.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// No answer came: cannot connect, the name has no owner, no reply within the timeout, the
    /// connection dropped.
    Unreachable(String),
    /// The daemon answered with an error, or with something that does not decode: a denial.
    Refused(String),
}

impl LinkError {
    /// What the login comes to when a call fails this way.
    pub fn verdict(&self) -> Verdict {
        match self {
            LinkError::Unreachable(_) => Verdict::Unreachable,
            LinkError::Refused(_) => Verdict::Refused,
        }
    }
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::Unreachable(d) => write!(f, "twofactord unreachable: {d}"),
            LinkError::Refused(d) => write!(f, "refused by twofactord: {d}"),
        }
    }
}

/// The daemon side of a login.
#[allow(async_fn_in_trait)]
pub trait Daemon {
    /// `BeginLogin`.
    async fn begin(
        &self,
        user: &str,
        context: &[(&str, &str)],
    ) -> Result<(String, LoginStep), LinkError>;
    /// `Continue`.
    async fn answer(&self, handle: &str, answer: &str) -> Result<LoginStep, LinkError>;
    /// `Cancel` (best effort).
    async fn cancel(&self, handle: &str);
    /// `Assert`.
    async fn assert(&self, handle: &str, assertion: &KeyAssertion) -> Result<LoginStep, LinkError>;
    /// `SkipKey`.
    async fn skip_key(&self, handle: &str, reason: &str) -> Result<LoginStep, LinkError>;
}

/// Log sink: (is_error, message). Never given an answer.
pub type Log<'a> = &'a dyn Fn(bool, &str);

/// Runs one login conversation to its verdict.
pub async fn run(
    daemon: &impl Daemon,
    conv: &mut dyn Conversation,
    authenticator: &dyn Authenticator,
    user: &str,
    context: &[(&str, &str)],
    log: Log<'_>,
) -> Verdict {
    let (handle, mut step) = match daemon.begin(user, context).await {
        Ok(x) => x,
        Err(e) => {
            log(true, &format!("cannot start the login for {user}: {e}"));
            return e.verdict();
        }
    };
    for _ in 0..MAX_STEPS {
        for notice in &step.notices {
            let shown = if notice.error {
                conv.error(&notice.text)
            } else {
                conv.info(&notice.text)
            };
            if shown.is_err() && !matches!(step.kind, StepKind::Done(_)) {
                daemon.cancel(&handle).await;
                return Verdict::ConversationFailed;
            }
        }
        match step.kind {
            StepKind::Done(outcome) => return Verdict::Daemon(outcome),
            StepKind::Prompt { text, echo } => {
                let answer = match conv.prompt(&text, echo) {
                    Ok(a) => a,
                    Err(_) => {
                        daemon.cancel(&handle).await;
                        return Verdict::ConversationFailed;
                    }
                };
                step = match daemon.answer(&handle, &answer).await {
                    Ok(s) => s,
                    Err(e) => {
                        log(true, &format!("login for {user} failed: {e}"));
                        return lost_after_begin(&e);
                    }
                };
            }
            StepKind::Key { cue, request } => {
                let answer = match keystep::perform(conv, authenticator, &cue, &request, log) {
                    Ok(a) => a,
                    Err(_) => {
                        daemon.cancel(&handle).await;
                        return Verdict::ConversationFailed;
                    }
                };
                let next = match answer {
                    KeyAnswer::Assertion(a) => daemon.assert(&handle, &a).await,
                    KeyAnswer::Skip(reason) => daemon.skip_key(&handle, reason).await,
                    KeyAnswer::Code(code) => {
                        // The user typed a code at the cue: it answers the code prompt that
                        // follows the skip (after that prompt's notices are shown).
                        match daemon.skip_key(&handle, skip_reason::DECLINED).await {
                            Ok(LoginStep {
                                notices,
                                kind: StepKind::Prompt { .. },
                            }) => {
                                for n in &notices {
                                    let _ = if n.error {
                                        conv.error(&n.text)
                                    } else {
                                        conv.info(&n.text)
                                    };
                                }
                                daemon.answer(&handle, &code).await
                            }
                            other => other,
                        }
                    }
                };
                step = match next {
                    Ok(s) => s,
                    Err(e) => {
                        log(true, &format!("login for {user} failed: {e}"));
                        return lost_after_begin(&e);
                    }
                };
            }
        }
    }
    log(
        true,
        &format!("login for {user}: the daemon sent too many steps"),
    );
    daemon.cancel(&handle).await;
    // The daemon did answer, every time: that is final, and nonsense is a denial.
    Verdict::Refused
}

/// What a failed call after `BeginLogin` comes to. The daemon's first answer (a code or a key
/// is needed) is final, like any answer: losing the daemon after it (a crash, a restart, a
/// connection cut while the user is at the prompt) cannot turn that into a pass, so even a
/// transport failure is a denial here, under both failmodes.
fn lost_after_begin(e: &LinkError) -> Verdict {
    match e {
        LinkError::Unreachable(_) | LinkError::Refused(_) => Verdict::Refused,
    }
}

/// The daemon over D-Bus.
pub struct BusDaemon<'a> {
    proxy: LoginProxy<'a>,
}

/// D-Bus errors that mean no answer came from the daemon, as the bus daemon or zbus reports
/// them. Every other error name is the daemon's answer (or a bus policy refusal): final.
const TRANSPORT_ERRORS: &[&str] = &[
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
    "org.freedesktop.DBus.Error.NoReply",
    "org.freedesktop.DBus.Error.Disconnected",
];

/// Is `e` a failure to reach the daemon (as opposed to an answer from it)?
fn is_transport_failure(e: &zbus::Error) -> bool {
    use zbus::DBusError as _;
    match e {
        // The socket failed or closed, or the call ran past `timeout=` (zbus reports its
        // method timeout as an I/O error of kind TimedOut).
        zbus::Error::InputOutput(_) => true,
        zbus::Error::FDO(fdo) => TRANSPORT_ERRORS.contains(&fdo.name().as_str()),
        zbus::Error::MethodError(name, _, _) => TRANSPORT_ERRORS.contains(&name.as_str()),
        // A reply that does not decode, an unexpected reply, anything else: the daemon (or
        // something pretending to be it) answered.
        _ => false,
    }
}

/// Classifies a failed call: only transport failures are "unreachable".
fn link_err(e: BusError) -> LinkError {
    let detail = format!("{}: {}", e.kind(), e.message());
    match &e {
        BusError::ZBus(z) if is_transport_failure(z) => LinkError::Unreachable(detail),
        _ => LinkError::Refused(detail),
    }
}

/// A step the daemon sent that does not decode is its answer, and nonsense: a denial.
fn decode(w: WireStep) -> Result<LoginStep, LinkError> {
    LoginStep::try_from(w).map_err(|e| LinkError::Refused(format!("malformed step: {e}")))
}

impl Daemon for BusDaemon<'_> {
    async fn begin(
        &self,
        user: &str,
        context: &[(&str, &str)],
    ) -> Result<(String, LoginStep), LinkError> {
        let ctx = context.iter().copied().collect();
        let (handle, step) = self.proxy.begin_login(user, ctx).await.map_err(link_err)?;
        Ok((handle, decode(step)?))
    }

    async fn answer(&self, handle: &str, answer: &str) -> Result<LoginStep, LinkError> {
        decode(
            self.proxy
                .continue_(handle, answer)
                .await
                .map_err(link_err)?,
        )
    }

    async fn cancel(&self, handle: &str) {
        let _ = self.proxy.cancel(handle).await;
    }

    async fn assert(&self, handle: &str, assertion: &KeyAssertion) -> Result<LoginStep, LinkError> {
        decode(
            self.proxy
                .assert(handle, assertion)
                .await
                .map_err(link_err)?,
        )
    }

    async fn skip_key(&self, handle: &str, reason: &str) -> Result<LoginStep, LinkError> {
        decode(
            self.proxy
                .skip_key(handle, reason)
                .await
                .map_err(link_err)?,
        )
    }
}

/// May a connection of `uid` answer for the daemon? Root, or the daemon's own account
/// (`daemon_uid`, `None` when that account does not exist).
pub fn owner_trusted(uid: u32, daemon_uid: Option<u32>) -> bool {
    uid == 0 || Some(uid) == daemon_uid
}

/// The uid of [`DAEMON_USER`] through NSS; `None` if it does not exist or cannot be looked up
/// (then only root is trusted).
pub(crate) fn daemon_uid() -> Option<u32> {
    nix::unistd::User::from_name(DAEMON_USER)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
}

/// The unique name of the connection that owns the daemon's name, if its owner is trusted:
/// every call of the login goes to that connection, so a change of owner during the login
/// cannot redirect the answers. No owner is "unreachable"; an owner of any other uid (the bus
/// policy let someone else take the name) is a denial: nothing is sent to it.
async fn trusted_owner(conn: &zbus::Connection) -> Result<zbus::names::OwnedUniqueName, LinkError> {
    let fdo = |e: zbus::fdo::Error| link_err(BusError::ZBus(zbus::Error::from(e)));
    let dbus = zbus::fdo::DBusProxy::new(conn)
        .await
        .map_err(|e| link_err(BusError::ZBus(e)))?;
    let name = zbus::names::WellKnownName::from_static_str(BUS_NAME)
        .map_err(|e| LinkError::Refused(format!("bad bus name: {e}")))?;
    let owner = dbus.get_name_owner(name.into()).await.map_err(fdo)?;
    let uid = dbus
        .get_connection_unix_user(owner.as_ref().into())
        .await
        .map_err(fdo)?;
    // Root owns the name in most setups: only otherwise is the daemon's account looked up (NSS
    // may scan all of /etc/passwd for it, on every login).
    if uid != 0 && !owner_trusted(uid, daemon_uid()) {
        return Err(LinkError::Refused(format!(
            "{BUS_NAME} is owned by {owner}, a connection of uid {uid}, which is neither root \
             nor {DAEMON_USER}: nothing is sent to it"
        )));
    }
    Ok(owner)
}

/// Connects to the bus at `address`, checks who owns the daemon's name, runs the login with
/// that owner, and closes the connection before returning, all on the calling thread.
pub fn authenticate(
    address: &str,
    timeout: Duration,
    conv: &mut dyn Conversation,
    authenticator: &dyn Authenticator,
    user: &str,
    context: &[(&str, &str)],
    log: Log<'_>,
) -> Verdict {
    zbus::block_on(async {
        let conn = match zbus::connection::Builder::address(address)
            .method_timeout(timeout)
            .build()
            .await
        {
            Ok(c) => c,
            Err(e) => {
                log(
                    true,
                    &format!("cannot connect to the bus at {address}: {e}"),
                );
                return Verdict::Unreachable;
            }
        };
        let owner = match trusted_owner(&conn).await {
            Ok(o) => o,
            Err(e) => {
                log(true, &format!("login for {user} not started: {e}"));
                let _ = conn.close().await;
                return e.verdict();
            }
        };
        let proxy = match LoginProxy::builder(&conn)
            .destination(owner)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
        {
            Ok(p) => p,
            Err(e) => {
                let e = link_err(BusError::ZBus(e));
                log(true, &format!("cannot make the login proxy: {e}"));
                let _ = conn.close().await;
                return e.verdict();
            }
        };
        let verdict = run(
            &BusDaemon { proxy },
            conv,
            authenticator,
            user,
            context,
            log,
        )
        .await;
        let _ = conn.close().await;
        verdict
    })
}

/// After the daemon could not be reached under `failmode=closed`: what its offline snapshot
/// at `snapshot` says about `user` on `service` ([`crate::offline`]). `OfflineNotRequired` only
/// when the snapshot is trusted and says the daemon would not ask; `Unreachable` otherwise.
pub fn unreachable_verdict(
    snapshot: Option<&std::path::Path>,
    user: &str,
    service: &str,
    log: Log<'_>,
) -> Verdict {
    let Some(path) = snapshot else {
        return Verdict::Unreachable;
    };
    let asks = crate::offline::read(path, daemon_uid())
        .and_then(|s| crate::offline::asks(&s, user, service));
    match asks {
        Ok(false) => {
            log(
                true,
                &format!(
                    "twofactord unreachable; its offline snapshot says {user} is not asked for \
                     a second factor on {service}: the rest of the stack decides"
                ),
            );
            Verdict::OfflineNotRequired
        }
        Ok(true) => {
            log(
                true,
                &format!(
                    "twofactord unreachable; its offline snapshot says {user} needs a second \
                     factor: refused"
                ),
            );
            Verdict::Unreachable
        }
        Err(e) => {
            log(
                true,
                &format!("twofactord unreachable; no usable offline snapshot: {e}"),
            );
            Verdict::Unreachable
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::ConversationError;
    use std::cell::RefCell;
    use twofactor_bus::Outcome;
    use zeroize::Zeroizing;

    /// A scripted user: answers prompts in order and fails on an unexpected or missing one.
    struct ScriptedUser {
        answers: Vec<&'static str>,
        shown: Vec<String>,
        prompts: usize,
    }

    impl Conversation for ScriptedUser {
        fn prompt(
            &mut self,
            text: &str,
            _echo: bool,
        ) -> Result<Zeroizing<String>, ConversationError> {
            self.shown.push(format!("prompt:{text}"));
            self.prompts += 1;
            if self.answers.is_empty() {
                panic!("unexpected prompt {text:?}");
            }
            Ok(Zeroizing::new(self.answers.remove(0).to_string()))
        }
        fn info(&mut self, text: &str) -> Result<(), ConversationError> {
            self.shown.push(format!("info:{text}"));
            Ok(())
        }
        fn error(&mut self, text: &str) -> Result<(), ConversationError> {
            self.shown.push(format!("error:{text}"));
            Ok(())
        }
    }

    /// A scripted daemon: a list of steps, recording answers and cancels.
    struct ScriptedDaemon {
        begin: Result<LoginStep, LinkError>,
        steps: RefCell<Vec<Result<LoginStep, LinkError>>>,
        answers: RefCell<Vec<String>>,
        cancelled: RefCell<bool>,
    }

    impl Daemon for ScriptedDaemon {
        async fn begin(
            &self,
            _u: &str,
            _c: &[(&str, &str)],
        ) -> Result<(String, LoginStep), LinkError> {
            self.begin.clone().map(|s| ("h".to_string(), s))
        }
        async fn answer(&self, handle: &str, answer: &str) -> Result<LoginStep, LinkError> {
            assert_eq!(handle, "h");
            self.answers.borrow_mut().push(answer.to_string());
            self.steps.borrow_mut().remove(0)
        }
        async fn cancel(&self, _h: &str) {
            *self.cancelled.borrow_mut() = true;
        }
        async fn assert(&self, handle: &str, a: &KeyAssertion) -> Result<LoginStep, LinkError> {
            assert_eq!(handle, "h");
            self.answers
                .borrow_mut()
                .push(format!("assert:{}", a.signature.len()));
            self.steps.borrow_mut().remove(0)
        }
        async fn skip_key(&self, handle: &str, reason: &str) -> Result<LoginStep, LinkError> {
            assert_eq!(handle, "h");
            self.answers.borrow_mut().push(format!("skip:{reason}"));
            self.steps.borrow_mut().remove(0)
        }
    }

    /// A key double: present or not, and a fixed result.
    struct FakeKey {
        present: bool,
        result: Result<twofactor_key::AssertionResponse, twofactor_key::KeyError>,
        wants_pin: bool,
    }

    impl Authenticator for FakeKey {
        fn present(&self) -> bool {
            self.present
        }
        fn register(
            &self,
            _r: &twofactor_key::RegistrationRequest<'_>,
            _pin: twofactor_key::PinSource<'_>,
        ) -> Result<twofactor_key::RegistrationResponse, twofactor_key::KeyError> {
            Err(twofactor_key::KeyError::NoDevice)
        }
        fn assert(
            &self,
            _r: &twofactor_key::AssertionRequest<'_>,
            pin: twofactor_key::PinSource<'_>,
        ) -> Result<twofactor_key::AssertionResponse, twofactor_key::KeyError> {
            if self.wants_pin && pin("PIN: ").is_none() {
                return Err(twofactor_key::KeyError::PinMissing);
            }
            self.result.clone()
        }
    }

    const NO_KEY: FakeKey = FakeKey {
        present: false,
        result: Err(twofactor_key::KeyError::NoDevice),
        wants_pin: false,
    };

    fn key_step(press_enter: bool) -> LoginStep {
        LoginStep::key(
            "Touch your security key.",
            twofactor_bus::KeyRequest {
                rp_id: "pam://h".into(),
                client_data: b"{}".to_vec(),
                credential_ids: vec![vec![1]],
                user_verification: "preferred".into(),
                timeout_ms: 1000,
                press_enter,
            },
        )
    }

    fn signed() -> Result<twofactor_key::AssertionResponse, twofactor_key::KeyError> {
        Ok(twofactor_key::AssertionResponse {
            credential_id: vec![1],
            authenticator_data: vec![0; 37],
            signature: vec![0; 70],
        })
    }

    fn go_key(d: &ScriptedDaemon, u: &mut ScriptedUser, key: &FakeKey) -> Verdict {
        zbus::block_on(run(d, u, key, "alice", &[("service", "login")], &|_, _| {}))
    }

    #[test]
    fn a_key_step_shows_the_cue_and_sends_the_assertion() {
        let d = daemon(
            Ok(key_step(false)),
            vec![Ok(LoginStep::done(Outcome::Success))],
        );
        let key = FakeKey {
            present: true,
            result: signed(),
            wants_pin: true,
        };
        let mut u = user(vec!["1234"]);
        assert_eq!(go_key(&d, &mut u, &key), Verdict::Daemon(Outcome::Success));
        assert_eq!(*d.answers.borrow(), ["assert:70"]);
        assert_eq!(u.shown, ["info:Touch your security key.", "prompt:PIN: "]);
    }

    #[test]
    fn no_key_skips_to_the_code_prompt_without_a_cue() {
        let d = daemon(
            Ok(key_step(false)),
            vec![
                Ok(LoginStep::prompt("Code: ", false).error("No security key found.")),
                Ok(LoginStep::done(Outcome::Success)),
            ],
        );
        let mut u = user(vec!["123456"]);
        assert_eq!(
            go_key(&d, &mut u, &NO_KEY),
            Verdict::Daemon(Outcome::Success)
        );
        assert_eq!(*d.answers.borrow(), ["skip:no-device", "123456"]);
        assert_eq!(u.shown, ["error:No security key found.", "prompt:Code: "]);
    }

    #[test]
    fn key_errors_become_skip_reasons() {
        for (err, reason) in [
            (twofactor_key::KeyError::Timeout, "timeout"),
            (twofactor_key::KeyError::NotEnrolled, "not-enrolled"),
            (twofactor_key::KeyError::PinInvalid, "error"),
            (twofactor_key::KeyError::Device("x".into()), "error"),
        ] {
            let d = daemon(
                Ok(key_step(false)),
                vec![Ok(LoginStep::done(Outcome::Denied))],
            );
            let key = FakeKey {
                present: true,
                result: Err(err),
                wants_pin: false,
            };
            let v = go_key(&d, &mut user(vec![]), &key);
            assert_eq!(v, Verdict::Daemon(Outcome::Denied));
            assert_eq!(*d.answers.borrow(), [format!("skip:{reason}")]);
        }
    }

    #[test]
    fn press_enter_mode_lets_the_user_type_a_code_at_the_cue() {
        let d = daemon(
            Ok(key_step(true)),
            vec![
                Ok(LoginStep::prompt("Code: ", false)),
                Ok(LoginStep::done(Outcome::Success)),
            ],
        );
        let key = FakeKey {
            present: true,
            result: signed(),
            wants_pin: false,
        };
        let mut u = user(vec!["654321"]);
        assert_eq!(go_key(&d, &mut u, &key), Verdict::Daemon(Outcome::Success));
        assert_eq!(*d.answers.borrow(), ["skip:declined", "654321"]);
        assert_eq!(u.prompts, 1, "the code typed at the cue is not asked again");
        // Enter alone: the key is used.
        let d = daemon(
            Ok(key_step(true)),
            vec![Ok(LoginStep::done(Outcome::Success))],
        );
        let mut u = user(vec![""]);
        assert_eq!(go_key(&d, &mut u, &key), Verdict::Daemon(Outcome::Success));
        assert_eq!(*d.answers.borrow(), ["assert:70"]);
    }

    fn daemon(
        begin: Result<LoginStep, LinkError>,
        steps: Vec<Result<LoginStep, LinkError>>,
    ) -> ScriptedDaemon {
        ScriptedDaemon {
            begin,
            steps: RefCell::new(steps),
            answers: RefCell::new(Vec::new()),
            cancelled: RefCell::new(false),
        }
    }

    fn user(answers: Vec<&'static str>) -> ScriptedUser {
        ScriptedUser {
            answers,
            shown: Vec::new(),
            prompts: 0,
        }
    }

    fn go(d: &ScriptedDaemon, u: &mut ScriptedUser) -> Verdict {
        zbus::block_on(run(
            d,
            u,
            &NO_KEY,
            "alice",
            &[("service", "sshd")],
            &|_, _| {},
        ))
    }

    #[test]
    fn relays_prompt_answer_and_success() {
        let d = daemon(
            Ok(LoginStep::prompt("Verification code: ", false)),
            vec![Ok(LoginStep::done(Outcome::Success).info("welcome"))],
        );
        let mut u = user(vec!["123456"]);
        assert_eq!(go(&d, &mut u), Verdict::Daemon(Outcome::Success));
        assert_eq!(*d.answers.borrow(), ["123456"]);
        assert_eq!(u.shown, ["prompt:Verification code: ", "info:welcome"]);
    }

    #[test]
    fn retries_show_the_error_then_prompt_again() {
        let d = daemon(
            Ok(LoginStep::prompt("Code: ", false)),
            vec![
                Ok(LoginStep::prompt("Code: ", false).error("Wrong code.")),
                Ok(LoginStep::done(Outcome::Denied).error("Wrong code.")),
            ],
        );
        let mut u = user(vec!["1", "2"]);
        assert_eq!(go(&d, &mut u), Verdict::Daemon(Outcome::Denied));
        assert_eq!(
            u.shown,
            [
                "prompt:Code: ",
                "error:Wrong code.",
                "prompt:Code: ",
                "error:Wrong code."
            ]
        );
    }

    #[test]
    fn not_required_asks_nothing() {
        let d = daemon(Ok(LoginStep::done(Outcome::NotRequired)), vec![]);
        let mut u = user(vec![]);
        assert_eq!(go(&d, &mut u), Verdict::Daemon(Outcome::NotRequired));
        assert_eq!(u.prompts, 0);
    }

    /// An error reply as the bus delivers it, through zbus's and our own decoding.
    fn reply(name: &str, text: &str) -> BusError {
        let call = zbus::Message::method_call("/org/twofactor/TwoFactor1", "Continue")
            .build(&())
            .expect("call");
        let err = zbus::Message::error(&call.header(), name)
            .build(&(text,))
            .expect("error reply");
        BusError::from(zbus::Error::from(err))
    }

    fn io(kind: std::io::ErrorKind) -> BusError {
        BusError::ZBus(zbus::Error::InputOutput(
            std::io::Error::new(kind, "x").into(),
        ))
    }

    /// Every way a call can fail, and whether it is a transport failure (`true`).
    fn failures() -> Vec<(&'static str, BusError, bool)> {
        let fdo = "org.freedesktop.DBus.Error.";
        let ours = "org.twofactor.TwoFactor1.Error.";
        let mut v = vec![
            // Transport: the only failures failmode=open may pass.
            ("timeout", io(std::io::ErrorKind::TimedOut), true),
            ("socket closed", io(std::io::ErrorKind::BrokenPipe), true),
            ("reset", io(std::io::ErrorKind::ConnectionReset), true),
        ];
        for name in [
            "ServiceUnknown",
            "NameHasNoOwner",
            "NoReply",
            "Disconnected",
        ] {
            v.push((name, reply(&format!("{fdo}{name}"), "gone"), true));
        }
        // The daemon's own answers, each one final.
        for name in [
            "AccessDenied",
            "NoSuchUser",
            "InvalidArgument",
            "NoSuchSession",
            "NotAllowed",
            "StateUnavailable",
            "InvalidPolicy",
        ] {
            v.push((name, reply(&format!("{ours}{name}"), "no"), false));
        }
        v.extend([
            // An error name outside the contract is still an answer.
            ("unknown name", reply(&format!("{ours}Bogus"), "?"), false),
            ("Failed", reply(&format!("{fdo}Failed"), "?"), false),
            (
                "UnknownMethod",
                reply(&format!("{fdo}UnknownMethod"), "?"),
                false,
            ),
            (
                "InvalidArgs",
                reply(&format!("{fdo}InvalidArgs"), "?"),
                false,
            ),
            // The bus's policy refusing the call is not "unreachable" either.
            (
                "bus AccessDenied",
                reply(&format!("{fdo}AccessDenied"), "?"),
                false,
            ),
            // A reply whose body does not decode.
            (
                "bad reply",
                BusError::ZBus(zbus::Error::InvalidReply),
                false,
            ),
            (
                "bad type",
                BusError::ZBus(zbus::Error::IncorrectType),
                false,
            ),
            (
                "bad body",
                BusError::ZBus(zbus::Error::Failure("invalid value".into())),
                false,
            ),
        ]);
        v
    }

    #[test]
    fn error_replies_decode_to_their_class() {
        assert_eq!(
            reply("org.twofactor.TwoFactor1.Error.NoSuchSession", "expired"),
            BusError::NoSuchSession("expired".into())
        );
        assert!(matches!(
            reply("org.freedesktop.DBus.Error.ServiceUnknown", "gone"),
            BusError::ZBus(zbus::Error::FDO(_))
        ));
    }

    #[test]
    fn only_transport_failures_are_unreachable() {
        for (what, e, transport) in failures() {
            match link_err(e) {
                LinkError::Unreachable(_) => assert!(transport, "{what} must be refused"),
                LinkError::Refused(_) => assert!(!transport, "{what} is a transport failure"),
            }
        }
    }

    /// The stages at which a call can fail.
    #[derive(Debug, Clone, Copy)]
    enum At {
        Begin,
        Continue,
        Assert,
        SkipKey,
        CodeAtCue,
    }

    fn fail_at(at: At, e: LinkError) -> Verdict {
        let signing = FakeKey {
            present: true,
            result: signed(),
            wants_pin: false,
        };
        let (d, key, answers) = match at {
            At::Begin => (daemon(Err(e), vec![]), NO_KEY, vec![]),
            At::Continue => (
                daemon(Ok(LoginStep::prompt("Code: ", false)), vec![Err(e)]),
                NO_KEY,
                vec!["123456"],
            ),
            At::Assert => (daemon(Ok(key_step(false)), vec![Err(e)]), signing, vec![]),
            At::SkipKey => (daemon(Ok(key_step(false)), vec![Err(e)]), NO_KEY, vec![]),
            At::CodeAtCue => (
                daemon(
                    Ok(key_step(true)),
                    vec![Ok(LoginStep::prompt("Code: ", false)), Err(e)],
                ),
                signing,
                vec!["654321"],
            ),
        };
        go_key(&d, &mut user(answers), &key)
    }

    #[test]
    fn every_failure_at_every_call_under_both_failmodes() {
        use crate::args::FailMode;
        use crate::outcome::{PamCode, pam_code};
        for (what, e, transport) in failures() {
            let e = link_err(e);
            for at in [
                At::Begin,
                At::Continue,
                At::Assert,
                At::SkipKey,
                At::CodeAtCue,
            ] {
                let v = fail_at(at, e.clone());
                let codes = (pam_code(v, FailMode::Closed), pam_code(v, FailMode::Open));
                if transport && matches!(at, At::Begin) {
                    assert_eq!(v, Verdict::Unreachable, "{what} at {at:?}");
                    assert_eq!(codes, (PamCode::AuthinfoUnavail, PamCode::Ignore));
                } else {
                    // An answer is final; and after the daemon's first answer (a factor is
                    // needed), losing the daemon is a denial too.
                    assert_eq!(v, Verdict::Refused, "{what} at {at:?}");
                    assert_eq!(
                        codes,
                        (PamCode::AuthErr, PamCode::AuthErr),
                        "{what} at {at:?}: an answer is final"
                    );
                }
            }
        }
    }

    #[test]
    fn a_malformed_step_is_refused_not_unreachable() {
        let good = WireStep::from(LoginStep::prompt("Code: ", false));
        assert!(decode(good.clone()).is_ok());
        let bad_kind = WireStep {
            kind: "maybe".into(),
            ..good.clone()
        };
        let bad_outcome = WireStep {
            kind: "done".into(),
            outcome: "sort-of".into(),
            ..good.clone()
        };
        let bad_key = WireStep {
            kind: "key".into(),
            ..good
        };
        for w in [bad_kind, bad_outcome, bad_key] {
            let e = decode(w.clone()).expect_err("malformed");
            assert!(matches!(e, LinkError::Refused(_)), "{w:?}: {e:?}");
            assert_eq!(e.verdict(), Verdict::Refused);
        }
    }

    #[test]
    fn a_daemon_that_never_finishes_is_cut_off() {
        let steps = (0..MAX_STEPS)
            .map(|_| Ok(LoginStep::prompt("Code: ", false)))
            .collect();
        let d = daemon(Ok(LoginStep::prompt("Code: ", false)), steps);
        let mut u = user(vec!["1"; MAX_STEPS]);
        // It answered every time: a denial, not "unreachable".
        assert_eq!(go(&d, &mut u), Verdict::Refused);
        assert!(*d.cancelled.borrow());
    }

    struct BrokenTerminal;
    impl Conversation for BrokenTerminal {
        fn prompt(&mut self, _t: &str, _e: bool) -> Result<Zeroizing<String>, ConversationError> {
            Err(ConversationError)
        }
        fn info(&mut self, _t: &str) -> Result<(), ConversationError> {
            Err(ConversationError)
        }
        fn error(&mut self, _t: &str) -> Result<(), ConversationError> {
            Err(ConversationError)
        }
    }

    #[test]
    fn a_failed_conversation_cancels_the_login() {
        let d = daemon(Ok(LoginStep::prompt("Code: ", false)), vec![]);
        let v = zbus::block_on(run(
            &d,
            &mut BrokenTerminal,
            &NO_KEY,
            "alice",
            &[],
            &|_, _| {},
        ));
        assert_eq!(v, Verdict::ConversationFailed);
        assert!(*d.cancelled.borrow());
    }
    #[test]
    fn pam_silent_shows_no_message_but_still_prompts() {
        use crate::conversation::Silent;
        let d = daemon(
            Ok(LoginStep::prompt("Code: ", false).info("Welcome.")),
            vec![
                Ok(LoginStep::prompt("Code: ", false).error("Wrong code.")),
                Ok(LoginStep::done(Outcome::Success).info("Last login: never")),
            ],
        );
        let mut u = user(vec!["1", "2"]);
        let v = zbus::block_on(run(
            &d,
            &mut Silent(&mut u),
            &NO_KEY,
            "alice",
            &[],
            &|_, _| {},
        ));
        assert_eq!(v, Verdict::Daemon(Outcome::Success));
        assert_eq!(u.shown, ["prompt:Code: ", "prompt:Code: "]);
        assert_eq!(*d.answers.borrow(), ["1", "2"]);
        // A denial with its reason: the verdict stands, the reason is not shown.
        let d = daemon(
            Ok(LoginStep::done(Outcome::Denied).error("Too many failed attempts.")),
            vec![],
        );
        let mut u = user(vec![]);
        let v = zbus::block_on(run(
            &d,
            &mut Silent(&mut u),
            &NO_KEY,
            "alice",
            &[],
            &|_, _| {},
        ));
        assert_eq!(v, Verdict::Daemon(Outcome::Denied));
        assert!(u.shown.is_empty(), "{:?}", u.shown);
        // The key cue is an informational message too; the PIN prompt is a prompt.
        let d = daemon(
            Ok(key_step(false)),
            vec![Ok(LoginStep::done(Outcome::Success))],
        );
        let key = FakeKey {
            present: true,
            result: signed(),
            wants_pin: true,
        };
        let mut u = user(vec!["1234"]);
        let v = zbus::block_on(run(&d, &mut Silent(&mut u), &key, "alice", &[], &|_, _| {}));
        assert_eq!(v, Verdict::Daemon(Outcome::Success));
        assert_eq!(u.shown, ["prompt:PIN: "]);
    }

    #[test]
    fn only_root_or_the_daemon_user_may_answer() {
        assert!(owner_trusted(0, None));
        assert!(owner_trusted(0, Some(998)));
        assert!(owner_trusted(998, Some(998)));
        assert!(!owner_trusted(998, None), "no daemon account: root only");
        assert!(!owner_trusted(1000, Some(998)));
        assert!(!owner_trusted(65534, None));
    }
}
