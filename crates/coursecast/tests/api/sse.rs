//! Server-Sent Events (`GET /api/realtime/stream`, PROTOCOL.md section 2): several
//! streams on one response, ids, backlog and live without loss or repeats, resume
//! with `Last-Event-ID`, refusals, bounds, expiry, logout, slow readers, heartbeats,
//! and a professor's watch.

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    cluster::two_nodes,
    helpers::{QUIET, TestApp, TestUser, WAIT, eventually},
    process::ServerProcess,
    sse_reader::{Frame, Item, Parser, SseReader, raw_stream, read_chunked_to_end},
};

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn send(app: &TestApp, course: Uuid, who: &TestUser, content: &str) -> Value {
    let path = format!("/api/realtime/messages/{course}");
    let sent = app
        .post(&path, Some(&who.token), json!({"content": content, "clientMsgId": Uuid::new_v4().simple().to_string()}))
        .await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    sent.body["event"].clone()
}

/// Reads `message` events (of the first spec) until `seq` `last`; returns their data.
async fn read_messages_until(reader: &mut SseReader, last: i64) -> Vec<Value> {
    let mut seen = Vec::new();
    while seen.last().is_none_or(|e: &Value| e["seq"] != last) {
        let frame = reader.event(WAIT).await;
        assert_eq!(frame.event, "message", "{frame:?}");
        let event = frame.json();
        let position = frame.id.as_deref().and_then(|id| id.split('.').next()).map(str::to_owned);
        assert_eq!(position, Some(event["seq"].to_string()), "the id's first position is the message's seq");
        seen.push(event);
    }
    seen
}

/// A professor, a student, and the professor's course with the student in it.
async fn class(app: &TestApp) -> (TestUser, TestUser, Uuid) {
    let professor = app.professor().await;
    let ann = app.student("Ann").await;
    let course = app.course_with(&professor, &[&ann]).await;
    (professor, ann, course)
}

fn seqs(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["seq"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn events_of_several_streams_arrive_in_order_on_one_connection_with_their_ids() {
    let app = TestApp::spawn().await;
    let (professor, ann, course) = class(&app).await;
    send(&app, course, &ann, "before").await;

    let streams = format!("messages:{course},notifications:{u},progress:{u}", u = ann.id);
    let response = app.stream_request(&format!("streams={streams}"), Some(&ann.token), None).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    let mut reader = SseReader::new(response);
    let ready = reader.ready(WAIT).await;
    assert_eq!(ready.id.as_deref(), Some("1.0.0"), "no SINCE: every stream starts at its head");
    assert_eq!(
        ready.json(),
        json!({"streams": [
            {"stream": format!("messages:{course}"), "cursor": 1},
            {"stream": format!("notifications:{}", ann.id), "cursor": 0},
            {"stream": format!("progress:{}", ann.id), "cursor": 0},
        ]})
    );

    let message = send(&app, course, &ann, "hello").await;
    let notified = app
        .post(
            "/api/notifications",
            Some(&professor.token),
            json!({"userId": ann.id, "notificationType": "ASSIGNMENT_DUE", "title": "Lab", "message": "Friday", "priority": "HIGH"}),
        )
        .await;
    assert_eq!(notified.status, 201, "{}", notified.body);
    let started = app.post("/api/analyses", Some(&ann.token), json!({"courseId": course, "input": {}})).await;
    let analysis = started.body["analysisId"].as_str().unwrap();
    let progress = app
        .post(&format!("/api/analyses/{analysis}/progress"), Some(&app.service_token()), json!({"progress": 50}))
        .await;
    assert_eq!(progress.status, 200, "{}", progress.body);

    // Each stream is ordered by its `seq`; streams are not ordered against each other
    // (an acknowledged write's live copy may still be on its way when the next stream's
    // event goes out), so each event is checked at its own position of the id.
    let mut expected = vec![
        ("message", 0, "2", message),
        ("notification", 1, "1", notified.body["events"][0].clone()),
        ("progress", 2, "1", progress.body["event"].clone()),
    ];
    let mut last_id = String::new();
    while !expected.is_empty() {
        let frame = reader.event(WAIT).await;
        let at = expected.iter().position(|(name, ..)| *name == frame.event).expect("an expected event, once");
        let (_, position, cursor, payload) = expected.remove(at);
        let id = frame.id.clone().expect("an id");
        assert_eq!(id.split('.').nth(position), Some(cursor), "{frame:?}");
        assert_eq!(frame.json(), payload, "the payload the socket emits");
        assert!(!frame.data.contains('\n'), "one line of JSON");
        last_id = id;
    }
    assert_eq!(last_id, "2.1.1", "the last id carries every stream's cursor");
}

#[tokio::test]
async fn backlog_and_live_events_sent_during_the_connect_arrive_once_each() {
    let app = TestApp::spawn().await;
    let (_, ann, course) = class(&app).await;
    for i in 0..30 {
        send(&app, course, &ann, &format!("old {i}")).await;
    }
    // 60 more go out while the stream connects, reads its backlog and turns live.
    let sender = {
        let (base, token) = (app.base.clone(), ann.token.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0..60 {
                let sent = client
                    .post(format!("{base}/api/realtime/messages/{course}"))
                    .bearer_auth(&token)
                    .json(&json!({"content": format!("new {i}"), "clientMsgId": format!("n{i}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(sent.status(), 201);
            }
        })
    };
    let mut reader = app.open_stream(&format!("messages:{course}:0"), &ann.token, None).await;
    assert_eq!(reader.ready(WAIT).await.id.as_deref(), Some("0"));
    let seen = read_messages_until(&mut reader, 90).await;
    sender.await.unwrap();
    assert_eq!(seqs(&seen), (1..=90).collect::<Vec<_>>(), "every event once, in order");
    assert_eq!(reader.next_item(QUIET).await, None, "nothing repeated after the last");
}

#[tokio::test]
async fn last_event_id_resumes_exactly_where_the_client_stopped() {
    let app = TestApp::spawn().await;
    let (professor, ann, course) = class(&app).await;
    let streams = format!("messages:{course}:0,watch:{course},notifications:{}:0", professor.id);
    let mut first = app.open_stream(&streams, &professor.token, None).await;
    assert_eq!(first.ready(WAIT).await.id.as_deref(), Some("0.0"), "watch holds no position");
    for i in 0..5 {
        send(&app, course, &ann, &format!("m{i}")).await;
    }
    read_messages_until_id(&mut first, "3.0").await;
    let last_id = first.last_id.clone();
    drop(first);
    for i in 5..8 {
        send(&app, course, &ann, &format!("m{i}")).await;
    }
    // Last-Event-ID wins over the SINCE in the specs (0 here).
    let mut resumed = app.open_stream(&streams, &professor.token, Some(&last_id)).await;
    let ready = resumed.ready(WAIT).await;
    assert_eq!(ready.id.as_deref(), Some("3.0"));
    assert_eq!(ready.json()["streams"][1], json!({"stream": format!("watch:{course}"), "cursor": null}));
    let rest = read_messages_until(&mut resumed, 8).await;
    assert_eq!(seqs(&rest), [4, 5, 6, 7, 8]);
    assert_eq!(resumed.next_item(QUIET).await, None);
}

async fn read_messages_until_id(reader: &mut SseReader, id: &str) {
    while reader.event(WAIT).await.id.as_deref() != Some(id) {}
}

#[tokio::test]
async fn malformed_unauthorised_and_unauthenticated_requests_are_refused_before_the_stream() {
    let app = TestApp::spawn().await;
    let professor = app.professor().await;
    let (ann, out) = (app.student("Ann").await, app.student("Out").await);
    let course = app.course_with(&professor, &[&ann]).await;
    let token = Some(ann.token.as_str());

    let malformed = [
        String::new(),
        "streams=".into(),
        format!("streams=chat:{course}"),
        "streams=messages:nope".into(),
        format!("streams=messages:{course}:-3"),
        format!("streams=messages:{course},messages:{course}:2"),
        format!("streams=watch:{course}:1"),
        format!("streams=messages:{course}&since=1"),
        format!("streams={}", (0..33).map(|_| format!("messages:{}", Uuid::new_v4())).collect::<Vec<_>>().join(",")),
    ];
    for query in malformed {
        app.stream_refusal(&query, token, None).await.assert_error(400, "VALIDATION_FAILED");
    }
    let two = format!("streams=messages:{course},watch:{course},notifications:{}", ann.id);
    for bad_id in ["1", "1.2.3", "1.x", "-1.0", ""] {
        app.stream_refusal(&two, Some(&professor.token), Some(bad_id)).await.assert_error(400, "VALIDATION_FAILED");
    }

    let mine = format!("streams=messages:{course}");
    app.stream_refusal(&mine, None, None).await.assert_error(401, "TOKEN_MISSING");
    app.stream_refusal(&mine, Some("junk"), None).await.assert_error(401, "TOKEN_INVALID");
    let expired = app.sign(json!({"sub": ann.id, "role": "STUDENT", "iat": now() - 100, "exp": now() - 60}));
    app.stream_refusal(&mine, Some(&expired), None).await.assert_error(401, "TOKEN_EXPIRED");
    app.stream_refusal(&mine, Some(&app.service_token()), None).await.assert_error(403, "FORBIDDEN");
    app.stream_refusal(&mine, Some(&out.token), None).await.assert_error(403, "FORBIDDEN");
    app.stream_refusal(&format!("streams=messages:{}", Uuid::new_v4()), token, None)
        .await
        .assert_error(404, "NOT_FOUND");
    app.stream_refusal(&format!("streams=notifications:{}", out.id), token, None).await.assert_error(403, "FORBIDDEN");
    app.stream_refusal(&format!("streams=progress:{}", out.id), token, None).await.assert_error(403, "FORBIDDEN");
    app.stream_refusal(&format!("streams=watch:{course}"), token, None).await.assert_error(403, "FORBIDDEN");

    // A browser's EventSource puts the token in the query.
    let by_query = app.stream_request(&format!("{mine}&access_token={}", ann.token), None, None).await;
    assert_eq!(by_query.status(), 200);
    let mut reader = SseReader::new(by_query);
    assert_eq!(reader.ready(WAIT).await.id.as_deref(), Some("0"));
    app.stream_refusal(&format!("{mine}&access_token=junk"), None, None).await.assert_error(401, "TOKEN_INVALID");
}

#[tokio::test]
async fn the_endpoint_is_off_with_the_fallback() {
    let app = TestApp::spawn_with(|s| s.enable_fallback = false).await;
    let ann = app.student("Ann").await;
    app.stream_refusal(&format!("streams=notifications:{}", ann.id), Some(&ann.token), None)
        .await
        .assert_error(503, "UNAVAILABLE");
}

#[tokio::test]
async fn a_user_holds_at_most_sse_max_per_user_streams() {
    // A client that goes away is noticed at the next write: a heartbeat at most.
    let app = TestApp::spawn_with(|s| {
        s.sse_max_per_user = 2;
        s.sse_heartbeat_secs = 1;
    })
    .await;
    let ann = app.student("Ann").await;
    let streams = format!("notifications:{}", ann.id);
    let mut first = app.open_stream(&streams, &ann.token, None).await;
    first.ready(WAIT).await;
    let mut second = app.open_stream(&streams, &ann.token, None).await;
    second.ready(WAIT).await;
    let refused = app.stream_refusal(&format!("streams={streams}"), Some(&ann.token), None).await;
    refused.assert_error(429, "RATE_LIMITED");
    assert!(refused.headers.contains_key("retry-after"));
    let ben = app.student("Ben").await;
    let mut other = app.open_stream(&format!("notifications:{}", ben.id), &ben.token, None).await;
    other.ready(WAIT).await;

    drop(first);
    let open = app.state.subscribers.clone();
    eventually("the closed stream to be released", WAIT, || {
        let open = open.clone();
        async move { open.open() == 2 }
    })
    .await;
    app.open_stream(&streams, &ann.token, None).await.ready(WAIT).await;
}

#[tokio::test]
async fn an_expiring_token_is_warned_then_the_stream_ends_with_token_expired() {
    let app = TestApp::spawn().await;
    let ann = app.student("Ann").await;
    let short = app.sign(json!({"sub": ann.id, "role": "STUDENT", "iat": now(), "exp": now() + 3}));
    let mut reader = app.open_stream(&format!("notifications:{}", ann.id), &short, None).await;
    reader.ready(WAIT).await;
    let warning = reader.event(WAIT).await;
    assert_eq!(warning.event, "session:expiring", "under 60 s left: warned at once");
    assert!(warning.json()["expiresAt"].as_str().unwrap().ends_with('Z'));
    let end = reader.event(WAIT).await;
    assert_eq!(end.event, "end");
    assert_eq!(end.json()["code"], "TOKEN_EXPIRED");
    assert!(end.json()["message"].is_string());
    assert!(reader.closed(WAIT).await, "closed after end");
}

#[tokio::test]
async fn logout_ends_the_users_streams_with_token_invalid() {
    let app = TestApp::spawn().await;
    let (ann, ben) = (app.student("Ann").await, app.student("Ben").await);
    let mut mine = app.open_stream(&format!("notifications:{}", ann.id), &ann.token, None).await;
    mine.ready(WAIT).await;
    let mut other = app.open_stream(&format!("notifications:{}", ben.id), &ben.token, None).await;
    other.ready(WAIT).await;
    assert_eq!(app.post("/api/auth/logout", Some(&ann.token), json!({})).await.status, 200);
    let end = mine.event(WAIT).await;
    assert_eq!((end.event.as_str(), end.json()["code"].as_str()), ("end", Some("TOKEN_INVALID")));
    assert!(mine.closed(WAIT).await);
    assert!(!other.closed(QUIET).await, "another user's stream stays open");
}

#[tokio::test]
async fn an_idle_stream_gets_heartbeats() {
    let app = TestApp::spawn_with(|s| s.sse_heartbeat_secs = 1).await;
    let ann = app.student("Ann").await;
    let mut reader = app.open_stream(&format!("notifications:{}", ann.id), &ann.token, None).await;
    reader.ready(WAIT).await;
    for _ in 0..2 {
        assert_eq!(reader.next_item(Duration::from_secs(3)).await, Some(Item::Comment("ping".into())));
    }
}

#[tokio::test]
async fn a_watch_delivers_a_courses_progress_to_its_professor() {
    let app = TestApp::spawn().await;
    let (professor, ann, course) = class(&app).await;
    let other_course = app.course_with(&professor, &[&ann]).await;
    let mut reader = app.open_stream(&format!("watch:{course},messages:{course}"), &professor.token, None).await;
    assert_eq!(reader.ready(WAIT).await.id.as_deref(), Some("0"));
    let service = app.service_token();
    let progress_in = |course: Uuid| {
        let (app, ann, service) = (&app, &ann, &service);
        async move {
            let started = app.post("/api/analyses", Some(&ann.token), json!({"courseId": course, "input": {}})).await;
            let analysis = started.body["analysisId"].as_str().unwrap().to_owned();
            let path = format!("/api/analyses/{analysis}/progress");
            app.post(&path, Some(service), json!({"progress": 30})).await.body["event"].clone()
        }
    };
    progress_in(other_course).await;
    let watched = progress_in(course).await;
    let frame = reader.event(WAIT).await;
    assert_eq!((frame.event.as_str(), frame.id.as_deref()), ("progress", Some("0")), "watch moves no cursor");
    assert_eq!(frame.json(), watched);
    send(&app, course, &ann, "after").await;
    let frame = reader.event(WAIT).await;
    assert_eq!((frame.event.as_str(), frame.id.as_deref()), ("message", Some("1")));
}

#[tokio::test]
async fn a_reader_that_falls_behind_is_cut_and_resumes_with_nothing_lost() {
    let app = TestApp::spawn_with(|s| {
        s.sse_buffer_events = 4;
        s.message_max_chars = 60_000;
        s.max_body_bytes = 256 * 1024;
    })
    .await;
    let (_, ann, course) = class(&app).await;
    // A reader with a 4 KiB receive window that reads nothing: once the kernel's
    // buffers and the server's few pending writes are full, live events queue up.
    let stalled = raw_stream(&app, &format!("messages:{course}:0"), &ann.token, Some(4096)).await;
    let open = app.state.subscribers.clone();
    eventually("the stream to open", WAIT, || {
        let open = open.clone();
        async move { open.open() == 1 }
    })
    .await;
    // 300 events of 50 KB: 15 MB, far more than any socket buffer holds.
    const SENT: i64 = 300;
    let big = "x".repeat(50_000);
    for _ in 0..SENT {
        send(&app, course, &ann, &big).await;
    }

    let body = read_chunked_to_end(stalled, Duration::from_secs(60)).await;
    let items = Parser::default().feed(&body);
    let frames: Vec<Frame> = items
        .into_iter()
        .filter_map(|item| match item {
            Item::Event(frame) => Some(frame),
            _ => None,
        })
        .collect();
    let (end, events) = frames.split_last().expect("frames");
    assert_eq!(end.event, "end", "the stream ends with end");
    assert_eq!(end.json()["code"], "UNAVAILABLE");
    assert!(end.json()["message"].as_str().unwrap().contains("too slow"), "{}", end.data);
    let delivered: Vec<String> = events[1..].iter().map(|f| f.id.clone().unwrap()).collect();
    let last = delivered.len() as i64;
    assert_eq!(delivered, (1..=last).map(|seq| seq.to_string()).collect::<Vec<_>>(), "in order, none skipped");
    assert!(last < SENT, "cut before the end ({last} of {SENT} delivered)");

    let mut resumed = app.open_stream(&format!("messages:{course}:0"), &ann.token, Some(&last.to_string())).await;
    resumed.ready(WAIT).await;
    let rest = read_messages_until(&mut resumed, SENT).await;
    assert_eq!(seqs(&rest), (last + 1..=SENT).collect::<Vec<_>>(), "the rest exactly once");
}

#[tokio::test]
async fn shutdown_ends_every_stream_with_unavailable() {
    let mut app = TestApp::spawn().await;
    let ann = app.student("Ann").await;
    let mut reader = app.open_stream(&format!("notifications:{}", ann.id), &ann.token, None).await;
    reader.ready(WAIT).await;
    let stopping = tokio::time::Instant::now();
    app.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(5), "an open stream does not hold the shutdown up");
    let end = reader.event(WAIT).await;
    assert_eq!((end.event.as_str(), end.json()["code"].as_str()), ("end", Some("UNAVAILABLE")));
    assert!(reader.closed(WAIT).await);
}

/// Events committed on one node reach a stream on another, and a logout on one node
/// ends the user's streams on the other.
#[tokio::test]
async fn events_and_logouts_cross_nodes() {
    let Some((a, b)) = two_nodes().await else { return };
    let (_, ann, course) = class(&a).await;
    let mut on_b = b.open_stream(&format!("messages:{course},notifications:{}", ann.id), &ann.token, None).await;
    assert_eq!(on_b.ready(WAIT).await.id.as_deref(), Some("0.0"));
    let sent = send(&a, course, &ann, "from node a").await;
    let frame = on_b.event(WAIT).await;
    assert_eq!((frame.event.as_str(), frame.id.as_deref()), ("message", Some("1.0")));
    assert_eq!(frame.json(), sent);
    assert_eq!(a.post("/api/auth/logout", Some(&ann.token), json!({})).await.status, 200);
    let end = on_b.event(WAIT).await;
    assert_eq!((end.event.as_str(), end.json()["code"].as_str()), ("end", Some("TOKEN_INVALID")));
}

/// A browser's `EventSource` sends its token in the query: the log, as the binary
/// writes it, has the stream's path and never the query string.
#[tokio::test]
async fn the_access_log_never_records_the_token_in_the_query() {
    let server = ServerProcess::start(None, &[]).await;
    let seed = server.seed(1);
    let (user, token) = (seed["users"][0]["id"].as_str().unwrap(), seed["users"][0]["token"].as_str().unwrap());
    let url = format!("{}/api/realtime/stream?streams=notifications:{user}&access_token={token}", server.base);
    let mut reader = SseReader::new(reqwest::get(&url).await.expect("request"));
    reader.ready(WAIT).await;
    let refused = reqwest::get(format!("{url}x")).await.expect("request");
    assert_eq!(refused.status(), 401);
    eventually("both requests to be logged", WAIT, || {
        let lines = server.lines();
        async move { lines.iter().filter(|l| l.contains("/api/realtime/stream")).count() >= 2 }
    })
    .await;
    let lines = server.lines();
    assert!(lines.iter().all(|l| !l.contains(token) && !l.contains("access_token")), "{lines:#?}");
}

#[tokio::test]
async fn a_full_node_refuses_streams_with_unavailable() {
    let app = TestApp::spawn_with(|s| s.sse_max_connections = 1).await;
    let (ann, ben) = (app.student("Ann").await, app.student("Ben").await);
    let mut held = app.open_stream(&format!("notifications:{}", ann.id), &ann.token, None).await;
    held.ready(WAIT).await;
    app.stream_refusal(&format!("streams=notifications:{}", ben.id), Some(&ben.token), None)
        .await
        .assert_error(503, "UNAVAILABLE");
}

/// A page's own SSE client (fetch with headers) resumes across origins: the
/// preflight allows `Authorization` and `Last-Event-ID`.
#[tokio::test]
async fn a_listed_origin_may_send_last_event_id() {
    let app = TestApp::spawn().await;
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, format!("{}/api/realtime/stream", app.base))
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization,last-event-id")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.headers()["access-control-allow-origin"], "http://localhost:5173");
    let allowed = preflight.headers()["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(allowed.contains("last-event-id") && allowed.contains("authorization"), "{allowed}");
}
