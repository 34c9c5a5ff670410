//! One Server-Sent Events stream (`GET /api/realtime/stream`) per client, read from a
//! bare TCP connection: the response head, then the chunked body decoded as it
//! arrives, then SSE events split at blank lines. Written by hand for the reason
//! `keepalive` is: with thousands of streams a generic client's per-chunk hand-offs
//! would make the generator, not the server, what is measured.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::keepalive::Failure;

/// One SSE event: its name (`message` when unnamed), id and data lines joined.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    pub name: String,
    pub id: Option<String>,
    pub data: String,
}

pub struct EventStream {
    conn: TcpStream,
    /// Raw bytes read and not yet decoded from the chunked framing.
    raw: Vec<u8>,
    /// Decoded body text not yet split into events.
    text: String,
    /// The body has ended (the terminating chunk came).
    ended: bool,
}

impl EventStream {
    /// Opens `path` (with its query) with a bearer token and an optional
    /// `Last-Event-ID`; the HTTP status, and the stream when it is 200.
    pub async fn open(
        addr: std::net::SocketAddr,
        host: &str,
        path: &str,
        token: &str,
        last_id: Option<&str>,
        timeout: Duration,
    ) -> Result<(u16, Option<Self>), Failure> {
        let opening = async {
            let mut conn = TcpStream::connect(addr).await.map_err(|_| Failure::Connect)?;
            conn.set_nodelay(true).map_err(|_| Failure::Connect)?;
            let resume = last_id.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
                 Accept: text/event-stream\r\n{resume}\r\n"
            );
            conn.write_all(request.as_bytes()).await.map_err(|_| Failure::Request)?;
            let mut raw = Vec::with_capacity(4096);
            let head_end = loop {
                if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                    break end;
                }
                let mut buf = [0u8; 4096];
                match conn.read(&mut buf).await {
                    Ok(0) if raw.is_empty() => return Err(Failure::Closed),
                    Ok(0) | Err(_) => return Err(Failure::Request),
                    Ok(n) => raw.extend_from_slice(&buf[..n]),
                }
            };
            let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| Failure::Request)?;
            let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or(Failure::Request)?;
            let rest = raw[head_end + 4..].to_vec();
            Ok((status, conn, rest))
        };
        let (status, conn, rest) = tokio::time::timeout(timeout, opening).await.map_err(|_| Failure::Timeout)??;
        if status != 200 {
            return Ok((status, None));
        }
        Ok((status, Some(Self { conn, raw: rest, text: String::new(), ended: false })))
    }

    /// The next events (at least one), or `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<Vec<Event>> {
        loop {
            self.decode();
            let events = split_events(&mut self.text);
            if !events.is_empty() {
                return Some(events);
            }
            if self.ended {
                return None;
            }
            let mut buf = [0u8; 16 * 1024];
            match self.conn.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.raw.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Moves every complete chunk from `raw` to `text`.
    fn decode(&mut self) {
        let mut at = 0;
        while let Some(line_end) = self.raw[at..].windows(2).position(|w| w == b"\r\n") {
            let size_line = std::str::from_utf8(&self.raw[at..at + line_end]).unwrap_or("");
            let Ok(size) = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16) else {
                self.ended = true;
                break;
            };
            let data_start = at + line_end + 2;
            if size == 0 {
                self.ended = true;
                at = self.raw.len();
                break;
            }
            if self.raw.len() < data_start + size + 2 {
                break;
            }
            self.text.push_str(&String::from_utf8_lossy(&self.raw[data_start..data_start + size]));
            at = data_start + size + 2;
        }
        self.raw.drain(..at);
    }
}

/// Takes every complete event (ended by a blank line) out of `text`; comments and
/// `retry`-only blocks are skipped.
fn split_events(text: &mut String) -> Vec<Event> {
    let mut events = Vec::new();
    let mut consumed = 0;
    while let Some(end) = text[consumed..].find("\n\n") {
        let block = &text[consumed..consumed + end];
        consumed += end + 2;
        let mut event = Event::default();
        let mut has_data = false;
        for line in block.lines() {
            let (field, value) =
                line.split_once(':').map_or((line, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
            match field {
                "event" => event.name = value.to_owned(),
                "id" => event.id = Some(value.to_owned()),
                "data" => {
                    if has_data {
                        event.data.push('\n');
                    }
                    event.data.push_str(value);
                    has_data = true;
                }
                _ => {}
            }
        }
        if has_data {
            if event.name.is_empty() {
                event.name = "message".into();
            }
            events.push(event);
        }
    }
    text.drain(..consumed);
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_and_keeps_partial_ones() {
        let mut text =
            "retry: 2000\n\nevent: ready\nid: 3\ndata: {}\n\n: ping\n\nevent: message\nid: 4\ndata: {\"seq\""
                .to_owned();
        let events = split_events(&mut text);
        assert_eq!(events, [Event { name: "ready".into(), id: Some("3".into()), data: "{}".into() }]);
        assert_eq!(text, "event: message\nid: 4\ndata: {\"seq\"");
        text.push_str(":4}\n\n");
        assert_eq!(split_events(&mut text)[0].id.as_deref(), Some("4"));
        assert!(text.is_empty());
    }
}
