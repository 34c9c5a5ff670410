//! Hostile input without a token must not turn into a log flood: the real binary
//! (a process of its own, so its log lines can be counted) takes thousands of bad
//! namespace CONNECTs, bad tokens, oversized request ids and refused requests, and
//! writes a bounded number of lines, none of them carrying the attacker's bulk.

use std::time::Duration;

use coursecast_client::raw::{RawOptions, RawSocket};

use crate::process::ServerProcess;

/// Sends `count` copies of `packet` on one Engine.IO session, then reads what comes back
/// for a moment (the server answers each with a `connect_error`).
async fn flood(base: &str, packet: &str, count: usize) {
    let mut socket = RawSocket::open(base, "/", &RawOptions::default()).await.expect("engine.io session");
    for _ in 0..count {
        // The server may stop reading a session whose answers it cannot send (or cut
        // it): either way the flood ends there, which is also a bounded outcome.
        match tokio::time::timeout(Duration::from_secs(2), socket.send_text(packet.to_owned())).await {
            Ok(Ok(())) => {}
            _ => break,
        }
    }
    // Read the answers for a second: a loop that checks the clock, since frames that
    // are already buffered come back without ever yielding to a timer.
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while tokio::time::Instant::now() < until {
        if !matches!(tokio::time::timeout(Duration::from_millis(200), socket.recv()).await, Ok(Ok(_))) {
            break;
        }
    }
}

#[tokio::test]
async fn unauthenticated_floods_write_a_bounded_number_of_log_lines() {
    let server = ServerProcess::start(None, &[]).await;
    let at_start = server.lines().len();

    flood(&server.base, "40/nope,", 5000).await;
    flood(&server.base, r#"40/chat,{"token":"not-a-token"}"#, 2000).await;
    let client = reqwest::Client::new();
    let huge_id = "x".repeat(60 * 1024);
    for _ in 0..200 {
        let res =
            client.get(format!("{}/api/auth/me", server.base)).header("x-request-id", &huge_id).send().await.unwrap();
        assert_eq!(res.status(), 401, "{:?}", res.headers());
        let echoed = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(echoed.len() <= 128 && echoed != huge_id, "a bad request id is replaced, not echoed");
    }
    for i in 0..500 {
        let res = client.get(format!("{}/no/such/route/{i}", server.base)).send().await.unwrap();
        assert_eq!(res.status(), 404);
    }
    // Count once the log has gone quiet: a count taken early would flatter the bound.
    let mut seen = server.lines().len();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = server.lines().len();
        if now == seen {
            break;
        }
        seen = now;
    }

    let lines = server.lines();
    let caused = &lines[at_start..];
    assert!(
        caused.len() <= 250,
        "{} log lines for 7,700 hostile inputs; the first ones:\n{}",
        caused.len(),
        caused[..20.min(caused.len())].join("\n")
    );
    let longest = caused.iter().map(String::len).max().unwrap_or(0);
    assert!(longest < 4096, "a log line of {longest} bytes");
    assert!(!caused.iter().any(|line| line.contains(&huge_id[..1024])), "the huge request id reached the log");
}
