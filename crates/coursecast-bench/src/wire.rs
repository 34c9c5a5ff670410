//! What the generator reads off the wire, parsed cheaply: a delivered `message` event
//! needs only its `seq` and the send time embedded in its content, so the hot path
//! scans text instead of building JSON trees (the generator shares the CPU with the
//! server it measures).

use std::{sync::OnceLock, time::Instant};

/// Where the embedded send time starts in a benchmark message's content.
pub const MARK: &str = "bench:";

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds on the process's monotonic clock (senders and receivers share it).
pub fn now_micros() -> u64 {
    u64::try_from(epoch().elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Starts the clock (call once early, before anything is timed).
pub fn start_clock() {
    let _ = epoch();
}

/// A message content carrying its send time, padded to `len` characters.
pub fn content(sent_micros: u64, tag: &str, len: usize) -> String {
    let mut text = format!("{MARK}{sent_micros}:{tag} ");
    while text.len() < len {
        text.push_str("lorem ipsum dolor sit amet ");
    }
    text.truncate(len.max(text.find(' ').unwrap_or(text.len())));
    text
}

/// The digits right after `key` in `text`.
fn number_after(text: &str, key: &str) -> Option<i64> {
    let at = text.find(key)? + key.len();
    let rest = &text[at..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    rest[..digits].parse().ok()
}

/// `seq` and embedded send time of an event object's JSON (or a frame holding one).
pub fn seq_and_sent(json: &str) -> Option<(i64, Option<u64>)> {
    let seq = number_after(json, "\"seq\":")?;
    let sent = number_after(json, MARK).and_then(|v| u64::try_from(v).ok());
    Some((seq, sent))
}

/// The send time embedded in a message content.
pub fn sent_of(content: &str) -> Option<u64> {
    number_after(content, MARK).and_then(|v| u64::try_from(v).ok())
}

/// The event name of a `42/ns,["name",...]` frame.
pub fn event_name(frame: &str) -> Option<&str> {
    let start = frame.find("[\"")? + 2;
    let len = frame[start..].find('"')?;
    Some(&frame[start..start + len])
}

/// A delivered `message` event: its `seq` and embedded send time.
pub fn message(frame: &str) -> Option<(i64, Option<u64>)> {
    if event_name(frame)? != "message" {
        return None;
    }
    seq_and_sent(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_delivered_message() {
        let body = content(123_456, "s7-42", 80);
        assert_eq!(body.len(), 80);
        let frame = format!(
            "42/chat,[\"message\",{{\"content\":\"{body}\",\"courseId\":\"c\",\"messageId\":\"m\",\"senderId\":\"u\",\"seq\":991,\"timestamp\":\"t\",\"type\":\"message_sent\"}}]"
        );
        assert_eq!(message(&frame), Some((991, Some(123_456))));
        // Field order does not matter (Node sends seq first).
        let node = format!("42/chat,[\"message\",{{\"type\":\"message_sent\",\"seq\":7,\"content\":\"{body}\"}}]");
        assert_eq!(message(&node), Some((7, Some(123_456))));
        assert_eq!(message("42/chat,[\"presence\",{\"status\":\"online\"}]"), None);
        assert_eq!(event_name("42/chat,[\"presence\",{}]"), Some("presence"));
    }

    #[test]
    fn short_contents_keep_their_mark() {
        assert_eq!(content(5, "x", 1), "bench:5:x");
    }
}
