//! Secrets sealed at rest: an AEAD (XChaCha20-Poly1305) under a 32-byte key that lives outside
//! the state (a root-only key file, or a systemd credential), bound to the user and the factor
//! so that a sealed row cannot be moved to another user or factor: a dump or a backup of the
//! state alone holds no secret in clear.
//!
//! Every backend seals what would let someone log in (TOTP secrets, pending or active) with
//! [`SealingKey::seal`] before it writes, and opens it with [`SealingKey::open`] after it reads.
//! A sealed value starts with [`MAGIC`]; anything else is a plain (legacy) value, which a store
//! opened with a key seals in place.
#![forbid(unsafe_code)]

use std::fmt;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use super::{StoreError, StoreResult};

/// The first bytes of a sealed value (format 1: magic, 24-byte nonce, ciphertext and tag).
pub const MAGIC: &[u8; 4] = b"TFS1";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Key length in bytes.
pub const KEY_LEN: usize = 32;

/// What a sealed value is bound to: the account (by name, as fleet hosts share it) and the
/// factor (e.g. `totp`, or `pending-totp` with its enrollment id).
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    /// The account name.
    pub user: &'a str,
    /// Which secret of the account.
    pub factor: &'a str,
}

impl Binding<'_> {
    fn aad(&self) -> Vec<u8> {
        // Lengths first, so that no (user, factor) pair can pose as another.
        let mut aad = b"twofactor-seal-v1\0".to_vec();
        for part in [self.user, self.factor] {
            aad.extend_from_slice(&(part.len() as u64).to_be_bytes());
            aad.extend_from_slice(part.as_bytes());
        }
        aad
    }
}

/// The key that seals secrets. Never printed; zeroized on drop.
#[derive(Clone)]
pub struct SealingKey(Zeroizing<[u8; KEY_LEN]>);

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealingKey(<redacted>)")
    }
}

/// Whether `value` is in the sealed format.
pub fn is_sealed(value: &[u8]) -> bool {
    value.len() >= MAGIC.len() + NONCE_LEN + TAG_LEN && value.starts_with(MAGIC)
}

impl SealingKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> SealingKey {
        SealingKey(Zeroizing::new(bytes))
    }

    /// A fresh random key.
    pub fn generate() -> StoreResult<SealingKey> {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(k.as_mut())
            .map_err(|e| StoreError(format!("no randomness for a new key: {e}")))?;
        Ok(SealingKey(k))
    }

    /// The key as the key file holds it: 64 hexadecimal digits and a newline.
    pub fn to_file_text(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::with_capacity(2 * KEY_LEN + 1));
        for b in self.0.iter() {
            s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        s.push('\n');
        s
    }

    /// Reads a key file: 32 raw bytes, or 64 hexadecimal digits (a trailing newline allowed).
    /// The file must be a regular file (not followed through a symbolic link) owned by root or
    /// by the daemon's own uid, and readable by nobody else: anything else is refused, since a
    /// key others can read or replace seals nothing. A systemd credential (`LoadCredential=`)
    /// passes these checks as systemd makes it.
    pub fn from_file(path: &Path) -> StoreResult<SealingKey> {
        Self::read_checked(path, 0o077)
    }

    /// Reads a key that systemd passed as a credential (`LoadCredential=`, or
    /// `LoadCredentialEncrypted=` after it decrypted it): `$CREDENTIALS_DIRECTORY/store.key`.
    /// The checks of [`SealingKey::from_file`], except one: systemd gives the service's user
    /// read access to a root-owned 0400 file through an ACL where the file system has ACLs,
    /// and an ACL's mask shows as the group bits (0440). The directory is the service's own
    /// (mode 0500, in a private mount), so a group-readable credential is accepted; one that
    /// others can read, or anyone but its owner can write, is still refused.
    pub fn from_credential(path: &Path) -> StoreResult<SealingKey> {
        Self::read_checked(path, 0o037)
    }

    fn read_checked(path: &Path, forbidden: u32) -> StoreResult<SealingKey> {
        let shown = path.display();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| StoreError(format!("cannot open the key file {shown}: {e}")))?;
        let meta = file
            .metadata()
            .map_err(|e| StoreError(format!("cannot stat the key file {shown}: {e}")))?;
        if !meta.file_type().is_file() {
            return Err(StoreError(format!(
                "the key file {shown} is not a regular file"
            )));
        }
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != 0 && meta.uid() != me {
            return Err(StoreError(format!(
                "the key file {shown} is owned by uid {}: it must be owned by root (or the \
                 daemon's user)",
                meta.uid()
            )));
        }
        if meta.mode() & forbidden != 0 {
            return Err(StoreError(format!(
                "the key file {shown} is readable or writable by others (mode {:04o}): run \
                 chmod 600 {shown}",
                meta.mode() & 0o7777
            )));
        }
        let mut raw = Zeroizing::new(Vec::with_capacity(2 * KEY_LEN + 2));
        file.take(2 * KEY_LEN as u64 + 2)
            .read_to_end(&mut raw)
            .map_err(|e| StoreError(format!("cannot read the key file {shown}: {e}")))?;
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if raw.len() == KEY_LEN {
            key.copy_from_slice(&raw);
            return Ok(SealingKey(key));
        }
        let text = raw.strip_suffix(b"\n").unwrap_or(&raw);
        let hex = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        if text.len() != 2 * KEY_LEN {
            return Err(StoreError(format!(
                "the key file {shown} must hold 32 bytes, or 64 hexadecimal digits (make one \
                 with `twofactord genkey {shown}`)"
            )));
        }
        for (i, pair) in text.chunks(2).enumerate() {
            match (hex(pair[0]), hex(pair[1])) {
                (Some(h), Some(l)) => key[i] = (h << 4) | l,
                _ => {
                    return Err(StoreError(format!(
                        "the key file {shown} holds something other than hexadecimal digits"
                    )));
                }
            }
        }
        Ok(SealingKey(key))
    }

    /// Writes a new key file at `path` (mode 0600, never over an existing file nor through a
    /// symbolic link).
    pub fn write_new_file(&self, path: &Path) -> StoreResult<()> {
        use std::io::Write;
        let shown = path.display();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| StoreError(format!("cannot create the key file {shown}: {e}")))?;
        f.write_all(self.to_file_text().as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| StoreError(format!("cannot write the key file {shown}: {e}")))
    }

    /// Seals `secret` for `binding`.
    pub fn seal(&self, secret: &[u8], binding: Binding<'_>) -> StoreResult<Vec<u8>> {
        let cipher = XChaCha20Poly1305::new(self.0.as_slice().into());
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce)
            .map_err(|e| StoreError(format!("no randomness to seal a secret: {e}")))?;
        let aad = binding.aad();
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: &aad,
                },
            )
            .map_err(|_| StoreError("cannot seal a secret".into()))?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a value sealed for `binding`. Fails (without saying more) for another key, another
    /// binding, or a value that was changed.
    pub fn open(&self, value: &[u8], binding: Binding<'_>) -> StoreResult<Zeroizing<Vec<u8>>> {
        if !is_sealed(value) {
            return Err(StoreError("a stored secret is not sealed".into()));
        }
        let (nonce, sealed) = value[MAGIC.len()..].split_at(NONCE_LEN);
        let cipher = XChaCha20Poly1305::new(self.0.as_slice().into());
        let aad = binding.aad();
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| {
                StoreError(format!(
                    "a sealed secret of {} ({}) does not open with this key: wrong key file, or \
                     the row was moved or changed",
                    binding.user, binding.factor
                ))
            })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn b<'a>(user: &'a str, factor: &'a str) -> Binding<'a> {
        Binding { user, factor }
    }

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_binding() {
        let k = SealingKey::generate().unwrap();
        let secret = b"12345678901234567890";
        let s = k.seal(secret, b("alice", "totp")).unwrap();
        assert!(is_sealed(&s));
        assert!(
            !s.windows(secret.len()).any(|w| w == secret),
            "clear text in the seal"
        );
        assert_eq!(k.open(&s, b("alice", "totp")).unwrap().as_slice(), secret);
        // Another user, another factor, another key, a changed byte: refused.
        assert!(k.open(&s, b("bob", "totp")).is_err());
        assert!(k.open(&s, b("alice", "pending-totp")).is_err());
        assert!(
            SealingKey::generate()
                .unwrap()
                .open(&s, b("alice", "totp"))
                .is_err()
        );
        let mut t = s.clone();
        let last = t.len() - 1;
        t[last] ^= 1;
        assert!(k.open(&t, b("alice", "totp")).is_err());
        // A prefix trick: ("ab", "c") is not ("a", "bc").
        let s = k.seal(secret, b("ab", "c")).unwrap();
        assert!(k.open(&s, b("a", "bc")).is_err());
        // Two seals of one secret differ (fresh nonces).
        assert_ne!(
            k.seal(secret, b("alice", "totp")).unwrap(),
            k.seal(secret, b("alice", "totp")).unwrap()
        );
        // Plain values are not taken for sealed ones.
        assert!(!is_sealed(secret));
        assert!(k.open(secret, b("alice", "totp")).is_err());
    }

    #[test]
    fn key_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.key");
        let k = SealingKey::generate().unwrap();
        k.write_new_file(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = SealingKey::from_file(&path).unwrap();
        let s = k.seal(b"x", b("u", "f")).unwrap();
        assert_eq!(again.open(&s, b("u", "f")).unwrap().as_slice(), b"x");
        // Never over an existing file.
        assert!(k.write_new_file(&path).is_err());
        // Readable by others: refused.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = SealingKey::from_file(&path).unwrap_err();
        assert!(e.0.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        // A symbolic link, a directory, /dev/zero, the wrong length, not hex: refused.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(SealingKey::from_file(&link).is_err());
        assert!(SealingKey::from_file(dir.path()).is_err());
        assert!(SealingKey::from_file(Path::new("/dev/zero")).is_err());
        for bad in ["abcd\n", &"zz".repeat(32)] {
            let p = dir.path().join("bad");
            let _ = std::fs::remove_file(&p);
            std::fs::write(&p, bad).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            assert!(SealingKey::from_file(&p).is_err(), "{bad}");
        }
        // 32 raw bytes are a key too.
        let raw = dir.path().join("raw");
        std::fs::write(&raw, [7u8; 32]).unwrap();
        std::fs::set_permissions(&raw, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(SealingKey::from_file(&raw).is_ok());
        // A credential as systemd makes it with an ACL (root, 0440 through the mask): accepted
        // as a credential only; readable or writable by others: refused even so.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440)).unwrap();
        assert!(SealingKey::from_file(&path).is_err());
        assert!(SealingKey::from_credential(&path).is_ok());
        for mode in [0o444, 0o460, 0o604] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert!(SealingKey::from_credential(&path).is_err(), "{mode:o}");
        }
        assert!(SealingKey::from_credential(&link).is_err());
        // Its Debug form says nothing.
        assert_eq!(format!("{k:?}"), "SealingKey(<redacted>)");
    }
}
