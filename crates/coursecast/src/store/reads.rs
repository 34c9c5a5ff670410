//! Reading streams: a page after a cursor, and a stream's head.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::{Store, with_db};
use crate::{
    error::AppError,
    streams::{StreamKey, StreamPage},
    telemetry::metrics,
};

impl Store {
    /// Events of `stream` after `since`, oldest first, at most `limit`.
    pub async fn read_stream(&self, stream: StreamKey, since: i64, limit: u32) -> Result<StreamPage, AppError> {
        let (events, has_more) = self.read_sequenced(stream, since, limit).await?;
        let cursor = events.last().map_or(since, |(seq, _)| *seq);
        Ok(StreamPage { events: events.into_iter().map(|(_, payload)| payload).collect(), cursor, has_more })
    }

    /// As [`Store::read_stream`], each event with its `seq` (for transports that
    /// label every event with its position, as Server-Sent Events ids do), and
    /// whether more follow.
    pub async fn read_sequenced(
        &self,
        stream: StreamKey,
        since: i64,
        limit: u32,
    ) -> Result<(Vec<(i64, Arc<RawValue>)>, bool), AppError> {
        let started = std::time::Instant::now();
        let rows: Vec<(i64, String)> = with_db!(self, read, pool => {
            sqlx::query_as("SELECT seq, payload FROM events WHERE stream = $1 AND seq > $2 ORDER BY seq LIMIT $3")
                .bind(stream.to_string())
                .bind(since)
                .bind(i64::from(limit) + 1)
                .fetch_all(pool)
                .await
        })?;
        metrics::db_query("read_stream", started.elapsed());
        let has_more = rows.len() > limit as usize;
        let mut events = Vec::with_capacity(rows.len().min(limit as usize));
        for (seq, payload) in rows.into_iter().take(limit as usize) {
            events.push((seq, Arc::from(RawValue::from_string(payload).map_err(AppError::internal)?)));
        }
        Ok((events, has_more))
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
}
