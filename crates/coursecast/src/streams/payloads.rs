//! The events' wire shapes (PROTOCOL.md section 3, "Event payloads"): each is
//! serialised once, when it is stored, and passed through as stored from then on.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    MessageSent,
    MessageEdited,
    MessageDeleted,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageEvent {
    #[serde(rename = "type")]
    pub kind: MessageKind,
    pub seq: i64,
    pub message_id: Uuid,
    pub course_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub channel_id: Option<String>,
    pub sender_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub content: Option<String>,
    pub timestamp: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    NotificationNew,
    NotificationRead,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NotificationType {
    CnnAnalysisComplete,
    PeerConnection,
    AssignmentDue,
    NewMessage,
    SystemUpdate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Priority {
    Low,
    Normal,
    High,
    Urgent,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProgressKind {
    AnalysisProgress,
    AnalysisComplete,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
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

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnnotationEvent {
    pub seq: i64,
    pub annotation_id: Uuid,
    pub course_id: Uuid,
    pub document_id: String,
    pub user_id: Uuid,
    /// Always a JSON object (checked when it is stored).
    #[schema(value_type = Object)]
    pub annotation: serde_json::Value,
    pub timestamp: Timestamp,
}
