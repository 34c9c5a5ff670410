//! The Socket.IO rooms as a transport of committed events: the fan-out's [`Sink`]
//! for sockets. A stream's events go to its namespace, to the room of its owner (a
//! course's or a user's sockets), and progress also to its course's watchers.

use futures_util::future::BoxFuture;
use socketioxide::{BroadcastError, SocketIo};

use super::{Namespace, rooms};
use crate::{
    events::fanout::{Origin, Sink},
    streams::{Owner, StoredEvent, StreamKind},
    telemetry::metrics,
};

pub struct Broadcaster {
    io: SocketIo,
}

impl Broadcaster {
    pub fn new(io: SocketIo) -> Self {
        Self { io }
    }

    /// Delivers an event to this node's sockets (it came from here or another node).
    async fn broadcast(&self, event: &StoredEvent) {
        let namespace = namespace_of(event.stream.kind);
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
        // Sockets owed an answer are skipped: their answers go first (`answers`).
        match operators.to(targets).except(rooms::owing()).emit(name, &*event.payload).await {
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

/// The namespace that carries each kind of stream (PROTOCOL.md section 3).
fn namespace_of(kind: StreamKind) -> Namespace {
    match kind {
        StreamKind::Messages => Namespace::Chat,
        StreamKind::Annotations => Namespace::Collaboration,
        StreamKind::Notifications => Namespace::Notifications,
        StreamKind::Progress => Namespace::Analytics,
    }
}

impl Sink for Broadcaster {
    fn deliver<'a>(&'a self, event: &'a StoredEvent, _origin: Origin) -> BoxFuture<'a, ()> {
        Box::pin(self.broadcast(event))
    }
}
