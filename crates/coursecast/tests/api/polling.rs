//! The HTTP fallback: same streams, cursors, validation and authorisation as the
//! sockets; long polling; parity; restarts; races.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{QUIET, TestApp, TestUser, WAIT, ack_code, eventually};

struct Course {
    id: Uuid,
    professor: TestUser,
    ann: TestUser,
    ben: TestUser,
    outsider: TestUser,
}

async fn course(app: &TestApp) -> Course {
    let professor = app.professor().await;
    let (ann, ben, outsider) = (app.student("Ann").await, app.student("Ben").await, app.student("Out").await);
    let id = app.course_with(&professor, &[&ann, &ben]).await;
    Course { id, professor, ann, ben, outsider }
}

fn events(page: &Value) -> Vec<Value> {
    page["events"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn http_sends_reach_sockets_and_polls_return_the_same_events() {
    let app = TestApp::spawn().await;
    let c = course(&app).await;
    let mut socket = app.socket("/chat", &c.ben.token).await;
    socket.call("join", json!({"courseId": c.id})).await.unwrap();

    let path = format!("/api/realtime/messages/{}", c.id);
    let sent = app.post(&path, Some(&c.ann.token), json!({"content": " over http ", "clientMsgId": "h1"})).await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    assert_eq!(sent.body["ok"], true);
    assert_eq!(sent.body["event"]["content"], "over http");
    let live = socket.wait_for("message", WAIT).await.unwrap();
    assert_eq!(live, sent.body["event"]);

    let page = app.get(&path, Some(&c.ben.token)).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.body, json!({"events": [live], "cursor": 1, "hasMore": false}));
    let empty = app.get(&format!("{path}?since=1"), Some(&c.ben.token)).await;
    assert_eq!(empty.body, json!({"events": [], "cursor": 1, "hasMore": false}));
}

/// One scripted scenario played over sockets and over HTTP: the stored sequences
/// must match event for event (ids and times aside), and each door must see its
/// stream identically through the other.
#[tokio::test]
async fn the_same_script_gives_the_same_events_on_both_doors() {
    let app = TestApp::spawn().await;
    let c = course(&app).await;
    let other_course = app.course_with(&c.professor, &[&c.ann, &c.ben]).await;

    let a = app.socket("/chat", &c.ann.token).await;
    let p = app.socket("/chat", &c.professor.token).await;
    let mut watcher = app.socket("/chat", &c.ben.token).await;
    watcher.call("join", json!({"courseId": c.id})).await.unwrap();

    // Over sockets, in course c.id.
    let s1 = a.call("send", json!({"courseId": c.id, "content": "first", "clientMsgId": "s1"})).await.unwrap();
    a.call("send", json!({"courseId": c.id, "content": "first again", "clientMsgId": "s1"})).await.unwrap();
    let id1 = s1["event"]["messageId"].clone();
    a.call("edit", json!({"courseId": c.id, "messageId": id1, "content": "first, edited"})).await.unwrap();
    let s2 = a
        .call("send", json!({"courseId": c.id, "content": "second", "channelId": "q", "clientMsgId": "s2"}))
        .await
        .unwrap();
    p.call("delete", json!({"courseId": c.id, "messageId": s2["event"]["messageId"]})).await.unwrap();
    let refused = a.call("send", json!({"courseId": c.id, "content": "", "clientMsgId": "s3"})).await.unwrap();

    // Over HTTP, in other_course.
    let path = format!("/api/realtime/messages/{other_course}");
    let h1 = app.post(&path, Some(&c.ann.token), json!({"content": "first", "clientMsgId": "s1"})).await;
    app.post(&path, Some(&c.ann.token), json!({"content": "first again", "clientMsgId": "s1"})).await;
    let hid1 = h1.body["event"]["messageId"].as_str().unwrap().to_owned();
    app.patch(&format!("{path}/{hid1}"), Some(&c.ann.token), json!({"content": "first, edited"})).await;
    let h2 =
        app.post(&path, Some(&c.ann.token), json!({"content": "second", "channelId": "q", "clientMsgId": "s2"})).await;
    let hid2 = h2.body["event"]["messageId"].as_str().unwrap().to_owned();
    app.delete(&format!("{path}/{hid2}"), Some(&c.professor.token)).await;
    let http_refused = app.post(&path, Some(&c.ann.token), json!({"content": "", "clientMsgId": "s3"})).await;
    assert_eq!(refused["error"], http_refused.body["error"], "the same refusal on both doors");

    let normalise = |events: Vec<Value>| -> Vec<Value> {
        events
            .into_iter()
            .map(|mut e| {
                let obj = e.as_object_mut().unwrap();
                for volatile in ["messageId", "courseId", "timestamp"] {
                    obj.remove(volatile);
                }
                e
            })
            .collect()
    };
    let by_socket = app.get(&format!("/api/realtime/messages/{}", c.id), Some(&c.ben.token)).await;
    let by_http = app.get(&path, Some(&c.ben.token)).await;
    assert_eq!(events(&by_socket.body).len(), 4);
    assert_eq!(normalise(events(&by_socket.body)), normalise(events(&by_http.body)));

    // What the socket subscriber saw live is exactly what polling returns.
    let mut live = Vec::new();
    while let Some(event) = watcher.wait_for("message", QUIET).await {
        live.push(event);
    }
    assert_eq!(live, events(&by_socket.body));
    // And a socket replay of the HTTP-written stream equals its polling page.
    let replay = watcher.call("join", json!({"courseId": other_course, "since": 0})).await.unwrap();
    assert_eq!(replay["missed"], by_http.body["events"]);
}

#[tokio::test]
async fn a_long_poll_returns_as_soon_as_an_event_is_committed() {
    let app = TestApp::spawn().await;
    let c = course(&app).await;
    let path = format!("/api/realtime/messages/{}", c.id);
    let waiting = {
        let (client, url, token) =
            (app.client.clone(), format!("{}{path}?since=0&wait=10", app.base), c.ben.token.clone());
        tokio::spawn(async move {
            let body: Value = client.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap();
            (Instant::now(), body)
        })
    };
    eventually("the long poll to be waiting", WAIT, || async { app.state.waiters.waiting() > 0 }).await;
    assert_eq!(app.state.waiters.waiting(), 1);
    let sent_at = Instant::now();
    app.post(&path, Some(&c.ann.token), json!({"content": "wake up", "clientMsgId": "w"})).await;
    let (answered_at, body) = waiting.await.unwrap();
    let delay = answered_at.duration_since(sent_at);
    assert_eq!(events(&body)[0]["content"], "wake up");
    assert!(delay < Duration::from_secs(1), "answered {delay:?} after the send");
    assert_eq!(app.state.waiters.waiting(), 0);

    let started = Instant::now();
    let idle = app.get(&format!("{path}?since=1&wait=0.5"), Some(&c.ben.token)).await;
    assert_eq!(idle.body, json!({"events": [], "cursor": 1, "hasMore": false}));
    assert!(started.elapsed() >= Duration::from_millis(450), "returned before the wait ended");
}

#[tokio::test]
async fn a_poll_whose_cursor_is_in_memory_needs_no_query() {
    let app = TestApp::spawn().await;
    let c = course(&app).await;
    let path = format!("/api/realtime/messages/{}", c.id);
    let poll = |since: i64| {
        let (client, url, token) =
            (app.client.clone(), format!("{}{path}?since={since}&wait=10", app.base), c.ben.token.clone());
        tokio::spawn(
            async move { client.get(url).bearer_auth(token).send().await.unwrap().json::<Value>().await.unwrap() },
        )
    };

    // The first poll reads storage (nothing is known of the stream), then waits. It
    // counts as waiting from the moment it takes its permit, before it subscribes to
    // the stream and reads: wait for the read too, or "one" could slip in between.
    let first = poll(0);
    eventually("the first poll to have read storage and to be waiting", WAIT, || async {
        app.state.waiters.waiting() > 0 && app.state.waiters.storage_reads() > 0
    })
    .await;
    assert_eq!(app.state.waiters.storage_reads(), 1);
    app.post(&path, Some(&c.ann.token), json!({"content": "one", "clientMsgId": "m1"})).await;
    let first = first.await.unwrap();
    assert_eq!((events(&first)[0]["content"].as_str(), first["cursor"].as_i64()), (Some("one"), Some(1)));

    // Its cursor is the event that woke it: the next polls wait and answer from memory.
    let second = poll(1);
    eventually("the second poll to be waiting", WAIT, || async { app.state.waiters.waiting() > 0 }).await;
    app.post(&path, Some(&c.ann.token), json!({"content": "two", "clientMsgId": "m2"})).await;
    let second = second.await.unwrap();
    assert_eq!((events(&second)[0]["content"].as_str(), second["cursor"].as_i64()), (Some("two"), Some(2)));
    let behind = app.get(&format!("{path}?since=1&wait=10"), Some(&c.ben.token)).await;
    assert_eq!(behind.body["cursor"], 2, "an event already in memory is answered at once");
    assert_eq!(app.state.waiters.storage_reads(), 1, "no query after the first poll");

    // A cursor the tail does not hold still goes to storage.
    let all = app.get(&format!("{path}?since=0&wait=10"), Some(&c.ben.token)).await;
    assert_eq!(events(&all.body).len(), 2);
    assert_eq!(app.state.waiters.storage_reads(), 2);
}

#[tokio::test]
async fn waiters_are_bounded_and_released_at_shutdown() {
    let mut app = TestApp::spawn_with(|s| s.long_poll_max_waiters = 1).await;
    let c = course(&app).await;
    let url = format!("{}/api/realtime/messages/{}?wait=30", app.base, c.id);
    let first = {
        let (client, url, token) = (app.client.clone(), url.clone(), c.ben.token.clone());
        tokio::spawn(
            async move { client.get(url).bearer_auth(token).send().await.unwrap().json::<Value>().await.unwrap() },
        )
    };
    eventually("the first poll to hold the only waiter slot", WAIT, || async { app.state.waiters.waiting() == 1 })
        .await;
    let second = app.get(&format!("/api/realtime/messages/{}?wait=30", c.id), Some(&c.ann.token)).await;
    second.assert_error(503, "UNAVAILABLE");

    let started = Instant::now();
    app.stop().await;
    let released = tokio::time::timeout(WAIT, first).await.expect("the waiter was not released").unwrap();
    assert_eq!(released, json!({"events": [], "cursor": 0, "hasMore": false}));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn paging_and_query_validation() {
    let app = TestApp::spawn().await;
    let c = course(&app).await;
    let path = format!("/api/realtime/messages/{}", c.id);
    assert_eq!(app.get(&path, Some(&c.ann.token)).await.body, json!({"events": [], "cursor": 0, "hasMore": false}));
    for i in 0..5 {
        app.post(&path, Some(&c.ann.token), json!({"content": format!("m{i}"), "clientMsgId": format!("k{i}")})).await;
    }
    let page = app.get(&format!("{path}?since=1&limit=2"), Some(&c.ann.token)).await;
    let seqs: Vec<i64> = events(&page.body).iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!((seqs, page.body["cursor"].clone(), page.body["hasMore"].clone()), (vec![2, 3], json!(3), json!(true)));
    let clamped = app.get(&format!("{path}?limit=0"), Some(&c.ann.token)).await;
    assert_eq!(events(&clamped.body).len(), 1, "limit is clamped to at least 1");
    let all = app.get(&format!("{path}?limit=5000"), Some(&c.ann.token)).await;
    assert_eq!(events(&all.body).len(), 5);
    let beyond = app.get(&format!("{path}?since=99"), Some(&c.ann.token)).await;
    assert_eq!(beyond.body["cursor"], 99);
    for bad in ["since=-1", "since=abc", "limit=x", "wait=soon", "cursor=3"] {
        app.get(&format!("{path}?{bad}"), Some(&c.ann.token)).await.assert_error(400, "VALIDATION_FAILED");
    }
}

#[tokio::test]
async fn every_fallback_endpoint_authorises_like_the_sockets() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let c = course(&app).await;
    let msgs = format!("/api/realtime/messages/{}", c.id);
    let (out, ann, ben, prof) = (&c.outsider.token, &c.ann.token, &c.ben.token, &c.professor.token);

    app.get(&msgs, None).await.assert_error(401, "TOKEN_MISSING");
    app.get(&msgs, Some(out)).await.assert_error(403, "FORBIDDEN");
    app.get(&msgs, Some(&app.service_token())).await.assert_error(403, "FORBIDDEN");
    app.post(&msgs, Some(out), json!({"content": "x", "clientMsgId": "k"})).await.assert_error(403, "FORBIDDEN");
    app.get(&format!("/api/realtime/messages/{}", Uuid::new_v4()), Some(ann)).await.assert_error(404, "NOT_FOUND");
    app.get("/api/realtime/messages/nope", Some(ann)).await.assert_error(400, "VALIDATION_FAILED");
    assert_eq!(app.get(&msgs, Some(&admin.token)).await.status, 200);

    let sent = app.post(&msgs, Some(ann), json!({"content": "x", "clientMsgId": "k"})).await;
    let id = sent.body["event"]["messageId"].as_str().unwrap().to_owned();
    app.patch(&format!("{msgs}/{id}"), Some(ben), json!({"content": "y"})).await.assert_error(403, "FORBIDDEN");
    app.patch(&format!("{msgs}/{id}"), Some(out), json!({"content": "y"})).await.assert_error(403, "FORBIDDEN");
    app.patch(&format!("{msgs}/{}", Uuid::new_v4()), Some(ann), json!({"content": "y"}))
        .await
        .assert_error(404, "NOT_FOUND");
    app.patch(&format!("{msgs}/{id}"), Some(ann), json!({"content": "y", "extra": 1}))
        .await
        .assert_error(400, "VALIDATION_FAILED");
    assert_eq!(app.patch(&format!("{msgs}/{id}"), Some(ann), json!({"content": "y"})).await.status, 200);
    app.delete(&format!("{msgs}/{id}"), Some(ben)).await.assert_error(403, "FORBIDDEN");
    assert_eq!(app.delete(&format!("{msgs}/{id}"), Some(prof)).await.body["event"]["type"], "message_deleted");

    let own = format!("/api/realtime/notifications/{}", c.ann.id);
    assert_eq!(app.get(&own, Some(ann)).await.status, 200);
    app.get(&own, Some(ben)).await.assert_error(403, "FORBIDDEN");
    app.get(&own, Some(prof)).await.assert_error(403, "FORBIDDEN");
    assert_eq!(app.get(&own, Some(&admin.token)).await.status, 200);
    let progress = format!("/api/realtime/progress/{}", c.ann.id);
    assert_eq!(app.get(&progress, Some(ann)).await.status, 200);
    app.get(&progress, Some(ben)).await.assert_error(403, "FORBIDDEN");
    assert_eq!(app.get(&progress, Some(&admin.token)).await.status, 200);
    app.post(&format!("/api/realtime/notifications/{}/read", Uuid::new_v4()), Some(ann), json!({}))
        .await
        .assert_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn concurrent_retries_of_one_client_msg_id_store_one_event() {
    let app = TestApp::spawn().await;
    let c = course(&app).await;
    let path = format!("/api/realtime/messages/{}", c.id);
    let socket = app.socket("/chat", &c.ann.token).await;
    let body = json!({"content": "exactly once", "clientMsgId": "race"});
    let by_http = join_all((0..10).map(|_| app.post(&path, Some(&c.ann.token), body.clone())));
    let by_socket = join_all(
        (0..10)
            .map(|_| socket.call("send", json!({"courseId": c.id, "content": "exactly once", "clientMsgId": "race"}))),
    );
    let (http, sockets) = tokio::join!(by_http, by_socket);
    let mut seen: Vec<Value> = http.into_iter().map(|r| r.body["event"].clone()).collect();
    seen.extend(sockets.into_iter().map(|a| a.unwrap()["event"].clone()));
    assert!(seen.iter().all(|e| *e == seen[0]), "{seen:?}");
    assert_eq!(events(&app.get(&path, Some(&c.ann.token)).await.body).len(), 1);
}

#[tokio::test]
async fn a_reconnecting_client_gets_what_it_missed_across_a_restart() {
    let app = TestApp::spawn().await;
    let c = course(&app).await;
    let mut reader = app.socket("/chat", &c.ben.token).await;
    reader.call("join", json!({"courseId": c.id})).await.unwrap();
    let writer = app.socket("/chat", &c.ann.token).await;
    for i in 1..=3 {
        writer
            .call("send", json!({"courseId": c.id, "content": format!("before {i}"), "clientMsgId": format!("b{i}")}))
            .await
            .unwrap();
    }
    let mut cursor = 0;
    while let Some(event) = reader.wait_for("message", QUIET).await {
        cursor = event["seq"].as_i64().unwrap();
    }
    assert_eq!(cursor, 3);
    reader.connection().close();
    for i in 4..=6 {
        writer
            .call("send", json!({"courseId": c.id, "content": format!("missed {i}"), "clientMsgId": format!("b{i}")}))
            .await
            .unwrap();
    }

    let app = app.restart().await;
    let writer = app.socket("/chat", &c.ann.token).await;
    writer.call("send", json!({"courseId": c.id, "content": "after restart", "clientMsgId": "b7"})).await.unwrap();
    let retry = writer.call("send", json!({"courseId": c.id, "content": "dup", "clientMsgId": "b4"})).await.unwrap();
    assert_eq!(retry["event"]["seq"], 4, "idempotency survives the restart");

    let reader = app.socket("/chat", &c.ben.token).await;
    let rejoined = reader.call("join", json!({"courseId": c.id, "since": cursor})).await.unwrap();
    let contents: Vec<&str> =
        rejoined["missed"].as_array().unwrap().iter().map(|e| e["content"].as_str().unwrap()).collect();
    assert_eq!(contents, ["missed 4", "missed 5", "missed 6", "after restart"]);
    let polled = app.get(&format!("/api/realtime/messages/{}?since={cursor}", c.id), Some(&c.ben.token)).await;
    assert_eq!(polled.body["events"], rejoined["missed"]);
    assert_eq!(rejoined["cursor"], 7);
}

#[tokio::test]
async fn the_fallback_can_be_turned_off() {
    let app = TestApp::spawn_with(|s| s.enable_fallback = false).await;
    let c = course(&app).await;
    let path = format!("/api/realtime/messages/{}", c.id);
    app.get(&path, Some(&c.ann.token)).await.assert_error(503, "UNAVAILABLE");
    app.post(&path, Some(&c.ann.token), json!({"content": "x", "clientMsgId": "k"}))
        .await
        .assert_error(503, "UNAVAILABLE");
    let status = app.get("/api/realtime/status", Some(&c.ann.token)).await;
    assert_eq!(status.body["fallback"]["enabled"], false);
    assert_eq!(app.post("/api/realtime/ping", None, json!({})).await.status, 200);
    let socket = app.socket("/chat", &c.ann.token).await;
    assert_eq!(
        ack_code(&socket.call("send", json!({"courseId": c.id, "content": "x", "clientMsgId": "k"})).await.unwrap()),
        "<ok>"
    );
}

#[tokio::test]
async fn ping_and_status_describe_the_server() {
    let app = TestApp::spawn_with(|s| s.polling_interval_ms = 1234).await;
    let user = app.student("Ada").await;
    let ping = app.post("/api/realtime/ping", None, json!({})).await;
    assert_eq!(ping.status, 200);
    assert_eq!(ping.body["ok"], true);
    assert_eq!(ping.body["websocket"]["available"], true);
    assert!(ping.body["serverTime"].as_str().unwrap().ends_with('Z'));

    let connection = coursecast_client::Connection::open(&app.base, Default::default()).await.unwrap();
    let _chat = connection.socket("/chat", Some(json!({"token": user.token}))).await.unwrap();
    let _notifications = connection.socket("/notifications", Some(json!({"token": user.token}))).await.unwrap();
    let status = app.get("/api/realtime/status", Some(&user.token)).await;
    assert_eq!(status.status, 200);
    assert_eq!(status.body["websocket"]["enabled"], true);
    assert_eq!(status.body["websocket"]["connections"], 1);
    assert_eq!(
        status.body["websocket"]["byNamespace"],
        json!({"/chat": 1, "/notifications": 1, "/analytics": 0, "/collaboration": 0})
    );
    assert_eq!(status.body["fallback"], json!({"enabled": true, "pollingIntervalMs": 1234}));
    assert!(status.body["uptimeSeconds"].is_u64());
    assert!(status.body["version"].is_string());
    app.get("/api/realtime/status", None).await.assert_error(401, "TOKEN_MISSING");
}
