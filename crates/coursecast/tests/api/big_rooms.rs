//! Big course rooms (PROTOCOL.md sections 3 and 5): joins answer with a count and a
//! bounded page, presence goes out as coalesced diffs, typing is throttled, and an
//! answer is never dropped when a socket's buffer is full.

use std::{collections::BTreeSet, time::Duration};

use futures_util::future::join_all;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{QUIET, TestApp, TestUser, WAIT, ack_code};

/// Waits for `presence` diffs until `done` says the room is as expected.
async fn presence_until(socket: &mut coursecast_client::Socket, done: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    while let Some(diff) = socket.wait_for("presence", WAIT).await {
        seen.push(diff.clone());
        if done(&diff) {
            return seen;
        }
    }
    panic!("presence never reached the expected state; saw {seen:?}");
}

fn ids(value: &Value) -> BTreeSet<String> {
    value.as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

#[tokio::test]
async fn joins_within_a_window_become_one_diff_and_a_user_is_online_once() {
    let app = TestApp::spawn_with(|s| s.presence_window_ms = 300).await;
    let professor = app.professor().await;
    let mut students = Vec::new();
    for name in ["Ann", "Ben", "Cat", "Dan"] {
        students.push(app.student(name).await);
    }
    let course = app.course_with(&professor, &students.iter().collect::<Vec<_>>()).await;
    let mut watcher = app.socket("/chat", &professor.token).await;
    watcher.call("join", json!({"courseId": course})).await.unwrap();
    presence_until(&mut watcher, |d| d["count"] == 1).await;

    // Everyone joins at once, Ann twice: one diff, Ann in it once.
    let sockets: Vec<_> = join_all(students.iter().chain([&students[0]]).map(|s| async {
        let socket = app.socket("/chat", &s.token).await;
        assert_eq!(ack_code(&socket.call("join", json!({"courseId": course})).await.unwrap()), "<ok>");
        socket
    }))
    .await;
    let diff = watcher.wait_for("presence", WAIT).await.expect("one diff");
    let joined: BTreeSet<String> = students.iter().map(|s| s.id.to_string()).collect();
    assert_eq!(
        (ids(&diff["online"]), ids(&diff["offline"]), diff["count"].clone()),
        (joined, BTreeSet::new(), json!(5))
    );
    assert_eq!(watcher.wait_for("presence", QUIET).await, None, "nothing more to say");

    // One of Ann's two sockets goes: she is still online. Ben goes: he is offline.
    sockets[4].connection().close();
    sockets[1].connection().close();
    let diffs = presence_until(&mut watcher, |d| d["count"] == 4).await;
    let offline: BTreeSet<String> = diffs.iter().flat_map(|d| ids(&d["offline"])).collect();
    assert_eq!(offline, BTreeSet::from([students[1].id.to_string()]));
}

#[tokio::test]
async fn a_room_above_the_threshold_gets_counts_only() {
    let app = TestApp::spawn_with(|s| {
        s.presence_window_ms = 50;
        s.presence_list_max = 2;
        s.presence_count_window_ms = 400;
    })
    .await;
    let professor = app.professor().await;
    let (ann, ben, cat) = (app.student("Ann").await, app.student("Ben").await, app.student("Cat").await);
    let course = app.course_with(&professor, &[&ann, &ben, &cat]).await;
    let mut watcher = app.socket("/chat", &professor.token).await;
    watcher.call("join", json!({"courseId": course})).await.unwrap();
    presence_until(&mut watcher, |d| d["count"] == 1).await;
    let mut sockets = Vec::new();
    let mut acks = Vec::new();
    for student in [&ann, &ben] {
        let socket = app.socket("/chat", &student.token).await;
        acks.push(socket.call("join", json!({"courseId": course})).await.unwrap());
        sockets.push(socket);
    }
    // The join ack lists the room's users up to the threshold, as its diffs do.
    let mut two = vec![professor.id, ann.id];
    two.sort();
    assert_eq!((acks[0]["online"].clone(), acks[0]["onlineCount"].clone()), (json!(two), json!(2)));
    assert_eq!((acks[1]["online"].clone(), acks[1]["onlineCount"].clone()), (json!([]), json!(3)));
    let diff = presence_until(&mut watcher, |d| d["count"] == 3).await.pop().unwrap();
    assert_eq!(diff, json!({"courseId": course, "count": 3}));

    // Above the threshold the count goes out once per PRESENCE_COUNT_WINDOW, not
    // once per PRESENCE_WINDOW.
    let cat_socket = app.socket("/chat", &cat.token).await;
    cat_socket.call("join", json!({"courseId": course})).await.unwrap();
    presence_until(&mut watcher, |d| d["count"] == 4).await;
    let left_at = std::time::Instant::now();
    cat_socket.connection().close();
    let diff = presence_until(&mut watcher, |d| d["count"] == 3).await.pop().unwrap();
    assert_eq!(diff, json!({"courseId": course, "count": 3}));
    assert!(left_at.elapsed() >= Duration::from_millis(300), "a big room's count waited {:?}", left_at.elapsed());
}

#[tokio::test]
async fn online_users_are_paged_over_sockets_and_http_alike() {
    let app = TestApp::spawn().await;
    let professor = app.professor().await;
    let mut students: Vec<TestUser> = Vec::new();
    for i in 0..5 {
        students.push(app.student(&format!("S{i}")).await);
    }
    let outsider = app.student("Out").await;
    let course = app.course_with(&professor, &students.iter().collect::<Vec<_>>()).await;
    let mut sockets = Vec::new();
    for student in &students {
        let socket = app.socket("/chat", &student.token).await;
        let ack = socket.call("join", json!({"courseId": course})).await.unwrap();
        assert_eq!(ack["onlineCount"], sockets.len() + 1);
        sockets.push(socket);
    }
    let mut all: Vec<Uuid> = students.iter().map(|s| s.id).collect();
    all.sort();

    let asker = app.socket("/chat", &professor.token).await;
    let first = asker.call("presence", json!({"courseId": course, "limit": 2})).await.unwrap();
    assert_eq!(first, json!({"ok": true, "courseId": course, "count": 5, "online": all[..2], "hasMore": true}));
    let rest = asker.call("presence", json!({"courseId": course, "after": all[1], "limit": 10})).await.unwrap();
    assert_eq!((rest["online"].clone(), rest["hasMore"].clone()), (json!(all[2..]), json!(false)));

    let path = format!("/api/realtime/presence/{course}?limit=2");
    let http = app.get(&path, Some(&professor.token)).await;
    assert_eq!(http.status, 200, "{}", http.body);
    let mut socket_answer = first.clone();
    socket_answer.as_object_mut().unwrap().remove("ok");
    assert_eq!(http.body, socket_answer, "the same page on both doors");
    let after = app.get(&format!("{path}&after={}", all[3]), Some(&professor.token)).await;
    assert_eq!(after.body["online"], json!([all[4]]));
    let collab =
        app.get(&format!("/api/realtime/presence/{course}?namespace=collaboration"), Some(&professor.token)).await;
    assert_eq!((collab.body["count"].clone(), collab.body["online"].clone()), (json!(0), json!([])));

    app.get(&path, Some(&outsider.token)).await.assert_error(403, "FORBIDDEN");
    app.get(&format!("{path}&namespace=analytics"), Some(&professor.token))
        .await
        .assert_error(400, "VALIDATION_FAILED");
    app.get(&format!("{path}&after=nope"), Some(&professor.token)).await.assert_error(400, "VALIDATION_FAILED");
    let outsider_socket = app.socket("/chat", &outsider.token).await;
    let refused = outsider_socket.call("presence", json!({"courseId": course})).await.unwrap();
    assert_eq!(ack_code(&refused), "FORBIDDEN");
}

#[tokio::test]
async fn typing_is_relayed_once_per_user_per_interval() {
    let app = TestApp::spawn_with(|s| s.typing_interval_ms = 60_000).await;
    let professor = app.professor().await;
    let (ann, ben) = (app.student("Ann").await, app.student("Ben").await);
    let course = app.course_with(&professor, &[&ann, &ben]).await;
    let mut a = app.socket("/chat", &ann.token).await;
    a.call("join", json!({"courseId": course})).await.unwrap();
    let b = app.socket("/chat", &ben.token).await;
    b.call("join", json!({"courseId": course})).await.unwrap();

    assert_eq!(b.call("typing", json!({"courseId": course})).await.unwrap()["relayed"], true);
    for _ in 0..5 {
        assert_eq!(b.call("typing", json!({"courseId": course})).await.unwrap(), json!({"ok": true, "relayed": false}));
    }
    assert!(a.wait_for("typing", WAIT).await.is_some());
    assert_eq!(a.wait_for("typing", QUIET).await, None, "throttled: one relayed");
}

/// Senders in many shared courses flood each other while every socket's buffer holds
/// only a few packets, so acks keep meeting full buffers: each one still arrives.
#[tokio::test]
async fn every_send_is_answered_when_buffers_are_full() {
    const SENDERS: usize = 8;
    const COURSES: usize = 20;
    const SENDS: usize = 150;
    let app = TestApp::spawn_with(|s| s.socket_buffer_packets = 4).await;
    let professor = app.professor().await;
    let mut students = Vec::new();
    for i in 0..SENDERS {
        students.push(app.student(&format!("Sender{i}")).await);
    }
    let members: Vec<&TestUser> = students.iter().collect();
    let mut courses = Vec::new();
    for _ in 0..COURSES {
        courses.push(app.course_with(&professor, &members).await);
    }
    let sockets = join_all(students.iter().map(|s| async {
        let socket = app.socket("/chat", &s.token).await;
        for course in &courses {
            assert_eq!(ack_code(&socket.call("join", json!({"courseId": course})).await.unwrap()), "<ok>");
        }
        socket
    }))
    .await;
    let deferred_before = deferred_answers(&app).await;

    let answers = join_all(sockets.iter().enumerate().flat_map(|(s, socket)| {
        let courses = &courses;
        (0..SENDS).map(move |i| async move {
            let course = courses[(s + i) % COURSES];
            let payload =
                json!({"courseId": course, "content": format!("m{s}-{i}"), "clientMsgId": format!("c{s}-{i}")});
            socket.call("send", payload).await
        })
    }))
    .await;
    let unanswered = answers.iter().filter(|a| a.is_err()).count();
    let refused: Vec<&Value> = answers.iter().flatten().filter(|a| a["ok"] != true).collect();
    assert_eq!((unanswered, refused.len()), (0, 0), "every send answered and stored; refusals: {refused:?}");
    assert!(deferred_answers(&app).await > deferred_before, "the test never filled a buffer: it proves nothing");
}

async fn deferred_answers(app: &TestApp) -> f64 {
    let text = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("coursecast_answers_deferred_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
