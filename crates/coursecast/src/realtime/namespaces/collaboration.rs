//! `/collaboration`: shared annotations on course documents (stored, replayed like
//! chat) and live cursors (relayed, not stored).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::extract::SocketRef;

use super::course_rooms::{self, JoinPayload, LeavePayload, PresencePayload};
use crate::{
    domain::{DocumentId, parse_id},
    error::AppError,
    events::commands::{EventAnswer, bounded_json, event_reply},
    realtime::{
        Namespace, Session,
        catalog::client,
        dispatch::{Ctx, Reply},
        presence::Ephemeral,
    },
    state::AppState,
    streams::StreamKey,
};

/// Largest cursor position, as serialised JSON.
const MAX_POSITION_BYTES: usize = 1024;

pub fn register(socket: &SocketRef, session: &Arc<Session>, state: &AppState) {
    route!(socket, session, state, client::JOIN => join);
    route!(socket, session, state, client::LEAVE => leave);
    route!(socket, session, state, client::PRESENCE => presence);
    route!(socket, session, state, client::ANNOTATE => annotate);
    route!(socket, session, state, client::CURSOR => cursor);
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AnnotatePayload {
    course_id: String,
    document_id: String,
    annotation: Value,
    client_msg_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CursorPayload {
    course_id: String,
    document_id: String,
    position: Value,
}

async fn join(state: &AppState, ctx: Ctx, payload: JoinPayload) -> Result<Reply, AppError> {
    course_rooms::join(state, &ctx, Namespace::Collaboration, payload, StreamKey::annotations).await
}

async fn leave(state: &AppState, ctx: Ctx, payload: LeavePayload) -> Result<Reply, AppError> {
    course_rooms::leave(state, &ctx, Namespace::Collaboration, payload).await
}

async fn presence(state: &AppState, ctx: Ctx, payload: PresencePayload) -> Result<Reply, AppError> {
    course_rooms::presence_page(state, &ctx, Namespace::Collaboration, payload, StreamKey::annotations).await
}

async fn annotate(state: &AppState, ctx: Ctx, p: AnnotatePayload) -> Result<EventAnswer, AppError> {
    let course_id = parse_id(&p.course_id, "courseId")?;
    let membership = course_rooms::membership(&ctx, course_id);
    let me = &ctx.session.user;
    event_reply(
        &state.commands.annotate(me, membership, course_id, &p.document_id, p.annotation, &p.client_msg_id).await?,
    )
}

async fn cursor(state: &AppState, ctx: Ctx, payload: CursorPayload) -> Result<Reply, AppError> {
    let course_id = parse_id(&payload.course_id, "courseId")?;
    let document_id = DocumentId::parse(&payload.document_id)?;
    bounded_json(&payload.position, "position", MAX_POSITION_BYTES)?;
    let event = json!({
        "courseId": course_id,
        "documentId": document_id.as_str(),
        "userId": ctx.session.user.id,
        "position": payload.position,
    });
    course_rooms::relay(state, &ctx, Namespace::Collaboration, course_id, Ephemeral::Cursor, event).await
}
