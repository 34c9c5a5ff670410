//! `/api/courses`: courses and enrolment.
//!
//! Rules: PROFESSOR and ADMIN create courses; the course's professor or an ADMIN
//! enrols; members (and ADMIN) list members. Unknown course: `NOT_FOUND`.

use axum::{
    Router,
    extract::State,
    http::StatusCode,
    routing::{get, post},
};
use serde::Deserialize;
use uuid::Uuid;

use super::answers::{CourseAnswer, Courses, MemberAnswer, Members};
use super::caller::AuthUser;
use super::extract::{Json, Path};
use super::refusals::{Conflict, NotFound};
use crate::{
    access::{find_course, manages, require_course_reader},
    domain::{CourseTitle, Role},
    error::AppError,
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/courses", post(create_course).get(list_courses))
        .route("/api/courses/{course_id}/members", get(list_members).post(add_member))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateCourseBody {
    title: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AddMemberBody {
    user_id: String,
}

/// A course taught by its creator (PROFESSOR, ADMIN).
#[utoipa::path(post, path = "/api/courses", tag = "courses", request_body = CreateCourseBody,
    security(("bearer" = [])), responses((status = 201, body = CourseAnswer)))]
async fn create_course(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Json(body): Json<CreateCourseBody>,
) -> Result<(StatusCode, axum::Json<CourseAnswer>), AppError> {
    if me.role == Role::Student {
        return Err(AppError::Forbidden("only a PROFESSOR or ADMIN may create courses"));
    }
    let title = CourseTitle::parse(&body.title)?;
    let course = state.store.create_course(title, me.id).await?;
    Ok((StatusCode::CREATED, axum::Json(CourseAnswer { course })))
}

/// The courses the caller belongs to (ADMIN: all).
#[utoipa::path(get, path = "/api/courses", tag = "courses", security(("bearer" = [])),
    responses((status = 200, body = Courses)))]
async fn list_courses(State(state): State<AppState>, AuthUser(me): AuthUser) -> Result<axum::Json<Courses>, AppError> {
    let courses = state.store.courses((!me.is_admin()).then_some(me.id)).await?;
    Ok(axum::Json(Courses { courses }))
}

/// Enrols a user (the course's professor, ADMIN).
#[utoipa::path(post, path = "/api/courses/{course_id}/members", tag = "courses", params(("course_id" = Uuid, Path)),
    request_body = AddMemberBody, security(("bearer" = [])),
    responses((status = 201, body = MemberAnswer), NotFound, Conflict))]
async fn add_member(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(course_id): Path<Uuid>,
    Json(body): Json<AddMemberBody>,
) -> Result<(StatusCode, axum::Json<MemberAnswer>), AppError> {
    let user_id = crate::domain::parse_id(&body.user_id, "userId")?;
    let course = find_course(&state.store, course_id).await?;
    if !manages(&course, &me) {
        return Err(AppError::Forbidden("only the course's professor or an ADMIN may enrol"));
    }
    let member = state.store.add_member(course_id, user_id).await?;
    Ok((StatusCode::CREATED, axum::Json(MemberAnswer { member })))
}

/// The course's members (members, ADMIN).
#[utoipa::path(get, path = "/api/courses/{course_id}/members", tag = "courses", params(("course_id" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200, body = Members), NotFound))]
async fn list_members(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(course_id): Path<Uuid>,
) -> Result<axum::Json<Members>, AppError> {
    require_course_reader(&state.store, course_id, &me).await?;
    let members = state.store.members(course_id).await?;
    Ok(axum::Json(Members { members }))
}
