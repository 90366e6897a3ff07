//! Drives one real PAM authentication through libpam's `pam_start_confdir`, answering prompts
//! from a script, and prints what happened as JSON: the return code, every message shown, and
//! the thread count of this process before and after (the module must leave none behind).
//!
//! usage: pamdrive CONFDIR SERVICE USER [--rhost HOST] [--tty TTY] [ANSWER...]

use twofactor_tests::pam::{Script, authenticate, threads};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: pamdrive CONFDIR SERVICE USER [--rhost HOST] [--tty TTY] [ANSWER...]");
        std::process::exit(2);
    }
    let confdir = std::path::PathBuf::from(args.remove(0));
    let service = args.remove(0);
    let user = args.remove(0);
    let mut rhost = None;
    let mut tty = None;
    let mut answers = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rhost" => rhost = it.next(),
            "--tty" => tty = it.next(),
            _ => answers.push(a),
        }
    }
    let mut script = Script {
        answers,
        transcript: Vec::new(),
    };
    let before = threads();
    let (rc, name, during) = match authenticate(
        &confdir,
        &service,
        &user,
        rhost.as_deref(),
        tty.as_deref(),
        &mut script,
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let after = threads();
    let out = serde_json::json!({
        "rc": rc,
        "error": name,
        "transcript": script.transcript,
        "answers_left": script.answers.len(),
        "threads_before": before,
        "threads_after_auth": during,
        "threads_after_end": after,
    });
    println!("{out}");
}
