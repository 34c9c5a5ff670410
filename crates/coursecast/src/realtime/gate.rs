//! The HTTP gate in front of `/socket.io/`: refuses cross-site handshakes (an Origin
//! neither in the allow-list nor this server's own, on both transports: cross-site
//! WebSocket hijacking), applies the
//! per-IP handshake rate limit, and tags each new Engine.IO session with a client id
//! so namespaces of one client count as one connection.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{config::Settings, error::AppError, limits::IpRateLimiter};

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

pub async fn gate(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with("/socket.io") {
        return next.run(request).await;
    }
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
        let ip = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip());
        let rate_limited = ip.is_some_and(|ip| gate.limiter.check(ip).is_err());
        let client = ClientId(gate.next_client.fetch_add(1, Ordering::Relaxed));
        request.extensions_mut().insert(Handshake { client, rate_limited });
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::is_same_origin;

    #[test]
    fn same_origin_means_the_same_host_and_port() {
        assert!(is_same_origin("http://127.0.0.1:3000", Some("127.0.0.1:3000")));
        assert!(is_same_origin("https://Chat.Example.org", Some("chat.example.org")));
        assert!(!is_same_origin("http://127.0.0.1:3001", Some("127.0.0.1:3000")));
        assert!(!is_same_origin("http://evil.example", None));
        assert!(!is_same_origin("null", Some("127.0.0.1:3000")));
    }
}
