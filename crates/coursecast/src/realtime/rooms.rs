//! Room names, in one place: who receives what.

use uuid::Uuid;

use crate::events::interest::Scope;

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

/// Sockets owed an answer that their full buffer could not take: broadcasts skip
/// them until it is delivered, so answers go out before any broadcast copy.
pub fn owing() -> &'static str {
    "answers:owing"
}

/// Sockets whose buffer was full recently: ephemeral events (presence diffs, typing,
/// cursors) skip them a while longer than chat does, so they are dropped first.
pub fn congested() -> &'static str {
    "answers:congested"
}

/// The rooms an ephemeral broadcast leaves out.
pub fn ephemeral_except() -> [&'static str; 2] {
    [owing(), congested()]
}

/// The scope whose events a room's sockets receive (`None`: not an event room).
pub fn scope(room: &str) -> Option<Scope> {
    let (kind, id) = room.split_once(':')?;
    let id = Uuid::parse_str(id).ok()?;
    match kind {
        "course" | "watch" => Some(Scope::Course(id)),
        "user" => Some(Scope::User(id)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_rooms_name_their_scope_and_the_rest_none() {
        let id = Uuid::now_v7();
        assert_eq!(scope(&course(id)), Some(Scope::Course(id)));
        assert_eq!(scope(&watch(id)), Some(Scope::Course(id)));
        assert_eq!(scope(&user(id)), Some(Scope::User(id)));
        assert_eq!(scope(owing()), None);
        assert_eq!(scope(&client(super::super::gate::ClientId(7))), None);
    }
}
