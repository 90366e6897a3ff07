//! TEST ONLY: the CLI's security-key flows (`twofactor_key::flow`, the code `twofactorctl
//! enroll key` runs) with the software authenticator instead of the USB key, run as the user
//! whose key it is. Prints the result as JSON.
//!
//! usage: softkey-ctl ADDRESS KEYFILE enroll NAME [--pin PIN]   (a proof: one line of stdin)
//!        softkey-ctl ADDRESS KEYFILE prove [--pin PIN]
//!        softkey-ctl ADDRESS KEYFILE register NAME --auth-data HEX   (a proof: one line of stdin)
//!
//! `register` only begins a key enrollment and sends the given authenticator data (a
//! registration a test made up, e.g. with another user's credential id) to `RegisterKey`:
//! `{"registered": true}`, or `{"error": "STEP: Kind: message"}` with the step that refused.
//!
//! As with twofactorctl, a code or proof token never goes on the command line.

use std::path::PathBuf;

use twofactor_bus::EnrollmentProxy;
use twofactor_key::flow;
use twofactor_softkey::SoftKey;
use zeroize::Zeroizing;

fn fail(msg: &str) -> ! {
    println!("{}", serde_json::json!({ "error": msg }));
    std::process::exit(1);
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: softkey-ctl ADDRESS KEYFILE enroll NAME [--pin P] | prove");
        std::process::exit(2);
    }
    let address = args.remove(0);
    let keyfile = PathBuf::from(args.remove(0));
    let command = args.remove(0);
    let mut name = None;
    let mut pin: Option<String> = None;
    let mut auth_data: Option<String> = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--code" => fail("--code was removed: give the proof on standard input"),
            "--pin" => pin = it.next(),
            "--auth-data" => auth_data = it.next(),
            _ => name = Some(a),
        }
    }
    // The proof for an account that has factors (empty when there is none).
    let mut code = Zeroizing::new(String::new());
    if command == "enroll" || command == "register" {
        use std::io::BufRead;
        std::io::stdin()
            .lock()
            .read_line(&mut code)
            .unwrap_or_else(|e| fail(&format!("standard input: {e}")));
    }
    let code = Zeroizing::new(code.trim().to_string());
    let key = SoftKey::open(&keyfile).unwrap_or_else(|e| fail(&format!("soft key: {e}")));
    let mut pin_source = |_: &str| pin.clone().map(Zeroizing::new);
    let mut cue = |_: &str| {};
    let out = zbus::block_on(async {
        let conn = zbus::connection::Builder::address(address.as_str())
            .method_timeout(std::time::Duration::from_secs(30))
            .build()
            .await
            .unwrap_or_else(|e| fail(&e.to_string()));
        let proxy = EnrollmentProxy::new(&conn)
            .await
            .unwrap_or_else(|e| fail(&e.to_string()));
        match command.as_str() {
            "enroll" => {
                let name = name.unwrap_or_else(|| fail("enroll needs a NAME"));
                flow::enroll(&proxy, &key, &name, &code, &mut pin_source, &mut cue)
                    .await
                    .map(|r| {
                        serde_json::json!({
                            "accepted": r.accepted,
                            "message": r.message,
                            "recovery_codes": r.recovery_codes,
                        })
                    })
            }
            "prove" => flow::prove(&proxy, &key, &mut pin_source, &mut cue)
                .await
                .map(|token| serde_json::json!({ "token": token })),
            "register" => {
                let name = name.unwrap_or_else(|| fail("register needs a NAME"));
                let hex = auth_data.unwrap_or_else(|| fail("register needs --auth-data"));
                let bytes: Vec<u8> = (0..hex.len())
                    .step_by(2)
                    .map(|i| {
                        hex.get(i..i + 2)
                            .and_then(|h| u8::from_str_radix(h, 16).ok())
                            .unwrap_or_else(|| fail("--auth-data is not hex"))
                    })
                    .collect();
                let said = |step: &str, e: twofactor_bus::BusError| {
                    format!("{step}: {}: {}", e.kind(), e.message())
                };
                let en = proxy
                    .begin_key(&name, &code)
                    .await
                    .unwrap_or_else(|e| fail(&said("BeginKey", e)));
                proxy
                    .register_key(&en.enrollment_id, &bytes)
                    .await
                    .unwrap_or_else(|e| fail(&said("RegisterKey", e)));
                Ok(serde_json::json!({ "registered": true }))
            }
            other => fail(&format!("unknown command {other}")),
        }
    });
    match out {
        Ok(v) => println!("{v}"),
        Err(e) => fail(&e.to_string()),
    }
}
