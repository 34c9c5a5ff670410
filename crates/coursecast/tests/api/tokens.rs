//! Every token refusal of PROTOCOL.md section 1, over HTTP.

use serde_json::json;

use crate::helpers::TestApp;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test]
async fn missing_and_malformed_authorization() {
    let app = TestApp::spawn().await;
    app.get("/api/auth/me", None).await.assert_error(401, "TOKEN_MISSING");
    let res =
        app.client.get(format!("{}/api/auth/me", app.base)).header("authorization", "Basic abc").send().await.unwrap();
    assert_eq!(res.status(), 401);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "TOKEN_INVALID");
    app.get("/api/auth/me", Some("not.a.jwt")).await.assert_error(401, "TOKEN_INVALID");
}

#[tokio::test]
async fn forged_and_malformed_tokens_are_invalid() {
    let app = TestApp::spawn().await;
    let user = app.student("Gus").await;
    let sub = user.id.to_string();
    let t = now();

    let other_secret = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": sub, "role": "STUDENT", "iat": t, "exp": t + 600}),
        &jsonwebtoken::EncodingKey::from_secret(b"some-other-secret-entirely-000000"),
    )
    .unwrap();
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &json!({"sub": sub, "role": "STUDENT", "iat": t, "exp": t + 600}),
        &jsonwebtoken::EncodingKey::from_secret(app.state.settings.jwt_secret.as_deref().unwrap().as_bytes()),
    )
    .unwrap();
    // `alg: none`: a valid-looking body with no signature.
    let parts: Vec<&str> = user.token.split('.').collect();
    let alg_none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]);

    let invalid = [
        other_secret,
        hs512,
        alg_none,
        app.sign(json!({"sub": sub, "role": "STUDENT", "iat": t, "exp": "tomorrow"})),
        app.sign(json!({"sub": sub, "role": "STUDENT", "iat": "now", "exp": t + 600})),
        app.sign(json!({"sub": sub, "role": "STUDENT", "exp": t + 600})),
        app.sign(json!({"role": "STUDENT", "iat": t, "exp": t + 600})),
        app.sign(json!({"sub": sub, "iat": t, "exp": t + 600})),
        app.sign(json!({"sub": sub, "role": "STUDENT", "iat": t})),
        app.sign(json!({"sub": sub, "role": "TEACHER", "iat": t, "exp": t + 600})),
        app.sign(json!({"sub": sub, "role": "ADMIN", "iat": t, "exp": t + 600})),
        app.sign(json!({"sub": sub, "role": "STUDENT", "iat": t, "exp": t + 600, "nbf": t + 300})),
        app.sign(json!({"sub": uuid::Uuid::new_v4(), "role": "STUDENT", "iat": t, "exp": t + 600})),
        app.sign(json!({"sub": "not-a-uuid", "role": "STUDENT", "iat": t, "exp": t + 600})),
    ];
    for (i, token) in invalid.iter().enumerate() {
        let res = app.get("/api/auth/me", Some(token)).await;
        assert_eq!((res.status.as_u16(), res.code()), (401, "TOKEN_INVALID"), "case {i}: {}", res.body);
    }
}

#[tokio::test]
async fn expiry_has_thirty_seconds_of_leeway() {
    let app = TestApp::spawn().await;
    let user = app.student("Hal").await;
    let t = now();
    let expired = app.sign(json!({"sub": user.id, "role": "STUDENT", "iat": t - 3600, "exp": t - 60}));
    app.get("/api/auth/me", Some(&expired)).await.assert_error(401, "TOKEN_EXPIRED");
    let within_leeway = app.sign(json!({"sub": user.id, "role": "STUDENT", "iat": t - 3600, "exp": t - 10}));
    assert_eq!(app.get("/api/auth/me", Some(&within_leeway)).await.status, 200);
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let app = TestApp::spawn_with(|s| {
        s.jwt_issuer = Some("platform".into());
        s.jwt_audience = Some("coursecast".into());
    })
    .await;
    let user = app.student("Ivy").await;
    assert_eq!(app.get("/api/auth/me", Some(&user.token)).await.status, 200, "issued tokens carry iss/aud");
    let t = now();
    let wrong_iss =
        app.sign(json!({"sub": user.id, "role": "STUDENT", "iat": t, "exp": t + 60, "iss": "x", "aud": "coursecast"}));
    let no_aud = app.sign(json!({"sub": user.id, "role": "STUDENT", "iat": t, "exp": t + 60, "iss": "platform"}));
    app.get("/api/auth/me", Some(&wrong_iss)).await.assert_error(401, "TOKEN_INVALID");
    app.get("/api/auth/me", Some(&no_aud)).await.assert_error(401, "TOKEN_INVALID");
}

#[tokio::test]
async fn service_tokens_are_refused_on_user_endpoints() {
    let app = TestApp::spawn().await;
    let service = app.service_token();
    app.get("/api/auth/me", Some(&service)).await.assert_error(403, "FORBIDDEN");
    app.get("/api/courses", Some(&service)).await.assert_error(403, "FORBIDDEN");
}
