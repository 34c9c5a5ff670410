//! `POST /api/notifications`: notify one user or every member of a course. Who may
//! notify whom is the command path's to decide (`Commands::notify`).

use axum::{Json as AxumJson, Router, extract::State, http::StatusCode, routing::post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::caller::AnyCaller;
use super::extract::Json;
use super::{answers::NotificationEvents, refusals::NotFound};
use crate::{
    error::AppError,
    events::commands::NotifyRequest,
    state::AppState,
    streams::{NotificationType, Priority},
};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/notifications", post(notify))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NotifyBody {
    user_id: Option<String>,
    course_id: Option<String>,
    notification_type: NotificationType,
    title: String,
    message: String,
    priority: Priority,
}

/// Notifies `userId`, or every member of `courseId` but the caller (ADMIN; a
/// PROFESSOR for their courses and members; a service).
#[utoipa::path(post, path = "/api/notifications", tag = "notifications", request_body = NotifyBody,
    security(("bearer" = []), ("service" = [])), responses((status = 201, body = NotificationEvents), NotFound))]
async fn notify(
    State(state): State<AppState>,
    AnyCaller(caller): AnyCaller,
    Json(body): Json<NotifyBody>,
) -> Result<(StatusCode, AxumJson<Value>), AppError> {
    let request = NotifyRequest {
        user_id: body.user_id.as_deref(),
        course_id: body.course_id.as_deref(),
        notification_type: body.notification_type,
        title: &body.title,
        message: &body.message,
        priority: body.priority,
    };
    let appended = state.commands.notify(&caller, request).await?;
    let events: Vec<&serde_json::value::RawValue> = appended.events.iter().map(|e| &*e.payload).collect();
    Ok((StatusCode::CREATED, AxumJson(json!({"events": events}))))
}
