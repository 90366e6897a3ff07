//! Calls daemon methods with placeholder arguments on one bus connection and prints, for each,
//! whether the daemon let the call through its authorization (tests/tests/authz_matrix.rs).
//!
//! usage: authz-probe ADDRESS, then on standard input one call a line: `INTERFACE METHOD
//! TARGET` (TARGET `-`: no user argument; `""` is passed for methods that take one). Prints
//! `INTERFACE METHOD TARGET RESULT` a line, RESULT `ok` or the D-Bus error name.
//!
//! Login.Continue / Cancel / Assert / SkipKey act on a login handle, not a user: the probe
//! first begins a login for TARGET on this same connection and uses its handle (a made-up one
//! if that BeginLogin was refused).
#![allow(clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::BufRead;

use twofactor_bus::{BUS_NAME, LoginProxy, OBJECT_PATH};
use zbus::Connection;

type Assertion = (Vec<u8>, Vec<u8>, Vec<u8>);
type KeyImport = (String, String, Vec<u8>, Vec<u8>, bool);

fn result<T>(r: zbus::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(zbus::Error::MethodError(name, _, _)) => name.to_string(),
        Err(e) => format!("client-error:{e}"),
    }
}

async fn call<B>(conn: &Connection, iface: &str, method: &str, body: &B) -> String
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    let iface = format!("org.twofactor.TwoFactor1.{iface}");
    result(
        conn.call_method(
            Some(BUS_NAME),
            OBJECT_PATH,
            Some(iface.as_str()),
            method,
            body,
        )
        .await,
    )
}

/// A login handle for `user` on this connection ("no-such-handle" when refused).
async fn handle(conn: &Connection, user: &str) -> String {
    let Ok(proxy) = LoginProxy::new(conn).await else {
        return "no-such-handle".into();
    };
    match proxy
        .begin_login(user, HashMap::from([("service", "tf")]))
        .await
    {
        Ok((h, _)) if !h.is_empty() => h,
        _ => "no-such-handle".into(),
    }
}

/// Ends a login the probe began, so that probes stay under the caps on open logins.
async fn cancel(conn: &Connection, handle: &str) {
    let _ = call(conn, "Login", "Cancel", &(handle,)).await;
}

async fn probe(conn: &Connection, iface: &str, method: &str, user: &str) -> String {
    let empty: HashMap<&str, &str> = HashMap::new();
    let assertion: Assertion = (vec![1], vec![2], vec![3]);
    match (iface, method) {
        ("Admin", "Show" | "Require" | "Release" | "Reset" | "Unlock" | "IssueCodes") => {
            call(conn, iface, method, &(user,)).await
        }
        ("Admin", "Grace") => call(conn, iface, method, &(user, -1i64)).await,
        ("Admin", "ImportTotp") => {
            let codes: Vec<String> = Vec::new();
            call(
                conn,
                iface,
                method,
                &(user, "not base32!", "SHA1", 6u32, 30u32, codes),
            )
            .await
        }
        ("Admin", "ImportKeys") => {
            let keys: Vec<KeyImport> = Vec::new();
            call(conn, iface, method, &(user, keys)).await
        }
        ("Admin", "ListUsers" | "ReloadPolicy" | "Backup") => call(conn, iface, method, &()).await,
        ("Enrollment", "PolicyStatus") => call(conn, iface, method, &()).await,
        ("Admin", "Audit") => call(conn, iface, method, &(user, 0i64, 5u32)).await,
        ("Enrollment", "Status") => call(conn, iface, method, &(user,)).await,
        ("Enrollment", "Explain") => call(conn, iface, method, &(user, empty)).await,
        ("Enrollment", "BeginTotp" | "RegenerateRecoveryCodes" | "Disable") => {
            call(conn, iface, method, &("",)).await
        }
        ("Enrollment", "ConfirmTotp") => call(conn, iface, method, &("no-such-id", "")).await,
        ("Enrollment", "RecentEvents") => call(conn, iface, method, &(5u32,)).await,
        ("Enrollment", "BeginKey" | "RemoveKey") => {
            call(conn, iface, method, &("no-such-key", "")).await
        }
        ("Enrollment", "RegisterKey") => {
            call(conn, iface, method, &("no-such-id", vec![0u8])).await
        }
        ("Enrollment", "ConfirmKey" | "ProveWithKey") => {
            call(conn, iface, method, &("no-such-id", assertion)).await
        }
        ("Enrollment", "BeginKeyProof") => call(conn, iface, method, &()).await,
        ("Login", "BeginLogin") => {
            let ctx = HashMap::from([("service", "tf")]);
            call(conn, iface, method, &(user, ctx)).await
        }
        ("Login", "Continue") => {
            let h = handle(conn, user).await;
            let r = call(conn, iface, method, &(h.as_str(), "000000")).await;
            cancel(conn, &h).await;
            r
        }
        ("Login", "Cancel") => {
            let h = handle(conn, user).await;
            call(conn, iface, method, &(h,)).await
        }
        ("Login", "Assert") => {
            let h = handle(conn, user).await;
            let r = call(conn, iface, method, &(h.as_str(), assertion)).await;
            cancel(conn, &h).await;
            r
        }
        ("Login", "SkipKey") => {
            let h = handle(conn, user).await;
            let r = call(conn, iface, method, &(h.as_str(), "no-key")).await;
            cancel(conn, &h).await;
            r
        }
        _ => "no-placeholder-arguments".into(),
    }
}

fn main() {
    let address = std::env::args().nth(1).expect("usage: authz-probe ADDRESS");
    zbus::block_on(async {
        let conn = zbus::connection::Builder::address(address.as_str())
            .build()
            .await
            .expect("connect");
        for line in std::io::stdin().lock().lines() {
            let line = line.expect("stdin");
            let mut parts = line.split_whitespace();
            let (Some(iface), Some(method), Some(target)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let user = if target == "-" { "" } else { target };
            let r = probe(&conn, iface, method, user).await;
            println!("{iface} {method} {target} {r}");
        }
    });
}
