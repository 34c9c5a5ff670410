//! HTTP authentication as extractors, so handlers never read headers themselves.
//!
//! `AuthUser` admits users only, `ServiceCaller` service tokens only, `AnyCaller` both.
//! A service token where a user is required is `FORBIDDEN` (PROTOCOL.md section 1).

use axum::{extract::FromRequestParts, http::request::Parts};

use crate::{
    auth::{Caller, Identity, bearer_token},
    error::AppError,
    state::AppState,
};

/// A request made by a user (never a service).
#[derive(Debug, Clone, Copy)]
pub struct AuthUser(pub Identity);

/// A request made with a service token; holds the service's name.
#[derive(Debug, Clone)]
pub struct ServiceCaller(pub String);

/// A request made by a user or a service.
#[derive(Debug, Clone)]
pub struct AnyCaller(pub Caller);

impl FromRequestParts<AppState> for AnyCaller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts.headers.get(axum::http::header::AUTHORIZATION))?;
        state.auth.authenticate(token).await.map(AnyCaller)
    }
}

impl AuthUser {
    /// The user a token proves, wherever it came from (the SSE endpoint also takes
    /// it from the query).
    pub async fn from_token(state: &AppState, token: &str) -> Result<Self, AppError> {
        user_only(state.auth.authenticate(token).await?)
    }
}

fn user_only(caller: Caller) -> Result<AuthUser, AppError> {
    match caller {
        Caller::User(user) => Ok(AuthUser(user)),
        Caller::Service(_) => Err(AppError::Forbidden("service tokens are not accepted here")),
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        user_only(AnyCaller::from_request_parts(parts, state).await?.0)
    }
}

impl FromRequestParts<AppState> for ServiceCaller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match AnyCaller::from_request_parts(parts, state).await?.0 {
            Caller::Service(name) => Ok(ServiceCaller(name)),
            Caller::User(_) => Err(AppError::Forbidden("only services may call this endpoint")),
        }
    }
}
