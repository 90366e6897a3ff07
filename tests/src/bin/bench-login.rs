//! `make bench`: twofactor side by side with the floor of its shape, google-authenticator and
//! pam_permit, in one run, on one driver: real libpam (`pam_start_confdir`), P worker
//! processes each timing its own logins, interleaved rounds, medians.
//!
//! - twofactor: the real module, a private bus, the real daemon, its SQLite store (WAL,
//!   `synchronous=FULL`);
//! - floor: `libpam_bench_floor.so` + `bench-floor` on the same bus: connect, two method calls,
//!   the caller lookup, one durable SQLite commit (what a login must do at least);
//! - google-authenticator: `pam_google_authenticator.so` with DISALLOW_REUSE and
//!   RATE_LIMIT 3 30, one file per user (`secret=DIR/${USER} user=root`);
//! - pam_permit.
//!
//! Users: bench accounts `tfb0000…` (useradd, removed at the end, also after a failure; the
//! Makefile runs `bench-login cleanup` after the run whatever happened). `tfb0000` is enrolled
//! through the real CLI; every other bench user is seeded into the daemon's store as a copy of
//! its rows (same secret), so one `oathtool` code per 30 s step serves them all. Replay
//! protection allows one login per user per step (twofactor, google-authenticator): each run
//! takes users not used in the current step, waiting for the next step when none are left.
//!
//! usage: bench-login [run] | cleanup | profile [N [floor]] | worker …   (run as root)
//!
//! `profile N`: for a profiler attached to the daemon (`strace -c -f -p PID`, `perf stat -p
//! PID`): sets up as `run` does, prints `bench: profile daemon pid PID`, waits 3 s, runs N
//! successful twofactor logins one after another, prints their p50 and `bench: profile done`,
//! waits 3 s. `profile N floor`: the same with the floor module and service instead (`perf
//! record -a` on both runs shows where twofactor's login spends more than the floor's).
//! environment: BENCH_QUICK=1 (smaller run), BENCH_ROUNDS (3), BENCH_SCALE_MAX (1000000; 100000
//! with BENCH_QUICK)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use twofactor_tests::pam::{Script, authenticate};
use twofactor_tests::{Env, bin, pam_module};

/// Bench accounts: `tfb0000`, `tfb0001`, …
const PREFIX: &str = "tfb";
const FLOOR_NAME: &str = "org.twofactor.BenchFloor1";
const STEP: i64 = 30;
/// One prompt, one answer (as google-authenticator); failures never lock a bench user out.
const POLICY: &str =
    "default_mode = \"optional\"\n[login]\nattempts = 1\n[rate_limit]\nmax_failures = 1000\n";
/// Scale: users whose logins are measured at each level (the first few warm the daemon up).
const SCALE_WARM: usize = 5;
const SCALE_MEASURED: usize = 25;
const SCALE_LEVELS: [u64; 4] = [0, 10_000, 100_000, 1_000_000];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("worker") => worker(&args[1..]),
        Some("cleanup") => {
            let n = delete_accounts();
            println!("bench: removed {n} bench accounts");
        }
        None | Some("run") => run(),
        Some("profile") => profile(
            args.get(1).and_then(|n| n.parse().ok()).unwrap_or(200),
            if args.get(2).map(String::as_str) == Some("floor") {
                Module::Floor
            } else {
                Module::TwoFactor
            },
        ),
        Some(_) => {
            eprintln!("usage: bench-login [run] | cleanup | profile [N [floor]]");
            std::process::exit(2);
        }
    }
}

/// `profile N [floor]` (see the top of this file): `module` is twofactor or the floor.
fn profile(n: usize, module: Module) {
    // SAFETY: geteuid(2) has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "bench-login needs root (useradd, PAM as root)");
    let accounts = Accounts::create(n + 2);
    let uids = bench_uids();
    let template = accounts.0[0].clone();
    let pool: Vec<String> = accounts.0[1..].to_vec();
    let rules = format!(
        "<policy user=\"root\"><allow own=\"{FLOOR_NAME}\"/><allow send_destination=\"{FLOOR_NAME}\"/></policy>"
    );
    let mut env = Env::without_test_accounts(POLICY, &rules);
    let secret = env.enroll(&template).secret;
    env.stop_daemon();
    let db = env.state.join("state.sqlite3");
    seed(
        &db,
        uids[&template],
        &Sealer::of(&env, &secret),
        pool.iter().map(|n| (uids[n], n.clone())),
    );
    env.start_daemon();
    let floor = (module == Module::Floor)
        .then(|| FloorService::start(&env.address, &env.dir.path().join("floor.sqlite3")));
    write_services(&env, &env.dir.path().join("ga"));
    let mut codes = Codes::new(&secret);
    let service = module.service();
    let warm = run_workers(
        &env.pamd,
        service,
        &[vec![pool[0].clone()]],
        "right",
        &codes.window(),
    );
    assert_eq!(warm.rc, vec![0], "the first login failed:\n{}", env.log());
    if left_in_step() < 10.0 {
        sleep_into_next_step();
    }
    let pid = match &floor {
        Some(f) => f.0.id(),
        None => env.daemon_pid().expect("the daemon's pid"),
    };
    println!("bench: profile daemon pid {pid}");
    std::io::stdout().flush().expect("stdout");
    std::thread::sleep(Duration::from_secs(3));
    let r = run_workers(
        &env.pamd,
        service,
        &[pool[1..].to_vec()],
        "right",
        &codes.window(),
    );
    println!(
        "bench: profile {} logins, {} succeeded, p50 {:.0} µs, p90 {:.0} µs",
        r.rc.len(),
        r.successes(),
        r.p(0.5),
        r.p(0.9)
    );
    println!("bench: profile done");
    std::io::stdout().flush().expect("stdout");
    std::thread::sleep(Duration::from_secs(3));
}

// ---------------------------------------------------------------- settings and time

struct Settings {
    quick: bool,
    rounds: usize,
    /// Logins of the P=1 run (and of the wrong-code run).
    p1: usize,
    /// Logins per worker at 8 and at 32 workers.
    per8: usize,
    per32: usize,
    scale_max: u64,
}

impl Settings {
    fn from_env() -> Settings {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let quick = var("BENCH_QUICK").is_some_and(|v| v != "0");
        let num = |k: &str, d: u64| var(k).and_then(|v| v.parse().ok()).unwrap_or(d);
        Settings {
            quick,
            rounds: num("BENCH_ROUNDS", 3).max(1) as usize,
            p1: if quick { 50 } else { 100 },
            per8: if quick { 15 } else { 40 },
            per32: if quick { 5 } else { 10 },
            scale_max: num("BENCH_SCALE_MAX", if quick { 100_000 } else { 1_000_000 }),
        }
    }

    /// Users one round takes from each replay-protected module.
    fn users_per_round(&self) -> usize {
        self.p1 + 8 * self.per8 + 32 * self.per32 + self.p1 + 1
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
}

fn step_now() -> i64 {
    (now_ns() / 1_000_000_000) as i64 / STEP
}

/// Seconds left in the current step.
fn left_in_step() -> f64 {
    let now = now_ns() as f64 / 1e9;
    ((step_now() + 1) * STEP) as f64 - now
}

fn sleep_into_next_step() {
    let left = left_in_step();
    std::thread::sleep(Duration::from_secs_f64(left + 0.3));
}

// ---------------------------------------------------------------- accounts

fn account(i: usize) -> String {
    format!("{PREFIX}{i:04}")
}

fn is_bench_account(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .is_some_and(|n| n.len() == 4 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// name → uid of every bench account in /etc/passwd.
fn bench_uids() -> HashMap<String, u32> {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() > 2 && is_bench_account(f[0]) {
                Some((f[0].to_string(), f[2].parse().ok()?))
            } else {
                None
            }
        })
        .collect()
}

/// Removes every bench account (and its group); returns how many.
fn delete_accounts() -> usize {
    let names: Vec<String> = bench_uids().into_keys().collect();
    for n in &names {
        let _ = Command::new("userdel")
            .arg(n)
            .stderr(Stdio::null())
            .status();
    }
    names.len()
}

/// The bench accounts of this run; removed when dropped (also on a panic).
struct Accounts(Vec<String>);

impl Accounts {
    fn create(n: usize) -> Accounts {
        let left = delete_accounts();
        if left > 0 {
            eprintln!("bench: removed {left} bench accounts left by an earlier run");
        }
        let t = Instant::now();
        let accounts = Accounts(Vec::new());
        let mut accounts = accounts;
        for i in 0..n {
            let name = account(i);
            let st = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                ])
                .arg(&name)
                .status()
                .expect("useradd");
            assert!(st.success(), "useradd {name} failed");
            accounts.0.push(name);
        }
        eprintln!(
            "bench: created {n} bench accounts in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        accounts
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        let n = delete_accounts();
        eprintln!("bench: removed {n} bench accounts");
    }
}

// ---------------------------------------------------------------- codes

/// TOTP codes of the shared secret, from `oathtool`, by step.
struct Codes {
    secret: String,
    cache: HashMap<i64, String>,
}

impl Codes {
    fn new(secret: &str) -> Codes {
        Codes {
            secret: secret.to_string(),
            cache: HashMap::new(),
        }
    }

    fn at(&mut self, step: i64) -> String {
        let secret = self.secret.clone();
        self.cache
            .entry(step)
            .or_insert_with(|| {
                let out = Command::new("oathtool")
                    .args(["--totp", "-b", &secret, "-N", &format!("@{}", step * STEP)])
                    .output()
                    .expect("oathtool (scripts/deps.sh installs it)");
                assert!(out.status.success(), "oathtool failed");
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            })
            .clone()
    }

    /// `STEP:CODE,…` for the steps a run starting now may see.
    fn window(&mut self) -> String {
        let s = step_now();
        (s - 1..=s + 3)
            .map(|k| format!("{k}:{}", self.at(k)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A code that differs from `right` in every digit.
fn wrong_of(right: &str) -> String {
    right
        .bytes()
        .map(|b| char::from(b'0' + (b - b'0' + 5) % 10))
        .collect()
}

// ---------------------------------------------------------------- workers

/// `worker PAMD SERVICE START_NS right|wrong CODES USER…`: waits until START_NS, then runs one
/// login per USER in turn, each timed; prints one JSON line.
fn worker(args: &[String]) {
    let [pamd, service, start, mode, codes, users @ ..] = args else {
        panic!("worker: bad arguments");
    };
    let start: u128 = start.parse().expect("start");
    let codes: HashMap<String, String> = codes
        .split(',')
        .filter_map(|kv| kv.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let wrong = mode == "wrong";
    let pamd = PathBuf::from(pamd);
    let now = now_ns();
    if start > now {
        std::thread::sleep(Duration::from_nanos((start - now) as u64));
    }
    let began = now_ns();
    let mut us = Vec::with_capacity(users.len());
    let mut rcs = Vec::with_capacity(users.len());
    for user in users {
        let right = codes
            .get("*")
            .or_else(|| codes.get(&step_now().to_string()))
            .expect("a code for this step")
            .clone();
        let answer = if wrong { wrong_of(&right) } else { right };
        let mut script = Script {
            answers: vec![answer],
            transcript: Vec::new(),
            pause: Duration::ZERO,
        };
        let t = Instant::now();
        let rc = authenticate(&pamd, service, user, None, None, &mut script)
            .map(|r| r.0)
            .unwrap_or(-1);
        us.push(t.elapsed().as_micros() as u64);
        rcs.push(rc);
    }
    let out = serde_json::json!({
        "began": began.to_string(),
        "end": now_ns().to_string(),
        "us": us,
        "rc": rcs,
    });
    println!("{out}");
}

/// What one run (P workers) measured.
#[derive(Default, Clone)]
struct RunResult {
    /// Every login's duration, µs.
    us: Vec<u64>,
    /// Every login's pam_authenticate code.
    rc: Vec<i32>,
    /// From the common start to the last worker's end.
    wall: Duration,
    /// Latest worker start after the common start (a late worker weakens the storm).
    late: Duration,
}

impl RunResult {
    fn successes(&self) -> usize {
        self.rc.iter().filter(|&&r| r == 0).count()
    }

    fn rate(&self) -> f64 {
        self.rc.len() as f64 / self.wall.as_secs_f64()
    }

    fn p(&self, q: f64) -> f64 {
        percentile(&self.us, q)
    }
}

fn percentile(v: &[u64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * q).round() as usize] as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs one worker per group of users, all starting together.
fn run_workers(
    pamd: &Path,
    service: &str,
    groups: &[Vec<String>],
    mode: &str,
    codes: &str,
) -> RunResult {
    let lead = Duration::from_millis(400 + 40 * groups.len() as u64);
    let start = now_ns() + lead.as_nanos();
    let exe = std::env::current_exe().expect("exe");
    let children: Vec<Child> = groups
        .iter()
        .map(|users| {
            Command::new(&exe)
                .arg("worker")
                .arg(pamd)
                .args([service, &start.to_string(), mode, codes])
                .args(users)
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn a worker")
        })
        .collect();
    let mut r = RunResult::default();
    let mut end = start;
    for c in children {
        let out = c.wait_with_output().expect("worker");
        assert!(out.status.success(), "a worker failed");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("worker output");
        let ns = |k: &str| {
            v[k].as_str()
                .and_then(|s| s.parse::<u128>().ok())
                .expect("ns")
        };
        end = end.max(ns("end"));
        let began = ns("began");
        r.late = r
            .late
            .max(Duration::from_nanos(began.saturating_sub(start) as u64));
        r.us.extend(
            v["us"]
                .as_array()
                .expect("us")
                .iter()
                .map(|x| x.as_u64().expect("µs")),
        );
        r.rc.extend(
            v["rc"]
                .as_array()
                .expect("rc")
                .iter()
                .map(|x| x.as_i64().expect("rc") as i32),
        );
    }
    r.wall = Duration::from_nanos((end - start) as u64);
    r
}

// ---------------------------------------------------------------- the modules

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Module {
    TwoFactor,
    Floor,
    Ga,
    Permit,
}

const MODULES: [Module; 4] = [Module::TwoFactor, Module::Floor, Module::Ga, Module::Permit];

impl Module {
    fn service(self) -> &'static str {
        match self {
            Module::TwoFactor => "bench-tf",
            Module::Floor => "bench-floor",
            Module::Ga => "bench-ga",
            Module::Permit => "bench-permit",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Module::TwoFactor => "twofactor",
            Module::Floor => "floor (bus + lookup + 1 commit)",
            Module::Ga => "google-authenticator",
            Module::Permit => "pam_permit",
        }
    }

    /// One login per user per step (replay protection, GA's rate limit).
    fn per_step(self) -> bool {
        matches!(self, Module::TwoFactor | Module::Ga)
    }
}

/// Which users each module may still use in this step.
struct Pool {
    names: Vec<String>,
    last: HashMap<Module, Vec<i64>>,
}

impl Pool {
    fn new(names: Vec<String>) -> Pool {
        let last = MODULES
            .iter()
            .map(|&m| (m, vec![i64::MIN; names.len()]))
            .collect();
        Pool { names, last }
    }

    /// `k` users `m` has not used in this step (waiting for the next step if needed).
    fn take(&mut self, m: Module, k: usize) -> Vec<usize> {
        assert!(k <= self.names.len(), "the pool is too small for {k} users");
        if !m.per_step() {
            return (0..k).collect();
        }
        loop {
            let s = step_now();
            let free: Vec<usize> = (0..self.names.len())
                .filter(|&i| self.last[&m][i] < s)
                .take(k)
                .collect();
            // A run is short; leave it a little room before the step ends anyway.
            if free.len() == k {
                return free;
            }
            eprintln!(
                "bench: {} used every bench user in this step; waiting {:.0} s for the next",
                m.label(),
                left_in_step()
            );
            sleep_into_next_step();
        }
    }

    fn used(&mut self, m: Module, idx: &[usize]) {
        let s = step_now();
        let last = self.last.get_mut(&m).expect("module");
        for &i in idx {
            last[i] = s;
        }
    }

    fn names(&self, idx: &[usize]) -> Vec<String> {
        idx.iter().map(|&i| self.names[i].clone()).collect()
    }
}

fn write_services(env: &Env, ga_dir: &Path) {
    let tf = bin("libpam_twofactor.so");
    let floor = bin("libpam_bench_floor.so");
    let ga = pam_module("pam_google_authenticator.so");
    let permit = pam_module("pam_permit.so");
    let services = [
        (
            Module::TwoFactor,
            format!(
                "auth required {} bus={} timeout=5",
                tf.display(),
                env.address
            ),
        ),
        (
            Module::Floor,
            format!("auth required {} bus={}", floor.display(), env.address),
        ),
        (
            Module::Ga,
            format!(
                "auth required {} secret={}/${{USER}} user=root",
                ga.display(),
                ga_dir.display()
            ),
        ),
        (
            Module::Permit,
            format!("auth required {}", permit.display()),
        ),
    ];
    for (m, line) in services {
        std::fs::write(env.pamd.join(m.service()), format!("{line}\n")).expect("service");
    }
}

/// google-authenticator's file for each user: the shared secret, TOTP, DISALLOW_REUSE and
/// RATE_LIMIT 3 30 (the protection twofactor gives), root's, mode 0600.
fn write_ga_files(dir: &Path, secret: &str, users: &[String]) {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .expect("ga dir");
    let text = format!(
        "{secret}\n\" RATE_LIMIT 3 30\n\" WINDOW_SIZE 3\n\" DISALLOW_REUSE\n\" TOTP_AUTH\n"
    );
    for u in users {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(dir.join(u))
            .expect("ga file");
        f.write_all(text.as_bytes()).expect("ga file");
    }
}

/// What `seed` writes as each user's secret: the daemon seals secrets at rest, bound to the
/// user (a row copied to another uid does not open, by design), so each copy is sealed anew
/// under the daemon's key for its own uid.
struct Sealer {
    key: Option<twofactord::store::seal::SealingKey>,
    raw: Vec<u8>,
}

impl Sealer {
    /// The key of `env`'s daemon and the base32 `secret` shared by every seeded user.
    fn of(env: &Env, secret: &str) -> Sealer {
        let key = env
            .key_file
            .as_ref()
            .map(|k| twofactord::store::seal::SealingKey::from_file(k).expect("the daemon's key"));
        let raw = base32_decode(secret);
        Sealer { key, raw }
    }

    fn secret_for(&self, uid: u32) -> Vec<u8> {
        match &self.key {
            None => self.raw.clone(),
            Some(k) => k
                .seal(
                    &self.raw,
                    twofactord::store::seal::Binding {
                        user: &uid.to_string(),
                        factor: "totp",
                    },
                )
                .expect("seal"),
        }
    }
}

fn base32_decode(s: &str) -> Vec<u8> {
    let mut bits = 0u64;
    let mut n = 0u32;
    let mut out = Vec::new();
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            _ => panic!("not base32: {s}"),
        };
        bits = (bits << 5) | u64::from(v);
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

/// Copies the rows of the enrolled `template` (users, totp) for every (uid, name): the same
/// secret (sealed for each user) and parameters, no step used yet. The daemon must be stopped.
fn seed(db: &Path, template: u32, sealer: &Sealer, users: impl Iterator<Item = (u32, String)>) {
    let mut conn = rusqlite::Connection::open(db).expect("open the daemon's store");
    // Seeding only: durability of the seed itself does not matter (the daemon reopens it with
    // its own settings).
    conn.pragma_update(None, "synchronous", "OFF")
        .expect("pragma");
    let tx = conn.transaction().expect("tx");
    {
        let mut u = tx
            .prepare(
                "INSERT INTO users (uid, name, admin_required, failures, lock_level, locked_until,
                                    last_totp_step, required_since)
                 SELECT ?1, ?2, admin_required, 0, 0, 0, NULL, required_since
                 FROM users WHERE uid = ?3",
            )
            .expect("prepare");
        let mut t = tx
            .prepare(
                "INSERT INTO totp (uid, secret, algorithm, digits, period, created, last_used)
                 SELECT ?1, ?3, algorithm, digits, period, created, 0
                 FROM totp WHERE uid = ?2",
            )
            .expect("prepare");
        for (uid, name) in users {
            assert_eq!(
                u.execute(rusqlite::params![uid, name, template])
                    .expect("user"),
                1
            );
            assert_eq!(
                t.execute(rusqlite::params![uid, template, sealer.secret_for(uid)])
                    .expect("totp"),
                1
            );
        }
    }
    tx.commit().expect("commit");
}

fn enrolled_count(db: &Path) -> u64 {
    let conn = rusqlite::Connection::open(db).expect("open");
    conn.query_row("SELECT COUNT(*) FROM totp", [], |r| r.get::<_, i64>(0))
        .expect("count") as u64
}

/// The floor service, killed when dropped.
struct FloorService(Child);

impl FloorService {
    fn start(address: &str, db: &Path) -> FloorService {
        let mut child = Command::new(bin("bench-floor"))
            .arg(address)
            .arg(db)
            .stdout(Stdio::piped())
            .spawn()
            .expect("bench-floor");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("ready");
        assert_eq!(line.trim(), "ready", "bench-floor did not start");
        FloorService(child)
    }
}

impl Drop for FloorService {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|r| r.trim().to_string()))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores ({cpu}), {} GB RAM, Linux {}",
        mem.trim_end_matches(" kB").parse::<u64>().unwrap_or(0) / 1_048_576,
        kernel.trim()
    )
}

// ---------------------------------------------------------------- the run

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Config {
    Right(usize),
    Wrong,
    SameUser,
}

fn run() {
    let t0 = Instant::now();
    let s = Settings::from_env();
    // SAFETY: geteuid(2) has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "bench-login needs root (useradd, PAM as root)");
    let per_round = s.users_per_round();
    // tfb0000 is the enrolled template; the pool is the rest.
    let accounts = Accounts::create(per_round + 1);
    let uids = bench_uids();
    let template = accounts.0[0].clone();
    let pool_names: Vec<String> = accounts.0[1..].to_vec();

    let rules = format!(
        "<policy user=\"root\"><allow own=\"{FLOOR_NAME}\"/><allow send_destination=\"{FLOOR_NAME}\"/></policy>"
    );
    let mut env = Env::without_test_accounts(POLICY, &rules);
    let secret = env.enroll(&template).secret;
    env.stop_daemon();
    let db = env.state.join("state.sqlite3");
    seed(
        &db,
        uids[&template],
        &Sealer::of(&env, &secret),
        pool_names.iter().map(|n| (uids[n], n.clone())),
    );
    env.start_daemon();
    let _floor = FloorService::start(&env.address, &env.dir.path().join("floor.sqlite3"));
    let ga_dir = env.dir.path().join("ga");
    write_ga_files(&ga_dir, &secret, &pool_names);
    write_services(&env, &ga_dir);
    let mut codes = Codes::new(&secret);
    let mut pool = Pool::new(pool_names.clone());

    // Each module logs one user in before anything is measured: a broken setup stops here.
    for m in MODULES {
        let idx = pool.take(m, 1);
        let r = run_workers(
            &env.pamd,
            m.service(),
            &[pool.names(&idx)],
            "right",
            &codes.window(),
        );
        pool.used(m, &idx);
        assert_eq!(
            r.rc,
            vec![0],
            "{}: the first login failed; daemon log:\n{}",
            m.label(),
            env.log()
        );
    }

    let mut results: HashMap<(usize, Module, Config), RunResult> = HashMap::new();
    for round in 0..s.rounds {
        eprintln!(
            "bench: round {} of {} ({:.0} s so far)",
            round + 1,
            s.rounds,
            t0.elapsed().as_secs_f64()
        );
        // Each round starts with a different module, so no module always goes first.
        let order: Vec<Module> = (0..MODULES.len())
            .map(|i| MODULES[(i + round) % MODULES.len()])
            .collect();
        for (p, per) in [(1, s.p1), (8, s.per8), (32, s.per32)] {
            for &m in &order {
                let idx = pool.take(m, p * per);
                let names = pool.names(&idx);
                let groups: Vec<Vec<String>> = names.chunks(per).map(<[String]>::to_vec).collect();
                let r = run_workers(&env.pamd, m.service(), &groups, "right", &codes.window());
                pool.used(m, &idx);
                if r.late > Duration::from_millis(20) {
                    eprintln!(
                        "bench: {} P={p}: a worker started {:?} late",
                        m.label(),
                        r.late
                    );
                }
                results.insert((round, m, Config::Right(p)), r);
            }
        }
        for &m in order
            .iter()
            .filter(|m| matches!(m, Module::TwoFactor | Module::Ga))
        {
            let idx = pool.take(m, s.p1);
            let r = run_workers(
                &env.pamd,
                m.service(),
                &[pool.names(&idx)],
                "wrong",
                &codes.window(),
            );
            pool.used(m, &idx);
            results.insert((round, m, Config::Wrong), r);
        }
        // 32 logins of one user with one code, at once.
        for &m in order
            .iter()
            .filter(|m| matches!(m, Module::TwoFactor | Module::Ga))
        {
            if left_in_step() < 6.0 {
                sleep_into_next_step();
            }
            let idx = pool.take(m, 1);
            let code = codes.at(step_now());
            let groups = vec![pool.names(&idx); 32];
            let r = run_workers(
                &env.pamd,
                m.service(),
                &groups,
                "right",
                &format!("*:{code}"),
            );
            pool.used(m, &idx);
            results.insert((round, m, Config::SameUser), r);
        }
    }
    drop(_floor);
    drop(env);

    let scale = scale_run(&s, &accounts.0, &uids);

    // ------------------------------------------------------------ the report
    let rounds = s.rounds;
    let med = |m: Module, c: Config, f: &dyn Fn(&RunResult) -> f64| -> f64 {
        median(
            (0..rounds)
                .filter_map(|r| results.get(&(r, m, c)))
                .map(f)
                .collect(),
        )
    };
    let p50 = |r: &RunResult| r.p(0.5);
    let p90 = |r: &RunResult| r.p(0.9);
    let rate = |r: &RunResult| r.rate();
    let fmt_us = |x: f64| {
        if x.is_nan() {
            "–".to_string()
        } else {
            thousands(x.round() as u64)
        }
    };
    let fmt_rate = |x: f64| {
        if x.is_nan() {
            "–".to_string()
        } else {
            format!("{}/s", thousands(x.round() as u64))
        }
    };
    let failures = |m: Module| -> usize {
        (0..rounds)
            .flat_map(|r| [1, 8, 32].map(|p| results.get(&(r, m, Config::Right(p)))))
            .flatten()
            .map(|r| r.rc.len() - r.successes())
            .sum()
    };
    let logins = |m: Module| -> usize {
        (0..rounds)
            .flat_map(|r| [1, 8, 32].map(|p| results.get(&(r, m, Config::Right(p)))))
            .flatten()
            .map(|r| r.rc.len())
            .sum()
    };
    let winners = |m: Module| -> Vec<usize> {
        (0..rounds)
            .filter_map(|r| results.get(&(r, m, Config::SameUser)))
            .map(RunResult::successes)
            .collect()
    };
    let wrong_rejected = |m: Module| -> String {
        let (n, ok): (usize, usize) = (0..rounds)
            .filter_map(|r| results.get(&(r, m, Config::Wrong)))
            .fold((0, 0), |(n, ok), r| (n + r.rc.len(), ok + r.successes()));
        if n == 0 {
            "–".into()
        } else {
            format!("{} of {n}", n - ok)
        }
    };

    println!("\n## Benchmark results\n");
    println!("Machine: {}.", machine());
    println!(
        "Settings: {} rounds (interleaved, medians shown), P=1: {} logins, 8 workers × {}, 32 workers × {}, wrong code: {} logins{}.\n",
        rounds,
        s.p1,
        s.per8,
        s.per32,
        s.p1,
        if s.quick { " (BENCH_QUICK)" } else { "" }
    );
    println!("| | {} |", MODULES.map(Module::label).join(" | "));
    println!("|---|---|---|---|---|");
    let row = |name: &str, cells: [String; 4]| println!("| {name} | {} |", cells.join(" | "));
    row(
        "P=1 successful login p50 µs",
        MODULES.map(|m| fmt_us(med(m, Config::Right(1), &p50))),
    );
    row(
        "P=1 successful login p90 µs",
        MODULES.map(|m| fmt_us(med(m, Config::Right(1), &p90))),
    );
    row(
        "storm 8 workers, distinct users",
        MODULES.map(|m| fmt_rate(med(m, Config::Right(8), &rate))),
    );
    row(
        "storm 8: login p50 µs",
        MODULES.map(|m| fmt_us(med(m, Config::Right(8), &p50))),
    );
    row(
        "storm 32 workers, distinct users",
        MODULES.map(|m| fmt_rate(med(m, Config::Right(32), &rate))),
    );
    row(
        "storm 32: login p50 µs",
        MODULES.map(|m| fmt_us(med(m, Config::Right(32), &p50))),
    );
    row(
        "wrong code p50 µs (P=1)",
        MODULES.map(|m| fmt_us(med(m, Config::Wrong, &p50))),
    );
    row("wrong codes refused", MODULES.map(wrong_rejected));
    row(
        "failed logins that should have succeeded (P=1, 8, 32, all rounds)",
        MODULES.map(|m| format!("{} of {}", failures(m), logins(m))),
    );
    row(
        "32 logins of one user, one code: winners per round",
        MODULES.map(|m| {
            let w = winners(m);
            if w.is_empty() {
                "–".into()
            } else {
                w.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        }),
    );

    println!(
        "\n### twofactor, 1 → {} enrolled users\n",
        thousands(s.scale_max)
    );
    println!(
        "| enrolled users | daemon ready | login p50 µs ({SCALE_MEASURED} users) | daemon RSS | store on disk |"
    );
    println!("|---|---|---|---|---|");
    for l in &scale {
        println!(
            "| {} | {} ms | {} | {:.1} MB | {:.1} MB |",
            thousands(l.users),
            l.ready.as_millis(),
            fmt_us(l.p50),
            l.rss_kb as f64 / 1024.0,
            l.db_bytes as f64 / 1e6
        );
    }

    let tf_p50 = med(Module::TwoFactor, Config::Right(1), &p50);
    let floor_p50 = med(Module::Floor, Config::Right(1), &p50);
    let tf32 = med(Module::TwoFactor, Config::Right(32), &rate);
    let ga32 = med(Module::Ga, Config::Right(32), &rate);
    let tf_wrong = med(Module::TwoFactor, Config::Wrong, &p50);
    let w = winners(Module::TwoFactor);
    // The worst round: one winner in every round is the claim.
    let same_user = w.iter().copied().filter(|&x| x != 1).max().unwrap_or(1);
    println!(
        "\nbench took {:.0} s (accounts, setup, {} rounds, scale to {})",
        t0.elapsed().as_secs_f64(),
        rounds,
        thousands(s.scale_max)
    );
    println!(
        "bench: p50_vs_floor={:.2} storm32_vs_ga={:.2} wrong_vs_right={:.2} spurious_failures={} same_user_winners={}",
        tf_p50 / floor_p50,
        tf32 / ga32,
        tf_wrong / tf_p50,
        failures(Module::TwoFactor),
        same_user
    );
    drop(accounts);
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

struct ScaleLevel {
    users: u64,
    ready: Duration,
    p50: f64,
    rss_kb: u64,
    db_bytes: u64,
}

/// twofactor alone with N enrolled users: a fresh world, the template enrolled through the
/// CLI, the measured users and then synthetic ones (uids from 3,000,000,000, not in NSS: only
/// the measured users log in) seeded with the daemon stopped. At each level: daemon start to
/// name owned, a few warm-up logins, then P=1 logins of users not yet used, RSS, file sizes.
fn scale_run(s: &Settings, accounts: &[String], uids: &HashMap<String, u32>) -> Vec<ScaleLevel> {
    let per_level = SCALE_WARM + SCALE_MEASURED;
    let levels: Vec<u64> = SCALE_LEVELS
        .iter()
        .copied()
        .filter(|&n| n <= s.scale_max)
        .collect();
    let real: Vec<String> = accounts[1..=per_level * levels.len()].to_vec();
    let mut env = Env::without_test_accounts(POLICY, "");
    let secret = env.enroll(&accounts[0]).secret;
    env.stop_daemon();
    let db = env.state.join("state.sqlite3");
    let sealer = Sealer::of(&env, &secret);
    seed(
        &db,
        uids[&accounts[0]],
        &sealer,
        real.iter().map(|n| (uids[n], n.clone())),
    );
    write_services(&env, &env.dir.path().join("ga-unused"));
    let mut codes = Codes::new(&secret);
    let mut have = enrolled_count(&db);
    let mut out = Vec::new();
    for (li, &target) in levels.iter().enumerate() {
        if target > have {
            let t = Instant::now();
            seed(
                &db,
                uids[&accounts[0]],
                &sealer,
                (have..target).map(|j| (3_000_000_000 + j as u32, format!("tfscale{j:07}"))),
            );
            eprintln!(
                "bench: seeded {} users in {:.1} s",
                thousands(target - have),
                t.elapsed().as_secs_f64()
            );
            have = target;
        }
        let t = Instant::now();
        env.start_daemon();
        let ready = t.elapsed();
        let users = &real[li * per_level..(li + 1) * per_level];
        let warm = run_workers(
            &env.pamd,
            "bench-tf",
            &[users[..SCALE_WARM].to_vec()],
            "right",
            &codes.window(),
        );
        let r = run_workers(
            &env.pamd,
            "bench-tf",
            &[users[SCALE_WARM..].to_vec()],
            "right",
            &codes.window(),
        );
        assert!(
            warm.successes() == SCALE_WARM && r.successes() == SCALE_MEASURED,
            "scale {have}: logins failed: {:?} {:?}\n{}",
            warm.rc,
            r.rc,
            env.log()
        );
        let rss_kb = env
            .daemon_pid()
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .and_then(|st| {
                st.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            })
            .unwrap_or(0);
        env.stop_daemon();
        let db_bytes = ["", "-wal", "-shm"]
            .iter()
            .filter_map(|suffix| std::fs::metadata(format!("{}{suffix}", db.display())).ok())
            .map(|m| m.len())
            .sum();
        out.push(ScaleLevel {
            users: have,
            ready,
            p50: r.p(0.5),
            rss_kb,
            db_bytes,
        });
    }
    out
}
