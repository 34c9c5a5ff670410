//! A database that fails under load: cut by reset, by refusal (its port closed) and
//! by black hole for 10 s through a TCP proxy (PostgreSQL), while a socket sends
//! steadily. Every answer comes within the storage deadline and is `ok` or
//! `UNAVAILABLE`, never `INTERNAL` or silence; the server says so on `/readyz` within
//! a second, keeps `/healthz` up, refuses new handshakes `SERVER_FULL` and polls
//! `UNAVAILABLE`, recovers by itself, and after a client's retries every message is
//! stored exactly once.

use std::{
    net::{SocketAddr, ToSocketAddrs},
    sync::Arc,
    time::{Duration, Instant},
};

use coursecast_client::{ClientError, ConnectOptions, Socket};
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::{
    helpers::{TestApp, ack_code, eventually, fresh_postgres_schema, test_postgres_url},
    proxy::{Mode, Proxy},
};

const OUTAGE: Duration = Duration::from_secs(10);
const DEADLINE_MS: u64 = 1000;
/// An answer may take the deadline plus the batch it queued behind, and scheduling.
const ANSWER_WITHIN: Duration = Duration::from_millis(2 * DEADLINE_MS + 500);
const SEND_EVERY: Duration = Duration::from_millis(50);

#[tokio::test]
async fn a_reset_database_is_unavailable_not_internal_and_loses_nothing() {
    database_outage_under_load(Mode::Reset).await;
}

#[tokio::test]
async fn a_refused_database_is_unavailable_not_internal_and_loses_nothing() {
    database_outage_under_load(Mode::Refuse).await;
}

#[tokio::test]
async fn a_black_holed_database_is_answered_within_the_deadline_and_loses_nothing() {
    database_outage_under_load(Mode::BlackHole).await;
}

/// One send's outcome: its number, how long its answer took, and the answer's code.
struct Sent {
    n: u64,
    took: Duration,
    code: String,
}

async fn database_outage_under_load(mode: Mode) {
    let Some(admin) = test_postgres_url().await else { return };
    let options: PgConnectOptions = admin.parse().expect("PostgreSQL URL");
    let authority = format!("{}:{}", options.get_host(), options.get_port());
    let upstream: SocketAddr = authority.to_socket_addrs().expect("resolve").next().expect("an address");
    let proxy = Proxy::start(upstream).await;
    let url = fresh_postgres_schema(&admin.replacen(&authority, &proxy.addr.to_string(), 1)).await;
    let app = TestApp::spawn_with(|s| {
        s.database_url = Some(url);
        s.database_timeout_ms = DEADLINE_MS;
    })
    .await;
    let professor = app.professor().await;
    let alice = app.student("Alice").await;
    let course = app.course_with(&professor, &[&alice]).await;
    let socket = Arc::new(app.socket("/chat", &alice.token).await);
    assert_eq!(ack_code(&socket.call("join", json!({"courseId": course})).await.unwrap()), "<ok>");

    let (stop, stopped) = watch::channel(false);
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel();
    let sender = tokio::spawn(send_steadily(socket.clone(), course, stopped, sent_tx));
    eventually("the stream to be flowing", Duration::from_secs(5), || {
        let stored = app.state.store.stream_head(coursecast::streams::StreamKey::messages(course));
        async move { stored.await.unwrap_or(0) >= 10 }
    })
    .await;

    proxy.set(mode);
    let cut = Instant::now();
    eventually("storage to notice the outage", ANSWER_WITHIN, || async { !app.state.store.health().up }).await;
    assert_eq!(app.get("/healthz", None).await.status, 200, "liveness does not depend on the database");
    let asked = Instant::now();
    app.get("/readyz", None).await.assert_error(503, "UNAVAILABLE");
    assert!(asked.elapsed() < Duration::from_secs(1), "/readyz took {:?}", asked.elapsed());
    let asked = Instant::now();
    app.get(&format!("/api/realtime/messages/{course}?since=0"), Some(&alice.token))
        .await
        .assert_error(503, "UNAVAILABLE");
    assert!(asked.elapsed() < ANSWER_WITHIN, "a poll took {:?}", asked.elapsed());
    // One node keeps the token states it has read, so its users still connect; a
    // user it has never seen needs the database, and is told to come back.
    let now = chrono::Utc::now().timestamp();
    let stranger = app.sign(json!({"sub": Uuid::new_v4(), "role": "STUDENT", "iat": now, "exp": now + 600}));
    let refusal = app.refusal("/chat", Some(json!({"token": stranger})), ConnectOptions::default()).await;
    assert_eq!(refusal, "SERVER_FULL");
    drop(app.socket("/chat", &alice.token).await);
    tokio::time::sleep_until((cut + OUTAGE).into()).await;

    proxy.set(Mode::Forward);
    let restored = Instant::now();
    eventually("storage to notice the database is back", Duration::from_secs(5), || async {
        app.state.store.health().up
    })
    .await;
    eventually("a send to succeed again", Duration::from_secs(5), || {
        let socket = socket.clone();
        async move {
            let key = Uuid::new_v4().to_string();
            let ack = socket.call("send", json!({"courseId": course, "content": key, "clientMsgId": key})).await;
            ack.is_ok_and(|ack| ack["ok"] == true)
        }
    })
    .await;
    let recovered_in = restored.elapsed();
    stop.send_replace(true);
    sender.await.expect("sender");
    let mut sent = Vec::new();
    while let Ok(one) = sent_rx.try_recv() {
        sent.push(one);
    }

    let unavailable: Vec<u64> = sent.iter().filter(|s| s.code == "UNAVAILABLE").map(|s| s.n).collect();
    let wrong: Vec<(u64, &str)> =
        sent.iter().filter(|s| s.code != "<ok>" && s.code != "UNAVAILABLE").map(|s| (s.n, s.code.as_str())).collect();
    let slowest = sent.iter().map(|s| s.took).max().unwrap_or_default();
    assert!(wrong.is_empty(), "answers other than ok/UNAVAILABLE: {wrong:?}");
    assert!(!unavailable.is_empty(), "the outage refused nothing: was it felt?");
    assert!(slowest <= ANSWER_WITHIN, "the slowest answer took {slowest:?}");
    assert!(recovered_in < Duration::from_secs(5), "recovery took {recovered_in:?}");
    assert_eq!(app.state.store.health().outages, 1, "one outage, noticed once");

    // A client retries what was refused with the same clientMsgId; each is stored once.
    for n in &unavailable {
        let ack = socket.call("send", message(course, *n)).await.expect("retry answered");
        assert_eq!(ack_code(&ack), "<ok>", "retry of m{n}: {ack}");
    }
    let stored = stored_contents(&app, &alice.token, course).await;
    for one in &sent {
        let copies = stored.iter().filter(|c| **c == format!("m{}", one.n)).count();
        assert_eq!(copies, 1, "m{} ({}) is stored {copies} times", one.n, one.code);
    }
}

fn message(course: Uuid, n: u64) -> Value {
    json!({"courseId": course, "content": format!("m{n}"), "clientMsgId": format!("k{n}")})
}

/// Sends `m0, m1, ...` every `SEND_EVERY`, each answer awaited on its own, until told.
async fn send_steadily(
    socket: Arc<Socket>,
    course: Uuid,
    mut stopped: watch::Receiver<bool>,
    sent: mpsc::UnboundedSender<Sent>,
) {
    let mut answers = tokio::task::JoinSet::new();
    let mut every = tokio::time::interval(SEND_EVERY);
    for n in 0.. {
        tokio::select! {
            _ = every.tick() => {}
            _ = stopped.wait_for(|stop| *stop) => break,
        }
        let (socket, sent) = (socket.clone(), sent.clone());
        answers.spawn(async move {
            let at = Instant::now();
            let code = match socket.call("send", message(course, n)).await {
                Ok(ack) => ack_code(&ack).to_owned(),
                Err(ClientError::Timeout) => "<no answer>".to_owned(),
                Err(other) => format!("<{other}>"),
            };
            let _ = sent.send(Sent { n, took: at.elapsed(), code });
        });
    }
    while answers.join_next().await.is_some() {}
}

/// Every message content of the course's stream, read page by page over polling.
async fn stored_contents(app: &TestApp, token: &str, course: Uuid) -> Vec<String> {
    let (mut since, mut contents) = (0, Vec::new());
    loop {
        let page = app.get(&format!("/api/realtime/messages/{course}?since={since}&limit=1000"), Some(token)).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let events = page.body["events"].as_array().cloned().unwrap_or_default();
        contents.extend(events.iter().filter_map(|e| e["content"].as_str().map(str::to_owned)));
        since = page.body["cursor"].as_i64().expect("cursor");
        if page.body["hasMore"] != true {
            return contents;
        }
    }
}
