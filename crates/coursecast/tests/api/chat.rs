//! `/chat` end to end: join, presence, send, idempotency, edit, delete, typing,
//! replay, and every refusal in acks and `error` events.

use coursecast_client::{
    Incoming,
    raw::{RawFrame, RawOptions, RawSocket, encode_event},
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{QUIET, TestApp, WAIT, ack_code};

#[tokio::test]
async fn two_users_chat_with_presence_and_typing() {
    let app = TestApp::spawn_with(|s| s.presence_window_ms = 50).await;
    let professor = app.professor().await;
    let (ann, ben) = (app.student("Ann").await, app.student("Ben").await);
    let course = app.course_with(&professor, &[&ann, &ben]).await;

    let mut a = app.socket("/chat", &ann.token).await;
    let joined = a.call("join", json!({"courseId": course})).await.unwrap();
    assert_eq!(
        joined,
        json!({"ok": true, "courseId": course, "cursor": 0, "missed": [], "hasMore": false,
               "online": [ann.id], "onlineCount": 1})
    );
    let presence = a.wait_for("presence", WAIT).await.expect("her own arrival");
    assert_eq!(presence, json!({"courseId": course, "online": [ann.id], "offline": [], "count": 1}));

    let mut b = app.socket("/chat", &ben.token).await;
    let joined = b.call("join", json!({"courseId": course})).await.unwrap();
    let mut expected = vec![ann.id, ben.id];
    expected.sort();
    assert_eq!((joined["online"].clone(), joined["onlineCount"].clone()), (json!(expected), json!(2)));
    let presence = a.wait_for("presence", WAIT).await.expect("presence online");
    assert_eq!(presence, json!({"courseId": course, "online": [ben.id], "offline": [], "count": 2}));

    let ack = a
        .call("send", json!({"courseId": course, "content": "  hello\tthere \n", "clientMsgId": "m-1"}))
        .await
        .unwrap();
    assert_eq!(ack["ok"], true, "{ack}");
    let event = &ack["event"];
    assert_eq!(event["type"], "message_sent");
    assert_eq!(event["seq"], 1);
    assert_eq!(event["content"], "hello\tthere");
    assert_eq!(event["senderId"], ann.id.to_string());
    assert_eq!(event["courseId"], course.to_string());
    assert!(event.get("channelId").is_none());
    let received = b.wait_for("message", WAIT).await.expect("message");
    assert_eq!(&received, event);
    assert_eq!(a.wait_for("message", WAIT).await.as_ref(), Some(event), "the sender receives its own message too");

    assert_eq!(b.call("typing", json!({"courseId": course})).await.unwrap(), json!({"ok": true, "relayed": true}));
    assert_eq!(a.wait_for("typing", WAIT).await, Some(json!({"courseId": course, "userId": ben.id})));
    assert_eq!(b.wait_for("typing", QUIET).await, None, "the typist does not see itself");

    assert_eq!(b.call("leave", json!({"courseId": course})).await.unwrap(), json!({"ok": true}));
    let presence = a.wait_for("presence", WAIT).await.expect("presence offline");
    assert_eq!(presence, json!({"courseId": course, "online": [], "offline": [ben.id], "count": 1}));
    a.call("send", json!({"courseId": course, "content": "anyone?", "clientMsgId": "m-2"})).await.unwrap();
    assert_eq!(b.wait_for("message", QUIET).await, None, "left the room");
}

#[tokio::test]
async fn a_retried_client_msg_id_returns_the_original_event_once() {
    let app = TestApp::spawn().await;
    let professor = app.professor().await;
    let (ann, ben) = (app.student("Ann").await, app.student("Ben").await);
    let course = app.course_with(&professor, &[&ann, &ben]).await;
    let a = app.socket("/chat", &ann.token).await;
    let mut b = app.socket("/chat", &ben.token).await;
    b.call("join", json!({"courseId": course})).await.unwrap();

    let first = a.call("send", json!({"courseId": course, "content": "once", "clientMsgId": "dup"})).await.unwrap();
    let retry = a.call("send", json!({"courseId": course, "content": "changed", "clientMsgId": "dup"})).await.unwrap();
    assert_eq!(first, retry);
    assert!(b.wait_for("message", WAIT).await.is_some());
    assert_eq!(b.wait_for("message", QUIET).await, None, "a retry is not delivered again");
    // Another user may use the same key.
    let other = b.call("send", json!({"courseId": course, "content": "mine", "clientMsgId": "dup"})).await.unwrap();
    assert_eq!(other["event"]["seq"], 2);
}

#[tokio::test]
async fn edits_and_deletes_follow_the_rules() {
    let app = TestApp::spawn().await;
    let professor = app.professor().await;
    let admin = app.admin().await;
    let (ann, ben) = (app.student("Ann").await, app.student("Ben").await);
    let course = app.course_with(&professor, &[&ann, &ben]).await;
    let a = app.socket("/chat", &ann.token).await;
    let b = app.socket("/chat", &ben.token).await;
    let p = app.socket("/chat", &professor.token).await;
    let root = app.socket("/chat", &admin.token).await;
    async fn send(socket: &coursecast_client::Socket, course: Uuid, key: &str) -> Value {
        let ack =
            socket.call("send", json!({"courseId": course, "content": "text", "clientMsgId": key})).await.unwrap();
        ack["event"]["messageId"].clone()
    }
    let first = send(&a, course, "1").await;

    let edit = |id: &Value| json!({"courseId": course, "messageId": id, "content": "edited"});
    assert_eq!(ack_code(&b.call("edit", edit(&first)).await.unwrap()), "FORBIDDEN");
    assert_eq!(ack_code(&p.call("edit", edit(&first)).await.unwrap()), "FORBIDDEN", "even the professor cannot edit");
    let edited = a.call("edit", edit(&first)).await.unwrap();
    assert_eq!(edited["event"]["type"], "message_edited");
    assert_eq!(edited["event"]["seq"], 2);
    assert_eq!(edited["event"]["messageId"], first);
    assert_eq!(edited["event"]["content"], "edited");
    let unknown = json!({"courseId": course, "messageId": Uuid::new_v4(), "content": "x"});
    assert_eq!(ack_code(&a.call("edit", unknown).await.unwrap()), "NOT_FOUND");

    let delete = |id: &Value| json!({"courseId": course, "messageId": id});
    assert_eq!(ack_code(&b.call("delete", delete(&first)).await.unwrap()), "FORBIDDEN");
    let deleted = a.call("delete", delete(&first)).await.unwrap();
    assert_eq!(deleted["event"]["type"], "message_deleted");
    assert!(deleted["event"].get("content").is_none());
    assert_eq!(ack_code(&a.call("delete", delete(&first)).await.unwrap()), "NOT_FOUND", "deleted once");
    assert_eq!(ack_code(&a.call("edit", edit(&first)).await.unwrap()), "NOT_FOUND", "no edits after delete");

    let by_ben = send(&b, course, "2").await;
    assert_eq!(ack_code(&p.call("delete", delete(&by_ben)).await.unwrap()), "<ok>", "the professor moderates");
    let by_ann = send(&a, course, "3").await;
    assert_eq!(ack_code(&root.call("delete", delete(&by_ann)).await.unwrap()), "<ok>", "an ADMIN moderates");
}

#[tokio::test]
async fn join_replays_missed_messages_in_pages() {
    let app = TestApp::spawn().await;
    let professor = app.professor().await;
    let ann = app.student("Ann").await;
    let course = app.course_with(&professor, &[&ann]).await;
    let a = app.socket("/chat", &ann.token).await;
    for i in 0..130 {
        a.call("send", json!({"courseId": course, "content": format!("m{i}"), "clientMsgId": format!("k{i}")}))
            .await
            .unwrap();
    }
    let late = app.socket("/chat", &professor.token).await;
    let head = late.call("join", json!({"courseId": course})).await.unwrap();
    assert_eq!((head["cursor"].clone(), head["missed"].clone()), (json!(130), json!([])));

    let first = late.call("join", json!({"courseId": course, "since": 0})).await.unwrap();
    let missed = first["missed"].as_array().unwrap();
    assert_eq!(missed.len(), 100);
    assert_eq!((first["cursor"].clone(), first["hasMore"].clone()), (json!(100), json!(true)));
    let seqs: Vec<i64> = missed.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    let rest = late.call("join", json!({"courseId": course, "since": 100})).await.unwrap();
    assert_eq!(rest["missed"].as_array().unwrap().len(), 30);
    assert_eq!((rest["cursor"].clone(), rest["hasMore"].clone()), (json!(130), json!(false)));
    assert_eq!(rest["missed"][29]["content"], "m129");
    let all = late.call("join", json!({"courseId": course, "since": 0, "limit": 1000})).await.unwrap();
    assert_eq!((all["missed"].as_array().unwrap().len(), all["hasMore"].clone()), (130, json!(false)));
    let one = late.call("join", json!({"courseId": course, "since": 0, "limit": 0})).await.unwrap();
    assert_eq!(one["missed"].as_array().unwrap().len(), 1, "limit is clamped to at least 1");
    let beyond = late.call("join", json!({"courseId": course, "since": 500})).await.unwrap();
    assert_eq!((beyond["cursor"].clone(), beyond["missed"].clone()), (json!(500), json!([])));
}

#[tokio::test]
async fn refusals_come_back_in_the_ack() {
    let app = TestApp::spawn().await;
    let professor = app.professor().await;
    let (ann, outsider) = (app.student("Ann").await, app.student("Out").await);
    let course = app.course_with(&professor, &[&ann]).await;
    let a = app.socket("/chat", &ann.token).await;
    let o = app.socket("/chat", &outsider.token).await;
    let send = |content: Value, key: Value| json!({"courseId": course, "content": content, "clientMsgId": key});

    let cases = [
        (send(json!(""), json!("k")), "VALIDATION_FAILED"),
        (send(json!("   \n "), json!("k")), "VALIDATION_FAILED"),
        (send(json!("x".repeat(4001)), json!("k")), "VALIDATION_FAILED"),
        (send(json!("bell\u{7}"), json!("k")), "VALIDATION_FAILED"),
        (send(json!("hi"), json!("")), "VALIDATION_FAILED"),
        (send(json!("hi"), json!("has space")), "VALIDATION_FAILED"),
        (send(json!("hi"), json!("x".repeat(65))), "VALIDATION_FAILED"),
        (json!({"courseId": course, "content": "hi"}), "VALIDATION_FAILED"),
        (
            json!({"courseId": course, "content": "hi", "clientMsgId": "k", "senderId": outsider.id}),
            "VALIDATION_FAILED",
        ),
        (json!({"courseId": "nope", "content": "hi", "clientMsgId": "k"}), "VALIDATION_FAILED"),
        (
            json!({"courseId": course, "content": "hi", "clientMsgId": "k", "channelId": "bad channel"}),
            "VALIDATION_FAILED",
        ),
        (json!("not an object"), "VALIDATION_FAILED"),
        (json!({"courseId": Uuid::new_v4(), "content": "hi", "clientMsgId": "k"}), "NOT_FOUND"),
    ];
    for (payload, code) in cases {
        assert_eq!(ack_code(&a.call("send", payload.clone()).await.unwrap()), code, "{payload}");
    }
    let ok = a
        .call(
            "send",
            json!({"courseId": course, "content": "x".repeat(4000), "clientMsgId": "k", "channelId": "general"}),
        )
        .await
        .unwrap();
    assert_eq!(ok["event"]["channelId"], "general");
    assert_eq!(ok["event"]["seq"], 1, "nothing refused was stored");

    assert_eq!(ack_code(&o.call("join", json!({"courseId": course})).await.unwrap()), "FORBIDDEN");
    assert_eq!(ack_code(&o.call("send", send(json!("hi"), json!("k2"))).await.unwrap()), "FORBIDDEN");
    assert_eq!(ack_code(&o.call("join", json!({"courseId": Uuid::new_v4()})).await.unwrap()), "NOT_FOUND");
    assert_eq!(ack_code(&o.call("join", json!({"courseId": course, "since": -1})).await.unwrap()), "VALIDATION_FAILED");
    assert_eq!(
        ack_code(&a.call("typing", json!({"courseId": course})).await.unwrap()),
        "FORBIDDEN",
        "typing needs a join"
    );
    assert_eq!(ack_code(&a.call("no-such-event", json!({})).await.unwrap()), "VALIDATION_FAILED");
}

#[tokio::test]
async fn failures_without_an_ack_become_error_events() {
    let app = TestApp::spawn().await;
    let ann = app.student("Ann").await;
    let mut a = app.socket("/chat", &ann.token).await;
    a.emit("bogus", json!({})).unwrap();
    let error = a.wait_for("error", WAIT).await.expect("error event");
    assert_eq!(error["code"], "VALIDATION_FAILED");
    assert!(error["message"].as_str().unwrap().contains("bogus"));
    a.emit("send", json!({"courseId": "x"})).unwrap();
    assert_eq!(a.wait_for("error", WAIT).await.unwrap()["code"], "VALIDATION_FAILED");
    a.emit("join", json!({"courseId": Uuid::new_v4()})).unwrap();
    assert_eq!(a.wait_for("error", WAIT).await.unwrap()["code"], "NOT_FOUND");
}

#[tokio::test]
async fn events_without_an_ack_still_run() {
    let app = TestApp::spawn().await;
    let professor = app.professor().await;
    let ann = app.student("Ann").await;
    let course = app.course_with(&professor, &[&ann]).await;
    let mut a = app.socket("/chat", &ann.token).await;
    a.call("join", json!({"courseId": course})).await.unwrap();
    a.emit("send", json!({"courseId": course, "content": "fire and forget", "clientMsgId": "f"})).unwrap();
    assert_eq!(a.wait_for("message", WAIT).await.unwrap()["content"], "fire and forget");
}

#[tokio::test]
async fn floods_are_refused_then_disconnected() {
    let app = TestApp::spawn_with(|s| {
        s.socket_events_per_sec = 2;
        s.socket_events_burst = 3;
    })
    .await;
    let ann = app.student("Ann").await;
    let connection = coursecast_client::Connection::open(&app.base, Default::default()).await.unwrap();
    let mut a = connection.socket("/chat", Some(json!({"token": ann.token}))).await.unwrap();
    let mut sibling = connection.socket("/notifications", Some(json!({"token": ann.token}))).await.unwrap();
    let mut bystander = app.socket("/notifications", &ann.token).await;
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(ack_code(&a.call("leave", json!({"courseId": Uuid::new_v4()})).await.unwrap()).to_owned());
    }
    assert_eq!(&codes[..3], ["<ok>", "<ok>", "<ok>"]);
    assert!(codes[3..].iter().all(|c| c == "RATE_LIMITED"), "{codes:?}");
    for _ in 0..10 {
        a.emit("leave", json!({"courseId": Uuid::new_v4()})).unwrap();
    }
    // The whole client goes: every namespace on its connection.
    assert!(a.disconnected(WAIT).await.is_some());
    assert!(sibling.disconnected(WAIT).await.is_some());
    assert_eq!(bystander.disconnected(QUIET).await, None, "another client stays");
    assert_eq!(bystander.call("sync", json!({})).await.unwrap()["ok"], true);
}

#[tokio::test]
async fn oversized_or_malformed_packets_close_only_that_connection() {
    let app = TestApp::spawn_with(|s| s.max_socket_payload = 2048).await;
    let professor = app.professor().await;
    let ann = app.student("Ann").await;
    let course = app.course_with(&professor, &[&ann]).await;
    let mut big = app.socket("/chat", &ann.token).await;
    let mut broken = app.socket("/chat", &ann.token).await;
    let mut bystander = app.socket("/chat", &professor.token).await;
    bystander.call("join", json!({"courseId": course})).await.unwrap();

    big.emit("send", json!({"courseId": course, "content": "x".repeat(3000), "clientMsgId": "big"})).unwrap();
    assert!(big.disconnected(WAIT).await.is_some(), "oversized packet");
    broken.send_raw("42/chat,[\"send\",{unclosed").unwrap();
    assert!(broken.disconnected(WAIT).await.is_some(), "malformed packet");

    let ack = bystander
        .call("send", json!({"courseId": course, "content": "still here", "clientMsgId": "ok"}))
        .await
        .unwrap();
    assert_eq!(ack["ok"], true);
    assert!(matches!(bystander.next(WAIT).await, Some(Incoming::Event(..))));
}

/// 1,000 events sent at once, none waiting for its answer, as a broken client or a
/// script would: before the server cuts the connection, the client is told why.
#[tokio::test]
async fn an_instant_flood_is_answered_rate_limited_before_the_cut() {
    let app = TestApp::spawn_with(|s| {
        s.socket_events_per_sec = 20;
        s.socket_events_burst = 40;
    })
    .await;
    let professor = app.professor().await;
    let ann = app.student("Ann").await;
    let course = app.course_with(&professor, &[&ann]).await;
    let mut socket = RawSocket::open(&app.base, "/chat", &RawOptions::default()).await.unwrap();
    socket.connect_ns(Some(json!({"token": ann.token}))).await.unwrap();
    for id in 0..1000u64 {
        let send = json!({"courseId": course, "content": "spam", "clientMsgId": format!("flood-{id}")});
        let event = encode_event("/chat,", "send", &send, Some(id));
        if socket.send_text(event).await.is_err() {
            break;
        }
    }
    let (mut acks, mut limited, mut error_event, mut cut) = (0, 0, None, false);
    let deadline = tokio::time::Instant::now() + WAIT;
    while let Ok(Ok(frame)) = tokio::time::timeout_at(deadline, socket.recv()).await {
        match frame {
            RawFrame::Ack { text, .. } => {
                acks += 1;
                limited += usize::from(text.contains("RATE_LIMITED"));
            }
            RawFrame::Event(text) if text.contains("\"error\"") => error_event = Some(text.to_string()),
            RawFrame::Disconnect | RawFrame::Closed => {
                cut = true;
                break;
            }
            RawFrame::Ping => socket.pong().await.unwrap(),
            _ => {}
        }
    }
    assert!(cut, "the flooding client is disconnected");
    assert!(limited > 0, "no RATE_LIMITED answer before the cut ({acks} acks)");
    let error_event = error_event.expect("an error event says why the connection is cut");
    assert!(error_event.contains("RATE_LIMITED"), "{error_event}");
}
