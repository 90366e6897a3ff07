//! TEST ONLY: floods the daemon as the uid it runs as. Opens CONNECTIONS bus connections and on
//! each calls `BeginLogin(USER)` (service `tf`) or `BeginKeyProof` CALLS times, prints the
//! counts as one JSON line, then holds every connection (and so every login or proof it got)
//! open until its standard input closes.
//!
//! usage: flood ADDRESS login|proof CONNECTIONS CALLS [USER]
//! output: {"accepted": N, "refused": N, "errors": {"Kind: message": N}}
//!
//! "refused" counts `NotAllowed` errors (a cap); anything else is listed under "errors".

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};

use twofactor_bus::{BusError, EnrollmentProxy, LoginProxy};

fn fail(msg: &str) -> ! {
    eprintln!("flood: {msg}");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        fail("usage: flood ADDRESS login|proof CONNECTIONS CALLS [USER]");
    }
    let address = args[0].clone();
    let mode = args[1].clone();
    let connections: usize = args[2]
        .parse()
        .unwrap_or_else(|_| fail("CONNECTIONS must be a number"));
    let calls: usize = args[3]
        .parse()
        .unwrap_or_else(|_| fail("CALLS must be a number"));
    let user = args.get(4).cloned().unwrap_or_default();
    if mode == "login" && user.is_empty() {
        fail("login needs a USER");
    }
    let mut accepted = 0usize;
    let mut refused = 0usize;
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut count = |r: Result<(), BusError>| match r {
        Ok(()) => accepted += 1,
        Err(BusError::NotAllowed(_)) => refused += 1,
        Err(e) => {
            *errors
                .entry(format!("{}: {}", e.kind(), e.message()))
                .or_default() += 1
        }
    };
    let held = zbus::block_on(async {
        let mut held = Vec::new();
        for _ in 0..connections {
            let conn = zbus::connection::Builder::address(address.as_str())
                .build()
                .await
                .unwrap_or_else(|e| fail(&format!("connect: {e}")));
            for _ in 0..calls {
                let r = if mode == "login" {
                    let proxy = LoginProxy::new(&conn)
                        .await
                        .unwrap_or_else(|e| fail(&e.to_string()));
                    proxy
                        .begin_login(&user, HashMap::from([("service", "tf")]))
                        .await
                        .and_then(|(handle, _)| {
                            if handle.is_empty() {
                                Err(BusError::InvalidArgument("no login was opened".into()))
                            } else {
                                Ok(())
                            }
                        })
                } else {
                    let proxy = EnrollmentProxy::new(&conn)
                        .await
                        .unwrap_or_else(|e| fail(&e.to_string()));
                    proxy.begin_key_proof().await.map(|_| ())
                };
                count(r);
            }
            held.push(conn);
        }
        held
    });
    let out = serde_json::json!({
        "accepted": accepted,
        "refused": refused,
        "errors": errors,
    });
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{out}");
    let _ = stdout.flush();
    // Hold the connections until the test lets go.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(held);
}
