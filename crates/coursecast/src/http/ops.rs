//! Ops endpoints outside `/api`: liveness, readiness.

use axum::{Json, Router, extract::State, routing::get};
use serde_json::{Value, json};

use crate::{error::AppError, state::AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

/// The process is up and serving.
async fn healthz() -> Json<Value> {
    Json(json!({"ok": true}))
}

/// The database (and Redis, when configured) answers; 503 `UNAVAILABLE` otherwise.
async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check: database unreachable");
        AppError::Unavailable("the database is unreachable")
    })?;
    if let Some(cluster) = &state.realtime.cluster {
        cluster.ping().await.map_err(|e| {
            tracing::warn!(error = %e, "readiness check: Redis unreachable");
            AppError::Unavailable("Redis is unreachable")
        })?;
    }
    Ok(Json(json!({"ok": true, "database": state.store.kind(), "redis": state.realtime.cluster.is_some()})))
}
