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
use serde_json::Value;
use uuid::Uuid;

use super::answers::{FallbackStatus, Ping, Status, True, WebsocketAvailable, WebsocketStatus};
use super::caller::AuthUser;
use super::extract::{Json, Path, Query};
use super::{answers::EventReply, refusals::NotFound};
use crate::{
    auth::Identity,
    error::AppError,
    events::commands::{EventAnswer, Membership, event_reply},
    realtime::Namespace,
    realtime::presence::OnlinePage,
    state::AppState,
    streams::{
        self, AnnotationEvent, MessageEvent, NotificationEvent, Owner, StreamKey, StreamKind, StreamPage, Timestamp,
    },
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

/// PROTOCOL.md section 2, "Paging".
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct PollQuery {
    /// Events after this `seq` (default 0).
    #[param(minimum = 0)]
    since: Option<i64>,
    /// At most this many events (default 100; clamped to 1..1000).
    limit: Option<i64>,
    /// Seconds to hold a request that would return no events (clamped to 0..30).
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
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum RoomNamespace {
    #[default]
    Chat,
    Collaboration,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct PresenceQuery {
    /// The room's namespace (default `chat`).
    #[serde(default)]
    #[param(inline)]
    namespace: RoomNamespace,
    after: Option<Uuid>,
    limit: Option<i64>,
}

/// The answer of the socket `presence` request (without `ok`).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct PresenceAnswer {
    course_id: Uuid,
    #[serde(flatten)]
    page: OnlinePage,
}

/// A page of the course room's online users (course members, ADMIN), for clients on polling.
#[utoipa::path(get, path = "/api/realtime/presence/{course_id}", tag = "realtime",
    params(("course_id" = Uuid, Path), PresenceQuery), security(("bearer" = [])),
    responses((status = 200, body = PresenceAnswer), NotFound))]
async fn presence(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(course_id): Path<Uuid>,
    Query(query): Query<PresenceQuery>,
) -> Result<AxumJson<PresenceAnswer>, AppError> {
    let (namespace, stream) = match query.namespace {
        RoomNamespace::Chat => (Namespace::Chat, StreamKey::messages(course_id)),
        RoomNamespace::Collaboration => (Namespace::Collaboration, StreamKey::annotations(course_id)),
    };
    state.commands.authorize_read(&me, stream).await?;
    let limit = streams::page_limit(query.limit) as usize;
    let page = state.realtime.presence.page(namespace, course_id, query.after, limit);
    Ok(AxumJson(PresenceAnswer { course_id, page }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SendBody {
    content: String,
    #[schema(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    channel_id: Option<String>,
    #[schema(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    client_msg_id: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct EditBody {
    content: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AnnotateBody {
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    document_id: String,
    /// A JSON object of at most 16 KiB.
    #[schema(value_type = Object)]
    annotation: Value,
    #[schema(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    client_msg_id: String,
}

type EventJson = AxumJson<EventAnswer>;

/// Sends a chat message, as the socket `send` (idempotent on `clientMsgId`).
#[utoipa::path(post, path = "/api/realtime/messages/{course_id}", tag = "realtime", params(("course_id" = Uuid, Path)),
    request_body = SendBody, security(("bearer" = [])),
    responses((status = 201, body = EventReply<MessageEvent>), NotFound))]
async fn send_message(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(course_id): Path<Uuid>,
    Json(body): Json<SendBody>,
) -> Result<(StatusCode, EventJson), AppError> {
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

/// Edits a message (its sender only).
#[utoipa::path(patch, path = "/api/realtime/messages/{course_id}/{message_id}", tag = "realtime",
    params(("course_id" = Uuid, Path), ("message_id" = String, Path)), request_body = EditBody,
    security(("bearer" = [])), responses((status = 200, body = EventReply<MessageEvent>), NotFound))]
async fn edit_message(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path((course_id, message_id)): Path<(Uuid, String)>,
    Json(body): Json<EditBody>,
) -> Result<EventJson, AppError> {
    let appended =
        state.commands.edit_message(&me, Membership::Unchecked, course_id, &message_id, &body.content).await?;
    Ok(AxumJson(event_reply(&appended)?))
}

/// Deletes a message (its sender, the course's professor, ADMIN).
#[utoipa::path(delete, path = "/api/realtime/messages/{course_id}/{message_id}", tag = "realtime",
    params(("course_id" = Uuid, Path), ("message_id" = String, Path)),
    security(("bearer" = [])), responses((status = 200, body = EventReply<MessageEvent>), NotFound))]
async fn delete_message(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path((course_id, message_id)): Path<(Uuid, String)>,
) -> Result<EventJson, AppError> {
    Ok(AxumJson(event_reply(&state.commands.delete_message(&me, course_id, &message_id).await?)?))
}

/// Stores an annotation, as the socket `annotate` (idempotent on `clientMsgId`).
#[utoipa::path(post, path = "/api/realtime/annotations/{course_id}", tag = "realtime", params(("course_id" = Uuid, Path)),
    request_body = AnnotateBody, security(("bearer" = [])),
    responses((status = 201, body = EventReply<AnnotationEvent>), NotFound))]
async fn annotate(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(course_id): Path<Uuid>,
    Json(body): Json<AnnotateBody>,
) -> Result<(StatusCode, EventJson), AppError> {
    let appended = state
        .commands
        .annotate(&me, Membership::Unchecked, course_id, &body.document_id, body.annotation, &body.client_msg_id)
        .await?;
    Ok((StatusCode::CREATED, AxumJson(event_reply(&appended)?)))
}

/// Marks a notification read (its user only).
#[utoipa::path(post, path = "/api/realtime/notifications/{notification_id}/read", tag = "realtime",
    params(("notification_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = EventReply<NotificationEvent>), NotFound))]
async fn read_notification(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(notification_id): Path<String>,
) -> Result<EventJson, AppError> {
    Ok(AxumJson(event_reply(&state.commands.read_notification(&me, &notification_id).await?)?))
}

/// No token needed: the client's cheap check whether to go back to sockets.
#[utoipa::path(post, path = "/api/realtime/ping", tag = "realtime", responses((status = 200, body = Ping)))]
async fn ping(State(state): State<AppState>) -> AxumJson<Ping> {
    let stats = state.realtime.connections.stats();
    AxumJson(Ping {
        ok: True,
        server_time: Timestamp::now(),
        websocket: WebsocketAvailable { available: stats.clients < state.settings.max_connections },
    })
}

/// Connection counts and the fallback's settings.
#[utoipa::path(get, path = "/api/realtime/status", tag = "realtime", security(("bearer" = [])),
    responses((status = 200, body = Status)))]
async fn status(State(state): State<AppState>, AuthUser(_): AuthUser) -> AxumJson<Status> {
    let stats = state.realtime.connections.stats();
    let by_namespace =
        Namespace::ALL.into_iter().map(|ns| (ns.path(), stats.by_namespace.get(&ns).copied().unwrap_or(0))).collect();
    AxumJson(Status {
        websocket: WebsocketStatus { enabled: true, connections: stats.clients, by_namespace },
        fallback: FallbackStatus {
            enabled: state.settings.enable_fallback,
            polling_interval_ms: state.settings.polling_interval_ms,
        },
        uptime_seconds: state.started_at.elapsed().as_secs(),
        version: env!("CARGO_PKG_VERSION"),
    })
}
