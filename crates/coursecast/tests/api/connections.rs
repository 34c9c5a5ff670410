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
        assert_eq!((stats.clients, stats.sockets, app.state.realtime.presence.rooms()), (200, 200, 1));
        for socket in &sockets {
            socket.connection().close();
        }
    }
    // Presence keeps an emptied room until its last diff is out (one window).
    eventually("the connection maps and presence rooms to drain", WAIT, || async {
        let stats = app.state.realtime.connections.stats();
        stats.clients == 0 && stats.sockets == 0 && stats.user_entries == 0 && app.state.realtime.presence.rooms() == 0
    })
    .await;
    let stats = app.state.realtime.connections.stats();
    assert!(stats.by_namespace.values().all(|n| *n == 0), "{stats:?}");
    let page = app.state.realtime.presence.page(coursecast::realtime::Namespace::Chat, course, None, 10);
    assert_eq!(page.count, 0);
}
