//! Delivery of committed events: to long-poll waiters of the event's stream and to
//! the Socket.IO rooms that subscribe to it. Each event is serialised once per
//! broadcast (its stored JSON is passed through as is).

use std::{sync::Arc, time::Instant};

use socketioxide::{BroadcastError, SocketIo};

use super::{StoredEvent, StreamKey, waiters::Waiters};
use crate::{
    realtime::{Namespace, rooms},
    telemetry::{live::LiveStats, metrics},
};

#[derive(Clone)]
pub struct Fanout {
    io: SocketIo,
    waiters: Arc<Waiters>,
    stats: Arc<LiveStats>,
}

impl Fanout {
    pub fn new(io: SocketIo, waiters: Arc<Waiters>, stats: Arc<LiveStats>) -> Self {
        Self { io, waiters, stats }
    }

    /// Delivers `event`, committed at `committed`, to its waiters and rooms.
    pub async fn deliver(&self, event: &StoredEvent, committed: Instant) {
        self.waiters.notify(event.stream, event.seq);
        let (namespace, name, mut targets) = match event.stream {
            StreamKey::Messages(course) => (Namespace::Chat, "message", vec![rooms::course(course)]),
            StreamKey::Annotations(course) => (Namespace::Collaboration, "annotation", vec![rooms::course(course)]),
            StreamKey::Notifications(user) => (Namespace::Notifications, "notification", vec![rooms::user(user)]),
            StreamKey::Progress(user) => (Namespace::Analytics, "progress", vec![rooms::user(user)]),
        };
        if let Some(course) = event.watch_course {
            targets.push(rooms::watch(course));
        }
        let Some(operators) = self.io.of(namespace.path()) else {
            return;
        };
        match operators.to(targets).emit(name, &*event.payload).await {
            Ok(()) => {}
            Err(BroadcastError::Socket(failed)) => {
                // Sockets whose buffer is full (or that just closed) miss the live copy;
                // the event is stored, and they catch up from their cursor on reconnect.
                metrics::broadcast_failures(namespace.path(), failed.len());
                tracing::warn!(stream = %event.stream, seq = event.seq, sockets = failed.len(), "broadcast missed sockets");
            }
            Err(err) => tracing::warn!(stream = %event.stream, seq = event.seq, error = %err, "broadcast failed"),
        }
        metrics::event_emitted(namespace.path(), name);
        let latency = committed.elapsed();
        metrics::delivery_latency(latency);
        self.stats.delivered(latency);
    }
}
