//! The authorization matrix end to end: every method the running daemon introspects, called
//! with placeholder arguments by each kind of caller (root, a member of an admin group, an
//! ordinary user) on each kind of target (their own account, another ordinary user, root,
//! another admin), over the real bus. `AccessDenied` means denied; any other reply or error
//! means the authorization let the call through. Each cell must match
//! `twofactord::authz::matrix_cell`; a method the daemon has but the table lacks fails.
#![allow(clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use twofactor_tests::*;
use twofactord::authz::{self, Access, CallerKind, TargetKind};

/// tf-carol (tf-admins) and tf-alice (tf-wheel) are admins; tf-bob is not.
const POLICY: &str = "default_mode = \"optional\"\nadmin_groups = [\"tf-admins\", \"tf-wheel\"]\n";

const DENIED: &str = "org.twofactor.TwoFactor1.Error.AccessDenied";

/// An ordinary account that is none of the test users (for an ordinary caller's "another
/// user"): Debian's `nobody`.
const OTHER_ORDINARY: &str = "nobody";

/// The caller account of each kind, and its targets of each kind.
fn cast(caller: CallerKind) -> (&'static str, [(TargetKind, &'static str); 4]) {
    match caller {
        CallerKind::Root => (
            "root",
            [
                (TargetKind::Own, "root"),
                (TargetKind::OtherUser, BOB),
                (TargetKind::Root, "root"),
                (TargetKind::OtherAdmin, CAROL),
            ],
        ),
        CallerKind::AdminMember => (
            CAROL,
            [
                (TargetKind::Own, CAROL),
                (TargetKind::OtherUser, BOB),
                (TargetKind::Root, "root"),
                (TargetKind::OtherAdmin, ALICE),
            ],
        ),
        CallerKind::User => (
            BOB,
            [
                (TargetKind::Own, BOB),
                (TargetKind::OtherUser, OTHER_ORDINARY),
                (TargetKind::Root, "root"),
                (TargetKind::OtherAdmin, CAROL),
            ],
        ),
    }
}

/// (interface suffix, method) -> names of its in-arguments, from live introspection.
fn introspect(env: &Env) -> BTreeMap<(String, String), Vec<String>> {
    let out = std::process::Command::new("busctl")
        .arg(format!("--address={}", env.address))
        .args([
            "introspect",
            "--xml-interface",
            twofactor_bus::BUS_NAME,
            twofactor_bus::OBJECT_PATH,
        ])
        .output()
        .expect("busctl");
    assert!(out.status.success(), "introspect: {out:?}");
    let xml = String::from_utf8_lossy(&out.stdout).into_owned();
    let attr = |tag: &str, name: &str| -> Option<String> {
        let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
        let len = tag[start..].find('"')?;
        Some(tag[start..start + len].to_string())
    };
    let mut methods = BTreeMap::new();
    let (mut iface, mut method): (Option<String>, Option<(String, String)>) = (None, None);
    for tag in xml.split('<').map(|t| t.split('>').next().unwrap_or("")) {
        if tag.starts_with("interface ") {
            iface = attr(tag, "name").and_then(|n| {
                n.strip_prefix("org.twofactor.TwoFactor1.")
                    .map(String::from)
            });
        } else if tag.starts_with("method ") {
            method = iface.clone().zip(attr(tag, "name"));
            if let Some(k) = &method {
                methods.insert(k.clone(), Vec::new());
            }
        } else if tag.starts_with("arg ") && attr(tag, "direction").as_deref() != Some("out") {
            if let (Some(k), Some(name)) = (&method, attr(tag, "name")) {
                methods.get_mut(k).expect("method").push(name);
            }
        } else if tag.starts_with("/method") {
            method = None;
        }
    }
    assert!(
        methods.len() >= 20,
        "introspection found too few methods: {xml}"
    );
    methods
}

/// Runs the probe as `user` for `calls` (interface, method, target or "-"); returns each
/// call's result.
fn probe(env: &Env, user: &str, calls: &[(String, String, String)]) -> Vec<String> {
    let input: String = calls
        .iter()
        .map(|(i, m, t)| format!("{i} {m} {t}\n"))
        .collect();
    let mut cmd = as_user(user, &bin("authz-probe"));
    cmd.arg(&env.address)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("authz-probe");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input.as_bytes()).expect("write");
    }
    let out = child.wait_with_output().expect("authz-probe");
    assert!(out.status.success(), "authz-probe as {user}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let results: Vec<String> = text
        .lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or("").to_string())
        .collect();
    assert_eq!(results.len(), calls.len(), "{text}");
    results
}

#[test]
fn every_method_for_every_caller_on_every_target_matches_the_table() {
    let env = Env::new(POLICY);
    let methods = introspect(&env);

    // The table and the live daemon name the same methods.
    let missing: Vec<_> = methods
        .keys()
        .filter(|(i, m)| authz::access_for(i, m).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "methods without a row in authz::TABLE: {missing:?}"
    );
    for (i, m, _) in authz::TABLE {
        assert!(
            methods.contains_key(&(i.to_string(), m.to_string())),
            "authz::TABLE names {i}.{m}, which the daemon does not have"
        );
    }

    // Logins need enrolled targets to open a real login (a handle) for Continue & co.
    for u in ["root", ALICE, BOB, CAROL] {
        env.enroll(u);
    }

    let mut cells = 0;
    let mut wrong = Vec::new();
    // Login first: the admin methods (Reset…) wipe the enrollments the logins need.
    for pass in ["Login", "rest"] {
        for caller in authz::CALLERS {
            let (who, targets) = cast(caller);
            let mut calls = Vec::new();
            let mut expected = Vec::new();
            for ((iface, method), args) in &methods {
                if (pass == "Login") != (iface == "Login") {
                    continue;
                }
                let access = authz::access_for(iface, method).expect("row");
                let targeted = args.iter().any(|a| a == "user" || a == "handle");
                if targeted {
                    for (kind, target) in targets {
                        calls.push((iface.clone(), method.clone(), target.to_string()));
                        expected.push(authz::matrix_cell(access, caller, kind));
                    }
                }
                // Without a target (no user argument, or an empty one: "the caller"): the
                // caller's own account for self-service, nobody's for admin methods.
                if !targeted || args.iter().any(|a| a == "user") {
                    calls.push((iface.clone(), method.clone(), "-".to_string()));
                    expected.push(match access {
                        Access::Admin => caller != CallerKind::User,
                        _ => authz::matrix_cell(access, caller, TargetKind::Own),
                    });
                }
            }
            let results = probe(&env, who, &calls);
            for ((call, allowed), got) in calls.iter().zip(&expected).zip(&results) {
                cells += 1;
                assert!(
                    !got.starts_with("client-error") && got != "no-placeholder-arguments",
                    "{call:?} as {who}: {got}: give the probe placeholder arguments"
                );
                let denied = got == DENIED;
                let handle_method = call.0 == "Login" && call.1 != "BeginLogin";
                let ok = if handle_method && !allowed {
                    // No handle to use: whatever the error, never through.
                    got != "ok"
                } else {
                    denied != *allowed
                };
                if !ok {
                    wrong.push(format!(
                        "{}.{} as {who} ({caller:?}) on {}: expected {}, got {got}",
                        call.0,
                        call.1,
                        call.2,
                        if *allowed { "allowed" } else { "denied" }
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} cells disagree:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    println!("authorization matrix: {cells} cells checked");
    assert!(cells >= 250, "{cells}");
}
