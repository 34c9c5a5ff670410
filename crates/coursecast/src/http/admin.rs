//! The admin dashboard: a page embedded in the binary (no build step) at `/admin`,
//! and the figures it polls every second from `/api/admin/stats` (ADMIN only).

use axum::{
    Json as AxumJson, Router,
    extract::State,
    http::header,
    response::{Html, IntoResponse},
    routing::get,
};

use super::answers::AdminStats;
use super::caller::AuthUser;
use crate::{error::AppError, state::AppState};

const PAGE: &str = include_str!("../../assets/admin/index.html");
const SCRIPT: &str = include_str!("../../assets/admin/dashboard.js");

pub fn page_router() -> Router<AppState> {
    Router::new().route("/admin", get(page)).route("/admin/dashboard.js", get(script))
}

pub fn api_router() -> Router<AppState> {
    Router::new().route("/api/admin/stats", get(stats))
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT)
}

/// The dashboard's figures (ADMIN only).
#[utoipa::path(get, path = "/api/admin/stats", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = AdminStats)))]
async fn stats(State(state): State<AppState>, AuthUser(me): AuthUser) -> Result<AxumJson<AdminStats>, AppError> {
    if !me.is_admin() {
        return Err(AppError::Forbidden("only an ADMIN may read the dashboard"));
    }
    Ok(AxumJson(AdminStats {
        connections: state.realtime.connections.stats(),
        events_delivered: state.stats.delivered_total(),
        latency: state.stats.latency(),
        long_poll_waiters: state.waiters.waiting(),
        uptime_seconds: state.started_at.elapsed().as_secs(),
        server_time: crate::streams::Timestamp::now(),
    }))
}
