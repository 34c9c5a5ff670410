//! The middleware stack: headers, CORS, request ids, limits, error shapes, ops endpoints.

use reqwest::Method;
use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn every_response_carries_security_headers_and_a_request_id() {
    let app = TestApp::spawn().await;
    for res in [app.get("/healthz", None).await, app.get("/api/nope", None).await, app.get("/api/auth/me", None).await]
    {
        assert_eq!(res.headers["x-content-type-options"], "nosniff");
        assert_eq!(res.headers["x-frame-options"], "DENY");
        assert_eq!(res.headers["referrer-policy"], "no-referrer");
        assert_eq!(res.headers["content-security-policy"], "default-src 'none'");
        assert!(!res.headers["x-request-id"].is_empty());
    }
    let res =
        app.client.get(format!("{}/healthz", app.base)).header("x-request-id", "trace-me-42").send().await.unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-me-42");
}

#[tokio::test]
async fn cors_allows_only_listed_origins() {
    let app = TestApp::spawn_with(|s| {
        s.cors_origins = vec!["http://localhost:5173".into(), "https://app.example.org".into()]
    })
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, format!("{}/api/auth/login", app.base))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,authorization")
            .send()
    };
    let allowed = preflight("https://app.example.org").await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example.org");
    let refused = preflight("https://evil.example.com").await.unwrap();
    assert!(refused.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn unknown_routes_and_methods_get_the_error_shape() {
    let demo = std::env::temp_dir().join(format!("coursecast-demo-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&demo).unwrap();
    std::fs::write(demo.join("index.html"), "<p>demo</p>").unwrap();
    let app = TestApp::spawn_with(|s| s.demo_dir = demo.clone()).await;
    app.get("/api/does-not-exist", None).await.assert_error(404, "NOT_FOUND");
    app.get("/demo/missing.js", None).await.assert_error(404, "NOT_FOUND");
    assert_eq!(app.get("/demo/index.html", None).await.status, 200);
    let wrong_method = app.delete("/api/auth/login", None).await;
    wrong_method.assert_error(405, "METHOD_NOT_ALLOWED");
    app.request(Method::PUT, "/api/auth/me", None, Some(json!({}))).await.assert_error(405, "METHOD_NOT_ALLOWED");
    let _ = std::fs::remove_dir_all(&demo);
}

#[tokio::test]
async fn refusals_name_the_field_and_rule_never_the_input() {
    let app = TestApp::spawn().await;
    let student = app.student("Quinn").await;
    let injected = "%27%3B%20DROP%20TABLE%20users%3B--";
    let cases = [
        app.get(&format!("/api/realtime/messages/{injected}"), Some(&student.token)).await,
        app.get(&format!("/api/courses/{injected}/members"), Some(&student.token)).await,
        app.get(&format!("/api/realtime/notifications/{}?since=DROPTABLE", student.id), Some(&student.token)).await,
        app.post("/api/auth/login", None, json!({"email": 5, "password": "DROP TABLE users"})).await,
        app.post("/api/auth/login", None, json!({"email": "a@b.org", "password": "x", "DROP<script>": 1})).await,
    ];
    for res in &cases {
        res.assert_error(400, "VALIDATION_FAILED");
        let message = res.body["error"]["message"].as_str().unwrap();
        assert!(!message.contains("DROP") && !message.contains("<script>"), "input echoed: {message}");
    }
    let path_message = cases[0].body["error"]["message"].as_str().unwrap();
    assert!(path_message.contains("course_id") && path_message.contains("UUID"), "{path_message}");
}

#[tokio::test]
async fn malformed_bodies_are_validation_failures() {
    let app = TestApp::spawn().await;
    let send = |body: &'static str, content_type: &'static str| {
        app.client.post(format!("{}/api/auth/login", app.base)).header("content-type", content_type).body(body).send()
    };
    for (body, content_type) in
        [("{not json", "application/json"), ("[]", "application/json"), ("{}", "text/plain"), ("", "application/json")]
    {
        let res = send(body, content_type).await.unwrap();
        assert_eq!(res.status(), 400, "{body:?} as {content_type}");
        let json: serde_json::Value = res.json().await.unwrap();
        assert_eq!(json["error"]["code"], "VALIDATION_FAILED");
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let app = TestApp::spawn_with(|s| s.max_body_bytes = 1024).await;
    let big = json!({"email": "a@example.org", "password": "x".repeat(2000), "displayName": "A"});
    app.post("/api/auth/register", None, big).await.assert_error(413, "PAYLOAD_TOO_LARGE");
    let small = json!({"email": "a@example.org", "password": "x".repeat(20), "displayName": "A"});
    assert_eq!(app.post("/api/auth/register", None, small).await.status, 201);
}

#[tokio::test]
async fn registration_is_rate_limited_per_ip() {
    let app = TestApp::spawn_with(|s| {
        s.auth_rate_per_sec = 1;
        s.auth_rate_burst = 3;
    })
    .await;
    let body =
        |i: usize| json!({"email": format!("new{i}@example.org"), "password": "whatever-password", "displayName": "N"});
    for i in 0..3 {
        assert_eq!(app.post("/api/auth/register", None, body(i)).await.status, 201);
    }
    let limited = app.post("/api/auth/register", None, body(3)).await;
    limited.assert_error(429, "RATE_LIMITED");
    let retry_after: u64 = limited.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    // Other endpoints, logins included, are not limited by it.
    assert_eq!(app.get("/healthz", None).await.status, 200);
    let login = json!({"email": "new0@example.org", "password": "whatever-password"});
    assert_eq!(app.post("/api/auth/login", None, login).await.status, 200);
}

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz", None).await.body, json!({"ok": true}));
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["ok"], true);
    app.state.store.close().await;
    app.get("/readyz", None).await.assert_error(503, "UNAVAILABLE");
}

#[tokio::test]
async fn stops_on_request_and_releases_the_port() {
    let mut app = TestApp::spawn().await;
    let addr = app.addr;
    assert_eq!(app.get("/healthz", None).await.status, 200);
    app.stop().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still accepting after stop");
}
