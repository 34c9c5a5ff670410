//! The SQL of appends, written once and compiled for each backend by
//! `backend_appends!`, so SQLite and PostgreSQL cannot drift apart. `$conn` is the
//! backend's connection type; `$find_originals` is the one clause the planners need
//! told differently: how the batch's keys (the `VALUES` list `k`) find their events
//! through the idempotency index.

use std::collections::{BTreeMap, HashMap};

use sqlx::QueryBuilder;

use super::{KeyId, KeyedInsert, KeyedPlan, NewMessage, raw, read_key, to_raw};
use crate::{
    domain::MessageContent,
    error::AppError,
    store::parse_stored_id,
    streams::{
        Append, Appended, MessageEvent, MessageKind, NewNotification, NotificationEvent, NotificationKind,
        NotificationType, Priority, ProgressEvent, ProgressKind, StoredEvent, StreamKey, Timestamp,
    },
};

macro_rules! backend_appends {
    ($module:ident, $conn:ty, $db:ty, $find_originals:expr) => {
        pub(super) mod $module {
            use std::sync::Arc;

            use serde_json::value::RawValue;
            use uuid::Uuid;

            use super::*;

            type Conn = $conn;
            type Db = $db;
            /// The outer error fails the transaction; the inner one refuses one op.
            type Outcome = Result<Result<Appended, AppError>, sqlx::Error>;

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

            /// Applies one op that is not part of a bulk run.
            async fn apply(conn: &mut Conn, op: &Append, now: Timestamp) -> Outcome {
                match op {
                    Append::SendMessage { .. } | Append::Annotate { .. } => {
                        let mut outcomes = apply_keyed(conn, std::slice::from_ref(op), now).await?;
                        Ok(outcomes.pop().unwrap_or_else(|| Err(AppError::internal(anyhow::anyhow!("no outcome")))))
                    }
                    Append::EditMessage { course_id, message_id, editor_id, content } => {
                        edit_message(conn, *course_id, *message_id, *editor_id, content, now).await
                    }
                    Append::DeleteMessage { course_id, message_id, actor_id, may_moderate } => {
                        delete_message(conn, *course_id, *message_id, *actor_id, *may_moderate, now).await
                    }
                    Append::Notify { recipients, notification } => {
                        let mut events = Vec::with_capacity(recipients.len());
                        for user_id in recipients {
                            events.push(notify(conn, *user_id, notification, now).await?);
                        }
                        Ok(Ok(Appended { events, duplicate: false }))
                    }
                    Append::ReadNotification { notification_id, user_id } => {
                        read_notification(conn, *notification_id, *user_id, now).await
                    }
                    Append::Progress { analysis_id, progress, data, completion_notice } => {
                        report_progress(conn, *analysis_id, *progress, data, completion_notice, now).await
                    }
                }
            }

            /// Stores a run of sends and annotations with a fixed number of statements
            /// whatever its length: one idempotency lookup, one `seq` reservation per
            /// batch, one multi-row insert per table. Ops that are not keyed inserts
            /// are skipped (`apply_all` never passes any).
            async fn apply_keyed(conn: &mut Conn, ops: &[Append], now: Timestamp) -> Result<Vec<Result<Appended, AppError>>, sqlx::Error> {
                let keyed: Vec<KeyedInsert<'_>> = ops.iter().filter_map(KeyedInsert::of).collect();
                let originals = originals(conn, &keyed).await?;
                let plan = KeyedPlan::new(&keyed, originals);
                let next_seq = reserve_seqs(conn, &plan.new_per_stream).await?;
                let (stored, messages) = plan.build_new(&keyed, next_seq, now)?;
                insert_messages(conn, &messages, now).await?;
                insert_events(conn, &keyed, &stored, now).await?;
                plan.outcomes(&stored)
            }

            /// The events earlier appends stored under the same keys, in one query.
            async fn originals(conn: &mut Conn, keyed: &[KeyedInsert<'_>]) -> Result<HashMap<KeyId, (i64, Arc<RawValue>)>, sqlx::Error> {
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

            async fn insert_messages(conn: &mut Conn, messages: &[NewMessage], now: Timestamp) -> Result<(), sqlx::Error> {
                if messages.is_empty() {
                    return Ok(());
                }
                let mut q = QueryBuilder::<Db>::new("INSERT INTO messages (id, course_id, sender_id, channel_id, deleted, created_at) ");
                q.push_values(messages, |mut row, m: &NewMessage| {
                    row.push_bind(m.id.to_string())
                        .push_bind(m.course_id.to_string())
                        .push_bind(m.sender_id.to_string())
                        .push_bind(m.channel_id.clone())
                        .push_bind(false)
                        .push_bind(now.0);
                });
                q.build().persistent(false).execute(&mut *conn).await.map(drop)
            }

            /// Inserts the run's new events (`None` marks a retry, which stores nothing).
            async fn insert_events(conn: &mut Conn, keyed: &[KeyedInsert<'_>], stored: &[Option<StoredEvent>], now: Timestamp) -> Result<(), sqlx::Error> {
                let new_events: Vec<(&KeyedInsert<'_>, &StoredEvent)> =
                    keyed.iter().zip(stored).filter_map(|(k, e)| e.as_ref().map(|e| (k, e))).collect();
                if new_events.is_empty() {
                    return Ok(());
                }
                let mut q = QueryBuilder::<Db>::new("INSERT INTO events (stream, seq, actor_id, client_msg_id, payload, created_at) ");
                q.push_values(&new_events, |mut row, (k, e)| {
                    row.push_bind(k.stream_name.clone())
                        .push_bind(e.seq)
                        .push_bind(k.actor.clone())
                        .push_bind(k.key.to_owned())
                        .push_bind(e.payload.get().to_owned())
                        .push_bind(now.0);
                });
                q.build().persistent(false).execute(&mut *conn).await.map(drop)
            }

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

            async fn edit_message(conn: &mut Conn, course_id: Uuid, message_id: Uuid, editor_id: Uuid, content: &MessageContent, now: Timestamp) -> Outcome {
                let Some((sender, channel_id)) = live_message(conn, course_id, message_id).await? else {
                    return refused(AppError::NotFound("no such message"));
                };
                if sender != editor_id.to_string() {
                    return refused(AppError::Forbidden("only the sender may edit a message"));
                }
                let event = store(conn, StreamKey::messages(course_id), &sender, None, now, |seq| MessageEvent {
                    kind: MessageKind::MessageEdited,
                    seq,
                    message_id,
                    course_id,
                    channel_id,
                    sender_id: editor_id,
                    content: Some(content.as_str().to_owned()),
                    timestamp: now,
                })
                .await?;
                one(event)
            }

            async fn delete_message(conn: &mut Conn, course_id: Uuid, message_id: Uuid, actor_id: Uuid, may_moderate: bool, now: Timestamp) -> Outcome {
                let Some((sender, channel_id)) = live_message(conn, course_id, message_id).await? else {
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
                let event = store(conn, StreamKey::messages(course_id), &actor, None, now, |seq| MessageEvent {
                    kind: MessageKind::MessageDeleted,
                    seq,
                    message_id,
                    course_id,
                    channel_id,
                    sender_id: actor_id,
                    content: None,
                    timestamp: now,
                })
                .await?;
                one(event)
            }

            /// A stored notification: its owner, and the text a `read` event repeats.
            async fn stored_notification(conn: &mut Conn, notification_id: Uuid) -> Result<Option<(String, NotificationType, String, String, Priority)>, sqlx::Error> {
                let row: Option<(String, String, String, String, String)> = sqlx::query_as(
                    "SELECT user_id, notification_type, title, message, priority FROM notifications WHERE id = $1",
                )
                .bind(notification_id.to_string())
                .fetch_optional(&mut *conn)
                .await?;
                let Some((owner, notification_type, title, message, priority)) = row else { return Ok(None) };
                let decode = |e: serde_json::Error| sqlx::Error::Decode(Box::new(e));
                let notification_type = serde_json::from_value(serde_json::Value::String(notification_type)).map_err(decode)?;
                let priority = serde_json::from_value(serde_json::Value::String(priority)).map_err(decode)?;
                Ok(Some((owner, notification_type, title, message, priority)))
            }

            async fn read_notification(conn: &mut Conn, notification_id: Uuid, user_id: Uuid, now: Timestamp) -> Outcome {
                let stream = StreamKey::notifications(user_id);
                let actor = user_id.to_string();
                let Some((owner, notification_type, title, message, priority)) = stored_notification(conn, notification_id).await? else {
                    return refused(AppError::NotFound("no such notification"));
                };
                if owner != actor {
                    return refused(AppError::Forbidden("only the notification's user may mark it read"));
                }
                let key = read_key(notification_id);
                if let Some(original) = existing(conn, stream, &actor, &key).await? {
                    return Ok(Ok(Appended { events: vec![original], duplicate: true }));
                }
                sqlx::query("UPDATE notifications SET read_at = $1 WHERE id = $2")
                    .bind(now.0)
                    .bind(notification_id.to_string())
                    .execute(&mut *conn)
                    .await?;
                let event = store(conn, stream, &actor, Some(&key), now, |seq| NotificationEvent {
                    kind: NotificationKind::NotificationRead,
                    seq,
                    notification_id,
                    user_id,
                    notification_type,
                    title,
                    message,
                    priority,
                    timestamp: now,
                })
                .await?;
                one(event)
            }

            async fn report_progress(conn: &mut Conn, analysis_id: Uuid, progress: u8, data: &serde_json::Value, completion_notice: &NewNotification, now: Timestamp) -> Outcome {
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
                let (owner_id, course_id) = (parse_stored_id(&owner)?, parse_stored_id(&course)?);
                let complete = progress == 100;
                sqlx::query("UPDATE analyses SET progress = $1, completed_at = $2 WHERE id = $3")
                    .bind(i32::from(progress))
                    .bind(complete.then_some(now.0))
                    .bind(analysis_id.to_string())
                    .execute(&mut *conn)
                    .await?;
                let kind = if complete { ProgressKind::AnalysisComplete } else { ProgressKind::AnalysisProgress };
                let mut event = store(conn, StreamKey::progress(owner_id), "service", None, now, |seq| ProgressEvent {
                    kind,
                    seq,
                    user_id: owner_id,
                    analysis_id,
                    progress,
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
                store(conn, StreamKey::notifications(user_id), "system", None, now, |seq| NotificationEvent {
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
    sqlite,
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
    postgres,
    sqlx::PgConnection,
    sqlx::Postgres,
    "CROSS JOIN LATERAL (SELECT seq, payload FROM events
      WHERE stream = k.column1 AND actor_id = k.column2 AND client_msg_id = k.column3 LIMIT 1) AS e"
);
