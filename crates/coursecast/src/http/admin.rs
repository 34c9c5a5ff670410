//! The admin dashboard: a page embedded in the binary (no build step) at `/admin`,
//! and the figures it polls every second from `/api/admin/stats` (ADMIN only).
//! Counters come from the Prometheus recorder (`telemetry::figures`), so the page
//! shows exactly what `/metrics` exports; the page turns totals into rates.

use axum::{
    Json as AxumJson, Router,
    extract::State,
    http::header,
    response::{Html, IntoResponse},
    routing::get,
};

use super::answers::{AdminStats, DatabaseFigures, Dependencies, RedisFigures, RoundTrips, SlowConsumers};
use super::caller::AuthUser;
use crate::{error::AppError, state::AppState, telemetry::figures::Snapshot};

/// Rooms listed in each of "biggest by members" and "busiest by traffic".
const TOP_ROOMS: usize = 8;

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
    let metrics = Snapshot::now();
    // One table of refusals, whatever the door: HTTP, socket events, handshakes.
    let mut refusals = metrics.by("coursecast_http_refusals_total", "code");
    for name in ["coursecast_socket_event_refusals_total", "coursecast_handshake_refusals_total"] {
        for (code, count) in metrics.by(name, "code") {
            *refusals.entry(code).or_insert(0) += count;
        }
    }
    let database = state.store.health();
    let redis = state.realtime.cluster.as_ref().map(|cluster| cluster.is_up());
    let round_trips = |histogram: &str| RoundTrips {
        count: metrics.count(&format!("{histogram}_count"), &[]),
        seconds_sum: metrics.sum(&format!("{histogram}_sum"), &[]),
    };
    Ok(AxumJson(AdminStats {
        deliveries: metrics.by("coursecast_deliveries_total", "transport"),
        refusals,
        slow_consumers: SlowConsumers {
            broadcast_misses: metrics.count("coursecast_broadcast_failures_total", &[]),
            answers_deferred: metrics.count("coursecast_answers_deferred_total", &[]),
            answers_lost: metrics.count("coursecast_answers_lost_total", &[]),
        },
        dependencies: Dependencies {
            database: DatabaseFigures {
                up: database.up,
                outages: database.outages,
                queries: round_trips("coursecast_db_query_seconds"),
            },
            redis: RedisFigures {
                configured: redis.is_some(),
                up: redis,
                round_trips: round_trips("coursecast_redis_seconds"),
                relay_dropped: metrics.count("coursecast_cluster_relay_dropped_total", &[]),
            },
        },
        rooms: state.realtime.presence.top_rooms(TOP_ROOMS),
        connections: state.realtime.connections.stats(),
        events_delivered: metrics.count("coursecast_delivery_latency_seconds_count", &[]),
        latency: state.stats.latency(),
        long_poll_waiters: state.waiters.waiting(),
        uptime_seconds: state.started_at.elapsed().as_secs(),
        server_time: crate::streams::Timestamp::now(),
    }))
}
