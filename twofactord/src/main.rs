//! `twofactord`: serve the twofactor D-Bus interfaces, or `--check` a policy file.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use nix::sys::signal::{SigSet, Signal};
use twofactord::engine::{Clock, Engine, SystemClock};
use twofactord::identity::Nss;
use twofactord::policy::Policy;
use twofactord::store::SqliteStore;
use twofactord::{log, service};

const DEFAULT_POLICY: &str = "/etc/twofactor/policy.toml";
const DEFAULT_STATE_DIR: &str = "/var/lib/twofactord";

/// The twofactor daemon: owns every secret and every decision, on the D-Bus system bus.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// D-Bus address to serve on instead of the system bus (tests and demos).
    #[arg(long, value_name = "ADDRESS")]
    bus: Option<String>,
    /// Policy file.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_POLICY)]
    policy: PathBuf,
    /// State directory (created with mode 0700).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR, global = true)]
    state_dir: PathBuf,
    /// Validate a policy file (default: --policy) and exit: 0 if valid.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    check: Option<Option<PathBuf>>,
    /// Log debug lines.
    #[arg(long)]
    debug: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Put a backup made by `twofactorctl admin backup` back as the state, with the daemon
    /// stopped. The current state is kept as state.sqlite3.before-restore.
    Restore {
        /// The backup file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// `twofactord restore`.
fn restore(state_dir: &std::path::Path, file: &std::path::Path) -> ExitCode {
    let uid = nix::unistd::getuid();
    let actor = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {uid}"), |u| u.name);
    match twofactord::restore::restore(state_dir, file, &actor, SystemClock.now()) {
        Ok(done) => {
            println!(
                "Restored {} into {} (schema version {}, {} users).",
                file.display(),
                state_dir.join(twofactord::store::STATE_FILE).display(),
                done.info.version,
                done.info.users
            );
            match done.previous {
                Some(p) => println!("The previous state is kept as {}.", p.display()),
                None => println!("There was no previous state."),
            }
            println!("Start the daemon again: systemctl start twofactord");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("twofactord restore: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load_policy(path: &std::path::Path, explicit: bool) -> Result<Policy, String> {
    if !path.exists() && !explicit {
        log::warn(&format!(
            "{} does not exist; using the built-in policy (default_mode = \"optional\")",
            path.display()
        ));
        return Ok(Policy::builtin());
    }
    Policy::load(path).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    log::set_debug(args.debug);
    let explicit_policy = args.policy.as_os_str() != DEFAULT_POLICY;

    if let Some(Command::Restore { file }) = &args.command {
        return restore(&args.state_dir, file);
    }

    if let Some(check) = &args.check {
        let path = check.clone().unwrap_or_else(|| args.policy.clone());
        return match Policy::load(&path) {
            Ok(p) => {
                for w in &p.warnings {
                    eprintln!("warning: {w}");
                }
                println!("{}: policy is valid", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }

    // The daemon's memory holds TOTP secrets: no core dumps, and no ptrace or /proc/PID/mem
    // access by other processes of the daemon's own (unprivileged) user.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        log::error(&format!(
            "refusing to start: cannot disable core dumps: {e}"
        ));
        return ExitCode::FAILURE;
    }

    // Signals are taken by one thread with sigwait; block them before any thread starts.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGHUP, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(s);
    }
    if let Err(e) = signals.thread_block() {
        log::error(&format!("cannot block signals: {e}"));
        return ExitCode::FAILURE;
    }

    let policy = match load_policy(&args.policy, explicit_policy) {
        Ok(p) => p,
        Err(e) => {
            log::error(&format!("refusing to start: {e}"));
            return ExitCode::FAILURE;
        }
    };
    for w in &policy.warnings {
        log::warn(w);
    }
    // Held for the daemon's life: no second daemon, and no restore, on this state directory.
    let _state_lock = match twofactord::store::lock_state_dir(&args.state_dir) {
        Ok(l) => l,
        Err(e) => {
            log::error(&format!("refusing to start: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let store = match SqliteStore::open(&args.state_dir) {
        Ok(s) => s,
        Err(e) => {
            log::error(&format!("refusing to start: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let policy_path = (explicit_policy || args.policy.exists()).then(|| args.policy.clone());
    let engine = Arc::new(Engine::new(
        Box::new(store),
        policy,
        policy_path,
        Box::new(Nss),
        Box::new(SystemClock),
    ));

    {
        let engine = Arc::clone(&engine);
        let spawned = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                loop {
                    match signals.wait() {
                        Ok(Signal::SIGHUP) => {
                            let _ = engine.reload();
                        }
                        Ok(sig) => {
                            log::info(&format!("{sig}: exiting"));
                            twofactord::notify::log_unsent_at_exit();
                            std::process::exit(0);
                        }
                        Err(e) => {
                            log::error(&format!("sigwait: {e}"));
                            std::process::exit(1);
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            log::error(&format!("cannot start the signal thread: {e}"));
            return ExitCode::FAILURE;
        }
    }

    // Audit retention: at start (in the background, so a large first prune never delays
    // serving), then hourly and every so many new records.
    {
        let engine = Arc::clone(&engine);
        let spawned = std::thread::Builder::new()
            .name("audit-retention".into())
            .spawn(move || engine.run_audit_retention());
        if let Err(e) = spawned {
            log::error(&format!("cannot start the audit retention: {e}"));
            return ExitCode::FAILURE;
        }
    }

    if twofactord::clock::check_and_warn() {
        let clock_thread = std::thread::Builder::new()
            .name("clock-check".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                    if !twofactord::clock::check_and_warn() {
                        break;
                    }
                }
            });
        if let Err(e) = clock_thread {
            log::warn(&format!("cannot start the clock check: {e}"));
        }
    }

    let result = zbus::block_on(async {
        let (_conn, shared) = service::serve(engine, args.bus.as_deref()).await?;
        log::info(&format!(
            "serving {} on {}",
            twofactor_bus::BUS_NAME,
            args.bus.as_deref().unwrap_or("the system bus")
        ));
        service::watch_departures(&shared).await
    });
    match result {
        Ok(()) => {
            log::error("the bus connection closed");
            ExitCode::FAILURE
        }
        Err(e) => {
            log::error(&e);
            ExitCode::FAILURE
        }
    }
}
