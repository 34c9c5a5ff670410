//! What a Server-Sent Events client asks for: the `streams` query (`KIND:ID` or
//! `KIND:ID:SINCE`, comma-separated) and the `Last-Event-ID` it resumes from
//! (PROTOCOL.md section 2, "Server-Sent Events"). Parsed once, at the edge, into
//! types; anything malformed is `VALIDATION_FAILED` before the stream starts.

use std::fmt;

use uuid::Uuid;

use crate::{
    error::AppError,
    events::subscribers::Topic,
    streams::{StreamKey, StreamKind},
};

/// The kind name of a course's analysis progress, as a professor watches it.
const WATCH: &str = "watch";

/// One thing a connection listens to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A stored stream, walked with a cursor.
    Stream(StreamKey),
    /// A course's live progress events: no cursor, no replay.
    Watch(Uuid),
}

impl Target {
    pub fn topic(self) -> Topic {
        match self {
            Self::Stream(stream) => Topic::Stream(stream),
            Self::Watch(course) => Topic::Watch(course),
        }
    }
}

/// `KIND:ID`, as the `ready` event names each stream.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stream(stream) => write!(f, "{}:{}", stream.kind.name(), stream.id),
            Self::Watch(course) => write!(f, "{WATCH}:{course}"),
        }
    }
}

/// The specs of one connection, in the order the client gave them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Specs {
    pub targets: Vec<Target>,
    /// The `SINCE` of each cursored target (every `Stream`, in order); `None`: start
    /// at the stream's head.
    pub since: Vec<Option<i64>>,
}

impl Specs {
    /// Parses `streams`: 1 to `max` specs, no target twice.
    pub fn parse(streams: &str, max: usize) -> Result<Self, AppError> {
        let mut specs = Specs { targets: Vec::new(), since: Vec::new() };
        if streams.is_empty() {
            return Err(AppError::validation("streams must name at least one stream"));
        }
        for (position, spec) in streams.split(',').enumerate() {
            if position >= max {
                return Err(AppError::validation(format!("streams may name at most {max} streams")));
            }
            let (target, since) = parse_spec(spec, position)?;
            if specs.targets.contains(&target) {
                return Err(AppError::validation(format!("streams names spec {} twice", position + 1)));
            }
            if let Target::Stream(_) = target {
                specs.since.push(since);
            }
            specs.targets.push(target);
        }
        Ok(specs)
    }

    /// The cursored targets' streams, in order (the positions of an event id).
    pub fn cursored(&self) -> Vec<StreamKey> {
        self.targets
            .iter()
            .filter_map(|target| match target {
                Target::Stream(stream) => Some(*stream),
                Target::Watch(_) => None,
            })
            .collect()
    }

    /// Replaces every `SINCE` with the cursors of a `Last-Event-ID`.
    pub fn resume_from(&mut self, last_event_id: &[u8]) -> Result<(), AppError> {
        let cursors = parse_event_id(last_event_id, self.since.len())?;
        self.since = cursors.into_iter().map(Some).collect();
        Ok(())
    }
}

fn parse_spec(spec: &str, position: usize) -> Result<(Target, Option<i64>), AppError> {
    let n = position + 1;
    let mut parts = spec.split(':');
    let (kind, id, since) = (parts.next().unwrap_or_default(), parts.next(), parts.next());
    if parts.next().is_some() {
        return Err(AppError::validation(format!("stream spec {n} must be KIND:ID or KIND:ID:SINCE")));
    }
    let id = id
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or_else(|| AppError::validation(format!("the id of stream spec {n} must be a UUID")))?;
    let since = since
        .map(|since| cursor(since).ok_or(()))
        .transpose()
        .map_err(|()| AppError::validation(format!("the cursor of stream spec {n} must be a non-negative integer")))?;
    if kind == WATCH {
        if since.is_some() {
            return Err(AppError::validation(format!("stream spec {n}: watch takes no cursor")));
        }
        return Ok((Target::Watch(id), None));
    }
    let kind = StreamKind::from_name(kind).ok_or_else(|| {
        AppError::validation(format!(
            "the kind of stream spec {n} must be messages, annotations, notifications, progress or watch"
        ))
    })?;
    Ok((Target::Stream(StreamKey::new(kind, id)), since))
}

/// A `seq` cursor: decimal digits only (no sign, no spaces), within `i64`.
fn cursor(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The cursors of an event id: `count` cursors joined with `.` (empty for none).
fn parse_event_id(id: &[u8], count: usize) -> Result<Vec<i64>, AppError> {
    let refused = || {
        AppError::validation(format!(
            "Last-Event-ID must be {count} non-negative integers joined with `.`, one per cursored stream"
        ))
    };
    let id = std::str::from_utf8(id).map_err(|_| refused())?.trim();
    if id.is_empty() {
        return if count == 0 { Ok(Vec::new()) } else { Err(refused()) };
    }
    let cursors: Vec<i64> = id.split('.').map(cursor).collect::<Option<_>>().ok_or_else(refused)?;
    if cursors.len() == count { Ok(cursors) } else { Err(refused()) }
}

/// The event id of a set of cursors: `17.0.342`.
pub fn event_id(cursors: &[i64]) -> String {
    let mut id = String::with_capacity(cursors.len() * 4);
    for (i, cursor) in cursors.iter().enumerate() {
        if i > 0 {
            id.push('.');
        }
        id.push_str(&cursor.to_string());
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(streams: &str) -> bool {
        matches!(Specs::parse(streams, 3), Err(AppError::Validation(_)))
    }

    #[test]
    fn parses_specs_in_order_with_their_cursors() {
        let (a, u) = (Uuid::now_v7(), Uuid::now_v7());
        let specs = Specs::parse(&format!("messages:{a}:17,watch:{a},notifications:{u}"), 3).unwrap();
        assert_eq!(
            specs.targets,
            [Target::Stream(StreamKey::messages(a)), Target::Watch(a), Target::Stream(StreamKey::notifications(u))]
        );
        assert_eq!(specs.since, [Some(17), None]);
        assert_eq!(specs.cursored(), [StreamKey::messages(a), StreamKey::notifications(u)]);
        assert_eq!(specs.targets[1].to_string(), format!("watch:{a}"));
    }

    #[test]
    fn refuses_malformed_specs() {
        let a = Uuid::now_v7();
        for bad in [
            String::new(),
            format!("chat:{a}"),
            "messages:not-a-uuid".into(),
            format!("messages:{a}:-1"),
            format!("messages:{a}:+1"),
            format!("messages:{a}:1:2"),
            format!("messages:{a}:"),
            format!("watch:{a}:3"),
            format!("messages:{a},messages:{a}:4"),
            format!("messages:{a},"),
            format!("messages:{a},annotations:{a},progress:{a},notifications:{a}"),
        ] {
            assert!(refused(&bad), "{bad:?} was accepted");
        }
    }

    #[test]
    fn last_event_id_must_match_the_cursored_specs() {
        let (a, u) = (Uuid::now_v7(), Uuid::now_v7());
        let mut specs = Specs::parse(&format!("messages:{a}:1,watch:{a},progress:{u}"), 3).unwrap();
        specs.resume_from(b"17.342").unwrap();
        assert_eq!(specs.since, [Some(17), Some(342)]);
        for bad in [&b"17"[..], b"17.0.3", b"17.x", b"17.-1", b"", b"17..3", b"\xff"] {
            assert!(specs.clone().resume_from(bad).is_err(), "{bad:?} was accepted");
        }
        let mut watch_only = Specs::parse(&format!("watch:{a}"), 3).unwrap();
        assert!(watch_only.resume_from(b"").is_ok());
        assert!(watch_only.resume_from(b"1").is_err());
    }

    #[test]
    fn event_ids_join_cursors_with_dots() {
        assert_eq!(event_id(&[17, 0, 342]), "17.0.342");
        assert_eq!(event_id(&[]), "");
    }
}
