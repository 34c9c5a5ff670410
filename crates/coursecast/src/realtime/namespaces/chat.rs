//! `/chat`: course chat (join, leave, send, edit, delete, typing) and presence.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use socketioxide::extract::SocketRef;

use super::course_rooms::{self, JoinPayload, LeavePayload};
use crate::{
    access::{manages, require_course_reader},
    domain::{ChannelId, ClientMsgId, MessageContent, parse_id},
    error::AppError,
    events::StreamKey,
    realtime::{
        Namespace, Session,
        dispatch::{Ctx, Reply},
        rooms,
    },
    state::AppState,
    store::{Append, Appended},
};

pub fn register(socket: &SocketRef, session: &Arc<Session>, state: &AppState) {
    route!(socket, session, state, "join" => join);
    route!(socket, session, state, "leave" => leave);
    route!(socket, session, state, "send" => send);
    route!(socket, session, state, "edit" => edit);
    route!(socket, session, state, "delete" => delete);
    route!(socket, session, state, "typing" => typing);
}

async fn join(state: &AppState, ctx: Ctx, payload: JoinPayload) -> Result<Reply, AppError> {
    course_rooms::join(state, &ctx, Namespace::Chat, payload, StreamKey::Messages).await
}

async fn leave(state: &AppState, ctx: Ctx, payload: LeavePayload) -> Result<Reply, AppError> {
    course_rooms::leave(state, &ctx, Namespace::Chat, payload).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SendPayload {
    pub course_id: String,
    pub content: String,
    pub channel_id: Option<String>,
    pub client_msg_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EditPayload {
    course_id: String,
    message_id: String,
    content: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DeletePayload {
    course_id: String,
    message_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TypingPayload {
    course_id: String,
}

/// The ack of every stored event: `{ok: true, event}`.
pub fn event_reply(appended: &Appended) -> Result<Reply, AppError> {
    let event = appended.events.first().ok_or_else(|| AppError::internal(anyhow::anyhow!("append stored no event")))?;
    let mut fields = Reply::new();
    fields.insert("event".into(), serde_json::to_value(&*event.payload).map_err(AppError::internal)?);
    Ok(fields)
}

async fn send(state: &AppState, ctx: Ctx, payload: SendPayload) -> Result<Reply, AppError> {
    let course_id = parse_id(&payload.course_id, "courseId")?;
    let op = Append::SendMessage {
        course_id,
        sender_id: ctx.session.user.id,
        channel_id: payload.channel_id.as_deref().map(ChannelId::parse).transpose()?,
        content: MessageContent::parse(&payload.content, state.settings.message_max_chars)?,
        client_msg_id: ClientMsgId::parse(&payload.client_msg_id)?,
    };
    course_rooms::require_member(state, &ctx, course_id).await?;
    event_reply(&state.publisher.publish(op).await?)
}

async fn edit(state: &AppState, ctx: Ctx, payload: EditPayload) -> Result<Reply, AppError> {
    let course_id = parse_id(&payload.course_id, "courseId")?;
    let op = Append::EditMessage {
        course_id,
        message_id: parse_id(&payload.message_id, "messageId")?,
        editor_id: ctx.session.user.id,
        content: MessageContent::parse(&payload.content, state.settings.message_max_chars)?,
    };
    course_rooms::require_member(state, &ctx, course_id).await?;
    event_reply(&state.publisher.publish(op).await?)
}

async fn delete(state: &AppState, ctx: Ctx, payload: DeletePayload) -> Result<Reply, AppError> {
    let course_id = parse_id(&payload.course_id, "courseId")?;
    let message_id = parse_id(&payload.message_id, "messageId")?;
    let me = ctx.session.user;
    let course = require_course_reader(&state.store, course_id, &me).await?;
    let op = Append::DeleteMessage { course_id, message_id, actor_id: me.id, may_moderate: manages(&course, &me) };
    event_reply(&state.publisher.publish(op).await?)
}

async fn typing(_state: &AppState, ctx: Ctx, payload: TypingPayload) -> Result<Reply, AppError> {
    let course_id = parse_id(&payload.course_id, "courseId")?;
    course_rooms::require_joined(&ctx, course_id)?;
    let event = json!({"courseId": course_id, "userId": ctx.session.user.id});
    if let Err(err) = ctx.socket.to(rooms::course(course_id)).emit("typing", &event).await {
        tracing::debug!(error = %err, "typing not delivered to every socket");
    }
    Ok(Reply::new())
}
