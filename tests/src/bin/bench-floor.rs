//! BENCHMARK ONLY: the floor service of `make bench`, the least a daemon behind a login must
//! do, served on the bus as `org.twofactor.BenchFloor1`:
//! - `Begin(user) -> handle`: looks the caller up (`GetConnectionUnixUser`), refuses all but
//!   root, hands out a handle;
//! - `Continue(handle, answer) -> accepted`: one durable SQLite commit (WAL,
//!   `synchronous=FULL`, as twofactord's store) counting the user's login, then yes.
//!
//! Its PAM module is `libpam_bench_floor.so` (tests/pam-floor).
//!
//! usage: bench-floor ADDRESS DATABASE
//!
//! Prints `ready` on stdout once it owns its name, then serves until killed.
#![allow(clippy::expect_used)]

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use zbus::message::Header;

const NAME: &str = "org.twofactor.BenchFloor1";
const PATH: &str = "/org/twofactor/BenchFloor1";

struct Floor {
    dbus: zbus::fdo::DBusProxy<'static>,
    db: Mutex<rusqlite::Connection>,
    next: AtomicU64,
}

#[zbus::interface(name = "org.twofactor.BenchFloor1")]
impl Floor {
    async fn begin(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        user: String,
    ) -> zbus::fdo::Result<String> {
        let sender = hdr
            .sender()
            .ok_or_else(|| zbus::fdo::Error::AccessDenied("no sender".into()))?;
        let uid = self
            .dbus
            .get_connection_unix_user(sender.clone().into())
            .await?;
        if uid != 0 {
            return Err(zbus::fdo::Error::AccessDenied("root only".into()));
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Ok(format!("{n}:{user}"))
    }

    #[zbus(name = "Continue")]
    async fn continue_login(&self, handle: String, _answer: String) -> zbus::fdo::Result<bool> {
        let user = handle.split_once(':').map(|(_, u)| u).unwrap_or_default();
        let db = self
            .db
            .lock()
            .map_err(|_| zbus::fdo::Error::Failed("poisoned".into()))?;
        // Autocommit: one transaction, one durable commit.
        db.execute(
            "INSERT INTO logins (user, count) VALUES (?1, 1)
             ON CONFLICT (user) DO UPDATE SET count = count + 1",
            [user],
        )
        .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))?;
        Ok(true)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [address, database] = args.as_slice() else {
        eprintln!("usage: bench-floor ADDRESS DATABASE");
        std::process::exit(2);
    };
    let db = rusqlite::Connection::open(database).expect("open the database");
    db.pragma_update(None, "journal_mode", "WAL").expect("WAL");
    db.pragma_update(None, "synchronous", "FULL").expect("FULL");
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS logins (user TEXT PRIMARY KEY, count INTEGER NOT NULL)",
    )
    .expect("schema");
    zbus::block_on(async {
        let conn = zbus::connection::Builder::address(address.as_str())
            .build()
            .await
            .expect("connect");
        let floor = Floor {
            dbus: zbus::fdo::DBusProxy::new(&conn).await.expect("DBus proxy"),
            db: Mutex::new(db),
            next: AtomicU64::new(0),
        };
        conn.object_server().at(PATH, floor).await.expect("serve");
        conn.request_name(NAME).await.expect("own the name");
        println!("ready");
        std::io::stdout().flush().expect("stdout");
        std::future::pending::<()>().await;
    });
}
