//! The OpenAPI document (`GET /api/openapi.json`) and the server it describes: the
//! same routes both ways, and real answers that validate against its schemas.

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Resp, TestApp};

/// Every operation of the HTTP API that the router answers (`src/http/*.rs`), by
/// method and path as the router names them. Pages and files (`/admin`, `/demo/`)
/// and the Socket.IO endpoint are not part of the API.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/auth/register"),
    ("post", "/api/auth/login"),
    ("post", "/api/auth/logout"),
    ("get", "/api/auth/me"),
    ("post", "/api/users"),
    ("delete", "/api/users/{user_id}"),
    ("post", "/api/courses"),
    ("get", "/api/courses"),
    ("post", "/api/courses/{course_id}/members"),
    ("get", "/api/courses/{course_id}/members"),
    ("post", "/api/notifications"),
    ("post", "/api/analyses"),
    ("post", "/api/analyses/{analysis_id}/progress"),
    ("get", "/api/realtime/messages/{course_id}"),
    ("post", "/api/realtime/messages/{course_id}"),
    ("patch", "/api/realtime/messages/{course_id}/{message_id}"),
    ("delete", "/api/realtime/messages/{course_id}/{message_id}"),
    ("get", "/api/realtime/annotations/{course_id}"),
    ("post", "/api/realtime/annotations/{course_id}"),
    ("get", "/api/realtime/notifications/{user_id}"),
    ("post", "/api/realtime/notifications/{notification_id}/read"),
    ("get", "/api/realtime/progress/{user_id}"),
    ("get", "/api/realtime/presence/{course_id}"),
    ("post", "/api/realtime/ping"),
    ("get", "/api/realtime/status"),
    ("get", "/api/realtime/stream"),
    ("get", "/api/admin/stats"),
    ("get", "/api/openapi.json"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn document(app: &TestApp) -> Value {
    let res = app.get("/api/openapi.json", None).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.headers["content-type"], "application/json");
    res.body
}

/// `path` with every `{param}` replaced by a fresh UUID.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| if segment.starts_with('{') { Uuid::new_v4().to_string() } else { segment.to_owned() })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn the_document_is_openapi_3_1_with_both_token_schemes() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let schemes = &doc["components"]["securitySchemes"];
    for scheme in ["bearer", "service"] {
        assert_eq!(schemes[scheme]["scheme"], "bearer", "{scheme}: {schemes}");
        assert_eq!(schemes[scheme]["bearerFormat"], "JWT");
    }
    let progress = &doc["paths"]["/api/analyses/{analysis_id}/progress"]["post"];
    assert_eq!(progress["security"], json!([{"service": []}]));
    let codes = &doc["components"]["schemas"]["ErrorCode"]["enum"];
    assert!(codes.as_array().is_some_and(|c| c.contains(&json!("VALIDATION_FAILED"))), "{codes}");
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_every_route_is_documented() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented = Vec::new();
    for (path, item) in paths {
        let url = concrete(path);
        for method in METHODS {
            let res =
                app.request(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(), &url, None, None).await;
            let answered = format!("{method} {url}: {} {}", res.status, res.body);
            if item.get(method).is_some() {
                documented.push((method, path.as_str()));
                assert_ne!(res.body["error"]["message"], "no such route", "{answered}");
                assert_ne!(res.status, 405, "{answered}");
            } else {
                // An undocumented method on a documented path is not served either.
                assert_eq!((res.status.as_u16(), res.code()), (405, "METHOD_NOT_ALLOWED"), "{answered}");
            }
        }
    }
    let mut routes = ROUTES.to_vec();
    routes.sort_unstable();
    documented.sort_unstable();
    assert_eq!(documented, routes, "the document and the router's routes differ");
}

/// Validates `res`'s body against the schema the document gives `method path` for
/// its status (the refusals' too), formats included.
fn assert_conforms(doc: &Value, method: &str, path: &str, res: &Resp) {
    let status = res.status.as_u16().to_string();
    let pointer = format!("/paths/{}/{method}/responses/{status}", path.replace('/', "~1"));
    assert!(doc.pointer(&pointer).is_some(), "{method} {path} does not document {status}: {}", res.body);
    // The document is the root, so that `$ref`s into its components resolve.
    let mut root = doc.clone();
    let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
    root["$ref"] = json!(format!("#{fragment}/content/application~1json/schema"));
    let validator =
        jsonschema::draft202012::options().should_validate_formats(true).build(&root).expect("a valid schema");
    let errors: Vec<String> =
        validator.iter_errors(&res.body).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{method} {path} {status}: {errors:?}\nbody: {}", res.body);
}

#[tokio::test]
async fn real_answers_validate_against_their_schemas() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let check = |method: &str, path: &str, res: &Resp| assert_conforms(&doc, method, path, res);

    let email = format!("ann-{}@example.org", Uuid::new_v4().simple());
    let registered = app
        .post(
            "/api/auth/register",
            None,
            json!({"email": email, "password": crate::helpers::PASSWORD, "displayName": "Ann"}),
        )
        .await;
    check("post", "/api/auth/register", &registered);
    let ann_token = registered.body["token"].as_str().unwrap().to_owned();
    let ann_id = registered.body["user"]["id"].as_str().unwrap().to_owned();
    let ann = Some(ann_token.as_str());
    check("get", "/api/auth/me", &app.get("/api/auth/me", ann).await);

    let professor = app.professor().await;
    let prof = Some(professor.token.as_str());
    let created = app.post("/api/courses", prof, json!({"title": "Schemas"})).await;
    check("post", "/api/courses", &created);
    let course = created.body["course"]["id"].as_str().unwrap().to_owned();
    let member = app.post(&format!("/api/courses/{course}/members"), prof, json!({"userId": ann_id})).await;
    check("post", "/api/courses/{course_id}/members", &member);
    check("get", "/api/courses/{course_id}/members", &app.get(&format!("/api/courses/{course}/members"), ann).await);
    check("get", "/api/courses", &app.get("/api/courses", ann).await);

    let messages = format!("/api/realtime/messages/{course}");
    let sent = app.post(&messages, ann, json!({"content": "hello", "clientMsgId": "m1", "channelId": null})).await;
    check("post", "/api/realtime/messages/{course_id}", &sent);
    let message = sent.body["event"]["messageId"].as_str().unwrap();
    let edited = app.patch(&format!("{messages}/{message}"), ann, json!({"content": "hello again"})).await;
    check("patch", "/api/realtime/messages/{course_id}/{message_id}", &edited);
    check("get", "/api/realtime/messages/{course_id}", &app.get(&messages, ann).await);
    let annotated = app
        .post(
            &format!("/api/realtime/annotations/{course}"),
            ann,
            json!({"documentId": "doc-1", "annotation": {"page": 1}, "clientMsgId": "a1"}),
        )
        .await;
    check("post", "/api/realtime/annotations/{course_id}", &annotated);
    let presence = app.get(&format!("/api/realtime/presence/{course}?namespace=collaboration"), ann).await;
    check("get", "/api/realtime/presence/{course_id}", &presence);

    let notified = app
        .post(
            "/api/notifications",
            prof,
            json!({"userId": ann_id, "notificationType": "ASSIGNMENT_DUE", "title": "Due", "message": "Friday", "priority": "HIGH"}),
        )
        .await;
    check("post", "/api/notifications", &notified);
    let notification = notified.body["events"][0]["notificationId"].as_str().unwrap();
    let read = app.post(&format!("/api/realtime/notifications/{notification}/read"), ann, json!({})).await;
    check("post", "/api/realtime/notifications/{notification_id}/read", &read);
    check(
        "get",
        "/api/realtime/notifications/{user_id}",
        &app.get(&format!("/api/realtime/notifications/{ann_id}"), ann).await,
    );

    let started = app.post("/api/analyses", ann, json!({"courseId": course, "input": [1, 2]})).await;
    check("post", "/api/analyses", &started);
    let analysis = started.body["analysisId"].as_str().unwrap();
    let service = app.service_token();
    let progress = format!("/api/analyses/{analysis}/progress");
    check(
        "post",
        "/api/analyses/{analysis_id}/progress",
        &app.post(&progress, Some(&service), json!({"progress": 100})).await,
    );
    check("get", "/api/realtime/progress/{user_id}", &app.get(&format!("/api/realtime/progress/{ann_id}"), ann).await);

    check("post", "/api/realtime/ping", &app.post("/api/realtime/ping", None, json!({})).await);
    check("get", "/api/realtime/status", &app.get("/api/realtime/status", ann).await);
    let admin = app.admin().await;
    check("get", "/api/admin/stats", &app.get("/api/admin/stats", Some(&admin.token)).await);
    check("get", "/healthz", &app.get("/healthz", None).await);
    check("get", "/readyz", &app.get("/readyz", None).await);

    // Refusals: the error shape with the status's codes.
    check("get", "/api/auth/me", &app.get("/api/auth/me", None).await);
    check("post", "/api/analyses/{analysis_id}/progress", &app.post(&progress, ann, json!({"progress": 1})).await);
    check(
        "post",
        "/api/analyses/{analysis_id}/progress",
        &app.post(&progress, Some(&service), json!({"progress": 5})).await,
    );
    check(
        "get",
        "/api/courses/{course_id}/members",
        &app.get(&format!("/api/courses/{}/members", Uuid::new_v4()), ann).await,
    );
    check("get", "/api/realtime/messages/{course_id}", &app.get(&format!("{messages}?since=-1"), ann).await);
}
