//! Storage: one `Store` API over SQLite (the embedded default) and PostgreSQL.
//!
//! SQL lives here and nowhere else. Both backends run the same SQL text (`$N`
//! placeholders work in both); the `with_db!` macro instantiates a body once per
//! backend so each query is written once and type-checked against both drivers.
//! On SQLite all writes go through one connection, so writers queue in-process
//! instead of failing with `SQLITE_BUSY`; reads use a separate pool (WAL mode).

mod courses;
mod events;
mod users;

use std::{str::FromStr, sync::Arc, time::Duration};

use anyhow::Context;
use serde::{Serialize, Serializer};
use sqlx::{
    PgPool, SqlitePool,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

pub use courses::{Course, Member};
pub use events::{Analysis, Append, Appended, NewNotification, StreamPage};
pub use users::{NewUser, User, UserAuthState, UserCredentials};

use crate::config::Settings;

/// Runs `$body` with `$pool` bound to the backend's pool for reads or writes.
macro_rules! with_db {
    ($store:expr, read, $pool:ident => $body:expr) => {
        match &*$store.backend {
            $crate::store::Backend::Sqlite { read: $pool, .. } => $body,
            $crate::store::Backend::Postgres($pool) => $body,
        }
    };
    ($store:expr, write, $pool:ident => $body:expr) => {
        match &*$store.backend {
            $crate::store::Backend::Sqlite { write: $pool, .. } => $body,
            $crate::store::Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_db;

pub(crate) enum Backend {
    Sqlite { read: SqlitePool, write: SqlitePool },
    Postgres(PgPool),
}

/// Cheap to clone: every clone shares the pools.
#[derive(Clone)]
pub struct Store {
    backend: Arc<Backend>,
    /// Facts that never change once true, remembered to spare a query per request.
    known: Arc<Known>,
    /// Users' token states waiting to be read together.
    auth_reads: Arc<users::AuthReads>,
}

/// Courses are never edited or deleted and enrolments never removed (ids are never
/// reused), so a course once read and a membership once seen stay true; the sets
/// are cleared when they grow past a bound rather than kept in order.
///
/// Users' token state (role, revocation) does change, on logout and deletion: it is
/// remembered for `AUTH_STATE_TTL` at most, forgotten at once on this node when it
/// changes here, and when another node says so (`forget_user`).
#[derive(Default)]
struct Known {
    courses: std::sync::Mutex<std::collections::HashMap<uuid::Uuid, Course>>,
    members: std::sync::Mutex<std::collections::HashSet<(uuid::Uuid, uuid::Uuid)>>,
    auth: std::sync::Mutex<std::collections::HashMap<uuid::Uuid, (UserAuthState, std::time::Instant)>>,
    /// Streams' heads as this node delivered them; they only grow.
    heads: std::sync::Mutex<std::collections::HashMap<crate::events::StreamKey, i64>>,
    /// Bumped by every `forget_user`: a state read before it is not remembered after.
    auth_epoch: std::sync::atomic::AtomicU64,
}

/// How long a user's token state is trusted without a query. Bounds how long a
/// logout on another node can go unnoticed here if its notice is lost.
const AUTH_STATE_TTL: Duration = Duration::from_secs(5);

/// SQLite's page cache for the writer connection (negative: KiB).
const WRITER_CACHE_KIB: &str = "-65536";

/// WAL pages written before SQLite copies them back into the database (default 1,000).
/// A batch of thousands of events across hundreds of streams dirties about that many
/// pages, so the default checkpointed after nearly every commit, inside it; rarer
/// checkpoints copy each often-rewritten tail page once (rooms: 14,500 -> 16,700
/// stored events/s). The WAL may grow to 64 MiB between checkpoints.
const WAL_CHECKPOINT_PAGES: &str = "16384";

/// Entries each cache holds at most before it starts over.
const KNOWN_MAX: usize = 100_000;

impl Known {
    fn course(&self, id: uuid::Uuid) -> Option<Course> {
        self.courses.lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned()
    }

    fn remember_course(&self, course: &Course) {
        let mut courses = self.courses.lock().unwrap_or_else(|p| p.into_inner());
        if courses.len() >= KNOWN_MAX {
            courses.clear();
        }
        courses.insert(course.id, course.clone());
    }

    fn auth_state(&self, user: uuid::Uuid) -> Option<UserAuthState> {
        let auth = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        auth.get(&user).filter(|(_, at)| at.elapsed() < AUTH_STATE_TTL).map(|(state, _)| *state)
    }

    fn auth_epoch(&self) -> u64 {
        self.auth_epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Remembers a state read when the epoch was `epoch`, unless a user was forgotten since.
    fn remember_auth_state(&self, user: uuid::Uuid, state: UserAuthState, epoch: u64) {
        let mut auth = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        if self.auth_epoch() != epoch {
            return;
        }
        if auth.len() >= KNOWN_MAX {
            auth.retain(|_, (_, at)| at.elapsed() < AUTH_STATE_TTL);
            if auth.len() >= KNOWN_MAX {
                auth.clear();
            }
        }
        auth.insert(user, (state, std::time::Instant::now()));
    }

    fn forget_user(&self, user: uuid::Uuid) {
        let mut auth = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        self.auth_epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        auth.remove(&user);
    }

    fn head(&self, stream: crate::events::StreamKey) -> Option<i64> {
        self.heads.lock().unwrap_or_else(|p| p.into_inner()).get(&stream).copied()
    }

    /// Raises the remembered head to `seq` (never lowers it); returns the head.
    fn remember_head(&self, stream: crate::events::StreamKey, seq: i64) -> i64 {
        let mut heads = self.heads.lock().unwrap_or_else(|p| p.into_inner());
        if heads.len() >= KNOWN_MAX && !heads.contains_key(&stream) {
            heads.clear();
        }
        let head = heads.entry(stream).or_insert(seq);
        *head = (*head).max(seq);
        *head
    }

    fn is_member(&self, course: uuid::Uuid, user: uuid::Uuid) -> bool {
        self.members.lock().unwrap_or_else(|p| p.into_inner()).contains(&(course, user))
    }

    fn remember_member(&self, course: uuid::Uuid, user: uuid::Uuid) {
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        if members.len() >= KNOWN_MAX {
            members.clear();
        }
        members.insert((course, user));
    }
}

/// Which backend a store runs on (for status pages and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Sqlite,
    Postgres,
}

impl Store {
    /// Connects to `DATABASE_URL`, or to `DATA_DIR/coursecast.db`, and runs migrations.
    pub async fn connect(settings: &Settings) -> anyhow::Result<Self> {
        let store = match settings.database_url.as_deref() {
            Some(url) if url.starts_with("postgres:") || url.starts_with("postgresql:") => {
                let options = PgConnectOptions::from_str(url).context("parsing DATABASE_URL")?;
                let pool = PgPoolOptions::new()
                    .max_connections(settings.database_max_connections)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_with(options)
                    .await
                    .context("connecting to PostgreSQL")?;
                Self::on(Backend::Postgres(pool))
            }
            Some(url) if url.starts_with("sqlite:") => {
                Self::open_sqlite(SqliteConnectOptions::from_str(url)?, settings).await?
            }
            Some(_) => anyhow::bail!("DATABASE_URL must start with postgres:// or sqlite://"),
            None => {
                std::fs::create_dir_all(&settings.data_dir)
                    .with_context(|| format!("creating {}", settings.data_dir.display()))?;
                let path = settings.data_dir.join("coursecast.db");
                Self::open_sqlite(SqliteConnectOptions::new().filename(path), settings).await?
            }
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn open_sqlite(options: SqliteConnectOptions, settings: &Settings) -> anyhow::Result<Self> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            // The writer touches the tail page of every busy stream's indexes in
            // each batch; the default 2 MiB cache re-reads them from the OS.
            .connect_with(
                options
                    .clone()
                    .pragma("cache_size", WRITER_CACHE_KIB)
                    .pragma("wal_autocheckpoint", WAL_CHECKPOINT_PAGES),
            )
            .await
            .context("opening the SQLite database")?;
        let read = SqlitePoolOptions::new()
            .max_connections(settings.database_max_connections.max(2))
            .connect_with(options.read_only(true))
            .await
            .context("opening the SQLite database for reads")?;
        Ok(Self::on(Backend::Sqlite { read, write }))
    }

    /// A store on `backend`, remembering nothing yet.
    fn on(backend: Backend) -> Self {
        Self { backend: Arc::new(backend), known: Arc::default(), auth_reads: Arc::default() }
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        match &*self.backend {
            Backend::Sqlite { write, .. } => sqlx::migrate!("migrations/sqlite").run(write).await,
            Backend::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await,
        }
        .context("running migrations")
    }

    pub fn kind(&self) -> BackendKind {
        match &*self.backend {
            Backend::Sqlite { .. } => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// A round trip to the database, for `/readyz`.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        with_db!(self, read, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop))
    }

    pub async fn close(&self) {
        match &*self.backend {
            Backend::Sqlite { read, write } => {
                read.close().await;
                write.close().await;
            }
            Backend::Postgres(pool) => pool.close().await,
        }
    }
}

/// Milliseconds since the epoch, shown on the wire as RFC 3339 UTC with milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        Self(chrono::Utc::now().timestamp_millis())
    }

    pub fn to_rfc3339(self) -> String {
        chrono::DateTime::from_timestamp_millis(self.0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

/// Ids are stored as UUID text; a row that does not parse is corruption, not input.
fn parse_stored_id(raw: &str) -> Result<uuid::Uuid, sqlx::Error> {
    uuid::Uuid::parse_str(raw).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// True when `err` is a unique-constraint violation (both backends report it this way).
fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// True when `err` is a foreign-key violation.
fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_with_milliseconds() {
        assert_eq!(Timestamp(1_795_641_282_123).to_rfc3339(), "2026-11-25T21:14:42.123Z");
    }

    #[test]
    fn remembered_heads_only_grow() {
        let known = Known::default();
        let stream = crate::events::StreamKey::Messages(uuid::Uuid::now_v7());
        assert_eq!(known.head(stream), None);
        assert_eq!(known.remember_head(stream, 5), 5);
        assert_eq!(known.remember_head(stream, 3), 5, "a late storage read must not lower the head");
        assert_eq!(known.remember_head(stream, 6), 6);
        assert_eq!(known.head(stream), Some(6));
    }
}
