//! Socket.IO server construction: transports, heartbeat, payload bounds, buffers.

use std::time::Duration;

use axum::Router;
use socketioxide::{SocketIo, service::SocketIoService};

use crate::config::Settings;

/// Engine.IO sessions that have not joined a namespace by then are closed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes each WebSocket reads at a time; tungstenite allocates this per connection up
/// front (default 4 KiB). Larger frames still arrive whole: the buffer grows for them.
const WS_READ_BUFFER: usize = 1024;

pub fn build(settings: &Settings) -> (SocketIoService<Router>, SocketIo) {
    let max_payload = settings.max_socket_payload;
    SocketIo::builder()
        .ping_interval(settings.ping_interval())
        .ping_timeout(settings.ping_timeout())
        .connect_timeout(CONNECT_TIMEOUT)
        // Packets queued per socket before emits to it fail (the slow-consumer policy).
        .max_buffer_size(settings.socket_buffer_packets)
        // `max_payload` bounds polling bodies only; WebSocket frames have their own.
        .max_payload(max_payload as u64)
        .ws_max_message_size(max_payload)
        .ws_max_frame_size(max_payload)
        .ws_read_buffer_size(WS_READ_BUFFER)
        // Mounted at `/socket.io/` only, so the inner service (for other paths) never runs.
        .build_with_inner_svc(Router::new())
}
