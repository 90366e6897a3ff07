//! Login benchmark: PAM authentications through the real module, bus and daemon, timed in
//! process (libpam via `pam_start_confdir`), with a bare bus round trip measured in the same
//! run as the floor. Prints p50/p90/p99 per path.
//!
//! usage: bench-login [N]   (default 1000; needs root, like the tests)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use twofactor_tests::pam::{Script, authenticate};
use twofactor_tests::*;

fn stats(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let pct = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    let mean = v.iter().sum::<Duration>() / v.len() as u32;
    println!(
        "| {name} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
        v.len(),
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.9).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3
    );
}

fn login(env: &Env, user: &str, answer: Option<&str>, want: i32) -> Duration {
    let mut script = Script {
        answers: answer.map(|a| vec![a.to_string()]).unwrap_or_default(),
        transcript: Vec::new(),
        pause: Duration::ZERO,
    };
    let t = Instant::now();
    let (rc, err, _) = authenticate(&env.pamd, "tf-alone", user, None, None, &mut script)
        .unwrap_or_else(|e| panic!("{e}"));
    let d = t.elapsed();
    assert_eq!(rc, want, "{user}: {err} {:?}", script.transcript);
    d
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let env = Env::new(
        "default_mode = \"optional\"\n[login]\nattempts = 1\n[rate_limit]\nmax_failures = 1000\n",
    );
    let mut recovery = Vec::new();
    for u in [ALICE, BOB, CAROL] {
        let e = env.enroll(u);
        recovery.extend(e.recovery.into_iter().map(|c| (u, c)));
    }

    // The floor: what any module pays to ask a daemon anything: connect to the bus, one
    // method call to the bus daemon, disconnect — on one thread, as the module does.
    let bus_round_trip = |address: &str| {
        zbus::block_on(async {
            let conn = zbus::connection::Builder::address(address)
                .build()
                .await
                .expect("connect");
            let dbus = zbus::fdo::DBusProxy::new(&conn).await.expect("proxy");
            let _ = dbus.get_id().await.expect("GetId");
            let _ = conn.close().await;
        })
    };
    for _ in 0..50 {
        bus_round_trip(&env.address);
        let _ = login(&env, "nobody", None, rc::PERM_DENIED);
    }

    let mut floor = Vec::with_capacity(n);
    let mut not_required = Vec::with_capacity(n);
    let mut wrong = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        bus_round_trip(&env.address);
        floor.push(t.elapsed());
        // Optional and not enrolled: BeginLogin -> not-required (PAM_IGNORE).
        not_required.push(login(&env, "nobody", None, rc::PERM_DENIED));
        // Enrolled: BeginLogin -> prompt -> Continue(wrong code) -> denied, with the failure
        // written durably. A wrong code must cost no less than a right one (same path).
        wrong.push(login(&env, ALICE, Some("000000"), rc::AUTH_ERR));
        if i % 900 == 899 {
            env.ctl(&["admin", "unlock", ALICE]).ok();
        }
    }
    // Successful logins: each recovery code once (the same prompt and path as a TOTP code,
    // plus the code's hash check and the durable "used" mark).
    let mut success = Vec::new();
    for (u, c) in &recovery {
        success.push(login(&env, u, Some(c), rc::SUCCESS));
    }
    println!("| path | logins | p50 ms | p90 ms | p99 ms | mean ms |");
    println!("|---|---|---|---|---|---|");
    stats("floor: bus connect + 1 call + close", floor.clone());
    stats("not required (BeginLogin only)", not_required.clone());
    stats("enrolled, wrong code (Begin + Continue)", wrong.clone());
    stats("enrolled, recovery code accepted", success);
    let p50 = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    println!(
        "\nratio p50 wrong-code login / floor: {:.2}",
        p50(wrong).as_secs_f64() / p50(floor).as_secs_f64()
    );
}
