//! `TestApp`: a running server plus request helpers and test users.

use std::{
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use coursecast::{
    Settings, app,
    auth::hash_password,
    domain::{DisplayName, Email, Role},
    state::AppState,
    store::NewUser,
};
use coursecast_client::{ClientError, ConnectOptions, Connection, Socket};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use uuid::Uuid;

pub const PASSWORD: &str = "correct horse battery";

/// The repository's root (tests that read docs and deployment files).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().and_then(Path::parent).expect("the repository root")
}

/// One Argon2 hash of [`PASSWORD`] for users created straight in storage.
pub fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| hash_password(PASSWORD).expect("hashing"))
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub state: AppState,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The response of a test request: status, headers and JSON body (`Null` if none).
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Resp {
    /// The contract error code of an error response.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("<no error code>")
    }

    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!((self.status.as_u16(), self.code()), (status, code), "body: {}", self.body);
        assert!(self.body["error"]["message"].is_string(), "no message: {}", self.body);
    }
}

#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: Uuid,
    pub email: String,
    pub token: String,
}

/// Settings for a test server: its own data directory, generous rate limits, and
/// PostgreSQL in a fresh schema when `TEST_DATABASE_URL` is set.
pub async fn test_settings() -> Settings {
    let mut settings = Settings::defaults();
    settings.data_dir = std::env::temp_dir().join(format!("coursecast-test-{}", Uuid::new_v4()));
    settings.port = 0;
    settings.auth_rate_per_sec = 1000;
    settings.auth_rate_burst = 1000;
    settings.login_failures_per_ip_per_minute = 100_000;
    settings.login_failures_per_account_per_minute = 100_000;
    settings.socket_connects_per_sec_per_ip = 100_000;
    settings.socket_events_per_sec = 100_000;
    settings.socket_events_burst = 100_000;
    settings.database_max_connections = 2;
    settings.jwt_secret = Some("integration-test-secret-0123456789abcdef".into());
    if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
        settings.database_url = Some(fresh_postgres_schema(&url).await);
    }
    settings
}

/// Redis for the multi-node tests: `TEST_REDIS_URL` (default the local server). As
/// with PostgreSQL in `scripts/test`: when Redis is unreachable, a local run skips the
/// test with a loud message (`None`), and a CI run (`CI=true`) fails it.
pub async fn test_redis_url() -> Option<String> {
    let url = std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let reachable = match redis::Client::open(url.as_str()) {
        Ok(client) => client.get_multiplexed_async_connection().await.is_ok(),
        Err(_) => false,
    };
    if reachable {
        return Some(url);
    }
    skipped("a multi-node test", "Redis", &url, "TEST_REDIS_URL");
    None
}

/// Says loudly that a test is skipped because `service` is unreachable at `url`; a CI
/// run (`CI=true`) fails instead.
fn skipped(test: &str, service: &str, url: &str, setting: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{service} is unreachable at {url} and CI=true: failing instead of skipping {test}");
    }
    // Straight to stderr: the test harness swallows `eprintln!` of a passing test.
    let banner = "!".repeat(72);
    let _ = writeln!(
        std::io::stderr(),
        "\n{banner}\n!! SKIPPED: {test} (no {service} at {url}).\n\
         !! Set {setting} to a reachable server to run it.\n{banner}\n"
    );
}

/// PostgreSQL for the tests that need it whatever the suite's backend (fault tests):
/// `TEST_DATABASE_URL`, else `COURSECAST_TEST_POSTGRES`, else the local server. `None`
/// (with a loud message) when unreachable outside CI; under `CI=true` that is a failure.
pub async fn test_postgres_url() -> Option<String> {
    use sqlx::Connection;
    let url = std::env::var("TEST_DATABASE_URL")
        .or_else(|_| std::env::var("COURSECAST_TEST_POSTGRES"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    if sqlx::PgConnection::connect(&url).await.is_ok() {
        return Some(url);
    }
    skipped("a PostgreSQL fault test", "PostgreSQL", &url, "COURSECAST_TEST_POSTGRES");
    None
}

/// Creates an empty schema and returns a URL whose connections use it.
pub async fn fresh_postgres_schema(url: &str) -> String {
    use sqlx::Connection;
    let schema = format!("t_{}", Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(url).await.expect("TEST_DATABASE_URL unreachable");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .expect("create schema");
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-c%20search_path%3D{schema}")
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(configure: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = test_settings().await;
        configure(&mut settings);
        Self::start(settings).await
    }

    /// Another node of the same deployment: same storage, same Redis channel.
    pub async fn another_node(&self) -> Self {
        let mut node = Self::start((*self.state.settings).clone()).await;
        // The first node owns (and removes) the shared data directory.
        node.data_dir = PathBuf::new();
        node
    }

    pub async fn start(settings: Settings) -> Self {
        Self::start_on(settings, "127.0.0.1:0".parse().expect("address")).await
    }

    async fn start_on(settings: Settings, addr: SocketAddr) -> Self {
        let data_dir = settings.data_dir.clone();
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = app::build_state(settings).await.expect("build state");
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(app::run(state.clone(), listener, async move {
            let _ = rx.await;
        }));
        TestApp {
            addr,
            base: format!("http://{addr}"),
            state,
            client: reqwest::Client::new(),
            data_dir,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// Stops the server and waits until it has finished.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(std::time::Duration::from_secs(20), server)
                .await
                .expect("server did not stop in time")
                .expect("server task panicked")
                .expect("server failed");
        }
    }

    pub async fn request(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("request failed");
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Resp { status, headers, body }
    }

    /// Stops the server and starts it again on the same storage and port.
    pub async fn restart(mut self) -> Self {
        let settings = (*self.state.settings).clone();
        // The data directory outlives this instance: the next one opens it.
        self.data_dir = PathBuf::new();
        self.stop().await;
        Self::start_on(settings, self.addr).await
    }

    pub async fn patch(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.request(Method::PATCH, path, token, Some(body)).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.request(Method::POST, path, token, Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Resp {
        self.request(Method::DELETE, path, token, None).await
    }

    /// Registers a student over HTTP.
    pub async fn student(&self, name: &str) -> TestUser {
        let email = format!("{name}-{}@example.org", Uuid::new_v4().simple());
        let res = self
            .post("/api/auth/register", None, json!({"email": email, "password": PASSWORD, "displayName": name}))
            .await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.body);
        TestUser {
            id: res.body["user"]["id"].as_str().unwrap().parse().unwrap(),
            email,
            token: res.body["token"].as_str().unwrap().to_owned(),
        }
    }

    /// Creates a user of any role straight in storage and logs them in over HTTP
    /// (the bootstrap path for the first ADMIN).
    pub async fn user_with_role(&self, name: &str, role: Role) -> TestUser {
        let email = format!("{name}-{}@example.org", Uuid::new_v4().simple());
        self.state
            .store
            .create_user(NewUser {
                email: Email::parse(&email).unwrap(),
                password_hash: password_hash().to_owned(),
                display_name: DisplayName::parse(name).unwrap(),
                role,
            })
            .await
            .expect("create user");
        let res = self.post("/api/auth/login", None, json!({"email": email, "password": PASSWORD})).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.body);
        TestUser {
            id: res.body["user"]["id"].as_str().unwrap().parse().unwrap(),
            email,
            token: res.body["token"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn admin(&self) -> TestUser {
        self.user_with_role("Admin", Role::Admin).await
    }

    pub async fn professor(&self) -> TestUser {
        self.user_with_role("Professor", Role::Professor).await
    }

    /// A course taught by `professor`, with `students` enrolled. Returns its id.
    pub async fn course_with(&self, professor: &TestUser, students: &[&TestUser]) -> Uuid {
        let res = self.post("/api/courses", Some(&professor.token), json!({"title": "Signals and Systems"})).await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.body);
        let course_id: Uuid = res.body["course"]["id"].as_str().unwrap().parse().unwrap();
        for student in students {
            let res = self
                .post(
                    &format!("/api/courses/{course_id}/members"),
                    Some(&professor.token),
                    json!({"userId": student.id}),
                )
                .await;
            assert_eq!(res.status, StatusCode::CREATED, "{}", res.body);
        }
        course_id
    }

    /// Signs arbitrary claims with the test secret (for forged and odd tokens).
    pub fn sign(&self, claims: Value) -> String {
        let secret = self.state.settings.jwt_secret.as_deref().expect("tests set JWT_SECRET");
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    /// A service token as the analysis service would hold.
    pub fn service_token(&self) -> String {
        let now = chrono::Utc::now().timestamp();
        self.sign(json!({"sub": "analysis-service", "role": "SERVICE", "iat": now, "exp": now + 600}))
    }
}

/// Socket helpers.
impl TestApp {
    /// Opens `ns` with `auth: {token}`; panics if refused.
    pub async fn socket(&self, ns: &str, token: &str) -> Socket {
        self.try_socket(ns, Some(json!({"token": token})), ConnectOptions::default()).await.expect("socket refused")
    }

    pub async fn try_socket(
        &self,
        ns: &str,
        auth: Option<Value>,
        options: ConnectOptions,
    ) -> Result<Socket, ClientError> {
        let connection = Connection::open(&self.base, options).await?;
        connection.socket(ns, auth).await
    }

    /// The `connect_error` message a handshake gets.
    pub async fn refusal(&self, ns: &str, auth: Option<Value>, options: ConnectOptions) -> String {
        match self.try_socket(ns, auth, options).await {
            Ok(_) => panic!("the handshake on {ns} was accepted"),
            Err(ClientError::ConnectError(message)) => message,
            Err(other) => panic!("expected connect_error, got {other}"),
        }
    }
}

/// The `{ok: false, error: {code}}` code of an ack, or "<ok>".
pub fn ack_code(ack: &Value) -> &str {
    if ack["ok"] == true { "<ok>" } else { ack["error"]["code"].as_str().unwrap_or("<no code>") }
}

pub const WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long to wait to be confident something does NOT arrive.
pub const QUIET: std::time::Duration = std::time::Duration::from_millis(300);

/// Waits until `check` holds, trying again every few milliseconds; panics naming
/// `what` if it still does not hold after `deadline` (a check that hangs counts as
/// not holding). Tests wait on the condition they need, never on a guessed delay.
pub async fn eventually<F, Fut>(what: &str, deadline: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        match tokio::time::timeout_at(give_up, check()).await {
            Ok(true) => return,
            Ok(false) if tokio::time::Instant::now() < give_up => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            _ => panic!("timed out after {deadline:?} waiting for {what}"),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // The namespace handlers hold the state (and its pool): release them, so a
        // test's database connections close with its runtime.
        self.state.realtime.detach();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if !self.data_dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}
