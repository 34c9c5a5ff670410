//! Answers are never dropped: acks, refusals and `error` events that meet a full
//! socket buffer wait in the socket's backlog instead of being discarded
//! (PROTOCOL.md section 5, "Answers under overload").
//!
//! socketioxide has one bounded queue per socket and no priorities, so priority is
//! made by leaving the queue to the answers: while a socket owes one it is in the
//! `owing` room, which every broadcast skips, and one task per such socket retries
//! until the client has read enough for the answers to fit (in order). Ephemeral
//! events skip it longer (`congested`), so under pressure they are dropped first,
//! then broadcast copies (which a client repairs from its cursor), never answers.
//! A client that reads nothing at all is cut by the Engine.IO heartbeat, whose ping
//! cannot be queued either: a transport close, after which official clients
//! reconnect by themselves and retry their sends with the same `clientMsgId`.

use std::{collections::VecDeque, convert::Infallible, sync::Arc, time::Duration};

use serde_json::{Value, value::RawValue};
use socketioxide::{
    SendError, SocketError,
    adapter::Adapter,
    extract::AckSender,
    handler::{FromMessageParts, Value as Packet},
    socket::Socket,
};

use super::{Session, catalog, rooms};
use crate::{locks::lock, telemetry::metrics};

/// First pause between two retries; it doubles up to `MAX_PAUSE`.
const FIRST_PAUSE: Duration = Duration::from_millis(2);
const MAX_PAUSE: Duration = Duration::from_millis(50);
/// How long a socket that owed answers keeps skipping ephemeral events afterwards.
const COOL_DOWN: Duration = Duration::from_secs(2);

/// Something the client is owed.
#[derive(Debug, Clone)]
pub enum Answer {
    /// The ack of the client's event `id`, serialized.
    Ack { id: i64, body: Box<RawValue> },
    /// An `error` event (a failed event sent without an ack, or an unknown one).
    Error(Value),
}

/// How a handler answers: the socket and the ack id of the event it handles.
pub struct Replier<A: Adapter> {
    socket: Arc<Socket<A>>,
    ack_id: Option<i64>,
}

impl<A: Adapter> FromMessageParts<A> for Replier<A> {
    type Error = Infallible;

    fn from_message_parts(s: &Arc<Socket<A>>, _: &mut Packet, ack_id: &Option<i64>) -> Result<Self, Infallible> {
        Ok(Self { socket: s.clone(), ack_id: *ack_id })
    }
}

impl<A: Adapter> Replier<A> {
    /// Whether the client asked for an ack (then a failure goes in it, else in an `error` event).
    pub fn wants_ack(&self) -> bool {
        self.ack_id.is_some()
    }

    /// The ack if one was asked for; otherwise, for a refusal, an `error` event.
    pub fn answer(&self, session: &Arc<Session>, body: Box<RawValue>, error: Option<Value>) {
        match (self.ack_id, error) {
            (Some(id), _) => deliver(&self.socket, session, Answer::Ack { id, body }),
            (None, Some(error)) => deliver(&self.socket, session, Answer::Error(error)),
            (None, None) => {}
        }
    }

    pub fn error_event(&self, session: &Arc<Session>, error: Value) {
        deliver(&self.socket, session, Answer::Error(error));
    }
}

/// Answers a socket owes, oldest first.
#[derive(Default)]
pub struct Backlog {
    state: std::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    owed: VecDeque<Answer>,
    /// A drain task is running (at most one per socket).
    draining: bool,
    /// Counts the times the socket started owing, so a cool-down that ends after a
    /// newer episode began leaves the socket `congested`.
    episode: u64,
}

/// Sends `answer` now if the buffer takes it and nothing older is waiting; otherwise
/// queues it and makes sure a drain task is running.
pub fn deliver<A: Adapter>(socket: &Arc<Socket<A>>, session: &Arc<Session>, answer: Answer) {
    let mut state = lock(&session.backlog.state);
    if !state.draining {
        match send(socket, &answer) {
            Ok(()) => return,
            Err(SendError::Socket(SocketError::InternalChannelFull)) => {}
            Err(err) => {
                // Closed (the client retries after reconnecting) or unserialisable.
                tracing::debug!(socket_id = %socket.id, error = %err, "answer not delivered");
                return;
            }
        }
        state.draining = true;
        state.episode += 1;
        // Under the lock, so a drain that just finished cannot leave the room after this.
        socket.join(rooms::ephemeral_except());
        tokio::spawn(drain(socket.clone(), session.clone()));
    }
    metrics::answer_deferred();
    state.owed.push_back(answer);
}

fn send<A: Adapter>(socket: &Arc<Socket<A>>, answer: &Answer) -> Result<(), SendError> {
    match answer {
        Answer::Ack { id, body } => {
            let Ok(sender) = AckSender::from_message_parts(socket, &mut Packet::Bytes(Default::default()), &Some(*id));
            sender.send(body)
        }
        Answer::Error(body) => socket.emit(catalog::server::ERROR, body),
    }
}

/// Retries the socket's owed answers, in order, until all are out or it closes.
async fn drain<A: Adapter>(socket: Arc<Socket<A>>, session: Arc<Session>) {
    let mut pause = FIRST_PAUSE;
    let episode = loop {
        match step(&socket, &session) {
            Step::Sent => pause = FIRST_PAUSE,
            Step::Full => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
            Step::Done { episode } => break episode,
            Step::Closed => return,
        }
    };
    tokio::time::sleep(COOL_DOWN).await;
    let state = lock(&session.backlog.state);
    if !state.draining && state.episode == episode {
        socket.leave(rooms::congested());
    }
}

enum Step {
    Sent,
    Full,
    Done { episode: u64 },
    Closed,
}

/// Tries the oldest owed answer once (the lock is never held across an `.await`).
fn step<A: Adapter>(socket: &Arc<Socket<A>>, session: &Session) -> Step {
    let mut state = lock(&session.backlog.state);
    let Some(answer) = state.owed.front() else {
        state.draining = false;
        socket.leave(rooms::owing());
        return Step::Done { episode: state.episode };
    };
    match send(socket, answer) {
        Ok(()) => {
            state.owed.pop_front();
            Step::Sent
        }
        Err(SendError::Socket(SocketError::InternalChannelFull)) => Step::Full,
        Err(err) => {
            metrics::answers_lost(state.owed.len());
            tracing::debug!(socket_id = %socket.id, owed = state.owed.len(), error = %err, "socket closed owing answers");
            state.owed.clear();
            state.draining = false;
            Step::Closed
        }
    }
}
