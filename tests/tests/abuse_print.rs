//! What twofactorctl prints that it did not write itself (audit entries, names) reaches the
//! admin's terminal escaped: a newline in a field cannot forge an audit line, an escape
//! sequence cannot rewrite the screen, a bidi override cannot reorder what is read.
//!
//! The daemon refuses such strings on the bus, so the records are written straight into its
//! state, as an older daemon (or a damaged database) could have left them.

#![allow(clippy::expect_used, clippy::panic)]

use twofactor_tests::*;

/// The forged line a user once got into `admin audit` through BeginLogin's `service`.
const FORGED: &str = "2026-11-26T10:00:00Z root login success";

/// What no human-readable output may hold raw: C0 controls but the line breaks, DEL, C1
/// controls, bidi controls.
fn raw_controls(text: &str) -> Vec<char> {
    text.chars()
        .filter(|&c| {
            (c.is_control() && c != '\n')
                || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .collect()
}

struct Hostile {
    user: String,
    service: String,
    rhost: String,
    actor: String,
    detail: String,
    key: String,
}

fn hostile() -> Hostile {
    Hostile {
        user: format!("{ALICE}\x1b]0;owned\x07"),
        // A newline, then a whole forged record.
        service: format!("sshd\n{FORGED}"),
        // Clear the screen, move up, overwrite the line.
        rhost: "192.0.2.1\r\x1b[2J\x1b[1A\x1b[2K".into(),
        // C1 CSI, DEL, and an OSC 8 hyperlink ended by ST.
        actor: "\u{9b}31mroot\u{7f}\x1b]8;;http://e.vil/\x1b\\x".into(),
        // Right-to-left override: "success" would read as something else.
        detail: "ok \u{202e}sseccus\u{202c} \u{2066}x\u{2069}".into(),
        key: "yubi\x1b[8mhidden\x1b[0m\nFactor: totp app".into(),
    }
}

/// Stops the daemon, writes an audit record and a key of ALICE's with hostile text straight
/// into its database, and starts the daemon again.
fn plant(env: &mut Env, h: &Hostile) {
    let uid = uid_of(ALICE);
    let now = now();
    env.stop_daemon();
    let db = env.state.join("state.sqlite3");
    assert!(db.exists(), "{} is missing", db.display());
    let conn = rusqlite::Connection::open(&db).expect("open the daemon's database");
    conn.execute(
        "INSERT INTO audit (time, uid, user, event, result, service, rhost, actor, detail) \
         VALUES (?1, ?2, ?3, 'login', 'failure', ?4, ?5, ?6, ?7)",
        rusqlite::params![now, uid, h.user, h.service, h.rhost, h.actor, h.detail],
    )
    .expect("insert the audit record");
    conn.execute(
        "INSERT INTO keys (uid, name, credential_id, public_key, rp_id, sign_count, \
         user_verification, source, created) \
         VALUES (?1, ?2, x'0102', x'0304', 'twofactor', 0, 0, 'test', ?3)",
        rusqlite::params![uid, h.key, now],
    )
    .expect("insert the key");
    drop(conn);
    env.start_daemon();
}

/// The human-readable form of the record: every field present, escaped, on one line.
fn assert_escaped_record(out: &str) {
    assert_eq!(
        raw_controls(out),
        Vec::<char>::new(),
        "raw controls in:\n{out}"
    );
    assert!(
        !out.lines().any(|l| l.trim_start().starts_with(FORGED)),
        "a forged line:\n{out}"
    );
    let line = out
        .lines()
        .find(|l| l.contains("service=sshd"))
        .unwrap_or_else(|| panic!("no record with service=sshd:\n{out}"));
    for expected in [
        &format!("{ALICE}\\x1b]0;owned\\x07 login failure"),
        &format!("service=sshd\\n{FORGED}"),
        "rhost=192.0.2.1\\r\\x1b[2J\\x1b[1A\\x1b[2K",
        "by=\\u{9b}31mroot\\x7f\\x1b]8;;http://e.vil/\\x1b\\\\x",
        "(ok \\u{202e}sseccus\\u{202c} \\u{2066}x\\u{2069})",
    ] {
        assert!(line.contains(expected), "{expected:?} not in {line:?}");
    }
    // Nothing of the record spilled onto another line.
    assert_eq!(out.matches("owned").count(), 1, "{out}");
}

#[test]
fn admin_audit_and_status_print_hostile_text_escaped() {
    let mut env = Env::new("default_mode = \"optional\"\n");
    env.enroll(ALICE);
    let h = hostile();
    plant(&mut env, &h);

    // The admin's view of the audit log.
    let audit = env.ctl(&["admin", "audit", "--user", ALICE]).ok().stdout;
    assert_escaped_record(&audit);
    // The enrollment is there too, each record one line.
    assert!(audit.contains(" enroll success"), "{audit}");
    assert!(audit.lines().all(|l| l.contains(ALICE)), "{audit}");

    // The user's own status: the recent events and the factors.
    let status = env.ctl_as(ALICE, &["status"], None).ok().stdout;
    assert_escaped_record(&status);
    assert!(
        status.contains("Factor:          key yubi\\x1b[8mhidden\\x1b[0m\\nFactor: totp app"),
        "{status}"
    );
    assert_eq!(
        status.lines().filter(|l| l.starts_with("Factor:")).count(),
        2,
        "one app, one key, no forged factor line:\n{status}"
    );
    // An admin's view of the user.
    let show = env.ctl(&["admin", "show", ALICE]).ok().stdout;
    assert_eq!(raw_controls(&show), Vec::<char>::new(), "{show}");
    assert!(show.contains("yubi\\x1b[8mhidden"), "{show}");
}

#[test]
fn json_output_keeps_the_exact_text_but_no_raw_controls() {
    let mut env = Env::new("default_mode = \"optional\"\n");
    env.enroll(ALICE);
    let h = hostile();
    plant(&mut env, &h);

    let out = env.ctl(&["--json", "admin", "audit", "--user", ALICE]).ok();
    // serde_json escapes C0 controls; DEL, C1 and bidi controls are escaped too.
    assert_eq!(
        raw_controls(&out.stdout),
        Vec::<char>::new(),
        "{}",
        out.stdout
    );
    let entries = out.json();
    let record = entries
        .as_array()
        .expect("array")
        .iter()
        .find(|e| e["event"] == "login")
        .unwrap_or_else(|| panic!("no login record: {entries}"));
    // A program reading the JSON gets the text as stored, unchanged.
    assert_eq!(record["user"], h.user.as_str());
    assert_eq!(record["service"], h.service.as_str());
    assert_eq!(record["rhost"], h.rhost.as_str());
    assert_eq!(record["actor"], h.actor.as_str());
    assert_eq!(record["detail"], h.detail.as_str());

    let status = env.ctl_as(ALICE, &["--json", "status"], None).ok();
    assert_eq!(raw_controls(&status.stdout), Vec::<char>::new());
    let v = status.json();
    // The daemon adds a note about the rp id to the key's name.
    let key_named = v["factors"]
        .as_array()
        .expect("factors")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .any(|n| n.starts_with(&h.key));
    assert!(key_named, "{v}");
}
