//! `kill -9` under load, on both backends: a socket sends steadily to the real binary,
//! the process is killed without warning, started again on the same storage, and the
//! client retries what was not answered with the same `clientMsgId`. Every message
//! acknowledged before the kill is stored, and every message exactly once.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use coursecast_client::{Connection, Socket};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{
    helpers::{fresh_postgres_schema, test_postgres_url},
    process::ServerProcess,
};

/// A bound on the sender, should the kill never reach it.
const MAX_MESSAGES: u64 = 20_000;
const KILL_AFTER_ACKS: usize = 150;

#[tokio::test]
async fn kill_9_under_load_loses_nothing_acknowledged_on_sqlite() {
    kill_9_under_load(None).await;
}

#[tokio::test]
async fn kill_9_under_load_loses_nothing_acknowledged_on_postgres() {
    let Some(admin) = test_postgres_url().await else { return };
    kill_9_under_load(Some(fresh_postgres_schema(&admin).await)).await;
}

fn message(course: &str, n: u64) -> Value {
    json!({"courseId": course, "content": format!("m{n}"), "clientMsgId": format!("k{n}")})
}

async fn chat_socket(server: &ServerProcess, token: &str, course: &str) -> Socket {
    let connection = Connection::open(&server.base, Default::default()).await.expect("connect");
    let socket = connection.socket("/chat", Some(json!({"token": token}))).await.expect("socket");
    let joined = socket.call("join", json!({"courseId": course})).await.expect("join");
    assert_eq!(joined["ok"], true, "{joined}");
    socket
}

async fn kill_9_under_load(database_url: Option<String>) {
    let extra = [("SOCKET_EVENTS_PER_SECOND", "100000"), ("SOCKET_EVENTS_BURST", "100000")];
    let mut server = ServerProcess::start(database_url.as_deref(), &extra).await;
    let seeded = server.seed(1);
    let course = seeded["courseId"].as_str().unwrap().to_owned();
    let token = seeded["users"][0]["token"].as_str().unwrap().to_owned();

    // Sends keep going, a few in flight at once, until the connection breaks.
    let socket = Arc::new(chat_socket(&server, &token, &course).await);
    let broken = Arc::new(AtomicBool::new(false));
    let (acked_tx, mut acked_rx) = mpsc::unbounded_channel();
    let sender = tokio::spawn({
        let (socket, broken, course) = (socket.clone(), broken.clone(), course.clone());
        async move {
            let mut sends = tokio::task::JoinSet::new();
            let mut sent = 0;
            while !broken.load(Ordering::Relaxed) && sent < MAX_MESSAGES {
                let (socket, broken, acked, course) =
                    (socket.clone(), broken.clone(), acked_tx.clone(), course.clone());
                sends.spawn(async move {
                    match socket.call("send", message(&course, sent)).await {
                        Ok(ack) if ack["ok"] == true => drop(acked.send(sent)),
                        Ok(_) => {}
                        Err(_) => broken.store(true, Ordering::Relaxed),
                    }
                });
                sent += 1;
                if sent % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await; // the client's pace
                }
            }
            while sends.join_next().await.is_some() {}
            sent
        }
    });
    let mut acked = Vec::new();
    while acked.len() < KILL_AFTER_ACKS {
        acked.push(tokio::time::timeout(Duration::from_secs(10), acked_rx.recv()).await.unwrap().unwrap());
    }
    server.kill9();
    let sent = sender.await.unwrap();
    while let Ok(n) = acked_rx.try_recv() {
        acked.push(n);
    }
    assert!(sent < MAX_MESSAGES, "the sender never saw the kill");

    server.restart().await;
    let socket = chat_socket(&server, &token, &course).await;
    let mut unanswered = 0;
    for n in (0..sent).filter(|n| !acked.contains(n)) {
        let ack = socket.call("send", message(&course, n)).await.expect("retry answered");
        assert_eq!(ack["ok"], true, "retry of m{n}: {ack}");
        unanswered += 1;
    }
    let stored = stored_contents(&server, &token, &course).await;
    for n in 0..sent {
        let copies = stored.iter().filter(|c| **c == format!("m{n}")).count();
        assert_eq!(copies, 1, "m{n} (acked before the kill: {}) stored {copies} times", acked.contains(&n));
    }
    assert_eq!(stored.len() as u64, sent, "nothing else was stored");
    assert!(unanswered > 0, "every send was answered before the kill: nothing was tested");
}

/// Every message content of the course's stream, read page by page over polling.
async fn stored_contents(server: &ServerProcess, token: &str, course: &str) -> Vec<String> {
    let client = reqwest::Client::new();
    let (mut since, mut contents) = (0, Vec::new());
    loop {
        let url = format!("{}/api/realtime/messages/{course}?since={since}&limit=1000", server.base);
        let page: Value = client.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap();
        let events = page["events"].as_array().cloned().unwrap_or_default();
        contents.extend(events.iter().filter_map(|e| e["content"].as_str().map(str::to_owned)));
        since = page["cursor"].as_i64().expect("cursor");
        if page["hasMore"] != true {
            return contents;
        }
    }
}
