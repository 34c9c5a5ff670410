//! What a client may ask of the event streams, decided once for every door: the
//! socket handlers, the HTTP polling fallback, `POST /api/notifications` and the
//! analysis service's progress reports all call [`Commands`], so validation,
//! authorisation and answers cannot differ between them. Each command parses raw
//! input into domain types first (`VALIDATION_FAILED`), then authorises, then
//! publishes.

use std::sync::Arc;

use uuid::Uuid;

use super::publisher::Publisher;
use crate::{
    access::{find_course, manages, require_course_reader, require_self_or_admin},
    auth::{Caller, Identity},
    domain::{ChannelId, ClientMsgId, DocumentId, MessageContent, NotificationText, Role, parse_id},
    error::AppError,
    store::Store,
    streams::{Append, Appended, NewNotification, NotificationType, Owner, Priority, StreamKey},
};

/// Whether the caller is already known to be a member of the course (a socket that
/// joined its room was checked at `join`), sparing a lookup per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    Checked,
    Unchecked,
}

/// The bounds commands enforce on input (PROTOCOL.md section 2, "Limits").
#[derive(Debug, Clone, Copy)]
pub struct CommandLimits {
    pub message_max_chars: usize,
}

/// Largest annotation, as serialised JSON.
const MAX_ANNOTATION_BYTES: usize = 16 * 1024;

/// A notification as a caller asks for it: exactly one of `user_id` and `course_id`.
pub struct NotifyRequest<'a> {
    pub user_id: Option<&'a str>,
    pub course_id: Option<&'a str>,
    pub notification_type: NotificationType,
    pub title: &'a str,
    pub message: &'a str,
    pub priority: Priority,
}

/// The command path's handles: storage for authorisation lookups, the publisher for
/// appends, and the input bounds. Cheap to clone.
#[derive(Clone)]
pub struct Commands {
    store: Store,
    publisher: Publisher,
    limits: CommandLimits,
}

impl Commands {
    pub fn new(store: Store, publisher: Publisher, limits: CommandLimits) -> Self {
        Self { store, publisher, limits }
    }

    /// Resolves once every append handed in so far has been stored and delivered.
    pub async fn drained(&self) {
        self.publisher.drained().await;
    }

    async fn require_member(&self, me: &Identity, course_id: Uuid, membership: Membership) -> Result<(), AppError> {
        match membership {
            Membership::Checked => Ok(()),
            Membership::Unchecked => require_course_reader(&self.store, course_id, me).await.map(drop),
        }
    }

    /// Who may read a stream: members and ADMINs a course's, the owner and ADMINs a
    /// user's. `NOT_FOUND` for an unknown course, `FORBIDDEN` otherwise.
    pub async fn authorize_read(&self, me: &Identity, stream: StreamKey) -> Result<(), AppError> {
        match stream.kind.owner() {
            Owner::Course => require_course_reader(&self.store, stream.id, me).await.map(drop),
            Owner::User => require_self_or_admin(stream.id, me),
        }
    }

    /// Who may watch a course's analysis progress: its professor and ADMINs.
    pub async fn authorize_watch(&self, me: &Identity, course_id: Uuid) -> Result<(), AppError> {
        let course = find_course(&self.store, course_id).await?;
        if manages(&course, me) {
            Ok(())
        } else {
            Err(AppError::Forbidden("only the course's professor or an ADMIN may watch its analyses"))
        }
    }

    pub async fn send_message(
        &self,
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
            content: MessageContent::parse(content, self.limits.message_max_chars)?,
            client_msg_id: ClientMsgId::parse(client_msg_id)?,
        };
        self.require_member(me, course_id, membership).await?;
        self.publisher.publish(op).await
    }

    pub async fn edit_message(
        &self,
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
            content: MessageContent::parse(content, self.limits.message_max_chars)?,
        };
        self.require_member(me, course_id, membership).await?;
        self.publisher.publish(op).await
    }

    pub async fn delete_message(&self, me: &Identity, course_id: Uuid, message_id: &str) -> Result<Appended, AppError> {
        let message_id = parse_id(message_id, "messageId")?;
        let course = require_course_reader(&self.store, course_id, me).await?;
        let op = Append::DeleteMessage { course_id, message_id, actor_id: me.id, may_moderate: manages(&course, me) };
        self.publisher.publish(op).await
    }

    pub async fn annotate(
        &self,
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
        self.require_member(me, course_id, membership).await?;
        self.publisher.publish(op).await
    }

    pub async fn read_notification(&self, me: &Identity, notification_id: &str) -> Result<Appended, AppError> {
        let op =
            Append::ReadNotification { notification_id: parse_id(notification_id, "notificationId")?, user_id: me.id };
        self.publisher.publish(op).await
    }

    /// Notifies one user or every member of a course (but the sender). ADMINs and
    /// services may notify anyone; a PROFESSOR their own courses and their members.
    pub async fn notify(&self, caller: &Caller, request: NotifyRequest<'_>) -> Result<Appended, AppError> {
        let notification = NewNotification {
            notification_type: request.notification_type,
            title: NotificationText::title(request.title)?,
            message: NotificationText::body(request.message)?,
            priority: request.priority,
        };
        let professor = match caller {
            Caller::Service(_) => None,
            Caller::User(me) if me.is_admin() => None,
            Caller::User(me) if me.role == Role::Professor => Some(*me),
            Caller::User(_) => return Err(AppError::Forbidden("students may not send notifications")),
        };
        let recipients = match (request.user_id, request.course_id) {
            (Some(user_id), None) => self.notified_user(professor, parse_id(user_id, "userId")?).await?,
            (None, Some(course_id)) => {
                let sender = match caller {
                    Caller::User(me) => Some(me.id),
                    Caller::Service(_) => None,
                };
                self.notified_members(professor, parse_id(course_id, "courseId")?, sender).await?
            }
            _ => return Err(AppError::validation("give exactly one of userId and courseId")),
        };
        self.publisher.publish(Append::Notify { recipients, notification }).await
    }

    async fn notified_user(&self, professor: Option<Identity>, user_id: Uuid) -> Result<Vec<Uuid>, AppError> {
        self.store.user(user_id).await?.ok_or(AppError::NotFound("no such user"))?;
        if let Some(me) = professor
            && !self.store.teaches_member(me.id, user_id).await?
        {
            return Err(AppError::Forbidden("a professor may notify only members of their courses"));
        }
        Ok(vec![user_id])
    }

    async fn notified_members(
        &self,
        professor: Option<Identity>,
        course_id: Uuid,
        sender: Option<Uuid>,
    ) -> Result<Vec<Uuid>, AppError> {
        let course = find_course(&self.store, course_id).await?;
        if let Some(me) = professor
            && !manages(&course, &me)
        {
            return Err(AppError::Forbidden("a professor may notify only their own courses"));
        }
        let members = self.store.members(course.id).await?;
        Ok(members.into_iter().map(|m| m.user_id).filter(|id| Some(*id) != sender).collect())
    }

    /// The analysis service's progress report (services only: the HTTP door checks
    /// the service token). 100 completes the analysis and notifies its owner.
    pub async fn report_progress(
        &self,
        analysis_id: Uuid,
        progress: i64,
        data: serde_json::Value,
    ) -> Result<Appended, AppError> {
        let progress = u8::try_from(progress)
            .ok()
            .filter(|p| *p <= 100)
            .ok_or_else(|| AppError::validation("progress must be an integer from 0 to 100"))?;
        let completion_notice = NewNotification {
            notification_type: NotificationType::CnnAnalysisComplete,
            title: NotificationText::title("Analysis complete")?,
            message: NotificationText::body(&format!("Analysis {analysis_id} has finished."))?,
            priority: Priority::Normal,
        };
        self.publisher.publish(Append::Progress { analysis_id, progress, data, completion_notice }).await
    }
}

/// Refuses client-supplied JSON larger than `max` bytes once serialised.
pub fn bounded_json(value: &serde_json::Value, field: &str, max: usize) -> Result<(), AppError> {
    let size = serde_json::to_vec(value).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > max { Err(AppError::validation(format!("{field} must be at most {max} bytes of JSON"))) } else { Ok(()) }
}

/// The answer to every stored event, on both doors: `{ok: true, event}`, the event
/// as stored (its bytes are copied, not decoded and encoded again).
pub struct EventAnswer {
    pub event: Arc<serde_json::value::RawValue>,
}

impl serde::Serialize for EventAnswer {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("ok", &true)?;
        map.serialize_entry("event", &*self.event)?;
        map.end()
    }
}

pub fn event_reply(appended: &Appended) -> Result<EventAnswer, AppError> {
    let event = appended.events.first().ok_or_else(|| AppError::internal(anyhow::anyhow!("append stored no event")))?;
    Ok(EventAnswer { event: event.payload.clone() })
}
