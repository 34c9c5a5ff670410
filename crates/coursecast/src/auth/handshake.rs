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
        // Storage trouble: tell the client to back off (the contract's answer to a
        // handshake the server cannot take now). An outage is logged once by storage;
        // anything else is logged with its error id by `body`.
        Err(err) => {
            let _ = err.body();
            Err(ErrorCode::ServerFull)
        }
    }
}
