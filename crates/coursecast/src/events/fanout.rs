//! Delivery of committed events through every transport. Each transport (the
//! Socket.IO rooms, the long-poll waiters, the relay to other nodes) implements
//! [`Sink`] once; the fan-out knows them only through it, so a new transport is one
//! more implementation, not an edit here. Each event is serialised once, when it is
//! stored; sinks pass its stored JSON through as is.

use std::{sync::Arc, time::Instant};

use futures_util::future::BoxFuture;

use crate::{
    store::Store,
    streams::StoredEvent,
    telemetry::{live::LiveStats, metrics},
};

/// Where an event was committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// By this node: every sink takes it, the relay to other nodes included.
    Local,
    /// By another node, relayed here: only this node's own clients take it.
    Remote,
}

/// A transport's share of delivering one committed event. Implementations must not
/// block: a slow client is the transport's to bound (drop its copy, cut it), never
/// the pipeline's to wait for.
pub trait Sink: Send + Sync {
    fn deliver<'a>(&'a self, event: &'a StoredEvent, origin: Origin) -> BoxFuture<'a, ()>;
}

#[derive(Clone)]
pub struct Fanout {
    store: Store,
    sinks: Arc<[Arc<dyn Sink>]>,
    stats: Arc<LiveStats>,
}

impl Fanout {
    pub fn new(store: Store, sinks: Vec<Arc<dyn Sink>>, stats: Arc<LiveStats>) -> Self {
        Self { store, sinks: sinks.into(), stats }
    }

    /// Delivers an event this node committed at `committed`.
    pub async fn deliver_committed(&self, event: &StoredEvent, committed: Instant) {
        self.deliver(event, Origin::Local).await;
        let latency = committed.elapsed();
        metrics::delivery_latency(latency);
        self.stats.delivered(latency);
    }

    /// Delivers an event through every sink, in the order they were given.
    pub async fn deliver(&self, event: &StoredEvent, origin: Origin) {
        // Recorded before the event goes out, so a head read afterwards never runs
        // ahead of what a room receives.
        self.store.delivered(event.stream, event.seq);
        for sink in self.sinks.iter() {
            sink.deliver(event, origin).await;
        }
    }
}
