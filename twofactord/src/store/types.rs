//! Plain data shared by the store, the policy and the TOTP code: the bottom of the daemon. It
//! imports nothing of the daemon.
#![forbid(unsafe_code)]

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

/// TOTP hash algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Algorithm {
    /// HMAC-SHA1, what every authenticator app supports.
    SHA1,
    /// HMAC-SHA256.
    SHA256,
    /// HMAC-SHA512.
    SHA512,
}

impl Algorithm {
    /// Name as in otpauth URIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::SHA1 => "SHA1",
            Algorithm::SHA256 => "SHA256",
            Algorithm::SHA512 => "SHA512",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Algorithm> {
        match s {
            "SHA1" => Some(Algorithm::SHA1),
            "SHA256" => Some(Algorithm::SHA256),
            "SHA512" => Some(Algorithm::SHA512),
            _ => None,
        }
    }
}

/// Failure counting and lockout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Consecutive failures that lock the user.
    pub max_failures: u32,
    /// Length of the first lockout.
    pub lockout: Duration,
    /// Each further lockout lasts this many times longer.
    pub escalation: u32,
    /// Upper bound of a lockout.
    pub max_lockout: Duration,
}

impl RateLimit {
    /// One more failure on top of `failures` counted and `level` lockouts in a row, at `now`:
    /// the failures counted then, and the lockout it starts (its level and end), if any.
    pub fn after_failure(&self, failures: u32, level: u32, now: i64) -> (u32, Option<(u32, i64)>) {
        let failures = failures.saturating_add(1);
        if failures < self.max_failures {
            return (failures, None);
        }
        let level = level.saturating_add(1);
        let secs = i64::try_from(self.lockout_for(level).as_secs()).unwrap_or(i64::MAX);
        (failures, Some((level, now.saturating_add(secs))))
    }

    /// Duration of the `level`-th lockout (1-based), escalating and capped.
    pub fn lockout_for(&self, level: u32) -> Duration {
        let factor = u64::from(self.escalation.max(1))
            .checked_pow(level.saturating_sub(1))
            .unwrap_or(u64::MAX);
        let secs = self.lockout.as_secs().saturating_mul(factor);
        Duration::from_secs(secs).min(self.max_lockout)
    }
}

/// A TOTP shared secret. Never printed; zeroized on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret(Zeroizing<Vec<u8>>);

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

impl TotpSecret {
    /// Wraps raw secret bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        TotpSecret(Zeroizing::new(bytes))
    }

    /// 20 fresh random bytes (160 bits, as RFC 4226 recommends).
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = Zeroizing::new(vec![0u8; 20]);
        getrandom::fill(&mut bytes)?;
        Ok(TotpSecret(bytes))
    }

    /// The raw bytes, for storage.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Base32 without padding, as authenticator apps expect.
    pub fn to_base32(&self) -> Zeroizing<String> {
        Zeroizing::new(base32::encode(
            base32::Alphabet::Rfc4648 { padding: false },
            &self.0,
        ))
    }
}

/// The parameters a factor was enrolled with (they stay fixed when the policy changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotpParams {
    /// Hash.
    pub algorithm: Algorithm,
    /// 6 or 8.
    pub digits: u8,
    /// Seconds per step.
    pub period: u64,
}

/// How many audit records to delete from each user when `n` records must go to keep the log
/// within its cap, given each user's record count and the position of their oldest record
/// (`(uid, count, oldest)`): the users with the most records give first, down to a common
/// level, so that one user's flood of records displaces that user's own history, never the
/// others' (water-filling); among users level with each other, the oldest record goes first.
/// Returns `(uid, how many)` for the users who give any, adding up to `min(n, total)`; the
/// records to delete are each user's oldest.
pub fn audit_shares<K: Clone + Ord>(users: &[(K, u64, i64)], n: u64) -> Vec<(K, u64)> {
    let total: u64 = users.iter().map(|u| u.1).fold(0, u64::saturating_add);
    if n == 0 || users.is_empty() {
        return Vec::new();
    }
    if n >= total {
        return users
            .iter()
            .filter(|u| u.1 > 0)
            .map(|u| (u.0.clone(), u.1))
            .collect();
    }
    // What deleting everything above `level` takes.
    let above = |level: u64| -> u64 {
        users
            .iter()
            .map(|u| u.1.saturating_sub(level))
            .fold(0, u64::saturating_add)
    };
    // The lowest level whose excess is at most n (above(0) = total > n, above(max) = 0).
    let (mut low, mut high) = (0u64, users.iter().map(|u| u.1).max().unwrap_or(0));
    while low + 1 < high {
        let mid = low + (high - low) / 2;
        if above(mid) <= n {
            high = mid;
        } else {
            low = mid;
        }
    }
    let level = high;
    let mut rest = n - above(level);
    // Everyone above the level comes down to it; `rest` more, one each, from the users still
    // at the level (the largest first, then the one whose oldest record is oldest). There are
    // more of those than `rest`, since the level below would take more than n.
    let mut at_level: Vec<&(K, u64, i64)> = users.iter().filter(|u| u.1 >= level).collect();
    at_level.sort_by_key(|u| (std::cmp::Reverse(u.1), u.2, &u.0));
    let mut shares = Vec::new();
    for (uid, c, _) in at_level {
        let (uid, c) = (uid.clone(), *c);
        let mut give = c - level;
        if rest > 0 && level > 0 {
            give += 1;
            rest -= 1;
        }
        if give > 0 {
            shares.push((uid, give));
        }
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::audit_shares;

    fn sum(shares: &[(u32, u64)]) -> u64 {
        shares.iter().map(|s| s.1).sum()
    }

    /// Counts with the uid as the oldest record's position.
    fn shares(counts: &[(u32, u64)], n: u64) -> Vec<(u32, u64)> {
        let users: Vec<(u32, u64, i64)> =
            counts.iter().map(|&(u, c)| (u, c, i64::from(u))).collect();
        audit_shares(&users, n)
    }

    #[test]
    fn a_flooding_user_gives_first_and_alone_while_above_the_others() {
        // bob flooded: 1000 records; alice 10, carol 5. 500 must go: all bob's.
        let counts = [(1000, 10), (1001, 1000), (1002, 5)];
        assert_eq!(shares(&counts, 500), vec![(1001, 500)]);
        // 995 must go: bob comes down to 10 (990), then one each from bob and alice, the
        // largest first (five more from the users at the common level 9 after that).
        let s = shares(&counts, 995);
        assert_eq!(sum(&s), 995);
        assert!(
            s.iter().all(|&(uid, _)| uid != 1002),
            "{s:?}: carol keeps hers"
        );
    }

    #[test]
    fn shares_add_up_and_level_the_counts() {
        let cases: &[(&[(u32, u64)], u64)] = &[
            (&[(1, 5), (2, 5), (3, 5)], 4),
            (&[(1, 7), (2, 3), (3, 0), (4, 9)], 10),
            (&[(1, 1)], 1),
            (&[(1, 100), (2, 100)], 1),
            (&[(1, 3), (2, 2)], 5),
            (&[(1, 3), (2, 2)], 50),
            (&[(0, 1_000_000), (1, 2), (2, 2)], 999_999),
        ];
        for &(counts, n) in cases {
            let s = shares(counts, n);
            let total: u64 = counts.iter().map(|c| c.1).sum();
            assert_eq!(sum(&s), n.min(total), "{counts:?} {n}: {s:?}");
            // What is left: no user is more than one record above any user who gave.
            let left: Vec<(u32, u64)> = counts
                .iter()
                .map(|&(u, c)| (u, c - s.iter().find(|x| x.0 == u).map_or(0, |x| x.1)))
                .collect();
            for &(giver, _) in &s {
                let g = left.iter().find(|x| x.0 == giver).map_or(0, |x| x.1);
                for &(_, c) in &left {
                    assert!(c <= g + 1, "{counts:?} {n}: left {left:?}");
                }
            }
        }
        assert!(shares(&[(1, 5)], 0).is_empty());
        assert!(shares(&[], 5).is_empty());
        // Level users: the one whose oldest record is oldest gives first.
        assert_eq!(audit_shares(&[(7, 3, 50), (8, 3, 40)], 1), vec![(8, 1)]);
    }
}
