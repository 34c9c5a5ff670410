//! How every client->server event is handled, in one place: the rate-limit check,
//! payload parsing into a typed struct (`VALIDATION_FAILED` on failure), the handler
//! (a panic in it is caught and answered `INTERNAL` with an error id), metrics, and
//! the answer: `{ok: true, ...}` / `{ok: false, error}` in the ack, or an `error`
//! event when the client asked for no ack and the event failed.

use std::{convert::Infallible, future::Future, panic::AssertUnwindSafe, sync::Arc};

use futures_util::FutureExt;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use socketioxide::{
    SocketIo,
    adapter::Adapter,
    extract::{AckSender, SocketRef, TryData},
    handler::FromMessageParts,
    socket::Socket,
};

use super::{Namespace, Session, gate::ClientId, rooms};
use crate::{
    error::{AppError, without_input},
    telemetry::metrics,
};

/// What a cut flooding client is told to wait before it comes back, seconds.
const FLOOD_PENALTY_SECS: u64 = 5;

/// Whether the client asked for an ack (socketioxide's `AckSender` does not say).
pub struct AckRequested(pub bool);

impl<A: Adapter> FromMessageParts<A> for AckRequested {
    type Error = Infallible;

    fn from_message_parts(
        _: &Arc<Socket<A>>,
        _: &mut socketioxide::handler::Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, Infallible> {
        Ok(Self(ack_id.is_some()))
    }
}

/// What a handler gets besides its payload.
#[derive(Clone)]
pub struct Ctx {
    pub socket: SocketRef,
    pub session: Arc<Session>,
}

/// The fields a handler adds to `{ok: true}`.
pub type Reply = Map<String, Value>;

/// Registers `handler` for `event` on `socket`.
pub fn on<T, F, Fut>(socket: &SocketRef, session: &Arc<Session>, event: &'static str, handler: F)
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(Ctx, T) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Reply, AppError>> + Send + 'static,
{
    let session = session.clone();
    let namespace = Namespace::from_path(socket.ns()).map_or("unknown", Namespace::path);
    socket.on(event, move |socket: SocketRef, io: SocketIo, TryData(data): TryData<Value>, AckRequested(wants_ack), ack: AckSender| {
        let handler = handler.clone();
        let session = session.clone();
        async move {
            metrics::event_received(namespace, event);
            let outcome = match session.take_event() {
                Ok(true) => match parse::<T>(data.unwrap_or(Value::Null)) {
                    Ok(payload) => guarded(handler(Ctx { socket: socket.clone(), session }, payload)).await,
                    Err(err) => Err(err),
                },
                Ok(false) => {
                    metrics::rate_limited("socket_event");
                    Err(AppError::RateLimited { retry_after_secs: 1 })
                }
                Err(abuse) => {
                    tracing::warn!(sampled = true, socket_id = %socket.id, user_id = %session.user.id, event, "event flood: disconnecting the client");
                    metrics::rate_limited("socket_event");
                    answer(&socket, event, wants_ack, ack, Err(abuse));
                    // Said once, in order after the answers already queued, so the
                    // client learns why the disconnect that follows came.
                    if session.begin_cut() {
                        emit_error(&socket, &AppError::RateLimited { retry_after_secs: FLOOD_PENALTY_SECS });
                        disconnect_client(&io, session.client).await;
                    }
                    return;
                }
            };
            if let Err(err) = &outcome {
                metrics::event_refused(namespace, event, err.code().as_str());
            }
            answer(&socket, event, wants_ack, ack, outcome);
        }
    });
}

/// Unknown events get an `error` event (and an error ack if one was asked for).
pub fn on_unknown(socket: &SocketRef) {
    socket.on_fallback(
        |socket: SocketRef,
         socketioxide::extract::Event(event): socketioxide::extract::Event,
         AckRequested(wants_ack),
         ack: AckSender| async move {
            let err = AppError::validation(format!("unknown event `{event}`"));
            if wants_ack && let Err(e) = ack.send(&json!({"ok": false, "error": err.body()})) {
                tracing::debug!(error = %e, "ack not delivered");
            }
            emit_error(&socket, &err);
        },
    );
}

/// Disconnects every socket of one client, in every namespace. Packets the client
/// still has in flight then reach sockets that are gone, which makes Socket.IO
/// close the whole connection anyway; doing it for all namespaces at once keeps the
/// outcome the same whatever is in flight.
async fn disconnect_client(io: &SocketIo, client: ClientId) {
    for namespace in Namespace::ALL {
        if let Some(operators) = io.of(namespace.path())
            && let Err(err) = operators.to(rooms::client(client)).disconnect().await
        {
            tracing::debug!(error = %err, "disconnecting a flooding client");
        }
    }
}

/// Runs a handler, turning a panic into an `INTERNAL` refusal (logged with an id
/// that the client receives) instead of a silently dropped event.
async fn guarded(handler: impl Future<Output = Result<Reply, AppError>>) -> Result<Reply, AppError> {
    AssertUnwindSafe(handler).catch_unwind().await.unwrap_or_else(|panic| {
        let what =
            panic.downcast_ref::<&str>().map(|s| (*s).to_owned()).or_else(|| panic.downcast_ref::<String>().cloned());
        Err(AppError::internal(anyhow::anyhow!("event handler panicked: {}", what.unwrap_or_default())))
    })
}

fn parse<T: DeserializeOwned>(data: Value) -> Result<T, AppError> {
    serde_json::from_value(data)
        .map_err(|e| AppError::validation(format!("invalid payload: {}", without_input(&e.to_string()))))
}

fn answer(socket: &SocketRef, event: &str, wants_ack: bool, ack: AckSender, outcome: Result<Reply, AppError>) {
    let body = match &outcome {
        Ok(fields) => {
            let mut body = Map::with_capacity(fields.len() + 1);
            body.insert("ok".into(), Value::Bool(true));
            body.extend(fields.clone());
            Value::Object(body)
        }
        Err(err) => json!({"ok": false, "error": err.body()}),
    };
    if wants_ack {
        if let Err(e) = ack.send(&body) {
            tracing::debug!(socket_id = %socket.id, event, error = %e, "ack not delivered");
        }
    } else if let Err(err) = &outcome {
        emit_error(socket, err);
    }
}

fn emit_error(socket: &SocketRef, err: &AppError) {
    if let Err(e) = socket.emit("error", &err.body()) {
        tracing::debug!(socket_id = %socket.id, error = %e, "error event not delivered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[tokio::test]
    async fn a_panicking_handler_becomes_an_internal_error_with_an_id() {
        let outcome = guarded(async { panic!("boom") }).await;
        let body = outcome.unwrap_err().body();
        assert_eq!(body.code, ErrorCode::Internal);
        assert!(body.error_id.is_some());
        assert_eq!(guarded(async { Ok(Reply::new()) }).await.unwrap(), Reply::new());
    }
}
