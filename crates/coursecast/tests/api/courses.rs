//! Courses and enrolment rules.

use serde_json::json;
use uuid::Uuid;

use crate::helpers::TestApp;

#[tokio::test]
async fn professors_create_courses_and_enrol_students() {
    let app = TestApp::spawn().await;
    let professor = app.professor().await;
    let student = app.student("Jo").await;
    let outsider = app.student("Kim").await;

    app.post("/api/courses", Some(&student.token), json!({"title": "Nope"})).await.assert_error(403, "FORBIDDEN");
    app.post("/api/courses", Some(&professor.token), json!({"title": "  "}))
        .await
        .assert_error(400, "VALIDATION_FAILED");
    app.post("/api/courses", Some(&professor.token), json!({"title": "x".repeat(201)}))
        .await
        .assert_error(400, "VALIDATION_FAILED");
    let created = app.post("/api/courses", Some(&professor.token), json!({"title": " Linear Algebra "})).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let course = &created.body["course"];
    assert_eq!(course["title"], "Linear Algebra");
    assert_eq!(course["professorId"], professor.id.to_string());
    let course_id = course["id"].as_str().unwrap();
    let members_path = format!("/api/courses/{course_id}/members");

    app.post(&members_path, Some(&student.token), json!({"userId": outsider.id})).await.assert_error(403, "FORBIDDEN");
    let enrolled = app.post(&members_path, Some(&professor.token), json!({"userId": student.id})).await;
    assert_eq!(enrolled.status, 201, "{}", enrolled.body);
    assert_eq!(enrolled.body["member"], json!({"userId": student.id, "displayName": "Jo", "role": "STUDENT"}));
    app.post(&members_path, Some(&professor.token), json!({"userId": student.id})).await.assert_error(409, "CONFLICT");
    app.post(&members_path, Some(&professor.token), json!({"userId": Uuid::new_v4()}))
        .await
        .assert_error(404, "NOT_FOUND");
    app.post(&members_path, Some(&professor.token), json!({"userId": "nope"}))
        .await
        .assert_error(400, "VALIDATION_FAILED");

    let members = app.get(&members_path, Some(&student.token)).await;
    assert_eq!(members.status, 200);
    let ids: Vec<&str> =
        members.body["members"].as_array().unwrap().iter().map(|m| m["userId"].as_str().unwrap()).collect();
    assert_eq!(ids, [professor.id.to_string(), student.id.to_string()]);
    app.get(&members_path, Some(&outsider.token)).await.assert_error(403, "FORBIDDEN");

    let mine = app.get("/api/courses", Some(&student.token)).await;
    assert_eq!(mine.body["courses"].as_array().unwrap().len(), 1);
    let theirs = app.get("/api/courses", Some(&outsider.token)).await;
    assert_eq!(theirs.body, json!({"courses": []}));
}

#[tokio::test]
async fn admins_see_and_manage_every_course() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let professor = app.professor().await;
    let other_professor = app.professor().await;
    let student = app.student("Lu").await;
    let course_id = app.course_with(&professor, &[]).await;
    app.course_with(&other_professor, &[]).await;

    let all = app.get("/api/courses", Some(&admin.token)).await;
    assert_eq!(all.body["courses"].as_array().unwrap().len(), 2);
    let members_path = format!("/api/courses/{course_id}/members");
    app.post(&members_path, Some(&other_professor.token), json!({"userId": student.id}))
        .await
        .assert_error(403, "FORBIDDEN");
    assert_eq!(app.post(&members_path, Some(&admin.token), json!({"userId": student.id})).await.status, 201);
    assert_eq!(app.get(&members_path, Some(&admin.token)).await.status, 200);
}

#[tokio::test]
async fn unknown_and_malformed_course_ids() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let unknown = format!("/api/courses/{}/members", Uuid::new_v4());
    app.get(&unknown, Some(&admin.token)).await.assert_error(404, "NOT_FOUND");
    app.post(&unknown, Some(&admin.token), json!({"userId": admin.id})).await.assert_error(404, "NOT_FOUND");
    app.get("/api/courses/123/members", Some(&admin.token)).await.assert_error(400, "VALIDATION_FAILED");
}
