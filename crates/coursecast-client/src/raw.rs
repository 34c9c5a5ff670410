//! A lean client for load generation: one namespace socket on its own Engine.IO
//! session, with no background task, no channel and no JSON decoding on the receive
//! path. The caller owns the WebSocket and reads raw frames, so one task can drive
//! many sockets (see [`RawSocket::split`]) and parse only what it needs.
//!
//! [`Connection`](crate::Connection) remains the convenient client for tests.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use futures_util::{
    SinkExt, StreamExt,
    stream::{SplitSink, SplitStream},
};
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream, lookup_host};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{self, Message, Utf8Bytes, http::Uri, protocol::WebSocketConfig},
};

use crate::{ClientError, Packet, expect_open, upgrade_request};

/// The WebSocket of a [`RawSocket`].
pub type RawStream = WebSocketStream<TcpStream>;

/// How a [`RawSocket`] connects.
#[derive(Debug, Clone, Default)]
pub struct RawOptions {
    /// Sent as `Authorization: Bearer <token>`.
    pub bearer: Option<String>,
    /// Sent as `Origin`.
    pub origin: Option<String>,
    /// Local address to connect from (for example one of several loopback addresses,
    /// to spread many connections over more source ports).
    pub local_ip: Option<IpAddr>,
    /// WebSocket read buffer, bytes (default 4 KiB; tungstenite's own is 128 KiB).
    pub read_buffer: Option<usize>,
}

/// What a frame from the server is, without decoding its JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum RawFrame {
    /// An Engine.IO ping: answer with [`RawSocket::pong`] / [`RawWriter::pong`].
    Ping,
    /// A Socket.IO event: the whole text (`42/ns,["name",...]`).
    Event(Utf8Bytes),
    /// A Socket.IO ack with its id; `text` is the whole frame (`43/ns,12[...]`).
    Ack { id: u64, text: Utf8Bytes },
    /// The server disconnected the namespace (`41/ns,`).
    Disconnect,
    /// The Engine.IO session or the WebSocket closed.
    Closed,
    /// Anything else (noop, namespace packets of other kinds).
    Other(Utf8Bytes),
}

impl RawFrame {
    /// Classifies one text frame. `ns_prefix` is what follows the packet type for this
    /// namespace (`"/chat,"`, or `""` for `/`).
    pub fn classify(text: Utf8Bytes, ns_prefix: &str) -> Self {
        let bytes = text.as_bytes();
        match bytes {
            [b'2', ..] => Self::Ping,
            [b'1', ..] => Self::Closed,
            [b'4', b'2', ..] => Self::Event(text),
            [b'4', b'3', ..] => match ack_id(&text[2..], ns_prefix) {
                Some(id) => Self::Ack { id, text },
                None => Self::Other(text),
            },
            [b'4', b'1', ..] => Self::Disconnect,
            _ => Self::Other(text),
        }
    }

    /// The JSON after the packet header of an event or ack (`[...]`), if any.
    pub fn body(&self) -> Option<&str> {
        match self {
            Self::Event(text) | Self::Ack { text, .. } => text.find('[').map(|at| &text[at..]),
            _ => None,
        }
    }
}

/// The ack id of `/ns,12[...]` (the part after `43`).
fn ack_id(rest: &str, ns_prefix: &str) -> Option<u64> {
    let rest = rest.strip_prefix(ns_prefix)?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    rest[..digits].parse().ok()
}

/// One namespace socket on its own connection, owned by the caller.
pub struct RawSocket {
    ws: RawStream,
    ns: String,
    ns_prefix: String,
}

impl RawSocket {
    /// Opens TCP, upgrades to WebSocket at `/socket.io/?EIO=4&transport=websocket` on
    /// `base` (`http://host:port`; plain TCP only) and reads the Engine.IO open packet.
    /// The namespace is not connected yet: call [`RawSocket::connect_ns`].
    pub async fn open(base: &str, ns: &str, options: &RawOptions) -> Result<Self, ClientError> {
        let ws_base = base.replacen("http://", "ws://", 1);
        let url = format!("{ws_base}/socket.io/?EIO=4&transport=websocket");
        let uri: Uri = url.parse().map_err(|e| ClientError::Protocol(format!("bad url {url}: {e}")))?;
        let host = uri.host().ok_or_else(|| ClientError::Protocol("the url has no host".into()))?;
        let port = uri.port_u16().unwrap_or(80);
        let addr: SocketAddr = lookup_host((host, port))
            .await?
            .next()
            .ok_or_else(|| ClientError::Protocol(format!("{host} does not resolve")))?;
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        if let Some(ip) = options.local_ip {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;

        let request = upgrade_request(url, options.bearer.as_deref(), options.origin.as_deref())?;
        let config = WebSocketConfig::default().read_buffer_size(options.read_buffer.unwrap_or(4096));
        let (mut ws, _) = match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
            Ok(ok) => ok,
            Err(tungstenite::Error::Http(response)) => return Err(ClientError::Refused(response.status().as_u16())),
            Err(e) => return Err(e.into()),
        };
        expect_open(ws.next().await)?;
        let ns_prefix = if ns == "/" { String::new() } else { format!("{ns},") };
        Ok(Self { ws, ns: ns.to_owned(), ns_prefix })
    }

    /// Connects the namespace with the handshake `auth` payload and waits for the
    /// answer (pings meanwhile are answered). The caller bounds the wait.
    pub async fn connect_ns(&mut self, auth: Option<Value>) -> Result<(), ClientError> {
        self.send_text(Packet::Connect { ns: self.ns.clone(), auth }.encode()).await?;
        loop {
            let text = match self.ws.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(_))) | None => return Err(ClientError::Closed),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
            };
            match text.as_bytes() {
                [b'2', ..] => self.pong().await?,
                [b'4', b'0', ..] => return Ok(()),
                [b'4', b'4', ..] => {
                    return match Packet::decode(&text[1..]) {
                        Ok(Packet::ConnectError { message, .. }) => Err(ClientError::ConnectError(message)),
                        _ => Err(ClientError::Protocol(format!("undecodable connect_error {text:?}"))),
                    };
                }
                [b'1', ..] => return Err(ClientError::Closed),
                _ => {}
            }
        }
    }

    /// The next frame; pings are answered here and not returned.
    pub async fn recv(&mut self) -> Result<RawFrame, ClientError> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => match RawFrame::classify(text, &self.ns_prefix) {
                    RawFrame::Ping => self.pong().await?,
                    frame => return Ok(frame),
                },
                Some(Ok(Message::Close(_))) | None => return Ok(RawFrame::Closed),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// Waits for the ack `id`, answering pings and handing every other frame to `other`.
    pub async fn wait_ack(&mut self, id: u64, mut other: impl FnMut(RawFrame)) -> Result<Utf8Bytes, ClientError> {
        loop {
            match self.recv().await? {
                RawFrame::Ack { id: got, text } if got == id => return Ok(text),
                RawFrame::Closed => return Err(ClientError::Closed),
                frame => other(frame),
            }
        }
    }

    /// Emits `event` (with ack id `ack`, if given).
    pub async fn emit(&mut self, event: &str, data: &Value, ack: Option<u64>) -> Result<(), ClientError> {
        self.send_text(encode_event(&self.ns_prefix, event, data, ack)).await
    }

    pub async fn pong(&mut self) -> Result<(), ClientError> {
        self.send_text("3".to_owned()).await
    }

    /// Sends raw Engine.IO text.
    pub async fn send_text(&mut self, text: String) -> Result<(), ClientError> {
        self.ws.send(Message::Text(text.into())).await.map_err(Into::into)
    }

    /// Closes the WebSocket (best effort).
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Splits into a writer and a frame stream, so one task can select over many
    /// readers and write to any socket.
    pub fn split(self) -> (RawWriter, RawReader) {
        let (sink, stream) = self.ws.split();
        (
            RawWriter { sink, ns_prefix: self.ns_prefix.clone() },
            RawReader { stream, ns_prefix: self.ns_prefix, done: false },
        )
    }
}

/// Encodes `42/ns,<id>["event",data]`.
pub fn encode_event(ns_prefix: &str, event: &str, data: &Value, ack: Option<u64>) -> String {
    let mut text = String::with_capacity(64);
    text.push_str("42");
    text.push_str(ns_prefix);
    if let Some(id) = ack {
        text.push_str(&id.to_string());
    }
    text.push_str("[\"");
    text.push_str(event);
    text.push_str("\",");
    text.push_str(&data.to_string());
    text.push(']');
    text
}

/// The writing half of a split [`RawSocket`].
pub struct RawWriter {
    sink: SplitSink<RawStream, Message>,
    ns_prefix: String,
}

impl RawWriter {
    pub async fn emit(&mut self, event: &str, data: &Value, ack: Option<u64>) -> Result<(), ClientError> {
        self.send_text(encode_event(&self.ns_prefix, event, data, ack)).await
    }

    pub async fn pong(&mut self) -> Result<(), ClientError> {
        self.send_text("3".to_owned()).await
    }

    pub async fn send_text(&mut self, text: String) -> Result<(), ClientError> {
        self.sink.send(Message::Text(text.into())).await.map_err(Into::into)
    }

    /// Closes the WebSocket (best effort).
    pub async fn close(mut self) {
        let _ = self.sink.close().await;
    }
}

/// The reading half of a split [`RawSocket`]: a stream of frames that ends with one
/// [`RawFrame::Closed`] (or an error).
pub struct RawReader {
    stream: SplitStream<RawStream>,
    ns_prefix: String,
    done: bool,
}

impl futures_util::Stream for RawReader {
    type Item = Result<RawFrame, ClientError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            let item = match self.stream.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(item) => item,
            };
            let frame = match item {
                Some(Ok(Message::Text(text))) => Ok(RawFrame::classify(text, &self.ns_prefix)),
                Some(Ok(Message::Close(_))) | None => Ok(RawFrame::Closed),
                Some(Ok(_)) => continue,
                Some(Err(e)) => Err(ClientError::from(e)),
            };
            if matches!(frame, Ok(RawFrame::Closed) | Err(_)) {
                self.done = true;
            }
            return Poll::Ready(Some(frame));
        }
    }
}

/// How long a [`RawSocket`] step may take by default.
pub const RAW_TIMEOUT: Duration = Duration::from_secs(15);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn classifies_frames() {
        let ns = "/chat,";
        assert_eq!(RawFrame::classify("2".into(), ns), RawFrame::Ping);
        assert_eq!(RawFrame::classify("41/chat,".into(), ns), RawFrame::Disconnect);
        let ack = RawFrame::classify("43/chat,17[{\"ok\":true}]".into(), ns);
        assert!(matches!(&ack, RawFrame::Ack { id: 17, .. }));
        assert_eq!(ack.body(), Some("[{\"ok\":true}]"));
        let event = RawFrame::classify("42/chat,[\"message\",{\"seq\":1}]".into(), ns);
        assert_eq!(event.body(), Some("[\"message\",{\"seq\":1}]"));
        assert_eq!(RawFrame::classify("43[{}]".into(), ""), RawFrame::Other("43[{}]".into()));
        assert!(matches!(RawFrame::classify("433[{}]".into(), ""), RawFrame::Ack { id: 3, .. }));
    }

    #[test]
    fn encodes_events_like_packet() {
        let data = json!({"courseId": "c", "since": 3});
        for ack in [None, Some(9)] {
            let raw = encode_event("/chat,", "join", &data, ack);
            let packet = Packet::Event { ns: "/chat".into(), id: ack, event: "join".into(), data: data.clone() };
            assert_eq!(raw, packet.encode());
        }
    }
}
