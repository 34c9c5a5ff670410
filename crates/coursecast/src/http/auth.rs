//! `/api/auth`: register, login, logout, me (PROTOCOL.md section 2).

use axum::{
    Extension, Router,
    extract::{Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};

use super::answers::{DONE, Done, UserAnswer};
use super::caller::AuthUser;
use super::client_ip::ClientIp;
use super::extract::Json;
use super::refusals::{Conflict, InvalidCredentials, NotFound, RateLimited};
use crate::{
    domain::{DisplayName, Email, Password, Role},
    error::AppError,
    limits::IpRateLimiter,
    state::AppState,
    store::{NewUser, User},
    telemetry::metrics,
};

/// Registration is limited per address (`AUTH_RATE_*`); login by its failures
/// (`LoginFailures`); `/me` and logout by nothing but the token.
pub fn router(registrations: IpRateLimiter) -> Router<AppState> {
    Router::new()
        .route(
            "/api/auth/register",
            post(register).route_layer(middleware::from_fn_with_state(registrations, rate_limit)),
        )
        .route("/api/auth/login", post(login))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/me", get(me))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RegisterBody {
    email: String,
    #[schema(min_length = 10, max_length = 128)]
    password: String,
    display_name: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: String,
}

#[derive(Serialize, utoipa::ToSchema)]
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
#[utoipa::path(post, path = "/api/auth/register", tag = "auth", request_body = RegisterBody,
    responses((status = 201, body = UserWithToken), Conflict, RateLimited))]
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

/// Unknown email and wrong password get the same answer after the same work, and
/// cost the same: one failure of the address and one of the account (the email as
/// given, known or not, so the limit says nothing about which accounts exist).
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginBody,
    responses((status = 200, body = UserWithToken), InvalidCredentials, RateLimited))]
async fn login(
    State(state): State<AppState>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Json(body): Json<LoginBody>,
) -> Result<axum::Json<UserWithToken>, AppError> {
    let email = Email::parse(&body.email).ok();
    let account = email.as_ref().map(|e| e.as_str().to_owned());
    let failures = &state.login_failures;
    let allowed =
        failures.per_ip.check(&ip).and_then(|()| account.as_ref().map_or(Ok(()), |a| failures.per_account.check(a)));
    if let Err(refusal) = allowed {
        metrics::rate_limited("login");
        return Err(refusal);
    }
    let credentials = match &email {
        Some(email) => state.store.user_credentials(email).await?,
        None => None,
    };
    let (user, hash) = match credentials {
        Some(c) => (Some(c.user), Some(c.password_hash)),
        None => (None, None),
    };
    if !state.passwords.verify(body.password, hash).await? {
        failures.per_ip.charge(ip);
        if let Some(account) = account {
            failures.per_account.charge(account);
        }
        return Err(AppError::InvalidCredentials);
    }
    let user = user.ok_or(AppError::InvalidCredentials)?;
    let token = token_for(&state, &user).await?;
    Ok(axum::Json(UserWithToken { user, token }))
}

/// Revokes every token issued up to now (same-second tokens included) and drops the
/// user's live sockets and event streams.
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Done)))]
async fn logout(State(state): State<AppState>, AuthUser(me): AuthUser) -> Result<axum::Json<Done>, AppError> {
    let valid_from = chrono::Utc::now().timestamp() + 1;
    state.store.revoke_tokens(me.id, valid_from).await?;
    state.disconnect_user(me.id).await;
    tracing::info!(user_id = %me.id, "logged out");
    Ok(axum::Json(DONE))
}

async fn rate_limit(State(limiter): State<IpRateLimiter>, request: Request, next: Next) -> Response {
    if let Some(&ClientIp(ip)) = request.extensions().get::<ClientIp>()
        && let Err(refusal) = limiter.check(ip)
    {
        metrics::rate_limited("registration");
        return refusal.into_response();
    }
    next.run(request).await
}

#[utoipa::path(get, path = "/api/auth/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = UserAnswer), NotFound))]
async fn me(State(state): State<AppState>, AuthUser(me): AuthUser) -> Result<axum::Json<UserAnswer>, AppError> {
    let user = state.store.user(me.id).await?.ok_or(AppError::NotFound("no such user"))?;
    Ok(axum::Json(UserAnswer { user }))
}
