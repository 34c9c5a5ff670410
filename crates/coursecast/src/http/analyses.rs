//! `/api/analyses`: a member starts an analysis; the analysis service reports its
//! progress, which becomes the owner's progress stream (100 completes it and
//! notifies the owner).

use axum::{Json as AxumJson, Router, extract::State, http::StatusCode, routing::post};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::extract::{Json, Path};
use crate::{
    access::require_course_reader,
    auth::{AuthUser, ServiceCaller},
    domain::{NotificationText, parse_id},
    error::AppError,
    events::{NotificationType, Priority, commands::event_reply},
    state::AppState,
    store::{Append, NewNotification},
};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/analyses", post(start)).route("/api/analyses/{analysis_id}/progress", post(progress))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct StartBody {
    course_id: String,
    input: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProgressBody {
    progress: i64,
    #[serde(default)]
    data: Value,
}

async fn start(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Json(body): Json<StartBody>,
) -> Result<(StatusCode, AxumJson<Value>), AppError> {
    let course_id = parse_id(&body.course_id, "courseId")?;
    require_course_reader(&state.store, course_id, &me).await?;
    let analysis_id = state.store.create_analysis(course_id, me.id, &body.input).await?;
    Ok((StatusCode::CREATED, AxumJson(json!({"analysisId": analysis_id}))))
}

async fn progress(
    State(state): State<AppState>,
    ServiceCaller(service): ServiceCaller,
    Path(analysis_id): Path<Uuid>,
    Json(body): Json<ProgressBody>,
) -> Result<AxumJson<Map<String, Value>>, AppError> {
    let progress = u8::try_from(body.progress)
        .ok()
        .filter(|p| *p <= 100)
        .ok_or_else(|| AppError::validation("progress must be an integer from 0 to 100"))?;
    let completion_notice = NewNotification {
        notification_type: NotificationType::CnnAnalysisComplete,
        title: NotificationText::title("Analysis complete")?,
        message: NotificationText::body(&format!("Analysis {analysis_id} has finished."))?,
        priority: Priority::Normal,
    };
    let op = Append::Progress { analysis_id, progress, data: body.data, completion_notice };
    let appended = state.publisher.publish(op).await?;
    tracing::info!(%analysis_id, progress, service, "analysis progress");
    Ok(AxumJson(event_reply(&appended)?))
}
