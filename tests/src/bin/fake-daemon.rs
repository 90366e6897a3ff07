//! TEST ONLY: a stand-in for `twofactord` that serves the Login interface on the daemon's bus
//! name and records every call it receives, one line each, in a file: `begin USER`,
//! `continue ANSWER`, `cancel`. Tests run it as a uid that is neither root nor the daemon's
//! user, to show that the PAM module sends nothing to such an owner of the name, and as root
//! (a trusted owner) to show what the module makes of each kind of answer.
//!
//! usage: fake-daemon ADDRESS RECORD-FILE [MODE]
//!
//! MODE (default `honest`): what it answers.
//! - `honest`: asks for a code and accepts any answer;
//! - `bad-step`: begins with a step of an unknown kind;
//! - `bad-outcome`: asks for a code, then ends with an unknown outcome;
//! - `wrong-type`: answers BeginLogin with a number instead of (handle, step);
//! - `odd-error`: answers BeginLogin with an error outside the contract
//!   (org.freedesktop.DBus.Error.Failed);
//! - `endless`: asks for a code, again and again, whatever the answer;
//! - `unavailable`: asks for a code, then says it cannot decide.
//!
//! Prints `ready` on stdout once it owns the name, then serves until killed.
#![allow(clippy::expect_used)]

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use twofactor_bus::{BUS_NAME, LoginStep, OBJECT_PATH, Outcome, WireStep};

struct Fake {
    record: PathBuf,
    mode: String,
}

impl Fake {
    fn note(&self, line: &str) {
        note(&self.record, line);
    }
}

fn note(record: &PathBuf, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(record)
        .expect("record file");
    writeln!(f, "{line}").expect("record");
}

fn prompt() -> WireStep {
    LoginStep::prompt("Verification code: ", false).into()
}

#[zbus::interface(name = "org.twofactor.TwoFactor1.Login")]
impl Fake {
    async fn begin_login(
        &self,
        user: String,
        _context: HashMap<String, String>,
    ) -> zbus::fdo::Result<(String, WireStep)> {
        self.note(&format!("begin {user}"));
        let step = match self.mode.as_str() {
            "bad-step" => WireStep {
                kind: "maybe".into(),
                ..prompt()
            },
            "odd-error" => {
                return Err(zbus::fdo::Error::Failed("something went wrong".into()));
            }
            _ => prompt(),
        };
        Ok(("fake-handle".to_string(), step))
    }

    #[zbus(name = "Continue")]
    async fn continue_login(&self, _handle: String, answer: String) -> WireStep {
        self.note(&format!("continue {answer}"));
        match self.mode.as_str() {
            "bad-outcome" => WireStep {
                kind: "done".into(),
                outcome: "sort-of".into(),
                ..LoginStep::done(Outcome::Success).into()
            },
            "endless" => prompt(),
            "unavailable" => LoginStep::done(Outcome::Unavailable).into(),
            _ => LoginStep::done(Outcome::Success).into(),
        }
    }

    async fn cancel(&self, _handle: String) {
        self.note("cancel");
    }
}

/// The Login interface with a BeginLogin that answers the wrong type.
struct WrongType {
    record: PathBuf,
}

#[zbus::interface(name = "org.twofactor.TwoFactor1.Login")]
impl WrongType {
    async fn begin_login(&self, user: String, _context: HashMap<String, String>) -> u32 {
        note(&self.record, &format!("begin {user}"));
        7
    }

    async fn cancel(&self, _handle: String) {
        note(&self.record, "cancel");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (address, record, mode) = match args.as_slice() {
        [a, r] => (a, r, "honest"),
        [a, r, m] => (a, r, m.as_str()),
        _ => {
            eprintln!("usage: fake-daemon ADDRESS RECORD-FILE [MODE]");
            std::process::exit(2);
        }
    };
    let record = PathBuf::from(record);
    zbus::block_on(async {
        let builder = zbus::connection::Builder::address(address.as_str());
        let builder = if mode == "wrong-type" {
            builder.serve_at(OBJECT_PATH, WrongType { record })
        } else {
            builder.serve_at(
                OBJECT_PATH,
                Fake {
                    record,
                    mode: mode.to_string(),
                },
            )
        };
        let _conn = builder
            .name(BUS_NAME)
            .build()
            .await
            .expect("connect and own the name");
        println!("ready");
        std::io::stdout().flush().expect("stdout");
        std::future::pending::<()>().await;
    });
}
