//! Ops endpoints outside `/api`: liveness, readiness.

use std::time::Duration;

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

/// How long `/readyz` may take: a load balancer's probe must get an answer, not a
/// hang, whatever the database or Redis are doing.
const READY_WITHIN: Duration = Duration::from_millis(800);

/// The database (and Redis, when configured) answers; 503 `UNAVAILABLE` otherwise.
/// Not logged here: a probe every few seconds would log an outage once per probe;
/// storage logs each change of the database's state once.
async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    if !state.store.ready_within(READY_WITHIN).await {
        return Err(AppError::Unavailable("the database is unreachable"));
    }
    if let Some(cluster) = &state.realtime.cluster {
        match tokio::time::timeout(READY_WITHIN, cluster.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "readiness check: Redis unreachable");
                return Err(AppError::Unavailable("Redis is unreachable"));
            }
            Err(_) => return Err(AppError::Unavailable("Redis is unreachable")),
        }
    }
    Ok(Json(json!({"ok": true, "database": state.store.kind(), "redis": state.realtime.cluster.is_some()})))
}
