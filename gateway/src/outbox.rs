//! A connection's outgoing deliveries, and the limit that makes a slow consumer visible.
//!
//! Subscription groups push a [`Delivery`] (two shared byte strings, no copy) into each
//! member's connection outbox; the connection's session drains everything queued at once and
//! writes it with one syscall. The [`SendBudget`] counts deliveries queued but not yet taken:
//! past its limit the outbox refuses more and trips the overflow signal, and the session closes
//! with a documented code. A subscriber therefore receives every event of its channel, in
//! order, or is told it was disconnected: never a silent gap, never unbounded memory.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use bytes::Bytes;
use futures::task::AtomicWaker;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// One `next`/`data` message for one subscription: `prefix` (`{"id":…,"type":…,"payload":`,
/// built once per subscription) + `payload` (serialized once per group and event) + `}`.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub prefix: Bytes,
    pub payload: Bytes,
}

impl Delivery {
    pub const SUFFIX: &'static [u8] = b"}";

    /// Length of the message this delivery encodes to.
    pub fn message_len(&self) -> usize {
        self.prefix.len() + self.payload.len() + Self::SUFFIX.len()
    }
}

/// How many deliveries a connection may have queued before it counts as a slow consumer.
#[derive(Debug)]
pub struct SendBudget {
    pending: AtomicUsize,
    limit: usize,
    overflow: CancellationToken,
}

impl SendBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            pending: AtomicUsize::new(0),
            limit: limit.max(1),
            overflow: CancellationToken::new(),
        })
    }

    /// Claims room for one more delivery; on overflow trips the signal and returns false.
    pub fn try_reserve(&self) -> bool {
        if self.overflow.is_cancelled() {
            return false;
        }
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.overflow.cancel();
            return false;
        }
        true
    }

    pub fn release(&self) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn has_overflowed(&self) -> bool {
        self.overflow.is_cancelled()
    }

    /// Completes when the connection has fallen too far behind.
    pub fn overflowed(&self) -> WaitForCancellationFuture<'_> {
        self.overflow.cancelled()
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// The sending side, shared by every group the connection's subscriptions belong to.
///
/// A plain queue behind a lock, not a channel: an idle connection's outbox allocates nothing
/// (a `VecDeque` allocates on first use; a Tokio channel allocates a 32-slot block up front, 2 KiB
/// per connection), and the connection task is woken through one `AtomicWaker`.
#[derive(Debug)]
pub struct Outbox {
    queue: Mutex<VecDeque<Delivery>>,
    waker: AtomicWaker,
    /// The connection is gone: pushes are refused.
    closed: AtomicBool,
    budget: Arc<SendBudget>,
}

/// The connection's side: takes deliveries in order and gives their budget back. Dropping it
/// closes the outbox.
#[derive(Debug)]
pub struct OutboxReceiver {
    outbox: Arc<Outbox>,
}

pub fn outbox(limit: usize) -> (Arc<Outbox>, OutboxReceiver) {
    let outbox = Arc::new(Outbox {
        queue: Mutex::new(VecDeque::new()),
        waker: AtomicWaker::new(),
        closed: AtomicBool::new(false),
        budget: SendBudget::new(limit),
    });
    (outbox.clone(), OutboxReceiver { outbox })
}

impl Outbox {
    /// Queues a delivery if the budget allows; false once the connection is a slow consumer.
    pub fn push(&self, delivery: Delivery) -> bool {
        self.budget.try_reserve() && self.push_reserved(delivery)
    }

    /// Queues a delivery whose room was claimed earlier with [`Outbox::reserve`].
    pub fn push_reserved(&self, delivery: Delivery) -> bool {
        let mut queue = self.queue.lock().expect("outbox lock poisoned");
        // Checked under the lock the receiver closes under: nothing is queued after the drain.
        if self.closed.load(Ordering::Acquire) {
            // The connection is gone; its subscriptions are being dropped.
            drop(queue);
            self.budget.release();
            return false;
        }
        queue.push_back(delivery);
        drop(queue);
        self.waker.wake();
        true
    }

    /// Claims room for a delivery that will be pushed (or released) later.
    pub fn reserve(&self) -> bool {
        self.budget.try_reserve()
    }

    /// Gives back room claimed with [`Outbox::reserve`] for a delivery that will not be sent.
    pub fn unreserve(&self) {
        self.budget.release();
    }

    pub fn budget(&self) -> &Arc<SendBudget> {
        &self.budget
    }

    fn pop(&self) -> Option<Delivery> {
        let delivery = self
            .queue
            .lock()
            .expect("outbox lock poisoned")
            .pop_front()?;
        self.budget.release();
        Some(delivery)
    }
}

impl OutboxReceiver {
    /// The next delivery, waiting for one. (Never `None`: the senders live in groups that
    /// outlast no connection; the `Option` keeps `select!` patterns uniform.)
    pub async fn recv(&mut self) -> Option<Delivery> {
        std::future::poll_fn(|cx| {
            if let Some(delivery) = self.outbox.pop() {
                return Poll::Ready(Some(delivery));
            }
            self.outbox.waker.register(cx.waker());
            // A push between the first look and the registration must not be missed.
            match self.outbox.pop() {
                Some(delivery) => Poll::Ready(Some(delivery)),
                None => Poll::Pending,
            }
        })
        .await
    }

    pub fn try_recv(&mut self) -> Option<Delivery> {
        self.outbox.pop()
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        let queued = {
            let mut queue = self.outbox.queue.lock().expect("outbox lock poisoned");
            self.outbox.closed.store(true, Ordering::Release);
            std::mem::take(&mut *queue)
        };
        // What was queued will never be written: give its room back.
        for _ in queued {
            self.outbox.budget.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(n: u8) -> Delivery {
        Delivery {
            prefix: Bytes::from_static(b"p"),
            payload: Bytes::from(vec![n]),
        }
    }

    #[tokio::test]
    async fn a_full_budget_trips_overflow_instead_of_queueing() {
        let (outbox, mut receiver) = outbox(2);
        assert!(outbox.push(delivery(0)));
        assert!(outbox.push(delivery(1)));
        assert!(!outbox.push(delivery(2)));
        assert!(outbox.budget().has_overflowed());
        // What was queued before the overflow is still delivered, in order.
        assert_eq!(receiver.recv().await.unwrap().payload[0], 0);
        assert_eq!(receiver.try_recv().unwrap().payload[0], 1);
        assert!(receiver.try_recv().is_none());
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_for_a_push_and_a_closed_outbox_refuses() {
        let (outbox, mut receiver) = outbox(4);
        let waiting = tokio::spawn(async move {
            let first = receiver.recv().await.unwrap();
            (first, receiver)
        });
        tokio::task::yield_now().await;
        assert!(outbox.push(delivery(7)));
        let (first, receiver) = waiting.await.unwrap();
        assert_eq!(first.payload[0], 7);
        drop(receiver);
        assert!(!outbox.push(delivery(8)));
        assert!(!outbox.budget().has_overflowed());
    }

    #[test]
    fn taking_a_delivery_gives_its_room_back() {
        let (outbox, mut receiver) = outbox(1);
        for n in 0..3 {
            assert!(outbox.push(delivery(n)));
            assert_eq!(receiver.try_recv().unwrap().payload[0], n);
        }
        assert!(!outbox.budget().has_overflowed());
    }
}
