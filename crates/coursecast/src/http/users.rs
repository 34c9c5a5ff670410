//! `/api/users`: accounts of any role, made and removed by an ADMIN.

use axum::{
    Router,
    extract::State,
    http::StatusCode,
    routing::{delete, post},
};
use serde::Deserialize;
use uuid::Uuid;

use super::answers::{DONE, Done, UserAnswer};
use super::caller::AuthUser;
use super::extract::{Json, Path};
use super::refusals::{Conflict, NotFound};
use crate::{
    domain::{DisplayName, Email, Password, Role},
    error::AppError,
    state::AppState,
    store::NewUser,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/users", post(create_user)).route("/api/users/{user_id}", delete(delete_user))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateUserBody {
    email: String,
    #[schema(min_length = 10, max_length = 128)]
    password: String,
    display_name: String,
    role: String,
}

fn require_admin(me: &crate::auth::Identity) -> Result<(), AppError> {
    if me.is_admin() { Ok(()) } else { Err(AppError::Forbidden("only an ADMIN may manage users")) }
}

/// An account of any role (ADMIN only).
#[utoipa::path(post, path = "/api/users", tag = "users", request_body = CreateUserBody, security(("bearer" = [])),
    responses((status = 201, body = UserAnswer), Conflict))]
async fn create_user(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Json(body): Json<CreateUserBody>,
) -> Result<(StatusCode, axum::Json<UserAnswer>), AppError> {
    require_admin(&me)?;
    let email = Email::parse(&body.email)?;
    let password = Password::parse(&body.password)?;
    let display_name = DisplayName::parse(&body.display_name)?;
    let role: Role = body.role.parse()?;
    let password_hash = state.passwords.hash(password.into_inner()).await?;
    let user = state.store.create_user(NewUser { email, password_hash, display_name, role }).await?;
    tracing::info!(user_id = %user.id, role = %user.role, by = %me.id, "user created");
    Ok((StatusCode::CREATED, axum::Json(UserAnswer { user })))
}

/// Removes an account and disconnects its sockets (ADMIN only).
#[utoipa::path(delete, path = "/api/users/{user_id}", tag = "users", params(("user_id" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200, body = Done), NotFound))]
async fn delete_user(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(user_id): Path<Uuid>,
) -> Result<axum::Json<Done>, AppError> {
    require_admin(&me)?;
    state.store.delete_user(user_id).await?;
    state.disconnect_user(user_id).await;
    tracing::info!(user_id = %user_id, by = %me.id, "user deleted");
    Ok(axum::Json(DONE))
}
