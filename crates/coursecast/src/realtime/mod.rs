//! The Socket.IO layer (PROTOCOL.md section 3): server set-up, the HTTP gate in front
//! of it, per-socket sessions, the connection manager, and the four namespaces.

mod answers;
mod broadcaster;
pub mod catalog;
pub mod connections;
mod dispatch;
mod expiry;
pub mod gate;
pub mod namespaces;
pub mod presence;
pub mod presence_sync;
pub mod rooms;
pub mod server;
mod session;

use std::sync::Arc;

use axum::Router;
use serde::Serialize;
use socketioxide::{SocketIo, service::SocketIoService};
use uuid::Uuid;

pub use broadcaster::Broadcaster;
pub use connections::{ConnectionStats, Connections};
pub use expiry::Expiries;
pub use presence::Presence;
pub use session::Session;

use crate::cluster::Cluster;

/// The namespaces of the contract; any other is refused by Socket.IO itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Namespace {
    Chat,
    Notifications,
    Analytics,
    Collaboration,
}

impl Namespace {
    pub const ALL: [Namespace; 4] = [Self::Chat, Self::Notifications, Self::Analytics, Self::Collaboration];

    pub fn from_path(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|ns| ns.path() == path)
    }

    pub fn path(self) -> &'static str {
        match self {
            Self::Chat => "/chat",
            Self::Notifications => "/notifications",
            Self::Analytics => "/analytics",
            Self::Collaboration => "/collaboration",
        }
    }
}

/// The socket server as the rest of the app sees it. Cheap to clone.
#[derive(Clone)]
pub struct Realtime {
    pub io: SocketIo,
    /// The Engine.IO endpoint, mounted at `/socket.io/` behind the gate.
    pub service: SocketIoService<Router>,
    pub connections: Arc<Connections>,
    /// Who is online in each course room, and the `presence` diffs.
    pub presence: Arc<Presence>,
    /// Every live socket's token expiry.
    pub expiries: Arc<Expiries>,
    /// The other nodes, when `REDIS_URL` is set.
    pub cluster: Option<Arc<Cluster>>,
}

impl Realtime {
    /// Unregisters the namespaces: their handlers (which hold the app state) are
    /// dropped and their sockets disconnected. Called once the server has stopped.
    pub fn detach(&self) {
        for namespace in Namespace::ALL {
            self.io.delete_ns(namespace.path());
        }
    }

    /// Disconnects every socket of `user` in every namespace, on every node
    /// (logout, deletion).
    pub async fn disconnect_user(&self, user: Uuid) {
        self.disconnect_local(user).await;
        if let Some(cluster) = &self.cluster {
            cluster.relay_disconnect(user);
        }
    }

    /// Disconnects the user's sockets on this node only.
    pub async fn disconnect_local(&self, user: Uuid) {
        for namespace in Namespace::ALL {
            if let Some(operators) = self.io.of(namespace.path())
                && let Err(err) = operators.to(rooms::user(user)).disconnect().await
            {
                tracing::warn!(%user, namespace = namespace.path(), error = %err, "disconnecting a user's sockets failed");
            }
        }
    }
}
