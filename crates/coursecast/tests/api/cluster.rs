//! Several nodes sharing storage and a Redis channel: live events, long polls and
//! disconnects cross nodes.

use serde_json::json;
use uuid::Uuid;

use crate::helpers::{TestApp, WAIT, eventually, test_redis_url};

async fn two_nodes() -> Option<(TestApp, TestApp)> {
    let redis = test_redis_url().await?;
    let channel = format!("coursecast-test-{}", Uuid::new_v4().simple());
    let a = TestApp::spawn_with(|s| {
        s.redis_url = Some(redis.clone());
        s.redis_channel = channel.clone();
    })
    .await;
    let b = a.another_node().await;
    // Each node's listener subscribes in the background; a message published before
    // both are subscribed is lost. The channel is this test's own: two subscribers
    // on it are the two nodes.
    let conn = redis::Client::open(redis.as_str())
        .expect("TEST_REDIS_URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connecting to Redis");
    eventually("both nodes to subscribe to the Redis channel", WAIT, || {
        let (mut conn, channel) = (conn.clone(), channel.clone());
        async move {
            let (_, subscribers): (String, usize) =
                redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query_async(&mut conn).await.expect("PUBSUB NUMSUB");
            subscribers == 2
        }
    })
    .await;
    Some((a, b))
}

#[tokio::test]
async fn events_committed_on_one_node_reach_sockets_and_polls_on_another() {
    let Some((a, b)) = two_nodes().await else { return };
    let professor = a.professor().await;
    let (ann, ben) = (a.student("Ann").await, a.student("Ben").await);
    let course = a.course_with(&professor, &[&ann, &ben]).await;

    let ready = a.get("/readyz", None).await;
    assert_eq!((ready.status.as_u16(), ready.body["redis"].clone()), (200, json!(true)));

    let mut on_a = a.socket("/chat", &ben.token).await;
    on_a.call("join", json!({"courseId": course})).await.unwrap();
    let sent = b
        .post(
            &format!("/api/realtime/messages/{course}"),
            Some(&ann.token),
            json!({"content": "from b", "clientMsgId": "x1"}),
        )
        .await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    assert_eq!(on_a.wait_for("message", WAIT).await.as_ref(), Some(&sent.body["event"]));

    let poll = {
        let (client, url, token) =
            (a.client.clone(), format!("{}/api/realtime/messages/{course}?since=1&wait=10", a.base), ben.token.clone());
        tokio::spawn(async move {
            client.get(url).bearer_auth(token).send().await.unwrap().json::<serde_json::Value>().await.unwrap()
        })
    };
    eventually("the poll on node a to be waiting", WAIT, || async { a.state.waiters.waiting() > 0 }).await;
    let on_b = b.socket("/chat", &ann.token).await;
    let ack =
        on_b.call("send", json!({"courseId": course, "content": "socket on b", "clientMsgId": "x2"})).await.unwrap();
    let polled = tokio::time::timeout(WAIT, poll).await.expect("the poll on node a was not woken").unwrap();
    assert_eq!(polled["events"][0], ack["event"]);

    let retry = a
        .post(
            &format!("/api/realtime/messages/{course}"),
            Some(&ann.token),
            json!({"content": "again", "clientMsgId": "x2"}),
        )
        .await;
    assert_eq!(retry.body["event"], ack["event"], "idempotency holds across nodes");
}

#[tokio::test]
async fn logout_on_one_node_disconnects_sockets_on_every_node() {
    let Some((a, b)) = two_nodes().await else { return };
    let user = a.student("Cy").await;
    let mut on_a = a.socket("/notifications", &user.token).await;
    let mut on_b = b.socket("/chat", &user.token).await;
    assert_eq!(b.post("/api/auth/logout", Some(&user.token), json!({})).await.status, 200);
    assert_eq!(on_b.disconnected(WAIT).await.as_deref(), Some("io server disconnect"));
    assert_eq!(on_a.disconnected(WAIT).await.as_deref(), Some("io server disconnect"));
    // Node A remembered the user's token state from the handshake; the notice made it forget.
    a.get("/api/auth/me", Some(&user.token)).await.assert_error(401, "TOKEN_INVALID");
}

#[tokio::test]
async fn readiness_fails_when_redis_is_unreachable() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/readyz", None).await.body["redis"], false);
    let mut settings = (*app.state.settings).clone();
    settings.redis_url = Some("redis://127.0.0.1:1".into());
    let failed = coursecast::app::build_state(settings).await;
    assert!(failed.is_err(), "a node must not start without its configured Redis");
}
