//! Joining and leaving course rooms, shared by `/chat` and `/collaboration`: access
//! check, room membership, presence, and the replay of missed events.

use serde::Deserialize;
use serde_json::json;
use socketioxide::extract::SocketRef;
use uuid::Uuid;

use super::reply;
use crate::{
    domain::parse_id,
    error::AppError,
    events::commands::Membership,
    realtime::{Namespace, dispatch::Ctx, dispatch::Reply, rooms},
    state::AppState,
    streams::{self, StreamKey},
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JoinPayload {
    course_id: String,
    since: Option<i64>,
    /// Page size of `missed`, as in polling (default 100, at most 1,000).
    limit: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LeavePayload {
    course_id: String,
}

/// `join {courseId, since?}`: enters the course room and answers with the missed
/// events after `since` (none without `since`: the cursor is then the head).
pub async fn join(
    state: &AppState,
    ctx: &Ctx,
    namespace: Namespace,
    payload: JoinPayload,
    stream: fn(Uuid) -> StreamKey,
) -> Result<Reply, AppError> {
    let course_id = parse_id(&payload.course_id, "courseId")?;
    let since = payload.since.map(|since| streams::since(Some(since))).transpose()?;
    let stream = stream(course_id);
    state.commands.authorize_read(&ctx.session.user, stream).await?;
    // Enter before reading, so nothing committed in between can be missed; an event
    // may then arrive both live and in `missed`, and clients drop `seq <= cursor`.
    enter(state, ctx, namespace, course_id);
    let page = match since {
        None => json!({"cursor": state.store.stream_head(stream).await?, "missed": [], "hasMore": false}),
        Some(since) => {
            let page = state.store.read_stream(stream, since, streams::page_limit(payload.limit)).await?;
            json!({"cursor": page.cursor, "missed": page.events, "hasMore": page.has_more})
        }
    };
    let mut fields = reply(page);
    fields.insert("courseId".into(), json!(course_id));
    fields.insert("online".into(), json!(state.realtime.connections.online(namespace, course_id)));
    Ok(fields)
}

/// `leave {courseId}`: leaves the room (a no-op if it was not joined).
pub async fn leave(
    state: &AppState,
    ctx: &Ctx,
    namespace: Namespace,
    payload: LeavePayload,
) -> Result<Reply, AppError> {
    let course_id = parse_id(&payload.course_id, "courseId")?;
    if ctx.session.leave_course(course_id) {
        ctx.socket.leave(rooms::course(course_id));
        announce_departure(state, &ctx.socket, namespace, course_id, ctx.session.user.id);
    }
    Ok(Reply::new())
}

/// A socket that joined the course was checked at `join`.
pub fn membership(ctx: &Ctx, course_id: Uuid) -> Membership {
    if ctx.session.has_joined(course_id) { Membership::Checked } else { Membership::Unchecked }
}

/// Ephemeral events (typing, cursors) go only to rooms the socket is in.
pub fn require_joined(ctx: &Ctx, course_id: Uuid) -> Result<(), AppError> {
    if ctx.session.has_joined(course_id) { Ok(()) } else { Err(AppError::Forbidden("join the course first")) }
}

fn enter(state: &AppState, ctx: &Ctx, namespace: Namespace, course_id: Uuid) {
    if !ctx.session.join_course(course_id) {
        return;
    }
    let room = rooms::course(course_id);
    ctx.socket.join(room.clone());
    let user = ctx.session.user.id;
    if state.realtime.connections.enter_course(namespace, course_id, user) {
        presence(&ctx.socket, &room, course_id, user, "online");
    }
}

/// Records that one socket left a course room; the user's last socket announces them offline.
pub fn announce_departure(state: &AppState, socket: &SocketRef, namespace: Namespace, course_id: Uuid, user: Uuid) {
    if state.realtime.connections.leave_course(namespace, course_id, user) {
        presence(socket, &rooms::course(course_id), course_id, user, "offline");
    }
}

fn presence(socket: &SocketRef, room: &str, course_id: Uuid, user: Uuid, status: &str) {
    let event = json!({"courseId": course_id, "userId": user, "status": status});
    let socket = socket.clone();
    let room = room.to_owned();
    // Broadcasts are async; presence is best-effort and must not hold up the handler.
    tokio::spawn(async move {
        if let Err(err) = socket.to(room).emit("presence", &event).await {
            tracing::debug!(error = %err, "presence not delivered to every socket");
        }
    });
}
