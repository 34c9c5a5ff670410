//! One error type for every refusal, mapped to the PROTOCOL.md section 2 codes.
//!
//! Handlers return `Result<T, AppError>`; socket acks use the same codes through
//! [`AppError::body`], so both doors refuse in one vocabulary.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use uuid::Uuid;

pub type Result<T, E = AppError> = std::result::Result<T, E>;

/// The contract's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    ValidationFailed,
    InvalidCredentials,
    TokenMissing,
    TokenInvalid,
    TokenExpired,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    Internal,
    ServerFull,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ValidationFailed => "VALIDATION_FAILED",
            Self::InvalidCredentials => "INVALID_CREDENTIALS",
            Self::TokenMissing => "TOKEN_MISSING",
            Self::TokenInvalid => "TOKEN_INVALID",
            Self::TokenExpired => "TOKEN_EXPIRED",
            Self::Forbidden => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::Conflict => "CONFLICT",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::RateLimited => "RATE_LIMITED",
            Self::Unavailable => "UNAVAILABLE",
            Self::Internal => "INTERNAL",
            Self::ServerFull => "SERVER_FULL",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::ValidationFailed => StatusCode::BAD_REQUEST,
            Self::InvalidCredentials | Self::TokenMissing | Self::TokenInvalid | Self::TokenExpired => {
                StatusCode::UNAUTHORIZED
            }
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable | Self::ServerFull => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a token was refused. Each variant is one contract code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token was given")]
    Missing,
    #[error("the token is invalid: {0}")]
    Invalid(&'static str),
    #[error("the token has expired")]
    Expired,
}

impl AuthError {
    pub fn code(self) -> ErrorCode {
        match self {
            Self::Missing => ErrorCode::TokenMissing,
            Self::Invalid(_) => ErrorCode::TokenInvalid,
            Self::Expired => ErrorCode::TokenExpired,
        }
    }

    pub fn message(self) -> String {
        self.to_string()
    }
}

/// Why a request or socket event was refused.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Validation(String),
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("{}", .0.message())]
    Auth(#[from] AuthError),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("this path does not take that method")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(&'static str),
    #[error("the payload exceeds the size limit")]
    PayloadTooLarge,
    #[error("too many requests; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("{0}")]
    Unavailable(&'static str),
    /// A failure of ours: the cause is logged with an id, never shown to the client.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl AppError {
    pub fn validation(message: impl Into<String>) -> Self {
        Self::Validation(message.into())
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(err.into())
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Validation(_) => ErrorCode::ValidationFailed,
            Self::InvalidCredentials => ErrorCode::InvalidCredentials,
            Self::Auth(e) => e.code(),
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The `{code, message[, errorId]}` object used in HTTP bodies and socket acks.
    /// Internal errors are logged here, once, with the id the client receives.
    pub fn body(&self) -> ErrorBody {
        let error_id = match self {
            Self::Internal(cause) => {
                let id = Uuid::new_v4();
                tracing::error!(error_id = %id, error = ?cause, "internal error");
                Some(id)
            }
            _ => None,
        };
        ErrorBody { code: self.code(), message: self.to_string(), error_id }
    }
}

/// Storage that cannot be reached (refused, reset, silent past the deadline, out of
/// connections, shutting down) is an outage, answered `UNAVAILABLE` so clients retry;
/// anything else storage says is a failure of ours, answered `INTERNAL`.
impl From<sqlx::Error> for AppError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolClosed => Self::Unavailable("the server is shutting down"),
            err if is_database_outage(&err) => Self::Unavailable("the database is unavailable; retry shortly"),
            err => Self::Internal(err.into()),
        }
    }
}

/// Whether `err` says the database could not be reached, rather than that a query
/// was wrong: connection-level failures, our own deadline, and PostgreSQL's
/// connection-exception (08), server-shutdown (57P01-57P03) and too-many-connections
/// (53300) codes.
pub fn is_database_outage(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

/// A refusal message made from a parser's error text (serde's, axum's), without
/// the client's input in it: serde quotes what it was given ("invalid type: string
/// \"'; DROP ...\", expected a UUID"), and a refusal names the field and the rule,
/// never the raw value, which would also carry it into logs and pages.
pub fn without_input(message: &str) -> String {
    const QUOTING: [(&str, &str); 4] = [
        ("invalid type: ", "invalid type"),
        ("invalid value: ", "invalid value"),
        ("unknown field ", "unknown field"),
        ("unknown variant ", "unknown variant"),
    ];
    for (lead, kept) in QUOTING {
        if let Some(start) = message.find(lead) {
            let rest = &message[start..];
            let rule = rest.find(", expected").map_or("", |i| &rest[i..]);
            // The path before an unknown field ends in the client's own key: drop it.
            let context = if lead == "unknown field " { "" } else { &message[..start] };
            return format!("{context}{kept}{rule}");
        }
    }
    message.to_owned()
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error_id: Option<Uuid>,
}

/// Every refusal over HTTP: `{"error": {code, message, errorId?}}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = self.body();
        crate::telemetry::metrics::http_refused(body.code.as_str());
        let mut response = (body.code.status(), Json(ErrorEnvelope { error: body })).into_response();
        if let Self::RateLimited { retry_after_secs } = self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs.max(1)));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_messages_keep_the_field_and_the_rule_but_not_the_input() {
        let cases = [
            (
                "content: invalid type: string \"'; DROP TABLE users;--\", expected u32 at line 1 column 9",
                "content: invalid type, expected u32 at line 1 column 9",
            ),
            ("unknown field `evil<script>`, expected one of `a`, `b`", "unknown field, expected one of `a`, `b`"),
            ("body: DROP TABLE: unknown field `DROP TABLE`, expected `email`", "unknown field, expected `email`"),
            (
                "priority: unknown variant `X`, expected one of `LOW`, `HIGH`",
                "priority: unknown variant, expected one of `LOW`, `HIGH`",
            ),
            ("missing field `courseId`", "missing field `courseId`"),
        ];
        for (given, kept) in cases {
            assert_eq!(without_input(given), kept);
        }
    }

    proptest::proptest! {
        /// Whatever a client sends, the refusal built from serde's words about it
        /// does not carry it back.
        #[test]
        fn serde_refusals_never_carry_the_input(input in "[a-zA-Z0-9<>';-]{6,40}", field in "[a-z]{1,12}") {
            for said in [
                format!("{field}: invalid type: string \"{input}\", expected a UUID"),
                format!("{field}: invalid value: integer `{input}`, expected u8"),
                format!("{input}: unknown field `{input}`, expected one of `a`"),
                format!("{field}: unknown variant `{input}`, expected one of `LOW`"),
            ] {
                let kept = without_input(&said);
                proptest::prop_assert!(!kept.contains(&input), "{said} -> {kept}");
            }
        }
    }
}
