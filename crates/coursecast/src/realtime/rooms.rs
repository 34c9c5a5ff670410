//! Room names, in one place: who receives what.

use uuid::Uuid;

/// Sockets that joined a course (chat messages, annotations, presence, typing).
pub fn course(course: Uuid) -> String {
    format!("course:{course}")
}

/// Every socket of a user, in every namespace (their notifications and progress;
/// logout and deletion disconnect this room).
pub fn user(user: Uuid) -> String {
    format!("user:{user}")
}

/// Every socket of one client (Engine.IO session), across namespaces.
pub fn client(client: super::gate::ClientId) -> String {
    format!("client:{}", client.0)
}

/// Professors and ADMINs watching a course's analysis progress.
pub fn watch(course: Uuid) -> String {
    format!("watch:{course}")
}
