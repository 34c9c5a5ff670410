//! Socket handshake authentication: the token comes from `auth.token` (browsers) or
//! an `Authorization: Bearer` header (other clients), never from the query string,
//! and is checked by the same `Authenticator` as HTTP.

use axum::http::{HeaderMap, header};
use serde_json::Value;

use super::{AuthError, Authenticator, Caller, Identity, bearer_token};
use crate::error::{AppError, ErrorCode};

/// The identity behind a handshake, or the `connect_error` code to refuse it with.
pub async fn authenticate_handshake(
    auth: &Authenticator,
    payload: Option<&Value>,
    headers: &HeaderMap,
) -> Result<Identity, ErrorCode> {
    let token = match payload.and_then(|p| p.get("token")) {
        Some(Value::String(token)) if !token.is_empty() => token.as_str(),
        Some(Value::Null) | None => bearer_token(headers.get(header::AUTHORIZATION)).map_err(AuthError::code)?,
        Some(_) => return Err(ErrorCode::TokenInvalid),
    };
    match auth.authenticate(token).await {
        Ok(Caller::User(identity)) => Ok(identity),
        Ok(Caller::Service(_)) => Err(ErrorCode::Forbidden),
        Err(AppError::Auth(err)) => Err(err.code()),
        Err(err) => {
            // Storage trouble: tell the client to back off, and log the cause.
            let body = err.body();
            tracing::error!(error_id = ?body.error_id, "handshake check failed");
            Err(ErrorCode::ServerFull)
        }
    }
}
