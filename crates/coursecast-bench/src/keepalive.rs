//! One HTTP/1.1 keep-alive connection per polling client, written by hand: with
//! thousands of clients polling, `reqwest` (pool look-ups, header maps, a task
//! hand-off per request) cost the generator about 100 µs per poll and made it,
//! not the server, the bottleneck. This speaks only what the polling scenario needs:
//! `GET` with a bearer token, responses framed by `Content-Length`.

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
}

impl Failure {
    pub fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Request => "request",
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
        match tokio::time::timeout(timeout, self.exchange(path, token)).await {
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
        conn.get_mut().write_all(&self.request).await.map_err(|_| Failure::Request)?;
        read_response(conn).await
    }
}

async fn read_response(conn: &mut BufReader<TcpStream>) -> Result<(u16, Vec<u8>), Failure> {
    let mut line = String::new();
    read_line(conn, &mut line).await?;
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
