//! What a client may ask of the event streams, decided once for both doors: the
//! socket handlers and the HTTP fallback endpoints call these functions, so their
//! validation, authorisation and answers cannot differ. Each parses raw input into
//! domain types first (`VALIDATION_FAILED`), then authorises, then publishes.

use uuid::Uuid;

use crate::{
    access::{manages, require_course_reader},
    auth::Identity,
    domain::{ChannelId, ClientMsgId, DocumentId, MessageContent, parse_id},
    error::AppError,
    state::AppState,
    store::{Append, Appended},
};

/// Whether the caller is already known to be a member of the course (a socket that
/// joined its room was checked at `join`), sparing a lookup per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    Checked,
    Unchecked,
}

async fn require_member(
    state: &AppState,
    me: &Identity,
    course_id: Uuid,
    membership: Membership,
) -> Result<(), AppError> {
    match membership {
        Membership::Checked => Ok(()),
        Membership::Unchecked => require_course_reader(&state.store, course_id, me).await.map(drop),
    }
}

pub async fn send_message(
    state: &AppState,
    me: &Identity,
    membership: Membership,
    course_id: Uuid,
    content: &str,
    channel_id: Option<&str>,
    client_msg_id: &str,
) -> Result<Appended, AppError> {
    let op = Append::SendMessage {
        course_id,
        sender_id: me.id,
        channel_id: channel_id.map(ChannelId::parse).transpose()?,
        content: MessageContent::parse(content, state.settings.message_max_chars)?,
        client_msg_id: ClientMsgId::parse(client_msg_id)?,
    };
    require_member(state, me, course_id, membership).await?;
    state.publisher.publish(op).await
}

pub async fn edit_message(
    state: &AppState,
    me: &Identity,
    membership: Membership,
    course_id: Uuid,
    message_id: &str,
    content: &str,
) -> Result<Appended, AppError> {
    let op = Append::EditMessage {
        course_id,
        message_id: parse_id(message_id, "messageId")?,
        editor_id: me.id,
        content: MessageContent::parse(content, state.settings.message_max_chars)?,
    };
    require_member(state, me, course_id, membership).await?;
    state.publisher.publish(op).await
}

pub async fn delete_message(
    state: &AppState,
    me: &Identity,
    course_id: Uuid,
    message_id: &str,
) -> Result<Appended, AppError> {
    let message_id = parse_id(message_id, "messageId")?;
    let course = require_course_reader(&state.store, course_id, me).await?;
    let op = Append::DeleteMessage { course_id, message_id, actor_id: me.id, may_moderate: manages(&course, me) };
    state.publisher.publish(op).await
}

/// Largest annotation, as serialised JSON.
const MAX_ANNOTATION_BYTES: usize = 16 * 1024;

/// Refuses client-supplied JSON larger than `max` bytes once serialised.
pub fn bounded_json(value: &serde_json::Value, field: &str, max: usize) -> Result<(), AppError> {
    let size = serde_json::to_vec(value).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > max { Err(AppError::validation(format!("{field} must be at most {max} bytes of JSON"))) } else { Ok(()) }
}

pub async fn annotate(
    state: &AppState,
    me: &Identity,
    membership: Membership,
    course_id: Uuid,
    document_id: &str,
    annotation: serde_json::Value,
    client_msg_id: &str,
) -> Result<Appended, AppError> {
    if !annotation.is_object() {
        return Err(AppError::validation("annotation must be a JSON object"));
    }
    bounded_json(&annotation, "annotation", MAX_ANNOTATION_BYTES)?;
    let op = Append::Annotate {
        course_id,
        document_id: DocumentId::parse(document_id)?,
        user_id: me.id,
        annotation,
        client_msg_id: ClientMsgId::parse(client_msg_id)?,
    };
    require_member(state, me, course_id, membership).await?;
    state.publisher.publish(op).await
}

pub async fn read_notification(state: &AppState, me: &Identity, notification_id: &str) -> Result<Appended, AppError> {
    let op = Append::ReadNotification { notification_id: parse_id(notification_id, "notificationId")?, user_id: me.id };
    state.publisher.publish(op).await
}

/// The answer to every stored event, on both doors: `{ok: true, event}`.
pub fn event_reply(appended: &Appended) -> Result<serde_json::Map<String, serde_json::Value>, AppError> {
    let event = appended.events.first().ok_or_else(|| AppError::internal(anyhow::anyhow!("append stored no event")))?;
    let mut fields = serde_json::Map::new();
    fields.insert("ok".into(), serde_json::Value::Bool(true));
    fields.insert("event".into(), serde_json::to_value(&*event.payload).map_err(AppError::internal)?);
    Ok(fields)
}
