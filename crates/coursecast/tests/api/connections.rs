//! The connection manager drains: thousands of sockets come and go, and every
//! per-socket record is gone afterwards.

use futures_util::future::join_all;
use serde_json::json;

use crate::helpers::{TestApp, WAIT, eventually};

#[tokio::test]
async fn every_record_is_removed_after_thousands_of_connections() {
    let app = TestApp::spawn_with(|s| {
        s.max_connections = 10_000;
        s.max_sockets_per_user = 10_000;
    })
    .await;
    let professor = app.professor().await;
    let student = app.student("Many").await;
    let course = app.course_with(&professor, &[&student]).await;

    for _wave in 0..10 {
        let sockets = join_all((0..200).map(|_| async {
            let socket = app.socket("/chat", &student.token).await;
            socket.call("join", json!({"courseId": course})).await.unwrap();
            socket
        }))
        .await;
        let stats = app.state.realtime.connections.stats();
        assert_eq!((stats.clients, stats.sockets, stats.course_rooms), (200, 200, 1));
        for socket in &sockets {
            socket.connection().close();
        }
    }
    eventually("the connection maps to drain", WAIT, || async {
        let stats = app.state.realtime.connections.stats();
        stats.clients == 0 && stats.sockets == 0 && stats.user_entries == 0 && stats.course_rooms == 0
    })
    .await;
    let stats = app.state.realtime.connections.stats();
    assert!(stats.by_namespace.values().all(|n| *n == 0), "{stats:?}");
    assert!(app.state.realtime.connections.online(coursecast::realtime::Namespace::Chat, course).is_empty());
}
