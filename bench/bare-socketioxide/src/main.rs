//! The floor of the benchmark: the subset of coursecast's contract (docs/PROTOCOL.md)
//! that the load generator uses, on bare axum + socketioxide with its default
//! settings and nothing else: no storage, no presence, no authorisation, no limits.
//! Whatever coursecast costs above this is coursecast's own; no socketioxide server
//! can do the same work for less. The allocator is coursecast's (jemalloc), so the
//! memory comparison measures the application, not the allocator.
//!
//!   PORT=4200 bare-socketioxide
//!
//! Contract subset:
//!   /chat namespace; a handshake without a string `auth.token` gets `connect_error`
//!     `TOKEN_MISSING` (the token is not verified)
//!   join {courseId, since?}  -> {ok, courseId, cursor, missed, hasMore, online: [], onlineCount: 0}
//!   leave {courseId}         -> {ok}
//!   send {courseId, content, clientMsgId} -> {ok, event}; the room gets `message` event
//!   GET /healthz
//!
//! Events are kept in memory (the last `KEEP` per course) only so that `join {since}`
//! can replay a gap, as the generator's loss accounting asks; nothing is stored.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use axum::{Router, routing::get};
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::{
    SocketIo,
    extract::{AckSender, Data, SocketRef, State, TryData},
    handler::ConnectHandler,
};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Events replayable per course.
const KEEP: usize = 100_000;
/// Largest replay page, as coursecast's.
const MAX_PAGE: usize = 1000;

#[derive(Default)]
struct Course {
    head: i64,
    /// The last events, `events[i].seq == head - len + 1 + i`.
    events: VecDeque<Value>,
}

#[derive(Clone, Default)]
struct Courses(Arc<Mutex<HashMap<String, Course>>>);

impl Courses {
    fn with<T>(&self, id: &str, f: impl FnOnce(&mut Course) -> T) -> T {
        let mut courses = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(courses.entry(id.to_owned()).or_default())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Join {
    course_id: String,
    since: Option<i64>,
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Leave {
    course_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Send {
    course_id: String,
    content: String,
}

fn ack(ack: AckSender, body: &Value) {
    // The floor does what bare socketioxide does with an answer a full buffer refuses.
    let _ = ack.send(body);
}

async fn join(socket: SocketRef, Data(join): Data<Join>, State(courses): State<Courses>, answer: AckSender) {
    socket.join(format!("course:{}", join.course_id));
    let limit = join.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let (cursor, missed, has_more) = courses.with(&join.course_id, |course| match join.since {
        None => (course.head, Vec::new(), false),
        Some(since) => {
            let first = course.head - course.events.len() as i64 + 1;
            let skip = usize::try_from(since + 1 - first).unwrap_or(0);
            let missed: Vec<Value> = course.events.iter().skip(skip).take(limit).cloned().collect();
            let cursor = missed.last().and_then(|e| e["seq"].as_i64()).unwrap_or(since);
            (cursor, missed, cursor < course.head)
        }
    });
    let body = json!({"ok": true, "courseId": join.course_id, "cursor": cursor, "missed": missed,
                      "hasMore": has_more, "online": [], "onlineCount": 0});
    ack(answer, &body);
}

async fn leave(socket: SocketRef, Data(leave): Data<Leave>, answer: AckSender) {
    socket.leave(format!("course:{}", leave.course_id));
    ack(answer, &json!({"ok": true}));
}

async fn send(socket: SocketRef, Data(send): Data<Send>, State(courses): State<Courses>, answer: AckSender) {
    let event = courses.with(&send.course_id, |course| {
        course.head += 1;
        let event = json!({
            "type": "message_sent",
            "seq": course.head,
            "messageId": uuid::Uuid::new_v4(),
            "courseId": send.course_id,
            "senderId": socket.id.to_string(),
            "content": send.content.trim(),
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        course.events.push_back(event.clone());
        if course.events.len() > KEEP {
            course.events.pop_front();
        }
        event
    });
    let _ = socket.within(format!("course:{}", send.course_id)).emit("message", &event).await;
    ack(answer, &json!({"ok": true, "event": event}));
}

/// The handshake check, which also registers the handlers: socketioxide sends CONNECT
/// right after this middleware and runs the connect handler in a task of its own, so
/// a `join` sent at once would find no handler yet and be dropped without an answer.
async fn admit(socket: SocketRef, TryData(auth): TryData<Value>) -> Result<(), &'static str> {
    match auth {
        Ok(auth) if auth["token"].as_str().is_some_and(|t| !t.is_empty()) => {
            socket.on("join", join);
            socket.on("leave", leave);
            socket.on("send", send);
            Ok(())
        }
        _ => Err("TOKEN_MISSING"),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let (layer, io) = SocketIo::builder().with_state(Courses::default()).build_layer();
    io.ns("/chat", (async |_: SocketRef| {}).with(admit));
    let app = Router::new().route("/healthz", get(|| async { "ok" })).layer(layer);
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(4200);
    // coursecast's listen backlog (tokio's `bind` asks for 128), so that both servers
    // meet a burst of handshakes with the same kernel queue.
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(([0, 0, 0, 0], port).into())?;
    let listener = socket.listen(4096)?;
    axum::serve(listener, app).await
}
