//! `/chat`: course chat (join, leave, send, edit, delete, typing) and presence.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use socketioxide::extract::SocketRef;

use super::course_rooms::{self, JoinPayload, LeavePayload, PresencePayload};
use crate::{
    domain::parse_id,
    error::AppError,
    events::commands::{EventAnswer, event_reply},
    realtime::{
        Namespace, Session,
        catalog::client,
        dispatch::{Ctx, Reply},
        presence::Ephemeral,
    },
    state::AppState,
    streams::StreamKey,
};

pub fn register(socket: &SocketRef, session: &Arc<Session>, state: &AppState) {
    route!(socket, session, state, client::JOIN => join);
    route!(socket, session, state, client::LEAVE => leave);
    route!(socket, session, state, client::PRESENCE => presence);
    route!(socket, session, state, client::SEND => send);
    route!(socket, session, state, client::EDIT => edit);
    route!(socket, session, state, client::DELETE => delete);
    route!(socket, session, state, client::TYPING => typing);
}

async fn join(state: &AppState, ctx: Ctx, payload: JoinPayload) -> Result<Reply, AppError> {
    course_rooms::join(state, &ctx, Namespace::Chat, payload, StreamKey::messages).await
}

async fn leave(state: &AppState, ctx: Ctx, payload: LeavePayload) -> Result<Reply, AppError> {
    course_rooms::leave(state, &ctx, Namespace::Chat, payload).await
}

async fn presence(state: &AppState, ctx: Ctx, payload: PresencePayload) -> Result<Reply, AppError> {
    course_rooms::presence_page(state, &ctx, Namespace::Chat, payload, StreamKey::messages).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SendPayload {
    course_id: String,
    content: String,
    channel_id: Option<String>,
    client_msg_id: String,
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

async fn send(state: &AppState, ctx: Ctx, p: SendPayload) -> Result<EventAnswer, AppError> {
    let course_id = parse_id(&p.course_id, "courseId")?;
    let me = &ctx.session.user;
    let membership = course_rooms::membership(&ctx, course_id);
    let appended = state
        .commands
        .send_message(me, membership, course_id, &p.content, p.channel_id.as_deref(), &p.client_msg_id)
        .await?;
    event_reply(&appended)
}

async fn edit(state: &AppState, ctx: Ctx, p: EditPayload) -> Result<EventAnswer, AppError> {
    let course_id = parse_id(&p.course_id, "courseId")?;
    let membership = course_rooms::membership(&ctx, course_id);
    event_reply(
        &state.commands.edit_message(&ctx.session.user, membership, course_id, &p.message_id, &p.content).await?,
    )
}

async fn delete(state: &AppState, ctx: Ctx, p: DeletePayload) -> Result<EventAnswer, AppError> {
    let course_id = parse_id(&p.course_id, "courseId")?;
    event_reply(&state.commands.delete_message(&ctx.session.user, course_id, &p.message_id).await?)
}

async fn typing(state: &AppState, ctx: Ctx, payload: TypingPayload) -> Result<Reply, AppError> {
    let course_id = parse_id(&payload.course_id, "courseId")?;
    let event = json!({"courseId": course_id, "userId": ctx.session.user.id});
    course_rooms::relay(state, &ctx, Namespace::Chat, course_id, Ephemeral::Typing, event).await
}
