//! Every Socket.IO event name of the contract (PROTOCOL.md section 3), per namespace
//! and direction, declared once. Handlers are registered and events emitted only
//! through these names (registering an unlisted event fails in debug builds), and a
//! test compares the lists with `docs/asyncapi.yaml`, so the published description
//! cannot drift from what the server does.

use super::Namespace;
use crate::streams::StreamKind;

/// Client -> server events (each takes an ack).
pub mod client {
    pub const REAUTH: &str = "reauth";
    pub const JOIN: &str = "join";
    pub const LEAVE: &str = "leave";
    pub const PRESENCE: &str = "presence";
    pub const SEND: &str = "send";
    pub const EDIT: &str = "edit";
    pub const DELETE: &str = "delete";
    pub const TYPING: &str = "typing";
    pub const SYNC: &str = "sync";
    pub const READ: &str = "read";
    pub const WATCH: &str = "watch";
    pub const ANNOTATE: &str = "annotate";
    pub const CURSOR: &str = "cursor";
}

/// Server -> client events.
pub mod server {
    use crate::streams::StreamKind;

    pub const MESSAGE: &str = StreamKind::Messages.event_name();
    pub const ANNOTATION: &str = StreamKind::Annotations.event_name();
    pub const NOTIFICATION: &str = StreamKind::Notifications.event_name();
    pub const PROGRESS: &str = StreamKind::Progress.event_name();
    pub const PRESENCE: &str = "presence";
    pub const TYPING: &str = "typing";
    pub const CURSOR: &str = "cursor";
    pub const SESSION_EXPIRING: &str = "session:expiring";
    pub const ERROR: &str = "error";
}

/// The events of one namespace, both directions.
#[derive(Debug, Clone, Copy)]
pub struct Events {
    pub client: &'static [&'static str],
    pub server: &'static [&'static str],
}

impl Namespace {
    /// What this namespace's sockets may send and receive.
    pub fn events(self) -> Events {
        use {client as c, server as s};
        match self {
            Self::Chat => Events {
                client: &[c::REAUTH, c::JOIN, c::LEAVE, c::PRESENCE, c::SEND, c::EDIT, c::DELETE, c::TYPING],
                server: &[s::MESSAGE, s::PRESENCE, s::TYPING, s::SESSION_EXPIRING, s::ERROR],
            },
            Self::Notifications => Events {
                client: &[c::REAUTH, c::SYNC, c::READ],
                server: &[s::NOTIFICATION, s::SESSION_EXPIRING, s::ERROR],
            },
            Self::Analytics => Events {
                client: &[c::REAUTH, c::SYNC, c::WATCH],
                server: &[s::PROGRESS, s::SESSION_EXPIRING, s::ERROR],
            },
            Self::Collaboration => Events {
                client: &[c::REAUTH, c::JOIN, c::LEAVE, c::PRESENCE, c::ANNOTATE, c::CURSOR],
                server: &[s::ANNOTATION, s::PRESENCE, s::CURSOR, s::SESSION_EXPIRING, s::ERROR],
            },
        }
    }

    /// The namespace that carries each kind of stream.
    pub fn of_stream(kind: StreamKind) -> Self {
        match kind {
            StreamKind::Messages => Self::Chat,
            StreamKind::Annotations => Self::Collaboration,
            StreamKind::Notifications => Self::Notifications,
            StreamKind::Progress => Self::Analytics,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_stream_event_is_listed_in_its_namespace() {
        for kind in StreamKind::ALL {
            let namespace = Namespace::of_stream(kind);
            assert!(namespace.events().server.contains(&kind.event_name()), "{kind:?} in {}", namespace.path());
        }
    }

    #[test]
    fn no_namespace_lists_an_event_twice() {
        for namespace in Namespace::ALL {
            let events = namespace.events();
            for list in [events.client, events.server] {
                assert_eq!(list.iter().collect::<BTreeSet<_>>().len(), list.len(), "{}", namespace.path());
            }
        }
    }
}
