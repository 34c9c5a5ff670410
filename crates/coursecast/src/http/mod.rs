//! The HTTP API: one router per feature, merged here, and the middleware stack that
//! every request passes through (outermost first):
//!
//! request id -> trace -> propagate request id -> catch panics -> security headers
//! -> CORS -> socket gate -> Socket.IO (takes `/socket.io/`) -> timeout -> body limit
//! -> routes (auth routes add a per-IP rate limit).

mod admin;
mod analyses;
mod auth;
mod courses;
mod extract;
mod notifications;
mod ops;
mod realtime;
mod users;

use std::{net::SocketAddr, time::Duration};

use axum::{
    Router,
    error_handling::HandleErrorLayer,
    extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State},
    http::{HeaderName, HeaderValue, Method, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    services::ServeDir,
    set_header::SetResponseHeaderLayer,
    trace::TraceLayer,
};

use crate::{config::Settings, error::AppError, limits::IpRateLimiter, state::AppState, telemetry::metrics};

/// Every route of the HTTP API with its middleware, ready for `with_state`.
pub fn router(state: &AppState) -> Router<AppState> {
    let settings = &state.settings;
    let auth_limiter = IpRateLimiter::new(settings.auth_rate_per_sec, settings.auth_rate_burst);
    auth_limiter.spawn_pruner();
    let auth_routes = auth::router().route_layer(middleware::from_fn_with_state(auth_limiter, rate_limit));

    let api = Router::new()
        .nest("/auth", auth_routes)
        .nest("/users", users::router())
        .nest("/courses", courses::router())
        .nest("/notifications", notifications::router())
        .nest("/analyses", analyses::router())
        .nest("/realtime", realtime::router(state))
        .nest("/admin", admin::api_router());

    let mut router = Router::new().nest("/api", api).merge(ops::router()).merge(admin::page_router());
    if settings.metrics_port.is_none() {
        router = router.merge(metrics_router());
    }
    if settings.demo_dir.is_dir() {
        router = router.nest_service("/demo", ServeDir::new(&settings.demo_dir));
    }
    router
        .route_layer(middleware::from_fn(track_http))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                    AppError::Unavailable("the request took too long")
                }))
                .timeout(settings.request_timeout())
                .layer(DefaultBodyLimit::max(settings.max_body_bytes)),
        )
}

/// Layers shared by the API and the Socket.IO endpoint; applied outermost.
pub fn outer_layers(router: Router, settings: &Settings) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    router
        .layer(cors(&settings.cors_origins))
        .layer(middleware::map_response(json_csp))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::overriding(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::overriding(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
            AppError::internal(anyhow::anyhow!("a request handler panicked")).into_response()
        }))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(middleware::from_fn(log_request))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o.trim()).ok()).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600))
}

/// JSON responses may not be rendered as documents.
async fn json_csp(mut response: Response) -> Response {
    let is_json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'"));
    }
    response
}

async fn rate_limit(State(limiter): State<IpRateLimiter>, request: Request, next: Next) -> Response {
    let ip = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip());
    if let Some(ip) = ip
        && let Err(refusal) = limiter.check(ip)
    {
        metrics::rate_limited("http_auth");
        return refusal.into_response();
    }
    next.run(request).await
}

/// `/metrics` in the Prometheus text format (on the main port, or on `METRICS_PORT`).
pub fn metrics_router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let handle = metrics::handle();
    Router::new().route("/metrics", axum::routing::get(move || std::future::ready(handle.render())))
}

/// Requests by method, matched route and status (never the raw path: ids would
/// make the label set unbounded).
async fn track_http(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().to_string();
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    metrics::http_request(method, route, response.status().as_u16(), started.elapsed());
    response
}

/// One log line per request: method, path, status, time. Socket.IO transport
/// requests (a long poll every few seconds per polling client) log at debug.
async fn log_request(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let response = next.run(request).await;
    let (status, elapsed_ms) = (response.status().as_u16(), started.elapsed().as_secs_f64() * 1000.0);
    if path.starts_with("/socket.io") {
        tracing::debug!(%method, path, status, elapsed_ms, "request");
    } else {
        tracing::info!(%method, path, status, elapsed_ms, "request");
    }
    response
}

async fn not_found() -> AppError {
    AppError::NotFound("no such route")
}
