//! Drives one real PAM authentication through libpam's `pam_start_confdir`, answering prompts
//! from a script, and prints what happened as JSON: the return code, every message shown, and
//! the thread count of this process before and after (the module must leave none behind).
//!
//! usage: pamdrive CONFDIR SERVICE USER [--rhost HOST] [--tty TTY] [--pause-ms MS] [--silent]
//! [ANSWER...]
//!
//! `--pause-ms` waits that long before each answer (a user slow to type). `--silent` calls
//! pam_authenticate with PAM_SILENT.

use twofactor_tests::pam::{PAM_SILENT, Script, authenticate_with_flags, threads};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!(
            "usage: pamdrive CONFDIR SERVICE USER [--rhost HOST] [--tty TTY] [--pause-ms MS] \
             [--silent] [ANSWER...]"
        );
        std::process::exit(2);
    }
    let confdir = std::path::PathBuf::from(args.remove(0));
    let service = args.remove(0);
    let user = args.remove(0);
    let mut rhost = None;
    let mut tty = None;
    let mut pause = std::time::Duration::ZERO;
    let mut flags = 0;
    let mut answers = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rhost" => rhost = it.next(),
            "--tty" => tty = it.next(),
            "--silent" => flags |= PAM_SILENT,
            "--pause-ms" => {
                let Some(ms) = it.next().and_then(|m| m.parse().ok()) else {
                    eprintln!("--pause-ms needs a number of milliseconds");
                    std::process::exit(2);
                };
                pause = std::time::Duration::from_millis(ms);
            }
            _ => answers.push(a),
        }
    }
    let mut script = Script {
        answers,
        transcript: Vec::new(),
        pause,
    };
    let before = threads();
    let (rc, name, during) = match authenticate_with_flags(
        &confdir,
        &service,
        &user,
        rhost.as_deref(),
        tty.as_deref(),
        flags,
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
