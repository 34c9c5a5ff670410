//! Prometheus metrics: every name and label set in one place, so labels stay
//! bounded (namespaces, event names we registered, codes, matched routes; never
//! user ids or raw paths).

use std::{sync::OnceLock, time::Duration};

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: sub-millisecond to the long-poll ceiling.
const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Appends per committed batch: powers of two up to the publisher's `MAX_BATCH`
/// (a unit test beside it keeps the two in step), so a full batch has its own bucket.
pub const BATCH_SIZE_BUCKETS: &[f64] =
    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0];

/// Installs the process-wide recorder once (tests start several apps in one process)
/// and returns the handle that renders `/metrics`.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|builder| {
                    builder.set_buckets_for_metric(Matcher::Full("coursecast_batch_size".into()), BATCH_SIZE_BUCKETS)
                })
                .map(|builder| builder.build_recorder());
            match recorder {
                Ok(recorder) => {
                    let handle = recorder.handle();
                    if metrics::set_global_recorder(recorder).is_err() {
                        tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
                    }
                    handle
                }
                Err(err) => {
                    tracing::error!(error = %err, "metrics disabled: bad bucket configuration");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}

pub fn clients(count: usize) {
    gauge!("coursecast_socket_clients").set(count as f64);
}

pub fn sockets(namespace: &'static str, count: usize) {
    gauge!("coursecast_socket_connections", "namespace" => namespace).set(count as f64);
}

pub fn socket_connected(namespace: &'static str) {
    counter!("coursecast_socket_connects_total", "namespace" => namespace).increment(1);
}

pub fn socket_disconnected(namespace: &'static str, reason: &'static str) {
    counter!("coursecast_socket_disconnects_total", "namespace" => namespace, "reason" => reason).increment(1);
}

pub fn handshake_refused(code: &'static str) {
    counter!("coursecast_handshake_refusals_total", "code" => code).increment(1);
}

pub fn event_received(namespace: &'static str, event: &'static str) {
    counter!("coursecast_socket_events_received_total", "namespace" => namespace, "event" => event).increment(1);
}

pub fn event_refused(namespace: &'static str, event: &'static str, code: &'static str) {
    counter!("coursecast_socket_event_refusals_total", "namespace" => namespace, "event" => event, "code" => code)
        .increment(1);
}

pub fn event_emitted(namespace: &'static str, event: &'static str) {
    counter!("coursecast_socket_events_emitted_total", "namespace" => namespace, "event" => event).increment(1);
}

/// Copies of committed events handed to clients: `socket` (sockets a broadcast
/// reached), `long_poll` (waiting requests it woke) or `sse` (event streams it was
/// queued for). With the events themselves (`coursecast_socket_events_emitted_total`)
/// this gives the fan-out.
pub fn deliveries(transport: &'static str, copies: usize) {
    counter!("coursecast_deliveries_total", "transport" => transport).increment(copies as u64);
}

/// An HTTP request answered with a contract error code.
pub fn http_refused(code: &'static str) {
    counter!("coursecast_http_refusals_total", "code" => code).increment(1);
}

/// One answered round trip to Redis: `publish` (the relay) or `ping` (probes, `/readyz`).
pub fn redis_round_trip(op: &'static str, took: Duration) {
    histogram!("coursecast_redis_seconds", "op" => op).record(took.as_secs_f64());
}

/// Sockets a broadcast could not reach (full buffer or closed).
pub fn broadcast_failures(namespace: &'static str, count: usize) {
    counter!("coursecast_broadcast_failures_total", "namespace" => namespace).increment(count as u64);
}

/// Appends refused because the publisher's queue was full (overload).
/// An answer met a full socket buffer and waits in the socket's backlog.
pub fn answer_deferred() {
    counter!("coursecast_answers_deferred_total").increment(1);
}

/// Answers still owed when their socket closed (the client retries after reconnecting).
pub fn answers_lost(count: usize) {
    counter!("coursecast_answers_lost_total").increment(count as u64);
}

pub fn publish_refused() {
    counter!("coursecast_publish_refusals_total").increment(1);
}

/// From the commit of an event's batch to the end of its broadcast.
pub fn delivery_latency(latency: Duration) {
    histogram!("coursecast_delivery_latency_seconds").record(latency.as_secs_f64());
}

pub fn batch_committed(size: usize, took: Duration) {
    histogram!("coursecast_batch_size").record(size as f64);
    histogram!("coursecast_db_query_seconds", "op" => "append_batch").record(took.as_secs_f64());
}

/// A dependency (database, Redis) as this node sees it: 1 up, 0 down; each change
/// is counted too, so a flapping one shows even between scrapes.
pub fn dependency_up(dependency: &'static str, up: bool) {
    gauge!("coursecast_dependency_up", "dependency" => dependency).set(if up { 1.0 } else { 0.0 });
    let state = if up { "up" } else { "down" };
    counter!("coursecast_dependency_changes_total", "dependency" => dependency, "state" => state).increment(1);
}

/// A message for other nodes not relayed: `outbox_full` or `redis_down`. Their
/// clients repair the gap from storage.
pub fn cluster_relay_dropped(reason: &'static str) {
    counter!("coursecast_cluster_relay_dropped_total", "reason" => reason).increment(1);
}

/// An event of another node that came after later ones had gone out here (the
/// clients that needed it repaired the gap).
pub fn late_event_dropped() {
    counter!("coursecast_cluster_late_events_total").increment(1);
}

/// Events held for their turn let go with a gap: the events before them never came
/// (a relay lost while Redis was away).
pub fn gap_released() {
    counter!("coursecast_cluster_gaps_released_total").increment(1);
}

/// A decision this node took on its own view because Redis did not answer in time.
pub fn cluster_fallback(what: &'static str) {
    counter!("coursecast_cluster_fallbacks_total", "what" => what).increment(1);
}

/// Scopes (courses, users) this node's clients listen to, and so subscribes to.
pub fn cluster_scopes(count: usize) {
    gauge!("coursecast_cluster_scopes").set(count as f64);
}

/// Bytes of cluster messages this node published or received, and events it
/// received from other nodes (the Redis traffic interest routing keeps small).
pub fn cluster_traffic(direction: &'static str, bytes: usize) {
    counter!("coursecast_cluster_bytes_total", "direction" => direction).increment(bytes as u64);
    counter!("coursecast_cluster_messages_total", "direction" => direction).increment(1);
}

pub fn db_query(op: &'static str, took: Duration) {
    histogram!("coursecast_db_query_seconds", "op" => op).record(took.as_secs_f64());
}

pub fn poll_request(stream: &'static str) {
    counter!("coursecast_polling_requests_total", "stream" => stream).increment(1);
}

pub fn long_poll_waiters(count: usize) {
    gauge!("coursecast_long_poll_waiters").set(count as f64);
}

/// Server-Sent Events streams open on this node.
pub fn sse_connections(count: usize) {
    gauge!("coursecast_sse_connections").set(count as f64);
}

/// Events written to Server-Sent Events streams (backlog and live).
pub fn sse_events(count: usize) {
    counter!("coursecast_sse_events_total").increment(count as u64);
}

/// A Server-Sent Events stream ended: `client_closed`, `too_slow`, `token_expired`,
/// `token_invalid` (logout, deletion), `shutdown` or `storage` (a backlog read failed).
pub fn sse_closed(reason: &'static str) {
    counter!("coursecast_sse_closed_total", "reason" => reason).increment(1);
}

/// `scope`: `http_auth`, `socket_handshake` or `socket_event`.
/// A TCP connection closed by one of the listener's bounds: `per_ip_limit`,
/// `first_byte_timeout`, `header_timeout` (slowloris-style clients land here).
pub fn connection_closed(reason: &'static str) {
    counter!("coursecast_connections_closed_total", "reason" => reason).increment(1);
}

/// A log line held back by sampling (`telemetry::sampling`), by the code it came from.
pub fn log_line_suppressed(target: &'static str) {
    let origin = if target.starts_with("coursecast") { "coursecast" } else { "socketio" };
    counter!("coursecast_log_lines_suppressed_total", "origin" => origin).increment(1);
}

pub fn rate_limited(scope: &'static str) {
    counter!("coursecast_rate_limited_total", "scope" => scope).increment(1);
}

pub fn payload_too_large(transport: &'static str) {
    counter!("coursecast_payload_refusals_total", "transport" => transport).increment(1);
}

pub fn http_request(method: String, route: String, status: u16, took: Duration) {
    let status = status.to_string();
    counter!("coursecast_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    histogram!("coursecast_http_request_duration_seconds", "method" => method, "route" => route)
        .record(took.as_secs_f64());
}
