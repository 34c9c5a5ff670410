//! Register, login, logout, me, and admin-managed users.

use serde_json::json;

use crate::helpers::{PASSWORD, TestApp};

#[tokio::test]
async fn register_login_and_me() {
    let app = TestApp::spawn().await;
    let res = app
        .post(
            "/api/auth/register",
            None,
            json!({"email": " Ada@Example.org ", "password": PASSWORD, "displayName": "Ada"}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.body);
    let user = &res.body["user"];
    assert_eq!(user["email"], "ada@example.org");
    assert_eq!(user["role"], "STUDENT");
    assert_eq!(user["displayName"], "Ada");
    assert!(user["createdAt"].as_str().unwrap().ends_with('Z'));
    assert!(user.get("passwordHash").is_none() && user.get("password_hash").is_none());

    let login = app.post("/api/auth/login", None, json!({"email": "ada@example.org", "password": PASSWORD})).await;
    assert_eq!(login.status, 200, "{}", login.body);
    let token = login.body["token"].as_str().unwrap();
    let me = app.get("/api/auth/me", Some(token)).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["user"]["id"], user["id"]);
}

#[tokio::test]
async fn register_refuses_bad_input_and_duplicates() {
    let app = TestApp::spawn().await;
    let good = json!({"email": "bob@example.org", "password": PASSWORD, "displayName": "Bob"});
    assert_eq!(app.post("/api/auth/register", None, good.clone()).await.status, 201);
    app.post("/api/auth/register", None, good).await.assert_error(409, "CONFLICT");
    let again_other_case = json!({"email": "BOB@example.org", "password": PASSWORD, "displayName": "Bob"});
    app.post("/api/auth/register", None, again_other_case).await.assert_error(409, "CONFLICT");

    let cases = [
        json!({"email": "not-an-email", "password": PASSWORD, "displayName": "X"}),
        json!({"email": "x@example.org", "password": "short", "displayName": "X"}),
        json!({"email": "x@example.org", "password": "x".repeat(129), "displayName": "X"}),
        json!({"email": "x@example.org", "password": PASSWORD, "displayName": "   "}),
        json!({"email": "x@example.org", "password": PASSWORD}),
        json!({"email": "x@example.org", "password": PASSWORD, "displayName": "X", "role": "ADMIN"}),
        json!({"email": 7, "password": PASSWORD, "displayName": "X"}),
    ];
    for body in cases {
        app.post("/api/auth/register", None, body).await.assert_error(400, "VALIDATION_FAILED");
    }
}

#[tokio::test]
async fn login_does_not_reveal_which_emails_exist() {
    let app = TestApp::spawn().await;
    let user = app.student("Cleo").await;
    let wrong_password =
        app.post("/api/auth/login", None, json!({"email": user.email, "password": "wrong password!"})).await;
    let unknown_email =
        app.post("/api/auth/login", None, json!({"email": "nobody@example.org", "password": PASSWORD})).await;
    let malformed_email = app.post("/api/auth/login", None, json!({"email": "nobody", "password": PASSWORD})).await;
    for res in [&wrong_password, &unknown_email, &malformed_email] {
        res.assert_error(401, "INVALID_CREDENTIALS");
    }
    assert_eq!(wrong_password.body, unknown_email.body);
    assert_eq!(unknown_email.body, malformed_email.body);
}

/// Both paths run one Argon2 verification; their times must be of the same order.
/// Requests alternate between the two, and medians are compared, so background load
/// on the machine affects both sides alike.
#[tokio::test]
async fn login_takes_as_long_for_unknown_emails() {
    let app = TestApp::spawn().await;
    let user = app.student("Dora").await;
    let time = |email: String| {
        let app = &app;
        async move {
            let started = std::time::Instant::now();
            let res = app.post("/api/auth/login", None, json!({"email": email, "password": "wrong password!"})).await;
            assert_eq!(res.status, 401);
            started.elapsed()
        }
    };
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for _ in 0..9 {
        known.push(time(user.email.clone()).await);
        unknown.push(time("ghost@example.org".to_owned()).await);
    }
    known.sort();
    unknown.sort();
    let ratio = known[4].as_secs_f64() / unknown[4].as_secs_f64();
    assert!((0.5..2.0).contains(&ratio), "median known {:?} vs unknown {:?}", known[4], unknown[4]);
}

#[tokio::test]
async fn logout_revokes_earlier_tokens_only() {
    let app = TestApp::spawn().await;
    let user = app.student("Eve").await;
    let second = app.post("/api/auth/login", None, json!({"email": user.email, "password": PASSWORD})).await;
    let second_token = second.body["token"].as_str().unwrap().to_owned();

    assert_eq!(app.post("/api/auth/logout", Some(&user.token), json!({})).await.body, json!({"ok": true}));
    app.get("/api/auth/me", Some(&user.token)).await.assert_error(401, "TOKEN_INVALID");
    app.get("/api/auth/me", Some(&second_token)).await.assert_error(401, "TOKEN_INVALID");

    let fresh = app.post("/api/auth/login", None, json!({"email": user.email, "password": PASSWORD})).await;
    let fresh_token = fresh.body["token"].as_str().unwrap();
    assert_eq!(app.get("/api/auth/me", Some(fresh_token)).await.status, 200);
}

/// One node (no `REDIS_URL`) makes every change of a token state itself, so it keeps
/// the states it read, and reads them all at start: the reconnect storm after a
/// restart asks the database nothing per handshake. Logout and deletion still take
/// effect at once.
#[tokio::test]
async fn a_restarted_node_knows_token_states_and_honours_logout_and_deletion_at_once() {
    let app = TestApp::spawn().await;
    let professor = app.professor().await;
    let admin = app.admin().await;
    let (ann, ben, cal) = (app.student("Ann").await, app.student("Ben").await, app.student("Cal").await);
    let course = app.course_with(&professor, &[&ann]).await;
    let app = app.restart().await;

    // Revoke Ann's tokens behind the server's back (no API does this): the state it
    // loaded at start answers, so the database was not asked.
    let later = chrono::Utc::now().timestamp() + 3600;
    execute_behind_its_back(&app, &format!("UPDATE users SET tokens_valid_from = {later} WHERE id = '{}'", ann.id))
        .await;
    let socket = app.socket("/chat", &ann.token).await;
    let joined = socket.call("join", json!({"courseId": course})).await.unwrap();
    assert_eq!(joined["ok"], true, "{joined}");

    // Through the API: at once, on sockets and HTTP.
    assert_eq!(app.post("/api/auth/logout", Some(&ben.token), json!({})).await.status, 200);
    assert_eq!(app.refusal("/chat", Some(json!({"token": ben.token})), Default::default()).await, "TOKEN_INVALID");
    app.get("/api/auth/me", Some(&ben.token)).await.assert_error(401, "TOKEN_INVALID");
    assert_eq!(app.get("/api/auth/me", Some(&cal.token)).await.status, 200);
    assert_eq!(app.delete(&format!("/api/users/{}", cal.id), Some(&admin.token)).await.body, json!({"ok": true}));
    app.get("/api/auth/me", Some(&cal.token)).await.assert_error(401, "TOKEN_INVALID");
}

/// Runs `sql` on the app's database over a connection of its own.
async fn execute_behind_its_back(app: &TestApp, sql: &str) {
    use sqlx::{Connection, sqlite::SqliteConnectOptions};
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match app.state.settings.database_url.as_deref() {
        Some(url) if url.starts_with("postgres") => {
            let mut conn = sqlx::PgConnection::connect(url).await.expect("connect to PostgreSQL");
            sqlx::query(sql).execute(&mut conn).await.expect("update");
        }
        Some(url) => panic!("no direct access to {url}"),
        None => {
            let options = SqliteConnectOptions::new().filename(app.state.settings.data_dir.join("coursecast.db"));
            let mut conn = sqlx::SqliteConnection::connect_with(&options).await.expect("open SQLite");
            sqlx::query(sql).execute(&mut conn).await.expect("update");
        }
    }
}

#[tokio::test]
async fn admins_create_and_delete_users_of_any_role() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let student = app.student("Finn").await;

    let body = json!({"email": "prof@example.org", "password": PASSWORD, "displayName": "Prof", "role": "PROFESSOR"});
    app.post("/api/users", Some(&student.token), body.clone()).await.assert_error(403, "FORBIDDEN");
    app.post("/api/users", None, body.clone()).await.assert_error(401, "TOKEN_MISSING");
    let created = app.post("/api/users", Some(&admin.token), body.clone()).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["user"]["role"], "PROFESSOR");
    app.post("/api/users", Some(&admin.token), body).await.assert_error(409, "CONFLICT");
    let bad_role = json!({"email": "x@example.org", "password": PASSWORD, "displayName": "X", "role": "SERVICE"});
    app.post("/api/users", Some(&admin.token), bad_role).await.assert_error(400, "VALIDATION_FAILED");

    let login = app.post("/api/auth/login", None, json!({"email": "prof@example.org", "password": PASSWORD})).await;
    assert_eq!(login.body["user"]["role"], "PROFESSOR");

    app.delete(&format!("/api/users/{}", student.id), Some(&student.token)).await.assert_error(403, "FORBIDDEN");
    let deleted = app.delete(&format!("/api/users/{}", student.id), Some(&admin.token)).await;
    assert_eq!(deleted.body, json!({"ok": true}));
    app.get("/api/auth/me", Some(&student.token)).await.assert_error(401, "TOKEN_INVALID");
    app.delete(&format!("/api/users/{}", student.id), Some(&admin.token)).await.assert_error(404, "NOT_FOUND");
    app.delete("/api/users/not-a-uuid", Some(&admin.token)).await.assert_error(400, "VALIDATION_FAILED");
}

#[tokio::test]
async fn a_professor_who_teaches_cannot_be_deleted() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let professor = app.professor().await;
    app.course_with(&professor, &[]).await;
    app.delete(&format!("/api/users/{}", professor.id), Some(&admin.token)).await.assert_error(409, "CONFLICT");
}
