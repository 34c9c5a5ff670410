//! Delivery of committed events through every transport. Each transport (the
//! Socket.IO rooms, the long-poll waiters, the event streams, the relay to other
//! nodes) implements [`Sink`] once; the fan-out knows them only through it, so a new transport is one
//! more implementation, not an edit here. Each event is serialised once, when it is
//! stored; sinks pass its stored JSON through as is.

use std::{future::Future, sync::Arc, time::Instant};

use futures_util::future::BoxFuture;

use super::sequencer::{Release, Sequencer};
use crate::{
    store::Store,
    streams::StoredEvent,
    telemetry::{live::LiveStats, metrics},
};

/// Where an event was committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// By this node: other nodes are told too.
    Local,
    /// By another node, relayed here: only this node's own clients take it.
    Remote,
}

/// A transport's share of delivering one committed event. Implementations must not
/// block: a slow client is the transport's to bound (drop its copy, cut it), never
/// the pipeline's to wait for.
pub trait Sink: Send + Sync {
    fn deliver<'a>(&'a self, event: &'a StoredEvent) -> BoxFuture<'a, ()>;
}

#[derive(Clone)]
pub struct Fanout {
    store: Store,
    /// This node's clients' transports, in the order they are given an event.
    sinks: Arc<[Arc<dyn Sink>]>,
    /// The relay to other nodes (several nodes only): takes this node's commits as
    /// soon as they are made.
    relay: Option<Arc<dyn Sink>>,
    /// Puts each stream's events in `seq` order for this node's clients (several
    /// nodes only: see `sequencer`).
    order: Option<Arc<Sequencer>>,
    stats: Arc<LiveStats>,
}

impl Fanout {
    /// One node's fan-out: every event to `sinks`, in commit order.
    pub fn new(store: Store, sinks: Vec<Arc<dyn Sink>>, stats: Arc<LiveStats>) -> Self {
        Self { store, sinks: sinks.into(), relay: None, order: None, stats }
    }

    /// One node of several: this node's commits also go to `relay`, and events reach
    /// `sinks` in each stream's `seq` order, whichever node committed them.
    pub fn with_relay(mut self, relay: Arc<dyn Sink>) -> Self {
        self.relay = Some(relay);
        self.order = Some(Arc::default());
        self
    }

    /// Delivers an event this node committed at `committed`.
    pub async fn deliver_committed(&self, event: &StoredEvent, committed: Instant) {
        self.deliver(event, Origin::Local).await;
        let latency = committed.elapsed();
        metrics::delivery_latency(latency);
        self.stats.delivered(latency);
    }

    /// Delivers an event: to other nodes if it was committed here, and to this
    /// node's clients in its stream's order.
    pub async fn deliver(&self, event: &StoredEvent, origin: Origin) {
        if origin == Origin::Local
            && let Some(relay) = &self.relay
        {
            relay.deliver(event).await;
        }
        match &self.order {
            Some(order) => order.deliver(self, event.clone()).await,
            None => self.deliver_here(event).await,
        }
    }

    /// Hands an event to this node's clients' transports, in the order given.
    async fn deliver_here(&self, event: &StoredEvent) {
        // Recorded before the event goes out, so a head read afterwards never runs
        // ahead of what a room receives.
        self.store.delivered(event.stream, event.seq);
        for sink in self.sinks.iter() {
            sink.deliver(event).await;
        }
    }
}

/// The sequencer lets events go to this node's clients.
impl Release for Fanout {
    fn release(&self, event: &StoredEvent) -> impl Future<Output = ()> + Send {
        self.deliver_here(event)
    }
}
