//! Delivery of committed events: to long-poll waiters of the event's stream and to
//! the Socket.IO rooms that subscribe to it. Each event is serialised once per
//! broadcast (its stored JSON is passed through as is).

use std::sync::Arc;

use socketioxide::SocketIo;

use super::{StoredEvent, StreamKey, waiters::Waiters};
use crate::realtime::{Namespace, rooms};

#[derive(Clone)]
pub struct Fanout {
    io: SocketIo,
    waiters: Arc<Waiters>,
}

impl Fanout {
    pub fn new(io: SocketIo, waiters: Arc<Waiters>) -> Self {
        Self { io, waiters }
    }

    pub async fn deliver(&self, event: &StoredEvent) {
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
        if let Err(err) = operators.to(targets).emit(name, &*event.payload).await {
            tracing::warn!(stream = %event.stream, seq = event.seq, error = %err, "broadcast incomplete");
        }
    }
}
