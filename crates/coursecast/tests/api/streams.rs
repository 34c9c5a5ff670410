//! Notifications, analysis progress and annotations: stored streams delivered to
//! their sockets and readable over polling.

use coursecast::{
    domain::{ClientMsgId, MessageContent},
    error::AppError,
    events::publisher::MAX_BATCH,
    streams::{Append, Appended, StreamKey},
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{QUIET, TestApp, WAIT, ack_code};

fn notify_user(user: Uuid, title: &str) -> Value {
    json!({"userId": user, "notificationType": "ASSIGNMENT_DUE", "title": title, "message": "Due Friday", "priority": "HIGH"})
}

#[tokio::test]
async fn notifications_reach_every_socket_of_their_user() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let ann = app.student("Ann").await;
    let ben = app.student("Ben").await;
    let mut first = app.socket("/notifications", &ann.token).await;
    let mut second = app.socket("/notifications", &ann.token).await;
    let mut other = app.socket("/notifications", &ben.token).await;

    let created = app.post("/api/notifications", Some(&admin.token), notify_user(ann.id, "Homework")).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let event = created.body["events"][0].clone();
    assert_eq!(event["type"], "notification_new");
    assert_eq!((event["seq"].clone(), event["userId"].clone()), (json!(1), json!(ann.id)));
    assert_eq!(
        (event["notificationType"].clone(), event["priority"].clone()),
        (json!("ASSIGNMENT_DUE"), json!("HIGH"))
    );
    assert_eq!(first.wait_for("notification", WAIT).await.as_ref(), Some(&event));
    assert_eq!(second.wait_for("notification", WAIT).await.as_ref(), Some(&event));
    assert_eq!(other.wait_for("notification", QUIET).await, None);

    let synced = first.call("sync", json!({"since": 0})).await.unwrap();
    assert_eq!(synced, json!({"ok": true, "events": [event], "cursor": 1, "hasMore": false}));

    let id = event["notificationId"].as_str().unwrap();
    assert_eq!(ack_code(&other.call("read", json!({"notificationId": id})).await.unwrap()), "FORBIDDEN");
    let read = first.call("read", json!({"notificationId": id})).await.unwrap();
    assert_eq!(read["event"]["type"], "notification_read");
    assert_eq!(read["event"]["seq"], 2);
    assert_eq!(read["event"]["title"], "Homework");
    assert_eq!(second.wait_for("notification", WAIT).await.unwrap()["type"], "notification_read");
    let again = app.post(&format!("/api/realtime/notifications/{id}/read"), Some(&ann.token), json!({})).await;
    assert_eq!(again.body["event"], read["event"], "reading twice answers with the first read");
    let polled = app.get(&format!("/api/realtime/notifications/{}", ann.id), Some(&ann.token)).await;
    assert_eq!(polled.body["cursor"], 2);
}

#[tokio::test]
async fn who_may_notify_whom() {
    let app = TestApp::spawn().await;
    let professor = app.professor().await;
    let (ann, ben, outsider) = (app.student("Ann").await, app.student("Ben").await, app.student("Out").await);
    let course = app.course_with(&professor, &[&ann, &ben]).await;
    let other_professor = app.professor().await;

    app.post("/api/notifications", Some(&ann.token), notify_user(ben.id, "x")).await.assert_error(403, "FORBIDDEN");
    app.post("/api/notifications", Some(&professor.token), notify_user(outsider.id, "x"))
        .await
        .assert_error(403, "FORBIDDEN");
    assert_eq!(app.post("/api/notifications", Some(&professor.token), notify_user(ann.id, "x")).await.status, 201);
    let to_course = |course: Uuid| json!({"courseId": course, "notificationType": "SYSTEM_UPDATE", "title": "Room change", "message": "B12", "priority": "NORMAL"});
    app.post("/api/notifications", Some(&other_professor.token), to_course(course))
        .await
        .assert_error(403, "FORBIDDEN");
    let broadcast = app.post("/api/notifications", Some(&professor.token), to_course(course)).await;
    let recipients: Vec<&str> =
        broadcast.body["events"].as_array().unwrap().iter().map(|e| e["userId"].as_str().unwrap()).collect();
    assert_eq!(recipients.len(), 2, "every member but the sender: {recipients:?}");
    assert_eq!(
        app.post("/api/notifications", Some(&app.service_token()), notify_user(outsider.id, "x")).await.status,
        201
    );

    let bad = [
        json!({"notificationType": "SYSTEM_UPDATE", "title": "t", "message": "m", "priority": "LOW"}),
        json!({"userId": ann.id, "courseId": course, "notificationType": "SYSTEM_UPDATE", "title": "t", "message": "m", "priority": "LOW"}),
        json!({"userId": ann.id, "notificationType": "GOSSIP", "title": "t", "message": "m", "priority": "LOW"}),
        json!({"userId": ann.id, "notificationType": "SYSTEM_UPDATE", "title": "t", "message": "m", "priority": "MEH"}),
        json!({"userId": ann.id, "notificationType": "SYSTEM_UPDATE", "title": " ", "message": "m", "priority": "LOW"}),
    ];
    for body in bad {
        app.post("/api/notifications", Some(&professor.token), body).await.assert_error(400, "VALIDATION_FAILED");
    }
    app.post("/api/notifications", Some(&app.service_token()), notify_user(Uuid::new_v4(), "x"))
        .await
        .assert_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn analysis_progress_reaches_owner_and_watchers_and_completes_once() {
    let app = TestApp::spawn().await;
    let professor = app.professor().await;
    let (ann, ben) = (app.student("Ann").await, app.student("Ben").await);
    let course = app.course_with(&professor, &[&ann, &ben]).await;
    let service = app.service_token();

    let started =
        app.post("/api/analyses", Some(&ann.token), json!({"courseId": course, "input": {"image": "scan.png"}})).await;
    assert_eq!(started.status, 201, "{}", started.body);
    let analysis = started.body["analysisId"].as_str().unwrap().to_owned();
    let progress_path = format!("/api/analyses/{analysis}/progress");

    let mut owner = app.socket("/analytics", &ann.token).await;
    let mut notices = app.socket("/notifications", &ann.token).await;
    let mut watcher = app.socket("/analytics", &professor.token).await;
    let mut bystander = app.socket("/analytics", &ben.token).await;
    assert_eq!(ack_code(&bystander.call("watch", json!({"courseId": course})).await.unwrap()), "FORBIDDEN");
    assert_eq!(ack_code(&watcher.call("watch", json!({"courseId": Uuid::new_v4()})).await.unwrap()), "NOT_FOUND");
    assert_eq!(watcher.call("watch", json!({"courseId": course})).await.unwrap(), json!({"ok": true}));

    app.post(&progress_path, Some(&ann.token), json!({"progress": 10})).await.assert_error(403, "FORBIDDEN");
    app.post(&progress_path, Some(&service), json!({"progress": 101})).await.assert_error(400, "VALIDATION_FAILED");
    app.post(&progress_path, Some(&service), json!({"progress": -1})).await.assert_error(400, "VALIDATION_FAILED");
    app.post(&format!("/api/analyses/{}/progress", Uuid::new_v4()), Some(&service), json!({"progress": 1}))
        .await
        .assert_error(404, "NOT_FOUND");

    let half = app.post(&progress_path, Some(&service), json!({"progress": 50, "data": {"stage": "segmenting"}})).await;
    assert_eq!(half.status, 200, "{}", half.body);
    let event = &half.body["event"];
    assert_eq!(
        (event["type"].clone(), event["progress"].clone(), event["seq"].clone()),
        (json!("analysis_progress"), json!(50), json!(1))
    );
    assert_eq!(owner.wait_for("progress", WAIT).await.as_ref(), Some(event));
    assert_eq!(watcher.wait_for("progress", WAIT).await.as_ref(), Some(event));
    assert_eq!(bystander.wait_for("progress", QUIET).await, None);

    let done = app.post(&progress_path, Some(&service), json!({"progress": 100, "data": {"label": "benign"}})).await;
    assert_eq!(done.body["event"]["type"], "analysis_complete");
    assert_eq!(owner.wait_for("progress", WAIT).await.unwrap()["type"], "analysis_complete");
    let notice = notices.wait_for("notification", WAIT).await.expect("completion notification");
    assert_eq!(notice["notificationType"], "CNN_ANALYSIS_COMPLETE");
    app.post(&progress_path, Some(&service), json!({"progress": 100})).await.assert_error(409, "CONFLICT");

    let synced = owner.call("sync", json!({})).await.unwrap();
    assert_eq!(synced["events"].as_array().unwrap().len(), 2);
    let polled = app.get(&format!("/api/realtime/progress/{}", ann.id), Some(&ann.token)).await;
    assert_eq!(polled.body["events"], synced["events"]);
    assert_eq!(
        app.get(&format!("/api/realtime/progress/{}", professor.id), Some(&professor.token)).await.body["events"],
        json!([])
    );

    app.post("/api/analyses", Some(&app.student("Out").await.token), json!({"courseId": course, "input": {}}))
        .await
        .assert_error(403, "FORBIDDEN");
}

#[tokio::test]
async fn annotations_are_stored_replayed_and_cursors_relayed() {
    let app = TestApp::spawn().await;
    let professor = app.professor().await;
    let (ann, ben) = (app.student("Ann").await, app.student("Ben").await);
    let course = app.course_with(&professor, &[&ann, &ben]).await;
    let mut a = app.socket("/collaboration", &ann.token).await;
    let mut b = app.socket("/collaboration", &ben.token).await;
    a.call("join", json!({"courseId": course})).await.unwrap();
    b.call("join", json!({"courseId": course})).await.unwrap();

    let annotation = json!({"courseId": course, "documentId": "week1.pdf", "annotation": {"page": 2, "text": "see eq. 3"}, "clientMsgId": "a1"});
    let ack = a.call("annotate", annotation.clone()).await.unwrap();
    assert_eq!(ack["ok"], true, "{ack}");
    let event = ack["event"].clone();
    assert_eq!(
        (event["seq"].clone(), event["documentId"].clone(), event["userId"].clone()),
        (json!(1), json!("week1.pdf"), json!(ann.id))
    );
    assert_eq!(b.wait_for("annotation", WAIT).await.as_ref(), Some(&event));
    assert_eq!(a.call("annotate", annotation).await.unwrap()["event"], event, "idempotent");

    let bad = [
        json!({"courseId": course, "documentId": "w", "annotation": "text", "clientMsgId": "a2"}),
        json!({"courseId": course, "documentId": "../x", "annotation": {}, "clientMsgId": "a2"}),
        json!({"courseId": course, "documentId": "w", "annotation": {"t": "x".repeat(17_000)}, "clientMsgId": "a2"}),
    ];
    for payload in bad {
        assert_eq!(ack_code(&a.call("annotate", payload).await.unwrap()), "VALIDATION_FAILED");
    }

    assert_eq!(
        b.call("cursor", json!({"courseId": course, "documentId": "week1.pdf", "position": {"x": 3}})).await.unwrap(),
        json!({"ok": true, "relayed": true})
    );
    let cursor = a.wait_for("cursor", WAIT).await.unwrap();
    assert_eq!(cursor, json!({"courseId": course, "documentId": "week1.pdf", "userId": ben.id, "position": {"x": 3}}));
    assert_eq!(b.wait_for("cursor", QUIET).await, None);

    let late = app.socket("/collaboration", &professor.token).await;
    let replay = late.call("join", json!({"courseId": course, "since": 0})).await.unwrap();
    assert_eq!(replay["missed"], json!([event]));
    let polled = app.get(&format!("/api/realtime/annotations/{course}"), Some(&professor.token)).await;
    assert_eq!(polled.body["events"], json!([event]));
    let http = app
        .post(
            &format!("/api/realtime/annotations/{course}"),
            Some(&ben.token),
            json!({"documentId": "week1.pdf", "annotation": {"hl": [1, 4]}, "clientMsgId": "h1"}),
        )
        .await;
    assert_eq!(http.status, 201, "{}", http.body);
    assert_eq!(a.wait_for("annotation", WAIT).await.unwrap(), http.body["event"]);
}

/// The largest batch the writer commits fits both backends' statement limits, and a
/// retry of all of it is answered with every original (each key found through the
/// idempotency index) without storing anything again.
#[tokio::test]
async fn a_full_batch_is_stored_once_and_its_retry_returns_the_originals() {
    let app = TestApp::spawn().await;
    let professor = app.professor().await;
    let course = app.course_with(&professor, &[]).await;
    let ops: Vec<Append> = (0..MAX_BATCH)
        .map(|i| Append::SendMessage {
            course_id: course,
            sender_id: professor.id,
            channel_id: None,
            content: MessageContent::parse(&format!("message {i}"), 100).unwrap(),
            client_msg_id: ClientMsgId::parse(&format!("key-{i}")).unwrap(),
        })
        .collect();
    let events = |outcomes: Vec<Result<Appended, AppError>>, duplicate: bool| -> Vec<(i64, String)> {
        outcomes
            .into_iter()
            .map(|outcome| {
                let appended = outcome.unwrap();
                assert_eq!(appended.duplicate, duplicate);
                (appended.events[0].seq, appended.events[0].payload.get().to_owned())
            })
            .collect()
    };

    let stored = events(app.state.store.append_batch(&ops).await.unwrap(), false);
    let seqs: Vec<i64> = stored.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=MAX_BATCH as i64).collect::<Vec<_>>());

    let retried = events(app.state.store.append_batch(&ops).await.unwrap(), true);
    assert_eq!(retried, stored);
    assert_eq!(app.state.store.stream_head(StreamKey::messages(course)).await.unwrap(), MAX_BATCH as i64);
}
