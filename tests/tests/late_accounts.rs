//! Rules for accounts and groups that NSS did not know when the daemon started (created later,
//! LDAP not reachable at boot) apply from the next login on: the policy keeps names and the
//! daemon matches them at each login, without a reload.
//!
//! These tests create real users and groups (`useradd`, `groupadd`, `gpasswd`) with names unique
//! to this process and remove them again when done, even when an assertion fails.
#![allow(clippy::expect_used)]

use std::process::Command;

use twofactor_tests::*;

/// Deletes the users and groups it was told about when dropped (users first: a group that is
/// still someone's primary group cannot be deleted).
#[derive(Default)]
struct Accounts {
    users: Vec<String>,
    groups: Vec<String>,
}

impl Accounts {
    /// A name unique to this process: `tf-<what><pid>`. A leftover of an earlier run that had
    /// the same pid (killed before its cleanup ran) is removed first.
    fn name(&self, what: &str) -> String {
        let name = format!("tf-{what}{}", std::process::id());
        quiet(Command::new("userdel").arg(&name));
        quiet(Command::new("groupdel").arg(&name));
        name
    }

    /// `useradd` with the options of the test kit's own users (a same-named group, which
    /// `setpriv --regid` needs).
    fn add_user(&mut self, name: &str) {
        self.users.push(name.to_string());
        run(Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/bin/sh"])
            .arg(name));
    }

    fn add_group(&mut self, name: &str) {
        self.groups.push(name.to_string());
        run(Command::new("groupadd").args(["--system", name]));
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        for u in &self.users {
            quiet(Command::new("userdel").arg(u));
            // useradd's per-user group, if userdel left it.
            quiet(Command::new("groupdel").arg(u));
        }
        for g in &self.groups {
            quiet(Command::new("groupdel").arg(g));
        }
    }
}

fn run(c: &mut Command) {
    let out = c.output().expect("spawn");
    assert!(
        out.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn quiet(c: &mut Command) {
    let _ = c.output();
}

fn join_group(user: &str, group: &str) {
    run(Command::new("gpasswd").args(["--add", user, group]));
}

fn show(env: &Env, user: &str) -> serde_json::Value {
    env.ctl(&["--json", "admin", "show", user]).ok().json()
}

#[test]
fn rules_for_groups_and_users_created_after_start_apply_without_a_reload() {
    let mut acc = Accounts::default();
    let group = acc.name("lg");
    let admins = acc.name("la");
    let member = acc.name("lm");
    let newcomer = acc.name("ln");
    // The member exists when the daemon starts, in no group the policy names.
    acc.add_user(&member);

    let env = Env::new(&format!(
        "default_mode = \"optional\"\nadmin_groups = [\"{admins}\"]\n\
         [groups.{group}]\nmode = \"required\"\n\
         [users.{newcomer}]\nmode = \"required\"\n"
    ));
    // Three names NSS does not know yet: warnings, and the rules are kept.
    let log = env.log();
    for (what, name) in [
        ("admin group", &admins),
        ("group", &group),
        ("user", &newcomer),
    ] {
        let warning = format!("{what} \"{name}\" is not known to NSS now; ");
        assert!(
            log.lines().any(|l| l.contains("warning")
                && l.contains(&warning)
                && l.contains("is kept and will apply once NSS knows the name")),
            "no warning about {what} {name}: {log}"
        );
    }

    // Before: optional and not enrolled, so the module lets the stack decide; not an admin.
    let r = env.login("tf", &member, &[]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    assert_eq!(r.prompts(), 0);
    assert_eq!(show(&env, &member)["mode"], "optional");
    let out = env.ctl_as(&member, &["--json", "admin", "show", BOB], None);
    assert_ne!(out.code, 0, "not an admin yet: {out:?}");

    // The group appears and the member joins it: required at once, no reload.
    acc.add_group(&group);
    join_group(&member, &group);
    let r = env.login("tf", &member, &[]);
    assert_eq!(r.rc, rc::AUTH_ERR, "required and not enrolled: {r:?}");
    assert_eq!(r.prompts(), 0);
    assert!(r.said("twofactorctl enroll totp"), "{r:?}");
    let st = show(&env, &member);
    assert_eq!(st["mode"], "required", "{st}");
    assert!(
        st["rule"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("groups.{group} (")),
        "{st}"
    );
    // Once enrolled, the member is asked for a code, and a good one logs in.
    let e = env.enroll(&member);
    let r = env.login("tf-alone", &member, &[&oathtool(&e.secret, 30)]);
    assert_eq!(r.rc, rc::SUCCESS, "{r:?}");
    assert_eq!(r.prompts(), 1, "{r:?}");

    // The admin group appears with the member in it: admin methods open up.
    acc.add_group(&admins);
    join_group(&member, &admins);
    let out = env.ctl_as(&member, &["--json", "admin", "show", BOB], None);
    assert_eq!(
        out.code, 0,
        "a member of the new admin group is an admin: {out:?}"
    );

    // A user created after start gets their own rule.
    acc.add_user(&newcomer);
    let r = env.login("tf", &newcomer, &[]);
    assert_eq!(r.rc, rc::AUTH_ERR, "required and not enrolled: {r:?}");
    assert!(r.said("twofactorctl enroll totp"), "{r:?}");
    let st = show(&env, &newcomer);
    assert_eq!(st["mode"], "required", "{st}");
    assert!(
        st["rule"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("users.{newcomer} (")),
        "{st}"
    );

    // Leaving the group drops its rule just as fast (the member is enrolled, so optional now
    // means the code is still asked; the rule shown is the default).
    run(Command::new("gpasswd").args(["--delete", &member, &group]));
    let st = show(&env, &member);
    assert_eq!(st["mode"], "optional", "{st}");
}

#[test]
fn an_exempt_group_created_after_start_exempts_its_members_without_a_reload() {
    let mut acc = Accounts::default();
    let exempt = acc.name("le");
    let member = acc.name("lx");
    acc.add_user(&member);
    let env = Env::new(&format!(
        "default_mode = \"optional\"\n[exemptions]\ngroups = [\"{exempt}\"]\n"
    ));
    let log = env.log();
    let warning = format!("exempt group \"{exempt}\" is not known to NSS now; ");
    assert!(
        log.lines().any(|l| l.contains("warning")
            && l.contains(&warning)
            && l.contains("is kept and will apply once NSS knows the name")),
        "no warning about exempt group {exempt}: {log}"
    );
    // Enrolled, so 2FA is enforced: a code is asked.
    let e = env.enroll(&member);
    let r = env.login("tf", &member, &[&e.recovery[0]]);
    assert_eq!((r.rc, r.prompts()), (rc::SUCCESS, 1), "{r:?}");
    let r = env.login("tf", &member, &[]);
    assert_ne!(
        r.rc,
        rc::SUCCESS,
        "a code is asked before the group exists: {r:?}"
    );

    // The exempt group appears with the member in it: no code from the next login on.
    acc.add_group(&exempt);
    join_group(&member, &exempt);
    let r = env.login("tf", &member, &[]);
    assert_eq!((r.rc, r.prompts()), (rc::SUCCESS, 0), "{r:?}");
    // The module alone says "not required" (PAM_IGNORE; libpam reports a stack of ignores as
    // PAM_PERM_DENIED): the exemption, not a pass.
    let r = env.login("tf-alone", &member, &[]);
    assert_eq!((r.rc, r.prompts()), (rc::PERM_DENIED, 0), "{r:?}");
    let st = show(&env, &member);
    assert!(
        st["rule"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("exemptions.groups {exempt}")),
        "{st}"
    );

    // Leaving the group ends the exemption as fast.
    run(Command::new("gpasswd").args(["--delete", &member, &exempt]));
    let r = env.login("tf", &member, &[&e.recovery[1]]);
    assert_eq!((r.rc, r.prompts()), (rc::SUCCESS, 1), "{r:?}");
}
