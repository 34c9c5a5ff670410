//! One HTTP/1.1 keep-alive connection per polling client, written by hand: with
//! thousands of clients polling, `reqwest` (pool look-ups, header maps, a task
//! hand-off per request) cost the generator about 100 µs per poll and made it,
//! not the server, the bottleneck. This speaks only what the polling scenario needs:
//! `GET` with a bearer token, responses framed by `Content-Length`, and one retry on
//! a fresh connection when a reused one turns out closed (servers close idle
//! keep-alive connections; Node after 5 s).

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
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
    conn: Option<BufReader<TcpStream>>,
    request: Vec<u8>,
}

impl KeepAlive {
    /// `base` is `http://host:port`; nothing connects until the first request.
    pub async fn new(base: &str) -> anyhow::Result<Self> {
        let host = base.strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("{base}: only http:// is spoken"))?;
        let host = host.trim_end_matches('/').to_owned();
        let addr =
            tokio::net::lookup_host(&host).await?.next().ok_or_else(|| anyhow::anyhow!("{host} does not resolve"))?;
        Ok(Self { addr, host, conn: None, request: Vec::with_capacity(512) })
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
        self.request.extend_from_slice(format!("GET {path} HTTP/1.1\r\nhost: {}\r\n", self.host).as_bytes());
        self.request.extend_from_slice(format!("authorization: Bearer {token}\r\n\r\n").as_bytes());
        if self.conn.is_none() {
            let stream = TcpStream::connect(self.addr).await.map_err(|_| Failure::Connect)?;
            stream.set_nodelay(true).map_err(|_| Failure::Connect)?;
            self.conn = Some(BufReader::with_capacity(4096, stream));
        }
        let conn = self.conn.as_mut().ok_or(Failure::Connect)?;
        conn.get_mut().write_all(&self.request).await.map_err(|_| Failure::Closed)?;
        read_response(conn).await
    }
}

async fn read_response(conn: &mut BufReader<TcpStream>) -> Result<(u16, Vec<u8>), Failure> {
    let mut line = String::new();
    // Nothing of the response yet: the server closed the connection.
    read_line(conn, &mut line).await.map_err(|_| Failure::Closed)?;
    let status = line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or(Failure::Request)?;
    let mut length = None;
    loop {
        read_line(conn, &mut line).await?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let mut body = vec![0; length.ok_or(Failure::Request)?];
    conn.read_exact(&mut body).await.map_err(|_| Failure::Request)?;
    Ok((status, body))
}

async fn read_line(conn: &mut BufReader<TcpStream>, line: &mut String) -> Result<(), Failure> {
    line.clear();
    match conn.read_line(line).await {
        Ok(0) | Err(_) => Err(Failure::Request),
        Ok(_) => Ok(()),
    }
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

    #[tokio::test]
    async fn no_server_is_a_connect_failure() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let mut client = KeepAlive::new(&format!("http://{addr}")).await.unwrap();
        assert_eq!(client.get("/x", "tok", Duration::from_secs(5)).await, Err(Failure::Connect));
    }
}
