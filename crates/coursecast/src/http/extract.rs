//! Our own JSON, path and query extractors, so malformed input gets the contract's
//! error body (`VALIDATION_FAILED`, or `PAYLOAD_TOO_LARGE` past the body limit)
//! instead of axum's plain-text rejections.

use axum::{
    extract::{
        FromRequest, FromRequestParts,
        rejection::{JsonRejection, PathRejection, QueryRejection},
    },
    http::StatusCode,
};

use crate::error::{AppError, without_input};

#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct Json<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(AppError))]
pub struct Path<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct Query<T>(pub T);

impl From<QueryRejection> for AppError {
    fn from(rejection: QueryRejection) -> Self {
        AppError::validation(without_input(&rejection.body_text()))
    }
}

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            crate::telemetry::metrics::payload_too_large("http");
            return AppError::PayloadTooLarge;
        }
        AppError::validation(without_input(&rejection.body_text()))
    }
}

/// A path segment that does not parse: named with the type it must have.
impl From<PathRejection> for AppError {
    fn from(rejection: PathRejection) -> Self {
        use axum::extract::path::ErrorKind;
        let PathRejection::FailedToDeserializePathParams(failed) = &rejection else {
            return AppError::validation("the path is malformed");
        };
        match failed.kind() {
            ErrorKind::ParseErrorAtKey { key, expected_type, .. } => {
                AppError::validation(format!("`{key}` in the path must be {}", described(expected_type)))
            }
            ErrorKind::ParseErrorAtIndex { expected_type, .. } | ErrorKind::ParseError { expected_type, .. } => {
                AppError::validation(format!("a path segment must be {}", described(expected_type)))
            }
            // Types with their own parser (UUIDs) say what they expected in prose that
            // quotes the input; keep only whether it was a UUID.
            ErrorKind::DeserializeError { key, message, .. } => {
                let rule =
                    if message.to_ascii_lowercase().contains("uuid") { "must be a UUID" } else { "is malformed" };
                AppError::validation(format!("`{key}` in the path {rule}"))
            }
            ErrorKind::InvalidUtf8InPathParam { key } => {
                AppError::validation(format!("`{key}` in the path is not valid UTF-8"))
            }
            _ => AppError::validation("a path segment does not have the expected form"),
        }
    }
}

/// A Rust type name as a rule a client can read.
fn described(type_name: &str) -> &'static str {
    match type_name.rsplit("::").next().unwrap_or(type_name) {
        "Uuid" => "a UUID",
        "i64" | "i32" | "u64" | "u32" | "u16" | "u8" | "usize" => "an integer",
        _ => "of the documented form",
    }
}
