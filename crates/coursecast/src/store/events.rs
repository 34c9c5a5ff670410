//! The durable streams: appending events (with the state changes they describe) in
//! one transaction per batch, and reading a stream after a cursor.
//!
//! Every append assigns the stream's next `seq` in the same transaction that stores
//! the event; an append carrying a `clientMsgId` that the same actor already used on
//! the same stream stores nothing and returns the original event. Refusals (unknown
//! message, not the sender, ...) are decided before an append writes anything, so
//! one refused append never spoils the rest of its batch.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use serde_json::value::RawValue;
use sqlx::QueryBuilder;
use uuid::Uuid;

use super::{Store, Timestamp, with_db};
use crate::{
    domain::{ChannelId, ClientMsgId, DocumentId, MessageContent, NotificationText},
    error::AppError,
    events::{
        AnnotationEvent, MessageEvent, MessageKind, NotificationEvent, NotificationKind, NotificationType, Priority,
        ProgressEvent, ProgressKind, StoredEvent, StreamKey,
    },
};

/// One thing to append. Authorisation that needs only the caller and the course
/// (membership, roles) is checked before; what needs stored state is checked here.
#[derive(Debug, Clone)]
pub enum Append {
    SendMessage {
        course_id: Uuid,
        sender_id: Uuid,
        channel_id: Option<ChannelId>,
        content: MessageContent,
        client_msg_id: ClientMsgId,
    },
    EditMessage {
        course_id: Uuid,
        message_id: Uuid,
        editor_id: Uuid,
        content: MessageContent,
    },
    DeleteMessage {
        course_id: Uuid,
        message_id: Uuid,
        actor_id: Uuid,
        /// The course's professor or an ADMIN: may delete anyone's message.
        may_moderate: bool,
    },
    Annotate {
        course_id: Uuid,
        document_id: DocumentId,
        user_id: Uuid,
        annotation: serde_json::Value,
        client_msg_id: ClientMsgId,
    },
    Notify {
        recipients: Vec<Uuid>,
        notification: NewNotification,
    },
    ReadNotification {
        notification_id: Uuid,
        user_id: Uuid,
    },
    Progress {
        analysis_id: Uuid,
        progress: u8,
        data: serde_json::Value,
        /// Sent to the owner when `progress` is 100.
        completion_notice: NewNotification,
    },
}

#[derive(Debug, Clone)]
pub struct NewNotification {
    pub notification_type: NotificationType,
    pub title: NotificationText,
    pub message: NotificationText,
    pub priority: Priority,
}

/// What an append produced: its events (the first is the one the caller asked for),
/// and whether it was a retry answered with the original event.
#[derive(Debug, Clone)]
pub struct Appended {
    pub events: Vec<StoredEvent>,
    pub duplicate: bool,
}

/// A page of one stream, as the polling endpoints and `sync`/`join` acks show it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamPage {
    pub events: Vec<Arc<RawValue>>,
    /// The `seq` of the last event returned, or `since` when none is.
    pub cursor: i64,
    pub has_more: bool,
}

/// A stored analysis (the progress stream's subject).
#[derive(Debug, Clone, Copy)]
pub struct Analysis {
    pub id: Uuid,
    pub course_id: Uuid,
    pub owner_id: Uuid,
}

/// The idempotency key of a `read`: reading twice answers with the first read event.
fn read_key(notification_id: Uuid) -> String {
    format!("read-{}", notification_id.simple())
}

fn raw(json: String) -> Result<Arc<RawValue>, sqlx::Error> {
    RawValue::from_string(json).map(Arc::from).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn to_raw<T: serde::Serialize>(event: &T) -> Result<Arc<RawValue>, sqlx::Error> {
    serde_json::to_string(event).map_err(|e| sqlx::Error::Encode(Box::new(e))).and_then(raw)
}

/// A send or an annotation: an insert carrying a `clientMsgId`, the hot path, which
/// is stored in bulk.
struct KeyedInsert<'a> {
    op: &'a Append,
    stream: StreamKey,
    stream_name: String,
    actor: String,
    key: &'a str,
}

/// The `messages` row a send adds. New ids are time-ordered (UUIDv7) so the
/// primary-key index grows at its end instead of dirtying a random page per insert.
struct NewMessage {
    id: Uuid,
    course_id: Uuid,
    sender_id: Uuid,
    channel_id: Option<String>,
}

impl<'a> KeyedInsert<'a> {
    fn of(op: &'a Append) -> Option<Self> {
        let (stream, actor, key) = match op {
            Append::SendMessage { course_id, sender_id, client_msg_id, .. } => {
                (StreamKey::Messages(*course_id), sender_id, client_msg_id)
            }
            Append::Annotate { course_id, user_id, client_msg_id, .. } => {
                (StreamKey::Annotations(*course_id), user_id, client_msg_id)
            }
            _ => return None,
        };
        Some(Self { op, stream, stream_name: stream.to_string(), actor: actor.to_string(), key: key.as_str() })
    }

    fn id(&self) -> (String, String, String) {
        (self.stream_name.clone(), self.actor.clone(), self.key.to_owned())
    }

    /// The event's payload at `seq`, and the message row it needs, if any.
    fn build(&self, seq: i64, now: Timestamp) -> Result<(Arc<RawValue>, Option<NewMessage>), sqlx::Error> {
        match self.op {
            Append::SendMessage { course_id, sender_id, channel_id, content, .. } => {
                let message = NewMessage {
                    id: Uuid::now_v7(),
                    course_id: *course_id,
                    sender_id: *sender_id,
                    channel_id: channel_id.as_ref().map(|c| c.as_str().to_owned()),
                };
                let payload = to_raw(&MessageEvent {
                    kind: MessageKind::MessageSent,
                    seq,
                    message_id: message.id,
                    course_id: *course_id,
                    channel_id: message.channel_id.clone(),
                    sender_id: *sender_id,
                    content: Some(content.as_str().to_owned()),
                    timestamp: now,
                })?;
                Ok((payload, Some(message)))
            }
            Append::Annotate { course_id, document_id, user_id, annotation, .. } => {
                let payload = to_raw(&AnnotationEvent {
                    seq,
                    annotation_id: Uuid::now_v7(),
                    course_id: *course_id,
                    document_id: document_id.as_str().to_owned(),
                    user_id: *user_id,
                    annotation: annotation.clone(),
                    timestamp: now,
                })?;
                Ok((payload, None))
            }
            _ => Err(sqlx::Error::Protocol("not a keyed insert".into())),
        }
    }
}

/// What each keyed insert of a run does.
enum KeyedStep {
    /// A retry: answered with the event stored earlier under its key.
    Original(StoredEvent),
    /// A retry within the run: answered with the event of the op at this index.
    SameAs(usize),
    New,
}

struct KeyedPlan {
    steps: Vec<KeyedStep>,
    /// New events per stream, by stream name (the order streams are locked in).
    new_per_stream: BTreeMap<String, i64>,
}

impl KeyedPlan {
    fn new(keyed: &[KeyedInsert<'_>], originals: HashMap<(String, String, String), (i64, Arc<RawValue>)>) -> Self {
        let mut first_of: HashMap<(String, String, String), usize> = HashMap::new();
        let mut new_per_stream = BTreeMap::new();
        let steps = keyed
            .iter()
            .enumerate()
            .map(|(i, insert)| {
                let id = insert.id();
                if let Some((seq, payload)) = originals.get(&id) {
                    return KeyedStep::Original(StoredEvent {
                        stream: insert.stream,
                        seq: *seq,
                        payload: payload.clone(),
                        watch_course: None,
                    });
                }
                if let Some(first) = first_of.get(&id) {
                    return KeyedStep::SameAs(*first);
                }
                *new_per_stream.entry(insert.stream_name.clone()).or_insert(0) += 1;
                first_of.insert(id, i);
                KeyedStep::New
            })
            .collect();
        Self { steps, new_per_stream }
    }
}

/// The same append logic for each backend: `$conn` is its connection type. Written
/// once, compiled twice, so SQLite and PostgreSQL cannot drift apart. `$find_originals`
/// is the one clause the planners need told differently: how the batch's keys (the
/// `VALUES` list `k`) find their events through the idempotency index.
macro_rules! backend_appends {
    ($module:ident, $conn:ty, $db:ty, $find_originals:expr) => {
        mod $module {
            use super::*;

            type Conn = $conn;
            type Db = $db;
            type Outcome = Result<Result<Appended, AppError>, sqlx::Error>;

            /// Finds the event an earlier append with the same key produced.
            async fn existing(conn: &mut Conn, stream: StreamKey, actor: &str, key: &str) -> Result<Option<StoredEvent>, sqlx::Error> {
                let row: Option<(i64, String)> = sqlx::query_as(
                    "SELECT seq, payload FROM events WHERE stream = $1 AND actor_id = $2 AND client_msg_id = $3",
                )
                .bind(stream.to_string())
                .bind(actor)
                .bind(key)
                .fetch_optional(&mut *conn)
                .await?;
                row.map(|(seq, payload)| Ok(StoredEvent { stream, seq, payload: raw(payload)?, watch_course: None }))
                    .transpose()
            }

            /// Takes the stream's next `seq` (row-locked until commit on PostgreSQL).
            async fn next_seq(conn: &mut Conn, stream: StreamKey) -> Result<i64, sqlx::Error> {
                sqlx::query_scalar(
                    "INSERT INTO stream_heads (stream, head) VALUES ($1, 1)
                     ON CONFLICT (stream) DO UPDATE SET head = stream_heads.head + 1
                     RETURNING head",
                )
                .bind(stream.to_string())
                .fetch_one(&mut *conn)
                .await
            }

            /// Stores one event whose payload is built once its `seq` is known.
            async fn store<T: serde::Serialize>(
                conn: &mut Conn,
                stream: StreamKey,
                actor: &str,
                key: Option<&str>,
                now: Timestamp,
                build: impl FnOnce(i64) -> T,
            ) -> Result<StoredEvent, sqlx::Error> {
                let seq = next_seq(conn, stream).await?;
                let payload = to_raw(&build(seq))?;
                sqlx::query(
                    "INSERT INTO events (stream, seq, actor_id, client_msg_id, payload, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(stream.to_string())
                .bind(seq)
                .bind(actor)
                .bind(key)
                .bind(payload.get())
                .bind(now.0)
                .execute(&mut *conn)
                .await?;
                Ok(StoredEvent { stream, seq, payload, watch_course: None })
            }

            fn one(event: StoredEvent) -> Outcome {
                Ok(Ok(Appended { events: vec![event], duplicate: false }))
            }

            fn refused(err: AppError) -> Outcome {
                Ok(Err(err))
            }

            /// Applies one op that is not a keyed insert.
            async fn apply(conn: &mut Conn, op: &Append, now: Timestamp) -> Outcome {
                match op {
                    Append::SendMessage { .. } | Append::Annotate { .. } => {
                        let mut outcomes = apply_keyed(conn, std::slice::from_ref(op), now).await?;
                        Ok(outcomes.pop().unwrap_or_else(|| Err(AppError::internal(anyhow::anyhow!("no outcome")))))
                    }
                    Append::EditMessage { course_id, message_id, editor_id, content } => {
                        let Some((sender, channel_id)) = live_message(conn, *course_id, *message_id).await? else {
                            return refused(AppError::NotFound("no such message"));
                        };
                        if sender != editor_id.to_string() {
                            return refused(AppError::Forbidden("only the sender may edit a message"));
                        }
                        let stream = StreamKey::Messages(*course_id);
                        let event = store(conn, stream, &sender, None, now, |seq| MessageEvent {
                            kind: MessageKind::MessageEdited,
                            seq,
                            message_id: *message_id,
                            course_id: *course_id,
                            channel_id,
                            sender_id: *editor_id,
                            content: Some(content.as_str().to_owned()),
                            timestamp: now,
                        })
                        .await?;
                        one(event)
                    }
                    Append::DeleteMessage { course_id, message_id, actor_id, may_moderate } => {
                        let Some((sender, channel_id)) = live_message(conn, *course_id, *message_id).await? else {
                            return refused(AppError::NotFound("no such message"));
                        };
                        let actor = actor_id.to_string();
                        if sender != actor && !may_moderate {
                            return refused(AppError::Forbidden(
                                "only the sender, the course's professor or an ADMIN may delete a message",
                            ));
                        }
                        sqlx::query("UPDATE messages SET deleted = TRUE WHERE id = $1")
                            .bind(message_id.to_string())
                            .execute(&mut *conn)
                            .await?;
                        let stream = StreamKey::Messages(*course_id);
                        let event = store(conn, stream, &actor, None, now, |seq| MessageEvent {
                            kind: MessageKind::MessageDeleted,
                            seq,
                            message_id: *message_id,
                            course_id: *course_id,
                            channel_id,
                            sender_id: *actor_id,
                            content: None,
                            timestamp: now,
                        })
                        .await?;
                        one(event)
                    }
                    Append::Notify { recipients, notification } => {
                        let mut events = Vec::with_capacity(recipients.len());
                        for user_id in recipients {
                            events.push(notify(conn, *user_id, notification, now).await?);
                        }
                        Ok(Ok(Appended { events, duplicate: false }))
                    }
                    Append::ReadNotification { notification_id, user_id } => {
                        let stream = StreamKey::Notifications(*user_id);
                        let actor = user_id.to_string();
                        let row: Option<(String, String, String, String, String)> = sqlx::query_as(
                            "SELECT user_id, notification_type, title, message, priority FROM notifications WHERE id = $1",
                        )
                        .bind(notification_id.to_string())
                        .fetch_optional(&mut *conn)
                        .await?;
                        let Some((owner, notification_type, title, message, priority)) = row else {
                            return refused(AppError::NotFound("no such notification"));
                        };
                        if owner != actor {
                            return refused(AppError::Forbidden("only the notification's user may mark it read"));
                        }
                        let key = read_key(*notification_id);
                        if let Some(original) = existing(conn, stream, &actor, &key).await? {
                            return Ok(Ok(Appended { events: vec![original], duplicate: true }));
                        }
                        sqlx::query("UPDATE notifications SET read_at = $1 WHERE id = $2")
                            .bind(now.0)
                            .bind(notification_id.to_string())
                            .execute(&mut *conn)
                            .await?;
                        let decode = |e: serde_json::Error| sqlx::Error::Decode(Box::new(e));
                        let notification_type: NotificationType =
                            serde_json::from_value(serde_json::Value::String(notification_type)).map_err(decode)?;
                        let priority: Priority = serde_json::from_value(serde_json::Value::String(priority)).map_err(decode)?;
                        let event = store(conn, stream, &actor, Some(&key), now, |seq| NotificationEvent {
                            kind: NotificationKind::NotificationRead,
                            seq,
                            notification_id: *notification_id,
                            user_id: *user_id,
                            notification_type,
                            title,
                            message,
                            priority,
                            timestamp: now,
                        })
                        .await?;
                        one(event)
                    }
                    Append::Progress { analysis_id, progress, data, completion_notice } => {
                        let row: Option<(String, String, Option<i64>)> =
                            sqlx::query_as("SELECT owner_id, course_id, completed_at FROM analyses WHERE id = $1")
                                .bind(analysis_id.to_string())
                                .fetch_optional(&mut *conn)
                                .await?;
                        let Some((owner, course, completed_at)) = row else {
                            return refused(AppError::NotFound("no such analysis"));
                        };
                        if completed_at.is_some() {
                            return refused(AppError::Conflict("the analysis is already complete"));
                        }
                        let owner_id = super::super::parse_stored_id(&owner)?;
                        let course_id = super::super::parse_stored_id(&course)?;
                        let complete = *progress == 100;
                        sqlx::query("UPDATE analyses SET progress = $1, completed_at = $2 WHERE id = $3")
                            .bind(i32::from(*progress))
                            .bind(complete.then_some(now.0))
                            .bind(analysis_id.to_string())
                            .execute(&mut *conn)
                            .await?;
                        let kind = if complete { ProgressKind::AnalysisComplete } else { ProgressKind::AnalysisProgress };
                        let mut event = store(conn, StreamKey::Progress(owner_id), "service", None, now, |seq| ProgressEvent {
                            kind,
                            seq,
                            user_id: owner_id,
                            analysis_id: *analysis_id,
                            progress: *progress,
                            data: data.clone(),
                            timestamp: now,
                        })
                        .await?;
                        event.watch_course = Some(course_id);
                        let mut events = vec![event];
                        if complete {
                            events.push(notify(conn, owner_id, completion_notice, now).await?);
                        }
                        Ok(Ok(Appended { events, duplicate: false }))
                    }
                }
            }

            /// Applies `ops` in order: runs of keyed inserts in bulk, anything else one by one.
            pub async fn apply_all(conn: &mut Conn, ops: &[Append], now: Timestamp) -> Result<Vec<Result<Appended, AppError>>, sqlx::Error> {
                let mut outcomes = Vec::with_capacity(ops.len());
                let mut rest = ops;
                while let Some(first) = rest.first() {
                    let run = rest.iter().take_while(|op| KeyedInsert::of(op).is_some()).count();
                    if run == 0 {
                        outcomes.push(apply(conn, first, now).await?);
                        rest = &rest[1..];
                    } else {
                        outcomes.extend(apply_keyed(conn, &rest[..run], now).await?);
                        rest = &rest[run..];
                    }
                }
                Ok(outcomes)
            }

            /// Stores a run of sends and annotations with a fixed number of statements
            /// whatever its length: one idempotency lookup, one `seq` reservation per
            /// batch, one multi-row insert per table. Ops that are not keyed inserts
            /// are skipped (`apply_all` never passes any).
            async fn apply_keyed(conn: &mut Conn, ops: &[Append], now: Timestamp) -> Result<Vec<Result<Appended, AppError>>, sqlx::Error> {
                let keyed: Vec<KeyedInsert<'_>> = ops.iter().filter_map(KeyedInsert::of).collect();
                let originals = originals(conn, &keyed).await?;
                let plan = KeyedPlan::new(&keyed, originals);
                let mut next_seq = reserve_seqs(conn, &plan.new_per_stream).await?;

                let mut messages = Vec::new();
                let mut stored: Vec<Option<StoredEvent>> = Vec::with_capacity(keyed.len());
                for (insert, step) in keyed.iter().zip(&plan.steps) {
                    if !matches!(step, KeyedStep::New) {
                        stored.push(None);
                        continue;
                    }
                    let seq = next_seq.get_mut(&insert.stream_name).ok_or_else(|| sqlx::Error::Protocol("no seq reserved".into()))?;
                    let (payload, message) = insert.build(*seq, now)?;
                    messages.extend(message);
                    stored.push(Some(StoredEvent { stream: insert.stream, seq: *seq, payload, watch_course: None }));
                    *seq += 1;
                }

                if !messages.is_empty() {
                    let mut q = QueryBuilder::<Db>::new("INSERT INTO messages (id, course_id, sender_id, channel_id, deleted, created_at) ");
                    q.push_values(&messages, |mut row, m: &NewMessage| {
                        row.push_bind(m.id.to_string())
                            .push_bind(m.course_id.to_string())
                            .push_bind(m.sender_id.to_string())
                            .push_bind(m.channel_id.clone())
                            .push_bind(false)
                            .push_bind(now.0);
                    });
                    q.build().persistent(false).execute(&mut *conn).await?;
                }
                let new_events: Vec<(&KeyedInsert<'_>, &StoredEvent)> =
                    keyed.iter().zip(&stored).filter_map(|(k, e)| e.as_ref().map(|e| (k, e))).collect();
                if !new_events.is_empty() {
                    let mut q = QueryBuilder::<Db>::new("INSERT INTO events (stream, seq, actor_id, client_msg_id, payload, created_at) ");
                    q.push_values(&new_events, |mut row, (k, e)| {
                        row.push_bind(k.stream_name.clone())
                            .push_bind(e.seq)
                            .push_bind(k.actor.clone())
                            .push_bind(k.key.to_owned())
                            .push_bind(e.payload.get().to_owned())
                            .push_bind(now.0);
                    });
                    q.build().persistent(false).execute(&mut *conn).await?;
                }

                plan.steps
                    .into_iter()
                    .enumerate()
                    .map(|(i, step)| {
                        let (event, duplicate) = match step {
                            KeyedStep::Original(event) => (event, true),
                            KeyedStep::SameAs(first) => (stored[first].clone().ok_or_else(|| sqlx::Error::Protocol("missing first copy".into()))?, true),
                            KeyedStep::New => (stored[i].clone().ok_or_else(|| sqlx::Error::Protocol("missing new event".into()))?, false),
                        };
                        Ok(Ok(Appended { events: vec![event], duplicate }))
                    })
                    .collect()
            }

            /// The events earlier appends stored under the same keys, in one query.
            async fn originals(conn: &mut Conn, keyed: &[KeyedInsert<'_>]) -> Result<HashMap<(String, String, String), (i64, Arc<RawValue>)>, sqlx::Error> {
                let mut q = QueryBuilder::<Db>::new("SELECT k.column1, k.column2, k.column3, e.seq, e.payload FROM (");
                q.push_values(keyed, |mut row, k| {
                    row.push_bind(k.stream_name.clone()).push_bind(k.actor.clone()).push_bind(k.key.to_owned());
                });
                q.push(") AS k ").push($find_originals);
                let rows: Vec<(String, String, String, i64, String)> = q.build_query_as().persistent(false).fetch_all(&mut *conn).await?;
                rows.into_iter().map(|(stream, actor, key, seq, payload)| Ok(((stream, actor, key), (seq, raw(payload)?)))).collect()
            }

            /// Advances each stream's head by its count of new events; returns the
            /// first `seq` reserved per stream. Streams are locked in name order so two
            /// writers (two nodes on PostgreSQL) cannot deadlock on each other.
            async fn reserve_seqs(conn: &mut Conn, counts: &BTreeMap<String, i64>) -> Result<HashMap<String, i64>, sqlx::Error> {
                if counts.is_empty() {
                    return Ok(HashMap::new());
                }
                let mut q = QueryBuilder::<Db>::new("INSERT INTO stream_heads (stream, head) ");
                q.push_values(counts, |mut row, (stream, count)| {
                    row.push_bind(stream.clone()).push_bind(*count);
                });
                q.push(" ON CONFLICT (stream) DO UPDATE SET head = stream_heads.head + excluded.head RETURNING stream, head");
                let heads: Vec<(String, i64)> = q.build_query_as().persistent(false).fetch_all(&mut *conn).await?;
                heads
                    .into_iter()
                    .map(|(stream, head)| {
                        let count = counts.get(&stream).copied().ok_or_else(|| sqlx::Error::Protocol("unexpected stream head".into()))?;
                        Ok((stream, head - count + 1))
                    })
                    .collect()
            }

            /// The sender and channel of a message that exists in the course and is not deleted.
            async fn live_message(conn: &mut Conn, course_id: Uuid, message_id: Uuid) -> Result<Option<(String, Option<String>)>, sqlx::Error> {
                sqlx::query_as(
                    "SELECT sender_id, channel_id FROM messages WHERE id = $1 AND course_id = $2 AND deleted = FALSE",
                )
                .bind(message_id.to_string())
                .bind(course_id.to_string())
                .fetch_optional(&mut *conn)
                .await
            }

            async fn notify(conn: &mut Conn, user_id: Uuid, n: &NewNotification, now: Timestamp) -> Result<StoredEvent, sqlx::Error> {
                let notification_id = Uuid::now_v7();
                let type_name = serde_json::to_value(n.notification_type).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
                let priority_name = serde_json::to_value(n.priority).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
                sqlx::query(
                    "INSERT INTO notifications (id, user_id, notification_type, title, message, priority, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(notification_id.to_string())
                .bind(user_id.to_string())
                .bind(type_name.as_str())
                .bind(n.title.as_str())
                .bind(n.message.as_str())
                .bind(priority_name.as_str())
                .bind(now.0)
                .execute(&mut *conn)
                .await?;
                store(conn, StreamKey::Notifications(user_id), "system", None, now, |seq| NotificationEvent {
                    kind: NotificationKind::NotificationNew,
                    seq,
                    notification_id,
                    user_id,
                    notification_type: n.notification_type,
                    title: n.title.as_str().to_owned(),
                    message: n.message.as_str().to_owned(),
                    priority: n.priority,
                    timestamp: now,
                })
                .await
            }
        }
    };
}

// SQLite probes the index for each row of a join on a VALUES list (a row-value `IN`
// scanned the table).
backend_appends!(
    sqlite_appends,
    sqlx::SqliteConnection,
    sqlx::Sqlite,
    "JOIN events AS e ON e.stream = k.column1 AND e.actor_id = k.column2 AND e.client_msg_id = k.column3"
);
// PostgreSQL plans that join as a hash join over a sequential scan of `events` once
// the list is long: its disk-minded cost model prices thousands of index probes above
// the scan (4,096 keys against 260,000 cached events: 82 ms, and more as the table
// grows, for as long as it keeps that plan). A LATERAL subquery with LIMIT cannot be
// flattened, so each key is one index probe (7 ms). The unique index makes LIMIT 1 exact.
backend_appends!(
    postgres_appends,
    sqlx::PgConnection,
    sqlx::Postgres,
    "CROSS JOIN LATERAL (SELECT seq, payload FROM events
      WHERE stream = k.column1 AND actor_id = k.column2 AND client_msg_id = k.column3 LIMIT 1) AS e"
);

impl Store {
    /// Applies `ops` in order in one transaction. The outer error means the
    /// transaction failed and nothing was stored; each inner result is one op's
    /// outcome (a refusal stores nothing for that op only).
    pub async fn append_batch(&self, ops: &[Append]) -> Result<Vec<Result<Appended, AppError>>, sqlx::Error> {
        let now = Timestamp::now();
        match &*self.backend {
            super::Backend::Sqlite { write, .. } => {
                let mut tx = write.begin().await?;
                let outcomes = sqlite_appends::apply_all(&mut tx, ops, now).await?;
                tx.commit().await?;
                Ok(outcomes)
            }
            super::Backend::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let outcomes = postgres_appends::apply_all(&mut tx, ops, now).await?;
                tx.commit().await?;
                Ok(outcomes)
            }
        }
    }

    /// Events of `stream` after `since`, oldest first, at most `limit`.
    pub async fn read_stream(&self, stream: StreamKey, since: i64, limit: u32) -> Result<StreamPage, AppError> {
        let started = std::time::Instant::now();
        let rows: Vec<(i64, String)> = with_db!(self, read, pool => {
            sqlx::query_as("SELECT seq, payload FROM events WHERE stream = $1 AND seq > $2 ORDER BY seq LIMIT $3")
                .bind(stream.to_string())
                .bind(since)
                .bind(i64::from(limit) + 1)
                .fetch_all(pool)
                .await
        })?;
        crate::telemetry::metrics::db_query("read_stream", started.elapsed());
        let has_more = rows.len() > limit as usize;
        let mut cursor = since;
        let mut events = Vec::with_capacity(rows.len().min(limit as usize));
        for (seq, payload) in rows.into_iter().take(limit as usize) {
            cursor = seq;
            events.push(Arc::from(RawValue::from_string(payload).map_err(AppError::internal)?));
        }
        Ok(StreamPage { events, cursor, has_more })
    }

    /// The `seq` of the stream's newest event this node has delivered (0 for an empty
    /// stream), read from storage once per stream. It may lag events that are committed
    /// and not yet delivered: a caller that entered the stream's room before asking
    /// receives those live, so a cursor taken from it misses nothing.
    pub async fn stream_head(&self, stream: StreamKey) -> Result<i64, AppError> {
        if let Some(head) = self.known.head(stream) {
            return Ok(head);
        }
        let head: Option<i64> = with_db!(self, read, pool => {
            sqlx::query_scalar("SELECT head FROM stream_heads WHERE stream = $1")
                .bind(stream.to_string())
                .fetch_optional(pool)
                .await
        })?;
        Ok(self.known.remember_head(stream, head.unwrap_or(0)))
    }

    /// Records that this node delivered `seq` of `stream` (called before the event goes
    /// out, so a head read afterwards never runs ahead of what a room receives).
    pub fn delivered(&self, stream: StreamKey, seq: i64) {
        self.known.remember_head(stream, seq);
    }

    pub async fn create_analysis(
        &self,
        course_id: Uuid,
        owner_id: Uuid,
        input: &serde_json::Value,
    ) -> Result<Uuid, AppError> {
        let id = Uuid::new_v4();
        let input = serde_json::to_string(input).map_err(AppError::internal)?;
        with_db!(self, write, pool => {
            sqlx::query("INSERT INTO analyses (id, course_id, owner_id, input, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(id.to_string())
                .bind(course_id.to_string())
                .bind(owner_id.to_string())
                .bind(&input)
                .bind(Timestamp::now().0)
                .execute(pool)
                .await
                .map(drop)
        })?;
        Ok(id)
    }

    pub async fn analysis(&self, id: Uuid) -> Result<Option<Analysis>, AppError> {
        let row: Option<(String, String)> = with_db!(self, read, pool => {
            sqlx::query_as("SELECT course_id, owner_id FROM analyses WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(pool)
                .await
        })?;
        row.map(|(course, owner)| {
            Ok(Analysis { id, course_id: super::parse_stored_id(&course)?, owner_id: super::parse_stored_id(&owner)? })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(course: Uuid, sender: Uuid, key: &str) -> Append {
        Append::SendMessage {
            course_id: course,
            sender_id: sender,
            channel_id: None,
            content: MessageContent::parse("hi", 100).expect("content"),
            client_msg_id: ClientMsgId::parse(key).expect("key"),
        }
    }

    #[test]
    fn a_run_plans_retries_once_and_counts_new_events_per_stream() {
        let (course_a, course_b, alice, bob) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let ops = [
            send(course_a, alice, "k1"),
            send(course_a, alice, "k2"),
            send(course_a, alice, "k1"),
            send(course_a, bob, "k1"),
            send(course_b, alice, "k1"),
            send(course_b, alice, "stored"),
        ];
        let keyed: Vec<KeyedInsert<'_>> = ops.iter().filter_map(KeyedInsert::of).collect();
        let stored = raw(r#"{"seq":7}"#.to_owned()).expect("json");
        let originals = HashMap::from([(
            (StreamKey::Messages(course_b).to_string(), alice.to_string(), "stored".to_owned()),
            (7, stored),
        )]);

        let plan = KeyedPlan::new(&keyed, originals);

        let steps: Vec<String> = plan
            .steps
            .iter()
            .map(|step| match step {
                KeyedStep::New => "new".to_owned(),
                KeyedStep::SameAs(first) => format!("same as {first}"),
                KeyedStep::Original(event) => format!("original {}", event.seq),
            })
            .collect();
        assert_eq!(steps, ["new", "new", "same as 0", "new", "new", "original 7"]);
        assert_eq!(
            plan.new_per_stream,
            BTreeMap::from([
                (StreamKey::Messages(course_a).to_string(), 3),
                (StreamKey::Messages(course_b).to_string(), 1)
            ])
        );
    }
}
