//! How every client->server event is handled, in one place: the rate-limit check,
//! payload parsing into a typed struct (`VALIDATION_FAILED` on failure), the handler
//! (a panic in it is caught and answered `INTERNAL` with an error id), metrics, and
//! the answer: `{ok: true, ...}` / `{ok: false, error}` in the ack, or an `error`
//! event when the client asked for no ack and the event failed. Answers go through
//! `answers`, which never drops one.

use std::{future::Future, panic::AssertUnwindSafe, sync::Arc};

use futures_util::FutureExt;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use socketioxide::{
    SocketIo,
    adapter::LocalAdapter,
    extract::{SocketRef, TryData},
};

use super::{Namespace, Session, answers::Replier, gate::ClientId, rooms};
use crate::{
    error::{AppError, without_input},
    telemetry::metrics,
};

/// What a cut flooding client is told to wait before it comes back, seconds.
const FLOOD_PENALTY_SECS: u64 = 5;

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
    // The catalog is what the contract and docs/asyncapi.yaml promise; a handler
    // outside it would be an undocumented event.
    debug_assert!(
        Namespace::from_path(socket.ns()).is_some_and(|ns| ns.events().client.contains(&event)),
        "`{event}` is not a client event of {} in realtime::catalog",
        socket.ns()
    );
    let session = session.clone();
    let namespace = Namespace::from_path(socket.ns()).map_or("unknown", Namespace::path);
    socket.on(event, move |socket: SocketRef, io: SocketIo, TryData(data): TryData<Value>, replier: Replier<LocalAdapter>| {
        let handler = handler.clone();
        let session = session.clone();
        async move {
            metrics::event_received(namespace, event);
            let outcome = match session.take_event() {
                Ok(true) => match parse::<T>(data.unwrap_or(Value::Null)) {
                    Ok(payload) => guarded(handler(Ctx { socket: socket.clone(), session: session.clone() }, payload)).await,
                    Err(err) => Err(err),
                },
                Ok(false) => {
                    metrics::rate_limited("socket_event");
                    Err(AppError::RateLimited { retry_after_secs: 1 })
                }
                Err(abuse) => {
                    tracing::warn!(sampled = true, socket_id = %socket.id, user_id = %session.user.id, event, "event flood: disconnecting the client");
                    metrics::rate_limited("socket_event");
                    answer(&replier, &session, Err(abuse));
                    // Said once, in order after the answers already queued, so the
                    // client learns why the disconnect that follows came.
                    if session.begin_cut() {
                        let why = AppError::RateLimited { retry_after_secs: FLOOD_PENALTY_SECS };
                        replier.error_event(&session, json!(why.body()));
                        disconnect_client(&io, session.client).await;
                    }
                    return;
                }
            };
            if let Err(err) = &outcome {
                metrics::event_refused(namespace, event, err.code().as_str());
            }
            answer(&replier, &session, outcome);
        }
    });
}

/// Unknown events get an `error` event (and an error ack if one was asked for).
pub fn on_unknown(socket: &SocketRef, session: &Arc<Session>) {
    let session = session.clone();
    socket.on_fallback(
        move |socketioxide::extract::Event(event): socketioxide::extract::Event, replier: Replier<LocalAdapter>| {
            let session = session.clone();
            async move {
                let err = AppError::validation(format!("unknown event `{event}`"));
                let body = json!(err.body());
                if replier.wants_ack() {
                    replier.answer(&session, json!({"ok": false, "error": body}), None);
                }
                replier.error_event(&session, body);
            }
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

fn answer(replier: &Replier<LocalAdapter>, session: &Arc<Session>, outcome: Result<Reply, AppError>) {
    match outcome {
        Ok(fields) => {
            let mut body = Map::with_capacity(fields.len() + 1);
            body.insert("ok".into(), Value::Bool(true));
            body.extend(fields);
            replier.answer(session, Value::Object(body), None);
        }
        Err(err) => {
            let error = json!(err.body());
            replier.answer(session, json!({"ok": false, "error": error}), Some(error));
        }
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
