//! Reading pam_u2f's authfile (`~/.config/Yubico/u2f_keys`, or a central file named by its
//! `authfile=` argument) so that security keys registered with `pamu2fcfg` keep working.
//!
//! The format, as pam_u2f reads it (`util.c`) and `pamu2fcfg` writes it:
//!
//! ```text
//! USER:KEYHANDLE,PUBLICKEY,TYPE,OPTIONS:KEYHANDLE,PUBLICKEY,TYPE,OPTIONS:...
//! ```
//!
//! - Since pam_u2f 1.1 (libfido2): the key handle is the credential id in standard base64, the
//!   public key is standard base64 of libfido2's raw form (ES256: `x || y`, 64 bytes; EdDSA: the
//!   32-byte point), TYPE is `es256`, `eddsa` or `rs256`, and OPTIONS is any of `+presence`,
//!   `+verification`, `+pin` run together (possibly empty). These credentials were registered
//!   for pam_u2f's `origin`.
//! - Before 1.1 (libu2f-server), only `KEYHANDLE,PUBLICKEY`: the key handle in web-safe base64
//!   without padding, the public key as hex of the uncompressed P-256 point (65 bytes). These
//!   are U2F registrations for pam_u2f's `appid` (which defaults to the origin).
//! - A key handle of `*` is a resident credential: the file does not hold its id.
//!
//! The authfile has no origin or appid: those are module arguments (default `pam://HOSTNAME`),
//! so the caller supplies them. pam_u2f itself has no comment syntax; lines starting with `#`
//! never match a user there, and are skipped here.
//!
//! Nothing in the file is secret (key handles and public keys), but messages still name only
//! the line, the user and the credential's position (and a short quote of a bad type or option
//! field), never a key handle or a key.
#![forbid(unsafe_code)]

use std::collections::HashMap;

use p256::elliptic_curve::sec1::ToSec1Point;
use twofactor_bus::KeyImport;

use crate::import::ImportError;

/// Longest credential id accepted (WebAuthn: at most 1023 bytes).
pub const MAX_CREDENTIAL_ID_LEN: usize = 1023;
/// Most credentials one user may bring: as many keys as the daemon lets a user hold.
pub const MAX_CREDENTIALS_PER_USER: usize = twofactor_bus::MAX_KEYS_PER_USER;
/// Longest user name accepted (the daemon's limit).
const MAX_USER_LEN: usize = 256;

/// The signature algorithm of an imported credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// ECDSA on P-256 with SHA-256 (pam_u2f `es256`, and every old-format line).
    Es256,
    /// Ed25519 (pam_u2f `eddsa`).
    EdDsa,
}

impl Algorithm {
    /// The name shown to admins.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::EdDsa => "EdDSA",
        }
    }
}

/// One credential from an authfile line, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct U2fCredential {
    /// Its line in the file (1-based).
    pub line: usize,
    /// Its place on that line (1-based), as pam_u2f numbers devices.
    pub position: usize,
    /// The credential id (pam_u2f: the key handle).
    pub credential_id: Vec<u8>,
    /// The public key as a COSE_Key.
    pub public_key_cose: Vec<u8>,
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// An old-format (pre-1.1, U2F) line: registered for pam_u2f's appid, not its origin.
    pub legacy: bool,
    /// `+presence`: pam_u2f asked for a touch.
    pub presence: bool,
    /// `+verification` or `+pin`: pam_u2f asked for the PIN or built-in user verification.
    pub user_verification: bool,
}

/// A user's line of an authfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct U2fUser {
    /// The login name.
    pub name: String,
    /// The line it is on (1-based).
    pub line: usize,
    /// Its credentials, in the file's order.
    pub credentials: Vec<U2fCredential>,
}

impl U2fUser {
    /// What to send to `Admin.ImportKeys`: keys named `pam_u2f-1`, `pam_u2f-2`, … in the file's
    /// order; new-format credentials for `origin`, old-format ones for `appid`.
    pub fn key_imports(&self, origin: &str, appid: &str) -> Vec<KeyImport> {
        self.credentials
            .iter()
            .map(|c| KeyImport {
                name: key_name(c.position),
                rp_id: if c.legacy { appid } else { origin }.to_string(),
                credential_id: c.credential_id.clone(),
                public_key_cose: c.public_key_cose.clone(),
                user_verification: c.user_verification,
            })
            .collect()
    }
}

/// The name an imported credential gets: where it came from, and its place on the line.
pub fn key_name(position: usize) -> String {
    format!("pam_u2f-{position}")
}

fn err(line: usize, message: impl Into<String>) -> ImportError {
    ImportError {
        line: Some(line),
        message: message.into(),
    }
}

/// Who owns the authfile (from `fstat` of the opened file), which decides whose lines it may
/// hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOwner<'a> {
    /// Root: a central file, which may hold any user's line.
    Root,
    /// A user (their account name): their own file may hold only their own line. Otherwise a
    /// user could write `victim:<their own credential>` into it and, once root imports it, log
    /// in as the victim with their own key.
    User(&'a str),
}

/// Parses a whole authfile. Every bad line is reported (all of them, in order), so that one
/// run shows everything to fix; any error means nothing may be imported. In a file owned by a
/// user, every line for somebody else is such an error.
pub fn parse_authfile(text: &str, owner: FileOwner<'_>) -> Result<Vec<U2fUser>, Vec<ImportError>> {
    let mut users: Vec<U2fUser> = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        // pam_u2f strips only the newline; a CR from a file edited elsewhere is dropped too.
        let line = raw.trim_end_matches(['\r', '\n']);
        let content = line.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        if let FileOwner::User(owner) = owner
            && let Some((name, _)) = line.split_once(':')
            && !name.is_empty()
            && name != owner
        {
            errors.push(err(
                n,
                format!(
                    "a line for user {} in a file owned by {owner}: a user's own file may hold \
                     only that user's keys (other users' lines belong in a root-owned file)",
                    shown(name)
                ),
            ));
            continue;
        }
        match parse_line(n, line) {
            Ok(user) => {
                if let Some(first) = seen.get(&user.name) {
                    errors.push(err(
                        n,
                        format!(
                            "user {} already has a line (line {first}); pam_u2f reads only \
                             the last one: remove the other",
                            user.name
                        ),
                    ));
                    continue;
                }
                seen.insert(user.name.clone(), n);
                users.push(user);
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(users)
    } else {
        Err(errors)
    }
}

/// Keeps the users to import (all, or only `only`) and checks that no credential is claimed
/// twice among them: the daemon keeps each credential for one user.
pub fn select_users(
    users: Vec<U2fUser>,
    only: Option<&str>,
) -> Result<Vec<U2fUser>, Vec<ImportError>> {
    let users: Vec<U2fUser> = match only {
        Some(name) => users.into_iter().filter(|u| u.name == name).collect(),
        None => users,
    };
    if users.is_empty() {
        return Err(vec![ImportError {
            line: None,
            message: match only {
                Some(name) => format!("no line for user {name}"),
                None => "no user has a credential in the file".into(),
            },
        }]);
    }
    let mut errors = Vec::new();
    let mut owners: HashMap<&[u8], (&str, usize)> = HashMap::new();
    for u in &users {
        for c in &u.credentials {
            if let Some((owner, line)) = owners.get(c.credential_id.as_slice()) {
                errors.push(err(
                    c.line,
                    format!(
                        "credential {}: the same key handle is user {owner}'s on line {line}; \
                         a key can be imported for one user only",
                        c.position
                    ),
                ));
            } else {
                owners.insert(&c.credential_id, (&u.name, c.line));
            }
        }
    }
    if errors.is_empty() {
        Ok(users)
    } else {
        Err(errors)
    }
}

fn parse_line(n: usize, line: &str) -> Result<U2fUser, ImportError> {
    let Some((name, rest)) = line.split_once(':') else {
        return Err(err(
            n,
            "no ':' after the user name (expected USER:KEYHANDLE,PUBLICKEY,TYPE,OPTIONS:...)",
        ));
    };
    if name.is_empty() {
        return Err(err(
            n,
            "the line starts with ':' and names no user (output of `pamu2fcfg -n` meant to be \
             appended to a user's line?)",
        ));
    }
    if name.len() > MAX_USER_LEN || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err(
            n,
            format!(
                "the user name is not a login name (at most {MAX_USER_LEN} bytes, no spaces or \
                 control characters)"
            ),
        ));
    }
    let mut credentials = Vec::new();
    // pam_u2f splits with strtok: empty fields between colons are skipped.
    for (i, field) in rest.split(':').filter(|f| !f.is_empty()).enumerate() {
        let position = i + 1;
        if position > MAX_CREDENTIALS_PER_USER {
            return Err(err(
                n,
                format!(
                    "user {name} has more than {MAX_CREDENTIALS_PER_USER} credentials; \
                     a user may hold at most {MAX_CREDENTIALS_PER_USER} security keys"
                ),
            ));
        }
        let credential = parse_credential(n, position, field)
            .map_err(|m| err(n, format!("user {name}, credential {position}: {m}")))?;
        if let Some(other) = credentials
            .iter()
            .find(|c: &&U2fCredential| c.credential_id == credential.credential_id)
        {
            return Err(err(
                n,
                format!(
                    "user {name}, credential {position}: the same key handle as credential {}",
                    other.position
                ),
            ));
        }
        credentials.push(credential);
    }
    if credentials.is_empty() {
        return Err(err(
            n,
            format!("user {name} has no credential after the ':'"),
        ));
    }
    Ok(U2fUser {
        name: name.to_string(),
        line: n,
        credentials,
    })
}

/// What the options field asks for.
struct Options {
    presence: bool,
    user_verification: bool,
}

fn parse_options(s: &str) -> Result<Options, String> {
    let mut o = Options {
        presence: false,
        user_verification: false,
    };
    if s.is_empty() {
        return Ok(o);
    }
    let Some(rest) = s.strip_prefix('+') else {
        return Err(
            "the options are not of the form +presence+verification+pin (each optional)".into(),
        );
    };
    for word in rest.split('+') {
        match word {
            "presence" => o.presence = true,
            "verification" | "pin" => o.user_verification = true,
            _ => {
                return Err(format!(
                    "unknown option {} (pam_u2f writes +presence, +verification and +pin)",
                    shown(&format!("+{word}"))
                ));
            }
        }
    }
    Ok(o)
}

/// A short piece of the file quoted in a message (never a key: used for types and options).
fn shown(s: &str) -> String {
    let mut t: String = s.chars().take(24).collect();
    if t.len() < s.len() {
        t.push('…');
    }
    format!("{t:?}")
}

fn parse_credential(n: usize, position: usize, field: &str) -> Result<U2fCredential, String> {
    let mut parts: Vec<&str> = field.split(',').collect();
    // strtok again: a trailing comma (an empty options field) adds nothing.
    while parts.len() > 1 && parts.last().is_some_and(|p| p.is_empty()) {
        parts.pop();
    }
    if parts.iter().any(|p| p.is_empty()) {
        return Err("an empty field between commas".into());
    }
    let (key_handle, public_key, kind, options) = match parts.as_slice() {
        [_] => return Err("a key handle without a public key".into()),
        [kh, pk] => (*kh, *pk, None, ""),
        [kh, pk, t] => (*kh, *pk, Some(*t), ""),
        [kh, pk, t, o] => (*kh, *pk, Some(*t), *o),
        _ => {
            return Err(
                "more than four comma-separated fields (expected KEYHANDLE,PUBLICKEY,TYPE,OPTIONS)"
                    .into(),
            );
        }
    };
    if key_handle == "*" {
        return Err(
            "a resident credential (key handle *): the file does not hold its credential id, \
             so it cannot be imported; the user can enroll the key with `twofactorctl enroll key`"
                .into(),
        );
    }
    let legacy = kind.is_none();
    let credential_id = if legacy {
        decode_base64(key_handle, true).ok_or("the key handle is not web-safe base64")?
    } else {
        decode_base64(key_handle, false).ok_or("the key handle is not base64")?
    };
    if credential_id.is_empty() {
        return Err("the key handle is empty".into());
    }
    if credential_id.len() > MAX_CREDENTIAL_ID_LEN {
        return Err(format!(
            "the key handle is {} bytes; credential ids are at most {MAX_CREDENTIAL_ID_LEN}",
            credential_id.len()
        ));
    }
    let (algorithm, public_key_cose, opts) = match kind {
        None => {
            // Old format: hex of a SEC1 point; pam_u2f hands it to OpenSSL's oct2point.
            let sec1 = decode_hex(public_key).ok_or("the public key is not hex (old format)")?;
            let cose = es256_cose(&sec1)?;
            let opts = Options {
                presence: true,
                user_verification: false,
            };
            (Algorithm::Es256, cose, opts)
        }
        Some(t) => {
            let opts = parse_options(options)?;
            let raw = decode_base64(public_key, false).ok_or("the public key is not base64")?;
            // pam_u2f compares the type case-insensitively.
            match t.to_ascii_lowercase().as_str() {
                "es256" => {
                    // libfido2's form is x || y; es256_pk_from_ptr also takes 0x04 || x || y.
                    let sec1 = match raw.len() {
                        64 => [&[0x04][..], &raw].concat(),
                        65 if raw[0] == 0x04 => raw,
                        len => {
                            return Err(format!(
                                "an ES256 public key is 64 bytes (x and y), this one is {len}"
                            ));
                        }
                    };
                    (Algorithm::Es256, es256_cose(&sec1)?, opts)
                }
                "eddsa" => (Algorithm::EdDsa, eddsa_cose(&raw)?, opts),
                "rs256" => {
                    return Err(
                        "RS256 keys are not supported; re-register the key (pamu2fcfg -t es256, \
                         or `twofactorctl enroll key`)"
                            .into(),
                    );
                }
                _ => {
                    return Err(format!(
                        "unknown key type {} (pam_u2f knows es256, eddsa and rs256)",
                        shown(t)
                    ));
                }
            }
        }
    };
    Ok(U2fCredential {
        line: n,
        position,
        credential_id,
        public_key_cose,
        algorithm,
        legacy,
        presence: opts.presence,
        user_verification: opts.user_verification,
    })
}

/// COSE_Key of a P-256 point given in SEC1 form, after checking it is on the curve:
/// `{1: 2 (EC2), 3: -7 (ES256), -1: 1 (P-256), -2: x, -3: y}`, in CTAP2 canonical order.
fn es256_cose(sec1: &[u8]) -> Result<Vec<u8>, String> {
    let key = p256::PublicKey::from_sec1_bytes(sec1)
        .map_err(|_| "the public key is not a point on P-256".to_string())?;
    let point = key.to_sec1_point(false);
    let (Some(x), Some(y)) = (point.x(), point.y()) else {
        return Err("the public key is not a point on P-256".into());
    };
    let mut out = Vec::with_capacity(77);
    out.extend_from_slice(&[0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21, 0x58, 0x20]);
    out.extend_from_slice(x);
    out.extend_from_slice(&[0x22, 0x58, 0x20]);
    out.extend_from_slice(y);
    Ok(out)
}

/// COSE_Key of an Ed25519 point, after checking it decodes and is not of small order:
/// `{1: 1 (OKP), 3: -8 (EdDSA), -1: 6 (Ed25519), -2: x}`.
fn eddsa_cose(raw: &[u8]) -> Result<Vec<u8>, String> {
    let bytes: &[u8; 32] = raw
        .try_into()
        .map_err(|_| format!("an EdDSA public key is 32 bytes, this one is {}", raw.len()))?;
    match ed25519_dalek::VerifyingKey::from_bytes(bytes) {
        Ok(k) if !k.is_weak() => {}
        _ => return Err("the public key is not a valid Ed25519 point".into()),
    }
    let mut out = Vec::with_capacity(42);
    out.extend_from_slice(&[0xa4, 0x01, 0x01, 0x03, 0x27, 0x20, 0x06, 0x21, 0x58, 0x20]);
    out.extend_from_slice(bytes);
    Ok(out)
}

/// Base64 with optional padding. `web_safe` also takes `-` and `_` (pam_u2f turns old-format
/// key handles into standard base64 by swapping those, so both alphabets work there).
fn decode_base64(s: &str, web_safe: bool) -> Option<Vec<u8>> {
    let body = s.trim_end_matches('=');
    let padding = s.len() - body.len();
    if padding > 2 || (padding > 0 && !s.len().is_multiple_of(4)) || body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for b in body.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'-' if web_safe => 62,
            b'_' if web_safe => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "pam://host.example.org";

    /// Standard base64 with padding, as pamu2fcfg writes (OpenSSL's BIO, no newlines).
    fn b64(data: &[u8]) -> String {
        const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    s.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }

    /// Web-safe base64 without padding, as libu2f-server wrote old key handles.
    fn websafe(data: &[u8]) -> String {
        b64(data)
            .trim_end_matches('=')
            .replace('+', "-")
            .replace('/', "_")
    }

    fn hex(data: &[u8]) -> String {
        data.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A P-256 key pair's public point, uncompressed (65 bytes, 0x04 || x || y).
    fn p256_point(seed: u8) -> Vec<u8> {
        let secret = p256::SecretKey::from_slice(&[seed; 32]).expect("valid scalar");
        secret.public_key().to_sec1_point(false).as_bytes().to_vec()
    }

    fn ed25519_point(seed: u8) -> [u8; 32] {
        ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
            .verifying_key()
            .to_bytes()
    }

    /// A credential id like a YubiKey's for a non-resident credential (64 bytes, with + and /
    /// in its base64 so the alphabets are exercised).
    fn cred_id(seed: u8) -> Vec<u8> {
        (0..64u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(seed) | 0x80)
            .collect()
    }

    /// `pamu2fcfg` output for an ES256 credential: `:KH,PK,es256,OPTIONS`.
    fn es256_field(seed: u8, options: &str) -> String {
        format!(
            "{},{},es256,{options}",
            b64(&cred_id(seed)),
            b64(&p256_point(seed)[1..])
        )
    }

    fn eddsa_field(seed: u8, options: &str) -> String {
        format!(
            "{},{},eddsa,{options}",
            b64(&cred_id(seed)),
            b64(&ed25519_point(seed))
        )
    }

    fn legacy_field(seed: u8) -> String {
        format!("{},{}", websafe(&cred_id(seed)), hex(&p256_point(seed)))
    }

    /// Decodes a COSE_Key with minicbor into (label, value) pairs: ints, or byte strings.
    fn cose_entries(cose: &[u8]) -> Vec<(i64, Result<i64, Vec<u8>>)> {
        let mut d = minicbor::Decoder::new(cose);
        let n = d.map().expect("map").expect("definite");
        let mut out = Vec::new();
        for _ in 0..n {
            let label = d.i64().expect("int label");
            let value = match d.datatype().expect("type") {
                minicbor::data::Type::Bytes => Err(d.bytes().expect("bytes").to_vec()),
                _ => Ok(d.i64().expect("int value")),
            };
            out.push((label, value));
        }
        assert_eq!(d.position(), cose.len(), "trailing bytes");
        out
    }

    fn errors_of(text: &str) -> Vec<ImportError> {
        parse_authfile(text, FileOwner::Root).expect_err("refused")
    }

    fn one_error(text: &str) -> ImportError {
        let mut e = errors_of(text);
        assert_eq!(e.len(), 1, "{e:?}");
        e.remove(0)
    }

    #[test]
    fn a_pamu2fcfg_es256_line_becomes_a_cose_key_on_the_same_point() {
        let text = format!("alice:{}", es256_field(1, "+presence"));
        let users = parse_authfile(&text, FileOwner::Root).expect("valid");
        assert_eq!(users.len(), 1);
        let u = &users[0];
        assert_eq!((u.name.as_str(), u.line), ("alice", 1));
        let c = &u.credentials[0];
        assert_eq!(c.credential_id, cred_id(1));
        assert_eq!(c.algorithm, Algorithm::Es256);
        assert!(c.presence && !c.user_verification && !c.legacy);
        assert_eq!(c.public_key_cose.len(), 77);
        let point = p256_point(1);
        assert_eq!(
            cose_entries(&c.public_key_cose),
            vec![
                (1, Ok(2)),
                (3, Ok(-7)),
                (-1, Ok(1)),
                (-2, Err(point[1..33].to_vec())),
                (-3, Err(point[33..].to_vec())),
            ]
        );
    }

    #[test]
    fn an_eddsa_line_becomes_an_okp_cose_key() {
        let text = format!("alice:{}", eddsa_field(2, "+presence+pin"));
        let c = &parse_authfile(&text, FileOwner::Root).expect("valid")[0].credentials[0];
        assert_eq!(c.algorithm, Algorithm::EdDsa);
        assert!(c.presence && c.user_verification);
        assert_eq!(c.public_key_cose.len(), 42);
        assert_eq!(
            cose_entries(&c.public_key_cose),
            vec![
                (1, Ok(1)),
                (3, Ok(-8)),
                (-1, Ok(6)),
                (-2, Err(ed25519_point(2).to_vec())),
            ]
        );
    }

    #[test]
    fn options_map_to_presence_and_user_verification() {
        for (options, presence, uv) in [
            ("+presence", true, false),
            ("", false, false),
            ("+presence+verification", true, true),
            ("+verification+pin", false, true),
            ("+pin", false, true),
            ("+presence+verification+pin", true, true),
        ] {
            let text = format!("alice:{}", es256_field(3, options));
            let c = &parse_authfile(&text, FileOwner::Root).expect(options)[0].credentials[0];
            assert_eq!(
                (c.presence, c.user_verification),
                (presence, uv),
                "{options}"
            );
        }
        // Options missing altogether (three fields) are empty options, as in pam_u2f.
        let three = format!(
            "alice:{},{},ES256",
            b64(&cred_id(3)),
            b64(&p256_point(3)[1..])
        );
        let c = &parse_authfile(&three, FileOwner::Root).expect("three fields")[0].credentials[0];
        assert!(!c.presence && !c.user_verification);
    }

    #[test]
    fn a_65_byte_uncompressed_es256_key_is_taken_too() {
        let text = format!(
            "alice:{},{},es256,+presence",
            b64(&cred_id(4)),
            b64(&p256_point(4))
        );
        let c = &parse_authfile(&text, FileOwner::Root).expect("valid")[0].credentials[0];
        assert_eq!(
            cose_entries(&c.public_key_cose)[3].1,
            Err(p256_point(4)[1..33].to_vec())
        );
    }

    #[test]
    fn old_format_lines_are_es256_with_presence_for_the_appid() {
        let text = format!("bob:{}\n", legacy_field(5));
        let users = parse_authfile(&text, FileOwner::Root).expect("valid");
        let c = &users[0].credentials[0];
        assert!(c.legacy && c.presence && !c.user_verification);
        assert_eq!(c.credential_id, cred_id(5));
        let point = p256_point(5);
        assert_eq!(
            cose_entries(&c.public_key_cose)[4].1,
            Err(point[33..].to_vec())
        );
        let keys = users[0].key_imports(ORIGIN, "https://appid.example.org");
        assert_eq!(keys[0].rp_id, "https://appid.example.org");
        // A compressed point (which OpenSSL's oct2point also takes) gives the same key.
        let secret = p256::SecretKey::from_slice(&[5; 32]).expect("scalar");
        let compressed = secret.public_key().to_sec1_point(true).as_bytes().to_vec();
        let text = format!("bob:{},{}", websafe(&cred_id(5)), hex(&compressed));
        let again = &parse_authfile(&text, FileOwner::Root).expect("compressed")[0].credentials[0];
        assert_eq!(again.public_key_cose, c.public_key_cose);
    }

    #[test]
    fn a_multi_user_file_with_comments_and_mixed_formats() {
        let text = format!(
            "# central authfile\n\
             \n\
             alice:{}:{}\r\n\
             \x20\x20# an indented comment\n\
             bob:{}::{}:\n\
             carol:{}\n",
            es256_field(10, "+presence"),
            eddsa_field(11, "+presence+verification"),
            legacy_field(12),
            es256_field(13, ""),
            es256_field(14, "+presence"),
        );
        let users = parse_authfile(&text, FileOwner::Root).expect("valid");
        let names: Vec<(&str, usize, usize)> = users
            .iter()
            .map(|u| (u.name.as_str(), u.line, u.credentials.len()))
            .collect();
        assert_eq!(names, [("alice", 3, 2), ("bob", 5, 2), ("carol", 6, 1)]);
        let keys = users[1].key_imports(ORIGIN, "pam://appid");
        let summary: Vec<(&str, &str, bool)> = keys
            .iter()
            .map(|k| (k.name.as_str(), k.rp_id.as_str(), k.user_verification))
            .collect();
        assert_eq!(
            summary,
            [
                ("pam_u2f-1", "pam://appid", false),
                ("pam_u2f-2", ORIGIN, false)
            ]
        );
        let alice = users[0].key_imports(ORIGIN, ORIGIN);
        assert_eq!(alice[1].name, "pam_u2f-2");
        assert!(alice[1].user_verification);
        assert_eq!(
            alice[1].public_key_cose,
            users[0].credentials[1].public_key_cose
        );
        assert_eq!(alice[1].credential_id, cred_id(11));
    }

    #[test]
    fn user_selection_keeps_one_user_or_says_it_is_missing() {
        let text = format!(
            "alice:{}\nbob:{}\n",
            es256_field(20, "+presence"),
            es256_field(21, "+presence")
        );
        let users = parse_authfile(&text, FileOwner::Root).expect("valid");
        let bob = select_users(users.clone(), Some("bob")).expect("bob");
        assert_eq!(bob.len(), 1);
        assert_eq!(bob[0].name, "bob");
        assert_eq!(select_users(users.clone(), None).expect("all").len(), 2);
        let e = select_users(users, Some("carol")).expect_err("no carol");
        assert_eq!(e[0].line, None);
        assert!(e[0].message.contains("no line for user carol"), "{e:?}");
        let e = select_users(
            parse_authfile("# nothing\n\n", FileOwner::Root).expect("empty"),
            None,
        )
        .expect_err("nothing");
        assert!(e[0].message.contains("no user"), "{e:?}");
    }

    #[test]
    fn a_users_own_file_may_hold_only_that_users_line() {
        let alice = format!("alice:{}\n", es256_field(40, "+presence"));
        let planted = format!("# mine\n{alice}bob:{}\n", es256_field(41, "+presence"));
        // Owned by alice: her line only; bob's is refused with its line, nothing comes back.
        let users = parse_authfile(&alice, FileOwner::User("alice")).expect("her own line");
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].name, "alice");
        let e = parse_authfile(&planted, FileOwner::User("alice")).expect_err("planted");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].line, Some(3));
        assert!(
            e[0].message
                .contains("user \"bob\" in a file owned by alice"),
            "{e:?}"
        );
        // A line only for someone else: refused even if it is the only line.
        let e = parse_authfile(
            &format!("bob:{}\n", es256_field(41, "+presence")),
            FileOwner::User("alice"),
        )
        .expect_err("foreign");
        assert_eq!(e[0].line, Some(1));
        // Root's file may hold anyone's lines.
        assert_eq!(
            parse_authfile(&planted, FileOwner::Root)
                .expect("central")
                .len(),
            2
        );
        // A name that only starts like the owner's is somebody else.
        let e = parse_authfile(
            &format!("alice2:{}\n", es256_field(42, "")),
            FileOwner::User("alice"),
        )
        .expect_err("prefix");
        assert!(e[0].message.contains("\"alice2\""), "{e:?}");
        // Bad lines and foreign lines are all listed.
        let e = parse_authfile(
            &format!("{alice}bob:{}\nalice:junk\n", es256_field(43, "")),
            FileOwner::User("alice"),
        )
        .expect_err("two problems");
        let lines: Vec<_> = e.iter().map(|e| e.line).collect();
        assert_eq!(lines, [Some(2), Some(3)], "{e:?}");
    }

    #[test]
    fn a_key_handle_shared_by_two_users_is_refused_unless_one_is_selected() {
        let text = format!(
            "alice:{}\nbob:{}\n",
            es256_field(30, "+presence"),
            es256_field(30, "+presence")
        );
        let users = parse_authfile(&text, FileOwner::Root).expect("each line is fine");
        let e = select_users(users.clone(), None).expect_err("shared");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, Some(2));
        assert!(e[0].message.contains("user alice's on line 1"), "{e:?}");
        assert!(select_users(users, Some("bob")).is_ok());
    }

    #[test]
    fn every_refusal_names_its_line() {
        let good = es256_field(40, "+presence");
        let kh = b64(&cred_id(40));
        let pk = b64(&p256_point(40)[1..]);
        let ed = b64(&ed25519_point(40));
        let not_on_curve = b64(&[7u8; 64]);
        let rsa = b64(&[1u8; 259]);
        let long_id = b64(&[9u8; 1024]);
        let web_safe_kh = websafe(&cred_id(40));
        assert!(
            web_safe_kh.contains(['-', '_']),
            "the case below needs - or _"
        );
        let cases: Vec<(String, &str)> = vec![
            (good.clone(), "no ':' after the user name"),
            (format!(":{good}"), "names no user"),
            (format!("al ice:{good}"), "not a login name"),
            ("alice:".into(), "has no credential"),
            ("alice:::".into(), "has no credential"),
            (format!("alice:{kh}"), "a key handle without a public key"),
            (format!("alice:{kh},,es256"), "empty field"),
            (
                format!("alice:{kh},{pk},es256,+presence,x"),
                "more than four",
            ),
            (
                format!("alice:*,{pk},es256,+presence"),
                "resident credential",
            ),
            (
                format!("alice:{kh},{rsa},rs256,+presence"),
                "RS256 keys are not supported; re-register the key",
            ),
            (
                format!("alice:{kh},{pk},es384,+presence"),
                "unknown key type \"es384\"",
            ),
            (format!("alice:{kh},{pk},es256,presence"), "not of the form"),
            (
                format!("alice:{kh},{pk},es256,+presense"),
                "unknown option \"+presense\"",
            ),
            (
                format!("alice:{kh},{pk},es256,+presence+"),
                "unknown option \"+\"",
            ),
            (
                format!("alice:{}!,{pk},es256,", &kh[..86]),
                "key handle is not base64",
            ),
            (
                format!("alice:{web_safe_kh},{pk},es256,"),
                "key handle is not base64",
            ),
            (format!("alice:=,{pk},es256,"), "key handle is not base64"),
            (
                format!("alice:{long_id},{pk},es256,"),
                "1024 bytes; credential ids are at most 1023",
            ),
            (
                format!("alice:{kh},{pk}x,es256,"),
                "public key is not base64",
            ),
            (
                format!("alice:{kh},{not_on_curve},es256,"),
                "not a point on P-256",
            ),
            (
                format!("alice:{kh},{},es256,", b64(&[4u8; 33])),
                "64 bytes (x and y), this one is 33",
            ),
            (format!("alice:{kh},{ed},eddsa,+presence"), "__ok__"),
            (
                format!("alice:{kh},{},eddsa,", b64(&[1u8; 31])),
                "32 bytes, this one is 31",
            ),
            // The identity (a small-order point) is refused, like the daemon's strict check.
            (
                format!(
                    "alice:{kh},{},eddsa,",
                    b64(&{
                        let mut p = [0u8; 32];
                        p[0] = 1;
                        p
                    })
                ),
                "not a valid Ed25519 point",
            ),
            (
                format!("alice:{},{}", websafe(&cred_id(40)), "04zz"),
                "not hex",
            ),
            (
                format!("alice:{},{}", websafe(&cred_id(40)), hex(&[4u8; 65])),
                "not a point on P-256",
            ),
            (
                format!("alice:{good}:{good}"),
                "the same key handle as credential 1",
            ),
        ];
        for (line, needle) in &cases {
            // Each bad line sits after a comment and a good user, so its line number is 3.
            let text = format!("# keys\nbob:{}\n{line}\n", es256_field(41, "+presence"));
            if *needle == "__ok__" {
                assert!(parse_authfile(&text, FileOwner::Root).is_ok(), "{line}");
                continue;
            }
            let e = one_error(&text);
            assert_eq!(e.line, Some(3), "{line}: {e}");
            assert!(e.message.contains(needle), "{line}: {e}");
            // Messages never quote key material.
            for secretish in [&kh[..20], &pk[..20], &ed[..20]] {
                assert!(!e.message.contains(secretish), "{e}");
            }
        }
    }

    #[test]
    fn credential_positions_are_named_in_messages() {
        let text = format!(
            "alice:{}:{},{},rs256,",
            es256_field(50, ""),
            b64(&cred_id(51)),
            b64(&[1u8; 259])
        );
        let e = one_error(&text);
        assert!(
            e.message.starts_with("user alice, credential 2: RS256"),
            "{e}"
        );
        assert_eq!(e.to_string(), format!("line 1: {}", e.message));
    }

    #[test]
    fn a_second_line_for_a_user_is_refused_and_all_bad_lines_are_reported() {
        let text = format!(
            "alice:{}\nbob:nonsense\nalice:{}\ncarol:*,x,es256,\n",
            es256_field(60, "+presence"),
            es256_field(61, "+presence")
        );
        let e = errors_of(&text);
        let lines: Vec<Option<usize>> = e.iter().map(|e| e.line).collect();
        assert_eq!(lines, [Some(2), Some(3), Some(4)], "{e:?}");
        assert!(
            e[1].message.contains("already has a line (line 1)"),
            "{e:?}"
        );
    }

    #[test]
    fn too_many_credentials_are_refused() {
        let fields: Vec<String> = (0..=MAX_CREDENTIALS_PER_USER as u8)
            .map(|i| es256_field(100 + i, "+presence"))
            .collect();
        let e = one_error(&format!("alice:{}", fields.join(":")));
        assert!(
            e.message
                .contains(&format!("more than {MAX_CREDENTIALS_PER_USER} credentials")),
            "{e}"
        );
        let ok = format!("alice:{}", fields[..MAX_CREDENTIALS_PER_USER].join(":"));
        assert_eq!(
            parse_authfile(&ok, FileOwner::Root).expect("the limit is fine")[0]
                .credentials
                .len(),
            MAX_CREDENTIALS_PER_USER
        );
    }

    #[test]
    fn base64_and_hex_decoders() {
        assert_eq!(decode_base64("", false), Some(vec![]));
        assert_eq!(decode_base64("Zg==", false), Some(b"f".to_vec()));
        assert_eq!(decode_base64("Zg", false), Some(b"f".to_vec()));
        assert_eq!(decode_base64("Zm9v", false), Some(b"foo".to_vec()));
        assert_eq!(
            decode_base64("Zm9vYg=", false),
            None,
            "padding to no boundary"
        );
        assert_eq!(
            decode_base64("Zm9vY", false),
            None,
            "one character left over"
        );
        assert_eq!(decode_base64("Z===", false), None);
        assert_eq!(decode_base64("-_-_", false), None);
        assert_eq!(decode_base64("-_-_", true), Some(vec![0xfb, 0xff, 0xbf]));
        assert_eq!(decode_base64("+/+/", true), Some(vec![0xfb, 0xff, 0xbf]));
        for len in 0..70u8 {
            let data: Vec<u8> = (0..len).map(|i| i.wrapping_mul(97)).collect();
            assert_eq!(decode_base64(&b64(&data), false), Some(data.clone()));
            assert_eq!(decode_base64(&websafe(&data), true), Some(data));
        }
        assert_eq!(decode_hex("00ff7A"), Some(vec![0, 255, 0x7a]));
        assert_eq!(decode_hex("0"), None);
        assert_eq!(decode_hex("+1"), None);
    }
}
