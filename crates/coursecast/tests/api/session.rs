//! Token lifetime on live sockets: `session:expiring`, disconnect at `exp`, `reauth`.

use serde_json::json;

use crate::helpers::{TestApp, WAIT, ack_code};

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test]
async fn a_socket_is_warned_then_disconnected_at_exp() {
    let app = TestApp::spawn().await;
    let user = app.student("Ada").await;
    let short = app.sign(json!({"sub": user.id, "role": "STUDENT", "iat": now(), "exp": now() + 3}));
    let mut socket = app.socket("/chat", &short).await;
    let warning = socket.wait_for("session:expiring", WAIT).await.expect("warned at once: under 60 s left");
    assert!(warning["expiresAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(socket.disconnected(WAIT).await.as_deref(), Some("io server disconnect"));
}

#[tokio::test]
async fn reauth_extends_the_session_for_the_same_user_only() {
    let app = TestApp::spawn().await;
    let user = app.student("Bea").await;
    let other = app.student("Cal").await;
    let short = app.sign(json!({"sub": user.id, "role": "STUDENT", "iat": now(), "exp": now() + 3}));
    let mut socket = app.socket("/notifications", &short).await;
    assert!(socket.wait_for("session:expiring", WAIT).await.is_some());

    assert_eq!(ack_code(&socket.call("reauth", json!({"token": other.token})).await.unwrap()), "FORBIDDEN");
    assert_eq!(ack_code(&socket.call("reauth", json!({"token": "junk"})).await.unwrap()), "TOKEN_INVALID");
    assert_eq!(ack_code(&socket.call("reauth", json!({"token": app.service_token()})).await.unwrap()), "FORBIDDEN");
    let renewed = socket.call("reauth", json!({"token": user.token})).await.unwrap();
    assert_eq!(renewed["ok"], true, "{renewed}");
    assert!(renewed["expiresAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(socket.disconnected(std::time::Duration::from_secs(5)).await, None, "still connected after the old exp");
    assert_eq!(socket.call("sync", json!({})).await.unwrap()["ok"], true);
}
