//! One HTTP/1.1 keep-alive connection per polling client, written by hand: with
//! thousands of clients polling, `reqwest` (pool look-ups, header maps, a task
//! hand-off per request) cost the generator about 100 µs per poll and made it,
//! not the server, the bottleneck. This speaks only what the polling scenario needs:
//! `GET` with a bearer token, responses framed by `Content-Length`, and one retry on
//! a fresh connection when a reused one turns out closed (servers close idle
//! keep-alive connections; Node after 5 s).

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Why a request failed, as the scenario counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Connect,
    Timeout,
    /// The connection broke or the response was not HTTP/1.1 framed by length.
    Request,
    /// The connection was closed before any of the response arrived.
    Closed,
}

impl Failure {
    pub fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Request => "request",
            Self::Closed => "closed",
        }
    }
}

pub struct KeepAlive {
    addr: SocketAddr,
    host: String,
    conn: Option<TcpStream>,
    request: Vec<u8>,
    /// What was read from the connection and not yet returned.
    received: Vec<u8>,
}

impl KeepAlive {
    /// `base` is `http://host:port`; nothing connects until the first request.
    pub async fn new(base: &str) -> anyhow::Result<Self> {
        let host = base.strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("{base}: only http:// is spoken"))?;
        let host = host.trim_end_matches('/').to_owned();
        let addr =
            tokio::net::lookup_host(&host).await?.next().ok_or_else(|| anyhow::anyhow!("{host} does not resolve"))?;
        Ok(Self { addr, host, conn: None, request: Vec::with_capacity(512), received: Vec::new() })
    }

    /// `GET path` within `timeout`; the status and body. A broken connection is
    /// dropped and the next request opens a new one.
    pub async fn get(&mut self, path: &str, token: &str, timeout: Duration) -> Result<(u16, Vec<u8>), Failure> {
        let exchange = async {
            let reused = self.conn.is_some();
            match self.exchange(path, token).await {
                Err(Failure::Closed) if reused => {
                    self.conn = None;
                    self.exchange(path, token).await
                }
                other => other,
            }
        };
        let outcome = tokio::time::timeout(timeout, exchange).await;
        match outcome {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(failure)) => {
                self.conn = None;
                Err(failure)
            }
            Err(_) => {
                self.conn = None;
                Err(Failure::Timeout)
            }
        }
    }

    async fn exchange(&mut self, path: &str, token: &str) -> Result<(u16, Vec<u8>), Failure> {
        self.request.clear();
        for part in ["GET ", path, " HTTP/1.1\r\nhost: ", &self.host, "\r\nauthorization: Bearer ", token, "\r\n\r\n"] {
            self.request.extend_from_slice(part.as_bytes());
        }
        if self.conn.is_none() {
            let stream = TcpStream::connect(self.addr).await.map_err(|_| Failure::Connect)?;
            stream.set_nodelay(true).map_err(|_| Failure::Connect)?;
            self.conn = Some(stream);
            self.received.clear();
        }
        let conn = self.conn.as_mut().ok_or(Failure::Connect)?;
        conn.write_all(&self.request).await.map_err(|_| Failure::Closed)?;
        read_response(conn, &mut self.received).await
    }
}

/// Reads one response into `received` (read in as large pieces as the socket has,
/// not line by line: this runs once per poll on the machine being measured).
async fn read_response(conn: &mut TcpStream, received: &mut Vec<u8>) -> Result<(u16, Vec<u8>), Failure> {
    let head_len = loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        // Nothing of the response yet: the server closed the connection.
        let nothing_yet = received.is_empty();
        if read_more(conn, received).await? == 0 {
            return Err(if nothing_yet { Failure::Closed } else { Failure::Request });
        }
    };
    let (status, length) = parse_head(&received[..head_len]).ok_or(Failure::Request)?;
    let total = head_len + length;
    while received.len() < total {
        if read_more(conn, received).await? == 0 {
            return Err(Failure::Request);
        }
    }
    let body = received[head_len..total].to_vec();
    received.drain(..total);
    Ok((status, body))
}

async fn read_more(conn: &mut TcpStream, received: &mut Vec<u8>) -> Result<usize, Failure> {
    received.reserve(4096);
    conn.read_buf(received).await.map_err(|_| Failure::Request)
}

/// The status and `Content-Length` of a response head.
fn parse_head(head: &[u8]) -> Option<(u16, usize)> {
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let length = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
    })?;
    Some((status, length))
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    /// Answers one request per connection, then closes it (as a server whose
    /// keep-alive timeout passed would).
    async fn one_shot_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let n = stream.read(&mut buf).await.unwrap();
                    let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                    assert!(request.starts_with("GET /x?a=1 HTTP/1.1\r\n"), "{request}");
                    assert!(request.contains("\r\nauthorization: Bearer tok\r\n"), "{request}");
                    let answer = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 11\r\n\r\n{\"ok\":true}";
                    stream.write_all(answer.as_bytes()).await.unwrap();
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn reads_framed_responses_and_retries_a_closed_connection() {
        let addr = one_shot_server().await;
        let mut client = KeepAlive::new(&format!("http://{addr}")).await.unwrap();
        let expected = Ok((503, b"{\"ok\":true}".to_vec()));
        assert_eq!(client.get("/x?a=1", "tok", Duration::from_secs(5)).await, expected);
        // That connection is closed now: the next request goes out on a new one.
        assert_eq!(client.get("/x?a=1", "tok", Duration::from_secs(5)).await, expected);
    }

    /// A response whose head and body arrive in separate pieces, split mid-line.
    #[tokio::test]
    async fn reads_a_response_that_arrives_in_pieces() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            for _ in 0..2 {
                let _ = stream.read(&mut buf).await.unwrap();
                for piece in ["HTTP/1.1 200 OK\r\nconte", "nt-length: 7\r\n\r", "\n{\"a\"", ":1}"] {
                    stream.write_all(piece.as_bytes()).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        let mut client = KeepAlive::new(&format!("http://{addr}")).await.unwrap();
        for _ in 0..2 {
            assert_eq!(client.get("/y", "tok", Duration::from_secs(5)).await, Ok((200, b"{\"a\":1}".to_vec())));
        }
    }

    #[test]
    fn a_head_without_a_length_or_status_is_refused() {
        assert_eq!(parse_head(b"HTTP/1.1 204 No Content\r\nContent-Length:0\r\n\r\n"), Some((204, 0)));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"), None);
        assert_eq!(parse_head(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n"), None);
    }

    #[tokio::test]
    async fn no_server_is_a_connect_failure() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let mut client = KeepAlive::new(&format!("http://{addr}")).await.unwrap();
        assert_eq!(client.get("/x", "tok", Duration::from_secs(5)).await, Err(Failure::Connect));
    }
}
