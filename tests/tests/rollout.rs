//! Rollout visibility: `admin list` shows the users a required rule applies to even before they
//! ever logged in (the daemon has no state for them yet), through the real daemon and NSS.

use twofactor_tests::*;

#[allow(clippy::expect_used)]
fn users(v: &serde_json::Value) -> Vec<String> {
    v["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u["user"].as_str().expect("user").to_string())
        .collect()
}

#[test]
fn required_users_who_never_logged_in_are_listed() {
    let env = Env::new(&format!(
        "default_mode = \"optional\"\nadmin_groups = [\"{ADMINS}\"]\n\
         [groups.{ADMINS}]\nmode = \"required\"\n[users.{BOB}]\nmode = \"required\"\n"
    ));
    // No one has logged in or enrolled: the daemon has no state for anyone.
    let v = env
        .ctl(&["--json", "admin", "list", "--state", "required-unenrolled"])
        .ok()
        .json();
    let names = users(&v);
    assert!(names.contains(&CAROL.to_string()), "{v}");
    assert!(names.contains(&BOB.to_string()), "{v}");
    assert!(!names.contains(&ALICE.to_string()), "{v}");
    // Whether the answer may be partial is said, with the reasons.
    let partial = v["partial"].as_bool().expect("partial");
    let notes = v["notes"].as_array().expect("notes");
    assert_eq!(partial, !notes.is_empty(), "{v}");
    let carol = v["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["user"] == CAROL)
        .expect("carol");
    assert_eq!(carol["mode"], "required");
    assert!(
        carol["rule"]
            .as_str()
            .expect("rule")
            .starts_with(&format!("groups.{ADMINS}")),
        "{carol}"
    );
    // The table says the same; an admin of the admin group may ask too.
    let out = env
        .ctl_as(
            CAROL,
            &["admin", "list", "--state", "required-unenrolled"],
            None,
        )
        .ok();
    assert!(
        out.stdout.contains(BOB) && out.stdout.contains(CAROL),
        "{out:?}"
    );
    // Once enrolled, bob leaves the list.
    env.enroll(BOB);
    let v = env
        .ctl(&["--json", "admin", "list", "--state", "required-unenrolled"])
        .ok()
        .json();
    assert!(!users(&v).contains(&BOB.to_string()), "{v}");
    let v = env
        .ctl(&["--json", "admin", "list", "--state", "enrolled"])
        .ok()
        .json();
    assert_eq!(users(&v), [BOB], "{v}");
}
