//! The listener's bounds: slowloris-style clients, connections that say nothing, and
//! the cap on open connections per address. Raw TCP, since a well-behaved HTTP
//! client cannot misbehave this way.

use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{TestApp, eventually};

/// The value of one counter line of `/metrics` (0 when absent).
async fn counter(app: &TestApp, line_prefix: &str) -> f64 {
    let text = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find(|line| line.starts_with(line_prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

/// Whether the server has closed `stream` (a read sees EOF or a reset).
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline.into(), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            // A response (the refusal of a bad request) may come first; keep reading.
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn slowloris_clients_are_closed_at_the_header_deadline_and_counted() {
    let app = TestApp::spawn_with(|s| s.http_header_timeout_secs = 1).await;
    let header_timeouts = r#"coursecast_connections_closed_total{reason="header_timeout"}"#;
    let before = counter(&app, header_timeouts).await;
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        slow.push(stream);
    }
    // A byte every 200 ms each: never a whole head.
    let dribble = tokio::spawn(async move {
        let mut closed = 0;
        for _ in 0..15 {
            tokio::time::sleep(Duration::from_millis(200)).await; // the slow client's pace
            for stream in &mut slow {
                let _ = stream.write_all(b"X").await;
            }
        }
        for stream in &mut slow {
            if closed_by_server(stream, Duration::from_millis(100)).await {
                closed += 1;
            }
        }
        closed
    });
    assert_eq!(dribble.await.unwrap(), 50, "every slowloris connection is closed");
    assert!(started.elapsed() < Duration::from_secs(5));
    eventually("the closes to be counted", Duration::from_secs(5), || async {
        counter(&app, header_timeouts).await - before >= 50.0
    })
    .await;
    assert_eq!(app.get("/healthz", None).await.status, 200, "honest clients are still served");
}

#[tokio::test]
async fn a_connection_that_says_nothing_is_closed_after_the_first_byte_deadline() {
    let app = TestApp::spawn_with(|s| s.http_first_byte_timeout_secs = 1).await;
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    let started = Instant::now();
    assert!(closed_by_server(&mut silent, Duration::from_secs(3)).await, "a silent connection stays open");
    assert!(started.elapsed() >= Duration::from_millis(900), "closed before its deadline: {:?}", started.elapsed());
}

#[tokio::test]
async fn connections_per_address_are_capped_and_a_freed_slot_is_reused() {
    let app = TestApp::spawn_with(|s| s.max_connections_per_ip = 5).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(TcpStream::connect(app.addr).await.unwrap());
    }
    // Every held connection is counted only once accepted: wait until a sixth is refused.
    eventually("a sixth connection to be refused", Duration::from_secs(5), || async {
        let mut sixth = TcpStream::connect(app.addr).await.unwrap();
        closed_by_server(&mut sixth, Duration::from_millis(200)).await
    })
    .await;
    drop(held.pop());
    eventually("the freed slot to serve a request", Duration::from_secs(5), || async {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        if stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.is_err() {
            return false;
        }
        let mut response = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.read_to_string(&mut response)).await;
        response.starts_with("HTTP/1.1 200")
    })
    .await;
}
