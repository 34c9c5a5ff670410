//! What the pipeline asks storage to append, and what an append produced.

use uuid::Uuid;

use super::{NotificationType, Priority, StoredEvent};
use crate::domain::{ChannelId, ClientMsgId, DocumentId, MessageContent, NotificationText};

/// One thing to append. Authorisation that needs only the caller and the course
/// (membership, roles) is checked before; what needs stored state is checked by
/// storage, inside the transaction.
#[derive(Debug, Clone)]
pub enum Append {
    SendMessage {
        course_id: Uuid,
        sender_id: Uuid,
        channel_id: Option<ChannelId>,
        content: MessageContent,
        client_msg_id: ClientMsgId,
    },
    EditMessage {
        course_id: Uuid,
        message_id: Uuid,
        editor_id: Uuid,
        content: MessageContent,
    },
    DeleteMessage {
        course_id: Uuid,
        message_id: Uuid,
        actor_id: Uuid,
        /// The course's professor or an ADMIN: may delete anyone's message.
        may_moderate: bool,
    },
    Annotate {
        course_id: Uuid,
        document_id: DocumentId,
        user_id: Uuid,
        annotation: serde_json::Value,
        client_msg_id: ClientMsgId,
    },
    Notify {
        recipients: Vec<Uuid>,
        notification: NewNotification,
    },
    ReadNotification {
        notification_id: Uuid,
        user_id: Uuid,
    },
    Progress {
        analysis_id: Uuid,
        progress: u8,
        data: serde_json::Value,
        /// Sent to the owner when `progress` is 100.
        completion_notice: NewNotification,
    },
}

#[derive(Debug, Clone)]
pub struct NewNotification {
    pub notification_type: NotificationType,
    pub title: NotificationText,
    pub message: NotificationText,
    pub priority: Priority,
}

/// What an append produced: its events (the first is the one the caller asked for),
/// and whether it was a retry answered with the original event.
#[derive(Debug, Clone)]
pub struct Appended {
    pub events: Vec<StoredEvent>,
    pub duplicate: bool,
}
