//! Opening authenticated `/chat` sockets and joining a course, each step under a
//! timeout, with failures sorted by kind.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use coursecast_client::{
    ClientError,
    raw::{RawFrame, RawOptions, RawSocket},
};
use serde::Deserialize;
use serde_json::json;

/// The namespace every scenario uses.
pub const NS: &str = "/chat";

/// A socket that joined its course.
pub struct Joined {
    pub socket: RawSocket,
    /// The join ack's `cursor` (the stream head at join).
    pub cursor: i64,
    /// TCP connect to join ack.
    pub elapsed: Duration,
}

/// The parts of a `join` ack the generator reads. Decoding only these keeps its
/// cost the same for every server, whatever else the ack carries (coursecast's first
/// page of `online`, which the bare server leaves empty).
#[derive(Deserialize)]
struct JoinAck {
    ok: bool,
    cursor: Option<i64>,
    error: Option<JoinError>,
}

#[derive(Deserialize)]
struct JoinError {
    code: String,
}

pub struct Dialer {
    base: String,
    local_ips: Vec<IpAddr>,
    next_ip: AtomicUsize,
    pub timeout: Duration,
}

impl Dialer {
    /// `source_ips` > 1 with a loopback server spreads connections over 127.0.0.1..N.
    pub fn new(base: &str, timeout: Duration, source_ips: u8) -> Self {
        let loopback = base.contains("://127.0.0.1") || base.contains("://localhost");
        let local_ips = if loopback && source_ips > 1 {
            (1..=source_ips).map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i))).collect()
        } else {
            Vec::new()
        };
        Self { base: base.trim_end_matches('/').to_owned(), local_ips, next_ip: AtomicUsize::new(0), timeout }
    }

    fn options(&self) -> RawOptions {
        let local_ip = (!self.local_ips.is_empty())
            .then(|| self.local_ips[self.next_ip.fetch_add(1, Ordering::Relaxed) % self.local_ips.len()]);
        RawOptions { local_ip, ..RawOptions::default() }
    }

    /// Opens `/chat` with `auth: {token}` and sends `join {courseId}`; `Err` is the
    /// failure kind (`timeout:join`, `connect_error:RATE_LIMITED`, `http_503`, ...).
    pub async fn connect_join(&self, token: &str, course: &str) -> Result<Joined, String> {
        let started = Instant::now();
        let step = |stage: &'static str| move |err: ClientError| kind(stage, &err);
        let mut socket = within(self.timeout, "open", RawSocket::open(&self.base, NS, &self.options()))
            .await?
            .map_err(step("open"))?;
        within(self.timeout, "namespace", socket.connect_ns(Some(json!({"token": token}))))
            .await?
            .map_err(step("namespace"))?;
        socket.emit("join", &json!({"courseId": course}), Some(0)).await.map_err(step("join"))?;
        let ack = within(self.timeout, "join", socket.wait_ack(0, |_: RawFrame| {})).await?.map_err(step("join"))?;
        let body = ack.find('[').map(|at| &ack[at..]).unwrap_or_default();
        let (answer,): (JoinAck,) = serde_json::from_str(body).map_err(|_| "join:undecodable".to_owned())?;
        if !answer.ok {
            return Err(format!("join:{}", answer.error.map_or("?".to_owned(), |error| error.code)));
        }
        let cursor = answer.cursor.ok_or_else(|| "join:no_cursor".to_owned())?;
        Ok(Joined { socket, cursor, elapsed: started.elapsed() })
    }
}

async fn within<T>(limit: Duration, stage: &str, fut: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(limit, fut).await.map_err(|_| format!("timeout:{stage}"))
}

/// A short, bounded label for a failure.
pub fn kind(stage: &str, err: &ClientError) -> String {
    match err {
        ClientError::Refused(status) => format!("http_{status}"),
        ClientError::ConnectError(message) => format!("connect_error:{message}"),
        ClientError::Timeout => format!("timeout:{stage}"),
        ClientError::Closed => format!("closed:{stage}"),
        ClientError::Io(e) => format!("tcp:{:?}", e.kind()),
        ClientError::WebSocket(e) => format!("ws:{stage}:{}", e.to_string().split(':').next().unwrap_or("?")),
        ClientError::Protocol(_) => format!("protocol:{stage}"),
    }
}
