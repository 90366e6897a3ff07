//! The fleet backend: one PostgreSQL database shared by many hosts. Enroll once, log in on every
//! host; replay protection, recovery codes, key counters and lockouts hold fleet-wide because
//! every [`Store`] method is one transaction of conditional updates (the row a decision depends
//! on is locked or updated with the condition in its `WHERE`).
//!
//! Identity: rows are keyed by account name, with the uid recorded in `accounts`. A host whose
//! NSS gives another uid for a name is refused (and the refusal audited): the same name on two
//! hosts is one user only when it is the same uid.
//!
//! TOTP secrets (active and pending) are sealed with the [`SealingKey`] when one is given, bound
//! to the account name and the factor. Audit rows record the host that wrote them; [`Store::audit`]
//! returns it at the end of `detail` (`host NAME`).
//!
//! Connection: a libpq-style URL (`postgresql://USER@HOST/DB?sslmode=verify-full`, or
//! `postgresql:///DB?host=/run/postgresql` for a socket); the password from a root-only file or
//! a pgpass file, never from the URL. Connects within 3 s, statements within 5 s; the client
//! reconnects on the next call after the connection dropped. After a failed connection, calls
//! are refused without trying for [`BREAKER_HOLD`] (a breaker: an outage does not cost every
//! login the connect timeout).
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ::postgres::config::{Host, SslMode};
use ::postgres::error::SqlState;
use ::postgres::types::ToSql;
use ::postgres::{Client, Row, Statement, Transaction};
use tokio_postgres_rustls::MakeRustlsConnect;
use zeroize::Zeroizing;

use super::seal::{Binding, SealingKey, is_sealed};
use super::*;

/// 1: the first fleet schema.
pub const SCHEMA_VERSION: i32 = 1;

/// The schema the daemon's tables live in.
pub const SCHEMA_NAME: &str = "twofactor";

/// The daemon's tables (all in [`SCHEMA_NAME`]), for the privilege check.
pub const TABLES: &[&str] = &[
    "schema_version",
    "accounts",
    "users",
    "totp",
    "pending_totp",
    "recovery",
    "keys",
    "audit",
];

/// Its sequences (`USAGE` is needed to insert).
pub const SEQUENCES: &[&str] = &["recovery_id_seq", "audit_id_seq"];

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    uid BIGINT NOT NULL,
    host TEXT NOT NULL,
    created BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY REFERENCES accounts (name),
    admin_required BOOLEAN NOT NULL DEFAULT false,
    failures INTEGER NOT NULL DEFAULT 0,
    lock_level INTEGER NOT NULL DEFAULT 0,
    locked_until BIGINT NOT NULL DEFAULT 0,
    last_totp_step BIGINT,
    required_since BIGINT
);
CREATE TABLE IF NOT EXISTS totp (
    name TEXT PRIMARY KEY REFERENCES accounts (name),
    secret BYTEA NOT NULL,
    algorithm TEXT NOT NULL,
    digits SMALLINT NOT NULL,
    period BIGINT NOT NULL,
    created BIGINT NOT NULL,
    last_used BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS pending_totp (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE REFERENCES accounts (name),
    secret BYTEA NOT NULL,
    algorithm TEXT NOT NULL,
    digits SMALLINT NOT NULL,
    period BIGINT NOT NULL,
    expires BIGINT NOT NULL,
    proven BOOLEAN NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS recovery (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL REFERENCES accounts (name),
    salt BYTEA NOT NULL,
    hash BYTEA NOT NULL,
    used_at BIGINT
);
CREATE INDEX IF NOT EXISTS recovery_name ON recovery (name);
CREATE TABLE IF NOT EXISTS keys (
    name TEXT NOT NULL REFERENCES accounts (name),
    key_name TEXT NOT NULL,
    credential_id BYTEA NOT NULL,
    public_key BYTEA NOT NULL,
    rp_id TEXT NOT NULL,
    sign_count BIGINT NOT NULL,
    user_verification BOOLEAN NOT NULL,
    source TEXT NOT NULL,
    created BIGINT NOT NULL,
    last_used BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (name, key_name),
    UNIQUE (rp_id, credential_id)
);
CREATE TABLE IF NOT EXISTS audit (
    id BIGSERIAL PRIMARY KEY,
    time BIGINT NOT NULL,
    uid BIGINT NOT NULL,
    user_name TEXT NOT NULL,
    event TEXT NOT NULL,
    result TEXT NOT NULL,
    service TEXT NOT NULL,
    rhost TEXT NOT NULL,
    actor TEXT NOT NULL,
    detail TEXT NOT NULL,
    host TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_uid_time ON audit (uid, time);
CREATE INDEX IF NOT EXISTS audit_time ON audit (time);
";

/// How the store learns the account name of a uid on this host (NSS in the daemon; a table in
/// tests).
pub type NameOf = dyn Fn(u32) -> Option<String> + Send + Sync;

/// The account name of `uid` from NSS.
pub fn nss_name_of(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// What a [`PostgresStore`] is opened with.
#[derive(Clone)]
pub struct PgOptions {
    /// The policy's `store.url` (no password in it).
    pub url: String,
    /// The database password (from `store.password_file`), if any; else a pgpass file is read.
    pub password: Option<Zeroizing<String>>,
    /// Seals TOTP secrets when given.
    pub key: Option<SealingKey>,
    /// This host's name, recorded in every audit row it writes.
    pub host: String,
    /// Account names of uids on this host.
    pub name_of: Arc<NameOf>,
    /// Create or upgrade the schema if needed (else a missing schema is an error).
    pub create_schema: bool,
}

impl fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("key", &self.key)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl PgOptions {
    /// Options for the daemon: NSS names, the host's name, a password file if named.
    pub fn for_daemon(
        url: &str,
        password_file: Option<&Path>,
        key: Option<SealingKey>,
    ) -> StoreResult<PgOptions> {
        let password = match password_file {
            Some(p) => Some(read_password_file(p)?),
            None => None,
        };
        Ok(PgOptions {
            url: url.to_string(),
            password,
            key,
            host: this_host(),
            name_of: Arc::new(nss_name_of),
            create_schema: true,
        })
    }
}

/// This host's name (for audit rows).
pub fn this_host() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// Reads the database password from a file that must be a regular file owned by root (or the
/// daemon's user) and readable by nobody else; one line, at most 1 KiB.
pub fn read_password_file(path: &Path) -> StoreResult<Zeroizing<String>> {
    let shown = path.display();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| StoreError(format!("cannot open the password file {shown}: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| StoreError(format!("cannot stat the password file {shown}: {e}")))?;
    if !meta.file_type().is_file() {
        return Err(StoreError(format!(
            "the password file {shown} is not a regular file"
        )));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(StoreError(format!(
            "the password file {shown} is owned by uid {}: it must be owned by root (or the \
             daemon's user)",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(StoreError(format!(
            "the password file {shown} is readable or writable by others (mode {:04o}): run \
             chmod 600 {shown}",
            meta.mode() & 0o7777
        )));
    }
    let mut raw = Zeroizing::new(Vec::new());
    file.take(1025)
        .read_to_end(&mut raw)
        .map_err(|e| StoreError(format!("cannot read the password file {shown}: {e}")))?;
    if raw.len() > 1024 {
        return Err(StoreError(format!(
            "the password file {shown} is longer than 1 KiB"
        )));
    }
    let text = std::str::from_utf8(&raw)
        .map_err(|_| StoreError(format!("the password file {shown} is not UTF-8")))?;
    let line = text.strip_suffix('\n').unwrap_or(text);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() || line.contains('\n') || line.contains('\0') {
        return Err(StoreError(format!(
            "the password file {shown} must hold the password on one line"
        )));
    }
    Ok(Zeroizing::new(line.to_string()))
}

/// The TLS modes of `sslmode` this backend speaks (libpq's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// No TLS.
    Disable,
    /// TLS if the server offers it, unverified (libpq's default).
    Prefer,
    /// TLS, unverified.
    Require,
    /// TLS, the certificate verified against the trusted roots and the host name.
    VerifyFull,
}

/// A parsed `store.url`: the part tokio-postgres reads, and the TLS settings this backend
/// handles itself.
pub struct ParsedUrl {
    config: ::postgres::Config,
    /// The TLS mode.
    pub tls: TlsMode,
    /// `sslrootcert`: a PEM file of trusted roots (else the system's).
    pub root_cert: Option<PathBuf>,
}

impl fmt::Debug for ParsedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedUrl")
            .field("tls", &self.tls)
            .field("root_cert", &self.root_cert)
            .finish_non_exhaustive()
    }
}

impl ParsedUrl {
    /// Whether the database is reached over the network (not only over Unix sockets).
    pub fn is_tcp(&self) -> bool {
        let hosts = self.config.get_hosts();
        hosts.is_empty() || hosts.iter().any(|h| matches!(h, Host::Tcp(_)))
    }
}

/// Parses a `postgresql://` URL. Errors never echo the URL (it might hold a password).
pub fn parse_url(url: &str) -> StoreResult<ParsedUrl> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut tls = TlsMode::Prefer;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "sslmode" => {
                tls = match v {
                    "disable" => TlsMode::Disable,
                    "prefer" | "allow" => TlsMode::Prefer,
                    "require" => TlsMode::Require,
                    "verify-full" => TlsMode::VerifyFull,
                    "verify-ca" => {
                        return Err(StoreError(
                            "store.url: sslmode=verify-ca is not supported: use verify-full \
                             (it also checks the host name)"
                                .into(),
                        ));
                    }
                    _ => {
                        return Err(StoreError(format!(
                            "store.url: unknown sslmode {v:?} (disable, prefer, require or \
                             verify-full)"
                        )));
                    }
                }
            }
            "sslrootcert" => root_cert = Some(PathBuf::from(percent_decode(v)?)),
            "password" => {
                return Err(StoreError(
                    "store.url holds a password: use store.password_file or PGPASSFILE".into(),
                ));
            }
            _ => kept.push(pair),
        }
    }
    let rebuilt = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config = ::postgres::Config::from_str(&rebuilt)
        .map_err(|e| StoreError(format!("store.url is not a valid connection URL: {e}")))?;
    if config.get_password().is_some() {
        return Err(StoreError(
            "store.url holds a password: use store.password_file or PGPASSFILE".into(),
        ));
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(3));
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(Duration::from_secs(10));
    }
    config.keepalives_idle(Duration::from_secs(30));
    if config.get_application_name().is_none() {
        config.application_name("twofactord");
    }
    config.ssl_mode(match tls {
        TlsMode::Disable => SslMode::Disable,
        TlsMode::Prefer => SslMode::Prefer,
        TlsMode::Require | TlsMode::VerifyFull => SslMode::Require,
    });
    Ok(ParsedUrl {
        config,
        tls,
        root_cert,
    })
}

fn percent_decode(s: &str) -> StoreResult<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| StoreError("store.url: a bad %-escape".into()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| StoreError("store.url: a value is not UTF-8".into()))
}

mod tls {
    //! rustls (with the ring provider) for the connection: verifying for `verify-full`,
    //! encrypting only for `prefer` and `require` (as libpq does).
    use super::*;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// Accepts any certificate (sslmode=prefer/require: encrypted, not authenticated), but
    /// still checks the handshake signatures.
    #[derive(Debug)]
    struct Unverified(Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for Unverified {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    fn roots(root_cert: Option<&Path>) -> StoreResult<RootCertStore> {
        let mut roots = RootCertStore::empty();
        match root_cert {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    StoreError(format!("cannot read sslrootcert {}: {e}", path.display()))
                })?;
                use rustls::pki_types::pem::PemObject;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert
                        .map_err(|e| StoreError(format!("sslrootcert {}: {e}", path.display())))?;
                    roots
                        .add(cert)
                        .map_err(|e| StoreError(format!("sslrootcert {}: {e}", path.display())))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    // A system root rustls cannot parse is skipped, as libpq's OpenSSL would.
                    let _ = roots.add(cert);
                }
            }
        }
        if roots.is_empty() {
            return Err(StoreError(
                "sslmode=verify-full: no trusted root certificate (set sslrootcert=FILE in \
                 store.url, or install the system's CA certificates)"
                    .into(),
            ));
        }
        Ok(roots)
    }

    /// The TLS connector for `url`.
    pub fn connector(url: &ParsedUrl) -> StoreResult<MakeRustlsConnect> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError(format!("TLS: {e}")))?;
        let config = match url.tls {
            TlsMode::VerifyFull => builder
                .with_root_certificates(roots(url.root_cert.as_deref())?)
                .with_no_client_auth(),
            _ => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider())))
                .with_no_client_auth(),
        };
        Ok(MakeRustlsConnect::new(config))
    }
}

/// Finds the password for `config` in a pgpass file (`PGPASSFILE`, else `~/.pgpass`), as libpq
/// does: `host:port:database:user:password`, `*` matching anything; the file must not be
/// readable by others.
fn pgpass_password(config: &::postgres::Config) -> StoreResult<Option<Zeroizing<String>>> {
    let path = match std::env::var_os("PGPASSFILE") {
        Some(p) => PathBuf::from(p),
        None => match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(".pgpass"),
            None => return Ok(None),
        },
    };
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
    else {
        return Ok(None);
    };
    let meta = file
        .metadata()
        .map_err(|e| StoreError(format!("cannot stat {}: {e}", path.display())))?;
    if !meta.file_type().is_file() || meta.mode() & 0o077 != 0 {
        return Err(StoreError(format!(
            "the password file {} must be a regular file readable by its owner only (chmod 600)",
            path.display()
        )));
    }
    let mut text = Zeroizing::new(String::new());
    file.take(1 << 20)
        .read_to_string(&mut text)
        .map_err(|e| StoreError(format!("cannot read {}: {e}", path.display())))?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or_default().to_string();
    let db = config.get_dbname().unwrap_or(&user).to_string();
    let is_socket = matches!(config.get_hosts().first(), Some(Host::Unix(_)));
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let fields = split_pgpass(line);
        if fields.len() != 5 {
            continue;
        }
        let m = |f: &str, v: &str| f == "*" || f == v;
        let host_ok = m(&fields[0], &host) || (is_socket && fields[0].as_str() == "localhost");
        if host_ok && m(&fields[1], &port) && m(&fields[2], &db) && m(&fields[3], &user) {
            return Ok(Some(Zeroizing::new(fields[4].to_string())));
        }
    }
    Ok(None)
}

fn split_pgpass(line: &str) -> Vec<Zeroizing<String>> {
    let mut fields = vec![Zeroizing::new(String::new())];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(n), Some(last)) = (chars.next(), fields.last_mut()) {
                    last.push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(Zeroizing::new(String::new())),
            c => {
                if let Some(last) = fields.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    fields
}

/// Why a call failed, before it becomes a [`StoreError`].
enum Fail {
    Pg(::postgres::Error, &'static str),
    Store(StoreError),
    /// A refused activation: rolled back, then reported as this outcome.
    Rollback(Activation),
    /// The account's uid in the fleet differs from this host's.
    Mismatch {
        name: String,
        fleet: i64,
        here: u32,
    },
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

type Res<T> = Result<T, Fail>;

/// Which command on which table a statement runs (for a permission error).
fn command_on(sql: &str, table: &str) -> &'static str {
    let s = sql.to_ascii_uppercase();
    let t = table.to_ascii_uppercase();
    if s.contains(&format!("INSERT INTO {t}")) {
        "INSERT"
    } else if s.contains(&format!("UPDATE {t}")) {
        "UPDATE"
    } else if s.contains(&format!("DELETE FROM {t}")) {
        "DELETE"
    } else {
        "SELECT"
    }
}

/// An error with its causes (tokio-postgres says only "db error" at the top).
fn describe(e: &::postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A PostgreSQL error as the daemon reports it: a missing grant is named exactly.
fn pg_error(e: &::postgres::Error, sql: &str) -> StoreError {
    if let Some(db) = e.as_db_error() {
        if *db.code() == SqlState::INSUFFICIENT_PRIVILEGE {
            let msg = db.message();
            if let Some(obj) = msg
                .strip_prefix("permission denied for table ")
                .or_else(|| msg.strip_prefix("permission denied for relation "))
            {
                return StoreError(format!(
                    "PostgreSQL: {msg}: the daemon's role lacks GRANT {} ON {SCHEMA_NAME}.{obj} \
                     (see twofactor-policy(5), FLEET)",
                    command_on(sql, obj)
                ));
            }
            if let Some(seq) = msg.strip_prefix("permission denied for sequence ") {
                return StoreError(format!(
                    "PostgreSQL: {msg}: the daemon's role lacks GRANT USAGE ON SEQUENCE \
                     {SCHEMA_NAME}.{seq} (see twofactor-policy(5), FLEET)"
                ));
            }
            if let Some(s) = msg.strip_prefix("permission denied for schema ") {
                return StoreError(format!(
                    "PostgreSQL: {msg}: the daemon's role lacks GRANT USAGE ON SCHEMA {s} (or \
                     CREATE, to create its tables; see twofactor-policy(5), FLEET)"
                ));
            }
            return StoreError(format!(
                "PostgreSQL: {msg} (SQLSTATE 42501: a grant is missing; see \
                 twofactor-policy(5), FLEET)"
            ));
        }
        return StoreError(format!(
            "PostgreSQL: {} (SQLSTATE {})",
            db.message(),
            db.code().code()
        ));
    }
    if e.is_closed() {
        return StoreError("PostgreSQL: the connection is closed".into());
    }
    StoreError(format!("PostgreSQL: {}", describe(e)))
}

/// Whether an error says the database could not be reached at all (no connection, a dropped
/// one, a network timeout, the server shutting down), rather than refusing: a wrong password,
/// a missing database or grant, a timeout of a statement or lock, a read-only standby are
/// refusals (the daemon fails closed on them and says why; no offline serving).
fn is_transport(e: &::postgres::Error) -> bool {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        return code.starts_with("08") || code.starts_with("57P");
    }
    if e.is_closed() {
        return true;
    }
    // An I/O failure somewhere in the causes (refused, reset, timed out).
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// A connection with its prepared statements.
struct Conn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

/// Prepares (once per connection) and runs statements inside one transaction.
struct Tx<'a> {
    tx: Transaction<'a>,
    statements: &'a mut HashMap<&'static str, Statement>,
}

impl Tx<'_> {
    fn stmt(&mut self, sql: &'static str) -> Res<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.tx.prepare(sql).map_err(|e| Fail::Pg(e, sql))?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }

    fn query(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Res<Vec<Row>> {
        let s = self.stmt(sql)?;
        self.tx.query(&s, params).map_err(|e| Fail::Pg(e, sql))
    }

    fn opt(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Res<Option<Row>> {
        let s = self.stmt(sql)?;
        self.tx.query_opt(&s, params).map_err(|e| Fail::Pg(e, sql))
    }

    fn one(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Res<Row> {
        let s = self.stmt(sql)?;
        self.tx.query_one(&s, params).map_err(|e| Fail::Pg(e, sql))
    }

    fn exec(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Res<u64> {
        let s = self.stmt(sql)?;
        self.tx.execute(&s, params).map_err(|e| Fail::Pg(e, sql))
    }
}

fn get<'r, T: ::postgres::types::FromSql<'r>>(row: &'r Row, i: usize) -> Res<T> {
    row.try_get(i)
        .map_err(|e| Fail::Store(StoreError(format!("PostgreSQL: column {i}: {e}"))))
}

fn u32_of(v: i64, what: &str) -> Res<u32> {
    u32::try_from(v).map_err(|_| Fail::Store(StoreError(format!("stored {what} out of range"))))
}

fn params_of(alg: &str, digits: i16, period: i64) -> Res<TotpParams> {
    let algorithm = Algorithm::parse(alg)
        .ok_or_else(|| StoreError(format!("stored TOTP algorithm {alg:?} is unknown")))?;
    let digits = u8::try_from(digits).ok().filter(|d| *d == 6 || *d == 8);
    let period = u64::try_from(period).ok().filter(|p| *p > 0);
    match (digits, period) {
        (Some(digits), Some(period)) => Ok(TotpParams {
            algorithm,
            digits,
            period,
        }),
        _ => Err(StoreError("stored TOTP digits or period out of range".into()).into()),
    }
}

fn step_i64(step: u64) -> Res<i64> {
    i64::try_from(step).map_err(|_| StoreError("TOTP step out of range".into()).into())
}

/// How long a uid's account name is remembered (DESIGN: a short NSS cache, a minute at most).
const NAME_TTL: Duration = Duration::from_secs(60);

/// The fleet store. See the module documentation.
pub struct PostgresStore {
    url: ParsedUrl,
    tls: MakeRustlsConnect,
    password: Option<Zeroizing<String>>,
    key: Option<SealingKey>,
    host: String,
    name_of: Arc<NameOf>,
    names: Mutex<HashMap<u32, (String, Instant)>>,
    conn: Mutex<Option<Conn>>,
    breaker: Breaker,
    /// Opened during an outage ([`Self::open_deferred`]): the schema is still to be created or
    /// checked, at the first connection.
    schema_pending: std::sync::atomic::AtomicBool,
    /// Create or upgrade the schema if needed.
    create_schema: bool,
}

/// After a failed connection, calls fail at once for a while instead of each waiting for the
/// connect timeout: one outage does not cost every login a timeout.
struct Breaker {
    /// How long the database is not tried after a failed connection.
    hold: Duration,
    /// Until when it is not tried (guarded by the connection's lock, taken first).
    open_until: Mutex<Option<Instant>>,
    /// Calls refused without trying, since the start.
    skipped: std::sync::atomic::AtomicU64,
    /// The last failed connection was refused by the server (not unreachable).
    refused: std::sync::atomic::AtomicBool,
}

/// How long the database is not tried after a failed connection, by default.
pub const BREAKER_HOLD: Duration = Duration::from_secs(10);

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("host", &self.host)
            .field("tls", &self.url.tls)
            .finish_non_exhaustive()
    }
}

/// Grants the daemon's role lacks on its own tables: `GRANT ...` lines, empty if none.
pub fn missing_grants(client: &mut Client) -> StoreResult<Vec<String>> {
    let mut missing = Vec::new();
    let q = "SELECT has_schema_privilege(current_user, $1, 'USAGE')";
    let row = client
        .query_one(q, &[&SCHEMA_NAME])
        .map_err(|e| pg_error(&e, q))?;
    if !row.try_get::<_, bool>(0).unwrap_or(false) {
        missing.push(format!("GRANT USAGE ON SCHEMA {SCHEMA_NAME} TO <role>"));
        return Ok(missing);
    }
    let q = "SELECT has_table_privilege(current_user, $1, $2)";
    for table in TABLES {
        let full = format!("{SCHEMA_NAME}.{table}");
        let mut lacking = Vec::new();
        for priv_ in ["SELECT", "INSERT", "UPDATE", "DELETE"] {
            let row = client
                .query_one(q, &[&full, &priv_])
                .map_err(|e| pg_error(&e, q))?;
            if !row.try_get::<_, bool>(0).unwrap_or(false) {
                lacking.push(priv_);
            }
        }
        if !lacking.is_empty() {
            missing.push(format!("GRANT {} ON {full} TO <role>", lacking.join(", ")));
        }
    }
    let q = "SELECT has_sequence_privilege(current_user, $1, 'USAGE')";
    for seq in SEQUENCES {
        let full = format!("{SCHEMA_NAME}.{seq}");
        let row = client.query_one(q, &[&full]).map_err(|e| pg_error(&e, q))?;
        if !row.try_get::<_, bool>(0).unwrap_or(false) {
            missing.push(format!("GRANT USAGE ON SEQUENCE {full} TO <role>"));
        }
    }
    Ok(missing)
}

impl PostgresStore {
    /// The store for `options`, not connected yet: the URL parsed, TLS set up, the password
    /// read; with `outage`, the breaker already open and the schema to create or check at the
    /// first connection.
    fn unconnected(options: PgOptions, outage: bool) -> StoreResult<PostgresStore> {
        let url = parse_url(&options.url)?;
        let tls = tls::connector(&url)?;
        let password = match options.password {
            Some(p) => Some(p),
            None => pgpass_password(&url.config)?,
        };
        Ok(PostgresStore {
            url,
            tls,
            password,
            key: options.key,
            host: options.host,
            name_of: options.name_of,
            names: Mutex::new(HashMap::new()),
            conn: Mutex::new(None),
            breaker: Breaker {
                hold: BREAKER_HOLD,
                open_until: Mutex::new(outage.then(|| Instant::now() + BREAKER_HOLD)),
                skipped: std::sync::atomic::AtomicU64::new(0),
                refused: std::sync::atomic::AtomicBool::new(false),
            },
            schema_pending: std::sync::atomic::AtomicBool::new(outage),
            create_schema: options.create_schema,
        })
    }

    /// Connects, creates or checks the schema, and checks the role's grants.
    pub fn open(options: PgOptions) -> StoreResult<PostgresStore> {
        let create = options.create_schema;
        let store = Self::unconnected(options, false)?;
        let mut client = store.connect()?;
        store.prepare_schema(&mut client, create)?;
        *store.lock_conn()? = Some(Conn {
            client,
            statements: HashMap::new(),
        });
        Ok(store)
    }

    /// As [`Self::open`], but a database that cannot be reached now is not fatal (a host
    /// starting during an outage, with an offline cache to serve from): the store is returned
    /// with the connection error, and the schema is created or checked at the first connection.
    pub fn open_deferred(options: PgOptions) -> StoreResult<(PostgresStore, Option<StoreError>)> {
        match Self::open(options.clone()) {
            Ok(store) => Ok((store, None)),
            Err(e) if e.is_unreachable() => Ok((Self::unconnected(options, true)?, Some(e))),
            Err(e) => Err(e),
        }
    }

    /// Sets how long the database is not tried after a failed connection (default
    /// [`BREAKER_HOLD`]).
    pub fn with_breaker(mut self, hold: Duration) -> Self {
        self.breaker.hold = hold;
        self
    }

    /// Whether calls are being refused without trying the database (the breaker is open).
    pub fn breaker_open(&self) -> bool {
        self.breaker
            .open_until
            .lock()
            .ok()
            .and_then(|g| *g)
            .is_some_and(|until| Instant::now() < until)
    }

    /// How many calls were refused without trying the database since the start.
    pub fn skipped_calls(&self) -> u64 {
        self.breaker
            .skipped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Connects for [`Self::run`], unless the breaker is open; a failure opens it.
    fn connect_or_skip(&self) -> StoreResult<Client> {
        let mut open = self
            .breaker
            .open_until
            .lock()
            .map_err(|_| StoreError("the database breaker is poisoned".into()))?;
        let now = Instant::now();
        if let Some(until) = *open
            && now < until
        {
            let n = self
                .breaker
                .skipped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .saturating_add(1);
            let msg = format!(
                "not tried again for {} s after a failed connection ({n} calls refused without \
                 trying so far); refused",
                until.duration_since(now).as_secs().saturating_add(1)
            );
            // Unreachable, unless the last connection was refused (a wrong password, a missing
            // database): then there is no offline serving either.
            if self
                .breaker
                .refused
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                return Err(StoreError(format!(
                    "the fleet database refused the connection: {msg}"
                )));
            }
            return Err(StoreError::unreachable(msg));
        }
        match self.connect() {
            Ok(client) => {
                *open = None;
                Ok(client)
            }
            Err(e) => {
                *open = Some(now + self.breaker.hold);
                self.breaker
                    .refused
                    .store(!e.is_unreachable(), std::sync::atomic::Ordering::Relaxed);
                Err(StoreError(format!(
                    "{}; not tried again for {} s",
                    e.0,
                    self.breaker.hold.as_secs()
                )))
            }
        }
    }

    /// Whether the connection to the database is protected by verified TLS (or is a socket).
    pub fn is_authenticated_channel(&self) -> bool {
        self.url.tls == TlsMode::VerifyFull || !self.url.is_tcp()
    }

    fn connect(&self) -> StoreResult<Client> {
        let mut config = self.url.config.clone();
        if let Some(p) = &self.password {
            config.password(p.as_bytes());
        }
        let mut client = config.connect(self.tls.clone()).map_err(|e| {
            // tokio-postgres's messages name the host and the cause, never the password.
            let msg = format!("cannot connect to PostgreSQL: {}", describe(&e));
            if is_transport(&e) {
                StoreError::unreachable(msg)
            } else {
                StoreError(msg)
            }
        })?;
        let setup = format!(
            "SET statement_timeout = '5s'; SET lock_timeout = '5s'; \
             SET idle_in_transaction_session_timeout = '30s'; \
             SET search_path = {SCHEMA_NAME}, pg_catalog"
        );
        client
            .batch_execute(&setup)
            .map_err(|e| pg_error(&e, "SET"))?;
        Ok(client)
    }

    fn prepare_schema(&self, client: &mut Client, create: bool) -> StoreResult<()> {
        let q = "SELECT to_regclass($1)::text";
        let present: Option<String> = client
            .query_one(q, &[&format!("{SCHEMA_NAME}.schema_version")])
            .and_then(|r| r.try_get(0))
            .map_err(|e| pg_error(&e, q))?;
        let version: Option<i32> = if present.is_some() {
            let q = "SELECT max(version) FROM schema_version";
            client
                .query_one(q, &[])
                .and_then(|r| r.try_get(0))
                .map_err(|e| pg_error(&e, q))?
        } else {
            None
        };
        match version {
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError(format!(
                    "the fleet database's schema version {v} is newer than this daemon's \
                     ({SCHEMA_VERSION}): upgrade twofactord on this host"
                )));
            }
            Some(v) if v == SCHEMA_VERSION => {}
            _ if !create => {
                return Err(StoreError(format!(
                    "the fleet database has no twofactor schema (version {SCHEMA_VERSION})"
                )));
            }
            _ => self.create_schema(client)?,
        }
        let missing = missing_grants(client)?;
        if !missing.is_empty() {
            let user = self.url.config.get_user().unwrap_or("the daemon's role");
            return Err(StoreError(format!(
                "the database role lacks grants the daemon needs; as the schema's owner run: {}",
                missing
                    .iter()
                    .map(|g| g.replace("<role>", user))
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        Ok(())
    }

    fn create_schema(&self, client: &mut Client) -> StoreResult<()> {
        let mut tx = client.transaction().map_err(|e| pg_error(&e, "BEGIN"))?;
        // Several daemons starting at once: one creates, the others wait and find it done.
        tx.execute("SELECT pg_advisory_xact_lock(7102202611)", &[])
            .map_err(|e| pg_error(&e, "SELECT"))?;
        let ddl = format!("CREATE SCHEMA IF NOT EXISTS {SCHEMA_NAME}; {SCHEMA}");
        tx.batch_execute(&ddl).map_err(|e| {
            if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
                StoreError(format!(
                    "the daemon's role may not create the {SCHEMA_NAME} schema or its tables \
                     ({}): create them once as the database owner (GRANT CREATE ON DATABASE, \
                     or run `twofactord --check --connect` with the owner's role), then grant \
                     the daemon's role what twofactor-policy(5), FLEET lists",
                    e.as_db_error().map_or("permission denied", |d| d.message())
                ))
            } else {
                pg_error(&e, "CREATE")
            }
        })?;
        let q = "SELECT count(*) FROM schema_version";
        let rows: i64 = tx
            .query_one(q, &[])
            .and_then(|r| r.try_get(0))
            .map_err(|e| pg_error(&e, q))?;
        let q = if rows == 0 {
            "INSERT INTO schema_version (version) VALUES ($1)"
        } else {
            "UPDATE schema_version SET version = $1"
        };
        tx.execute(q, &[&SCHEMA_VERSION])
            .map_err(|e| pg_error(&e, q))?;
        tx.commit().map_err(|e| pg_error(&e, "COMMIT"))
    }

    fn lock_conn(&self) -> StoreResult<MutexGuard<'_, Option<Conn>>> {
        self.conn
            .lock()
            .map_err(|_| StoreError("the database connection is poisoned".into()))
    }

    /// The account name of `uid` on this host.
    fn name(&self, uid: u32) -> StoreResult<String> {
        if let Ok(cache) = self.names.lock()
            && let Some((name, at)) = cache.get(&uid)
            && at.elapsed() < NAME_TTL
        {
            return Ok(name.clone());
        }
        let name = (self.name_of)(uid).ok_or_else(|| {
            StoreError(format!(
                "uid {uid} has no account name on this host: a fleet store knows users by name"
            ))
        })?;
        if let Ok(mut cache) = self.names.lock() {
            if cache.len() > 4096 {
                cache.clear();
            }
            cache.insert(uid, (name.clone(), Instant::now()));
        }
        Ok(name)
    }

    /// Runs `f` in one transaction, reconnecting first if the connection dropped.
    fn with_tx<T>(&self, f: impl FnOnce(&mut Tx<'_>) -> Res<T>) -> StoreResult<T> {
        match self.run(f) {
            Ok(v) => Ok(v),
            Err(Fail::Store(e)) => Err(e),
            Err(_) => Err(StoreError("PostgreSQL: an unexpected refusal".into())),
        }
    }

    /// [`Self::with_tx`] for an activation: a [`Fail::Rollback`] is rolled back and returned.
    fn activation(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Res<Activation>,
    ) -> StoreResult<Activation> {
        match self.run(f) {
            Ok(v) | Err(Fail::Rollback(v)) => Ok(v),
            Err(Fail::Store(e)) => Err(e),
            Err(_) => Err(StoreError("PostgreSQL: an unexpected refusal".into())),
        }
    }

    /// The transaction runner: errors come back as [`Fail::Store`] or [`Fail::Rollback`].
    fn run<T>(&self, f: impl FnOnce(&mut Tx<'_>) -> Res<T>) -> Res<T> {
        let mut guard = self.lock_conn()?;
        if guard.as_ref().is_none_or(|c| c.client.is_closed()) {
            *guard = None;
            let mut client = self.connect_or_skip()?;
            if self
                .schema_pending
                .load(std::sync::atomic::Ordering::Acquire)
            {
                self.prepare_schema(&mut client, self.create_schema)?;
                self.schema_pending
                    .store(false, std::sync::atomic::Ordering::Release);
            }
            *guard = Some(Conn {
                client,
                statements: HashMap::new(),
            });
        }
        let Some(conn) = guard.as_mut() else {
            return Err(StoreError("no database connection".into()).into());
        };
        let result = (|| {
            let tx = conn
                .client
                .transaction()
                .map_err(|e| Fail::Pg(e, "BEGIN"))?;
            let mut tx = Tx {
                tx,
                statements: &mut conn.statements,
            };
            let out = f(&mut tx)?;
            tx.tx.commit().map_err(|e| Fail::Pg(e, "COMMIT"))?;
            Ok(out)
        })();
        match result {
            Ok(v) => Ok(v),
            Err(Fail::Pg(e, sql)) => {
                if e.is_closed() || conn.client.is_closed() {
                    *guard = None;
                }
                let err = pg_error(&e, sql);
                if is_transport(&e) {
                    return Err(Fail::Store(StoreError::unreachable(err.0)));
                }
                Err(Fail::Store(err))
            }
            Err(other @ (Fail::Store(_) | Fail::Rollback(_))) => Err(other),
            Err(Fail::Mismatch { name, fleet, here }) => {
                let err = StoreError(format!(
                    "account {name} is uid {fleet} in the fleet database but uid {here} on this \
                     host ({}): refused; give it the same uid on every host",
                    self.host
                ));
                // Audited in its own transaction: the refused one was rolled back.
                let record = AuditRecord {
                    time: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64),
                    uid: here,
                    user: name,
                    event: "identity-mismatch".into(),
                    result: "refused".into(),
                    actor: "twofactord".into(),
                    detail: format!("fleet uid {fleet}"),
                    ..Default::default()
                };
                let statements = &mut conn.statements;
                let _ = conn.client.transaction().map(|tx| {
                    let mut tx = Tx { tx, statements };
                    if insert_audit(&mut tx, &record, &self.host).is_ok() {
                        let _ = tx.tx.commit();
                    }
                });
                Err(Fail::Store(err))
            }
        }
    }

    fn seal(&self, secret: &[u8], name: &str, factor: &str) -> Res<Vec<u8>> {
        match &self.key {
            Some(k) => Ok(k.seal(secret, Binding { user: name, factor })?),
            None => Ok(secret.to_vec()),
        }
    }

    fn open_secret(&self, value: &[u8], name: &str, factor: &str) -> Res<TotpSecret> {
        if is_sealed(value) {
            let Some(k) = &self.key else {
                return Err(StoreError(format!(
                    "the TOTP secret of {name} is sealed, and no store.secret_key_file is loaded"
                ))
                .into());
            };
            let open = k.open(value, Binding { user: name, factor })?;
            return Ok(TotpSecret::from_bytes(open.to_vec()));
        }
        Ok(TotpSecret::from_bytes(value.to_vec()))
    }
}

impl PostgresStore {
    /// `twofactord migrate`: copies `export` into the fleet in one transaction (all or
    /// nothing). Users already in the fleet are refused, naming them, unless `force` (then
    /// their factors, codes and state are replaced and their recorded uid updated). TOTP
    /// secrets are sealed for the fleet (bound to the account name). Audit rows keep their
    /// time and are recorded as written by this host; one `migrated` row per user says where
    /// they came from.
    pub fn import(
        &self,
        export: &super::migrate::Export,
        force: bool,
        now: i64,
        source: &str,
    ) -> StoreResult<super::migrate::Summary> {
        let host = self.host.clone();
        self.with_tx(|tx| {
            let mut summary = super::migrate::Summary::default();
            let names: Vec<&str> = export.users.iter().map(|u| u.name.as_str()).collect();
            // Serializes with any other migration, and with activations of these accounts.
            tx.exec("SELECT pg_advisory_xact_lock(7102202612)", &[])?;
            let rows = tx.query(
                "SELECT name FROM accounts WHERE name = ANY($1) ORDER BY name FOR UPDATE",
                &[&names],
            )?;
            let existing = rows
                .iter()
                .map(|r| get::<String>(r, 0))
                .collect::<Res<Vec<String>>>()?;
            if !existing.is_empty() && !force {
                return Err(StoreError(format!(
                    "the fleet database already has {} of these users ({}): nothing was \
                     copied; --force replaces them with this state's",
                    existing.len(),
                    existing.join(", ")
                ))
                .into());
            }
            summary.replaced = existing.len();
            for u in &export.users {
                let name = u.name.as_str();
                let uid = i64::from(u.state.uid);
                for table in [
                    "DELETE FROM keys WHERE name = $1",
                    "DELETE FROM totp WHERE name = $1",
                    "DELETE FROM recovery WHERE name = $1",
                    "DELETE FROM pending_totp WHERE name = $1",
                    "DELETE FROM users WHERE name = $1",
                ] {
                    tx.exec(table, &[&name])?;
                }
                tx.exec(
                    "INSERT INTO accounts (name, uid, host, created) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (name) DO UPDATE SET uid = excluded.uid, host = excluded.host",
                    &[&name, &uid, &host, &now],
                )?;
                let st = &u.state;
                let to_i32 = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
                let step = st.last_totp_step.map(step_i64).transpose()?;
                tx.exec(
                    "INSERT INTO users (name, admin_required, failures, lock_level, locked_until,
                                        last_totp_step, required_since)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        &name,
                        &st.admin_required,
                        &to_i32(st.failures),
                        &to_i32(st.lock_level),
                        &st.locked_until,
                        &step,
                        &st.required_since,
                    ],
                )?;
                if let Some(t) = &u.totp {
                    let sealed = Zeroizing::new(self.seal(t.secret.as_bytes(), name, "totp")?);
                    tx.exec(
                        "INSERT INTO totp (name, secret, algorithm, digits, period, created,
                                           last_used)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                        &[
                            &name,
                            &sealed.as_slice(),
                            &t.params.algorithm.as_str(),
                            &i16::from(t.params.digits),
                            &i64::try_from(t.params.period).unwrap_or(i64::MAX),
                            &t.created,
                            &t.last_used,
                        ],
                    )?;
                    summary.factors += 1;
                }
                for (code, used_at) in &u.recovery {
                    tx.exec(
                        "INSERT INTO recovery (name, salt, hash, used_at) VALUES ($1, $2, $3, $4)",
                        &[&name, &code.salt, &code.hash, used_at],
                    )?;
                    summary.codes += 1;
                }
                for k in &u.keys {
                    let inserted = insert_key(tx, name, k)?;
                    if inserted != 1 {
                        return Err(StoreError(format!(
                            "the security key {:?} of {name} is already registered in the fleet \
                             (for another user): nothing was copied",
                            k.name
                        ))
                        .into());
                    }
                    summary.keys += 1;
                }
                summary.users += 1;
            }
            for r in &export.audit {
                insert_audit(tx, r, &host)?;
                summary.audit += 1;
            }
            for u in &export.users {
                let record = AuditRecord {
                    time: now,
                    uid: u.state.uid,
                    user: u.name.clone(),
                    event: "migrated".into(),
                    result: "ok".into(),
                    actor: "twofactord migrate".into(),
                    detail: format!("from {source}"),
                    ..Default::default()
                };
                insert_audit(tx, &record, &host)?;
            }
            Ok(summary)
        })
    }
}

/// Binds `name` to `uid` in the fleet (first use records it); a different recorded uid is a
/// [`Fail::Mismatch`].
fn bind(tx: &mut Tx<'_>, name: &str, uid: u32, host: &str, now: i64) -> Res<()> {
    let rows = tx.query(
        "WITH ins AS (
             INSERT INTO accounts (name, uid, host, created) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO NOTHING RETURNING uid)
         SELECT uid FROM ins UNION ALL SELECT uid FROM accounts WHERE name = $1",
        &[&name, &i64::from(uid), &host, &now],
    )?;
    let fleet = match rows.first() {
        Some(r) => get::<i64>(r, 0)?,
        // Another host created it after this statement's snapshot: read it again.
        None => get::<i64>(
            &tx.one("SELECT uid FROM accounts WHERE name = $1", &[&name])?,
            0,
        )?,
    };
    check_uid(name, fleet, uid)
}

fn check_uid(name: &str, fleet: i64, here: u32) -> Res<()> {
    if fleet != i64::from(here) {
        return Err(Fail::Mismatch {
            name: name.to_string(),
            fleet,
            here,
        });
    }
    Ok(())
}

/// Checks `name`'s recorded uid, if any, without recording it.
fn check_known(tx: &mut Tx<'_>, name: &str, uid: u32) -> Res<bool> {
    match tx.opt("SELECT uid FROM accounts WHERE name = $1", &[&name])? {
        Some(r) => check_uid(name, get(&r, 0)?, uid).map(|()| true),
        None => Ok(false),
    }
}

/// Inserts one key of `name`; 0 rows when its name or credential is already taken (the caller
/// decides what that means).
fn insert_key(tx: &mut Tx<'_>, name: &str, k: &KeyFactor) -> Res<u64> {
    tx.exec(
        "INSERT INTO keys (name, key_name, credential_id, public_key, rp_id, sign_count,
                           user_verification, source, created, last_used)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT DO NOTHING",
        &[
            &name,
            &k.name,
            &k.credential_id,
            &k.public_key_cose,
            &k.rp_id,
            &i64::from(k.sign_count),
            &k.user_verification,
            &k.source,
            &k.created,
            &k.last_used,
        ],
    )
}

fn insert_audit(tx: &mut Tx<'_>, r: &AuditRecord, host: &str) -> Res<()> {
    tx.exec(
        "INSERT INTO audit (time, uid, user_name, event, result, service, rhost, actor, detail,
                            host)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &r.time,
            &i64::from(r.uid),
            &r.user,
            &r.event,
            &r.result,
            &r.service,
            &r.rhost,
            &r.actor,
            &r.detail,
            &host,
        ],
    )?;
    Ok(())
}

fn ensure_user(tx: &mut Tx<'_>, name: &str) -> Res<()> {
    tx.exec(
        "INSERT INTO users (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
        &[&name],
    )?;
    Ok(())
}

fn factors_in(tx: &mut Tx<'_>, name: &str) -> Res<(bool, bool)> {
    let r = tx.one(
        "SELECT EXISTS(SELECT 1 FROM totp WHERE name = $1),
                EXISTS(SELECT 1 FROM keys WHERE name = $1)",
        &[&name],
    )?;
    Ok((get(&r, 0)?, get(&r, 1)?))
}

fn set_recovery(tx: &mut Tx<'_>, name: &str, codes: &[StoredCode]) -> Res<()> {
    tx.exec("DELETE FROM recovery WHERE name = $1", &[&name])?;
    for c in codes {
        tx.exec(
            "INSERT INTO recovery (name, salt, hash) VALUES ($1, $2, $3)",
            &[&name, &c.salt, &c.hash],
        )?;
    }
    Ok(())
}

fn apply_codes(tx: &mut Tx<'_>, name: &str, codes: Codes<'_>) -> Res<bool> {
    match codes {
        Codes::Keep => Ok(false),
        Codes::Replace(c) => set_recovery(tx, name, c).map(|()| true),
        Codes::IfNone(c) => {
            let r = tx.one(
                "SELECT count(*) FROM recovery WHERE name = $1 AND used_at IS NULL",
                &[&name],
            )?;
            if get::<i64>(&r, 0)? > 0 {
                return Ok(false);
            }
            set_recovery(tx, name, c).map(|()| true)
        }
    }
}

/// Resets failures and escalation after a success.
fn reset_failures(tx: &mut Tx<'_>, name: &str) -> Res<()> {
    tx.exec(
        "UPDATE users SET failures = 0, lock_level = 0 WHERE name = $1",
        &[&name],
    )?;
    Ok(())
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A user's recovery codes of the current set: those not used yet, or those used (kept, so
/// that a used one is told from a wrong one: a replay, not a guess).
const UNUSED_CODES: &str =
    "SELECT id, salt, hash FROM recovery WHERE name = $1 AND used_at IS NULL ORDER BY id";
const USED_CODES: &str =
    "SELECT id, salt, hash FROM recovery WHERE name = $1 AND used_at IS NOT NULL ORDER BY id";

impl PostgresStore {
    fn recovery_codes(&self, uid: u32, sql: &'static str) -> StoreResult<Vec<StoredCode>> {
        let name = self.name(uid)?;
        self.with_tx(|tx| {
            if !check_known(tx, &name, uid)? {
                return Ok(Vec::new());
            }
            tx.query(sql, &[&name])?
                .iter()
                .map(|r| {
                    Ok(StoredCode {
                        id: get(r, 0)?,
                        salt: get(r, 1)?,
                        hash: get(r, 2)?,
                    })
                })
                .collect()
        })
    }
}

impl Store for PostgresStore {
    fn user_state(&self, uid: u32) -> StoreResult<Option<UserState>> {
        let name = self.name(uid)?;
        self.with_tx(|tx| {
            let Some(r) = tx.opt(
                "SELECT a.uid, u.name, u.admin_required, u.failures, u.lock_level,
                        u.locked_until, u.last_totp_step, u.required_since
                 FROM accounts a LEFT JOIN users u ON u.name = a.name WHERE a.name = $1",
                &[&name],
            )?
            else {
                return Ok(None);
            };
            check_uid(&name, get(&r, 0)?, uid)?;
            if get::<Option<String>>(&r, 1)?.is_none() {
                return Ok(None);
            }
            Ok(Some(UserState {
                uid,
                name: name.clone(),
                admin_required: get(&r, 2)?,
                failures: u32_of(i64::from(get::<i32>(&r, 3)?), "failures")?,
                lock_level: u32_of(i64::from(get::<i32>(&r, 4)?), "lock level")?,
                locked_until: get(&r, 5)?,
                last_totp_step: get::<Option<i64>>(&r, 6)?.map(|s| s as u64),
                required_since: get(&r, 7)?,
            }))
        })
    }

    fn totp(&self, uid: u32) -> StoreResult<Option<TotpFactor>> {
        let name = self.name(uid)?;
        self.with_tx(|tx| {
            let Some(r) = tx.opt(
                "SELECT a.uid, t.secret, t.algorithm, t.digits, t.period, t.created, t.last_used
                 FROM accounts a LEFT JOIN totp t ON t.name = a.name WHERE a.name = $1",
                &[&name],
            )?
            else {
                return Ok(None);
            };
            check_uid(&name, get(&r, 0)?, uid)?;
            let Some(secret) = get::<Option<Vec<u8>>>(&r, 1)? else {
                return Ok(None);
            };
            let secret = Zeroizing::new(secret);
            Ok(Some(TotpFactor {
                secret: self.open_secret(&secret, &name, "totp")?,
                params: params_of(&get::<String>(&r, 2)?, get(&r, 3)?, get(&r, 4)?)?,
                created: get(&r, 5)?,
                last_used: get(&r, 6)?,
            }))
        })
    }

    fn put_pending_totp(&mut self, p: &PendingTotp) -> StoreResult<()> {
        let name = self.name(p.uid)?;
        let host = self.host.clone();
        let sealed = Zeroizing::new(
            self.seal(p.secret.as_bytes(), &name, "pending-totp")
                .map_err(|f| match f {
                    Fail::Store(e) => e,
                    _ => StoreError("cannot seal the secret".into()),
                })?,
        );
        self.with_tx(|tx| {
            bind(tx, &name, p.uid, &host, now_secs())?;
            tx.exec("DELETE FROM pending_totp WHERE name = $1", &[&name])?;
            tx.exec(
                "INSERT INTO pending_totp (id, name, secret, algorithm, digits, period, expires,
                                           proven)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &p.id,
                    &name,
                    &sealed.as_slice(),
                    &p.params.algorithm.as_str(),
                    &i16::from(p.params.digits),
                    &i64::try_from(p.params.period).unwrap_or(i64::MAX),
                    &p.expires,
                    &p.proven,
                ],
            )?;
            Ok(())
        })
    }

    fn pending_totp(&self, id: &str) -> StoreResult<Option<PendingTotp>> {
        self.with_tx(|tx| {
            let Some(r) = tx.opt(
                "SELECT a.uid, p.name, p.secret, p.algorithm, p.digits, p.period, p.expires,
                        p.proven
                 FROM pending_totp p JOIN accounts a ON a.name = p.name WHERE p.id = $1",
                &[&id],
            )?
            else {
                return Ok(None);
            };
            let name: String = get(&r, 1)?;
            let secret = Zeroizing::new(get::<Vec<u8>>(&r, 2)?);
            Ok(Some(PendingTotp {
                id: id.to_string(),
                uid: u32_of(get(&r, 0)?, "uid")?,
                secret: self.open_secret(&secret, &name, "pending-totp")?,
                params: params_of(&get::<String>(&r, 3)?, get(&r, 4)?, get(&r, 5)?)?,
                expires: get(&r, 6)?,
                proven: get(&r, 7)?,
            }))
        })
    }

    fn drop_expired_pending(&mut self, now: i64) -> StoreResult<usize> {
        self.with_tx(|tx| {
            let n = tx.exec("DELETE FROM pending_totp WHERE expires < $1", &[&now])?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    fn activate_totp(
        &mut self,
        uid: u32,
        name: &str,
        pending_id: &str,
        accepted_step: u64,
        now: i64,
        codes: Codes<'_>,
        existing: Existing,
    ) -> StoreResult<Activation> {
        let host = self.host.clone();
        let step = step_i64(accepted_step).map_err(|_| StoreError("step out of range".into()))?;
        self.activation(|tx| {
            bind(tx, name, uid, &host, now)?;
            // Serializes activations of one account across hosts.
            tx.exec(
                "SELECT 1 FROM accounts WHERE name = $1 FOR UPDATE",
                &[&name],
            )?;
            let (has_totp, has_keys) = factors_in(tx, name)?;
            if has_totp || (existing == Existing::NoFactor && has_keys) {
                return Err(Fail::Rollback(Activation::FactorExists));
            }
            let Some(r) = tx.opt(
                "DELETE FROM pending_totp WHERE id = $1 AND name = $2
                 RETURNING secret, algorithm, digits, period",
                &[&pending_id, &name],
            )?
            else {
                return Err(StoreError("the enrollment is no longer pending".into()).into());
            };
            let pending = Zeroizing::new(get::<Vec<u8>>(&r, 0)?);
            let secret = self.open_secret(&pending, name, "pending-totp")?;
            let sealed = Zeroizing::new(self.seal(secret.as_bytes(), name, "totp")?);
            let alg: String = get(&r, 1)?;
            let digits: i16 = get(&r, 2)?;
            let period: i64 = get(&r, 3)?;
            tx.exec(
                "INSERT INTO totp (name, secret, algorithm, digits, period, created, last_used)
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
                &[&name, &sealed.as_slice(), &alg, &digits, &period, &now],
            )?;
            ensure_user(tx, name)?;
            tx.exec(
                "UPDATE users SET last_totp_step = $2, failures = 0 WHERE name = $1",
                &[&name, &step],
            )?;
            let codes_set = apply_codes(tx, name, codes)?;
            Ok(Activation::Done { codes_set })
        })
    }

    fn accept_totp_step(
        &mut self,
        uid: u32,
        step: u64,
        now: i64,
        audit: &AuditRecord,
    ) -> StoreResult<bool> {
        let name = self.name(uid)?;
        let host = self.host.clone();
        self.with_tx(|tx| {
            let step = step_i64(step)?;
            if !check_known(tx, &name, uid)? {
                return Ok(false);
            }
            // The condition is in the UPDATE: a concurrent acceptance of the same step (on any
            // host) waits for the row lock, then finds the step taken.
            let changed = tx.exec(
                "UPDATE users SET last_totp_step = $2, failures = 0, lock_level = 0
                 WHERE name = $1 AND (last_totp_step IS NULL OR last_totp_step < $2)",
                &[&name, &step],
            )?;
            if changed == 1 {
                tx.exec(
                    "UPDATE totp SET last_used = $2 WHERE name = $1",
                    &[&name, &now],
                )?;
                insert_audit(tx, audit, &host)?;
            }
            Ok(changed == 1)
        })
    }

    fn unused_recovery(&self, uid: u32) -> StoreResult<Vec<StoredCode>> {
        self.recovery_codes(uid, UNUSED_CODES)
    }

    fn used_recovery(&self, uid: u32) -> StoreResult<Vec<StoredCode>> {
        self.recovery_codes(uid, USED_CODES)
    }

    fn consume_recovery(
        &mut self,
        uid: u32,
        id: i64,
        now: i64,
        audit: &AuditRecord,
    ) -> StoreResult<bool> {
        let name = self.name(uid)?;
        let host = self.host.clone();
        self.with_tx(|tx| {
            if !check_known(tx, &name, uid)? {
                return Ok(false);
            }
            let changed = tx.exec(
                "UPDATE recovery SET used_at = $3 WHERE id = $2 AND name = $1 AND used_at IS NULL",
                &[&name, &id, &now],
            )?;
            if changed == 1 {
                reset_failures(tx, &name)?;
                insert_audit(tx, audit, &host)?;
            }
            Ok(changed == 1)
        })
    }

    fn replace_recovery(&mut self, uid: u32, codes: &[StoredCode]) -> StoreResult<()> {
        let name = self.name(uid)?;
        let host = self.host.clone();
        self.with_tx(|tx| {
            bind(tx, &name, uid, &host, now_secs())?;
            set_recovery(tx, &name, codes)
        })
    }

    fn record_failure(
        &mut self,
        uid: u32,
        name: &str,
        now: i64,
        limit: &RateLimit,
        audit: &AuditRecord,
    ) -> StoreResult<FailureOutcome> {
        let host = self.host.clone();
        self.with_tx(|tx| {
            bind(tx, name, uid, &host, now)?;
            ensure_user(tx, name)?;
            insert_audit(tx, audit, &host)?;
            // Locked: failures on several hosts at once are all counted.
            let r = tx.one(
                "SELECT failures, lock_level FROM users WHERE name = $1 FOR UPDATE",
                &[&name],
            )?;
            let failures = u32_of(i64::from(get::<i32>(&r, 0)?), "failures")?;
            let level = u32_of(i64::from(get::<i32>(&r, 1)?), "lock level")?;
            let to_i32 = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
            let (failures, lock) = limit.after_failure(failures, level, now);
            if let Some((level, until)) = lock {
                tx.exec(
                    "UPDATE users SET failures = 0, lock_level = $2, locked_until = $3
                     WHERE name = $1",
                    &[&name, &to_i32(level), &until],
                )?;
                Ok(FailureOutcome {
                    failures,
                    locked_until: Some(until),
                })
            } else {
                tx.exec(
                    "UPDATE users SET failures = $2 WHERE name = $1",
                    &[&name, &to_i32(failures)],
                )?;
                Ok(FailureOutcome {
                    failures,
                    locked_until: None,
                })
            }
        })
    }

    fn set_admin_required(&mut self, uid: u32, name: &str, required: bool) -> StoreResult<()> {
        let host = self.host.clone();
        self.with_tx(|tx| {
            bind(tx, name, uid, &host, now_secs())?;
            ensure_user(tx, name)?;
            tx.exec(
                "UPDATE users SET admin_required = $2 WHERE name = $1",
                &[&name, &required],
            )?;
            Ok(())
        })
    }

    fn start_grace(&mut self, uid: u32, name: &str, now: i64) -> StoreResult<i64> {
        let host = self.host.clone();
        self.with_tx(|tx| {
            bind(tx, name, uid, &host, now)?;
            ensure_user(tx, name)?;
            tx.exec(
                "UPDATE users SET required_since = $2 WHERE name = $1 AND required_since IS NULL",
                &[&name, &now],
            )?;
            let r = tx.one("SELECT required_since FROM users WHERE name = $1", &[&name])?;
            Ok(get::<Option<i64>>(&r, 0)?.unwrap_or(now))
        })
    }

    fn set_grace_start(&mut self, uid: u32, name: &str, since: Option<i64>) -> StoreResult<()> {
        let host = self.host.clone();
        self.with_tx(|tx| {
            bind(tx, name, uid, &host, now_secs())?;
            ensure_user(tx, name)?;
            tx.exec(
                "UPDATE users SET required_since = $2 WHERE name = $1",
                &[&name, &since],
            )?;
            Ok(())
        })
    }

    fn reset(&mut self, uid: u32) -> StoreResult<()> {
        let name = self.name(uid)?;
        self.with_tx(|tx| {
            if !check_known(tx, &name, uid)? {
                return Ok(());
            }
            tx.exec("DELETE FROM keys WHERE name = $1", &[&name])?;
            tx.exec("DELETE FROM totp WHERE name = $1", &[&name])?;
            tx.exec("DELETE FROM recovery WHERE name = $1", &[&name])?;
            tx.exec("DELETE FROM pending_totp WHERE name = $1", &[&name])?;
            Ok(())
        })
    }

    fn credential_enrolled(&self, rp_id: &str, credential_id: &[u8]) -> StoreResult<bool> {
        self.with_tx(|tx| {
            let rows = tx.query(
                "SELECT 1 FROM keys WHERE rp_id = $1 AND credential_id = $2",
                &[&rp_id, &credential_id],
            )?;
            Ok(!rows.is_empty())
        })
    }

    fn keys(&self, uid: u32) -> StoreResult<Vec<KeyFactor>> {
        let name = self.name(uid)?;
        self.with_tx(|tx| {
            if !check_known(tx, &name, uid)? {
                return Ok(Vec::new());
            }
            let rows = tx.query(
                "SELECT key_name, credential_id, public_key, rp_id, sign_count,
                        user_verification, source, created, last_used
                 FROM keys WHERE name = $1 ORDER BY created, key_name",
                &[&name],
            )?;
            rows.iter()
                .map(|r| {
                    Ok(KeyFactor {
                        name: get(r, 0)?,
                        credential_id: get(r, 1)?,
                        public_key_cose: get(r, 2)?,
                        rp_id: get(r, 3)?,
                        sign_count: u32_of(get(r, 4)?, "key counter")?,
                        user_verification: get(r, 5)?,
                        source: get(r, 6)?,
                        created: get(r, 7)?,
                        last_used: get(r, 8)?,
                    })
                })
                .collect()
        })
    }

    fn add_keys(
        &mut self,
        uid: u32,
        name: &str,
        keys: &[KeyFactor],
        codes: Codes<'_>,
        existing: Existing,
        audit: &AuditRecord,
    ) -> StoreResult<Activation> {
        let host = self.host.clone();
        self.activation(|tx| {
            bind(tx, name, uid, &host, now_secs())?;
            tx.exec(
                "SELECT 1 FROM accounts WHERE name = $1 FOR UPDATE",
                &[&name],
            )?;
            let (has_totp, has_keys) = factors_in(tx, name)?;
            if existing == Existing::NoFactor && (has_totp || has_keys) {
                return Err(Fail::Rollback(Activation::FactorExists));
            }
            ensure_user(tx, name)?;
            for k in keys {
                let r = tx.one(
                    "SELECT count(*) FROM keys WHERE (name = $1 AND key_name = $2)
                        OR (rp_id = $3 AND credential_id = $4)",
                    &[&name, &k.name, &k.rp_id, &k.credential_id],
                )?;
                if get::<i64>(&r, 0)? > 0 {
                    return Err(Fail::Rollback(Activation::Taken));
                }
                // Another host adding the same credential at this moment: the unique index
                // refuses one of them, reported as taken (the transaction is rolled back).
                let inserted = insert_key(tx, name, k)?;
                if inserted != 1 {
                    return Err(Fail::Rollback(Activation::Taken));
                }
            }
            let codes_set = apply_codes(tx, name, codes)?;
            insert_audit(tx, audit, &host)?;
            Ok(Activation::Done { codes_set })
        })
    }

    fn accept_key_assertion(
        &mut self,
        uid: u32,
        credential_id: &[u8],
        sign_count: u32,
        now: i64,
        audit: &AuditRecord,
    ) -> StoreResult<bool> {
        let name = self.name(uid)?;
        let host = self.host.clone();
        self.with_tx(|tx| {
            if !check_known(tx, &name, uid)? {
                return Ok(false);
            }
            let count = i64::from(sign_count);
            let changed = tx.exec(
                "UPDATE keys SET sign_count = $3, last_used = $4
                 WHERE name = $1 AND credential_id = $2
                   AND (sign_count < $3 OR (sign_count = 0 AND $3 = 0))",
                &[&name, &credential_id, &count, &now],
            )?;
            if changed == 1 {
                reset_failures(tx, &name)?;
                insert_audit(tx, audit, &host)?;
            }
            Ok(changed == 1)
        })
    }

    fn remove_key(&mut self, uid: u32, name: &str, audit: &AuditRecord) -> StoreResult<bool> {
        let account = self.name(uid)?;
        let host = self.host.clone();
        self.with_tx(|tx| {
            if !check_known(tx, &account, uid)? {
                return Ok(false);
            }
            let removed = tx.exec(
                "DELETE FROM keys WHERE name = $1 AND key_name = $2",
                &[&account, &name],
            )?;
            if removed == 1 {
                insert_audit(tx, audit, &host)?;
            }
            Ok(removed == 1)
        })
    }

    fn unlock(&mut self, uid: u32) -> StoreResult<()> {
        let name = self.name(uid)?;
        self.with_tx(|tx| {
            if !check_known(tx, &name, uid)? {
                return Ok(());
            }
            tx.exec(
                "UPDATE users SET failures = 0, lock_level = 0, locked_until = 0 WHERE name = $1",
                &[&name],
            )?;
            Ok(())
        })
    }

    fn append_audit(&mut self, record: &AuditRecord) -> StoreResult<()> {
        let host = self.host.clone();
        self.with_tx(|tx| insert_audit(tx, record, &host))
    }

    fn prune_audit(&mut self, before: i64, keep_max: u64, batch: u32) -> StoreResult<u64> {
        self.with_tx(|tx| {
            let batch = i64::from(batch);
            let old = tx.exec(
                "DELETE FROM audit WHERE id IN (
                     SELECT id FROM audit WHERE time < $1 ORDER BY time LIMIT $2)",
                &[&before, &batch],
            )?;
            let left = batch.saturating_sub(old as i64).max(0) as u64;
            let mut excess = 0u64;
            if left > 0 {
                // One prune at a time in the fleet: two hosts counting the same excess would
                // both delete it.
                tx.exec("SELECT pg_advisory_xact_lock(7102202613)", &[])?;
                let total: i64 = get(&tx.one("SELECT count(*) FROM audit", &[])?, 0)?;
                let over = (total.max(0) as u64).saturating_sub(keep_max).min(left);
                if over > 0 {
                    // Over the cap: the accounts with the most records give their oldest first.
                    // An account is a uid on a host: uids need not name the same person on
                    // two hosts, so one host's flooder displaces only their own records.
                    let rows = tx.query(
                        "SELECT host, uid, count(*), min(id) FROM audit GROUP BY host, uid",
                        &[],
                    )?;
                    let mut counts = Vec::with_capacity(rows.len());
                    for r in rows {
                        let host: String = get(&r, 0)?;
                        let uid: i64 = get(&r, 1)?;
                        let n: i64 = get(&r, 2)?;
                        let oldest: i64 = get(&r, 3)?;
                        counts.push(((host, uid), n.max(0) as u64, oldest));
                    }
                    for ((host, uid), n) in audit_shares(&counts, over) {
                        excess += tx.exec(
                            "DELETE FROM audit WHERE id IN (
                                 SELECT id FROM audit WHERE uid = $1 AND host = $2
                                 ORDER BY time, id LIMIT $3)",
                            &[&uid, &host, &i64::try_from(n).unwrap_or(i64::MAX)],
                        )?;
                    }
                }
            }
            Ok(old + excess)
        })
    }

    fn audit(&self, uid: Option<u32>, since: i64, limit: u32) -> StoreResult<Vec<AuditRecord>> {
        let uid = uid.map(i64::from);
        self.with_tx(|tx| {
            let rows = tx.query(
                "SELECT time, uid, user_name, event, result, service, rhost, actor, detail, host
                 FROM (SELECT * FROM audit WHERE ($1::BIGINT IS NULL OR uid = $1) AND time >= $2
                       ORDER BY id DESC LIMIT $3) newest
                 ORDER BY id",
                &[&uid, &since, &i64::from(limit)],
            )?;
            rows.iter()
                .map(|r| {
                    let detail: String = get(r, 8)?;
                    let host: String = get(r, 9)?;
                    Ok(AuditRecord {
                        time: get(r, 0)?,
                        uid: u32_of(get(r, 1)?, "uid")?,
                        user: get(r, 2)?,
                        event: get(r, 3)?,
                        result: get(r, 4)?,
                        service: get(r, 5)?,
                        rhost: get(r, 6)?,
                        actor: get(r, 7)?,
                        detail: with_host(detail, &host),
                    })
                })
                .collect()
        })
    }

    fn known_uids(&self) -> StoreResult<Vec<u32>> {
        self.with_tx(|tx| {
            let rows = tx.query(
                "SELECT DISTINCT a.uid FROM accounts a
                 WHERE EXISTS(SELECT 1 FROM users u WHERE u.name = a.name)
                    OR EXISTS(SELECT 1 FROM totp t WHERE t.name = a.name)
                    OR EXISTS(SELECT 1 FROM recovery r WHERE r.name = a.name)
                    OR EXISTS(SELECT 1 FROM keys k WHERE k.name = a.name)
                 ORDER BY a.uid",
                &[],
            )?;
            rows.iter().map(|r| u32_of(get(r, 0)?, "uid")).collect()
        })
    }

    fn offline_uids(&self) -> StoreResult<Vec<u32>> {
        self.with_tx(|tx| {
            let rows = tx.query(
                "SELECT DISTINCT a.uid FROM accounts a
                 WHERE EXISTS(SELECT 1 FROM users u WHERE u.name = a.name AND u.admin_required)
                    OR EXISTS(SELECT 1 FROM totp t WHERE t.name = a.name)
                    OR EXISTS(SELECT 1 FROM keys k WHERE k.name = a.name)
                    OR EXISTS(SELECT 1 FROM recovery r WHERE r.name = a.name
                              AND r.used_at IS NULL)
                 ORDER BY a.uid",
                &[],
            )?;
            rows.iter().map(|r| u32_of(get(r, 0)?, "uid")).collect()
        })
    }
}

/// An audit row's detail with the host that wrote it.
fn with_host(detail: String, host: &str) -> String {
    match (detail.is_empty(), host.is_empty()) {
        (_, true) => detail,
        (true, false) => format!("host {host}"),
        (false, false) => format!("{detail}; host {host}"),
    }
}
