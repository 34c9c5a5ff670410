//! Hostile input without a token must not turn into a log flood: the real binary
//! (a process of its own, so its log lines can be counted) takes thousands of bad
//! namespace CONNECTs, bad tokens, oversized request ids and refused requests, and
//! writes a bounded number of lines, none of them carrying the attacker's bulk.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use coursecast_client::raw::{RawOptions, RawSocket};
use uuid::Uuid;

use crate::helpers::eventually;

/// A server process on a free port, its log lines collected as they come.
struct Process {
    child: Child,
    base: String,
    lines: Arc<Mutex<Vec<String>>>,
    data_dir: std::path::PathBuf,
}

impl Process {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let data_dir = std::env::temp_dir().join(format!("coursecast-hostile-{}", Uuid::new_v4()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_coursecast"))
            .env_clear()
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("DATA_DIR", &data_dir)
            .env("JWT_SECRET", "hostile-test-secret-0123456789abcdef")
            .env("LOG_FORMAT", "json")
            .env("LOG_LEVEL", "info")
            .env("SOCKET_CONNECTS_PER_SECOND_PER_IP", "100000")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server binary");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for output in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(output).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        eventually("the server to listen", Duration::from_secs(30), || {
            let request = client.get(format!("{base}/healthz")).send();
            async move { request.await.is_ok() }
        })
        .await;
        Self { child, base, lines, data_dir }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

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
    let server = Process::start().await;
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
    // Let the last lines reach the pipe before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;

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
