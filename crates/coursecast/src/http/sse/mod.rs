//! `GET /api/realtime/stream`: every event of several streams on one long-lived
//! Server-Sent Events response (PROTOCOL.md section 2, "Server-Sent Events"), for
//! clients that cannot keep a socket: one connection instead of one long poll per
//! stream, resumed by the browser itself with `Last-Event-ID`.
//!
//! Everything that can be refused is refused before the stream starts, as a JSON
//! error: the token, the specs, the resume id, each stream's authorisation, the
//! connection bounds. Then: subscribe to live delivery first, read each stream's
//! head second (so nothing committed in between is missed), write `ready`, and hand
//! the rest to [`connection::Connection`].

mod connection;
mod specs;

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;
use serde_json::json;

use self::{
    connection::{Connection, Frames},
    specs::{Specs, Target, event_id},
};
use super::{
    caller::AuthUser,
    extract::Query,
    refusals::{NotFound, RateLimited},
};
use crate::{
    auth::{AuthError, bearer_token},
    error::AppError,
    events::subscribers::Topic,
    state::AppState,
};

/// What `EventSource` waits before reconnecting, milliseconds (the `retry` field).
const RETRY_MS: u64 = 2000;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/realtime/stream", get(open))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamQuery {
    /// `KIND:ID[:SINCE]`, comma-separated: `messages`, `annotations` (course ids),
    /// `notifications`, `progress` (user ids), `watch` (course id, no cursor).
    streams: Option<String>,
    /// The token, for a browser's `EventSource` (it cannot set headers). Only this
    /// endpoint reads it; the access log records paths, never query strings.
    access_token: Option<String>,
}

/// The `text/event-stream` response (`ready`, then events, `: ping` heartbeats, `end`).
#[utoipa::path(get, path = "/api/realtime/stream", tag = "realtime", params(StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "the cursors to resume from, as the last event's id")),
    security(("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream", body = String), NotFound, RateLimited))]
pub(super) async fn open(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<StreamQuery>,
) -> Result<Response, AppError> {
    let token = match (headers.get(header::AUTHORIZATION), query.access_token.as_deref()) {
        (None, Some(token)) if !token.is_empty() => token,
        (None, _) => return Err(AuthError::Missing.into()),
        (header, _) => bearer_token(header)?,
    };
    let AuthUser(me) = AuthUser::from_token(&state, token).await?;
    let settings = &state.settings;
    let mut specs =
        Specs::parse(query.streams.as_deref().unwrap_or_default(), settings.sse_max_streams_per_connection)?;
    if let Some(last) = headers.get("last-event-id") {
        specs.resume_from(last.as_bytes())?;
    }
    for target in &specs.targets {
        match target {
            Target::Stream(stream) => state.commands.authorize_read(&me, *stream).await?,
            Target::Watch(course) => state.commands.authorize_watch(&me, *course).await?,
        }
    }
    let topics: Vec<Topic> = specs.targets.iter().map(|target| target.topic()).collect();
    let subscription = state.subscribers.subscribe(me.id, &topics)?;
    for topic in &topics {
        state.interest.want(topic.scope()).await;
    }
    // Subscribed first, heads second: an event committed in between arrives live
    // (and one at or before the head is dropped there).
    let streams = specs.cursored();
    let mut cursors = Vec::with_capacity(streams.len());
    for (stream, since) in streams.iter().zip(&specs.since) {
        cursors.push(match since {
            Some(since) => *since,
            None => state.store.stream_head(*stream).await?,
        });
    }
    let mut starts = cursors.iter();
    let ready: Vec<_> = specs
        .targets
        .iter()
        .map(|target| match target {
            Target::Stream(_) => json!({"stream": target.to_string(), "cursor": starts.next()}),
            Target::Watch(_) => json!({"stream": target.to_string(), "cursor": null}),
        })
        .collect();
    let mut first = Frames::default();
    first.retry(RETRY_MS);
    first.event("ready", &event_id(&cursors), &json!({"streams": ready}).to_string());
    let connection =
        Connection::new(state.store.clone(), subscription, streams, cursors, me.expires_at, settings.sse_heartbeat());
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no")),
    ];
    Ok((headers, connection.into_body(first.into_bytes())).into_response())
}
