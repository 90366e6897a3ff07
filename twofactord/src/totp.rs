//! TOTP (RFC 6238): secrets, enrollment URIs and verification with replay protection.
#![forbid(unsafe_code)]

use subtle::ConstantTimeEq;
use totp_rs::Builder;
use zeroize::Zeroizing;

use crate::policy::TotpPolicy;
use crate::store::types::Algorithm;

pub use crate::store::types::{TotpParams, TotpSecret};

impl From<&TotpPolicy> for TotpParams {
    fn from(p: &TotpPolicy) -> Self {
        TotpParams {
            algorithm: p.algorithm,
            digits: p.digits,
            period: p.period,
        }
    }
}

fn lib_algorithm(a: Algorithm) -> totp_rs::Algorithm {
    match a {
        Algorithm::SHA1 => totp_rs::Algorithm::SHA1,
        Algorithm::SHA256 => totp_rs::Algorithm::SHA256,
        Algorithm::SHA512 => totp_rs::Algorithm::SHA512,
    }
}

fn generator(secret: &TotpSecret, params: TotpParams) -> totp_rs::Totp {
    // Non-compliant build: imported secrets (google-authenticator) are 80 bits, under the
    // RFC's 128-bit recommendation; the parameters themselves are validated by the policy.
    Builder::new()
        .with_algorithm(lib_algorithm(params.algorithm))
        .with_digits(params.digits)
        .with_step_duration(params.period.max(1))
        .with_secret(secret.as_bytes().to_vec())
        .build_noncompliant()
}

/// The code for unix time `time` (used by tests and the demo's self-check, never logged).
pub fn code_at(secret: &TotpSecret, params: TotpParams, time: u64) -> Zeroizing<String> {
    Zeroizing::new(generator(secret, params).generate(time).to_string())
}

/// The `otpauth://totp/ISSUER:ACCOUNT?secret=…&issuer=…` URI for enrollment.
pub fn otpauth_uri(
    secret: &TotpSecret,
    params: TotpParams,
    issuer: &str,
    account: &str,
) -> Zeroizing<String> {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    Zeroizing::new(format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm={}&digits={}&period={}",
        enc(issuer),
        enc(account),
        secret.to_base32().as_str(),
        enc(issuer),
        params.algorithm.as_str(),
        params.digits,
        params.period
    ))
}

/// What a submitted code turned out to be.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpCheck {
    /// Valid for this time step, which is later than the last accepted one.
    Valid(u64),
    /// Valid, but for a step at or before the last accepted one.
    Replayed,
    /// Not valid in the window.
    Wrong,
}

/// Whether `input` has the shape of a TOTP code for these parameters.
pub fn looks_like_code(input: &str, params: TotpParams) -> bool {
    input.len() == usize::from(params.digits) && input.bytes().all(|b| b.is_ascii_digit())
}

/// Checks `code` at unix time `now` within ±`window` steps. `last_step` is the last accepted
/// step (replay protection). Every step of the window is computed and compared in constant
/// time, so timing says nothing about which step matched.
pub fn verify(
    secret: &TotpSecret,
    params: TotpParams,
    window: u64,
    code: &str,
    now: u64,
    last_step: Option<u64>,
) -> TotpCheck {
    if !looks_like_code(code, params) {
        return TotpCheck::Wrong;
    }
    let totp = generator(secret, params);
    let current = now / params.period.max(1);
    let mut fresh: Option<u64> = None;
    let mut stale = false;
    for step in current.saturating_sub(window)..=current.saturating_add(window) {
        let expected = Zeroizing::new(
            totp.generate(step.saturating_mul(params.period))
                .to_string(),
        );
        let matches = bool::from(expected.as_bytes().ct_eq(code.as_bytes()));
        let is_fresh = last_step.is_none_or(|last| step > last);
        if matches && is_fresh {
            fresh = Some(fresh.map_or(step, |f: u64| f.max(step)));
        } else if matches {
            stale = true;
        }
    }
    match (fresh, stale) {
        (Some(step), _) => TotpCheck::Valid(step),
        (None, true) => TotpCheck::Replayed,
        (None, false) => TotpCheck::Wrong,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc_params(algorithm: Algorithm) -> (TotpSecret, TotpParams) {
        // RFC 6238 appendix B seeds: the ASCII string repeated to the hash's size.
        let seed: &[u8] = match algorithm {
            Algorithm::SHA1 => b"12345678901234567890",
            Algorithm::SHA256 => b"12345678901234567890123456789012",
            Algorithm::SHA512 => {
                b"1234567890123456789012345678901234567890123456789012345678901234"
            }
        };
        (
            TotpSecret::from_bytes(seed.to_vec()),
            TotpParams {
                algorithm,
                digits: 8,
                period: 30,
            },
        )
    }

    #[test]
    fn rfc6238_test_vectors() {
        let table: &[(u64, &str, &str, &str)] = &[
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        for &(time, sha1, sha256, sha512) in table {
            for (alg, want) in [
                (Algorithm::SHA1, sha1),
                (Algorithm::SHA256, sha256),
                (Algorithm::SHA512, sha512),
            ] {
                let (secret, params) = rfc_params(alg);
                assert_eq!(
                    code_at(&secret, params, time).as_str(),
                    want,
                    "{alg:?} at {time}"
                );
                assert_eq!(
                    verify(&secret, params, 0, want, time, None),
                    TotpCheck::Valid(time / 30)
                );
            }
        }
    }

    #[test]
    fn window_accepts_one_step_either_side_and_refuses_three() {
        let (secret, mut params) = rfc_params(Algorithm::SHA1);
        params.digits = 6;
        let now = 1_700_000_000u64;
        let step = now / 30;
        for delta in [-1i64, 0, 1] {
            let t = (step as i64 + delta) as u64 * 30;
            let code = code_at(&secret, params, t);
            assert_eq!(
                verify(&secret, params, 1, &code, now, None),
                TotpCheck::Valid((step as i64 + delta) as u64)
            );
        }
        for delta in [-3i64, 3] {
            let code = code_at(&secret, params, (step as i64 + delta) as u64 * 30);
            assert_eq!(
                verify(&secret, params, 1, &code, now, None),
                TotpCheck::Wrong
            );
        }
    }

    #[test]
    fn replay_of_same_or_earlier_step_is_refused() {
        let (secret, mut params) = rfc_params(Algorithm::SHA1);
        params.digits = 6;
        let now = 1_700_000_000u64;
        let step = now / 30;
        let code = code_at(&secret, params, now);
        assert_eq!(
            verify(&secret, params, 1, &code, now, Some(step)),
            TotpCheck::Replayed
        );
        assert_eq!(
            verify(&secret, params, 1, &code, now, Some(step + 1)),
            TotpCheck::Replayed
        );
        // An earlier code after a later one was accepted is a replay too.
        let early = code_at(&secret, params, now - 30);
        assert_eq!(
            verify(&secret, params, 1, &early, now, Some(step)),
            TotpCheck::Replayed
        );
        assert_eq!(
            verify(&secret, params, 1, &code, now, Some(step - 1)),
            TotpCheck::Valid(step)
        );
    }

    #[test]
    fn malformed_codes_are_wrong_not_errors() {
        let (secret, params) = rfc_params(Algorithm::SHA1);
        for bad in [
            "",
            "1234567",
            "123456789",
            "abcdefgh",
            "9428708\u{0}",
            "٤٤٤٤٤٤٤٤",
        ] {
            assert_eq!(verify(&secret, params, 1, bad, 59, None), TotpCheck::Wrong);
        }
    }

    #[test]
    fn uri_carries_parameters_and_secret_debug_does_not() {
        let secret = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
        let params = TotpParams {
            algorithm: Algorithm::SHA256,
            digits: 8,
            period: 60,
        };
        let uri = otpauth_uri(&secret, params, "twofactor@host", "alice smith");
        assert_eq!(
            uri.as_str(),
            "otpauth://totp/twofactor@host:alice%20smith?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=twofactor@host&algorithm=SHA256&digits=8&period=60"
        );
        assert!(!format!("{secret:?}").contains("GEZD"));
    }
}
