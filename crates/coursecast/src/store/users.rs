//! Accounts: creation, lookup for login and token checks, logout, deletion.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use serde::Serialize;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{
    Backend, Store, is_foreign_key_violation, is_unique_violation, known::KNOWN_MAX, parse_stored_id, with_db,
};
use crate::{
    domain::{DisplayName, Email, Role},
    error::AppError,
    locks::lock,
    streams::Timestamp,
};

/// The contract's `User` object.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub created_at: Timestamp,
}

/// What login needs: the user and their password hash.
pub struct UserCredentials {
    pub user: User,
    pub password_hash: String,
}

/// What token verification needs about a user.
#[derive(Debug, Clone, Copy)]
pub struct UserAuthState {
    pub role: Role,
    /// Tokens with an earlier `iat` (seconds) are revoked.
    pub tokens_valid_from: i64,
}

/// The most users one token-state query asks for.
const AUTH_BATCH_MAX: usize = 256;

/// A user's id, role and `tokens_valid_from`, with one of their courses (if any).
type AuthRow = (String, String, i64, Option<String>);

/// One batch's outcome reaches every asker in it, so its error is shared.
type AuthOutcome = Result<Option<UserAuthState>, Arc<sqlx::Error>>;
type AuthAnswer = oneshot::Sender<AuthOutcome>;

/// Token-state reads waiting for the next batch.
#[derive(Default)]
pub(super) struct AuthReads {
    queue: Mutex<AuthQueue>,
}

#[derive(Default)]
struct AuthQueue {
    waiting: Vec<(Uuid, AuthAnswer)>,
    /// A task is reading batches; it stops once the queue is empty.
    reading: bool,
}

impl AuthReads {
    fn queue(&self) -> std::sync::MutexGuard<'_, AuthQueue> {
        lock(&self.queue)
    }

    /// Queues a read; true if no task is reading, so the caller must start one.
    fn enqueue(&self, id: Uuid, reply: AuthAnswer) -> bool {
        let mut queue = self.queue();
        queue.waiting.push((id, reply));
        !std::mem::replace(&mut queue.reading, true)
    }

    /// The next batch, or `None` (and the reading task stops) when nothing waits.
    fn next_batch(&self) -> Option<Vec<(Uuid, AuthAnswer)>> {
        let mut queue = self.queue();
        if queue.waiting.is_empty() {
            queue.reading = false;
            return None;
        }
        let n = queue.waiting.len().min(AUTH_BATCH_MAX);
        Some(queue.waiting.drain(..n).collect())
    }
}

/// A user to create; the password is already hashed.
pub struct NewUser {
    pub email: Email,
    pub password_hash: String,
    pub display_name: DisplayName,
    pub role: Role,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: String,
    email: String,
    display_name: String,
    role: String,
    created_at: i64,
}

impl TryFrom<UserRow> for User {
    type Error = sqlx::Error;

    fn try_from(row: UserRow) -> Result<Self, Self::Error> {
        Ok(User {
            id: parse_stored_id(&row.id)?,
            email: row.email,
            display_name: row.display_name,
            role: stored_role(&row.role)?,
            created_at: Timestamp(row.created_at),
        })
    }
}

/// A stored role; one that does not parse is corruption, not input.
fn stored_role(raw: &str) -> Result<Role, sqlx::Error> {
    raw.parse().map_err(|e: AppError| sqlx::Error::Decode(e.to_string().into()))
}

/// The columns of [`UserRow`], as a macro so queries stay `&'static str` (sqlx refuses
/// SQL built at run time unless asserted safe).
macro_rules! user_columns {
    () => {
        "id, email, display_name, role, created_at"
    };
}

impl Store {
    /// Creates a user; `CONFLICT` when the email is taken.
    pub async fn create_user(&self, new: NewUser) -> Result<User, AppError> {
        let user = User {
            id: Uuid::new_v4(),
            email: new.email.into_inner(),
            display_name: new.display_name.into_inner(),
            role: new.role,
            created_at: Timestamp::now(),
        };
        let result = with_db!(self, write, pool => {
            sqlx::query(
                "INSERT INTO users (id, email, password_hash, display_name, role, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(user.id.to_string())
            .bind(&user.email)
            .bind(&new.password_hash)
            .bind(&user.display_name)
            .bind(user.role.as_str())
            .bind(user.created_at.0)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        });
        match result {
            Ok(_) => Ok(user),
            Err(e) if is_unique_violation(&e) => Err(AppError::Conflict("an account with this email already exists")),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn user_credentials(&self, email: &Email) -> Result<Option<UserCredentials>, AppError> {
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            user: UserRow,
            password_hash: String,
        }
        const SQL: &str = concat!("SELECT ", user_columns!(), ", password_hash FROM users WHERE email = $1");
        let row: Option<Row> =
            with_db!(self, read, pool => sqlx::query_as(SQL).bind(email.as_str()).fetch_optional(pool).await)?;
        row.map(|row| Ok(UserCredentials { user: row.user.try_into()?, password_hash: row.password_hash })).transpose()
    }

    pub async fn user(&self, id: Uuid) -> Result<Option<User>, AppError> {
        const SQL: &str = concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1");
        let row: Option<UserRow> =
            with_db!(self, read, pool => sqlx::query_as(SQL).bind(id.to_string()).fetch_optional(pool).await)?;
        Ok(row.map(User::try_from).transpose()?)
    }

    /// A user's token state: remembered for a few seconds, otherwise read with the
    /// states other handshakes are waiting for at the same moment (one query per
    /// batch; a storm of reconnecting clients would otherwise cost a query, and a
    /// thread hand-off on SQLite, per client).
    pub async fn user_auth_state(&self, id: Uuid) -> Result<Option<UserAuthState>, AppError> {
        if let Some(state) = self.known.auth_state(id) {
            return Ok(Some(state));
        }
        let (reply, answer) = oneshot::channel();
        if self.auth_reads.enqueue(id, reply) {
            tokio::spawn(self.clone().read_auth_batches());
        }
        match answer.await {
            Ok(Ok(state)) => Ok(state),
            Ok(Err(err)) => Err(AppError::internal(anyhow::anyhow!("reading token states: {err}"))),
            Err(_) => Err(AppError::internal(anyhow::anyhow!("the token-state reader stopped"))),
        }
    }

    /// Answers queued token-state reads, a batch per query, until none is waiting.
    async fn read_auth_batches(self) {
        while let Some(batch) = self.auth_reads.next_batch() {
            let mut ids: Vec<Uuid> = batch.iter().map(|(id, _)| *id).collect();
            ids.sort_unstable();
            ids.dedup();
            let states = self.read_auth_states(&ids).await.map_err(Arc::new);
            for (id, reply) in batch {
                let answer = match &states {
                    Ok(states) => Ok(states.get(&id).copied()),
                    Err(err) => Err(err.clone()),
                };
                // The asker may be gone (its handshake timed out).
                let _ = reply.send(answer);
            }
        }
    }

    /// Token states of `ids` (absent: no such user) in one query; remembers them, and
    /// the users' enrolments, which come along (one row per course): the first `join`
    /// after a handshake then needs no membership query of its own.
    async fn read_auth_states(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, UserAuthState>, sqlx::Error> {
        let epoch = self.known.auth_epoch();
        let started = std::time::Instant::now();
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        let rows: Vec<AuthRow> = self.bounded(async { match &*self.backend {
            // SQLite joins by nested loops only: it probes both indexes per id. The ids
            // go in as one JSON array, so every batch size runs the same prepared
            // statement; an `IN (?, ?, ...)` list was prepared anew per batch, some
            // 20,000 instructions per first connect.
            Backend::Sqlite { read, .. } => {
                sqlx::query_as(
                    "SELECT u.id, u.role, u.tokens_valid_from, m.course_id
                     FROM users u LEFT JOIN course_members m ON m.user_id = u.id
                     WHERE u.id IN (SELECT value FROM json_each($1))",
                )
                .bind(serde_json::to_string(&ids).map_err(|err| sqlx::Error::Encode(err.into()))?)
                .fetch_all(read)
                .await
            }
            // PostgreSQL hash-joined the same query over sequential scans of `users` and
            // `course_members` for large batches (6.6 ms for 256 ids at 18,000 users,
            // more as they grow, for as long as it keeps that plan), and for batches of
            // any size while the tables have no statistics yet (5 ms for 8 ids).
            // LATERAL subqueries it cannot flatten (LIMIT, OFFSET 0) make each id two
            // index probes: under 1 ms for 32 ids, 3.2 ms for 256.
            Backend::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT u.id, u.role, u.tokens_valid_from, m.course_id
                     FROM unnest($1::text[]) AS k (id)
                     CROSS JOIN LATERAL (SELECT id, role, tokens_valid_from FROM users WHERE id = k.id LIMIT 1) AS u
                     LEFT JOIN LATERAL (SELECT course_id FROM course_members WHERE user_id = u.id OFFSET 0) AS m ON true",
                )
                .bind(&ids)
                .fetch_all(pool)
                .await
            }
        }}).await?;
        crate::telemetry::metrics::db_query("user_auth_state", started.elapsed());
        self.remember_auth_rows(rows, epoch)
    }

    /// Remembers token states and enrolments read when the epoch was `epoch`.
    fn remember_auth_rows(&self, rows: Vec<AuthRow>, epoch: u64) -> Result<HashMap<Uuid, UserAuthState>, sqlx::Error> {
        let mut states = HashMap::new();
        for (user, role, tokens_valid_from, course) in rows {
            let user = parse_stored_id(&user)?;
            states.insert(user, UserAuthState { role: stored_role(&role)?, tokens_valid_from });
            if let Some(course) = course {
                self.known.remember_member(parse_stored_id(&course)?, user);
            }
        }
        for (user, state) in &states {
            self.known.remember_auth_state(*user, *state, epoch);
        }
        Ok(states)
    }

    /// For a node that is the only one (no `REDIS_URL`): every change of a token
    /// state then goes through this process, which forgets it at once, so states are
    /// kept until they change rather than for `AUTH_STATE_TTL`; and the states and
    /// enrolments of up to `KNOWN_MAX` users are read now, in one query, so the
    /// reconnect storm after a restart (every client at once) asks the database
    /// nothing per handshake or first `join`. A failed read only leaves them to be
    /// read on demand, as before.
    pub async fn trust_token_states_of_one_node(&self) {
        self.known.trust_auth_until_changed();
        let epoch = self.known.auth_epoch();
        let started = std::time::Instant::now();
        const SQL: &str = "SELECT u.id, u.role, u.tokens_valid_from, m.course_id
                           FROM users u LEFT JOIN course_members m ON m.user_id = u.id LIMIT $1";
        let limit = KNOWN_MAX as i64;
        let rows = with_db!(self, read, pool => sqlx::query_as(SQL).bind(limit).fetch_all(pool).await);
        crate::telemetry::metrics::db_query("token_states_preload", started.elapsed());
        let loaded = rows.and_then(|rows: Vec<AuthRow>| self.remember_auth_rows(rows, epoch));
        match loaded {
            Ok(states) => tracing::info!(users = states.len(), "token states loaded"),
            Err(err) => tracing::warn!(error = %err, "token states not loaded; read on demand"),
        }
    }

    /// Drops what this node remembers of a user's token state (it changed, here or
    /// on another node).
    pub fn forget_user(&self, id: Uuid) {
        self.known.forget_user(id);
    }

    /// Revokes every token issued before `valid_from` (seconds since the epoch).
    pub async fn revoke_tokens(&self, id: Uuid, valid_from: i64) -> Result<(), AppError> {
        with_db!(self, write, pool => {
            sqlx::query("UPDATE users SET tokens_valid_from = $1 WHERE id = $2 AND tokens_valid_from < $1")
                .bind(valid_from)
                .bind(id.to_string())
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        self.forget_user(id);
        Ok(())
    }

    /// Deletes a user and their enrolments. `NOT_FOUND` if unknown; `CONFLICT` while
    /// they still teach a course (courses are never left without a professor).
    pub async fn delete_user(&self, id: Uuid) -> Result<(), AppError> {
        let result = with_db!(self, write, pool => {
            sqlx::query("DELETE FROM users WHERE id = $1")
                .bind(id.to_string())
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        });
        match result {
            Ok(0) => Err(AppError::NotFound("no such user")),
            Ok(_) => {
                self.forget_user(id);
                Ok(())
            }
            Err(e) if is_foreign_key_violation(&e) => {
                Err(AppError::Conflict("the user still teaches courses; delete or reassign them first"))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Inserts the users whose email is not taken yet (one statement per chunk, one
    /// transaction), then returns every listed email's user, in the order given.
    pub async fn ensure_users(&self, users: &[NewUser]) -> Result<Vec<User>, AppError> {
        const CHUNK: usize = 1000;
        let now = Timestamp::now().0;
        with_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            for chunk in users.chunks(CHUNK) {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO users (id, email, password_hash, display_name, role, created_at) ",
                );
                insert.push_values(chunk, |mut row, user| {
                    row.push_bind(Uuid::new_v4().to_string())
                        .push_bind(user.email.as_str())
                        .push_bind(user.password_hash.as_str())
                        .push_bind(user.display_name.as_str())
                        .push_bind(user.role.as_str())
                        .push_bind(now);
                });
                insert.push(" ON CONFLICT (email) DO NOTHING");
                insert.build().execute(&mut *tx).await?;
            }
            tx.commit().await
        })?;
        let mut found = std::collections::HashMap::with_capacity(users.len());
        for chunk in users.chunks(CHUNK) {
            let rows: Vec<UserRow> = with_db!(self, read, pool => {
                let mut select = sqlx::QueryBuilder::new(concat!("SELECT ", user_columns!(), " FROM users WHERE email IN ("));
                let mut list = select.separated(", ");
                for user in chunk {
                    list.push_bind(user.email.as_str());
                }
                select.push(")");
                select.build_query_as().fetch_all(pool).await
            })?;
            for row in rows {
                let user = User::try_from(row)?;
                found.insert(user.email.clone(), user);
            }
        }
        users
            .iter()
            .map(|u| {
                found
                    .remove(u.email.as_str())
                    .ok_or_else(|| AppError::internal(anyhow::anyhow!("seeded user vanished")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(reads: &AuthReads, id: Uuid) -> (bool, oneshot::Receiver<AuthOutcome>) {
        let (reply, answer) = oneshot::channel();
        (reads.enqueue(id, reply), answer)
    }

    #[test]
    fn the_first_waiting_read_starts_the_reader_and_batches_are_bounded() {
        let reads = AuthReads::default();
        let (first, _a) = ask(&reads, Uuid::nil());
        assert!(first, "nothing was reading: start a reader");
        let later: Vec<_> = (0..AUTH_BATCH_MAX + 10).map(|_| ask(&reads, Uuid::new_v4())).collect();
        assert!(later.iter().all(|(start, _)| !start), "a reader is running");

        assert_eq!(reads.next_batch().map(|b| b.len()), Some(AUTH_BATCH_MAX));
        assert_eq!(reads.next_batch().map(|b| b.len()), Some(11));
        assert!(reads.next_batch().is_none(), "the reader stops when nothing waits");
        let (again, _b) = ask(&reads, Uuid::nil());
        assert!(again, "the next read starts a new reader");
    }
}
