//! Ops endpoints outside `/api`: liveness, readiness.

use std::time::Duration;

use axum::{Json, Router, extract::State, routing::get};

use super::answers::{DONE, Done, Readiness, RedisState, True};
use crate::{error::AppError, state::AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

/// The process is up and serving.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Done)))]
async fn healthz() -> Json<Done> {
    Json(DONE)
}

/// How long `/readyz` may take: a load balancer's probe must get an answer, not a
/// hang, whatever the database or Redis are doing.
const READY_WITHIN: Duration = Duration::from_millis(800);

/// The database answers (503 `UNAVAILABLE` otherwise); Redis's state is reported.
/// Not logged here: a probe every few seconds would log an outage once per probe;
/// storage logs each change of the database's state once.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses((status = 200, body = Readiness)))]
async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, AppError> {
    if !state.store.ready_within(READY_WITHIN).await {
        return Err(AppError::Unavailable("the database is unreachable"));
    }
    // Redis is only the bus between nodes: without it this node still stores and
    // serves its own clients, and every node would fail the check at once, so its
    // state is reported here without taking the node out of rotation.
    let redis = match &state.realtime.cluster {
        None => RedisState::Off,
        Some(cluster) if cluster.ping_within(READY_WITHIN / 2).await => RedisState::Up,
        Some(_) => RedisState::Down,
    };
    Ok(Json(Readiness { ok: True, database: state.store.kind(), redis }))
}
