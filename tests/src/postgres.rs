//! A private PostgreSQL for tests: `initdb` in a temporary directory, Unix socket only
//! (`listen_addresses = ''`), run as the `postgres` system user (PostgreSQL refuses root) via
//! `setpriv`, stopped and removed when dropped. Uses only std and tempfile, so the daemon's own
//! tests include this file too (`#[path]`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian puts the server binaries.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The OS user the server runs as.
pub const PG_OS_USER: &str = "postgres";

/// Whether a PostgreSQL server can be started here.
pub fn available() -> bool {
    Path::new(PG_BIN).join("initdb").exists()
        && Command::new("id")
            .arg(PG_OS_USER)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// A running private server.
pub struct PgServer {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn as_pg(program: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid",
        PG_OS_USER,
        "--regid",
        PG_OS_USER,
        "--init-groups",
        "--",
    ]);
    c.arg(Path::new(PG_BIN).join(program));
    c
}

impl PgServer {
    /// initdb and start. `fsync` stays on: the durability test relies on it.
    pub fn start() -> PgServer {
        assert!(
            available(),
            "PostgreSQL 15 is not installed (scripts/deps.sh installs it)"
        );
        let dir = tempfile::Builder::new()
            .prefix("tf-pg-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let status = Command::new("chown")
            .arg(format!("{PG_OS_USER}:"))
            .arg(dir.path())
            .status()
            .expect("chown");
        assert!(status.success());
        let data = dir.path().join("data");
        let out = as_pg("initdb")
            .args(["-D"])
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-instructions",
            ])
            .current_dir(dir.path())
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut s = PgServer { dir, child: None };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("log");
        let _ = Command::new("chown")
            .arg(format!("{PG_OS_USER}:"))
            .arg(self.dir.path().join("server.log"))
            .status();
        let child = as_pg("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-c", "listen_addresses="])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.socket_dir().display()
            ))
            .args(["-c", "max_connections=100", "-c", "shared_buffers=16MB"])
            .current_dir(self.dir.path())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("postgres");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let ok = Command::new(Path::new(PG_BIN).join("pg_isready"))
                .arg("-h")
                .arg(self.socket_dir())
                .args(["-U", "postgres", "-d", "postgres"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start: {}",
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The data directory.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The directory holding the server's socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// A `store.url` for database `db` as role `user`, over the socket.
    pub fn url(&self, db: &str, user: &str) -> String {
        format!(
            "postgresql:///{db}?host={}&user={user}",
            self.socket_dir().display()
        )
    }

    /// Runs SQL as the superuser in database `db` (psql, stopping at the first error); returns
    /// stdout, or the error text.
    pub fn try_sql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(Path::new(PG_BIN).join("psql"))
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-U", "postgres", "-d", db, "-X", "-q", "-A", "-t"])
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("psql");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    /// [`Self::try_sql`], panicking on an error.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        self.try_sql(db, sql)
            .unwrap_or_else(|e| panic!("SQL failed: {sql}: {e}"))
    }

    /// A new empty database owned by the superuser.
    pub fn create_db(&self, db: &str) {
        self.sql("postgres", &format!("CREATE DATABASE {db}"));
    }

    /// Kills the server and all its backends with SIGKILL (no shutdown checkpoint), as a
    /// crash would: the server runs in its own process group.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", c.id())])
                .status();
            let _ = c.wait();
        }
        // The backends were in the group too; give the kernel a moment to reap them.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.data().join("postmaster.pid").exists()
            && Path::new(&format!("/proc/{}", self.pid_in_file().unwrap_or(0))).exists()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid_in_file(&self) -> Option<u32> {
        std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Starts the server again on the same data (crash recovery runs).
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// Stops the server cleanly (fast shutdown).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}
