//! Real-time events: their streams, their wire shapes (PROTOCOL.md section 3, "Event
//! payloads"), and the one pipeline every door publishes through (`publisher`).

pub mod commands;
pub mod fanout;
pub mod publisher;
pub mod waiters;

use std::{fmt, sync::Arc};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::{error::AppError, store::Timestamp};

/// Events per page when the client names no `limit`, and the most it may ask for.
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

/// Where a page starts: after `since` (default 0, never negative).
pub fn since(since: Option<i64>) -> Result<i64, AppError> {
    match since {
        Some(since) if since < 0 => Err(AppError::validation("since must be a non-negative integer")),
        since => Ok(since.unwrap_or(0)),
    }
}

/// A page size: default 100, clamped to 1..=1000 (PROTOCOL.md section 2, "Paging").
pub fn page_limit(limit: Option<i64>) -> u32 {
    // The clamp keeps the value within u32.
    limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE) as u32
}

/// A totally ordered, durable sequence of events; `seq` counts within one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKey {
    /// A course's chat messages (sent, edited, deleted).
    Messages(Uuid),
    /// A course's collaboration annotations.
    Annotations(Uuid),
    /// A user's notifications (new, read).
    Notifications(Uuid),
    /// A user's analysis progress.
    Progress(Uuid),
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Messages(id) => write!(f, "messages:{id}"),
            Self::Annotations(id) => write!(f, "annotations:{id}"),
            Self::Notifications(id) => write!(f, "notifications:{id}"),
            Self::Progress(id) => write!(f, "progress:{id}"),
        }
    }
}

impl std::str::FromStr for StreamKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, id) = s.split_once(':').ok_or_else(|| format!("no stream kind in {s:?}"))?;
        let id = Uuid::parse_str(id).map_err(|e| format!("stream id in {s:?}: {e}"))?;
        match kind {
            "messages" => Ok(Self::Messages(id)),
            "annotations" => Ok(Self::Annotations(id)),
            "notifications" => Ok(Self::Notifications(id)),
            "progress" => Ok(Self::Progress(id)),
            other => Err(format!("unknown stream kind {other:?}")),
        }
    }
}

/// An event as committed: its stream, its `seq`, and its JSON exactly as stored (and
/// therefore exactly as every socket and polling client receives it).
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub stream: StreamKey,
    pub seq: i64,
    pub payload: Arc<RawValue>,
    /// For progress events: the analysis's course, whose watchers also receive it.
    pub watch_course: Option<Uuid>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    MessageSent,
    MessageEdited,
    MessageDeleted,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageEvent {
    #[serde(rename = "type")]
    pub kind: MessageKind,
    pub seq: i64,
    pub message_id: Uuid,
    pub course_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    pub sender_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    pub timestamp: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    NotificationNew,
    NotificationRead,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NotificationType {
    CnnAnalysisComplete,
    PeerConnection,
    AssignmentDue,
    NewMessage,
    SystemUpdate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Priority {
    Low,
    Normal,
    High,
    Urgent,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationEvent {
    #[serde(rename = "type")]
    pub kind: NotificationKind,
    pub seq: i64,
    pub notification_id: Uuid,
    pub user_id: Uuid,
    pub notification_type: NotificationType,
    pub title: String,
    pub message: String,
    pub priority: Priority,
    pub timestamp: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgressKind {
    AnalysisProgress,
    AnalysisComplete,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressEvent {
    #[serde(rename = "type")]
    pub kind: ProgressKind,
    pub seq: i64,
    pub user_id: Uuid,
    pub analysis_id: Uuid,
    pub progress: u8,
    pub data: serde_json::Value,
    pub timestamp: Timestamp,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnnotationEvent {
    pub seq: i64,
    pub annotation_id: Uuid,
    pub course_id: Uuid,
    pub document_id: String,
    pub user_id: Uuid,
    pub annotation: serde_json::Value,
    pub timestamp: Timestamp,
}
