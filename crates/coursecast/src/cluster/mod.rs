//! Several nodes (DESIGN.md principle 2): with `REDIS_URL`, every node publishes the
//! events it commits on Redis pub/sub, and every other node delivers them to its own
//! sockets, event streams and long-poll waiters.
//!
//! Routing by interest: each course and each user has its own channel
//! (`{REDIS_CHANNEL}:course:{id}`, `{REDIS_CHANNEL}:user:{id}`), and a node subscribes
//! only to the scopes its clients hold (`events::interest`), so cross-node traffic
//! grows with each node's audience, not with the platform's. A progress event goes
//! to its user's channel and its course's (watchers); a node holding both takes it
//! from the user's. Requests every node must hear (disconnect a user: their tokens
//! stopped holding) go on the base channel `{REDIS_CHANNEL}`.
//!
//! Besides events, nodes share two views through Redis, each kept per node with
//! expiry so a dead node drops out: every user's socket count (`sockets`, for the
//! per-user limit) and every course room's online users (`presence`).
//!
//! Storage stays the source of truth: a node that misses a message (Redis briefly
//! down) leaves its clients with a `seq` gap they repair from the stored stream, and
//! a reconnecting client resumes from its cursor on any node.
//!
//! Why our own channels rather than socketioxide's Redis adapter: the adapter reaches
//! sockets only, while committed events must also wake long-poll waiters and event
//! streams on every node; one message per event serves all, and keeps handlers
//! non-generic.
//!
//! Redis is only the bus (DESIGN.md principle 2): nothing commits or acknowledges
//! while waiting on it. Messages go into a bounded outbox that a relay task
//! publishes from; a full outbox drops (counted), and while Redis does not answer
//! the relay drops what it is handed (counted) and asks Redis again every
//! `PROBE_EVERY`. One WARN line and `coursecast_dependency_up{dependency="redis"}`
//! mark each change; other nodes' clients repair what they missed from storage.

mod presence;
mod sockets;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use futures_util::{StreamExt, future::BoxFuture};
use redis::{
    AsyncCommands,
    aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink},
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use tokio::sync::mpsc;

use crate::{
    events::{
        fanout::Sink,
        interest::{Change, Interest, Scope},
    },
    streams::{StoredEvent, StreamKey},
    telemetry::metrics,
};

pub use presence::{PresenceChange, RoomSnapshot};
pub use sockets::{Admission, LocalSockets};
use sockets::{SocketCount, SocketCounts};

/// Messages waiting for the relay at most; past it they are dropped.
const OUTBOX: usize = 8192;
/// The longest one publish or subscription change may take before Redis counts
/// as down.
const PUBLISH_WITHIN: Duration = Duration::from_secs(1);
/// How often a down Redis is asked whether it answers again; the subscription is
/// retried as often (after a first quick retry), so receiving resumes about when
/// publishing does.
const PROBE_EVERY: Duration = Duration::from_millis(500);
const RESUBSCRIBE_FIRST: Duration = Duration::from_millis(100);
/// Channels per SUBSCRIBE command when resubscribing everything after a reconnect.
const SUBSCRIBE_BATCH: usize = 1000;
/// Subscription changes applied per round trip at most.
const CHANGES_BATCH: usize = 1000;

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
    /// A node's change of presence in a course room, on the course's channel.
    #[serde(rename_all = "camelCase")]
    Presence { node: Uuid, namespace: String, course: Uuid, change: PresenceChange },
    /// A node stopping cleanly, on the base channel.
    #[serde(rename_all = "camelCase")]
    NodeLeft { node: Uuid },
}

/// Who sent a message (every message names its node).
#[derive(Deserialize)]
struct Sender {
    node: Uuid,
}

/// Something another node asked this node to do, or news of the link to them.
pub enum Remote {
    Deliver(StoredEvent),
    DisconnectUser(Uuid),
    Presence {
        node: Uuid,
        namespace: String,
        course: Uuid,
        change: PresenceChange,
    },
    /// A node stopped cleanly: its users are offline.
    NodeLeft(Uuid),
    /// Subscribed (again): other nodes' state can be read.
    Linked,
    /// The subscription was lost: other nodes' state is no longer heard.
    Isolated,
}

/// What the relay writes to Redis, in order.
enum Outgoing {
    /// A message for other nodes: its channel and its text.
    Publish { channel: String, text: String },
    /// This node's socket count of one user (`sockets`).
    Sockets(SocketCount),
    /// This node's set of a room's users (`presence`).
    Presence(presence::SetWrite),
}

pub struct Cluster {
    node: Uuid,
    /// The base channel; scope channels are named after it.
    channel: String,
    client: redis::Client,
    publisher: ConnectionManager,
    /// Messages for the relay task (which owns the receiving end).
    outbox: mpsc::Sender<Outgoing>,
    /// Whether Redis answered the relay's last publish or probe.
    up: AtomicBool,
    /// What this node's clients listen to: the channels it subscribes to.
    interest: Arc<Interest>,
    /// Events received from other nodes and delivered here.
    received: AtomicU64,
    /// The per-user socket limit across nodes.
    sockets: SocketCounts,
}

impl Cluster {
    pub async fn connect(url: &str, channel: &str, interest: Arc<Interest>) -> anyhow::Result<Arc<Self>> {
        let client = redis::Client::open(url).context("parsing REDIS_URL")?;
        // Reconnects with backoff while running; at start-up, fail fast instead.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2))
            .set_connection_timeout(Some(Duration::from_secs(5)));
        let publisher =
            ConnectionManager::new_with_config(client.clone(), config).await.context("connecting to Redis")?;
        let node = Uuid::new_v4();
        tracing::info!(%node, channel, "cluster fan-out over Redis, routed by interest");
        let (outbox, queued) = mpsc::channel(OUTBOX);
        let cluster = Arc::new(Self {
            node,
            channel: channel.to_owned(),
            client,
            publisher,
            outbox,
            up: AtomicBool::new(true),
            interest,
            received: AtomicU64::new(0),
            sockets: SocketCounts::default(),
        });
        metrics::dependency_up("redis", true);
        tokio::spawn(relay(Arc::downgrade(&cluster), queued));
        Ok(cluster)
    }

    /// Events other nodes relayed that this node delivered to its clients.
    pub fn received_events(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
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

    /// The channel of one scope.
    fn scope_channel(&self, scope: Scope) -> String {
        match scope {
            Scope::Course(id) => format!("{}:course:{id}", self.channel),
            Scope::User(id) => format!("{}:user:{id}", self.channel),
        }
    }

    /// The scope a channel name stands for (`None`: the base channel).
    fn channel_scope(&self, name: &str) -> Option<Scope> {
        let rest = name.strip_prefix(self.channel.as_str())?.strip_prefix(':')?;
        let (kind, id) = rest.split_once(':')?;
        let id = Uuid::parse_str(id).ok()?;
        match kind {
            "course" => Some(Scope::Course(id)),
            "user" => Some(Scope::User(id)),
            _ => None,
        }
    }

    /// Hands a committed event to the relay, once per scope whose listeners it
    /// reaches (never waits: see the module's header).
    fn relay_event(&self, event: &StoredEvent) {
        let message = Message::Event {
            node: self.node,
            stream: event.stream.to_string(),
            seq: event.seq,
            payload: event.payload.get().to_owned(),
            watch_course: event.watch_course,
        };
        for scope in Scope::reached_by(event) {
            self.enqueue(self.scope_channel(scope), &message);
        }
    }

    /// Asks every other node to disconnect a user's sockets (never waits).
    pub fn relay_disconnect(&self, user: Uuid) {
        self.enqueue(self.channel.clone(), &Message::DisconnectUser { node: self.node, user });
    }

    fn enqueue(&self, channel: String, message: &Message) {
        let text = match serde_json::to_string(message) {
            Ok(text) => text,
            Err(err) => return tracing::error!(error = %err, "cluster message not encodable"),
        };
        if self.outbox.try_send(Outgoing::Publish { channel, text }).is_err() {
            metrics::cluster_relay_dropped("outbox_full");
        }
    }

    async fn publish(&self, channel: String, text: String) -> Result<(), String> {
        let mut conn = self.publisher.clone();
        let started = std::time::Instant::now();
        let bytes = text.len();
        match tokio::time::timeout(PUBLISH_WITHIN, conn.publish::<_, _, ()>(channel, text)).await {
            Ok(Ok(())) => {
                metrics::redis_round_trip("publish", started.elapsed());
                metrics::cluster_traffic("out", bytes);
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

    /// Listens for the other nodes' messages for the life of the process: subscribes
    /// to the base channel and to the scopes `changes` asks for, resubscribes after
    /// connection loss, and hands each message to `handle`.
    pub fn spawn_listener<F, Fut>(self: &Arc<Self>, mut changes: mpsc::UnboundedReceiver<Change>, handle: F)
    where
        F: Fn(Remote) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let cluster = self.clone();
        tokio::spawn(async move {
            // Said once per loss, not once per retry while Redis is away.
            let mut lost = false;
            let mut wait = RESUBSCRIBE_FIRST;
            loop {
                let result = cluster.listen(&handle, &mut changes, &mut lost).await;
                cluster.interest.linked(false);
                if let Err(err) = result {
                    if !lost {
                        tracing::warn!(error = %err, "cluster subscription lost; resubscribing");
                        wait = RESUBSCRIBE_FIRST;
                        handle(Remote::Isolated).await;
                    }
                    lost = true;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(PROBE_EVERY);
            }
        });
    }

    async fn listen<F, Fut>(
        &self,
        handle: &F,
        changes: &mut mpsc::UnboundedReceiver<Change>,
        lost: &mut bool,
    ) -> anyhow::Result<()>
    where
        F: Fn(Remote) -> Fut,
        Fut: Future<Output = ()>,
    {
        let pubsub = tokio::time::timeout(PUBLISH_WITHIN, self.client.get_async_pubsub())
            .await
            .context("no connection within the deadline")??;
        let (mut sink, mut messages) = pubsub.split();
        within(sink.subscribe(&self.channel)).await?;
        // Everything wanted now; changes queued meanwhile are applied after it, in
        // order, so the subscriptions end as the interest says.
        for scopes in self.interest.wanted().chunks(SUBSCRIBE_BATCH) {
            let names: Vec<String> = scopes.iter().map(|scope| self.scope_channel(*scope)).collect();
            within(sink.subscribe(names)).await?;
            self.interest.confirm(scopes);
        }
        self.interest.linked(true);
        if std::mem::take(lost) {
            tracing::warn!("cluster subscription restored");
        }
        handle(Remote::Linked).await;
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else { anyhow::bail!("the subscription stream ended") };
                    self.receive(&message, handle).await;
                }
                Some(first) = changes.recv() => {
                    let mut batch = vec![first];
                    while batch.len() < CHANGES_BATCH && let Ok(change) = changes.try_recv() {
                        batch.push(change);
                    }
                    self.apply(&mut sink, batch).await?;
                }
            }
        }
    }

    /// Applies subscription changes: only each scope's last change counts.
    async fn apply(&self, sink: &mut PubSubSink, batch: Vec<Change>) -> anyhow::Result<()> {
        let mut last = HashMap::new();
        for change in batch {
            match change {
                Change::Subscribe(scope) => last.insert(scope, true),
                Change::Unsubscribe(scope) => last.insert(scope, false),
            };
        }
        let (subscribe, unsubscribe): (Vec<_>, Vec<_>) = last.into_iter().partition(|(_, wanted)| *wanted);
        let subscribe: Vec<Scope> = subscribe.into_iter().map(|(scope, _)| scope).collect();
        if !subscribe.is_empty() {
            let names: Vec<String> = subscribe.iter().map(|scope| self.scope_channel(*scope)).collect();
            within(sink.subscribe(names)).await?;
            self.interest.confirm(&subscribe);
        }
        if !unsubscribe.is_empty() {
            let names: Vec<String> = unsubscribe.iter().map(|(scope, _)| self.scope_channel(*scope)).collect();
            within(sink.unsubscribe(names)).await?;
        }
        Ok(())
    }

    async fn receive<F, Fut>(&self, message: &redis::Msg, handle: &F)
    where
        F: Fn(Remote) -> Fut,
        Fut: Future<Output = ()>,
    {
        let text: String = match message.get_payload() {
            Ok(text) => text,
            Err(err) => return tracing::warn!(error = %err, "undecodable cluster message"),
        };
        // Everything Redis sends counts, this node's own messages included: every
        // subscriber of a channel gets them, the publisher too.
        metrics::cluster_traffic("in", text.len());
        // Only the sender is read first: this node's own come back on every channel
        // it holds, and are dropped without decoding the rest.
        match serde_json::from_str::<Sender>(&text) {
            Ok(Sender { node }) if node == self.node => return,
            Ok(_) => {}
            Err(err) => return tracing::warn!(error = %err, "undecodable cluster message"),
        }
        match serde_json::from_str::<Message>(&text) {
            Ok(Message::Event { stream, seq, payload, watch_course, .. }) => {
                let (Ok(stream), Ok(payload)) = (stream.parse::<StreamKey>(), RawValue::from_string(payload)) else {
                    return tracing::warn!(stream, "undecodable cluster event");
                };
                // A progress event heard on its course's channel also comes on its
                // user's: a node listening to both delivers the user's copy only.
                let via = self.channel_scope(message.get_channel_name());
                let own = Scope::of(stream);
                if via.is_some_and(|via| via != own) && self.interest.holds(own) {
                    return;
                }
                self.received.fetch_add(1, Ordering::Relaxed);
                let payload = Arc::from(payload);
                handle(Remote::Deliver(StoredEvent { stream, seq, payload, watch_course })).await;
            }
            Ok(Message::DisconnectUser { user, .. }) => handle(Remote::DisconnectUser(user)).await,
            Ok(Message::Presence { node, namespace, course, change }) => {
                handle(Remote::Presence { node, namespace, course, change }).await
            }
            Ok(Message::NodeLeft { node }) => handle(Remote::NodeLeft(node)).await,
            Err(err) => tracing::warn!(error = %err, "undecodable cluster message"),
        }
    }
}

/// A subscription change, within `PUBLISH_WITHIN`.
async fn within(change: impl Future<Output = redis::RedisResult<()>>) -> anyhow::Result<()> {
    tokio::time::timeout(PUBLISH_WITHIN, change).await.context("no answer within the deadline")??;
    Ok(())
}

/// The relay to other nodes is a transport of the fan-out: it is handed the events
/// this node commits (never those another node relayed here).
impl Sink for Cluster {
    fn deliver<'a>(&'a self, event: &'a StoredEvent) -> BoxFuture<'a, ()> {
        self.relay_event(event);
        Box::pin(std::future::ready(()))
    }
}

/// Publishes the outbox until the cluster is dropped. While Redis is down it drops
/// what it is handed and probes instead, so a down Redis costs the writers nothing.
async fn relay(cluster: std::sync::Weak<Cluster>, mut queued: mpsc::Receiver<Outgoing>) {
    while let Some(outgoing) = queued.recv().await {
        let Some(cluster) = cluster.upgrade() else { return };
        if !cluster.is_up() {
            match outgoing {
                Outgoing::Publish { .. } => metrics::cluster_relay_dropped("redis_down"),
                Outgoing::Sockets(count) => cluster.sockets_dropped(count),
                // Repaired by the next sync's rewrite.
                Outgoing::Presence(_) => {}
            }
            continue;
        }
        let written = match outgoing {
            Outgoing::Publish { channel, text } => {
                let published = cluster.publish(channel, text).await;
                if published.is_err() {
                    metrics::cluster_relay_dropped("redis_down");
                }
                published
            }
            Outgoing::Sockets(count) => cluster.write_sockets(count).await,
            Outgoing::Presence(write) => cluster.write_presence(write).await,
        };
        if let Err(err) = written {
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
