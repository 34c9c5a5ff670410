//! A small Server-Sent Events reader for the tests: reads a real streaming response
//! chunk by chunk and parses its frames as a browser's `EventSource` would (fields
//! `event`, `id`, `data`, `retry`; comments; a blank line ends an event).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Resp, TestApp};

/// One thing the stream said.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Event(Frame),
    /// A comment line (`: ping`), without the colon and the space.
    Comment(String),
    Retry(u64),
}

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Frame {
    pub event: String,
    /// The block's `id` field, if it had one (the browser keeps the last one).
    pub id: Option<String>,
    pub data: String,
}

impl Frame {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("data of {} is not JSON ({e}): {}", self.event, self.data))
    }
}

/// Parses SSE text fed in arbitrary pieces.
#[derive(Default)]
pub struct Parser {
    pending: String,
    block: Frame,
    has_data: bool,
    retry: Option<u64>,
}

impl Parser {
    /// Feeds text; returns the items completed by it.
    pub fn feed(&mut self, text: &str) -> Vec<Item> {
        self.pending.push_str(text);
        let mut items = Vec::new();
        while let Some(end) = self.pending.find('\n') {
            let line: String = self.pending.drain(..=end).collect();
            let line = line.trim_end_matches('\n').trim_end_matches('\r');
            if line.is_empty() {
                let block = std::mem::take(&mut self.block);
                if std::mem::take(&mut self.has_data) {
                    items.push(Item::Event(Frame {
                        event: if block.event.is_empty() { "message".into() } else { block.event },
                        ..block
                    }));
                }
                if let Some(retry) = self.retry.take() {
                    items.push(Item::Retry(retry));
                }
                continue;
            }
            if let Some(comment) = line.strip_prefix(':') {
                items.push(Item::Comment(comment.trim_start().to_owned()));
                continue;
            }
            let (field, value) =
                line.split_once(':').map_or((line, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
            match field {
                "event" => self.block.event = value.to_owned(),
                "id" => self.block.id = Some(value.to_owned()),
                "data" => {
                    if self.has_data {
                        self.block.data.push('\n');
                    }
                    self.block.data.push_str(value);
                    self.has_data = true;
                }
                "retry" => self.retry = value.parse().ok(),
                other => panic!("unknown SSE field {other:?}"),
            }
        }
        items
    }
}

/// An open event stream.
pub struct SseReader {
    response: reqwest::Response,
    parser: Parser,
    items: std::collections::VecDeque<Item>,
    /// The last id seen, as a browser would resend it in `Last-Event-ID`.
    pub last_id: String,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        Self { response, parser: Parser::default(), items: Default::default(), last_id: String::new() }
    }

    /// The next item, or `None` if the stream ended or nothing came within `within`.
    pub async fn next_item(&mut self, within: Duration) -> Option<Item> {
        let give_up = tokio::time::Instant::now() + within;
        loop {
            if let Some(item) = self.items.pop_front() {
                if let Item::Event(Frame { id: Some(id), .. }) = &item {
                    self.last_id = id.clone();
                }
                return Some(item);
            }
            let chunk = tokio::time::timeout_at(give_up, self.response.chunk()).await.ok()?;
            let chunk = chunk.expect("reading the stream failed")?;
            let text = std::str::from_utf8(&chunk).expect("the stream is UTF-8");
            self.items.extend(self.parser.feed(text));
        }
    }

    /// The next event (comments and `retry` skipped); panics if none comes in time.
    pub async fn event(&mut self, within: Duration) -> Frame {
        loop {
            match self.next_item(within).await {
                Some(Item::Event(frame)) => return frame,
                Some(_) => continue,
                None => panic!("no event within {within:?} (or the stream ended)"),
            }
        }
    }

    /// Reads the `retry` and `ready` that open every stream; returns `ready`.
    pub async fn ready(&mut self, within: Duration) -> Frame {
        assert_eq!(self.next_item(within).await, Some(Item::Retry(2000)), "the stream opens with retry: 2000");
        let ready = self.event(within).await;
        assert_eq!(ready.event, "ready", "{ready:?}");
        ready
    }

    /// True once the server has closed the stream (within `within`).
    pub async fn closed(&mut self, within: Duration) -> bool {
        let give_up = tokio::time::Instant::now() + within;
        loop {
            if !self.items.is_empty() {
                return false;
            }
            match tokio::time::timeout_at(give_up, self.response.chunk()).await {
                Ok(Ok(None)) => return true,
                Ok(Ok(Some(chunk))) => {
                    self.items.extend(self.parser.feed(std::str::from_utf8(&chunk).expect("UTF-8")));
                }
                Ok(Err(_)) => return true,
                Err(_) => return false,
            }
        }
    }
}

/// Event-stream requests.
impl TestApp {
    /// `GET /api/realtime/stream?{query}` with an optional bearer token and
    /// `Last-Event-ID`; the raw response.
    pub async fn stream_request(&self, query: &str, token: Option<&str>, last_id: Option<&str>) -> reqwest::Response {
        let mut request = self.client.get(format!("{}/api/realtime/stream?{query}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(id) = last_id {
            request = request.header("last-event-id", id);
        }
        request.send().await.expect("request failed")
    }

    /// Opens `streams` as `token`; panics unless the stream starts.
    pub async fn open_stream(&self, streams: &str, token: &str, last_id: Option<&str>) -> SseReader {
        let response = self.stream_request(&format!("streams={streams}"), Some(token), last_id).await;
        assert_eq!(response.status(), StatusCode::OK, "{:?}", response.text().await);
        SseReader::new(response)
    }

    /// A refused stream request: its status and JSON error, as other requests.
    pub async fn stream_refusal(&self, query: &str, token: Option<&str>, last_id: Option<&str>) -> Resp {
        let response = self.stream_request(query, token, last_id).await;
        let (status, headers) = (response.status(), response.headers().clone());
        let text = response.text().await.expect("body");
        Resp { status, headers, body: serde_json::from_str(&text).unwrap_or(Value::String(text)) }
    }
}

#[test]
fn the_parser_follows_the_event_stream_format() {
    let mut parser = Parser::default();
    let mut items = parser.feed("retry: 2000\n\nevent: ready\nid: 1.");
    items.extend(parser.feed("2\ndata: {\"a\":1}\n\n: ping\n\ndata: x\ndata: y\n\n"));
    assert_eq!(
        items,
        [
            Item::Retry(2000),
            Item::Event(Frame { event: "ready".into(), id: Some("1.2".into()), data: "{\"a\":1}".into() }),
            Item::Comment("ping".into()),
            Item::Event(Frame { event: "message".into(), id: None, data: "x\ny".into() }),
        ]
    );
}

/// A stream request over a bare TCP connection, for what an HTTP client library
/// hides: closing the socket outright, or a reader with a small receive buffer that
/// does not read at all.
pub async fn raw_stream(app: &TestApp, streams: &str, token: &str, recv_buffer: Option<u32>) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    if let Some(size) = recv_buffer {
        // Set before connecting, so the advertised window is small from the start.
        socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
    }
    let mut tcp = socket.connect(app.addr).await.expect("connect");
    let request = format!(
        "GET /api/realtime/stream?streams={streams} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n",
        app.addr
    );
    tcp.write_all(request.as_bytes()).await.expect("write request");
    tcp
}

/// The body of a chunked HTTP/1.1 response read to its end (the server closed it).
pub async fn read_chunked_to_end(mut tcp: tokio::net::TcpStream, within: Duration) -> String {
    use tokio::io::AsyncReadExt;
    let mut raw = Vec::new();
    tokio::time::timeout(within, tcp.read_to_end(&mut raw)).await.expect("the server did not close").expect("read");
    let raw = String::from_utf8(raw).expect("UTF-8");
    let (head, mut rest) = raw.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if size == 0 {
            return body;
        }
        body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}
