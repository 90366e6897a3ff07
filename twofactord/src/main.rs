//! `twofactord`: serve the twofactor D-Bus interfaces, `--check` a policy file (and the key),
//! make a key (`genkey`), re-seal the state under a new one (`rekey`), or `restore` a backup.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use nix::sys::signal::{SigSet, Signal};
use twofactord::engine::{Clock, Engine, SystemClock};
use twofactord::identity::{ACCOUNT_TTL, Cached};
use twofactord::local_passwd::FilesFirst;
use twofactord::policy::Policy;
use twofactord::policy::StorePolicy;
use twofactord::store::{SealingKey, SqliteStore};
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
    /// With --check: also connect to the `[store] url` database, create or check its schema
    /// and the role's grants.
    #[arg(long, requires = "check")]
    connect: bool,
    /// Where to keep the offline snapshot the PAM module reads while the daemon is
    /// unreachable ("none": keep none, and logins fail closed then).
    #[arg(long, value_name = "FILE", default_value = twofactor_bus::offline::DEFAULT_PATH)]
    offline_snapshot: PathBuf,
    /// The key that seals secrets at rest, instead of the policy's store.secret_key_file and
    /// of a systemd credential (tests and demos). It must exist.
    #[arg(long, value_name = "FILE")]
    secret_key_file: Option<PathBuf>,
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
    /// Create a new key for sealing secrets at rest: FILE (mode 0600), never over an existing
    /// file.
    Genkey {
        /// The new key file (e.g. /etc/twofactor/store.key).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Copy a stopped host's SQLite state into the fleet's PostgreSQL, all or nothing: users
    /// (by name, with their uid), factors, recovery codes, keys, requirements, grace, lockouts
    /// and the audit log. Users already in the fleet are refused unless --force.
    Migrate {
        /// The state directory to copy from (its daemon must be stopped).
        #[arg(long, value_name = "STATE_DIR")]
        from: PathBuf,
        /// The fleet database (a store.url: postgresql://…, no password in it).
        #[arg(long, value_name = "URL")]
        to: String,
        /// The key the state is sealed under, which also seals the secrets in the fleet
        /// (default: as the daemon finds it: the policy's store.secret_key_file).
        #[arg(long = "secret-key-file", value_name = "FILE")]
        migrate_key: Option<PathBuf>,
        /// The database password file (default: the policy's store.password_file, else a
        /// pgpass file).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Replace users that are already in the fleet with this state's.
        #[arg(long)]
        force: bool,
    },
    /// Re-seal every secret of the state under a new key, with the daemon stopped; then put
    /// the new key file in the old one's place.
    Rekey {
        /// The key the state is sealed under now.
        #[arg(long, value_name = "FILE")]
        old_key: PathBuf,
        /// The new key (made with `twofactord genkey`).
        #[arg(long, value_name = "FILE")]
        new_key: PathBuf,
    },
}

/// The name of the key among systemd's credentials (`LoadCredential=store.key:…`).
const KEY_CREDENTIAL: &str = "store.key";

/// Where the key comes from, in order: `--secret-key-file`, then systemd's credential
/// `$CREDENTIALS_DIRECTORY/store.key`, then the policy's `store.secret_key_file`. `Ok(None)`:
/// no key, and that is allowed (the default key file is absent: a host installed before keys;
/// the state stays in clear, loudly). A key file named on the command line or in the policy
/// that is absent, or any key file that is unsafe or invalid, is an error.
fn find_key(
    flag: Option<&std::path::Path>,
    store: &StorePolicy,
) -> Result<Option<(SealingKey, String)>, String> {
    if let Some(path) = flag {
        return SealingKey::from_file(path)
            .map(|k| Some((k, path.display().to_string())))
            .map_err(|e| e.0);
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let path = PathBuf::from(dir).join(KEY_CREDENTIAL);
        if std::fs::symlink_metadata(&path).is_ok() {
            return SealingKey::from_credential(&path)
                .map(|k| Some((k, format!("the systemd credential {KEY_CREDENTIAL}"))))
                .map_err(|e| e.0);
        }
    }
    let path = &store.secret_key_file;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !store.secret_key_file_named => {
            Ok(None)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "the key file {} (store.secret_key_file in the policy) does not exist; create it \
             with `twofactord genkey {}`",
            path.display(),
            path.display()
        )),
        _ => SealingKey::from_file(path)
            .map(|k| Some((k, path.display().to_string())))
            .map_err(|e| e.0),
    }
}

/// The warning of a daemon without a key.
fn in_clear_warning(store: &StorePolicy) -> String {
    let path = store.secret_key_file.display();
    format!(
        "SECRETS ARE STORED IN CLEAR: there is no key file at {path}, so TOTP secrets in the \
         state directory are not sealed (a copy of it is enough to log in as anyone enrolled). \
         Create a key with `twofactord genkey {path}` and restart the daemon: the state is \
         sealed on that start"
    )
}

/// `twofactord genkey FILE`.
fn genkey(file: &std::path::Path) -> ExitCode {
    let made = SealingKey::generate().and_then(|k| k.write_new_file(file));
    match made {
        Ok(()) => {
            println!(
                "Created the key {} (mode 0600). Back it up apart from the state: without it a \
                 backup of the state cannot be used, and whoever holds both can read the secrets.",
                file.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("twofactord genkey: {}", e.0);
            ExitCode::FAILURE
        }
    }
}

/// `twofactord rekey --old-key OLD --new-key NEW`.
fn rekey(state_dir: &std::path::Path, old: &std::path::Path, new: &std::path::Path) -> ExitCode {
    let keys = SealingKey::from_file(old)
        .map_err(|e| e.0)
        .and_then(|o| Ok((o, SealingKey::from_file(new).map_err(|e| e.0)?)));
    let (old_key, new_key) = match keys {
        Ok(k) => k,
        Err(e) => {
            eprintln!("twofactord rekey: {e}");
            return ExitCode::FAILURE;
        }
    };
    match twofactord::store::rekey_state(state_dir, old_key, new_key) {
        Ok(n) => {
            println!(
                "Re-sealed {n} secrets in {} under {}: only that key opens the state now.",
                state_dir.display(),
                new.display()
            );
            println!(
                "Put it in place of the old key (mv {} {}), or point store.secret_key_file at \
                 it, then start the daemon: systemctl start twofactord",
                new.display(),
                old.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("twofactord rekey: {}; nothing was changed", e.0);
            ExitCode::FAILURE
        }
    }
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

/// What `twofactord migrate` is given.
struct MigrateArgs<'a> {
    from: &'a std::path::Path,
    to: &'a str,
    key: Option<&'a std::path::Path>,
    password_file: Option<&'a std::path::Path>,
    force: bool,
}

/// `twofactord migrate`.
fn migrate(policy: &std::path::Path, explicit: bool, m: &MigrateArgs<'_>) -> ExitCode {
    use twofactord::store::{migrate, postgres};
    let from = m.from;
    let run = || -> Result<migrate::Summary, String> {
        // Before the lock: a path that is not a state directory is never created.
        let meta =
            std::fs::symlink_metadata(from).map_err(|e| format!("{}: {e}", from.display()))?;
        if !meta.is_dir() {
            return Err(format!("{} is not a directory", from.display()));
        }
        let _lock = twofactord::store::lock_state_dir(from).map_err(|e| {
            format!(
                "{}; stop it first (systemctl stop twofactord), then migrate",
                e.0
            )
        })?;
        let store = match load_policy(policy, explicit) {
            Ok((p, _)) => p.store,
            Err(e) if m.key.is_none() => return Err(e),
            Err(_) => Policy::builtin().store,
        };
        let key = find_key(m.key, &store)?.map(|(k, _)| k);
        let export = migrate::export(from, key.clone(), &postgres::nss_name_of).map_err(|e| e.0)?;
        if key.is_none() {
            eprintln!(
                "warning: no key: the TOTP secrets are copied into the fleet database in clear"
            );
        }
        let password_file = m.password_file.or(store.password_file.as_deref());
        let options = postgres::PgOptions::for_daemon(m.to, password_file, key).map_err(|e| e.0)?;
        let fleet = postgres::PostgresStore::open(options).map_err(|e| e.0)?;
        fleet
            .import(
                &export,
                m.force,
                SystemClock.now(),
                &from.display().to_string(),
            )
            .map_err(|e| e.0)
    };
    match run() {
        Ok(s) => {
            println!(
                "Copied {} users ({} replaced), {} authenticator apps, {} recovery codes, {} \
                 security keys and {} audit records from {} into the fleet database.",
                s.users,
                s.replaced,
                s.factors,
                s.codes,
                s.keys,
                s.audit,
                from.display()
            );
            println!(
                "Point this host's policy at it ([store] url) and start the daemon; keep {} \
                 until the fleet serves these users.",
                from.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("twofactord migrate: {e}; nothing was copied");
            ExitCode::FAILURE
        }
    }
}

/// The state backend: the fleet's PostgreSQL with `[store] url`, else SQLite in the state
/// directory; both seal secrets with `key`. Says how many plain secrets a first start with a
/// key sealed in place (SQLite).
fn open_store(
    policy: &Policy,
    state_dir: &std::path::Path,
    key: Option<SealingKey>,
) -> Result<(Box<dyn twofactord::store::Store>, usize), twofactord::store::StoreError> {
    use twofactord::store::open;
    let s = &policy.store;
    match &s.url {
        Some(url) => {
            let (store, notes) = open::open_store(
                Some(url),
                s.password_file.as_deref(),
                state_dir,
                key,
                s.offline_max_age,
            )?;
            for n in notes {
                log::warn(&n);
            }
            Ok((store, 0))
        }
        None => {
            let store = SqliteStore::open_with_key(state_dir, key)?;
            let sealed = store.sealed_at_open().unwrap_or(0);
            Ok((Box::new(store), sealed))
        }
    }
}

/// `--check` of `[store]` (and with `--connect`, the database itself).
fn check_store(policy: &Policy, connect: bool) -> Result<(), twofactord::store::StoreError> {
    use twofactord::store::open;
    let s = &policy.store;
    let Some(url) = &s.url else { return Ok(()) };
    let key = open::load_key(&s.secret_key_file, s.secret_key_file_named)?;
    for w in open::check(url, s.password_file.as_deref(), key, connect)? {
        eprintln!("warning: {w}");
    }
    if connect {
        println!("store: connected; the schema and the role's grants are in order");
    }
    Ok(())
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

    match &args.command {
        Some(Command::Restore { file }) => return restore(&args.state_dir, file),
        Some(Command::Genkey { file }) => return genkey(file),
        Some(Command::Rekey { old_key, new_key }) => {
            return rekey(&args.state_dir, old_key, new_key);
        }
        Some(Command::Migrate {
            from,
            to,
            migrate_key,
            password_file,
            force,
        }) => {
            let m = MigrateArgs {
                from,
                to,
                key: migrate_key.as_deref().or(args.secret_key_file.as_deref()),
                password_file: password_file.as_deref(),
                force: *force,
            };
            return migrate(&args.policy, explicit_policy, &m);
        }
        None => {}
    }

    if let Some(check) = &args.check {
        let path = check.clone().unwrap_or_else(|| args.policy.clone());
        let p = match Policy::load(&path) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        for w in &p.warnings {
            eprintln!("warning: {w}");
        }
        if let Err(e) = check_store(&p, args.connect) {
            eprintln!("{}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("{}: policy is valid", path.display());
        // The key's verdict goes to standard output ("key: ..."), its refusal to standard
        // error with exit 1; "warning:" lines stay the policy's (twofactorctl doctor reads
        // them as such).
        return match find_key(args.secret_key_file.as_deref(), &p.store) {
            Ok(Some((_, from))) => {
                println!("key: {from}: the key is fine (secrets are sealed at rest)");
                ExitCode::SUCCESS
            }
            Ok(None) => {
                println!("key: {}", in_clear_warning(&p.store));
                ExitCode::SUCCESS
            }
            // Only root (or the daemon's user) can read the key: not a fault of the key.
            Err(e) if !nix::unistd::geteuid().is_root() && e.contains("Permission denied") => {
                println!("key: not checked ({e}): run `twofactord --check` as root");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("key: {e}");
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
    let key = match find_key(args.secret_key_file.as_deref(), &policy.store) {
        Ok(Some((key, from))) => {
            log::info(&format!(
                "secrets are sealed at rest with the key from {from}"
            ));
            Some(key)
        }
        Ok(None) => {
            log::warn(&in_clear_warning(&policy.store));
            None
        }
        Err(e) => {
            log::error(&format!("refusing to start: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let (store, sealed) = match open_store(&policy, &args.state_dir, key) {
        Ok(s) => s,
        Err(e) => {
            log::error(&format!("refusing to start: {e}"));
            return ExitCode::FAILURE;
        }
    };
    if sealed > 0 {
        log::warn(&format!(
            "the state was in clear: sealed {sealed} secrets in place under the key (first start \
             with a key)"
        ));
    }
    let policy_path = (explicit_policy || args.policy.exists()).then(|| args.policy.clone());
    let mut engine = Engine::new(
        store,
        policy,
        policy_path,
        Box::new(Cached::new(FilesFirst::default(), ACCOUNT_TTL)),
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
                            // The counts of refusals folded in the minute now ending.
                            engine.flush_folded(true);
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

    // The fleet store's upkeep (offline journal, cached copies); nothing for SQLite.
    {
        let engine = Arc::clone(&engine);
        let spawned = std::thread::Builder::new()
            .name("store-upkeep".into())
            .spawn(move || engine.run_store_upkeep());
        if let Err(e) = spawned {
            log::error(&format!("cannot start the store upkeep: {e}"));
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
