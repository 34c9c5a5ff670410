//! Storage: one `Store` API over SQLite (the embedded default) and PostgreSQL.
//!
//! SQL lives here and nowhere else. Both backends run the same SQL text (`$N`
//! placeholders work in both); the `with_db!` macro instantiates a body once per
//! backend so each query is written once and type-checked against both drivers.
//! On SQLite all writes go through one connection, so writers queue in-process
//! instead of failing with `SQLITE_BUSY`; reads use a separate pool (WAL mode).

mod analyses;
mod appends;
mod courses;
mod health;
mod known;
mod reads;
mod users;

use std::{str::FromStr, sync::Arc, time::Duration};

use anyhow::Context;
use serde::Serialize;
use sqlx::{
    PgPool, SqlitePool,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

pub use courses::{Course, Member};
pub use health::DatabaseHealth;
pub use users::{NewUser, User, UserAuthState, UserCredentials};

use self::known::Known;
use crate::config::Settings;

/// One migration source: the SQL is the same on both backends. A migration that
/// has to differ gets a folder per backend then, not before.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Runs `$body` (a `Result<_, sqlx::Error>`) with `$pool` bound to the backend's
/// pool for `read`s or `write`s (SQLite's field of that name; PostgreSQL has one
/// pool), within the storage deadline (`Store::bounded`).
macro_rules! with_db {
    ($store:expr, $side:ident, $pool:ident => $body:expr) => {
        $store
            .bounded(async {
                match &*$store.backend {
                    $crate::store::Backend::Sqlite { $side: $pool, .. } => $body,
                    $crate::store::Backend::Postgres($pool) => $body,
                }
            })
            .await
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
    /// Whether the database answers; shared by every clone.
    health: Arc<health::Health>,
    /// The deadline of every storage call (`DATABASE_TIMEOUT_MS`).
    timeout: Duration,
    /// The server's runtime, where the health probe runs (SQLite's writer calls
    /// storage from a runtime of its own, which may not outlive the probe).
    runtime: tokio::runtime::Handle,
}

/// SQLite's page cache for the writer connection (negative: KiB).
const WRITER_CACHE_KIB: &str = "-65536";

/// WAL pages written before SQLite copies them back into the database (default 1,000).
/// A batch of thousands of events across hundreds of streams dirties about that many
/// pages, so the default checkpointed after nearly every commit, inside it; rarer
/// checkpoints copy each often-rewritten tail page once (rooms: 14,500 -> 16,700
/// stored events/s). The WAL may grow to 64 MiB between checkpoints.
const WAL_CHECKPOINT_PAGES: &str = "16384";

/// Which backend a store runs on (for status pages and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
                    .acquire_timeout(settings.database_timeout())
                    .connect_with(options)
                    .await
                    .context("connecting to PostgreSQL")?;
                Self::on(Backend::Postgres(pool), settings)
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
            .busy_timeout(settings.database_timeout())
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
        Ok(Self::on(Backend::Sqlite { read, write }, settings))
    }

    /// A store on `backend`, remembering nothing yet.
    fn on(backend: Backend, settings: &Settings) -> Self {
        Self {
            backend: Arc::new(backend),
            known: Arc::default(),
            auth_reads: Arc::default(),
            health: Arc::default(),
            timeout: settings.database_timeout(),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        match &*self.backend {
            Backend::Sqlite { write, .. } => MIGRATOR.run(write).await,
            Backend::Postgres(pool) => MIGRATOR.run(pool).await,
        }
        .context("running migrations")
    }

    pub fn kind(&self) -> BackendKind {
        match &*self.backend {
            Backend::Sqlite { .. } => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// A round trip to the database with no deadline of its own (callers bound it).
    async fn ping(&self) -> Result<(), sqlx::Error> {
        match &*self.backend {
            Backend::Sqlite { read, .. } => sqlx::query("SELECT 1").execute(read).await.map(drop),
            Backend::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
        }
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
