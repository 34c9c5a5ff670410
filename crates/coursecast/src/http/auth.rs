//! `/api/auth`: register, login, logout, me (PROTOCOL.md section 2).

use axum::{
    Router,
    extract::State,
    http::StatusCode,
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::caller::AuthUser;
use super::extract::Json;
use crate::{
    domain::{DisplayName, Email, Password, Role},
    error::AppError,
    state::AppState,
    store::{NewUser, User},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/register", post(register))
        .route("/api/auth/login", post(login))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/me", get(me))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RegisterBody {
    email: String,
    password: String,
    display_name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: String,
}

#[derive(Serialize)]
pub(super) struct UserWithToken {
    user: User,
    token: String,
}

/// Issues a token for `user`, never older than their last logout.
pub(super) async fn token_for(state: &AppState, user: &User) -> Result<String, AppError> {
    let valid_from = state.store.user_auth_state(user.id).await?.map_or(0, |s| s.tokens_valid_from);
    let (token, _) =
        state.auth.keys().issue(&user.id.to_string(), user.role.as_str(), valid_from).map_err(AppError::internal)?;
    Ok(token)
}

/// Self-service sign-up: always a STUDENT.
async fn register(
    State(state): State<AppState>,
    Json(body): Json<RegisterBody>,
) -> Result<(StatusCode, axum::Json<UserWithToken>), AppError> {
    let email = Email::parse(&body.email)?;
    let password = Password::parse(&body.password)?;
    let display_name = DisplayName::parse(&body.display_name)?;
    let password_hash = state.passwords.hash(password.into_inner()).await?;
    let user = state.store.create_user(NewUser { email, password_hash, display_name, role: Role::Student }).await?;
    let token = token_for(&state, &user).await?;
    tracing::info!(user_id = %user.id, "account registered");
    Ok((StatusCode::CREATED, axum::Json(UserWithToken { user, token })))
}

/// Unknown email and wrong password get the same answer after the same work.
async fn login(
    State(state): State<AppState>,
    Json(body): Json<LoginBody>,
) -> Result<axum::Json<UserWithToken>, AppError> {
    let credentials = match Email::parse(&body.email) {
        Ok(email) => state.store.user_credentials(&email).await?,
        Err(_) => None,
    };
    let (user, hash) = match credentials {
        Some(c) => (Some(c.user), Some(c.password_hash)),
        None => (None, None),
    };
    if !state.passwords.verify(body.password, hash).await? {
        return Err(AppError::InvalidCredentials);
    }
    let user = user.ok_or(AppError::InvalidCredentials)?;
    let token = token_for(&state, &user).await?;
    Ok(axum::Json(UserWithToken { user, token }))
}

/// Revokes every token issued up to now (same-second tokens included) and drops the
/// user's live sockets.
async fn logout(State(state): State<AppState>, AuthUser(me): AuthUser) -> Result<axum::Json<Value>, AppError> {
    let valid_from = chrono::Utc::now().timestamp() + 1;
    state.store.revoke_tokens(me.id, valid_from).await?;
    state.realtime.disconnect_user(me.id).await;
    tracing::info!(user_id = %me.id, "logged out");
    Ok(axum::Json(json!({"ok": true})))
}

async fn me(State(state): State<AppState>, AuthUser(me): AuthUser) -> Result<axum::Json<Value>, AppError> {
    let user = state.store.user(me.id).await?.ok_or(AppError::NotFound("no such user"))?;
    Ok(axum::Json(json!({"user": user})))
}
