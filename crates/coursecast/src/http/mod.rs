//! The HTTP API: one router per feature, merged here, and the middleware stack that
//! every request passes through (outermost first):
//!
//! client address (`client_ip`) -> request id -> trace -> access log and security
//! headers -> propagate request id -> catch panics -> CORS -> then either
//! `/socket.io/` (socket gate -> Socket.IO) or timeout -> body limit -> route
//! metrics -> routes (auth routes add a per-IP rate limit).

mod admin;
mod analyses;
mod answers;
mod around;
mod auth;
mod caller;
pub mod client_ip;
mod courses;
mod extract;
pub mod listener;
mod notifications;
pub mod openapi;
mod ops;
mod realtime;
mod refusals;
mod sse;
mod users;

use std::{
    convert::Infallible,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    error_handling::HandleErrorLayer,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use tower::{Service, ServiceBuilder};
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    services::ServeDir,
    trace::TraceLayer,
};

use self::around::Around;
use crate::{config::Settings, error::AppError, limits::IpRateLimiter, state::AppState, telemetry::metrics};

/// Every route of the HTTP API with its middleware, ready for `with_state`.
pub fn router(state: &AppState) -> Router<AppState> {
    let settings = &state.settings;
    let registrations = IpRateLimiter::new(settings.auth_rate_per_sec, settings.auth_rate_burst);
    registrations.spawn_pruner();

    // Every router names its full paths: `nest` would rewrite each request's URI
    // once per level (a measurable share of a long poll's cost).
    // Each API route is also in the OpenAPI document: a new one gets
    // `#[utoipa::path(...)]` on its handler and one line in `openapi::ApiDoc`'s
    // `paths(...)`; `tests/api/openapi.rs` (its `ROUTES` list names every route)
    // fails until the router, the document and that list agree.
    let mut router = Router::new()
        .merge(auth::router(registrations))
        .merge(users::router())
        .merge(courses::router())
        .merge(notifications::router())
        .merge(analyses::router())
        .merge(realtime::router(state))
        .merge(admin::api_router())
        .merge(ops::router())
        .merge(openapi::router())
        .merge(admin::page_router());
    if settings.metrics_port.is_none() {
        router = router.merge(metrics_router());
    }
    if settings.demo_dir.is_dir() {
        // A missing file gets the contract's 404 body, not ServeDir's empty one.
        let files = ServeDir::new(&settings.demo_dir).not_found_service(tower::service_fn(|_: Request| async {
            Ok::<_, Infallible>(AppError::NotFound("no such file").into_response())
        }));
        router = router.nest_service("/demo", files);
    }
    router
        .route_layer(Around { before: http_started, after: track_http })
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                    AppError::Unavailable("the request took too long")
                }))
                .timeout(settings.request_timeout())
                .layer(DefaultBodyLimit::max(settings.max_body_bytes)),
        )
}

/// Layers shared by the API and the Socket.IO endpoint, wrapped once around the
/// whole router. `Router::layer` would wrap every route on its own, and each
/// request would then clone and box that route's copy of the stack: an eighth of a
/// long poll's instructions, a seventh of the server's CPU time in the polling
/// benchmark.
pub fn outer_layers(
    router: Router,
    settings: &Settings,
) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send> + Clone + Send + 'static {
    let request_id = HeaderName::from_static("x-request-id");
    let trusted_proxies = settings.trusted_proxies.clone();
    ServiceBuilder::new()
        .map_response(IntoResponse::into_response)
        .map_request(move |request| trusted_proxies.tag(request))
        .map_request(drop_unacceptable_request_id)
        .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(Around { before: access_started, after: access_done })
        .layer(PropagateRequestIdLayer::new(request_id))
        .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
            AppError::internal(anyhow::anyhow!("a request handler panicked")).into_response()
        }))
        .layer(cors(&settings.cors_origins))
        .service(router)
}

/// Longest `X-Request-Id` kept from a client.
const REQUEST_ID_MAX: usize = 128;

/// A client's `X-Request-Id` is kept only if it is 1-128 characters of
/// `[A-Za-z0-9._:-]`; any other is dropped, so a fresh one is generated: a 60 KB or
/// control-character id is never echoed back or written to a log.
fn drop_unacceptable_request_id(mut request: Request) -> Request {
    let acceptable = |id: &[u8]| {
        (1..=REQUEST_ID_MAX).contains(&id.len())
            && id.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    };
    if request.headers().get_all("x-request-id").iter().any(|id| !acceptable(id.as_bytes())) {
        request.headers_mut().remove("x-request-id");
    }
    request
}

fn cors(origins: &[String]) -> CorsLayer {
    let origins: Arc<[HeaderValue]> = origins.iter().filter_map(|o| HeaderValue::from_str(o.trim()).ok()).collect();
    // A predicate over a shared list rather than `AllowOrigin::list`: the layer is
    // cloned for every request, and a list would be copied each time.
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| origins.contains(origin)))
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        // `Last-Event-ID`: a script's own SSE client resumes with it.
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, HeaderName::from_static("last-event-id")])
        .max_age(Duration::from_secs(600))
}

/// `/metrics` in the Prometheus text format (on the main port, or on `METRICS_PORT`).
pub fn metrics_router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let handle = metrics::handle();
    Router::new().route("/metrics", axum::routing::get(move || std::future::ready(handle.render())))
}

/// Requests logged at debug only: Socket.IO transport requests (a long poll every
/// few seconds per polling client) and probes that anyone may call at any rate.
const QUIET_PATHS: [&str; 5] = ["/socket.io", "/healthz", "/readyz", "/metrics", "/api/realtime/ping"];

/// Paths longer than this are cut in logs (a URI may be 64 KiB).
const LOGGED_PATH_MAX: usize = 256;

fn logged_path(path: &str) -> &str {
    match path.char_indices().nth(LOGGED_PATH_MAX) {
        Some((end, _)) => &path[..end],
        None => path,
    }
}

struct Started {
    method: Method,
    path: String,
    at: Instant,
}

fn access_started(request: &Request) -> Started {
    Started { method: request.method().clone(), path: request.uri().path().to_owned(), at: Instant::now() }
}

/// One log line per request (method, path, status, time; Socket.IO transport
/// requests, a long poll every few seconds per polling client, at debug) and the
/// security headers of every response. JSON may not be rendered as a document.
fn access_done(started: Started, status: StatusCode, headers: &mut HeaderMap) {
    let Started { method, path, at } = started;
    let (status, elapsed_ms) = (status.as_u16(), at.elapsed().as_secs_f64() * 1000.0);
    let path = logged_path(&path);
    if QUIET_PATHS.iter().any(|quiet| path.starts_with(quiet)) {
        tracing::debug!(%method, path, status, elapsed_ms, "request");
    } else if (400..500).contains(&status) {
        // Refusals are what a client without a token can cause at will: sampled.
        tracing::info!(sampled = true, %method, path, status, elapsed_ms, "request");
    } else {
        tracing::info!(%method, path, status, elapsed_ms, "request");
    }
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json")) {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'"));
    }
}

/// The matched route (never the raw path: ids would make the label set unbounded).
fn http_started(request: &Request) -> (Method, String, Instant) {
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    (request.method().clone(), route, Instant::now())
}

/// Requests by method, matched route and status.
fn track_http((method, route, at): (Method, String, Instant), status: StatusCode, _: &mut HeaderMap) {
    metrics::http_request(method.to_string(), route, status.as_u16(), at.elapsed());
}

async fn not_found() -> AppError {
    AppError::NotFound("no such route")
}

async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}
