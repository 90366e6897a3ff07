//! The D-Bus face of the daemon: thin interface impls that identify the caller through the bus
//! and forward to the [`Engine`].
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use twofactor_bus::{
    AuditEntry, BUS_NAME, BusError, CodeResult, KeyAssertion, KeyEnrollment, KeyImport, KeyRequest,
    OBJECT_PATH, TotpEnrollment, UserStatus, WireStep,
};
use zbus::message::Header;
use zbus::{Connection, interface};

use crate::engine::{Caller, Engine};
use crate::workers::{WORKERS, Workers};

/// Resolves senders to uids through the bus daemon. Unique names are never reused on a bus,
/// so a cached answer stays true until the name leaves.
pub struct Callers {
    dbus: zbus::fdo::DBusProxy<'static>,
    cache: Mutex<HashMap<String, u32>>,
}

const CALLER_CACHE_MAX: usize = 4096;

impl Callers {
    /// Uses `conn` to ask the bus daemon.
    pub async fn new(conn: &Connection) -> zbus::Result<Callers> {
        Ok(Callers {
            dbus: zbus::fdo::DBusProxy::new(conn).await?,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The caller of the message with header `hdr`.
    pub async fn identify(&self, hdr: &Header<'_>) -> Result<Caller, BusError> {
        let sender = hdr
            .sender()
            .ok_or_else(|| BusError::AccessDenied("message without a sender".into()))?;
        let name = sender.to_string();
        if let Ok(cache) = self.cache.lock()
            && let Some(&uid) = cache.get(&name)
        {
            return Ok(Caller { uid, sender: name });
        }
        let uid = self
            .dbus
            .get_connection_unix_user(sender.clone().into())
            .await
            .map_err(|e| {
                crate::log::warn(&format!("cannot identify caller {name}: {e}"));
                BusError::AccessDenied("the bus could not identify the caller".into())
            })?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CALLER_CACHE_MAX {
                cache.clear();
            }
            cache.insert(name.clone(), uid);
        }
        Ok(Caller { uid, sender: name })
    }

    /// Forgets a name that left the bus.
    pub fn forget(&self, name: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(name);
        }
    }
}

/// State shared by the three interfaces.
#[derive(Clone)]
pub struct Shared {
    /// The decisions.
    pub engine: Arc<Engine>,
    /// Caller identification.
    pub callers: Arc<Callers>,
    /// Where the engine's work runs: off the bus executor.
    pub workers: Arc<Workers>,
}

impl Shared {
    /// Runs `f` on the engine for `caller` on the worker pool: the engine blocks (NSS, the
    /// store's commits), the bus executor must not.
    async fn run<T: Send + 'static>(
        &self,
        caller: &Caller,
        f: impl FnOnce(&Engine, &Caller) -> Result<T, BusError> + Send + 'static,
    ) -> Result<T, BusError> {
        let engine = Arc::clone(&self.engine);
        let caller = caller.clone();
        self.workers.run(move || f(&engine, &caller)).await
    }

    /// [`Engine::flush_offline`] on the worker pool.
    async fn flush_offline(&self) {
        let engine = Arc::clone(&self.engine);
        let _ = self
            .workers
            .run(move || {
                engine.flush_offline();
                Ok(())
            })
            .await;
    }
}

fn log_denied<T>(method: &str, caller: &Caller, r: Result<T, BusError>) -> Result<T, BusError> {
    if let Err(e @ BusError::AccessDenied(_)) = &r {
        crate::log::warn(&format!(
            "denied {method} to uid {} ({}): {}",
            caller.uid,
            caller.sender,
            e.message()
        ));
    }
    r
}

/// Whether `c` may appear in a string received over the bus: no control character (C0, DEL,
/// C1) and no bidirectional-text control, which could forge or hide text where the string is
/// later shown (the audit log, an admin's terminal, syslog).
fn allowed_char(c: char) -> bool {
    !(c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
}

/// Refuses any string argument holding a character [`allowed_char`] refuses. The value itself
/// is never echoed (it may be a code).
fn plain_text(args: &[(&str, &str)]) -> Result<(), BusError> {
    for (name, value) in args {
        if !value.chars().all(allowed_char) {
            return Err(BusError::InvalidArgument(format!(
                "{name} contains control characters"
            )));
        }
    }
    Ok(())
}

fn plain_map(name: &str, map: &HashMap<String, String>) -> Result<(), BusError> {
    for (k, v) in map {
        plain_text(&[(name, k), (name, v)])?;
    }
    Ok(())
}

fn plain_list(name: &str, list: &[String]) -> Result<(), BusError> {
    for v in list {
        plain_text(&[(name, v)])?;
    }
    Ok(())
}

fn plain_imports(keys: &[KeyImport]) -> Result<(), BusError> {
    for k in keys {
        plain_text(&[("key name", &k.name), ("rp id", &k.rp_id)])?;
    }
    Ok(())
}

/// `org.twofactor.TwoFactor1.Login`.
pub struct LoginIface(pub Shared);
/// `org.twofactor.TwoFactor1.Enrollment`.
pub struct EnrollmentIface(pub Shared);
/// `org.twofactor.TwoFactor1.Admin`.
pub struct AdminIface(pub Shared);

#[interface(name = "org.twofactor.TwoFactor1.Login", introspection_docs = false)]
impl LoginIface {
    #[zbus(out_args("handle", "step"))]
    async fn begin_login(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        user: String,
        context: HashMap<String, String>,
    ) -> Result<(String, WireStep), BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        plain_text(&[("user", &user)])?;
        plain_map("context", &context)?;
        // The common case is answered here, without a hand-off to a worker and back; anything
        // that could wait (NSS, a busy store, a commit) goes to the pool.
        let r = match self.0.engine.try_begin_login(&caller, &user, &context) {
            Some(r) => r,
            None => {
                self.0
                    .run(&caller, move |e, c| e.begin_login(c, &user, &context))
                    .await
            }
        };
        log_denied("BeginLogin", &caller, r).map(|(h, s)| (h, s.into()))
    }

    #[zbus(name = "Continue", out_args("step"))]
    async fn continue_login(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        handle: String,
        answer: String,
    ) -> Result<WireStep, BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        plain_text(&[("handle", &handle), ("answer", &answer)])?;
        self.0
            .run(&caller, move |e, c| {
                let r = e.continue_login(c, &handle, &answer);
                // Enrollment at login may have added a factor.
                e.flush_offline();
                r
            })
            .await
            .map(Into::into)
    }

    async fn cancel(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        handle: String,
    ) -> Result<(), BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        plain_text(&[("handle", &handle)])?;
        self.0
            .run(&caller, move |e, c| e.cancel_login(c, &handle))
            .await
    }

    #[zbus(out_args("step"))]
    async fn assert(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        handle: String,
        assertion: KeyAssertion,
    ) -> Result<WireStep, BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        plain_text(&[("handle", &handle)])?;
        self.0
            .run(&caller, move |e, c| e.assert_login(c, &handle, &assertion))
            .await
            .map(Into::into)
    }

    #[zbus(out_args("step"))]
    async fn skip_key(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        handle: String,
        reason: String,
    ) -> Result<WireStep, BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        plain_text(&[("handle", &handle), ("reason", &reason)])?;
        self.0
            .run(&caller, move |e, c| e.skip_key(c, &handle, &reason))
            .await
            .map(Into::into)
    }
}

#[interface(
    name = "org.twofactor.TwoFactor1.Enrollment",
    introspection_docs = false
)]
impl EnrollmentIface {
    #[zbus(out_args("status"))]
    async fn status(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        user: String,
    ) -> Result<UserStatus, BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        plain_text(&[("user", &user)])?;
        let r = self
            .0
            .run(&caller, move |e, c| {
                e.status(c, &user, ("Enrollment", "Status"))
            })
            .await;
        log_denied("Status", &caller, r)
    }

    #[zbus(out_args("status"))]
    async fn explain(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        user: String,
        context: HashMap<String, String>,
    ) -> Result<UserStatus, BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        plain_text(&[("user", &user)])?;
        plain_map("context", &context)?;
        let r = self
            .0
            .run(&caller, move |e, c| e.explain(c, &user, &context))
            .await;
        log_denied("Explain", &caller, r)
    }

    #[zbus(out_args("enrollment"))]
    async fn begin_totp(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        code: String,
    ) -> Result<TotpEnrollment, BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        plain_text(&[("code", &code)])?;
        self.0
            .run(&caller, move |e, c| e.begin_totp(c, &code))
            .await
    }

    #[zbus(out_args("result"))]
    async fn confirm_totp(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        enrollment_id: String,
        code: String,
    ) -> Result<CodeResult, BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        plain_text(&[("enrollment_id", &enrollment_id), ("code", &code)])?;
        let r = self
            .0
            .run(&caller, move |e, c| {
                e.confirm_totp(c, &enrollment_id, &code)
            })
            .await;
        self.0.flush_offline().await;
        r
    }

    #[zbus(out_args("result"))]
    async fn regenerate_recovery_codes(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        code: String,
    ) -> Result<CodeResult, BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        plain_text(&[("code", &code)])?;
        self.0
            .run(&caller, move |e, c| e.regenerate_recovery(c, &code))
            .await
    }

    #[zbus(out_args("result"))]
    async fn disable(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        code: String,
    ) -> Result<CodeResult, BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        plain_text(&[("code", &code)])?;
        let r = self.0.run(&caller, move |e, c| e.disable(c, &code)).await;
        self.0.flush_offline().await;
        r
    }

    #[zbus(out_args("entries"))]
    async fn recent_events(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        self.0
            .run(&caller, move |e, c| e.recent_events(c, limit))
            .await
    }

    #[zbus(out_args("enrollment"))]
    async fn begin_key(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        name: String,
        code: String,
    ) -> Result<KeyEnrollment, BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        plain_text(&[("name", &name), ("code", &code)])?;
        let r = self
            .0
            .run(&caller, move |e, c| e.begin_key(c, &name, &code))
            .await;
        log_denied("BeginKey", &caller, r)
    }

    #[zbus(out_args("request"))]
    async fn register_key(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        enrollment_id: String,
        authenticator_data: Vec<u8>,
    ) -> Result<KeyRequest, BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        plain_text(&[("enrollment_id", &enrollment_id)])?;
        self.0
            .run(&caller, move |e, c| {
                e.register_key(c, &enrollment_id, &authenticator_data)
            })
            .await
    }

    #[zbus(out_args("result"))]
    async fn confirm_key(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        enrollment_id: String,
        assertion: KeyAssertion,
    ) -> Result<CodeResult, BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        plain_text(&[("enrollment_id", &enrollment_id)])?;
        let r = self
            .0
            .run(&caller, move |e, c| {
                e.confirm_key(c, &enrollment_id, &assertion)
            })
            .await;
        self.0.flush_offline().await;
        r
    }

    #[zbus(out_args("proof_id", "request"))]
    async fn begin_key_proof(
        &self,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(String, KeyRequest), BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        self.0.run(&caller, move |e, c| e.begin_key_proof(c)).await
    }

    #[zbus(out_args("token"))]
    async fn prove_with_key(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        proof_id: String,
        assertion: KeyAssertion,
    ) -> Result<String, BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        plain_text(&[("proof_id", &proof_id)])?;
        self.0
            .run(&caller, move |e, c| {
                e.prove_with_key(c, &proof_id, &assertion)
            })
            .await
    }

    #[zbus(out_args("result"))]
    async fn remove_key(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        name: String,
        code: String,
    ) -> Result<CodeResult, BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        plain_text(&[("name", &name), ("code", &code)])?;
        let r = self
            .0
            .run(&caller, move |e, c| e.remove_key(c, &name, &code))
            .await;
        self.0.flush_offline().await;
        r
    }

    #[zbus(out_args("in_force", "problem"))]
    async fn policy_status(
        &self,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(String, String), BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        self.0.run(&caller, move |e, c| e.policy_status(c)).await
    }
}

#[interface(name = "org.twofactor.TwoFactor1.Admin", introspection_docs = false)]
impl AdminIface {
    #[zbus(out_args("status"))]
    async fn show(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        user: String,
    ) -> Result<UserStatus, BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        plain_text(&[("user", &user)])?;
        let r = self
            .0
            .run(&caller, move |e, c| e.status(c, &user, ("Admin", "Show")))
            .await;
        log_denied("Show", &caller, r)
    }

    async fn require(&self, #[zbus(header)] hdr: Header<'_>, user: String) -> Result<(), BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        plain_text(&[("user", &user)])?;
        let r = self
            .0
            .run(&caller, move |e, c| e.set_required(c, &user, true))
            .await;
        self.0.flush_offline().await;
        log_denied("Require", &caller, r)
    }

    async fn release(&self, #[zbus(header)] hdr: Header<'_>, user: String) -> Result<(), BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        plain_text(&[("user", &user)])?;
        let r = self
            .0
            .run(&caller, move |e, c| e.set_required(c, &user, false))
            .await;
        self.0.flush_offline().await;
        log_denied("Release", &caller, r)
    }

    async fn reset(&self, #[zbus(header)] hdr: Header<'_>, user: String) -> Result<(), BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        plain_text(&[("user", &user)])?;
        let r = self.0.run(&caller, move |e, c| e.reset(c, &user)).await;
        self.0.flush_offline().await;
        log_denied("Reset", &caller, r)
    }

    async fn unlock(&self, #[zbus(header)] hdr: Header<'_>, user: String) -> Result<(), BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        plain_text(&[("user", &user)])?;
        let r = self.0.run(&caller, move |e, c| e.unlock(c, &user)).await;
        log_denied("Unlock", &caller, r)
    }

    #[zbus(out_args("result"))]
    async fn issue_codes(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        user: String,
    ) -> Result<CodeResult, BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        plain_text(&[("user", &user)])?;
        let r = self
            .0
            .run(&caller, move |e, c| e.issue_codes(c, &user))
            .await;
        self.0.flush_offline().await;
        log_denied("IssueCodes", &caller, r)
    }

    async fn grace(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        user: String,
        extend_seconds: i64,
    ) -> Result<(), BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        plain_text(&[("user", &user)])?;
        let r = self
            .0
            .run(&caller, move |e, c| e.grace(c, &user, extend_seconds))
            .await;
        log_denied("Grace", &caller, r)
    }

    #[zbus(out_args("message"))]
    #[allow(clippy::too_many_arguments)]
    async fn import_totp(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        user: String,
        secret_base32: String,
        algorithm: String,
        digits: u32,
        period: u32,
        recovery_codes: Vec<String>,
    ) -> Result<String, BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        plain_text(&[
            ("user", &user),
            ("secret_base32", &secret_base32),
            ("algorithm", &algorithm),
        ])?;
        plain_list("recovery_codes", &recovery_codes)?;
        let r = self
            .0
            .run(&caller, move |e, c| {
                e.import_totp(
                    c,
                    &user,
                    &secret_base32,
                    &algorithm,
                    digits,
                    period,
                    &recovery_codes,
                )
            })
            .await;
        self.0.flush_offline().await;
        log_denied("ImportTotp", &caller, r)
    }

    #[zbus(out_args("message"))]
    async fn import_keys(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        user: String,
        keys: Vec<KeyImport>,
    ) -> Result<String, BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        plain_text(&[("user", &user)])?;
        plain_imports(&keys)?;
        let r = self
            .0
            .run(&caller, move |e, c| e.import_keys(c, &user, &keys))
            .await;
        self.0.flush_offline().await;
        log_denied("ImportKeys", &caller, r)
    }

    #[zbus(out_args("users", "partial", "notes"))]
    async fn list_users(
        &self,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(Vec<UserStatus>, bool, Vec<String>), BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        let r = self
            .0
            .run(&caller, move |e, c| e.list_users(c))
            .await
            .map(|l| (l.users, l.partial, l.notes));
        log_denied("ListUsers", &caller, r)
    }

    #[zbus(out_args("entries"))]
    async fn audit(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        user: String,
        since: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        plain_text(&[("user", &user)])?;
        let r = self
            .0
            .run(&caller, move |e, c| e.audit_log(c, &user, since, limit))
            .await;
        log_denied("Audit", &caller, r)
    }

    #[zbus(out_args("message"))]
    async fn reload_policy(&self, #[zbus(header)] hdr: Header<'_>) -> Result<String, BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        let r = self.0.run(&caller, move |e, c| e.reload_policy(c)).await;
        self.0.flush_offline().await;
        log_denied("ReloadPolicy", &caller, r)
    }

    #[zbus(out_args("snapshot", "size"))]
    async fn backup(
        &self,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(zbus::OwnedFd, u64), BusError> {
        let caller = self.0.callers.identify(&hdr).await?;
        let r = self
            .0
            .run(&caller, move |e, c| e.backup(c))
            .await
            .map(|(file, len)| (zbus::OwnedFd::from(std::os::fd::OwnedFd::from(file)), len));
        log_denied("Backup", &caller, r)
    }
}

/// Connects to the bus at `address` (or the system bus), serves the object, then takes the
/// well-known name. Returns once the name is owned.
pub async fn serve(
    engine: Arc<Engine>,
    address: Option<&str>,
) -> Result<(Connection, Shared), String> {
    let builder = match address {
        Some(a) => zbus::connection::Builder::address(a),
        None => zbus::connection::Builder::system(),
    };
    let conn = builder
        .build()
        .await
        .map_err(|e| format!("cannot connect to the bus: {e}"))?;
    let callers = Arc::new(
        Callers::new(&conn)
            .await
            .map_err(|e| format!("bus daemon proxy: {e}"))?,
    );
    let workers =
        Arc::new(Workers::start(WORKERS).map_err(|e| format!("cannot start the workers: {e}"))?);
    let shared = Shared {
        engine,
        callers,
        workers,
    };
    let server = conn.object_server();
    server
        .at(OBJECT_PATH, LoginIface(shared.clone()))
        .await
        .map_err(|e| format!("serve Login: {e}"))?;
    server
        .at(OBJECT_PATH, EnrollmentIface(shared.clone()))
        .await
        .map_err(|e| format!("serve Enrollment: {e}"))?;
    server
        .at(OBJECT_PATH, AdminIface(shared.clone()))
        .await
        .map_err(|e| format!("serve Admin: {e}"))?;
    let reply = conn
        .request_name_with_flags(BUS_NAME, zbus::fdo::RequestNameFlags::DO_NOT_QUEUE)
        .await
        .map_err(|e| format!("cannot own {BUS_NAME} (the bus policy forbids it?): {e}"))?;
    if reply != zbus::fdo::RequestNameReply::PrimaryOwner {
        return Err(format!(
            "cannot own {BUS_NAME}: another twofactord is running"
        ));
    }
    Ok((conn, shared))
}

/// Runs until the connection closes: drops the logins, key enrollments, key proofs and cached
/// identity of every caller that leaves the bus (what it held no longer counts toward its caps).
pub async fn watch_departures(shared: &Shared) -> Result<(), String> {
    let mut changes = shared
        .callers
        .dbus
        .receive_name_owner_changed()
        .await
        .map_err(|e| format!("cannot watch the bus: {e}"))?;
    while let Some(signal) = changes.next().await {
        if let Ok(args) = signal.args()
            && args.new_owner().is_none()
        {
            let name = args.name().to_string();
            shared.engine.sender_gone(&name);
            shared.callers.forget(&name);
        }
    }
    Ok(())
}
