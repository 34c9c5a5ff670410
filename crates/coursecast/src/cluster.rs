//! Several nodes (DESIGN.md principle 2): with `REDIS_URL`, every node publishes the
//! events it commits, and the user disconnects it is asked for, on one Redis pub/sub
//! channel; every other node delivers them to its own sockets and long-poll waiters.
//!
//! Storage stays the source of truth: a node that misses a message (Redis briefly
//! down) leaves its clients with a `seq` gap they repair from the stored stream, and
//! a reconnecting client resumes from its cursor on any node.
//!
//! Why our own channel rather than socketioxide's Redis adapter: the adapter reaches
//! sockets only, while committed events must also wake long-poll waiters on every
//! node; one message per event serves both, and keeps handlers non-generic.
//!
//! Redis is only the bus (DESIGN.md principle 2): nothing commits or acknowledges
//! while waiting on it. Messages go into a bounded outbox that a relay task
//! publishes from; a full outbox drops (counted), and while Redis does not answer
//! the relay drops what it is handed (counted) and asks Redis again every
//! `PROBE_EVERY`. One WARN line and `coursecast_dependency_up{dependency="redis"}`
//! mark each change; other nodes' clients repair what they missed from storage.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use futures_util::{StreamExt, future::BoxFuture};
use redis::{
    AsyncCommands,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use tokio::sync::mpsc;

use crate::{
    events::fanout::{Origin, Sink},
    streams::{StoredEvent, StreamKey},
    telemetry::metrics,
};

/// Messages waiting for the relay at most; past it they are dropped.
const OUTBOX: usize = 8192;
/// The longest one publish may take before Redis counts as down.
const PUBLISH_WITHIN: Duration = Duration::from_secs(1);
/// How often a down Redis is asked whether it answers again.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// What nodes tell each other.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
enum Message {
    #[serde(rename_all = "camelCase")]
    /// `payload` is the event's JSON text (serde cannot borrow raw JSON through a
    /// tagged enum).
    Event { node: Uuid, stream: String, seq: i64, payload: String, watch_course: Option<Uuid> },
    #[serde(rename_all = "camelCase")]
    DisconnectUser { node: Uuid, user: Uuid },
}

/// Something another node asked this node to do.
pub enum Remote {
    Deliver(StoredEvent),
    DisconnectUser(Uuid),
}

pub struct Cluster {
    node: Uuid,
    channel: String,
    client: redis::Client,
    publisher: ConnectionManager,
    /// Messages for the relay task (which owns the receiving end).
    outbox: mpsc::Sender<String>,
    /// Whether Redis answered the relay's last publish or probe.
    up: AtomicBool,
}

impl Cluster {
    pub async fn connect(url: &str, channel: &str) -> anyhow::Result<Arc<Self>> {
        let client = redis::Client::open(url).context("parsing REDIS_URL")?;
        // Reconnects with backoff while running; at start-up, fail fast instead.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2))
            .set_connection_timeout(Some(Duration::from_secs(5)));
        let publisher =
            ConnectionManager::new_with_config(client.clone(), config).await.context("connecting to Redis")?;
        let node = Uuid::new_v4();
        tracing::info!(%node, channel, "cluster fan-out over Redis");
        let (outbox, queued) = mpsc::channel(OUTBOX);
        let cluster =
            Arc::new(Self { node, channel: channel.to_owned(), client, publisher, outbox, up: AtomicBool::new(true) });
        metrics::dependency_up("redis", true);
        tokio::spawn(relay(Arc::downgrade(&cluster), queued));
        Ok(cluster)
    }

    /// Whether Redis answered the last publish or probe.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Records whether Redis answers; going down starts the probe that brings it back.
    fn mark(self: &Arc<Self>, up: bool, cause: Option<&dyn std::fmt::Display>) {
        if self.up.swap(up, Ordering::AcqRel) == up {
            return;
        }
        metrics::dependency_up("redis", up);
        if !up {
            tokio::spawn(probe_until_up(Arc::downgrade(self)));
        }
        match cause {
            Some(cause) if !up => {
                tracing::warn!(error = %cause, "Redis unavailable: relaying nothing to other nodes until it answers")
            }
            _ if !up => tracing::warn!("Redis unavailable: relaying nothing to other nodes until it answers"),
            _ => tracing::warn!("Redis available again: relaying to other nodes"),
        }
    }

    /// Hands a committed event to the relay (never waits: see the module's header).
    fn relay_event(&self, event: &StoredEvent) {
        self.enqueue(&Message::Event {
            node: self.node,
            stream: event.stream.to_string(),
            seq: event.seq,
            payload: event.payload.get().to_owned(),
            watch_course: event.watch_course,
        });
    }

    /// Asks the other nodes to disconnect a user's sockets (never waits).
    pub fn relay_disconnect(&self, user: Uuid) {
        self.enqueue(&Message::DisconnectUser { node: self.node, user });
    }

    fn enqueue(&self, message: &Message) {
        let text = match serde_json::to_string(message) {
            Ok(text) => text,
            Err(err) => return tracing::error!(error = %err, "cluster message not encodable"),
        };
        if self.outbox.try_send(text).is_err() {
            metrics::cluster_relay_dropped("outbox_full");
        }
    }

    async fn publish(&self, text: String) -> Result<(), String> {
        let mut conn = self.publisher.clone();
        let started = std::time::Instant::now();
        match tokio::time::timeout(PUBLISH_WITHIN, conn.publish::<_, _, ()>(&self.channel, text)).await {
            Ok(Ok(())) => {
                metrics::redis_round_trip("publish", started.elapsed());
                Ok(())
            }
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err("no answer within the publish deadline".to_owned()),
        }
    }

    /// A round trip to Redis within `limit`; the answer also updates `is_up`.
    pub async fn ping_within(self: &Arc<Self>, limit: Duration) -> bool {
        let mut conn = self.publisher.clone();
        let started = std::time::Instant::now();
        let answered = tokio::time::timeout(limit, redis::cmd("PING").query_async::<String>(&mut conn)).await;
        let up = matches!(answered, Ok(Ok(_)));
        if up {
            metrics::redis_round_trip("ping", started.elapsed());
        }
        self.mark(up, None);
        up
    }

    /// Listens for the other nodes' messages for the life of the process,
    /// resubscribing after connection loss, and hands each to `handle`.
    pub fn spawn_listener<F, Fut>(self: &Arc<Self>, handle: F)
    where
        F: Fn(Remote) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let cluster = self.clone();
        tokio::spawn(async move {
            // Said once per loss, not once per retry while Redis is away.
            let mut lost = false;
            loop {
                if let Err(err) = cluster.listen(&handle, &mut lost).await {
                    if !lost {
                        tracing::warn!(error = %err, "cluster subscription lost; resubscribing");
                    }
                    lost = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    async fn listen<F, Fut>(&self, handle: &F, lost: &mut bool) -> anyhow::Result<()>
    where
        F: Fn(Remote) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(&self.channel).await?;
        if std::mem::take(lost) {
            tracing::warn!("cluster subscription restored");
        }
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            let text: String = message.get_payload()?;
            match serde_json::from_str::<Message>(&text) {
                Ok(Message::Event { node, .. } | Message::DisconnectUser { node, .. }) if node == self.node => {}
                Ok(Message::Event { stream, seq, payload, watch_course, .. }) => {
                    match (stream.parse::<StreamKey>(), RawValue::from_string(payload)) {
                        (Ok(stream), Ok(payload)) => {
                            let payload = Arc::from(payload);
                            handle(Remote::Deliver(StoredEvent { stream, seq, payload, watch_course })).await;
                        }
                        _ => tracing::warn!(stream, "undecodable cluster event"),
                    }
                }
                Ok(Message::DisconnectUser { user, .. }) => handle(Remote::DisconnectUser(user)).await,
                Err(err) => tracing::warn!(error = %err, "undecodable cluster message"),
            }
        }
        anyhow::bail!("the subscription stream ended")
    }
}

/// The relay to other nodes is a transport of the fan-out: it takes the events this
/// node committed, and never passes on what another node relayed here.
impl Sink for Cluster {
    fn deliver<'a>(&'a self, event: &'a StoredEvent, origin: Origin) -> BoxFuture<'a, ()> {
        if origin == Origin::Local {
            self.relay_event(event);
        }
        Box::pin(std::future::ready(()))
    }
}

/// Publishes the outbox until the cluster is dropped. While Redis is down it drops
/// what it is handed and probes instead, so a down Redis costs the writers nothing.
async fn relay(cluster: std::sync::Weak<Cluster>, mut queued: mpsc::Receiver<String>) {
    while let Some(text) = queued.recv().await {
        let Some(cluster) = cluster.upgrade() else { return };
        if !cluster.is_up() {
            metrics::cluster_relay_dropped("redis_down");
            continue;
        }
        if let Err(err) = cluster.publish(text).await {
            metrics::cluster_relay_dropped("redis_down");
            cluster.mark(false, Some(&err));
        }
    }
}

async fn probe_until_up(cluster: std::sync::Weak<Cluster>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let Some(cluster) = cluster.upgrade() else { return };
        if cluster.ping_within(PUBLISH_WITHIN).await {
            return;
        }
    }
}
