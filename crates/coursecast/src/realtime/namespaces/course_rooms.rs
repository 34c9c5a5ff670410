//! Joining and leaving course rooms, shared by `/chat` and `/collaboration`: access
//! check, room membership, presence (its first page in the join ack, further pages
//! on request), the replay of missed events, and the relay of ephemeral events.

use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{page_reply, reply};
use crate::{
    domain::parse_id,
    error::AppError,
    events::{commands::Membership, interest::Scope},
    realtime::{
        Namespace, catalog,
        dispatch::{Ctx, Reply},
        presence::Ephemeral,
        presence_sync, rooms,
    },
    state::AppState,
    streams::{self, StreamKey, StreamPage},
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PresencePayload {
    course_id: String,
    /// The last user id of the previous page.
    after: Option<String>,
    /// Page size (default 100, at most 1,000).
    limit: Option<i64>,
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
    let opened = enter(state, ctx, namespace, course_id);
    state.interest.want(Scope::Course(course_id)).await;
    if opened && let Some(cluster) = &state.realtime.cluster {
        // The first of this node in the room: its other nodes' users, for `online`.
        presence_sync::sync_room(&state.realtime.presence, cluster, namespace, course_id).await;
    }
    let page = match since {
        None => StreamPage { events: Vec::new(), cursor: state.store.stream_head(stream).await?, has_more: false },
        Some(since) => state.store.read_stream(stream, since, streams::page_limit(payload.limit)).await?,
    };
    let mut fields = page_reply(page, "missed")?;
    let online = state.realtime.presence.first_page(namespace, course_id);
    fields.insert("courseId", json!(course_id));
    fields.insert_raw("online", online.online);
    fields.insert("onlineCount", json!(online.count));
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
        state.realtime.presence.leave(namespace, course_id, ctx.session.user.id);
    }
    Ok(Reply::new())
}

/// `presence {courseId, after?, limit?}`: a page of the room's online users, ordered
/// by id; the same answer as `GET /api/realtime/presence/:courseId`.
pub async fn presence_page(
    state: &AppState,
    ctx: &Ctx,
    namespace: Namespace,
    payload: PresencePayload,
    stream: fn(Uuid) -> StreamKey,
) -> Result<Reply, AppError> {
    let course_id = parse_id(&payload.course_id, "courseId")?;
    let after = payload.after.as_deref().map(|after| parse_id(after, "after")).transpose()?;
    state.commands.authorize_read(&ctx.session.user, stream(course_id)).await?;
    let page = state.realtime.presence.page(namespace, course_id, after, streams::page_limit(payload.limit) as usize);
    let mut fields = reply(serde_json::to_value(&page).map_err(AppError::internal)?);
    fields.insert("courseId", json!(course_id));
    Ok(fields)
}

/// A socket that joined the course was checked at `join`.
pub fn membership(ctx: &Ctx, course_id: Uuid) -> Membership {
    if ctx.session.has_joined(course_id) { Membership::Checked } else { Membership::Unchecked }
}

/// Ephemeral events (typing, cursors) go only to rooms the socket is in.
pub fn require_joined(ctx: &Ctx, course_id: Uuid) -> Result<(), AppError> {
    if ctx.session.has_joined(course_id) { Ok(()) } else { Err(AppError::Forbidden("join the course first")) }
}

/// Joins the room; true if the room opened on this node with it.
fn enter(state: &AppState, ctx: &Ctx, namespace: Namespace, course_id: Uuid) -> bool {
    if !ctx.session.join_course(course_id) {
        return false;
    }
    ctx.socket.join(rooms::course(course_id));
    state.realtime.presence.enter(namespace, course_id, ctx.session.user.id)
}

/// Relays an ephemeral event to the room, except the sender, if the throttles allow
/// it; `relayed` in the ack says whether it went out. Sockets behind on their buffer
/// are skipped (`rooms::ephemeral_except`): these events are the first to go.
pub async fn relay(
    state: &AppState,
    ctx: &Ctx,
    namespace: Namespace,
    course_id: Uuid,
    kind: Ephemeral,
    event: Value,
) -> Result<Reply, AppError> {
    require_joined(ctx, course_id)?;
    let relayed = state.realtime.presence.may_relay(namespace, course_id, ctx.session.user.id, kind);
    if relayed {
        let name = match kind {
            Ephemeral::Typing => catalog::server::TYPING,
            Ephemeral::Cursor => catalog::server::CURSOR,
        };
        let room = ctx.socket.to(rooms::course(course_id)).except(rooms::ephemeral_except());
        if let Err(err) = room.emit(name, &event).await {
            tracing::debug!(error = %err, event = name, "ephemeral event not delivered to every socket");
        }
    }
    Ok(reply(json!({"relayed": relayed})))
}
