//! `/api/realtime`: the HTTP fallback of every real-time feature (PROTOCOL.md
//! section 2). The same commands as the socket handlers, the same stored streams and
//! cursors, long polling with `wait`; plus the client's health check and status.

use std::time::Duration;

use axum::{
    Json as AxumJson, Router,
    extract::{Request, State},
    http::StatusCode,
    middleware::{self, Next},
    routing::{MethodRouter, get, patch, post},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::caller::AuthUser;
use super::extract::{Json, Path, Query};
use crate::{
    auth::Identity,
    error::AppError,
    events::commands::{Membership, event_reply},
    realtime::Namespace,
    state::AppState,
    streams::{self, Owner, StreamKey, StreamKind, StreamPage, Timestamp},
    telemetry::metrics,
};

/// The longest a poll may wait, seconds.
const MAX_WAIT_SECS: f64 = 30.0;

pub fn router(state: &AppState) -> Router<AppState> {
    // Every stream kind is polled at `/api/realtime/<kind>/<owner id>`.
    let mut fallback = StreamKind::ALL.into_iter().fold(Router::new(), |router, kind| {
        let owner = match kind.owner() {
            Owner::Course => "course_id",
            Owner::User => "user_id",
        };
        router.route(&format!("/api/realtime/{}/{{{owner}}}", kind.name()), poll(kind))
    });
    fallback = fallback
        .route("/api/realtime/presence/{course_id}", get(presence))
        .route("/api/realtime/messages/{course_id}", post(send_message))
        .route("/api/realtime/messages/{course_id}/{message_id}", patch(edit_message).delete(delete_message))
        .route("/api/realtime/annotations/{course_id}", post(annotate))
        .route("/api/realtime/notifications/{notification_id}/read", post(read_notification))
        .merge(super::sse::router());
    if !state.settings.enable_fallback {
        fallback = fallback.route_layer(middleware::from_fn(fallback_disabled));
    }
    Router::new().route("/api/realtime/ping", post(ping)).route("/api/realtime/status", get(status)).merge(fallback)
}

/// `ENABLE_WEBSOCKET_FALLBACK=false` turns the polling and event-stream endpoints off.
async fn fallback_disabled(_: Request, _: Next) -> AppError {
    AppError::Unavailable("the HTTP polling fallback is disabled on this server")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PollQuery {
    since: Option<i64>,
    limit: Option<i64>,
    wait: Option<f64>,
}

/// The `GET` route of one kind of stream.
fn poll(kind: StreamKind) -> MethodRouter<AppState> {
    get(
        move |State(state): State<AppState>,
              AuthUser(me): AuthUser,
              Path(id): Path<Uuid>,
              Query(query): Query<PollQuery>| async move { poll_stream(&state, &me, kind, id, query).await },
    )
}

async fn poll_stream(
    state: &AppState,
    me: &Identity,
    kind: StreamKind,
    id: Uuid,
    query: PollQuery,
) -> Result<AxumJson<StreamPage>, AppError> {
    let since = streams::since(query.since)?;
    let wait = query.wait.unwrap_or(0.0);
    if !wait.is_finite() {
        return Err(AppError::validation("wait must be a number of seconds"));
    }
    let stream = StreamKey::new(kind, id);
    state.commands.authorize_read(me, stream).await?;
    metrics::poll_request(kind.name());
    let wait = Duration::from_secs_f64(wait.clamp(0.0, MAX_WAIT_SECS));
    let page = state.waiters.poll(&state.store, stream, since, streams::page_limit(query.limit), wait).await?;
    Ok(AxumJson(page))
}

/// The course rooms that have presence, as named in the query.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RoomNamespace {
    #[default]
    Chat,
    Collaboration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceQuery {
    #[serde(default)]
    namespace: RoomNamespace,
    after: Option<Uuid>,
    limit: Option<i64>,
}

/// `GET /api/realtime/presence/:courseId`: a page of the room's online users, the
/// answer of the socket `presence` request (without `ok`), for clients on polling.
async fn presence(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(course_id): Path<Uuid>,
    Query(query): Query<PresenceQuery>,
) -> Result<AxumJson<Value>, AppError> {
    let (namespace, stream) = match query.namespace {
        RoomNamespace::Chat => (Namespace::Chat, StreamKey::messages(course_id)),
        RoomNamespace::Collaboration => (Namespace::Collaboration, StreamKey::annotations(course_id)),
    };
    state.commands.authorize_read(&me, stream).await?;
    let limit = streams::page_limit(query.limit) as usize;
    let page = state.realtime.presence.page(namespace, course_id, query.after, limit);
    let mut body = serde_json::to_value(&page).map_err(AppError::internal)?;
    body["courseId"] = json!(course_id);
    Ok(AxumJson(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SendBody {
    content: String,
    channel_id: Option<String>,
    client_msg_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EditBody {
    content: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AnnotateBody {
    document_id: String,
    annotation: Value,
    client_msg_id: String,
}

type EventAnswer = AxumJson<Map<String, Value>>;

async fn send_message(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(course_id): Path<Uuid>,
    Json(body): Json<SendBody>,
) -> Result<(StatusCode, EventAnswer), AppError> {
    let appended = state
        .commands
        .send_message(
            &me,
            Membership::Unchecked,
            course_id,
            &body.content,
            body.channel_id.as_deref(),
            &body.client_msg_id,
        )
        .await?;
    Ok((StatusCode::CREATED, AxumJson(event_reply(&appended)?)))
}

async fn edit_message(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path((course_id, message_id)): Path<(Uuid, String)>,
    Json(body): Json<EditBody>,
) -> Result<EventAnswer, AppError> {
    let appended =
        state.commands.edit_message(&me, Membership::Unchecked, course_id, &message_id, &body.content).await?;
    Ok(AxumJson(event_reply(&appended)?))
}

async fn delete_message(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path((course_id, message_id)): Path<(Uuid, String)>,
) -> Result<EventAnswer, AppError> {
    Ok(AxumJson(event_reply(&state.commands.delete_message(&me, course_id, &message_id).await?)?))
}

async fn annotate(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(course_id): Path<Uuid>,
    Json(body): Json<AnnotateBody>,
) -> Result<(StatusCode, EventAnswer), AppError> {
    let appended = state
        .commands
        .annotate(&me, Membership::Unchecked, course_id, &body.document_id, body.annotation, &body.client_msg_id)
        .await?;
    Ok((StatusCode::CREATED, AxumJson(event_reply(&appended)?)))
}

async fn read_notification(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(notification_id): Path<String>,
) -> Result<EventAnswer, AppError> {
    Ok(AxumJson(event_reply(&state.commands.read_notification(&me, &notification_id).await?)?))
}

/// No token needed: the client's cheap check whether to go back to sockets.
async fn ping(State(state): State<AppState>) -> AxumJson<Value> {
    let stats = state.realtime.connections.stats();
    AxumJson(json!({
        "ok": true,
        "serverTime": Timestamp::now(),
        "websocket": {"available": stats.clients < state.settings.max_connections},
    }))
}

async fn status(State(state): State<AppState>, AuthUser(_): AuthUser) -> AxumJson<Value> {
    let stats = state.realtime.connections.stats();
    let by_namespace: Map<String, Value> = Namespace::ALL
        .into_iter()
        .map(|ns| (ns.path().to_owned(), json!(stats.by_namespace.get(&ns).copied().unwrap_or(0))))
        .collect();
    AxumJson(json!({
        "websocket": {"enabled": true, "connections": stats.clients, "byNamespace": by_namespace},
        "fallback": {"enabled": state.settings.enable_fallback, "pollingIntervalMs": state.settings.polling_interval_ms},
        "uptimeSeconds": state.started_at.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}
