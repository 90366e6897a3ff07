//! `twofactord`: serve the twofactor D-Bus interfaces, or `--check` a policy file.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use nix::sys::signal::{SigSet, Signal};
use twofactord::engine::{Clock, Engine, SystemClock};
use twofactord::identity::{ACCOUNT_TTL, Cached, Nss};
use twofactord::policy::Policy;
use twofactord::store::SqliteStore;
use twofactord::{log, service};

const DEFAULT_POLICY: &str = "/etc/twofactor/policy.toml";
const DEFAULT_STATE_DIR: &str = "/var/lib/twofactord";
/// The copy of the last policy file the daemon accepted, in the state directory.
const LAST_GOOD: &str = "policy.last-good.toml";

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
    /// Where to keep the offline snapshot the PAM module reads while the daemon is
    /// unreachable ("none": keep none, and logins fail closed then).
    #[arg(long, value_name = "FILE", default_value = twofactor_bus::offline::DEFAULT_PATH)]
    offline_snapshot: PathBuf,
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

/// The policy and the text it came from (`None`: the built-in policy).
fn load_policy(path: &std::path::Path, explicit: bool) -> Result<(Policy, Option<String>), String> {
    if !path.exists() && !explicit {
        log::warn(&format!(
            "{} does not exist; using the built-in policy (default_mode = \"optional\")",
            path.display()
        ));
        return Ok((Policy::builtin(), None));
    }
    Policy::load_with_text(path)
        .map(|(p, text)| (p, Some(text)))
        .map_err(|e| e.to_string())
}

/// Creates the snapshot's directory (mode 0700) if it is missing; its parent must exist.
fn prepare_snapshot_dir(path: &std::path::Path) {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(dir) = path.parent()
        && !dir.exists()
        && let Err(e) = std::fs::DirBuilder::new().mode(0o700).create(dir)
    {
        log::error(&format!(
            "cannot create {}: {e}; no offline snapshot",
            dir.display()
        ));
    }
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

    let loaded = load_policy(&args.policy, explicit_policy);
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
    // A policy file that is refused at start (a bad edit, a chmod that makes it writable by
    // others) does not lock everybody out: the daemon serves the last policy it accepted, and
    // says so loudly. Only a first start without one refuses.
    let last_good = args.state_dir.join(LAST_GOOD);
    let (policy, text, problem) = match loaded {
        Ok((p, text)) => (p, text, None),
        Err(e) => match Policy::load(&last_good) {
            Ok(p) => {
                let problem =
                    twofactord::engine::last_good_problem(&p.path.display().to_string(), &e);
                log::error(&problem);
                (p, None, Some(problem))
            }
            Err(copy) => {
                log::error(&format!(
                    "refusing to start: {e} (and no last good policy to fall back to: {copy})"
                ));
                return ExitCode::FAILURE;
            }
        },
    };
    for w in &policy.warnings {
        log::warn(w);
    }
    let policy_path = (explicit_policy || args.policy.exists()).then(|| args.policy.clone());
    let mut engine = Engine::new(
        Box::new(store),
        policy,
        policy_path,
        Box::new(Cached::new(Nss, ACCOUNT_TTL)),
        Box::new(SystemClock),
    )
    .with_last_good_copy(last_good);
    match (&text, &problem) {
        (Some(text), _) => engine.save_last_good(text),
        // The built-in policy (no file): nothing to fall back to later.
        (None, None) => engine.forget_last_good(),
        (None, Some(_)) => {}
    }
    engine.set_policy_problem(problem);
    let snapshot = args.offline_snapshot.as_os_str() != "none";
    if snapshot {
        prepare_snapshot_dir(&args.offline_snapshot);
        engine = engine.with_offline_snapshot(args.offline_snapshot.clone());
        engine.flush_offline();
    }
    let engine = Arc::new(engine);
    if snapshot {
        let engine = Arc::clone(&engine);
        let spawned = std::thread::Builder::new()
            .name("offline-snapshot".into())
            .spawn(move || engine.run_offline_writer());
        if let Err(e) = spawned {
            log::error(&format!("cannot start the offline snapshot writer: {e}"));
            return ExitCode::FAILURE;
        }
    }

    {
        let engine = Arc::clone(&engine);
        let spawned = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                loop {
                    match signals.wait() {
                        Ok(Signal::SIGHUP) => {
                            let _ = engine.reload();
                            engine.flush_offline();
                        }
                        Ok(sig) => {
                            log::info(&format!("{sig}: exiting"));
                            // What the module reads while the daemon is down.
                            engine.flush_offline();
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
