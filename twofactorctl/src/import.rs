//! Reading other tools' files so that people can move over: `~/.google_authenticator`.
//!
//! The file is parsed here, in the admin's CLI; the secret and codes then go to the daemon in
//! one call, which stores all of it or nothing.
#![forbid(unsafe_code)]

use std::fmt;

use zeroize::Zeroizing;

/// A file that cannot be imported: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    /// 1-based line, if one is to blame.
    pub line: Option<usize>,
    /// What is wrong (never the secret or a code).
    pub message: String,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ImportError {}

/// What a `~/.google_authenticator` file holds, as twofactor will use it.
pub struct GoogleAuthenticator {
    /// The base32 secret.
    pub secret: Zeroizing<String>,
    /// Seconds per code (`STEP_SIZE`, default 30).
    pub period: u32,
    /// The scratch codes (8 digits each), imported as recovery codes.
    pub scratch_codes: Vec<Zeroizing<String>>,
    /// Options that were carried over, for the report.
    pub mapped: Vec<String>,
    /// Options that were dropped, and why, for the report.
    pub dropped: Vec<String>,
}

impl fmt::Debug for GoogleAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoogleAuthenticator")
            .field("period", &self.period)
            .field("scratch_codes", &self.scratch_codes.len())
            .field("mapped", &self.mapped)
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

fn err(line: usize, message: impl Into<String>) -> ImportError {
    ImportError {
        line: Some(line),
        message: message.into(),
    }
}

/// Parses a google-authenticator file (as written by the `google-authenticator` tool of
/// libpam-google-authenticator).
pub fn parse_google_authenticator(text: &str) -> Result<GoogleAuthenticator, ImportError> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end()));
    let Some((_, first)) = lines.next() else {
        return Err(ImportError {
            line: None,
            message: "the file is empty".into(),
        });
    };
    let secret = first.trim();
    if secret.len() < 16
        || secret.len() > 103
        || !secret
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
    {
        return Err(err(
            1,
            "the first line is not a base32 secret (16 to 103 characters A-Z, 2-7)",
        ));
    }
    let mut out = GoogleAuthenticator {
        secret: Zeroizing::new(secret.to_string()),
        period: 30,
        scratch_codes: Vec::new(),
        mapped: vec!["secret (SHA1, 6 digits)".into()],
        dropped: Vec::new(),
    };
    let mut totp = false;
    for (n, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(option) = line.strip_prefix("\" ") {
            let mut words = option.split_whitespace();
            let name = words.next().unwrap_or_default();
            let args: Vec<&str> = words.collect();
            match name {
                "TOTP_AUTH" => totp = true,
                "HOTP_COUNTER" => {
                    return Err(err(
                        n,
                        "counter-based (HOTP) codes are not supported: enroll the user anew \
                         with `twofactorctl enroll totp`",
                    ));
                }
                "STEP_SIZE" => {
                    let step: u32 = args
                        .first()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| err(n, "STEP_SIZE needs a number of seconds"))?;
                    if !(15..=300).contains(&step) {
                        return Err(err(
                            n,
                            format!("STEP_SIZE {step} is outside 15..300 seconds"),
                        ));
                    }
                    out.period = step;
                    out.mapped.push(format!("STEP_SIZE {step} (period)"));
                }
                "WINDOW_SIZE" => out.dropped.push(format!(
                    "WINDOW_SIZE {}: the policy's [totp] window applies to everyone",
                    args.first().unwrap_or(&"?")
                )),
                "RATE_LIMIT" => out.dropped.push(format!(
                    "RATE_LIMIT {}: the policy's [rate_limit] applies to everyone",
                    args.iter().take(2).copied().collect::<Vec<_>>().join(" ")
                )),
                "DISALLOW_REUSE" => out
                    .mapped
                    .push("DISALLOW_REUSE (twofactor always refuses reused codes)".into()),
                other => out
                    .dropped
                    .push(format!("{other}: not a setting twofactor knows")),
            }
            continue;
        }
        let code = line.trim();
        if code.len() == 8 && code.bytes().all(|b| b.is_ascii_digit()) {
            if out.scratch_codes.len() >= 100 {
                return Err(err(n, "more than 100 scratch codes"));
            }
            out.scratch_codes.push(Zeroizing::new(code.to_string()));
            continue;
        }
        return Err(err(
            n,
            "neither an option (\" NAME) nor an 8-digit scratch code",
        ));
    }
    if !totp {
        return Err(ImportError {
            line: None,
            message: "no \" TOTP_AUTH line: only time-based files can be imported".into(),
        });
    }
    if !out.scratch_codes.is_empty() {
        out.mapped.push(format!(
            "{} scratch codes (as recovery codes)",
            out.scratch_codes.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "RK6R5YLJPYZ56WPX7ZUIA22Z7Q\n\" RATE_LIMIT 3 30 1700000000\n\" WINDOW_SIZE 5\n\" DISALLOW_REUSE 56666666\n\" TOTP_AUTH\n41576704\n56341732\n";

    #[test]
    fn a_tool_written_file_maps_secret_step_and_scratch_codes() {
        let ga = parse_google_authenticator(FILE).expect("valid");
        assert_eq!(ga.secret.as_str(), "RK6R5YLJPYZ56WPX7ZUIA22Z7Q");
        assert_eq!(ga.period, 30);
        assert_eq!(ga.scratch_codes.len(), 2);
        assert!(ga.dropped.iter().any(|d| d.starts_with("WINDOW_SIZE 5")));
        assert!(ga.dropped.iter().any(|d| d.starts_with("RATE_LIMIT 3 30")));
        assert!(ga.mapped.iter().any(|m| m.starts_with("DISALLOW_REUSE")));
        // Debug never shows the secret or codes.
        let dbg = format!("{ga:?}");
        assert!(!dbg.contains("RK6R5") && !dbg.contains("41576704"), "{dbg}");
        let ga = parse_google_authenticator(
            &FILE.replace("\" TOTP_AUTH", "\" TOTP_AUTH\n\" STEP_SIZE 60"),
        )
        .expect("valid");
        assert_eq!(ga.period, 60);
    }

    #[test]
    fn bad_files_name_the_line() {
        let cases: &[(&str, Option<usize>, &str)] = &[
            ("", None, "empty"),
            ("not a secret\n", Some(1), "base32"),
            (
                "RK6R5YLJPYZ56WPX7ZUIA22Z7Q\n\" HOTP_COUNTER 1\n",
                Some(2),
                "HOTP",
            ),
            (
                "RK6R5YLJPYZ56WPX7ZUIA22Z7Q\n\" TOTP_AUTH\n1234\n",
                Some(3),
                "scratch code",
            ),
            (
                "RK6R5YLJPYZ56WPX7ZUIA22Z7Q\n\" TOTP_AUTH\n\" STEP_SIZE 5\n",
                Some(3),
                "STEP_SIZE",
            ),
            ("RK6R5YLJPYZ56WPX7ZUIA22Z7Q\n12345678\n", None, "TOTP_AUTH"),
        ];
        for (text, line, needle) in cases {
            let e = parse_google_authenticator(text).expect_err(needle);
            assert_eq!(e.line, *line, "{e}");
            assert!(e.to_string().contains(needle), "{e}");
            assert!(!e.to_string().contains("RK6R5"), "{e}");
        }
    }
}
