//! The Socket.IO rooms as a transport of committed events: the fan-out's [`Sink`]
//! for sockets. A stream's events go to its namespace, to the room of its owner (a
//! course's or a user's sockets), and progress also to its course's watchers.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use socketioxide::{BroadcastError, SocketIo};

use super::{Namespace, Presence, rooms};
use crate::{
    events::{
        fanout::Sink,
        interest::{Holder, Scope},
    },
    streams::{Owner, StoredEvent},
    telemetry::metrics,
};

pub struct Broadcaster {
    io: SocketIo,
    /// Knows each course room's sockets, so counting a broadcast's copies costs O(1).
    presence: Arc<Presence>,
}

impl Broadcaster {
    pub fn new(io: SocketIo, presence: Arc<Presence>) -> Self {
        Self { io, presence }
    }

    /// Sockets this broadcast reaches unless their buffer is full. A course room's
    /// come from presence (O(1): rooms of 10,000 are common); a user's few sockets
    /// and a course's watchers are listed.
    fn copies(&self, namespace: Namespace, event: &StoredEvent, targets: &[String]) -> usize {
        match event.stream.kind.owner() {
            Owner::Course => self.presence.broadcast_to(namespace, event.stream.id),
            Owner::User => self
                .io
                .of(namespace.path())
                .map_or(0, |operators| operators.to(targets.to_vec()).except(rooms::owing()).sockets().len()),
        }
    }

    /// Delivers an event to this node's sockets (it came from here or another node).
    async fn broadcast(&self, event: &StoredEvent) {
        let namespace = Namespace::of_stream(event.stream.kind);
        let owner_room = match event.stream.kind.owner() {
            Owner::Course => rooms::course(event.stream.id),
            Owner::User => rooms::user(event.stream.id),
        };
        let mut targets = vec![owner_room];
        targets.extend(event.watch_course.map(rooms::watch));
        let Some(operators) = self.io.of(namespace.path()) else {
            return;
        };
        let name = event.stream.kind.event_name();
        let copies = self.copies(namespace, event, &targets);
        // Sockets owed an answer are skipped: their answers go first (`answers`).
        match operators.to(targets).except(rooms::owing()).emit(name, &*event.payload).await {
            Ok(()) => metrics::deliveries("socket", copies),
            Err(BroadcastError::Socket(failed)) => {
                metrics::deliveries("socket", copies.saturating_sub(failed.len()));
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

impl Sink for Broadcaster {
    fn deliver<'a>(&'a self, event: &'a StoredEvent) -> BoxFuture<'a, ()> {
        Box::pin(self.broadcast(event))
    }
}

/// Sockets hold the scopes of the event rooms they are in.
impl Holder for Broadcaster {
    fn held(&self) -> BoxFuture<'_, Vec<Scope>> {
        Box::pin(async move {
            let mut scopes = Vec::new();
            for namespace in Namespace::ALL {
                let Some(operators) = self.io.of(namespace.path()) else { continue };
                // The local adapter lists this node's rooms and cannot fail.
                let rooms = operators.rooms().await.unwrap_or_default();
                scopes.extend(rooms.iter().filter_map(|room| rooms::scope(room)));
            }
            scopes
        })
    }
}
