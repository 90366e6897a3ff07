//! `notify_command` mails the user: the example script of twofactord(8) ("Mail from
//! notify_command"), taken from the man page itself so the two cannot drift, run by the real
//! daemon for a real event, delivers its message over SMTP to a listener on localhost.
//!
//! What the shipped unit and its documented `mail.conf` drop-in allow is emulated: the daemon
//! has a network namespace of its own with the loopback interface only (what
//! `IPAddressAllow=localhost` leaves reachable), and the script runs with no_new_privs as an
//! unprivileged user (`NoNewPrivileges=yes`, the daemon's user): no set-id program, no
//! privilege, no other host. This machine has no systemd as pid 1 to apply the unit itself.
#![allow(clippy::expect_used, clippy::panic)]

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use twofactor_tests::*;

/// The example script in twofactord(8), with roff's escapes undone.
fn script_from_the_man_page() -> String {
    let man = std::fs::read_to_string(repo().join("packaging/man/twofactord.8")).expect("man");
    let section = man
        .split(".SS Mail from notify_command")
        .nth(1)
        .expect("twofactord(8) has a 'Mail from notify_command' section");
    let example = section
        .split(".EX\n")
        .nth(1)
        .and_then(|s| s.split("\n.EE").next())
        .expect("the section has an example (.EX .. .EE)");
    assert!(example.starts_with("#!/bin/sh"), "{example}");
    example.replace("\\-", "-").replace("\\e", "\\") + "\n"
}

/// The catcher, started in the network namespace of process `pid`; stopped on drop.
struct Catcher(std::process::Child);

impl Drop for Catcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn catcher_in_the_net_of(pid: u32, mailbox: &std::path::Path) -> Catcher {
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .arg("--")
        .arg(bin("smtp-catcher"))
        .arg(mailbox)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nsenter smtp-catcher");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("catcher output");
    assert_eq!(line.trim(), "ready", "the SMTP catcher did not start");
    Catcher(child)
}

#[test]
fn the_documented_mail_script_delivers_account_events_from_a_localhost_only_daemon() {
    // The script, root's and not writable by others, where the unprivileged user can run it.
    let dir = tempfile::Builder::new()
        .prefix("twofactor-mail")
        .tempdir()
        .expect("dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let script = dir.path().join("twofactor-mail");
    std::fs::write(&script, script_from_the_man_page()).expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mailbox = dir.path().join("mailbox");

    // NoNewPrivileges and the daemon's unprivileged user, around the admin's command.
    let policy = format!(
        "default_mode = \"optional\"\n\
         notify_command = [\"/usr/bin/setpriv\", \"--no-new-privs\", \"--reuid=nobody\", \
         \"--regid=nogroup\", \"--clear-groups\", \"--\", \"{}\"]\n",
        script.display()
    );
    let mut env = Env::new(&policy);
    env.stop_daemon();
    // A network of its own: loopback only, nothing else reachable.
    env.daemon_wrapper = [
        "unshare",
        "--net",
        "--",
        "/bin/sh",
        "-c",
        "ip link set lo up && exec \"$0\" \"$@\"",
    ]
    .map(String::from)
    .to_vec();
    env.start_daemon();
    let pid = env.daemon_pid().expect("daemon pid");
    let own_net = std::fs::read_link(format!("/proc/{pid}/ns/net")).expect("netns");
    let our_net = std::fs::read_link("/proc/self/ns/net").expect("netns");
    assert_ne!(
        own_net, our_net,
        "the daemon must have a network of its own"
    );
    let _catcher = catcher_in_the_net_of(pid, &mailbox);

    // An account event: alice enrolls.
    env.enroll(ALICE);

    let deadline = Instant::now() + Duration::from_secs(30);
    let mail = loop {
        let text = std::fs::read_to_string(&mailbox).unwrap_or_default();
        if text.contains("--- end of message ---") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no mail arrived; the daemon's log:\n{}",
            env.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(mail.contains("MAIL FROM:<root@localhost>"), "{mail}");
    assert!(
        mail.contains(&format!("RCPT TO:<{ALICE}@localhost>")),
        "{mail}"
    );
    assert!(mail.contains(&format!("To: {ALICE}@localhost")), "{mail}");
    assert!(
        mail.contains("Subject: twofactor: enroll success"),
        "{mail}"
    );
    // The body is the event as JSON, as the daemon gave it on standard input.
    let body = mail
        .split("\n\n")
        .nth(1)
        .and_then(|b| b.split("--- end of message ---").next())
        .expect("a body");
    let event: serde_json::Value = serde_json::from_str(body.trim()).expect("JSON body");
    assert_eq!(event["user"], ALICE, "{event}");
    assert_eq!(event["event"], "enroll", "{event}");
    // Never a secret: the enrollment's secret and codes are not in the mail.
    assert!(!mail.to_lowercase().contains("secret"), "{mail}");
}
