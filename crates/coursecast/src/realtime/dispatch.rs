//! How every client->server event is handled, in one place: the rate-limit check,
//! payload parsing into a typed struct (`VALIDATION_FAILED` on failure), the handler
//! (a panic in it is caught and answered `INTERNAL` with an error id), metrics, and
//! the answer: `{ok: true, ...}` / `{ok: false, error}` in the ack, or an `error`
//! event when the client asked for no ack and the event failed. Answers go through
//! `answers`, which never drops one.

use std::{future::Future, panic::AssertUnwindSafe, sync::Arc};

use futures_util::FutureExt;

use serde::{Serialize, Serializer, de::DeserializeOwned, ser::SerializeMap};
use serde_json::{Map, Value, json, value::RawValue};
use socketioxide::{
    SocketIo,
    adapter::LocalAdapter,
    extract::{SocketRef, TryData},
};

use super::{Namespace, Session, answers::Replier, gate::ClientId, rooms};
use crate::{
    error::{AppError, without_input},
    events::commands::EventAnswer,
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

/// The fields a handler adds to `{ok: true}`. Some come already serialized (events
/// as stored, a room's first page of `online`, shared by every join into it): the
/// answer copies those bytes instead of decoding and encoding them again.
#[derive(Debug, Default)]
pub struct Reply {
    fields: Map<String, Value>,
    raw: Vec<(&'static str, Arc<RawValue>)>,
}

impl Reply {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, key: &'static str, value: Value) {
        self.fields.insert(key.into(), value);
    }

    pub fn insert_raw(&mut self, key: &'static str, value: Arc<RawValue>) {
        self.raw.push((key, value));
    }
}

impl From<EventAnswer> for Reply {
    fn from(answer: EventAnswer) -> Self {
        let mut reply = Self::new();
        reply.insert_raw("event", answer.event);
        reply
    }
}

impl From<Map<String, Value>> for Reply {
    fn from(fields: Map<String, Value>) -> Self {
        Self { fields, raw: Vec::new() }
    }
}

/// The ack of a handled event: `{ok: true, ...fields}`.
impl Serialize for Reply {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1 + self.fields.len() + self.raw.len()))?;
        map.serialize_entry("ok", &true)?;
        for (key, value) in &self.fields {
            map.serialize_entry(key, value)?;
        }
        for (key, value) in &self.raw {
            map.serialize_entry(key, &**value)?;
        }
        map.end()
    }
}

/// Registers `handler` for `event` on `socket`.
pub fn on<T, R, F, Fut>(socket: &SocketRef, session: &Arc<Session>, event: &'static str, handler: F)
where
    T: DeserializeOwned + Send + 'static,
    R: Into<Reply>,
    F: Fn(Ctx, T) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<R, AppError>> + Send + 'static,
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
                    Ok(payload) => {
                        let handled = handler(Ctx { socket: socket.clone(), session: session.clone() }, payload);
                        guarded(handled.map(|outcome| outcome.map(Into::into))).await
                    }
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
                    replier.answer(&session, encode(&json!({"ok": false, "error": body})), None);
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
    // Serialized once here, so an answer that has to wait is not encoded again per retry.
    let encoded = outcome.and_then(|fields| serde_json::value::to_raw_value(&fields).map_err(AppError::internal));
    match encoded {
        Ok(body) => replier.answer(session, body, None),
        Err(err) => {
            let error = json!(err.body());
            replier.answer(session, encode(&json!({"ok": false, "error": error})), Some(error));
        }
    }
}

/// A JSON value as the bytes of an answer.
fn encode(value: &Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| unreachable!("a JSON value always serializes"))
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
        let reply = guarded(async { Ok(Reply::new()) }).await.unwrap();
        assert_eq!(serde_json::to_string(&reply).unwrap(), r#"{"ok":true}"#);
    }

    #[test]
    fn an_ack_carries_serialized_fields_as_they_are() {
        let mut reply = Reply::from(json!({"cursor": 7}).as_object().unwrap().clone());
        reply.insert("courseId", json!("c"));
        reply.insert_raw("online", Arc::from(RawValue::from_string(r#"["a","b"]"#.into()).unwrap()));
        let body: Value = serde_json::from_str(&serde_json::to_string(&reply).unwrap()).unwrap();
        assert_eq!(body, json!({"ok": true, "cursor": 7, "courseId": "c", "online": ["a", "b"]}));
    }
}
