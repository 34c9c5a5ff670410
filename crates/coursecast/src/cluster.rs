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

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use futures_util::{StreamExt, future::BoxFuture};
use redis::{
    AsyncCommands,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::{
    events::fanout::{Origin, Sink},
    streams::{StoredEvent, StreamKey},
};

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
        Ok(Arc::new(Self { node, channel: channel.to_owned(), client, publisher }))
    }

    /// Tells the other nodes about a committed event.
    async fn publish_event(&self, event: &StoredEvent) {
        let message = Message::Event {
            node: self.node,
            stream: event.stream.to_string(),
            seq: event.seq,
            payload: event.payload.get().to_owned(),
            watch_course: event.watch_course,
        };
        self.publish(&message).await;
    }

    pub async fn publish_disconnect(&self, user: Uuid) {
        self.publish(&Message::DisconnectUser { node: self.node, user }).await;
    }

    async fn publish(&self, message: &Message) {
        let text = match serde_json::to_string(message) {
            Ok(text) => text,
            Err(err) => return tracing::error!(error = %err, "cluster message not encodable"),
        };
        let mut conn = self.publisher.clone();
        if let Err(err) = conn.publish::<_, _, ()>(&self.channel, text).await {
            // Other nodes' clients repair the gap from storage; say so loudly.
            tracing::warn!(error = %err, "cluster publish failed");
        }
    }

    /// A round trip to Redis, for `/readyz`.
    pub async fn ping(&self) -> redis::RedisResult<()> {
        let mut conn = self.publisher.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await.map(drop)
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
            loop {
                if let Err(err) = cluster.listen(&handle).await {
                    tracing::warn!(error = %err, "cluster subscription lost; resubscribing");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    async fn listen<F, Fut>(&self, handle: &F) -> anyhow::Result<()>
    where
        F: Fn(Remote) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(&self.channel).await?;
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
        Box::pin(async move {
            if origin == Origin::Local {
                self.publish_event(event).await;
            }
        })
    }
}
