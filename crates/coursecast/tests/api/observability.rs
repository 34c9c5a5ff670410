//! Metrics, the admin dashboard, panics, and restarts that lose nothing.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use axum::{Router, ServiceExt, routing::get};
use coursecast::{http::outer_layers, telemetry::figures::Snapshot};
use serde_json::{Value, json};
use tokio::sync::RwLock;

use crate::helpers::{TestApp, WAIT, eventually, test_settings};

#[tokio::test]
async fn metrics_cover_sockets_events_polling_and_http_with_bounded_labels() {
    let app = TestApp::spawn().await;
    let professor = app.professor().await;
    let ann = app.student("Ann").await;
    let course = app.course_with(&professor, &[&ann]).await;
    let socket = app.socket("/chat", &ann.token).await;
    socket.call("join", json!({"courseId": course})).await.unwrap();
    socket.call("send", json!({"courseId": course, "content": "hi", "clientMsgId": "m"})).await.unwrap();
    socket.call("send", json!({"courseId": course, "content": "", "clientMsgId": "m2"})).await.unwrap();
    app.refusal("/chat", Some(json!({"token": "bad"})), Default::default()).await;
    app.get(&format!("/api/realtime/messages/{course}?since=100&wait=0.1"), Some(&ann.token)).await;

    let metrics = app.get("/metrics", None).await;
    assert_eq!(metrics.status, 200);
    let text = metrics.body.as_str().expect("text body").to_owned();
    for expected in [
        r#"coursecast_socket_connections{namespace="/chat"}"#,
        "coursecast_socket_clients",
        r#"coursecast_socket_connects_total{namespace="/chat"}"#,
        r#"coursecast_handshake_refusals_total{code="TOKEN_INVALID"}"#,
        r#"coursecast_socket_events_received_total{namespace="/chat",event="send"}"#,
        r#"coursecast_socket_event_refusals_total{namespace="/chat",event="send",code="VALIDATION_FAILED"}"#,
        r#"coursecast_socket_events_emitted_total{namespace="/chat",event="message"}"#,
        "coursecast_delivery_latency_seconds_bucket",
        "coursecast_batch_size_bucket",
        r#"coursecast_db_query_seconds_bucket{op="append_batch""#,
        r#"coursecast_polling_requests_total{stream="messages"}"#,
        "coursecast_long_poll_waiters",
        r#"coursecast_http_requests_total{method="GET",route="/api/realtime/messages/{course_id}",status="200"}"#,
    ] {
        assert!(text.contains(expected), "missing {expected}");
    }
    for secret in [ann.id.to_string(), course.to_string(), ann.token.clone()] {
        assert!(!text.contains(&secret), "an id or token leaked into labels");
    }
}

#[tokio::test]
async fn the_admin_dashboard_and_its_figures() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let student = app.student("Bo").await;
    let page = app.client.get(format!("{}/admin", app.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("/admin/dashboard.js"));
    let _socket = app.socket("/notifications", &student.token).await;
    app.get("/api/admin/stats", Some(&student.token)).await.assert_error(403, "FORBIDDEN");
    let stats = app.get("/api/admin/stats", Some(&admin.token)).await;
    assert_eq!(stats.status, 200);
    assert_eq!(stats.body["connections"]["byNamespace"]["notifications"], 1);
    for field in ["eventsDelivered", "longPollWaiters", "uptimeSeconds"] {
        assert!(stats.body[field].is_u64(), "{field}: {}", stats.body);
    }
    assert!(stats.body["latency"]["p99Ms"].is_number());
}

/// The figures an operator asks for first: copies delivered (not just events),
/// refusals by code, the database's and Redis's state, the biggest rooms, slow
/// consumers. The counters are the ones `/metrics` exports (the recorder is shared
/// by every test app of this process, so they are compared as a sandwich).
#[tokio::test]
async fn the_dashboard_figures_are_the_metrics_figures() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let professor = app.professor().await;
    let (ann, ben) = (app.student("Ann").await, app.student("Ben").await);
    let course = app.course_with(&professor, &[&ann, &ben]).await;
    let mut sockets = Vec::new();
    for user in [&professor, &ann, &ben] {
        let socket = app.socket("/chat", &user.token).await;
        assert_eq!(socket.call("join", json!({"courseId": course})).await.unwrap()["ok"], true);
        sockets.push(socket);
    }
    let socket_copies = async || {
        let metrics = app.get("/metrics", None).await;
        let text = metrics.body.as_str().expect("text body");
        Snapshot::parse(text).count("coursecast_deliveries_total", &[("transport", "socket")])
    };
    let before = socket_copies().await;
    let sent = sockets[1]
        .call("send", json!({"courseId": course, "content": "hello", "clientMsgId": "dash-1"}))
        .await
        .unwrap();
    assert_eq!(sent["ok"], true, "{sent}");
    // One refusal with a code of its own in this test: a join of an unknown course.
    let unknown = sockets[2].call("join", json!({"courseId": uuid::Uuid::new_v4()})).await.unwrap();
    assert_eq!(unknown["error"]["code"], "NOT_FOUND");

    let stats = app.get("/api/admin/stats", Some(&admin.token)).await;
    let after = socket_copies().await;
    let body = &stats.body;
    let copies = body["deliveries"]["socket"].as_u64().expect("deliveries.socket");
    assert!(before + 3 <= copies && copies <= after, "one message to a room of 3: {before} + 3 <= {copies} <= {after}");
    assert!(body["refusals"]["NOT_FOUND"].as_u64().is_some_and(|n| n >= 1), "{body}");
    assert_eq!(body["dependencies"]["database"]["up"], true);
    assert!(body["dependencies"]["database"]["queries"]["count"].as_u64().is_some_and(|n| n > 0), "{body}");
    assert_eq!(body["dependencies"]["redis"]["configured"], false);
    for field in ["broadcastMisses", "answersDeferred", "answersLost"] {
        assert!(body["slowConsumers"][field].is_u64(), "{field}: {body}");
    }
    let room = &body["rooms"]["byMembers"][0];
    assert_eq!(
        (room["courseId"].as_str(), room["namespace"].as_str()),
        (Some(course.to_string().as_str()), Some("chat"))
    );
    assert_eq!(
        (room["members"].as_u64(), room["sockets"].as_u64(), room["events"].as_u64()),
        (Some(3), Some(3), Some(1))
    );
    assert_eq!(body["rooms"]["byTraffic"][0]["courseId"], room["courseId"]);
}

async fn boom() -> &'static str {
    panic!("handler bug")
}

#[tokio::test]
async fn a_panicking_handler_answers_internal_with_an_error_id_and_the_server_lives_on() {
    let settings = test_settings().await;
    let router = Router::new().route("/boom", get(boom)).route("/fine", get(|| async { "fine" }));
    let app = outer_layers(router, &settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app.into_make_service()).await });
    let client = reqwest::Client::new();
    let boom = client.get(format!("http://{addr}/boom")).send().await.unwrap();
    assert_eq!(boom.status(), 500);
    let body: Value = boom.json().await.unwrap();
    assert_eq!(body["error"]["code"], "INTERNAL");
    assert!(body["error"]["errorId"].as_str().is_some_and(|id| id.len() == 36), "{body}");
    assert!(!body.to_string().contains("handler bug"), "the cause stays in the log");
    assert_eq!(client.get(format!("http://{addr}/fine")).send().await.unwrap().text().await.unwrap(), "fine");
}

/// A steady stream of sends (each retried with its clientMsgId until acknowledged)
/// while the server stops and starts again: every acknowledged message is stored
/// once, and every subscriber ends up with all of them, each once.
#[tokio::test]
async fn a_restart_under_load_loses_and_duplicates_nothing() {
    const MESSAGES: usize = 60;
    let app = TestApp::spawn().await;
    let professor = app.professor().await;
    let (ann, ben, cat) = (app.student("Ann").await, app.student("Ben").await, app.student("Cat").await);
    let course = app.course_with(&professor, &[&ann, &ben, &cat]).await;
    let base = Arc::new(RwLock::new(app.base.clone()));

    let mut subscribers = Vec::new();
    for user in [&ben, &cat, &professor] {
        let socket = app.socket("/chat", &user.token).await;
        socket.call("join", json!({"courseId": course})).await.unwrap();
        subscribers.push((user.token.clone(), socket, BTreeMap::<i64, Value>::new()));
    }
    let sender = {
        let (base, token, client) = (base.clone(), ann.token.clone(), app.client.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..MESSAGES {
                let body = json!({"content": format!("steady {i}"), "clientMsgId": format!("steady-{i}")});
                loop {
                    let url = format!("{}/api/realtime/messages/{course}", base.read().await);
                    match client.post(url).bearer_auth(&token).json(&body).send().await {
                        Ok(res) if res.status() == 201 => {
                            acked.push(res.json::<Value>().await.unwrap()["event"]["seq"].as_i64().unwrap());
                            break;
                        }
                        // A client's back-off while the server is away, part of the load.
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
                // Paces the steady stream (the load under test), not a wait for anything.
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            acked
        })
    };

    let path = format!("/api/realtime/messages/{course}?limit=1000");
    eventually("some sends to be stored before the restart", WAIT, || async {
        app.get(&path, Some(&ann.token)).await.body["events"].as_array().is_some_and(|e| e.len() >= MESSAGES / 6)
    })
    .await;
    assert!(!sender.is_finished(), "the restart must happen mid-stream");
    let app = app.restart().await;
    *base.write().await = app.base.clone();

    for (token, socket, seen) in &mut subscribers {
        loop {
            match socket.next(WAIT).await {
                Some(coursecast_client::Incoming::Event(name, event)) if name == "message" => {
                    assert!(seen.insert(event["seq"].as_i64().unwrap(), event).is_none(), "a live duplicate");
                }
                Some(coursecast_client::Incoming::Disconnected(reason)) => {
                    assert_eq!(reason, "transport close", "a shutdown must not stop clients from reconnecting");
                    break;
                }
                Some(_) => {}
                None => panic!("no disconnect at shutdown"),
            }
        }
        *socket = app.socket("/chat", token).await;
    }
    let acked = tokio::time::timeout(Duration::from_secs(60), sender).await.expect("sender stuck").unwrap();
    assert_eq!(acked.len(), MESSAGES);
    assert_eq!(acked.iter().collect::<BTreeSet<_>>().len(), MESSAGES, "each send stored once");

    let stored = app.get(&format!("/api/realtime/messages/{course}?limit=1000"), Some(&ann.token)).await;
    let stored: Vec<Value> = stored.body["events"].as_array().unwrap().clone();
    assert_eq!(stored.len(), MESSAGES, "nothing stored twice");
    for (_, socket, seen) in &mut subscribers {
        let cursor = seen.keys().next_back().copied().unwrap_or(0);
        let mut since = cursor;
        loop {
            let page = socket.call("join", json!({"courseId": course, "since": since})).await.unwrap();
            for event in page["missed"].as_array().unwrap() {
                seen.entry(event["seq"].as_i64().unwrap()).or_insert_with(|| event.clone());
            }
            since = page["cursor"].as_i64().unwrap();
            if page["hasMore"] == false {
                break;
            }
        }
        while let Some(event) = socket.wait_for("message", Duration::from_millis(200)).await {
            seen.entry(event["seq"].as_i64().unwrap()).or_insert(event);
        }
        let seqs = |events: Vec<&Value>| events.iter().map(|e| e["seq"].as_i64().unwrap()).collect::<Vec<_>>();
        assert_eq!(seqs(seen.values().collect()), seqs(stored.iter().collect()), "a subscriber missed messages");
        assert!(seen.values().eq(stored.iter()), "a subscriber saw different events");
    }
}
