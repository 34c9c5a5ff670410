//! Namespace set-up shared by all four: the handshake middleware (token, limits),
//! per-socket session, the user room, `reauth`, unknown events, and clean-up on
//! disconnect. Each namespace module adds its own events.

/// Registers `handler(&AppState, Ctx, Payload)` for an event through `dispatch::on`.
macro_rules! route {
    ($socket:expr, $session:expr, $state:expr, $event:expr => $handler:path) => {
        $crate::realtime::dispatch::on($socket, $session, $event, {
            let state = $state.clone();
            move |ctx, payload| {
                let state = state.clone();
                async move { $handler(&state, ctx, payload).await }
            }
        })
    };
}

mod analytics;
mod chat;
mod collaboration;
mod course_rooms;
mod notifications;

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::{
    SocketIo,
    extract::{SocketRef, TryData},
    handler::ConnectHandler,
    socket::DisconnectReason,
};

use super::{
    Namespace, Session, catalog,
    dispatch::{self, Ctx, Reply},
    gate::Handshake,
    rooms,
};
use crate::{
    auth::{Caller, authenticate_handshake},
    cluster::Admission,
    error::{AppError, ErrorCode},
    events::interest::Scope,
    state::AppState,
    streams::{StreamPage, Timestamp},
    telemetry::metrics,
};

pub fn register(io: &SocketIo, state: &AppState) {
    for namespace in Namespace::ALL {
        let on_connect = {
            let state = state.clone();
            move |socket: SocketRef| {
                let state = state.clone();
                async move { connected(namespace, socket, state) }
            }
        };
        let admit = {
            let state = state.clone();
            move |socket: SocketRef, TryData(auth): TryData<Value>| {
                let state = state.clone();
                async move { admit(namespace, socket, auth.ok(), state).await }
            }
        };
        io.ns(namespace.path(), on_connect.with(admit));
    }
}

/// The handshake check; its error becomes the `connect_error` message. On success
/// the socket is fully equipped here: socketioxide sends CONNECT right after the
/// middleware and starts the connect handler in a task of its own, so anything the
/// client sends at once must find its handlers and rooms already in place.
async fn admit(namespace: Namespace, socket: SocketRef, auth: Option<Value>, state: AppState) -> Result<(), ErrorCode> {
    let parts = socket.req_parts();
    let Some(handshake) = parts.extensions.get::<Handshake>().copied() else {
        tracing::error!("socket without a gate tag: is the gate layer installed?");
        return Err(ErrorCode::ServerFull);
    };
    let request_id = parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let refuse = |code: ErrorCode| {
        tracing::info!(
            sampled = true,
            namespace = namespace.path(),
            code = code.as_str(),
            request_id,
            "socket refused"
        );
        metrics::handshake_refused(code.as_str());
        if code == ErrorCode::RateLimited {
            metrics::rate_limited("socket_handshake");
        }
        code
    };
    if handshake.rate_limited {
        return Err(refuse(ErrorCode::RateLimited));
    }
    let user = authenticate_handshake(&state.auth, auth.as_ref(), &parts.headers).await.map_err(refuse)?;
    state.realtime.connections.check(namespace, handshake.client, user.id).map_err(refuse)?;
    if let Some(cluster) = &state.realtime.cluster {
        let mine = state.realtime.connections.user_sockets(namespace, user.id);
        let limit = state.settings.max_sockets_per_user;
        if cluster.admit_socket(namespace.path(), user.id, mine, limit).await == Admission::Full {
            return Err(refuse(ErrorCode::ServerFull));
        }
    }
    let settings = &state.settings;
    let session =
        Arc::new(Session::new(user, handshake.client, settings.socket_events_per_sec, settings.socket_events_burst));
    socket.extensions.insert(session.clone());
    socket.join([rooms::user(user.id), rooms::client(handshake.client)]);
    // Before any event handler runs, so a `sync` reads what was not relayed here.
    state.interest.want(Scope::User(user.id)).await;
    equip(namespace, &socket, session, &state);
    Ok(())
}

/// Registers the socket's event handlers and its disconnect clean-up.
fn equip(namespace: Namespace, socket: &SocketRef, session: Arc<Session>, state: &AppState) {
    dispatch::on_unknown(socket, &session);
    route!(socket, &session, state, catalog::client::REAUTH => reauth);
    match namespace {
        Namespace::Chat => chat::register(socket, &session, state),
        Namespace::Notifications => notifications::register(socket, &session, state),
        Namespace::Analytics => analytics::register(socket, &session, state),
        Namespace::Collaboration => collaboration::register(socket, &session, state),
    }
    let state = state.clone();
    let admitted_at = std::time::Instant::now();
    socket.on_disconnect(move |socket: SocketRef, reason: DisconnectReason| async move {
        let user = session.user.id;
        state.realtime.expiries.forget(&session);
        for course in session.take_courses() {
            state.realtime.presence.leave(namespace, course, user);
        }
        session.count_out(|| {
            let sockets = state.realtime.connections.release(namespace, session.client, user);
            if let Some(cluster) = &state.realtime.cluster {
                cluster.set_sockets(namespace.path(), user, sockets);
            }
        });
        metrics::socket_disconnected(namespace.path(), reason_label(reason));
        tracing::info!(
            namespace = namespace.path(),
            socket_id = %socket.id,
            user_id = %user,
            request_id = request_id(&socket),
            reason = reason_label(reason),
            duration_ms = admitted_at.elapsed().as_millis() as u64,
            "socket disconnected"
        );
    });
}

/// The connect handler: counts the socket in and watches its token's expiry.
fn connected(namespace: Namespace, socket: SocketRef, state: AppState) {
    let Some(session) = socket.extensions.get::<Arc<Session>>() else {
        tracing::error!("connected socket without a session");
        let _ = socket.disconnect();
        return;
    };
    session.count_in(|| {
        let sockets = state.realtime.connections.register(namespace, session.client, session.user.id);
        if let Some(cluster) = &state.realtime.cluster {
            cluster.set_sockets(namespace.path(), session.user.id, sockets);
        }
    });
    state.realtime.expiries.watch(&session, socket.clone());
    tracing::info!(
        namespace = namespace.path(),
        socket_id = %socket.id,
        user_id = %session.user.id,
        request_id = request_id(&socket),
        transport = ?socket.transport_type(),
        "socket connected"
    );
    metrics::socket_connected(namespace.path());
}

/// The `X-Request-Id` of the socket's handshake request.
fn request_id(socket: &SocketRef) -> &str {
    socket.req_parts().headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default()
}

/// A short, bounded label for a disconnect reason (metrics and logs).
fn reason_label(reason: DisconnectReason) -> &'static str {
    match reason {
        DisconnectReason::TransportClose => "transport_close",
        DisconnectReason::MultipleHttpPollingError => "multiple_polling",
        DisconnectReason::PacketParsingError => "packet_parsing",
        DisconnectReason::TransportError => "transport_error",
        DisconnectReason::HeartbeatTimeout => "heartbeat_timeout",
        DisconnectReason::ClientNSDisconnect => "client_disconnect",
        DisconnectReason::ServerNSDisconnect => "server_disconnect",
        DisconnectReason::ClosingServer => "server_closing",
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReauthPayload {
    token: String,
}

/// Replaces the token of a live socket: same user only.
async fn reauth(state: &AppState, ctx: Ctx, payload: ReauthPayload) -> Result<Reply, AppError> {
    let Caller::User(fresh) = state.auth.authenticate(&payload.token).await? else {
        return Err(AppError::Forbidden("service tokens cannot open sockets"));
    };
    if fresh.id != ctx.session.user.id {
        return Err(AppError::Forbidden("the new token belongs to another user"));
    }
    ctx.session.extend(fresh.expires_at);
    state.realtime.expiries.watch(&ctx.session, ctx.socket.clone());
    Ok(reply(json!({"expiresAt": Timestamp(fresh.expires_at.saturating_mul(1000)).to_rfc3339()})))
}

/// Turns a `json!({...})` object into ack fields.
fn reply(value: Value) -> Reply {
    match value {
        Value::Object(fields) => fields.into(),
        _ => Reply::new(),
    }
}

/// A page of a stream as ack fields (`cursor`, `hasMore`, and the events as stored
/// under `events_key`).
fn page_reply(page: StreamPage, events_key: &'static str) -> Result<Reply, AppError> {
    let events = serde_json::value::to_raw_value(&page.events).map_err(AppError::internal)?;
    let mut fields = Reply::new();
    fields.insert("cursor", json!(page.cursor));
    fields.insert("hasMore", json!(page.has_more));
    fields.insert_raw(events_key, Arc::from(events));
    Ok(fields)
}

/// `sync {since?, limit?}` on one of the caller's own streams.
async fn sync_reply(
    state: &AppState,
    stream: crate::streams::StreamKey,
    payload: notifications::SyncPayload,
) -> Result<Reply, AppError> {
    let since = crate::streams::since(payload.since)?;
    let page = state.store.read_stream(stream, since, crate::streams::page_limit(payload.limit)).await?;
    page_reply(page, "events")
}
