//! Authentication: tokens (PROTOCOL.md section 1), passwords, and the one check that
//! turns a bearer token into a caller, shared by HTTP extractors and the socket handshake.

mod handshake;
mod jwt;
mod password;
mod secret;

use serde::Serialize;
use uuid::Uuid;

pub use handshake::authenticate_handshake;
pub use jwt::{Claims, JwtKeys};
pub use password::{PasswordHasher, hash_password};
pub use secret::resolve_jwt_secret;

pub use crate::error::AuthError;
use crate::{domain::Role, limits::FailureLimiter, store::Store};

/// The budgets of failed logins: per client address (credential stuffing from one
/// place) and per account (guessing one password from anywhere).
pub struct LoginFailures {
    pub per_ip: FailureLimiter<std::net::IpAddr>,
    pub per_account: FailureLimiter<String>,
}

impl LoginFailures {
    pub fn new(per_ip_per_minute: u32, per_account_per_minute: u32) -> Self {
        Self {
            per_ip: FailureLimiter::new(per_ip_per_minute),
            per_account: FailureLimiter::new(per_account_per_minute),
        }
    }
}

/// A user proven by a valid, unrevoked token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub id: Uuid,
    pub role: Role,
    /// The token's `exp`, seconds since the epoch.
    pub expires_at: i64,
}

impl Identity {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// Whoever presented a valid token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    User(Identity),
    /// A service token (`role: "SERVICE"`); `sub` names the service.
    Service(String),
}

/// Verifies tokens and checks them against the user's current state in storage.
#[derive(Clone)]
pub struct Authenticator {
    keys: JwtKeys,
    store: Store,
}

impl Authenticator {
    pub fn new(keys: JwtKeys, store: Store) -> Self {
        Self { keys, store }
    }

    pub fn keys(&self) -> &JwtKeys {
        &self.keys
    }

    /// The single verification path for HTTP and sockets.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, crate::error::AppError> {
        let claims = self.keys.verify(token)?;
        let role = match claims.role.as_str() {
            "SERVICE" => return Ok(Caller::Service(claims.sub)),
            other => other.parse::<Role>().map_err(|_| AuthError::Invalid("unknown role"))?,
        };
        let id = Uuid::parse_str(&claims.sub).map_err(|_| AuthError::Invalid("sub is not a user id"))?;
        let state = self.store.user_auth_state(id).await?.ok_or(AuthError::Invalid("no such user"))?;
        if claims.iat < state.tokens_valid_from {
            return Err(AuthError::Invalid("the token was revoked by a logout").into());
        }
        if state.role != role {
            return Err(AuthError::Invalid("the token's role is out of date").into());
        }
        Ok(Caller::User(Identity { id, role, expires_at: claims.exp }))
    }
}

/// Takes the token out of an `Authorization: Bearer` header value.
pub fn bearer_token(header: Option<&axum::http::HeaderValue>) -> Result<&str, AuthError> {
    let value = header.ok_or(AuthError::Missing)?;
    let value = value.to_str().map_err(|_| AuthError::Invalid("malformed Authorization header"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => Ok(token.trim()),
        _ => Err(AuthError::Invalid("Authorization must be `Bearer <token>`")),
    }
}
