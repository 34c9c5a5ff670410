//! The hand-off of committed batches from the writer to the delivery task, woken
//! through the runtime's I/O driver rather than by a plain channel wake.
//!
//! Why: on SQLite the writer runs on a thread of its own (see `Publisher::start`).
//! A task woken from outside the runtime goes to the back of tokio's global queue,
//! and a broadcast to a big room fills that queue: it wakes one task per socket, and
//! past a worker's own queue (256 tasks) the rest spill into the global one. In a
//! room of 10,000 the delivery task then started 99 ms after the commit at the
//! median, 169 ms at p90, while the broadcast itself took 16 ms
//! (bench/runs/README.md). A socket made ready is instead picked up by the worker
//! that polls the I/O driver, and the task it wakes goes to that worker's own queue,
//! ahead of the spill: the same lane a socket read takes.
//!
//! The batches themselves travel through a bounded channel (its bound slows the
//! writer when delivery falls behind); one byte on a socket pair per batch says
//! there is something to take.

use std::{
    io::{self, Write},
    os::unix::net::UnixStream as StdUnixStream,
};

use tokio::{net::UnixStream, sync::mpsc};

/// The writer's end. Fields drop in order: the channel closes before the socket, so
/// the delivery task that sees the socket close finds the channel closed too.
pub struct Sender<T> {
    queue: mpsc::Sender<T>,
    bell: StdUnixStream,
}

/// The delivery task's end.
pub struct Receiver<T> {
    queue: mpsc::Receiver<T>,
    bell: UnixStream,
}

/// A hand-off holding at most `bound` items. Must be called within the runtime that
/// runs the receiving task: its socket is registered with that runtime's driver.
pub fn channel<T>(bound: usize) -> io::Result<(Sender<T>, Receiver<T>)> {
    let (queue, rx) = mpsc::channel(bound);
    let (bell, listener) = StdUnixStream::pair()?;
    bell.set_nonblocking(true)?;
    listener.set_nonblocking(true)?;
    Ok((Sender { queue, bell }, Receiver { queue: rx, bell: UnixStream::from_std(listener)? }))
}

/// The receiving task ended: the item was not handed over.
#[derive(Debug)]
pub struct Closed;

impl<T> Sender<T> {
    /// Queues `item`, waiting while the hand-off is full, and rings the receiver.
    pub async fn send(&self, item: T) -> Result<(), Closed> {
        self.queue.send(item).await.map_err(|_| Closed)?;
        match (&self.bell).write(&[1]) {
            // A full socket holds unread rings: the receiver wakes for those anyway.
            Ok(_) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(_) => Err(Closed),
        }
    }
}

impl<T> Receiver<T> {
    /// The next item, waiting for one; `None` once the sender is gone and
    /// everything it sent has been taken.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            // Rings are cleared before the queue is looked at: a ring that comes
            // after the look stays on the socket and wakes the wait below.
            self.clear_rings();
            match self.queue.try_recv() {
                Ok(item) => return Some(item),
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            if self.bell.readable().await.is_err() {
                return self.queue.try_recv().ok();
            }
        }
    }

    /// Reads every pending ring, which also clears the socket's readiness.
    fn clear_rings(&mut self) {
        let mut rings = [0u8; 64];
        // Stops at "would block" (cleared), at the sender's close (0 bytes: the
        // channel is closed too) or at an error (the same).
        while matches!(self.bell.try_read(&mut rings), Ok(n) if n > 0) {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn items_from_a_foreign_thread_arrive_in_order_and_the_end_is_seen() {
        let (tx, mut rx) = channel::<u32>(4).expect("hand-off");
        // The sender runs on a runtime of its own, as the SQLite writer does.
        let sender = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                for item in 0..1_000 {
                    tx.send(item).await.expect("receiver alive");
                }
            });
        });
        let mut got = Vec::new();
        while let Some(item) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("no lost wake-up") {
            got.push(item);
        }
        sender.join().expect("sender thread");
        assert_eq!(got, (0..1_000).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_full_hand_off_holds_the_sender_until_an_item_is_taken() {
        let (tx, mut rx) = channel::<u32>(1).expect("hand-off");
        tx.send(1).await.expect("room for one");
        let second = tokio::time::timeout(Duration::from_millis(50), tx.send(2)).await;
        assert!(second.is_err(), "the bound holds the sender");
        assert_eq!(rx.recv().await, Some(1));
        tx.send(2).await.expect("room again");
        drop(tx);
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_gone_receiver_refuses_the_item() {
        let (tx, rx) = channel::<u32>(1).expect("hand-off");
        drop(rx);
        assert!(tx.send(1).await.is_err());
    }
}
