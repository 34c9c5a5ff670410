//! `TRUSTED_PROXIES`: behind a trusted proxy each client named in `X-Forwarded-For`
//! has its own per-address budget; from anyone else the header changes nothing.

use std::process::Command;

use coursecast::http::client_ip::TrustedProxies;
use serde_json::json;

use crate::helpers::TestApp;

/// Failed logins allowed per address in these tests.
const FAILURES: u32 = 3;

/// A server that believes `trusted` with a small budget of failed logins per address.
async fn server(trusted: &str) -> TestApp {
    let trusted = TrustedProxies::parse(trusted).expect("trusted proxies");
    TestApp::spawn_with(|s| {
        s.trusted_proxies = trusted;
        s.login_failures_per_ip_per_minute = FAILURES;
    })
    .await
}

/// A login with a wrong password (an unknown account: no per-account budget is
/// touched) sent with `X-Forwarded-For: forwarded`; the status.
async fn failed_login(app: &TestApp, forwarded: &str) -> u16 {
    let res = app
        .client
        .post(format!("{}/api/auth/login", app.base))
        .header("x-forwarded-for", forwarded)
        .json(&json!({"email": format!("nobody-{}@example.org", uuid::Uuid::new_v4()), "password": "wrong-password"}))
        .send()
        .await
        .expect("login request");
    res.status().as_u16()
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    // The test client connects from 127.0.0.1: it is the trusted proxy here.
    let app = server("127.0.0.1").await;
    for _ in 0..FAILURES {
        assert_eq!(failed_login(&app, "203.0.113.1").await, 401);
    }
    assert_eq!(failed_login(&app, "203.0.113.1").await, 429, "the first client has spent its budget");
    // What the client prepends to the header is not read: the proxy's entry is.
    assert_eq!(failed_login(&app, "198.51.100.9, 203.0.113.1").await, 429, "a spoofed entry does not help");
    assert_eq!(failed_login(&app, "203.0.113.2").await, 401, "another client behind the proxy is not refused");
}

#[tokio::test]
async fn without_trust_forwarded_for_is_ignored() {
    let app = server("").await;
    for i in 0..FAILURES {
        assert_eq!(failed_login(&app, &format!("203.0.113.{i}")).await, 401);
    }
    // Every request counted against 127.0.0.1, whatever it claimed.
    assert_eq!(failed_login(&app, "203.0.113.200").await, 429, "a made-up X-Forwarded-For does not dodge the limit");
}

#[tokio::test]
async fn a_malformed_trusted_proxy_refuses_to_start() {
    // `healthcheck` reads the same settings, and ends on its own should they parse.
    let output = Command::new(env!("CARGO_BIN_EXE_coursecast"))
        .args(["healthcheck", "--deadline-ms", "100"])
        .env("TRUSTED_PROXIES", "10.0.0.0/8, 10.0.0.0/33")
        .env("PORT", "1")
        .current_dir(std::env::temp_dir()) // no repository .env
        .output()
        .expect("run coursecast");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`10.0.0.0/33` is not an IP address or CIDR range"), "{stderr}");
}
