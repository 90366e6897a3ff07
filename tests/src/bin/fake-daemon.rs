//! TEST ONLY: a stand-in for `twofactord` that serves the Login interface on the daemon's bus
//! name and records every call it receives, one line each, in a file: `begin USER`,
//! `continue ANSWER`, `cancel`. It asks for a code and accepts any answer. Tests run it as a
//! uid that is neither root nor the daemon's user, to show that the PAM module sends nothing
//! to such an owner of the name (and as root, to show that it does talk to a trusted one).
//!
//! usage: fake-daemon ADDRESS RECORD-FILE
//!
//! Prints `ready` on stdout once it owns the name, then serves until killed.
#![allow(clippy::expect_used)]

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use twofactor_bus::{BUS_NAME, LoginStep, OBJECT_PATH, Outcome, WireStep};

struct Fake {
    record: PathBuf,
}

impl Fake {
    fn note(&self, line: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.record)
            .expect("record file");
        writeln!(f, "{line}").expect("record");
    }
}

#[zbus::interface(name = "org.twofactor.TwoFactor1.Login")]
impl Fake {
    async fn begin_login(
        &self,
        user: String,
        _context: HashMap<String, String>,
    ) -> (String, WireStep) {
        self.note(&format!("begin {user}"));
        (
            "fake-handle".to_string(),
            LoginStep::prompt("Verification code: ", false).into(),
        )
    }

    #[zbus(name = "Continue")]
    async fn continue_login(&self, _handle: String, answer: String) -> WireStep {
        self.note(&format!("continue {answer}"));
        LoginStep::done(Outcome::Success).into()
    }

    async fn cancel(&self, _handle: String) {
        self.note("cancel");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [address, record] = args.as_slice() else {
        eprintln!("usage: fake-daemon ADDRESS RECORD-FILE");
        std::process::exit(2);
    };
    let fake = Fake {
        record: PathBuf::from(record),
    };
    zbus::block_on(async {
        let _conn = zbus::connection::Builder::address(address.as_str())
            .serve_at(OBJECT_PATH, fake)
            .name(BUS_NAME)
            .build()
            .await
            .expect("connect and own the name");
        println!("ready");
        std::io::stdout().flush().expect("stdout");
        std::future::pending::<()>().await;
    });
}
