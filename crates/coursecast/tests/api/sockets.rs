//! The Socket.IO handshake: token sources, every refusal code, origins, limits.

use coursecast_client::{ClientError, ConnectOptions, Connection};
use serde_json::json;

use crate::helpers::{TestApp, WAIT};

const NAMESPACES: [&str; 4] = ["/chat", "/notifications", "/analytics", "/collaboration"];

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test]
async fn every_namespace_accepts_a_token_in_auth_or_header() {
    let app = TestApp::spawn().await;
    let user = app.student("Ada").await;
    for ns in NAMESPACES {
        app.socket(ns, &user.token).await;
        let by_header = ConnectOptions { bearer: Some(user.token.clone()), ..Default::default() };
        app.try_socket(ns, None, by_header).await.unwrap_or_else(|e| panic!("{ns} with header: {e}"));
    }
}

#[tokio::test]
async fn handshake_refusals_carry_the_contract_codes() {
    let app = TestApp::spawn().await;
    let user = app.student("Bo").await;
    let t = now();
    let expired = app.sign(json!({"sub": user.id, "role": "STUDENT", "iat": t - 7200, "exp": t - 3600}));
    let wrong_role = app.sign(json!({"sub": user.id, "role": "ADMIN", "iat": t, "exp": t + 600}));
    let none = ConnectOptions::default;
    for ns in NAMESPACES {
        assert_eq!(app.refusal(ns, None, none()).await, "TOKEN_MISSING", "{ns}");
        assert_eq!(app.refusal(ns, Some(json!({})), none()).await, "TOKEN_MISSING", "{ns}");
        assert_eq!(app.refusal(ns, Some(json!({"token": "garbage"})), none()).await, "TOKEN_INVALID", "{ns}");
        assert_eq!(app.refusal(ns, Some(json!({"token": 42})), none()).await, "TOKEN_INVALID", "{ns}");
        assert_eq!(app.refusal(ns, Some(json!({"token": wrong_role})), none()).await, "TOKEN_INVALID", "{ns}");
        assert_eq!(app.refusal(ns, Some(json!({"token": expired})), none()).await, "TOKEN_EXPIRED", "{ns}");
        assert_eq!(app.refusal(ns, Some(json!({"token": app.service_token()})), none()).await, "FORBIDDEN", "{ns}");
    }
}

#[tokio::test]
async fn tokens_in_the_query_string_are_ignored() {
    let app = TestApp::spawn().await;
    let user = app.student("Cy").await;
    let options = ConnectOptions { query: Some(format!("token={}", user.token)), ..Default::default() };
    assert_eq!(app.refusal("/chat", None, options).await, "TOKEN_MISSING");
}

#[tokio::test]
async fn unknown_namespaces_are_refused() {
    let app = TestApp::spawn().await;
    let user = app.student("Di").await;
    for ns in ["/", "/admin", "/chat/extra"] {
        assert_eq!(
            app.refusal(ns, Some(json!({"token": user.token})), ConnectOptions::default()).await,
            "Invalid namespace"
        );
    }
}

#[tokio::test]
async fn foreign_origins_are_refused_before_the_handshake() {
    let app = TestApp::spawn().await;
    let user = app.student("Ed").await;
    let evil = ConnectOptions { origin: Some("https://evil.example.com".into()), ..Default::default() };
    assert!(matches!(Connection::open(&app.base, evil).await, Err(ClientError::Refused(403))));
    let polling = app
        .client
        .get(format!("{}/socket.io/?EIO=4&transport=polling", app.base))
        .header("origin", "https://evil.example.com");
    assert_eq!(polling.send().await.unwrap().status(), 403);
    let allowed = ConnectOptions { origin: Some("http://localhost:5173".into()), ..Default::default() };
    app.try_socket("/chat", Some(json!({"token": user.token})), allowed).await.expect("allowed origin");
}

#[tokio::test]
async fn the_global_connection_limit_counts_clients_not_namespaces() {
    let app = TestApp::spawn_with(|s| s.max_connections = 2).await;
    let user = app.student("Flo").await;
    let first = Connection::open(&app.base, ConnectOptions::default()).await.unwrap();
    let auth = || Some(json!({"token": user.token}));
    let _chat = first.socket("/chat", auth()).await.unwrap();
    let _notifications = first.socket("/notifications", auth()).await.unwrap();
    let _second = app.socket("/chat", &user.token).await;
    assert_eq!(app.refusal("/chat", auth(), ConnectOptions::default()).await, "SERVER_FULL");
    let status = app.state.realtime.connections.stats();
    assert_eq!((status.clients, status.sockets), (2, 3));
}

#[tokio::test]
async fn sockets_per_user_per_namespace_are_limited() {
    let app = TestApp::spawn_with(|s| s.max_sockets_per_user = 2).await;
    let user = app.student("Gil").await;
    let other = app.student("Hana").await;
    let _a = app.socket("/chat", &user.token).await;
    let _b = app.socket("/chat", &user.token).await;
    assert_eq!(
        app.refusal("/chat", Some(json!({"token": user.token})), ConnectOptions::default()).await,
        "SERVER_FULL"
    );
    app.socket("/notifications", &user.token).await;
    app.socket("/chat", &other.token).await;
}

/// Socket.IO starts the connect handler in a task of its own after sending CONNECT;
/// an event sent the moment the client is connected must still be handled.
#[tokio::test]
async fn events_sent_at_once_after_connect_are_answered() {
    let app = TestApp::spawn_with(|s| s.max_sockets_per_user = 1000).await;
    let user = app.student("Quick").await;
    let sockets = futures_util::future::join_all((0..100).map(|_| async {
        let socket = app.socket("/chat", &user.token).await;
        socket.call("leave", json!({"courseId": uuid::Uuid::new_v4()})).await
    }))
    .await;
    for ack in sockets {
        assert_eq!(ack.expect("no ack for an event sent at once")["ok"], true);
    }
}

#[tokio::test]
async fn handshakes_are_rate_limited_per_ip() {
    let app = TestApp::spawn_with(|s| s.socket_connects_per_sec_per_ip = 2).await;
    let user = app.student("Ivo").await;
    let mut refusals = Vec::new();
    for _ in 0..8 {
        if let Err(err) = app.try_socket("/chat", Some(json!({"token": user.token})), ConnectOptions::default()).await {
            refusals.push(err.to_string());
        }
    }
    assert!(!refusals.is_empty(), "8 handshakes in a burst of 4 were all accepted");
    assert!(refusals.iter().all(|r| r.ends_with("RATE_LIMITED")), "{refusals:?}");
}

#[tokio::test]
async fn logout_and_deletion_disconnect_live_sockets() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let user = app.student("Jay").await;
    let mut chat = app.socket("/chat", &user.token).await;
    let mut notifications = app.socket("/notifications", &user.token).await;
    assert_eq!(app.post("/api/auth/logout", Some(&user.token), json!({})).await.status, 200);
    assert_eq!(chat.disconnected(WAIT).await.as_deref(), Some("io server disconnect"));
    assert_eq!(notifications.disconnected(WAIT).await.as_deref(), Some("io server disconnect"));
    assert_eq!(
        app.refusal("/chat", Some(json!({"token": user.token})), ConnectOptions::default()).await,
        "TOKEN_INVALID"
    );

    let doomed = app.student("Kai").await;
    let mut socket = app.socket("/analytics", &doomed.token).await;
    assert_eq!(app.delete(&format!("/api/users/{}", doomed.id), Some(&admin.token)).await.status, 200);
    assert_eq!(socket.disconnected(WAIT).await.as_deref(), Some("io server disconnect"));
}

#[tokio::test]
async fn http_keeps_working_while_sockets_are_busy() {
    let app = TestApp::spawn().await;
    let professor = app.professor().await;
    let student = app.student("Lea").await;
    let course = app.course_with(&professor, &[&student]).await;
    let mut sockets = Vec::new();
    for _ in 0..5 {
        let socket = app.socket("/chat", &student.token).await;
        socket.call("join", json!({"courseId": course})).await.unwrap();
        sockets.push(socket);
    }
    let sender = &sockets[0];
    for i in 0..20 {
        let (ack, me) = tokio::join!(
            sender
                .call("send", json!({"courseId": course, "content": format!("m{i}"), "clientMsgId": format!("c{i}")})),
            app.get("/api/auth/me", Some(&student.token)),
        );
        assert_eq!(ack.unwrap()["ok"], true);
        assert_eq!(me.status, 200);
    }
    assert_eq!(app.get(&format!("/api/courses/{course}/members"), Some(&professor.token)).await.status, 200);
}

#[tokio::test]
async fn concurrent_handshakes_each_get_their_own_token_state() {
    // Token states of handshakes arriving together are read in one query; each
    // must still get its own user's answer.
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let names: Vec<String> = (0..30).map(|i| format!("Crowd{i}")).collect();
    let users = futures_util::future::join_all(names.iter().map(|name| app.student(name))).await;
    let (logged_out, deleted) = (&users[3], &users[17]);
    assert_eq!(app.post("/api/auth/logout", Some(&logged_out.token), json!({})).await.status, 200);
    assert_eq!(app.delete(&format!("/api/users/{}", deleted.id), Some(&admin.token)).await.status, 200);

    let outcomes = futures_util::future::join_all(
        users.iter().map(|user| app.try_socket("/chat", Some(json!({"token": user.token})), Default::default())),
    )
    .await;
    for (i, outcome) in outcomes.into_iter().enumerate() {
        match (i, outcome) {
            (3 | 17, Err(ClientError::ConnectError(code))) => assert_eq!(code, "TOKEN_INVALID", "user {i}"),
            (3 | 17, other) => panic!("user {i} was not refused: {:?}", other.map(|_| "connected")),
            (_, Ok(socket)) => {
                // Only the socket's own user may reauth it: the session is this user's.
                let ack = socket.call("reauth", json!({"token": users[i].token})).await.unwrap();
                assert_eq!(ack["ok"], true, "user {i}: {ack}");
            }
            (_, Err(err)) => panic!("user {i} was refused: {err}"),
        }
    }
}
