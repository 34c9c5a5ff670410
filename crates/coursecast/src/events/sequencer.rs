//! With several nodes, one stream's events reach a node out of `seq` order: its own
//! commits at once, other nodes' a Redis hop later. Handed on as they come, clients
//! would see a gap for every event overtaken and repair each one from storage (with
//! senders on two nodes of one course, 26,000 repairs in 15 s, and p99 near a
//! second), and a head read in between would name a cursor past an event not yet
//! delivered here. So, with several nodes, each stream's events are delivered here in
//! `seq` order: one that comes early is held until the events before it arrive, for
//! `HOLD` at most; past that what is held goes out with the gap (a relay was lost,
//! and clients repair it from storage as always). An event older than what was
//! already delivered is dropped: the clients that needed it repaired the gap.
//!
//! On one node events are committed and delivered in order and nothing is held.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    sync::Arc,
    time::Duration,
};

use tokio::sync::Mutex;

use crate::{
    streams::{StoredEvent, StreamKey},
    telemetry::metrics,
};

/// The longest an early event waits for the ones before it.
const HOLD: Duration = Duration::from_millis(200);
/// Streams followed at most; past it those holding nothing are forgotten (an event
/// of a forgotten stream is taken as in order).
const STREAMS_MAX: usize = 100_000;

#[derive(Default)]
struct Order {
    /// The `seq` delivered last.
    last: i64,
    /// Events that came before their turn, by `seq`.
    held: BTreeMap<i64, StoredEvent>,
    /// Counts the holds: a release timer acts only on the hold it was started for.
    hold: u64,
}

/// Where the sequencer sends the events it lets go: this node's clients, through
/// the fan-out's transports. The sequencer needs no more of the fan-out than this.
pub trait Release: Clone + Send + Sync + 'static {
    fn release(&self, event: &StoredEvent) -> impl Future<Output = ()> + Send;
}

/// One node's delivery order across its streams. Delivery runs under its lock, so
/// the events of a stream leave in the order they were released.
#[derive(Default)]
pub struct Sequencer {
    streams: Mutex<HashMap<StreamKey, Order>>,
}

impl Sequencer {
    /// Lets `event` go to `to` when its turn comes, with any held events it frees.
    pub async fn deliver(self: &Arc<Self>, to: &impl Release, event: StoredEvent) {
        let mut streams = self.streams.lock().await;
        if streams.len() >= STREAMS_MAX && !streams.contains_key(&event.stream) {
            streams.retain(|_, order| !order.held.is_empty());
        }
        let stream = event.stream;
        let order = streams.entry(stream).or_insert_with(|| Order { last: event.seq - 1, ..Order::default() });
        let ready = match event.seq - order.last {
            ..=0 => {
                metrics::late_event_dropped();
                return;
            }
            1 => {
                order.last = event.seq;
                let mut ready = vec![event];
                while let Some(next) = order.held.remove(&(order.last + 1)) {
                    order.last = next.seq;
                    ready.push(next);
                }
                ready
            }
            _ => {
                if order.held.is_empty() {
                    order.hold += 1;
                    tokio::spawn(self.clone().release_after_hold(to.clone(), stream, order.hold));
                }
                order.held.insert(event.seq, event);
                return;
            }
        };
        for event in &ready {
            to.release(event).await;
        }
    }

    /// Lets go of what the stream still holds after `HOLD`, gaps and all.
    async fn release_after_hold(self: Arc<Self>, to: impl Release, stream: StreamKey, hold: u64) {
        tokio::time::sleep(HOLD).await;
        let mut streams = self.streams.lock().await;
        let Some(order) = streams.get_mut(&stream).filter(|order| order.hold == hold) else { return };
        let held = std::mem::take(&mut order.held);
        if let Some((&seq, _)) = held.last_key_value() {
            order.last = seq;
            metrics::gap_released();
        }
        for event in held.values() {
            to.release(event).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use serde_json::value::RawValue;
    use uuid::Uuid;

    use super::*;

    /// Records the `seq` of every event let go.
    #[derive(Clone, Default)]
    struct Released(Arc<StdMutex<Vec<i64>>>);

    impl Release for Released {
        fn release(&self, event: &StoredEvent) -> impl Future<Output = ()> + Send {
            self.0.lock().expect("released").push(event.seq);
            std::future::ready(())
        }
    }

    impl Released {
        fn taken(&self) -> Vec<i64> {
            self.0.lock().expect("released").clone()
        }
    }

    fn event(stream: StreamKey, seq: i64) -> StoredEvent {
        let payload = RawValue::from_string("{}".into()).expect("raw");
        StoredEvent { stream, seq, payload: Arc::from(payload), watch_course: None }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_leaves_in_seq_order_and_a_gap_goes_after_the_hold() {
        let sequencer = Arc::new(Sequencer::default());
        let released = Released::default();
        let stream = StreamKey::messages(Uuid::now_v7());
        sequencer.deliver(&released, event(stream, 1)).await;
        sequencer.deliver(&released, event(stream, 3)).await;
        assert_eq!(released.taken(), vec![1], "3 waits for 2");
        sequencer.deliver(&released, event(stream, 2)).await;
        assert_eq!(released.taken(), vec![1, 2, 3]);
        sequencer.deliver(&released, event(stream, 2)).await;
        assert_eq!(released.taken(), vec![1, 2, 3], "a late event is dropped");

        sequencer.deliver(&released, event(stream, 6)).await;
        tokio::time::sleep(HOLD / 2).await;
        assert_eq!(released.taken(), vec![1, 2, 3], "6 waits for 4 and 5");
        tokio::time::sleep(HOLD).await;
        assert_eq!(released.taken(), vec![1, 2, 3, 6], "after the hold it goes with its gap");
        sequencer.deliver(&released, event(stream, 5)).await;
        sequencer.deliver(&released, event(stream, 7)).await;
        assert_eq!(released.taken(), vec![1, 2, 3, 6, 7], "what the gap held back is dropped");
    }
}
