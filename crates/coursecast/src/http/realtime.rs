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

use super::extract::{Json, Path, Query};
use crate::{
    access::{require_course_reader, require_self_or_admin},
    auth::{AuthUser, Identity},
    error::AppError,
    events::{
        self, StreamKey,
        commands::{self, Membership, event_reply},
    },
    realtime::Namespace,
    state::AppState,
    store::{StreamPage, Timestamp},
    telemetry::metrics,
};

/// The longest a poll may wait, seconds.
const MAX_WAIT_SECS: f64 = 30.0;

pub fn router(state: &AppState) -> Router<AppState> {
    let mut fallback = Router::new()
        .route("/api/realtime/messages/{course_id}", poll(Polled::Messages).post(send_message))
        .route("/api/realtime/messages/{course_id}/{message_id}", patch(edit_message).delete(delete_message))
        .route("/api/realtime/annotations/{course_id}", poll(Polled::Annotations).post(annotate))
        .route("/api/realtime/notifications/{user_id}", poll(Polled::Notifications))
        .route("/api/realtime/notifications/{notification_id}/read", post(read_notification))
        .route("/api/realtime/progress/{user_id}", poll(Polled::Progress));
    if !state.settings.enable_fallback {
        fallback = fallback.route_layer(middleware::from_fn(fallback_disabled));
    }
    Router::new().route("/api/realtime/ping", post(ping)).route("/api/realtime/status", get(status)).merge(fallback)
}

/// `ENABLE_WEBSOCKET_FALLBACK=false` turns the polling endpoints off.
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

/// The streams a client may poll, and who may read each.
#[derive(Clone, Copy)]
enum Polled {
    Messages,
    Annotations,
    Notifications,
    Progress,
}

impl Polled {
    fn label(self) -> &'static str {
        match self {
            Self::Messages => "messages",
            Self::Annotations => "annotations",
            Self::Notifications => "notifications",
            Self::Progress => "progress",
        }
    }

    /// `id` is the course (messages, annotations) or the user (notifications, progress).
    async fn authorize(self, state: &AppState, me: &Identity, id: Uuid) -> Result<StreamKey, AppError> {
        match self {
            Self::Messages | Self::Annotations => require_course_reader(&state.store, id, me).await.map(drop)?,
            Self::Notifications | Self::Progress => require_self_or_admin(id, me)?,
        }
        Ok(match self {
            Self::Messages => StreamKey::Messages(id),
            Self::Annotations => StreamKey::Annotations(id),
            Self::Notifications => StreamKey::Notifications(id),
            Self::Progress => StreamKey::Progress(id),
        })
    }
}

/// The `GET` route of one kind of stream.
fn poll(kind: Polled) -> MethodRouter<AppState> {
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
    kind: Polled,
    id: Uuid,
    query: PollQuery,
) -> Result<AxumJson<StreamPage>, AppError> {
    let since = events::since(query.since)?;
    let wait = query.wait.unwrap_or(0.0);
    if !wait.is_finite() {
        return Err(AppError::validation("wait must be a number of seconds"));
    }
    let stream = kind.authorize(state, me, id).await?;
    metrics::poll_request(kind.label());
    let wait = Duration::from_secs_f64(wait.clamp(0.0, MAX_WAIT_SECS));
    let page = state.waiters.poll(&state.store, stream, since, events::page_limit(query.limit), wait).await?;
    Ok(AxumJson(page))
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
    let appended = commands::send_message(
        &state,
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
        commands::edit_message(&state, &me, Membership::Unchecked, course_id, &message_id, &body.content).await?;
    Ok(AxumJson(event_reply(&appended)?))
}

async fn delete_message(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path((course_id, message_id)): Path<(Uuid, String)>,
) -> Result<EventAnswer, AppError> {
    Ok(AxumJson(event_reply(&commands::delete_message(&state, &me, course_id, &message_id).await?)?))
}

async fn annotate(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(course_id): Path<Uuid>,
    Json(body): Json<AnnotateBody>,
) -> Result<(StatusCode, EventAnswer), AppError> {
    let appended = commands::annotate(
        &state,
        &me,
        Membership::Unchecked,
        course_id,
        &body.document_id,
        body.annotation,
        &body.client_msg_id,
    )
    .await?;
    Ok((StatusCode::CREATED, AxumJson(event_reply(&appended)?)))
}

async fn read_notification(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(notification_id): Path<String>,
) -> Result<EventAnswer, AppError> {
    Ok(AxumJson(event_reply(&commands::read_notification(&state, &me, &notification_id).await?)?))
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
