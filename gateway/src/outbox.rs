//! A connection's outgoing deliveries, and the limit that makes a slow consumer visible.
//!
//! Subscription groups push a [`Delivery`] (two shared byte strings, no copy) into each
//! member's connection outbox; the connection's session drains everything queued at once and
//! writes it with one syscall. The [`SendBudget`] counts deliveries queued but not yet taken:
//! past its limit the outbox refuses more and trips the overflow signal, and the session closes
//! with a documented code. A subscriber therefore receives every event of its channel, in
//! order, or is told it was disconnected: never a silent gap, never unbounded memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
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
#[derive(Debug)]
pub struct Outbox {
    queue: mpsc::UnboundedSender<Delivery>,
    budget: Arc<SendBudget>,
}

/// The connection's side: takes deliveries in order and gives their budget back.
#[derive(Debug)]
pub struct OutboxReceiver {
    queue: mpsc::UnboundedReceiver<Delivery>,
    budget: Arc<SendBudget>,
}

pub fn outbox(limit: usize) -> (Arc<Outbox>, OutboxReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let budget = SendBudget::new(limit);
    (
        Arc::new(Outbox {
            queue: tx,
            budget: budget.clone(),
        }),
        OutboxReceiver { queue: rx, budget },
    )
}

impl Outbox {
    /// Queues a delivery if the budget allows; false once the connection is a slow consumer.
    pub fn push(&self, delivery: Delivery) -> bool {
        self.budget.try_reserve() && self.push_reserved(delivery)
    }

    /// Queues a delivery whose room was claimed earlier with [`Outbox::reserve`].
    pub fn push_reserved(&self, delivery: Delivery) -> bool {
        if self.queue.send(delivery).is_err() {
            // The connection is gone; its subscriptions are being dropped.
            self.budget.release();
            return false;
        }
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
}

impl OutboxReceiver {
    pub async fn recv(&mut self) -> Option<Delivery> {
        let delivery = self.queue.recv().await?;
        self.budget.release();
        Some(delivery)
    }

    pub fn try_recv(&mut self) -> Option<Delivery> {
        let delivery = self.queue.try_recv().ok()?;
        self.budget.release();
        Some(delivery)
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
