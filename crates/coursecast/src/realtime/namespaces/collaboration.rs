//! `/collaboration`: shared annotations on course documents (stored, replayed like
//! chat) and live cursors (relayed, not stored).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::extract::SocketRef;

use super::{
    chat::event_reply,
    course_rooms::{self, JoinPayload, LeavePayload},
};
use crate::{
    domain::{ClientMsgId, DocumentId, parse_id},
    error::AppError,
    events::StreamKey,
    realtime::{
        Namespace, Session,
        dispatch::{Ctx, Reply},
        rooms,
    },
    state::AppState,
    store::Append,
};

/// Largest annotation, as serialised JSON.
const MAX_ANNOTATION_BYTES: usize = 16 * 1024;
/// Largest cursor position, as serialised JSON.
const MAX_POSITION_BYTES: usize = 1024;

pub fn register(socket: &SocketRef, session: &Arc<Session>, state: &AppState) {
    route!(socket, session, state, "join" => join);
    route!(socket, session, state, "leave" => leave);
    route!(socket, session, state, "annotate" => annotate);
    route!(socket, session, state, "cursor" => cursor);
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
    course_rooms::join(state, &ctx, Namespace::Collaboration, payload, StreamKey::Annotations).await
}

async fn leave(state: &AppState, ctx: Ctx, payload: LeavePayload) -> Result<Reply, AppError> {
    course_rooms::leave(state, &ctx, Namespace::Collaboration, payload).await
}

/// Serialised size of a client-supplied JSON value, refused past `max`.
fn bounded(value: &Value, field: &str, max: usize) -> Result<(), AppError> {
    let size = serde_json::to_vec(value).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > max { Err(AppError::validation(format!("{field} must be at most {max} bytes of JSON"))) } else { Ok(()) }
}

async fn annotate(state: &AppState, ctx: Ctx, payload: AnnotatePayload) -> Result<Reply, AppError> {
    let course_id = parse_id(&payload.course_id, "courseId")?;
    if !payload.annotation.is_object() {
        return Err(AppError::validation("annotation must be a JSON object"));
    }
    bounded(&payload.annotation, "annotation", MAX_ANNOTATION_BYTES)?;
    let op = Append::Annotate {
        course_id,
        document_id: DocumentId::parse(&payload.document_id)?,
        user_id: ctx.session.user.id,
        annotation: payload.annotation,
        client_msg_id: ClientMsgId::parse(&payload.client_msg_id)?,
    };
    course_rooms::require_member(state, &ctx, course_id).await?;
    event_reply(&state.publisher.publish(op).await?)
}

async fn cursor(_state: &AppState, ctx: Ctx, payload: CursorPayload) -> Result<Reply, AppError> {
    let course_id = parse_id(&payload.course_id, "courseId")?;
    let document_id = DocumentId::parse(&payload.document_id)?;
    bounded(&payload.position, "position", MAX_POSITION_BYTES)?;
    course_rooms::require_joined(&ctx, course_id)?;
    let event = json!({
        "courseId": course_id,
        "documentId": document_id.as_str(),
        "userId": ctx.session.user.id,
        "position": payload.position,
    });
    if let Err(err) = ctx.socket.to(rooms::course(course_id)).emit("cursor", &event).await {
        tracing::debug!(error = %err, "cursor not delivered to every socket");
    }
    Ok(Reply::new())
}
