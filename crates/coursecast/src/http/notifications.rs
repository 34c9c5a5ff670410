//! `POST /api/notifications`: notify one user or every member of a course.
//!
//! ADMINs and services may notify anyone; a PROFESSOR may notify their own courses
//! and the members of those courses.

use axum::{Json as AxumJson, Router, extract::State, http::StatusCode, routing::post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::Json;
use crate::{
    access::{find_course, manages},
    auth::{AnyCaller, Caller},
    domain::{NotificationText, Role, parse_id},
    error::AppError,
    events::{NotificationType, Priority},
    state::AppState,
    store::{Append, NewNotification},
};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/notifications", post(notify))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NotifyBody {
    user_id: Option<String>,
    course_id: Option<String>,
    notification_type: NotificationType,
    title: String,
    message: String,
    priority: Priority,
}

async fn notify(
    State(state): State<AppState>,
    AnyCaller(caller): AnyCaller,
    Json(body): Json<NotifyBody>,
) -> Result<(StatusCode, AxumJson<Value>), AppError> {
    let notification = NewNotification {
        notification_type: body.notification_type,
        title: NotificationText::title(&body.title)?,
        message: NotificationText::body(&body.message)?,
        priority: body.priority,
    };
    let professor = match &caller {
        Caller::Service(_) => None,
        Caller::User(me) if me.is_admin() => None,
        Caller::User(me) if me.role == Role::Professor => Some(*me),
        Caller::User(_) => return Err(AppError::Forbidden("students may not send notifications")),
    };
    let recipients = match (body.user_id.as_deref(), body.course_id.as_deref()) {
        (Some(user_id), None) => {
            let user_id = parse_id(user_id, "userId")?;
            state.store.user(user_id).await?.ok_or(AppError::NotFound("no such user"))?;
            if let Some(me) = professor
                && !state.store.teaches_member(me.id, user_id).await?
            {
                return Err(AppError::Forbidden("a professor may notify only members of their courses"));
            }
            vec![user_id]
        }
        (None, Some(course_id)) => {
            let course = find_course(&state.store, parse_id(course_id, "courseId")?).await?;
            if let Some(me) = professor
                && !manages(&course, &me)
            {
                return Err(AppError::Forbidden("a professor may notify only their own courses"));
            }
            let sender = match &caller {
                Caller::User(me) => Some(me.id),
                Caller::Service(_) => None,
            };
            let members = state.store.members(course.id).await?;
            members.into_iter().map(|m| m.user_id).filter(|id| Some(*id) != sender).collect()
        }
        _ => return Err(AppError::validation("give exactly one of userId and courseId")),
    };
    let appended = state.publisher.publish(Append::Notify { recipients, notification }).await?;
    let events: Vec<&serde_json::value::RawValue> = appended.events.iter().map(|e| &*e.payload).collect();
    Ok((StatusCode::CREATED, AxumJson(json!({"events": events}))))
}
