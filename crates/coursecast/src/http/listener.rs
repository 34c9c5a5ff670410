//! Accepting and serving TCP connections, bounded (DESIGN.md principle 4): at most
//! `MAX_CONNECTIONS_PER_IP` open connections per peer address (counted as a connection
//! is accepted, before any request is read, so behind a reverse proxy these are the
//! proxy's connections; every other per-address limit counts the client that
//! `client_ip` derives from the peer each request records); a connection that
//! sends nothing within `HTTP_FIRST_BYTE_TIMEOUT` is closed; a request head that is
//! not complete within `HTTP_HEADER_TIMEOUT` of the connection's start (or of the end
//! of the previous response) closes the connection. Slowloris-style clients (a header
//! byte now and then) hold a slot for the header deadline at most.
//!
//! `axum::serve` sets none of these, so this is our own loop over hyper, with the
//! same service and the same graceful shutdown: once told to stop, it stops
//! accepting, runs `on_stop`, asks every connection to finish its request and close,
//! and resolves when all have.

use std::{
    collections::HashMap,
    convert::Infallible,
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Body, extract::ConnectInfo, http::Request, response::Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
};
use tower::{Service, ServiceExt};

use crate::{config::Settings, locks::lock, telemetry::metrics};

/// The bounds of every connection, from settings.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub per_ip: usize,
    pub first_byte: Duration,
    pub header: Duration,
}

impl ConnectionLimits {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            per_ip: settings.max_connections_per_ip,
            first_byte: Duration::from_secs(settings.http_first_byte_timeout_secs),
            header: Duration::from_secs(settings.http_header_timeout_secs),
        }
    }
}

/// Open connections per peer address; entries go when their count reaches zero.
#[derive(Default)]
struct OpenPerIp(Mutex<HashMap<IpAddr, usize>>);

/// One open connection counted against its address until dropped.
struct Slot {
    ip: IpAddr,
    open: Arc<OpenPerIp>,
}

impl OpenPerIp {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut open = lock(&self.0);
        let count = open.entry(ip).or_insert(0);
        if max > 0 && *count >= max {
            return None;
        }
        *count += 1;
        Some(Slot { ip, open: self.clone() })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = lock(&self.open.0);
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Serves `service` on `listener` until `stop` resolves (see the module's header).
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()>,
    on_stop: impl Future<Output = ()>,
) where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let open = Arc::new(OpenPerIp::default());
    // Tells every connection to finish; each holds a `done` sender, so the channel
    // closes once the last connection has ended.
    let (finish, finishing) = watch::channel(false);
    let (done, mut all_done) = mpsc::channel::<()>(1);
    let mut stop = std::pin::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, mostly: back off instead of spinning.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Some(slot) = open.take(peer.ip(), limits.per_ip) else {
            metrics::connection_closed("per_ip_limit");
            continue;
        };
        let (service, finishing, done) = (service.clone(), finishing.clone(), done.clone());
        tokio::spawn(async move {
            handle(tcp, peer, service, limits, finishing).await;
            drop((slot, done));
        });
    }
    drop(listener);
    on_stop.await;
    finish.send_replace(true);
    drop(done);
    let _ = all_done.recv().await;
}

/// Serves one connection until it closes, unless it says nothing in time.
async fn handle<S>(
    tcp: TcpStream,
    peer: SocketAddr,
    service: S,
    limits: ConnectionLimits,
    mut finishing: watch::Receiver<bool>,
) where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    // Without TCP_NODELAY a small write that follows another unacknowledged one (a
    // send's ack right after its broadcast copy, on the sender's socket) waits for
    // the client's delayed ACK: fan-out acks took 40 ms longer than deliveries.
    if let Err(err) = tcp.set_nodelay(true) {
        tracing::debug!(error = %err, "TCP_NODELAY not set");
    }
    // `peek` waits for a real byte (`readable` may report readiness spuriously).
    if !matches!(tokio::time::timeout(limits.first_byte, tcp.peek(&mut [0u8; 1])).await, Ok(Ok(1..))) {
        metrics::connection_closed("first_byte_timeout");
        return;
    }
    let service = service.map_request(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request.map(Body::new)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header)
        .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let outcome = tokio::select! {
        outcome = connection.as_mut() => outcome,
        () = async { drop(finishing.wait_for(|finish| *finish).await) } => {
            // Finish the request in flight, then close (keep-alive ends here).
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = outcome {
        closed_with(&err);
    }
}

/// Counts why a connection ended badly; a client going away is not worth a line.
fn closed_with(err: &hyper::Error) {
    if err.is_timeout() {
        metrics::connection_closed("header_timeout");
    } else {
        tracing::debug!(error = %err, "connection ended with an error");
    }
}
