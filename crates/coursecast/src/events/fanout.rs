//! Delivery of committed events: to long-poll waiters of the event's stream, to
//! the Socket.IO rooms that subscribe to it, and to the other nodes (`cluster`). Each event is serialised once per
//! broadcast (its stored JSON is passed through as is).

use std::{sync::Arc, time::Instant};

use socketioxide::BroadcastError;

use super::{StoredEvent, StreamKey, waiters::Waiters};
use crate::{
    realtime::{Namespace, Realtime, rooms},
    store::Store,
    telemetry::{live::LiveStats, metrics},
};

#[derive(Clone)]
pub struct Fanout {
    store: Store,
    realtime: Realtime,
    waiters: Arc<Waiters>,
    stats: Arc<LiveStats>,
}

impl Fanout {
    pub fn new(store: Store, realtime: Realtime, waiters: Arc<Waiters>, stats: Arc<LiveStats>) -> Self {
        Self { store, realtime, waiters, stats }
    }

    /// Delivers an event this node committed at `committed`: here, then to the
    /// other nodes.
    pub async fn deliver(&self, event: &StoredEvent, committed: Instant) {
        self.deliver_local(event).await;
        let latency = committed.elapsed();
        metrics::delivery_latency(latency);
        self.stats.delivered(latency);
        if let Some(cluster) = &self.realtime.cluster {
            cluster.publish_event(event).await;
        }
    }

    /// Delivers an event to this node's waiters and sockets.
    pub async fn deliver_local(&self, event: &StoredEvent) {
        self.store.delivered(event.stream, event.seq);
        self.waiters.notify(event);
        let (namespace, name, mut targets) = match event.stream {
            StreamKey::Messages(course) => (Namespace::Chat, "message", vec![rooms::course(course)]),
            StreamKey::Annotations(course) => (Namespace::Collaboration, "annotation", vec![rooms::course(course)]),
            StreamKey::Notifications(user) => (Namespace::Notifications, "notification", vec![rooms::user(user)]),
            StreamKey::Progress(user) => (Namespace::Analytics, "progress", vec![rooms::user(user)]),
        };
        if let Some(course) = event.watch_course {
            targets.push(rooms::watch(course));
        }
        let Some(operators) = self.realtime.io.of(namespace.path()) else {
            return;
        };
        match operators.to(targets).emit(name, &*event.payload).await {
            Ok(()) => {}
            Err(BroadcastError::Socket(failed)) => {
                // Sockets whose buffer is full (or that just closed) miss the live copy;
                // the event is stored, and they catch up from their cursor on reconnect.
                // Counted, not logged at warn: under overload this is once per event.
                metrics::broadcast_failures(namespace.path(), failed.len());
                tracing::debug!(stream = %event.stream, seq = event.seq, sockets = failed.len(), "broadcast missed sockets");
            }
            Err(err) => tracing::warn!(stream = %event.stream, seq = event.seq, error = %err, "broadcast failed"),
        }
        metrics::event_emitted(namespace.path(), name);
    }
}
