//! The bottom layer: what a stream is, what is stored in one, and how a client
//! walks it. Storage, the event pipeline and every transport import these types;
//! this module imports nothing above `domain` and `error`.
//!
//! A stream is a totally ordered, durable sequence of events of one owner (a course
//! or a user); `seq` counts within one stream and its head lives in the database, so
//! every node agrees and a restart continues where it stopped.

mod append;
mod payloads;

use std::{fmt, str::FromStr, sync::Arc};

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use uuid::Uuid;

pub use append::{Append, Appended, NewNotification};
pub use payloads::{
    AnnotationEvent, MessageEvent, MessageKind, NotificationEvent, NotificationKind, NotificationType, Priority,
    ProgressEvent, ProgressKind,
};

use crate::error::AppError;

/// Whose stream it is: the id in a [`StreamKey`] names a course or a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    Course,
    User,
}

/// The kinds of stream, declared once: the polling routes, the socket events, the
/// cluster wire and storage's stream names are all derived from this list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// A course's chat messages (sent, edited, deleted).
    Messages,
    /// A course's collaboration annotations.
    Annotations,
    /// A user's notifications (new, read).
    Notifications,
    /// A user's analysis progress.
    Progress,
}

impl StreamKind {
    pub const ALL: [StreamKind; 4] = [Self::Messages, Self::Annotations, Self::Notifications, Self::Progress];

    /// The kind's name in stored stream names, polling paths and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Messages => "messages",
            Self::Annotations => "annotations",
            Self::Notifications => "notifications",
            Self::Progress => "progress",
        }
    }

    /// The name of the live event that carries one of its events (PROTOCOL.md
    /// section 3, "Event payloads").
    pub const fn event_name(self) -> &'static str {
        match self {
            Self::Messages => "message",
            Self::Annotations => "annotation",
            Self::Notifications => "notification",
            Self::Progress => "progress",
        }
    }

    pub fn owner(self) -> Owner {
        match self {
            Self::Messages | Self::Annotations => Owner::Course,
            Self::Notifications | Self::Progress => Owner::User,
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// One stream: its kind and its owner's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub kind: StreamKind,
    /// The course (messages, annotations) or the user (notifications, progress).
    pub id: Uuid,
}

impl StreamKey {
    pub fn new(kind: StreamKind, id: Uuid) -> Self {
        Self { kind, id }
    }

    pub fn messages(course: Uuid) -> Self {
        Self::new(StreamKind::Messages, course)
    }

    pub fn annotations(course: Uuid) -> Self {
        Self::new(StreamKind::Annotations, course)
    }

    pub fn notifications(user: Uuid) -> Self {
        Self::new(StreamKind::Notifications, user)
    }

    pub fn progress(user: Uuid) -> Self {
        Self::new(StreamKind::Progress, user)
    }
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.name(), self.id)
    }
}

/// Why a stream name did not parse (a stored or relayed name, never client input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamKeyError {
    #[error("no stream kind in the stream name")]
    NoKind,
    #[error("unknown stream kind {0:?}")]
    UnknownKind(String),
    #[error("bad stream id: {0}")]
    BadId(#[from] uuid::Error),
}

impl FromStr for StreamKey {
    type Err = StreamKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, id) = s.split_once(':').ok_or(StreamKeyError::NoKind)?;
        let kind = StreamKind::from_name(kind).ok_or_else(|| StreamKeyError::UnknownKind(kind.to_owned()))?;
        Ok(Self::new(kind, Uuid::parse_str(id)?))
    }
}

/// An event as committed: its stream, its `seq`, and its JSON exactly as stored (and
/// therefore exactly as every socket and polling client receives it).
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub stream: StreamKey,
    pub seq: i64,
    pub payload: Arc<RawValue>,
    /// For progress events: the analysis's course, whose watchers also receive it.
    pub watch_course: Option<Uuid>,
}

/// A page of one stream, as the polling endpoints and `sync`/`join` acks show it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamPage {
    pub events: Vec<Arc<RawValue>>,
    /// The `seq` of the last event returned, or `since` when none is.
    pub cursor: i64,
    pub has_more: bool,
}

/// Events per page when the client names no `limit`, and the most it may ask for.
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

/// Where a page starts: after `since` (default 0, never negative).
pub fn since(since: Option<i64>) -> Result<i64, AppError> {
    match since {
        Some(since) if since < 0 => Err(AppError::validation("since must be a non-negative integer")),
        since => Ok(since.unwrap_or(0)),
    }
}

/// A page size: default 100, clamped to 1..=1000 (PROTOCOL.md section 2, "Paging").
pub fn page_limit(limit: Option<i64>) -> u32 {
    // The clamp keeps the value within u32.
    limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE) as u32
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

/// Documented as what it is on the wire: an RFC 3339 string.
impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .into()
    }
}

impl utoipa::ToSchema for Timestamp {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_with_milliseconds() {
        assert_eq!(Timestamp(1_795_641_282_123).to_rfc3339(), "2026-11-25T21:14:42.123Z");
    }

    #[test]
    fn stream_names_round_trip_for_every_kind() {
        let id = Uuid::now_v7();
        for kind in StreamKind::ALL {
            let key = StreamKey::new(kind, id);
            assert_eq!(key.to_string().parse::<StreamKey>(), Ok(key));
        }
        assert_eq!("chat:x".parse::<StreamKey>(), Err(StreamKeyError::UnknownKind("chat".into())));
        assert_eq!("messages".parse::<StreamKey>(), Err(StreamKeyError::NoKind));
        assert!(matches!("messages:nope".parse::<StreamKey>(), Err(StreamKeyError::BadId(_))));
    }

    proptest::proptest! {
        /// A relayed or stored stream name parses to the key it names, or is refused.
        #[test]
        fn any_stream_name_parses_or_is_refused(raw in ".{0,80}") {
            if let Ok(key) = raw.parse::<StreamKey>() {
                proptest::prop_assert_eq!(key.to_string().parse::<StreamKey>(), Ok(key));
            }
        }
    }
}
