//! Holding many open sockets cheaply: each holder task owns up to `per_task` sockets,
//! answers their pings, drains what the server sends, and counts disconnects.

use coursecast_client::raw::{RawFrame, RawSocket, RawWriter};
use futures_util::{StreamExt, stream::SelectAll};
use tokio::sync::{mpsc, watch};

use crate::progress::Counter;

#[derive(Clone, Default)]
pub struct HoldCounters {
    pub frames: Counter,
    pub disconnects: Counter,
}

pub struct Holders {
    per_task: usize,
    current: Option<(mpsc::UnboundedSender<RawSocket>, usize)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: watch::Sender<bool>,
    pub counters: HoldCounters,
    pub held: usize,
}

impl Holders {
    pub fn new(per_task: usize) -> Self {
        Self {
            per_task: per_task.max(1),
            current: None,
            tasks: Vec::new(),
            stop: watch::Sender::new(false),
            counters: HoldCounters::default(),
            held: 0,
        }
    }

    pub fn add(&mut self, socket: RawSocket) {
        let full = self.current.as_ref().is_none_or(|(_, n)| *n >= self.per_task);
        if full {
            let (tx, rx) = mpsc::unbounded_channel();
            self.tasks.push(tokio::spawn(hold(rx, self.stop.subscribe(), self.counters.clone())));
            self.current = Some((tx, 0));
        }
        if let Some((tx, n)) = &mut self.current {
            *n += 1;
            self.held += 1;
            let _ = tx.send(socket);
        }
    }

    /// Drops every socket (the server sees the transports close) and ends the tasks.
    pub async fn close(mut self) {
        self.current = None;
        self.stop.send_replace(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

async fn hold(
    mut incoming: mpsc::UnboundedReceiver<RawSocket>,
    mut stop: watch::Receiver<bool>,
    counters: HoldCounters,
) {
    let mut readers = SelectAll::new();
    let mut writers: Vec<Option<RawWriter>> = Vec::new();
    let mut open = true;
    loop {
        tokio::select! {
            socket = incoming.recv(), if open => match socket {
                Some(socket) => {
                    let (writer, reader) = socket.split();
                    let idx = writers.len();
                    writers.push(Some(writer));
                    readers.push(reader.map(move |frame| (idx, frame)));
                }
                None => open = false,
            },
            Some((idx, frame)) = readers.next(), if !readers.is_empty() => match frame {
                Ok(RawFrame::Ping) => {
                    if let Some(writer) = &mut writers[idx] && writer.pong().await.is_err() {
                        writers[idx] = None;
                    }
                }
                Ok(RawFrame::Closed | RawFrame::Disconnect) | Err(_) => {
                    if writers[idx].take().is_some() {
                        counters.disconnects.inc();
                    }
                }
                Ok(_) => counters.frames.inc(),
            },
            _ = stop.changed() => break,
        }
    }
}
