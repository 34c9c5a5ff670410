//! `/api/analyses`: a member starts an analysis; the analysis service reports its
//! progress, which becomes the owner's progress stream (100 completes it and
//! notifies the owner).

use axum::{Json as AxumJson, Router, extract::State, http::StatusCode, routing::post};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::answers::AnalysisStarted;
use super::caller::{AuthUser, ServiceCaller};
use super::extract::{Json, Path};
use super::{
    answers::EventReply,
    refusals::{Conflict, NotFound},
};
use crate::{
    access::require_course_reader,
    domain::parse_id,
    error::AppError,
    events::commands::{EventAnswer, event_reply},
    state::AppState,
    streams::ProgressEvent,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/analyses", post(start)).route("/api/analyses/{analysis_id}/progress", post(progress))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct StartBody {
    course_id: String,
    input: Value,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ProgressBody {
    #[schema(minimum = 0, maximum = 100)]
    progress: i64,
    #[serde(default)]
    data: Value,
}

/// Starts an analysis of a course's input (course members).
#[utoipa::path(post, path = "/api/analyses", tag = "analyses", request_body = StartBody,
    security(("bearer" = [])), responses((status = 201, body = AnalysisStarted), NotFound))]
async fn start(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Json(body): Json<StartBody>,
) -> Result<(StatusCode, AxumJson<AnalysisStarted>), AppError> {
    let course_id = parse_id(&body.course_id, "courseId")?;
    require_course_reader(&state.store, course_id, &me).await?;
    let analysis_id = state.store.create_analysis(course_id, me.id, &body.input).await?;
    Ok((StatusCode::CREATED, AxumJson(AnalysisStarted { analysis_id })))
}

/// The analysis service reports progress (0-100; 100 completes it and notifies the owner).
#[utoipa::path(post, path = "/api/analyses/{analysis_id}/progress", tag = "analyses", params(("analysis_id" = Uuid, Path)),
    request_body = ProgressBody, security(("service" = [])),
    responses((status = 200, body = EventReply<ProgressEvent>), NotFound, Conflict))]
async fn progress(
    State(state): State<AppState>,
    ServiceCaller(service): ServiceCaller,
    Path(analysis_id): Path<Uuid>,
    Json(body): Json<ProgressBody>,
) -> Result<AxumJson<EventAnswer>, AppError> {
    let appended = state.commands.report_progress(analysis_id, body.progress, body.data).await?;
    tracing::info!(%analysis_id, progress = body.progress, service, "analysis progress");
    Ok(AxumJson(event_reply(&appended)?))
}
