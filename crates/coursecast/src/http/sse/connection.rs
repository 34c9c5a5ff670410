//! One Server-Sent Events connection after its `ready` event: the backlog of each
//! cursored stream, paged from storage, then live events from its subscription,
//! heartbeats, the token's expiry, and the `end` event that closes it.
//!
//! The body is produced on demand: hyper asks for the next chunk only once the
//! previous one is written, so a reader that does not read stops this producer, and
//! its live events pile up in the subscription's bounded queue until the registry
//! ends it as too slow. Nothing here buffers more than one storage page.
//!
//! The token's expiry is two deadlines of this producer rather than entries in the
//! sockets' expiry queue (`realtime/expiry.rs`): a stream is already a future that
//! wakes for its own heartbeats, so its deadlines cost no task and no shared queue.

use std::{convert::Infallible, time::Duration};

use axum::body::{Body, Bytes};
use futures_util::StreamExt;
use serde_json::json;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::specs::event_id;
use crate::{
    error::{AppError, AuthError},
    events::subscribers::{Ending, Next, Subscription},
    store::Store,
    streams::{StoredEvent, StreamKey, StreamKind, Timestamp},
    telemetry::metrics,
};

/// Events per backlog page (the polling endpoints' largest page).
const PAGE: u32 = 1000;
/// Live events written in one chunk at most (one write for a burst, not one each).
const BATCH: usize = 64;
/// `session:expiring` goes out this long before the token's `exp` (as on sockets).
const WARNING: Duration = Duration::from_secs(60);

/// Why the server closes a stream.
enum Close {
    Ended(Ending),
    TokenExpired,
    Storage(AppError),
}

impl Close {
    fn error(self) -> AppError {
        match self {
            Self::Ended(Ending::TooSlow) => {
                AppError::Unavailable("this stream fell too far behind (too slow); reconnect with Last-Event-ID")
            }
            Self::Ended(Ending::Revoked) => AppError::Auth(AuthError::Invalid("the user logged out or was deleted")),
            Self::Ended(Ending::ShuttingDown) => AppError::Unavailable("the server is shutting down"),
            Self::TokenExpired => AppError::Auth(AuthError::Expired),
            Self::Storage(err) => err,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::Ended(Ending::TooSlow) => "too_slow",
            Self::Ended(Ending::Revoked) => "token_invalid",
            Self::Ended(Ending::ShuttingDown) => "shutdown",
            Self::TokenExpired => "token_expired",
            Self::Storage(_) => "storage",
        }
    }
}

/// SSE frames for one chunk of the body.
#[derive(Default)]
pub struct Frames {
    text: String,
    events: usize,
}

impl Frames {
    /// An event of a stream (counted in `coursecast_sse_events_total`).
    fn stream_event(&mut self, name: &str, id: &str, data: &str) {
        self.event(name, id, data);
        self.events += 1;
    }

    /// An event with an id; `data` is JSON (compact, as stored: no raw newline, but
    /// one would still be framed correctly).
    pub fn event(&mut self, name: &str, id: &str, data: &str) {
        self.text.reserve(data.len() + id.len() + name.len() + 20);
        self.text.push_str("event: ");
        self.text.push_str(name);
        self.text.push_str("\nid: ");
        self.text.push_str(id);
        for line in data.split('\n') {
            self.text.push_str("\ndata: ");
            self.text.push_str(line);
        }
        self.text.push_str("\n\n");
    }

    /// An event that does not move the client's position (no `id` field: the
    /// browser keeps the last one).
    fn notice(&mut self, name: &str, data: &serde_json::Value) {
        self.text.push_str("event: ");
        self.text.push_str(name);
        self.text.push_str("\ndata: ");
        self.text.push_str(&data.to_string());
        self.text.push_str("\n\n");
    }

    pub fn retry(&mut self, millis: u64) {
        self.text.push_str(&format!("retry: {millis}\n\n"));
    }

    fn ping(&mut self) {
        self.text.push_str(": ping\n\n");
    }

    fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    pub fn into_bytes(self) -> Bytes {
        if self.events > 0 {
            metrics::sse_events(self.events);
        }
        Bytes::from(self.text)
    }
}

pub struct Connection {
    store: Store,
    subscription: Subscription,
    /// The cursored streams, in the client's order: the positions of an event id.
    streams: Vec<StreamKey>,
    /// The `seq` of the last event written of each stream.
    cursors: Vec<i64>,
    /// The stream whose backlog is read next; past the last, the stream is live.
    backlog: usize,
    heartbeat: Interval,
    /// When to send `session:expiring` (gone once sent).
    warn_at: Option<Instant>,
    expires_at: Instant,
    /// The token's `exp`, seconds since the epoch, for `session:expiring`.
    exp: i64,
    /// Set once the stream is closing: the reason the metric records.
    closed: Option<&'static str>,
}

impl Connection {
    pub fn new(
        store: Store,
        subscription: Subscription,
        streams: Vec<StreamKey>,
        cursors: Vec<i64>,
        exp: i64,
        heartbeat: Duration,
    ) -> Self {
        let mut heartbeat = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let left_ms = exp.saturating_mul(1000) - chrono::Utc::now().timestamp_millis();
        let expires_at = Instant::now() + Duration::from_millis(u64::try_from(left_ms).unwrap_or(0));
        let warn_at = Some(expires_at.checked_sub(WARNING).unwrap_or_else(Instant::now));
        Self { store, subscription, streams, cursors, backlog: 0, heartbeat, warn_at, expires_at, exp, closed: None }
    }

    /// The response body: `first` (the `retry` and `ready` frames), then the rest.
    pub fn into_body(self, first: Bytes) -> Body {
        let rest = futures_util::stream::unfold(self, |mut connection| async move {
            let chunk = connection.next_chunk().await?;
            Some((Ok::<_, Infallible>(chunk), connection))
        });
        Body::from_stream(futures_util::stream::once(std::future::ready(Ok(first))).chain(rest))
    }

    fn id(&self) -> String {
        event_id(&self.cursors)
    }

    /// The next chunk to write, or `None` once the `end` event is out.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.closed.is_some() {
            return None;
        }
        let mut frames = Frames::default();
        loop {
            if let Some(ending) = self.subscription.ending() {
                return Some(self.close(frames, Close::Ended(ending)));
            }
            let now = Instant::now();
            if now >= self.expires_at {
                return Some(self.close(frames, Close::TokenExpired));
            }
            if self.warn_at.is_some_and(|at| now >= at) {
                self.warn_at = None;
                let expires_at = Timestamp(self.exp.saturating_mul(1000)).to_rfc3339();
                frames.notice("session:expiring", &json!({"expiresAt": expires_at}));
            }
            if self.backlog < self.streams.len() {
                if let Err(err) = self.read_backlog(&mut frames).await {
                    return Some(self.close(frames, Close::Storage(err)));
                }
            } else if frames.is_empty() {
                match self.wait_live().await {
                    Wake::Event(event) => {
                        if let Err(err) = self.take_live(event, &mut frames).await {
                            return Some(self.close(frames, Close::Storage(err)));
                        }
                    }
                    Wake::Ping => frames.ping(),
                    Wake::Check => {}
                }
            }
            if !frames.is_empty() {
                return Some(frames.into_bytes());
            }
        }
    }

    /// Waits for the first of: the token's expiry or warning, the subscription's end
    /// (both handled by the checks at the top of `next_chunk`), a live event, a
    /// heartbeat.
    async fn wait_live(&mut self) -> Wake {
        let (expires_at, warn_at) = (self.expires_at, self.warn_at);
        tokio::select! {
            biased;
            () = tokio::time::sleep_until(expires_at) => Wake::Check,
            () = tokio::time::sleep_until(warn_at.unwrap_or(expires_at)), if warn_at.is_some() => Wake::Check,
            next = self.subscription.next() => match next {
                Next::Event(event) => Wake::Event(event),
                Next::Ended(_) => Wake::Check,
            },
            _ = self.heartbeat.tick() => Wake::Ping,
        }
    }

    /// Writes the next page of the current backlog stream; moves to the next stream
    /// once this one is read to its end.
    async fn read_backlog(&mut self, frames: &mut Frames) -> Result<(), AppError> {
        let i = self.backlog;
        let (events, has_more) = self.store.read_sequenced(self.streams[i], self.cursors[i], PAGE).await?;
        let name = self.streams[i].kind.event_name();
        for (seq, payload) in events {
            self.cursors[i] = seq;
            frames.stream_event(name, &self.id(), payload.get());
        }
        if !has_more {
            self.backlog += 1;
        }
        Ok(())
    }

    /// Writes `first` and what else is queued now (up to a batch).
    async fn take_live(&mut self, first: StoredEvent, frames: &mut Frames) -> Result<(), AppError> {
        self.write_live(first, frames).await?;
        for _ in 1..BATCH {
            match self.subscription.try_recv() {
                Some(event) => self.write_live(event, frames).await?,
                None => break,
            }
        }
        Ok(())
    }

    /// Writes a live event unless the client has it already. An event of a
    /// cursored stream that skips `seq`s (relayed out of order by another node, or
    /// after Redis lost some) is preceded by the missing ones, read from storage.
    async fn write_live(&mut self, event: StoredEvent, frames: &mut Frames) -> Result<(), AppError> {
        let Some(i) = self.streams.iter().position(|stream| *stream == event.stream) else {
            // A watched course's progress: it does not move any cursor.
            frames.stream_event(StreamKind::Progress.event_name(), &self.id(), event.payload.get());
            return Ok(());
        };
        while event.seq > self.cursors[i] + 1 {
            let before = self.cursors[i];
            let (missed, _) = self.store.read_sequenced(event.stream, before, PAGE).await?;
            for (seq, payload) in missed.into_iter().take_while(|(seq, _)| *seq < event.seq) {
                self.cursors[i] = seq;
                frames.stream_event(event.stream.kind.event_name(), &self.id(), payload.get());
            }
            if self.cursors[i] == before {
                // Storage has no event in the gap: nothing more to repair it with.
                break;
            }
        }
        if event.seq > self.cursors[i] {
            self.cursors[i] = event.seq;
            frames.stream_event(event.stream.kind.event_name(), &self.id(), event.payload.get());
        }
        Ok(())
    }

    /// The last chunk: what `frames` holds, then `end` with the reason.
    fn close(&mut self, mut frames: Frames, close: Close) -> Bytes {
        self.closed = Some(close.reason());
        let body = close.error().body();
        frames.notice("end", &serde_json::to_value(&body).unwrap_or_default());
        frames.into_bytes()
    }
}

/// What woke a live stream.
enum Wake {
    Event(StoredEvent),
    Ping,
    /// A deadline or the subscription's end: the top of `next_chunk` tells which.
    Check,
}

/// Every stream ends here, whoever ends it: the client going away drops the body.
impl Drop for Connection {
    fn drop(&mut self) {
        metrics::sse_closed(self.closed.unwrap_or("client_closed"));
    }
}
