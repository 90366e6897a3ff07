//! Single-use recovery codes: 80 random bits each, shown once, stored only as salted hashes.
#![forbid(unsafe_code)]

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Letters used in codes: RFC 4648 base32, lower case (no 0/1/8/9 to confuse with letters).
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
/// Characters per code (16 × 5 bits = 80 bits).
const CODE_CHARS: usize = 16;
/// Codes per set.
pub const CODES_PER_SET: usize = 10;

/// A recovery code as stored: salt and SHA-256(salt || code). Never the code itself.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredCode {
    /// Row id in the store (0 before it is stored).
    pub id: i64,
    /// 16 random bytes.
    pub salt: Vec<u8>,
    /// SHA-256 of salt and normalized code.
    pub hash: Vec<u8>,
}

impl std::fmt::Debug for StoredCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCode")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn digest(salt: &[u8], normalized: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(normalized.as_bytes());
    h.finalize().to_vec()
}

/// Makes a fresh set: the codes to show once (formatted `abcd-efgh-ijkl-mnop`), and their
/// stored form.
pub fn generate_set() -> Result<(Vec<Zeroizing<String>>, Vec<StoredCode>), getrandom::Error> {
    let mut shown = Vec::with_capacity(CODES_PER_SET);
    let mut stored = Vec::with_capacity(CODES_PER_SET);
    for _ in 0..CODES_PER_SET {
        let mut raw = Zeroizing::new([0u8; CODE_CHARS]);
        getrandom::fill(raw.as_mut())?;
        let plain: Zeroizing<String> = Zeroizing::new(
            raw.iter()
                .map(|b| ALPHABET[usize::from(b & 31)] as char)
                .collect(),
        );
        let mut salt = vec![0u8; 16];
        getrandom::fill(&mut salt)?;
        let hash = digest(&salt, &plain);
        let formatted = Zeroizing::new(
            plain
                .as_bytes()
                .chunks(4)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join("-"),
        );
        shown.push(formatted);
        stored.push(StoredCode { id: 0, salt, hash });
    }
    Ok((shown, stored))
}

/// Length of the numeric scratch codes imported from google-authenticator.
pub const IMPORTED_CODE_DIGITS: usize = 8;

/// Normalizes what a user typed: case, dashes and spaces do not matter. `None` when it cannot
/// be a recovery code: ours (16 base32 letters) or an imported scratch code (8 digits).
pub fn normalize(input: &str) -> Option<Zeroizing<String>> {
    let cleaned: Zeroizing<String> = Zeroizing::new(
        input
            .chars()
            .filter(|c| *c != '-' && *c != ' ')
            .map(|c| c.to_ascii_lowercase())
            .collect(),
    );
    let ours = cleaned.len() == CODE_CHARS && cleaned.bytes().all(|b| ALPHABET.contains(&b));
    let imported =
        cleaned.len() == IMPORTED_CODE_DIGITS && cleaned.bytes().all(|b| b.is_ascii_digit());
    (ours || imported).then_some(cleaned)
}

/// The stored form of codes made elsewhere (google-authenticator scratch codes), each checked
/// with [`normalize`] first. `Err` names the first code that is not a valid code.
pub fn store_imported(codes: &[String]) -> Result<Vec<StoredCode>, String> {
    let mut out = Vec::with_capacity(codes.len());
    for (i, code) in codes.iter().enumerate() {
        let normalized = normalize(code)
            .ok_or_else(|| format!("recovery code {} is not a valid code", i + 1))?;
        let mut salt = vec![0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| format!("no randomness available: {e}"))?;
        let hash = digest(&salt, &normalized);
        out.push(StoredCode { id: 0, salt, hash });
    }
    Ok(out)
}

/// Finds which unused stored code `normalized` is. Every candidate is hashed and compared in
/// constant time.
pub fn find(normalized: &str, unused: &[StoredCode]) -> Option<i64> {
    let mut found = None;
    for code in unused {
        let candidate = digest(&code.salt, normalized);
        if bool::from(candidate.ct_eq(&code.hash)) {
            found = Some(code.id);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_has_ten_distinct_codes_that_each_match_only_themselves() {
        let (shown, mut stored) = generate_set().expect("random");
        assert_eq!(shown.len(), CODES_PER_SET);
        for (i, s) in stored.iter_mut().enumerate() {
            s.id = i as i64 + 1;
        }
        for (i, code) in shown.iter().enumerate() {
            assert_eq!(code.len(), 19);
            let n = normalize(code).expect("well-formed");
            assert_eq!(find(&n, &stored), Some(i as i64 + 1));
            // Case, dashes and spaces are forgiven.
            let sloppy = code.to_uppercase().replace('-', " ");
            assert_eq!(
                find(&normalize(&sloppy).expect("ok"), &stored),
                Some(i as i64 + 1)
            );
        }
        let unique: std::collections::HashSet<_> = shown.iter().map(|s| s.to_string()).collect();
        assert_eq!(unique.len(), CODES_PER_SET);
    }

    #[test]
    fn imported_scratch_codes_match() {
        let mut stored = store_imported(&["12345678".into(), "87654321".into()]).expect("valid");
        stored[0].id = 1;
        stored[1].id = 2;
        assert_eq!(
            find(&normalize("87654321").expect("shape"), &stored),
            Some(2)
        );
        assert_eq!(find(&normalize("87654320").expect("shape"), &stored), None);
        assert!(store_imported(&["1234".into()]).is_err());
    }

    #[test]
    fn near_misses_and_junk_do_not_match() {
        let (shown, mut stored) = generate_set().expect("random");
        stored[0].id = 1;
        let mut wrong = shown[0].to_string();
        let last = wrong.pop().expect("non-empty");
        wrong.push(if last == 'a' { 'b' } else { 'a' });
        assert_eq!(
            find(&normalize(&wrong).expect("shape ok"), &stored[..1]),
            None
        );
        for junk in [
            "",
            "123456",
            "abcd-efgh",
            &"a".repeat(100),
            "abcd-efgh-ijkl-mno1",
        ] {
            assert!(normalize(junk).is_none(), "{junk}");
        }
        assert!(!format!("{:?}", stored[0]).contains("hash"));
    }
}
