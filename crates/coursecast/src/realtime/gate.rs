//! The HTTP gate in front of `/socket.io/`: refuses cross-site handshakes (an Origin
//! neither in the allow-list nor this server's own, on both transports: cross-site
//! WebSocket hijacking), applies the
//! per-IP handshake rate limit, and tags each new Engine.IO session with a client id
//! so namespaces of one client count as one connection.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{
    Router,
    extract::{OriginalUri, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, Uri, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};

use socketioxide::service::SocketIoService;
use tower_http::request_id::RequestId;

use crate::{config::Settings, error::AppError, http::client_ip::ClientIp, limits::IpRateLimiter};

/// One Engine.IO session (a client), shared by its namespace sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId(pub u64);

/// What the gate learnt about a handshake request; socketioxide keeps the request
/// parts, so the namespace middleware reads this back from `req_parts().extensions`.
#[derive(Debug, Clone, Copy)]
pub struct Handshake {
    pub client: ClientId,
    pub rate_limited: bool,
}

#[derive(Clone)]
pub struct Gate {
    origins: Arc<HashSet<String>>,
    limiter: IpRateLimiter,
    next_client: Arc<AtomicU64>,
}

impl Gate {
    pub fn new(settings: &Settings) -> Self {
        let per_sec = settings.socket_connects_per_sec_per_ip;
        let limiter = IpRateLimiter::new(per_sec, per_sec.saturating_mul(2));
        limiter.spawn_pruner();
        Self {
            origins: Arc::new(settings.cors_origins.iter().map(|o| o.trim().to_owned()).collect()),
            limiter,
            next_client: Arc::new(AtomicU64::new(1)),
        }
    }
}

/// A page served by this server (the demo) talks to its own origin: not cross-site.
fn is_same_origin(origin: &str, host: Option<&str>) -> bool {
    let authority = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
    matches!((authority, host), (Some(authority), Some(host)) if authority.eq_ignore_ascii_case(host))
}

/// `/socket.io/` behind the gate; no other route passes through it.
pub fn router(gate: Gate, service: SocketIoService<Router>) -> Router {
    Router::new()
        .route_service("/socket.io/", service.clone())
        .route_service("/socket.io", service)
        .route_layer(middleware::from_fn_with_state(gate, admit))
}

async fn admit(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok());
        let allowed = origin.to_str().is_ok_and(|o| gate.origins.contains(o) || is_same_origin(o, host));
        if !allowed {
            return AppError::Forbidden("this origin may not open sockets").into_response();
        }
    }
    // A request without `sid` starts a new Engine.IO session.
    let is_handshake = !request.uri().query().unwrap_or_default().split('&').any(|pair| pair.starts_with("sid="));
    if is_handshake {
        detach_from_read_buffer(&mut request);
        let ip = request.extensions().get::<ClientIp>();
        let rate_limited = ip.is_some_and(|&ClientIp(ip)| gate.limiter.check(ip).is_err());
        let client = ClientId(gate.next_client.fetch_add(1, Ordering::Relaxed));
        request.extensions_mut().insert(Handshake { client, rate_limited });
    }
    next.run(request).await
}

/// socketioxide keeps a handshake's request parts for as long as its sockets live.
/// The header values and URI hyper parsed are views into the connection's read
/// buffer (8 KiB or more), which they would keep allocated long after the WebSocket
/// upgrade; owned copies let it go.
fn detach_from_read_buffer(request: &mut Request) {
    let copy_value = |value: &HeaderValue| HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
    let mut headers = HeaderMap::with_capacity(request.headers().len());
    for (name, value) in request.headers() {
        let name = HeaderName::from_bytes(name.as_str().as_bytes()).unwrap_or_else(|_| name.clone());
        headers.append(name, copy_value(value));
    }
    *request.headers_mut() = headers;
    let copy_uri = |uri: &Uri| Uri::try_from(uri.to_string()).unwrap_or_else(|_| uri.clone());
    *request.uri_mut() = copy_uri(request.uri());
    if let Some(OriginalUri(uri)) = request.extensions_mut().get_mut::<OriginalUri>() {
        *uri = copy_uri(uri);
    }
    if let Some(id) = request.extensions().get::<RequestId>() {
        let id = RequestId::new(copy_value(id.header_value()));
        request.extensions_mut().insert(id);
    }
}

#[cfg(test)]
mod tests {
    use axum::{
        body::Body,
        extract::{OriginalUri, Request},
        http::{HeaderValue, Uri},
    };

    use super::{detach_from_read_buffer, is_same_origin};

    /// Whether `bytes` lies inside `buffer`'s allocation.
    fn inside(buffer: &[u8], bytes: &[u8]) -> bool {
        buffer.as_ptr_range().contains(&bytes.as_ptr())
    }

    #[test]
    fn handshake_parts_stop_pointing_into_the_read_buffer() {
        // As hyper does: the request line and headers are views into one buffer.
        let buffer = axum::body::Bytes::from_static(b"/socket.io/?EIO=4&transport=websocketx-customvalue");
        let uri = Uri::from_maybe_shared(buffer.slice(0..37)).expect("uri");
        let value = HeaderValue::from_maybe_shared(buffer.slice(45..50)).expect("value");
        let mut request =
            Request::builder().uri(uri.clone()).header("x-custom", value).body(Body::empty()).expect("request");
        request.extensions_mut().insert(OriginalUri(uri));
        assert!(inside(&buffer, request.headers()["x-custom"].as_bytes()));

        detach_from_read_buffer(&mut request);

        assert_eq!(request.uri().to_string(), "/socket.io/?EIO=4&transport=websocket");
        assert_eq!(request.headers()["x-custom"], "value");
        assert!(!inside(&buffer, request.headers()["x-custom"].as_bytes()));
        assert!(!inside(&buffer, request.uri().path().as_bytes()));
        let OriginalUri(original) = request.extensions().get::<OriginalUri>().expect("original uri");
        assert!(!inside(&buffer, original.path().as_bytes()));
    }

    #[test]
    fn same_origin_means_the_same_host_and_port() {
        assert!(is_same_origin("http://127.0.0.1:3000", Some("127.0.0.1:3000")));
        assert!(is_same_origin("https://Chat.Example.org", Some("chat.example.org")));
        assert!(!is_same_origin("http://127.0.0.1:3001", Some("127.0.0.1:3000")));
        assert!(!is_same_origin("http://evil.example", None));
        assert!(!is_same_origin("null", Some("127.0.0.1:3000")));
    }
}
