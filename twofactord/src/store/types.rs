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
