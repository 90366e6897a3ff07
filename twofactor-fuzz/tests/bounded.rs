//! The fuzz targets on stable, bounded and deterministic: every committed seed, then random
//! mutations of the seeds from a fixed-seed generator (`TWOFACTOR_FUZZ_SEED` and
//! `TWOFACTOR_FUZZ_ITERATIONS` change them). This is what CI runs; `make fuzz` (cargo-fuzz,
//! nightly) searches far deeper with coverage feedback.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;

use twofactor_fuzz::{TARGETS, login_stats};

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// Edits as libFuzzer makes them: bit flips, random and interesting bytes, inserts, deletes,
/// duplicated runs, splices with another seed.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>, others: &[Vec<u8>]) {
    const INTERESTING: &[u8] = &[
        0, 1, 0x7f, 0x80, 0xff, 0x18, 0x19, 0x1a, 0x1b, 0x58, 0x59, b'\n', b'"', b'=', b'[', b':',
        b',',
    ];
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.next() as u8;
            }
            2 if len > 0 => {
                let i = rng.below(len);
                data[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            3 => {
                let i = rng.below(len + 1);
                data.insert(i, rng.next() as u8);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                data.drain(i..i + n);
            }
            5 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(32));
                let run: Vec<u8> = data[i..i + n].to_vec();
                let at = rng.below(data.len() + 1);
                data.splice(at..at, run);
            }
            6 if !others.is_empty() => {
                let o = &others[rng.below(others.len())];
                if !o.is_empty() {
                    let cut = rng.below(data.len() + 1);
                    let from = rng.below(o.len());
                    data.truncate(cut);
                    data.extend_from_slice(&o[from..]);
                }
            }
            _ => data.truncate(rng.below(len + 1)),
        }
    }
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run(target: &str, default_iterations: u64) {
    let (_, body) = TARGETS.iter().find(|(n, _)| *n == target).unwrap();
    let seeds = corpus(target);
    assert!(!seeds.is_empty(), "no seeds for {target}");
    let seed = setting("TWOFACTOR_FUZZ_SEED", 0x2fa_2fa);
    let iterations = setting("TWOFACTOR_FUZZ_ITERATIONS", default_iterations);
    println!(
        "{target}: {} seeds, {iterations} mutations, seed {seed:#x}",
        seeds.len()
    );
    for s in &seeds {
        body(s);
    }
    let mut rng = Rng(seed);
    for _ in 0..iterations {
        let mut data = seeds[rng.below(seeds.len())].clone();
        mutate(&mut rng, &mut data, &seeds);
        body(&data);
    }
}

#[test]
fn policy_loader() {
    run("policy", 3000);
}

#[test]
fn google_authenticator_import() {
    run("google_authenticator", 5000);
}

#[test]
fn u2f_authfile_import() {
    run("u2f_authfile", 3000);
}

#[test]
fn fido2_data_from_the_bus() {
    run("fido2", 1000);
}

#[test]
fn login_state_machine() {
    run("login", 400);
}

/// The login harness reaches what its invariants are about: the seeds enroll and log in for
/// real, so "no success without a valid factor" is checked against successes that happen.
#[test]
fn login_seeds_are_not_vacuous() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/login");
    let stats = login_stats(&std::fs::read(dir.join("enroll_then_login")).unwrap());
    assert_eq!((stats.enrollments, stats.successes), (1, 1), "{stats:?}");
    // The same code twice: the replay is refused.
    let stats = login_stats(&std::fs::read(dir.join("replay")).unwrap());
    assert_eq!((stats.enrollments, stats.successes), (1, 1), "{stats:?}");
    let stats = login_stats(&std::fs::read(dir.join("recovery")).unwrap());
    assert_eq!((stats.enrollments, stats.successes), (1, 1), "{stats:?}");
    let stats = login_stats(&std::fs::read(dir.join("unenrolled")).unwrap());
    assert_eq!(stats.successes, 0, "{stats:?}");
}

/// The key seeds enroll a key through BeginKey, RegisterKey and ConfirmKey and log in with it:
/// "no success without a valid assertion" is checked against key logins that happen.
#[test]
fn login_key_seeds_are_not_vacuous() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/login");
    let stats = |name: &str| login_stats(&std::fs::read(dir.join(name)).unwrap());
    let s = stats("key_enroll_then_login");
    assert_eq!(
        (s.key_enrollments, s.successes, s.key_successes),
        (1, 1, 1),
        "{s:?}"
    );
    // The same assertion again, then the same counter over a new challenge: both refused.
    let s = stats("key_replay");
    assert_eq!(
        (s.key_enrollments, s.successes, s.key_successes),
        (1, 1, 1),
        "{s:?}"
    );
    // A code typed at the key's cue (SkipKey, then the code prompt): a recovery code.
    let s = stats("key_code_at_cue");
    assert_eq!(
        (s.key_enrollments, s.successes, s.key_successes),
        (1, 1, 0),
        "{s:?}"
    );
}
