//! The demo seed: accounts, a course, enrolment, and tokens the server accepts.

use coursecast::seed;

use crate::helpers::TestApp;

#[tokio::test]
async fn seed_is_usable_and_idempotent() {
    let app = TestApp::spawn().await;
    let first = seed::seed(&app.state.store, app.state.auth.keys(), 30).await.unwrap();
    assert_eq!(first.users.len(), 30);
    let me = app.get("/api/auth/me", Some(&first.users[7].token)).await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.body["user"]["role"], "STUDENT");
    let admin = app.get("/api/auth/me", Some(&first.admin.token)).await;
    assert_eq!(admin.body["user"]["role"], "ADMIN");

    let members = app.get(&format!("/api/courses/{}/members", first.course_id), Some(&first.users[0].token)).await;
    assert_eq!(members.body["members"].as_array().unwrap().len(), 31, "professor + 30 students");

    let second = seed::seed(&app.state.store, app.state.auth.keys(), 45).await.unwrap();
    assert_eq!(second.course_id, first.course_id);
    assert_eq!(second.users.len(), 45);
    assert_eq!(second.admin.id, first.admin.id);
    for (a, b) in first.users.iter().zip(&second.users) {
        assert_eq!(a.id, b.id);
    }
    let members = app.get(&format!("/api/courses/{}/members", first.course_id), Some(&first.professor.token)).await;
    assert_eq!(members.body["members"].as_array().unwrap().len(), 46);

    let login = app
        .post(
            "/api/auth/login",
            None,
            serde_json::json!({"email": second.users[44].email, "password": seed::DEMO_PASSWORD}),
        )
        .await;
    assert_eq!(login.status, 200);
}
