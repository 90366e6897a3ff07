//! The login entry points, with what the fleet's offline cache needs of them: after a login
//! ends in success (or 2FA did not apply), the store is told the user was served, so the host
//! can serve them while the fleet's database is unreachable. And the store's upkeep thread.

use std::collections::HashMap;
use std::time::Duration;

use twofactor_bus::{KeyAssertion, LoginStep, Outcome, StepKind};

use super::{BusError, Caller, Engine};

/// How often the store's upkeep runs (the fleet store pushes its offline journal, refreshes and
/// expires its copies).
pub const UPKEEP_EVERY: Duration = Duration::from_secs(15);

/// Whether `step` ends a login that let the user in.
fn lets_in(step: &LoginStep) -> bool {
    matches!(
        step.kind,
        StepKind::Done(Outcome::Success | Outcome::NotRequired)
    )
}

impl Engine {
    /// `Login.BeginLogin`.
    pub fn begin_login(
        &self,
        caller: &Caller,
        user: &str,
        context: &HashMap<String, String>,
    ) -> Result<(String, LoginStep), BusError> {
        let (handle, step) = self.begin_login_inner(caller, user, context)?;
        if self.keeps_copies
            && lets_in(&step)
            && let Some(account) = self.accounts.user_by_name_without_groups(user)
        {
            self.served(account.uid, &account.name);
        }
        Ok((handle, step))
    }

    /// `Login.Continue`: the answer to the current prompt.
    pub fn continue_login(
        &self,
        caller: &Caller,
        handle: &str,
        answer: &str,
    ) -> Result<LoginStep, BusError> {
        let who = self.login_user(handle);
        let step = self.continue_login_inner(caller, handle, answer)?;
        self.after(who, &step);
        Ok(step)
    }

    /// `Login.Assert`.
    pub fn assert_login(
        &self,
        caller: &Caller,
        handle: &str,
        assertion: &KeyAssertion,
    ) -> Result<LoginStep, BusError> {
        let who = self.login_user(handle);
        let step = self.assert_login_inner(caller, handle, assertion)?;
        self.after(who, &step);
        Ok(step)
    }

    /// `Login.SkipKey`: no assertion (no key, timeout, declined): on to the code prompt.
    pub fn skip_key(
        &self,
        caller: &Caller,
        handle: &str,
        reason: &str,
    ) -> Result<LoginStep, BusError> {
        let who = self.login_user(handle);
        let step = self.skip_key_inner(caller, handle, reason)?;
        self.after(who, &step);
        Ok(step)
    }

    /// The user of login `handle` (only when the store keeps copies).
    fn login_user(&self, handle: &str) -> Option<(u32, String)> {
        if !self.keeps_copies {
            return None;
        }
        let sessions = self.sessions().ok()?;
        let s = sessions.get(handle)?;
        Some((s.account.uid, s.account.name.clone()))
    }

    fn after(&self, who: Option<(u32, String)>, step: &LoginStep) {
        if let Some((uid, name)) = who
            && lets_in(step)
        {
            self.served(uid, &name);
        }
    }

    /// Tells the store that `uid` was served now. A failure is logged; the login stands.
    fn served(&self, uid: u32, name: &str) {
        let now = self.clock.now();
        let r = match self.store() {
            Ok(mut store) => store.served(uid, name, now).map_err(|e| e.to_string()),
            Err(e) => Err(e.message()),
        };
        if let Err(e) = r {
            crate::log::warn(&format!(
                "offline cache: the copy of {name} was not updated: {e}"
            ));
        }
    }

    /// One round of the store's upkeep; its lines go to the log.
    pub fn store_upkeep(&self) {
        let now = self.clock.now();
        let r = match self.store() {
            Ok(mut store) => store.maintain(now).map_err(|e| e.to_string()),
            Err(e) => Err(e.message()),
        };
        match r {
            Ok(lines) => {
                for line in lines {
                    crate::log::warn(&line);
                }
            }
            Err(e) => crate::log::error(&format!("store upkeep: {e}")),
        }
    }

    /// The store's upkeep every [`UPKEEP_EVERY`], for the daemon's life (its own thread; only
    /// for a store that keeps copies).
    pub fn run_store_upkeep(&self) {
        if !self.keeps_copies {
            return;
        }
        loop {
            std::thread::sleep(UPKEEP_EVERY);
            self.store_upkeep();
        }
    }
}
