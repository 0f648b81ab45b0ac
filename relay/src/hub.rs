//! The fan-out hub: which local subscriber listens to which channel, and delivery to them.
//!
//! Delivery never blocks the publisher. Each subscription has its own queue, and every
//! connection has a [`SendBudget`]: the number of events queued for it but not yet taken for
//! writing. When a connection cannot keep up and exceeds its budget, the hub stops queueing for
//! it and trips the budget's overflow signal; the connection then closes with a documented close
//! code. A subscriber therefore either receives every event of its channel, in order, or is told
//! it was disconnected: never a silent gap, never unbounded memory.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::bus::EventSink;
use crate::event::MessageEvent;

/// How many events a connection may have queued before it counts as a slow consumer.
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

    /// Claims room for one more event; on overflow trips the signal and returns false.
    fn try_reserve(&self) -> bool {
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

    fn release(&self) {
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

struct Subscriber {
    id: u64,
    queue: mpsc::UnboundedSender<Arc<MessageEvent>>,
    budget: Arc<SendBudget>,
}

/// Local subscribers by channel id.
#[derive(Default)]
pub struct FanoutHub {
    channels: RwLock<HashMap<String, Vec<Subscriber>>>,
    next_id: AtomicU64,
}

impl FanoutHub {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Starts receiving every event of `channel_id` published from now on.
    pub fn subscribe(
        self: &Arc<Self>,
        channel_id: &str,
        budget: Arc<SendBudget>,
    ) -> LiveSubscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (queue, receiver) = mpsc::unbounded_channel();
        self.channels
            .write()
            .expect("hub lock poisoned")
            .entry(channel_id.to_owned())
            .or_default()
            .push(Subscriber {
                id,
                queue,
                budget: budget.clone(),
            });
        LiveSubscription {
            hub: self.clone(),
            channel_id: channel_id.to_owned(),
            id,
            receiver,
            budget,
        }
    }

    fn unsubscribe(&self, channel_id: &str, id: u64) {
        let mut channels = self.channels.write().expect("hub lock poisoned");
        if let Some(subscribers) = channels.get_mut(channel_id) {
            subscribers.retain(|s| s.id != id);
            if subscribers.is_empty() {
                channels.remove(channel_id);
            }
        }
    }

    /// Number of live subscriptions, over all channels.
    pub fn subscription_count(&self) -> usize {
        self.channels
            .read()
            .expect("hub lock poisoned")
            .values()
            .map(Vec::len)
            .sum()
    }

    /// Channels with at least one local subscriber (what a gateway registers with relays).
    pub fn channel_ids(&self) -> Vec<String> {
        self.channels
            .read()
            .expect("hub lock poisoned")
            .keys()
            .cloned()
            .collect()
    }
}

impl EventSink for FanoutHub {
    fn deliver(&self, event: Arc<MessageEvent>) {
        let channels = self.channels.read().expect("hub lock poisoned");
        let Some(subscribers) = channels.get(&event.channel_id) else {
            return;
        };
        for subscriber in subscribers {
            if subscriber.budget.try_reserve() && subscriber.queue.send(event.clone()).is_err() {
                // The subscription is being dropped; it unregisters itself.
                subscriber.budget.release();
            }
        }
    }
}

/// One subscription's stream of events. Dropping it unsubscribes.
pub struct LiveSubscription {
    hub: Arc<FanoutHub>,
    channel_id: String,
    id: u64,
    receiver: mpsc::UnboundedReceiver<Arc<MessageEvent>>,
    budget: Arc<SendBudget>,
}

impl Stream for LiveSubscription {
    type Item = Arc<MessageEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.receiver.poll_recv(cx);
        if let Poll::Ready(Some(_)) = &polled {
            self.budget.release();
        }
        polled
    }
}

impl Drop for LiveSubscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.channel_id, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventAuthor, EventPost};
    use futures::StreamExt;

    fn event(channel: &str, id: &str) -> Arc<MessageEvent> {
        Arc::new(MessageEvent::new(
            channel.into(),
            channel.into(),
            EventPost {
                id: id.into(),
                message: id.into(),
                create_at: 0,
                post_type: String::new(),
                author: EventAuthor {
                    id: "u".into(),
                    username: "u".into(),
                    email: "u@example.com".into(),
                    is_staff: false,
                },
            },
        ))
    }

    #[tokio::test]
    async fn delivers_in_order_only_to_the_channel() {
        let hub = FanoutHub::new();
        let mut a = hub.subscribe("a", SendBudget::new(10));
        let mut b = hub.subscribe("b", SendBudget::new(10));
        hub.deliver(event("a", "1"));
        hub.deliver(event("a", "2"));
        hub.deliver(event("b", "3"));
        assert_eq!(a.next().await.unwrap().post.id, "1");
        assert_eq!(a.next().await.unwrap().post.id, "2");
        assert_eq!(b.next().await.unwrap().post.id, "3");
    }

    #[tokio::test]
    async fn a_full_budget_trips_overflow_instead_of_queueing() {
        let hub = FanoutHub::new();
        let budget = SendBudget::new(2);
        let mut sub = hub.subscribe("a", budget.clone());
        for i in 0..3 {
            hub.deliver(event("a", &i.to_string()));
        }
        assert!(budget.has_overflowed());
        // What was queued before the overflow is still delivered, in order.
        assert_eq!(sub.next().await.unwrap().post.id, "0");
        assert_eq!(sub.next().await.unwrap().post.id, "1");
    }

    #[test]
    fn dropping_a_subscription_unsubscribes() {
        let hub = FanoutHub::new();
        let sub = hub.subscribe("a", SendBudget::new(1));
        assert_eq!(hub.subscription_count(), 1);
        drop(sub);
        assert_eq!(hub.subscription_count(), 0);
        assert!(hub.channel_ids().is_empty());
    }
}
