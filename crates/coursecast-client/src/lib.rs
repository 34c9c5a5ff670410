//! A small Socket.IO v5 (Engine.IO v4) client over WebSocket, for coursecast's
//! integration tests and load generator.
//!
//! One [`Connection`] is one Engine.IO session; [`Connection::socket`] opens a
//! namespace on it (several may share a connection, as browsers do). It speaks the
//! text protocol only (no binary attachments), answers server pings, and turns
//! acks, events, `connect_error` and disconnects into values a test can await.
//!
//! [`raw::RawSocket`] is the lean variant for load generation: no background tasks,
//! raw frames, one task may drive many sockets.

mod packet;
pub mod raw;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest, http::HeaderValue};

pub use packet::Packet;

/// How long `call` waits for an ack and `connect` for the namespace answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the WebSocket handshake was refused with HTTP {0}")]
    Refused(u16),
    #[error("websocket: {0}")]
    WebSocket(#[from] tungstenite::Error),
    #[error("the server refused the namespace: {0}")]
    ConnectError(String),
    #[error("no answer within the timeout")]
    Timeout,
    #[error("the connection is closed")]
    Closed,
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("tcp: {0}")]
    Io(#[from] std::io::Error),
}

/// Something the server sent to one namespace socket.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// An event with its first argument (`Null` when none).
    Event(String, Value),
    /// The socket was disconnected: `io server disconnect` or `transport close`.
    Disconnected(String),
}

/// Options of the HTTP upgrade request.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Sent as `Authorization: Bearer <token>`.
    pub bearer: Option<String>,
    /// Sent as `Origin`.
    pub origin: Option<String>,
    /// Extra query string, appended as is (for example `token=...`).
    pub query: Option<String>,
}

type NamespaceReply = oneshot::Sender<Result<(), ClientError>>;

#[derive(Default)]
struct Shared {
    pending_connects: Mutex<HashMap<String, NamespaceReply>>,
    sockets: Mutex<HashMap<String, mpsc::UnboundedSender<Incoming>>>,
    acks: Mutex<HashMap<(String, u64), oneshot::Sender<Value>>>,
    next_ack: AtomicU64,
    /// Set once the read loop has ended: no answer can arrive any more.
    closed: std::sync::atomic::AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One Engine.IO session over WebSocket.
#[derive(Clone)]
pub struct Connection {
    outgoing: mpsc::UnboundedSender<Message>,
    shared: Arc<Shared>,
}

/// The WebSocket upgrade request of a handshake, with the optional bearer token and
/// Origin header.
pub(crate) fn upgrade_request(
    url: String,
    bearer: Option<&str>,
    origin: Option<&str>,
) -> Result<tungstenite::handshake::client::Request, ClientError> {
    let mut request = url.into_client_request()?;
    let header = |value: &str| HeaderValue::from_str(value).map_err(|e| ClientError::Protocol(e.to_string()));
    if let Some(token) = bearer {
        request.headers_mut().insert("authorization", header(&format!("Bearer {token}"))?);
    }
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", header(origin)?);
    }
    Ok(request)
}

/// The first frame of a session must be the Engine.IO open packet.
pub(crate) fn expect_open(first: Option<Result<Message, tungstenite::Error>>) -> Result<(), ClientError> {
    match first {
        Some(Ok(Message::Text(text))) if text.starts_with('0') => Ok(()),
        Some(Ok(Message::Close(_))) | None => Err(ClientError::Closed),
        Some(Ok(other)) => Err(ClientError::Protocol(format!("expected an Engine.IO open packet, got {other:?}"))),
        Some(Err(e)) => Err(e.into()),
    }
}

impl Connection {
    /// Opens `ws://<host>/socket.io/?EIO=4&transport=websocket` on `base` (an
    /// `http://host:port` URL) and completes the Engine.IO handshake.
    pub async fn open(base: &str, options: ConnectOptions) -> Result<Self, ClientError> {
        let ws_base = base.replacen("http://", "ws://", 1).replacen("https://", "wss://", 1);
        let mut url = format!("{ws_base}/socket.io/?EIO=4&transport=websocket");
        if let Some(query) = &options.query {
            url.push('&');
            url.push_str(query);
        }
        let request = upgrade_request(url, options.bearer.as_deref(), options.origin.as_deref())?;
        let (stream, _) = match tokio_tungstenite::connect_async(request).await {
            Ok(ok) => ok,
            Err(tungstenite::Error::Http(response)) => return Err(ClientError::Refused(response.status().as_u16())),
            Err(e) => return Err(e.into()),
        };
        let (mut sink, mut source) = stream.split();
        let first = tokio::time::timeout(DEFAULT_TIMEOUT, source.next()).await.map_err(|_| ClientError::Timeout)?;
        expect_open(first)?;
        let (outgoing, mut queue) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(message) = queue.recv().await {
                let close = matches!(message, Message::Close(_));
                if sink.send(message).await.is_err() || close {
                    break;
                }
            }
        });
        let shared = Arc::new(Shared::default());
        tokio::spawn(read_loop(source, outgoing.clone(), shared.clone()));
        Ok(Self { outgoing, shared })
    }

    /// Opens namespace `ns` with the handshake `auth` payload.
    pub async fn socket(&self, ns: &str, auth: Option<Value>) -> Result<Socket, ClientError> {
        let (reply, answer) = oneshot::channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        lock(&self.shared.pending_connects).insert(ns.to_owned(), reply);
        lock(&self.shared.sockets).insert(ns.to_owned(), events_tx);
        self.send(Packet::Connect { ns: ns.to_owned(), auth }.encode())?;
        let outcome = match tokio::time::timeout(DEFAULT_TIMEOUT, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout),
        };
        if outcome.is_err() {
            lock(&self.shared.sockets).remove(ns);
            lock(&self.shared.pending_connects).remove(ns);
        }
        outcome.map(|()| Socket { ns: ns.to_owned(), connection: self.clone(), events })
    }

    /// Closes the whole connection (every namespace sees `transport close`).
    pub fn close(&self) {
        let _ = self.outgoing.send(Message::Close(None));
    }

    fn send(&self, text: String) -> Result<(), ClientError> {
        self.outgoing.send(Message::Text(text.into())).map_err(|_| ClientError::Closed)
    }
}

async fn read_loop<S>(mut source: S, outgoing: mpsc::UnboundedSender<Message>, shared: Arc<Shared>)
where
    S: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    while let Some(Ok(message)) = source.next().await {
        let Message::Text(text) = message else {
            if matches!(message, Message::Close(_)) {
                break;
            }
            continue;
        };
        match text.as_bytes().first() {
            Some(b'2') => {
                let _ = outgoing.send(Message::Text("3".into()));
            }
            Some(b'4') => match Packet::decode(&text[1..]) {
                Ok(packet) => route(&shared, packet),
                Err(err) => eprintln!("coursecast-client: undecodable packet {text:?}: {err}"),
            },
            Some(b'1') => break,
            _ => {}
        }
    }
    // Whatever was waiting learns that the connection is gone.
    shared.closed.store(true, Ordering::Release);
    lock(&shared.pending_connects).clear();
    lock(&shared.acks).clear();
    for (_, socket) in lock(&shared.sockets).drain() {
        let _ = socket.send(Incoming::Disconnected("transport close".into()));
    }
}

fn route(shared: &Shared, packet: Packet) {
    match packet {
        Packet::ConnectOk { ns } => {
            if let Some(reply) = lock(&shared.pending_connects).remove(&ns) {
                let _ = reply.send(Ok(()));
            }
        }
        Packet::ConnectError { ns, message } => {
            lock(&shared.sockets).remove(&ns);
            if let Some(reply) = lock(&shared.pending_connects).remove(&ns) {
                let _ = reply.send(Err(ClientError::ConnectError(message)));
            }
        }
        Packet::Event { ns, event, data, .. } => {
            if let Some(socket) = lock(&shared.sockets).get(&ns) {
                let _ = socket.send(Incoming::Event(event, data));
            }
        }
        Packet::Ack { ns, id, data } => {
            if let Some(waiter) = lock(&shared.acks).remove(&(ns, id)) {
                let _ = waiter.send(data);
            }
        }
        Packet::Disconnect { ns } => {
            if let Some(socket) = lock(&shared.sockets).remove(&ns) {
                let _ = socket.send(Incoming::Disconnected("io server disconnect".into()));
            }
        }
        Packet::Connect { .. } => {}
    }
}

/// One namespace socket.
pub struct Socket {
    ns: String,
    connection: Connection,
    events: mpsc::UnboundedReceiver<Incoming>,
}

impl Socket {
    /// Emits `event` with an ack and waits for it (up to [`DEFAULT_TIMEOUT`]).
    pub async fn call(&self, event: &str, data: Value) -> Result<Value, ClientError> {
        let id = self.connection.shared.next_ack.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        lock(&self.connection.shared.acks).insert((self.ns.clone(), id), reply);
        // Checked after the insert: the read loop sets it before clearing the acks.
        if self.connection.shared.closed.load(Ordering::Acquire) {
            lock(&self.connection.shared.acks).remove(&(self.ns.clone(), id));
            return Err(ClientError::Closed);
        }
        self.connection
            .send(Packet::Event { ns: self.ns.clone(), id: Some(id), event: event.into(), data }.encode())?;
        match tokio::time::timeout(DEFAULT_TIMEOUT, answer).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                lock(&self.connection.shared.acks).remove(&(self.ns.clone(), id));
                Err(ClientError::Timeout)
            }
        }
    }

    /// Emits `event` without asking for an ack.
    pub fn emit(&self, event: &str, data: Value) -> Result<(), ClientError> {
        self.connection.send(Packet::Event { ns: self.ns.clone(), id: None, event: event.into(), data }.encode())
    }

    /// Sends raw Engine.IO text (for malformed-packet tests).
    pub fn send_raw(&self, text: &str) -> Result<(), ClientError> {
        self.connection.send(text.to_owned())
    }

    /// The next thing the server sent to this socket, if one arrives in time.
    pub async fn next(&mut self, timeout: Duration) -> Option<Incoming> {
        tokio::time::timeout(timeout, self.events.recv()).await.ok().flatten()
    }

    /// Waits for event `name`, skipping others; `None` on timeout or disconnect.
    pub async fn wait_for(&mut self, name: &str, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Incoming::Event(event, data))) if event == name => return Some(data),
                Ok(Some(Incoming::Event(..))) => continue,
                _ => return None,
            }
        }
    }

    /// Waits until the socket is disconnected and returns the reason.
    pub async fn disconnected(&mut self, timeout: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Incoming::Disconnected(reason))) => return Some(reason),
                Ok(Some(Incoming::Event(..))) => continue,
                Ok(None) => return Some("transport close".into()),
                Err(_) => return None,
            }
        }
    }

    /// Everything received so far, without waiting.
    pub fn drain(&mut self) -> Vec<Incoming> {
        let mut received = Vec::new();
        while let Ok(item) = self.events.try_recv() {
            received.push(item);
        }
        received
    }

    /// Leaves the namespace (the connection stays open).
    pub fn disconnect(&self) {
        let _ = self.connection.send(Packet::Disconnect { ns: self.ns.clone() }.encode());
        lock(&self.connection.shared.sockets).remove(&self.ns);
    }

    pub fn connection(&self) -> &Connection {
        &self.connection
    }
}
