//! Presence churn beside a chat run: extra members of the course that keep leaving
//! and joining it again (each socket every `period`: `leave`, half a period out,
//! `join`), so the server's presence work runs while its chat latency is measured.

use std::{sync::Arc, time::Duration};

use coursecast_client::raw::RawFrame;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::json;
use tokio::{sync::watch, task::JoinSet};

use crate::{Env, SeedUser, conn::Dialer, progress::Counter};

/// Churning sockets, running until [`Churn::stop`].
pub struct Churn {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    counters: Counters,
    connect_failures: u64,
}

#[derive(Clone, Default)]
struct Counters {
    joins: Counter,
    leaves: Counter,
    refused: Counter,
    dropped: Counter,
}

/// What the churn did while the chat ran.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChurnOutcome {
    pub sockets: usize,
    pub connect_failures: u64,
    pub joins: u64,
    pub leaves: u64,
    /// `join`/`leave` acks that were not `ok`.
    pub refused: u64,
    /// Churning sockets the server closed.
    pub dropped: u64,
}

impl Churn {
    /// Connects `users` to `course` and starts them churning, each at a random phase.
    pub async fn start(env: &Env, users: &[SeedUser], course: &str, period: Duration) -> anyhow::Result<Self> {
        let dialer = Arc::new(Dialer::new(env.url(), env.timeout, env.source_ips));
        let opened: Vec<_> = futures_util::stream::iter(users.iter().cloned())
            .map(|user| {
                let dialer = dialer.clone();
                let course = course.to_owned();
                async move { dialer.connect_join(&user.token, &course).await }
            })
            .buffer_unordered(200)
            .collect()
            .await;
        let (stop, stopped) = watch::channel(false);
        let counters = Counters::default();
        let mut tasks = JoinSet::new();
        let mut connect_failures = 0;
        for (i, joined) in opened.into_iter().enumerate() {
            let Ok(joined) = joined else {
                connect_failures += 1;
                continue;
            };
            let phase = period.mul_f64((i % 97) as f64 / 97.0);
            tasks.spawn(churn_one(joined.socket, course.to_owned(), period, phase, counters.clone(), stopped.clone()));
        }
        Ok(Self { stop, tasks, counters, connect_failures })
    }

    pub async fn stop(mut self) -> ChurnOutcome {
        self.stop.send_replace(true);
        let sockets = self.tasks.len();
        while self.tasks.join_next().await.is_some() {}
        let c = &self.counters;
        ChurnOutcome {
            sockets,
            connect_failures: self.connect_failures,
            joins: c.joins.get(),
            leaves: c.leaves.get(),
            refused: c.refused.get(),
            dropped: c.dropped.get(),
        }
    }
}

async fn churn_one(
    socket: coursecast_client::raw::RawSocket,
    course: String,
    period: Duration,
    phase: Duration,
    counters: Counters,
    mut stopped: watch::Receiver<bool>,
) {
    let (mut writer, mut reader) = socket.split();
    let mut timer = Box::pin(tokio::time::sleep(phase));
    let (mut joined, mut next_id) = (true, 1u64);
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            () = &mut timer => {
                let event = if joined { "leave" } else { "join" };
                if writer.emit(event, &json!({"courseId": course}), Some(next_id)).await.is_err() {
                    counters.dropped.inc();
                    return;
                }
                next_id += 1;
                joined = !joined;
                timer.as_mut().reset(tokio::time::Instant::now() + period / 2);
            }
            frame = reader.next() => match frame {
                Some(Ok(RawFrame::Ping)) => {
                    if writer.pong().await.is_err() {
                        counters.dropped.inc();
                        return;
                    }
                }
                Some(Ok(RawFrame::Ack { text, .. })) => {
                    // Acks come in order per socket: a join ack carries `cursor`.
                    let counter = if text.contains("\"cursor\"") { &counters.joins } else { &counters.leaves };
                    if text.contains("\"ok\":true") { counter.inc() } else { counters.refused.inc() }
                }
                Some(Ok(RawFrame::Closed | RawFrame::Disconnect)) | Some(Err(_)) | None => {
                    counters.dropped.inc();
                    return;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    writer.close().await;
}
