//! How every client->server event is handled, in one place: the rate-limit check,
//! payload parsing into a typed struct (`VALIDATION_FAILED` on failure), the handler,
//! and the answer: `{ok: true, ...}` / `{ok: false, error}` in the ack, or an `error`
//! event when the client asked for no ack and the event failed.

use std::{convert::Infallible, future::Future, sync::Arc};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use socketioxide::{
    adapter::Adapter,
    extract::{AckSender, SocketRef, TryData},
    handler::FromMessageParts,
    socket::Socket,
};

use super::Session;
use crate::error::AppError;

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
    socket.on(event, move |socket: SocketRef, TryData(data): TryData<Value>, AckRequested(wants_ack), ack: AckSender| {
        let handler = handler.clone();
        let session = session.clone();
        async move {
            let outcome = match session.take_event() {
                Ok(true) => match parse::<T>(data.unwrap_or(Value::Null)) {
                    Ok(payload) => handler(Ctx { socket: socket.clone(), session }, payload).await,
                    Err(err) => Err(err),
                },
                Ok(false) => Err(AppError::RateLimited { retry_after_secs: 1 }),
                Err(abuse) => {
                    tracing::warn!(socket_id = %socket.id, user_id = %session.user.id, event, "event flood: disconnecting");
                    answer(&socket, event, wants_ack, ack, Err(abuse));
                    let _ = socket.disconnect();
                    return;
                }
            };
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

fn parse<T: DeserializeOwned>(data: Value) -> Result<T, AppError> {
    serde_json::from_value(data).map_err(|e| AppError::validation(format!("invalid payload: {e}")))
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
