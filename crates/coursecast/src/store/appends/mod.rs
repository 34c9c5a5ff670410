//! Appending events, with the state changes they describe, in one transaction per
//! batch.
//!
//! Every append assigns the stream's next `seq` in the same transaction that stores
//! the event; an append carrying a `clientMsgId` that the same actor already used on
//! the same stream stores nothing and returns the original event. Refusals (unknown
//! message, not the sender, ...) are decided before an append writes anything, so
//! one refused append never spoils the rest of its batch.
//!
//! This file plans (what a run of sends and annotations stores, which of them are
//! retries); `backend.rs` holds the SQL, written once for both backends.

mod backend;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use serde_json::value::RawValue;
use uuid::Uuid;

use super::Store;
use crate::{
    error::AppError,
    streams::{AnnotationEvent, Append, Appended, MessageEvent, MessageKind, StoredEvent, StreamKey, Timestamp},
};

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

/// The identity of a keyed append: stream name, actor, `clientMsgId`.
type KeyId = (String, String, String);

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
                (StreamKey::messages(*course_id), sender_id, client_msg_id)
            }
            Append::Annotate { course_id, user_id, client_msg_id, .. } => {
                (StreamKey::annotations(*course_id), user_id, client_msg_id)
            }
            _ => return None,
        };
        Some(Self { op, stream, stream_name: stream.to_string(), actor: actor.to_string(), key: key.as_str() })
    }

    fn id(&self) -> KeyId {
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
    fn new(keyed: &[KeyedInsert<'_>], originals: HashMap<KeyId, (i64, Arc<RawValue>)>) -> Self {
        let mut first_of: HashMap<KeyId, usize> = HashMap::new();
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

    /// The new events of the run, at the `seq`s reserved per stream (`None` where a
    /// step is a retry), and the message rows they add.
    fn build_new(
        &self,
        keyed: &[KeyedInsert<'_>],
        mut next_seq: HashMap<String, i64>,
        now: Timestamp,
    ) -> Result<(Vec<Option<StoredEvent>>, Vec<NewMessage>), sqlx::Error> {
        let mut messages = Vec::new();
        let mut stored = Vec::with_capacity(keyed.len());
        for (insert, step) in keyed.iter().zip(&self.steps) {
            if !matches!(step, KeyedStep::New) {
                stored.push(None);
                continue;
            }
            let seq =
                next_seq.get_mut(&insert.stream_name).ok_or_else(|| sqlx::Error::Protocol("no seq reserved".into()))?;
            let (payload, message) = insert.build(*seq, now)?;
            messages.extend(message);
            stored.push(Some(StoredEvent { stream: insert.stream, seq: *seq, payload, watch_course: None }));
            *seq += 1;
        }
        Ok((stored, messages))
    }

    /// Each step's outcome: its new event, or the original a retry is answered with.
    fn outcomes(self, stored: &[Option<StoredEvent>]) -> Result<Vec<Result<Appended, AppError>>, sqlx::Error> {
        let missing = |what: &str| sqlx::Error::Protocol(format!("missing {what}"));
        self.steps
            .into_iter()
            .enumerate()
            .map(|(i, step)| {
                let (event, duplicate) = match step {
                    KeyedStep::Original(event) => (event, true),
                    KeyedStep::SameAs(first) => (stored[first].clone().ok_or_else(|| missing("first copy"))?, true),
                    KeyedStep::New => (stored[i].clone().ok_or_else(|| missing("new event"))?, false),
                };
                Ok(Ok(Appended { events: vec![event], duplicate }))
            })
            .collect()
    }
}

impl Store {
    /// Applies `ops` in order in one transaction, within the storage deadline. The
    /// outer error means the transaction failed and nothing was stored (past the
    /// deadline the commit may still land: retries find it by `clientMsgId`); each
    /// inner result is one op's outcome (a refusal stores nothing for that op only).
    pub async fn append_batch(&self, ops: &[Append]) -> Result<Vec<Result<Appended, AppError>>, sqlx::Error> {
        self.bounded(self.append_batch_unbounded(ops)).await
    }

    async fn append_batch_unbounded(&self, ops: &[Append]) -> Result<Vec<Result<Appended, AppError>>, sqlx::Error> {
        let now = Timestamp::now();
        match &*self.backend {
            super::Backend::Sqlite { write, .. } => {
                let mut tx = write.begin().await?;
                let outcomes = backend::sqlite::apply_all(&mut tx, ops, now).await?;
                tx.commit().await?;
                Ok(outcomes)
            }
            super::Backend::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let outcomes = backend::postgres::apply_all(&mut tx, ops, now).await?;
                tx.commit().await?;
                Ok(outcomes)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ClientMsgId, MessageContent};

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
            (StreamKey::messages(course_b).to_string(), alice.to_string(), "stored".to_owned()),
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
                (StreamKey::messages(course_a).to_string(), 3),
                (StreamKey::messages(course_b).to_string(), 1)
            ])
        );
    }

    #[test]
    fn new_events_take_consecutive_seqs_per_stream_and_retries_share_the_first() {
        let (course, alice) = (Uuid::now_v7(), Uuid::now_v7());
        let ops = [send(course, alice, "a"), send(course, alice, "b"), send(course, alice, "a")];
        let keyed: Vec<KeyedInsert<'_>> = ops.iter().filter_map(KeyedInsert::of).collect();
        let plan = KeyedPlan::new(&keyed, HashMap::new());
        let first = HashMap::from([(StreamKey::messages(course).to_string(), 11)]);

        let (stored, messages) = plan.build_new(&keyed, first, Timestamp(0)).expect("built");
        let seqs: Vec<Option<i64>> = stored.iter().map(|e| e.as_ref().map(|e| e.seq)).collect();
        assert_eq!((seqs, messages.len()), (vec![Some(11), Some(12), None], 2));

        let outcomes = plan.outcomes(&stored).expect("outcomes");
        let answered: Vec<(i64, bool)> =
            outcomes.iter().map(|o| o.as_ref().map(|a| (a.events[0].seq, a.duplicate)).expect("stored")).collect();
        assert_eq!(answered, [(11, false), (12, false), (11, true)]);
    }
}
