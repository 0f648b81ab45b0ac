//! The fan-out hub: which local listener wants which channel, and delivery to them.
//!
//! On a WebSocket node the listeners are subscription groups (see the gateway crate), one per
//! distinct subscription payload, not one per client: a channel with 10,000 subscribers that
//! all ask for the same fields has one listener here. Delivery never blocks the publisher: each
//! listener has its own unbounded queue, drained by a task that only renders and hands frames to
//! connections (where the per-connection slow-consumer limit applies), so it keeps up by CPU
//! alone and never waits on a client.
//!
//! The hub also drops a post it has already delivered in that channel (by post id, among the
//! last [`RECENT_POSTS_PER_CHANNEL`]): with Mattermost, a post sent through this server is
//! published by the API and seen again by the ingest, and an ingest catch-up overlaps what was
//! live. Subscribers get each post once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use futures::Stream;
use tokio::sync::mpsc;

use crate::bus::EventSink;
use crate::event::MessageEvent;

struct Listener {
    id: u64,
    queue: mpsc::UnboundedSender<Arrival>,
}

/// How many delivered post ids a channel remembers to drop repeats.
pub const RECENT_POSTS_PER_CHANNEL: usize = 4096;

#[derive(Default)]
struct ChannelListeners {
    listeners: Vec<Listener>,
    recent: Mutex<RecentPosts>,
}

/// The newest delivered post ids of a channel, oldest first.
#[derive(Default)]
struct RecentPosts {
    order: VecDeque<String>,
    ids: HashSet<String>,
}

impl RecentPosts {
    /// `false` if the id was delivered already.
    fn first_time(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() == RECENT_POSTS_PER_CHANNEL {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        self.order.push_back(id.to_owned());
        self.ids.insert(id.to_owned());
        true
    }
}

/// Told when a channel gains its first local listener and loses its last: in a cluster, the
/// gateway's links to the relays, which forward only the channels someone here listens to.
pub trait InterestObserver: Send + Sync + 'static {
    /// Called under the hub's lock, so calls for one channel arrive in order; must not block.
    fn watch(&self, channel_id: &str);
    /// Called when the channel's last local listener left.
    fn unwatch(&self, channel_id: &str);
    /// Resolves once events of `channel_id` published from now on will reach this hub, or
    /// fails with a reason a subscriber can read.
    fn ready(&self, channel_id: &str) -> BoxFuture<'static, Result<(), String>>;
}

/// Local listeners by channel id.
#[derive(Default)]
pub struct FanoutHub {
    channels: RwLock<HashMap<String, ChannelListeners>>,
    next_id: AtomicU64,
    observer: OnceLock<Arc<dyn InterestObserver>>,
}

impl FanoutHub {
    /// An empty hub.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Reports channel interest to `observer` from now on (set once, before any subscription).
    pub fn set_observer(&self, observer: Arc<dyn InterestObserver>) {
        let channels = self.channels.read().expect("hub lock poisoned");
        assert!(
            channels.is_empty(),
            "the interest observer is set before any subscription"
        );
        assert!(
            self.observer.set(observer).is_ok(),
            "the hub's interest observer is set once"
        );
    }

    /// Starts receiving every event of `channel_id` that reaches this hub from now on, in
    /// order. In a cluster, await [`FanoutHub::ready`] before relying on "from now on".
    pub fn subscribe(self: &Arc<Self>, channel_id: &str) -> LiveSubscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (queue, receiver) = mpsc::unbounded_channel();
        let mut channels = self.channels.write().expect("hub lock poisoned");
        let channel = channels.entry(channel_id.to_owned()).or_insert_with(|| {
            if let Some(observer) = self.observer.get() {
                observer.watch(channel_id);
            }
            ChannelListeners::default()
        });
        channel.listeners.push(Listener { id, queue });
        drop(channels);
        LiveSubscription {
            hub: self.clone(),
            channel_id: channel_id.to_owned(),
            id,
            receiver,
        }
    }

    fn unsubscribe(&self, channel_id: &str, id: u64) {
        let mut channels = self.channels.write().expect("hub lock poisoned");
        if let Some(channel) = channels.get_mut(channel_id) {
            channel.listeners.retain(|s| s.id != id);
            if channel.listeners.is_empty() {
                channels.remove(channel_id);
                if let Some(observer) = self.observer.get() {
                    observer.unwatch(channel_id);
                }
            }
        }
    }

    /// Resolves once events of `channel_id` published from now on reach this hub: at once with
    /// the in-process bus; in a cluster, once every connected relay confirmed the interest.
    pub fn ready(&self, channel_id: &str) -> BoxFuture<'static, Result<(), String>> {
        match self.observer.get() {
            Some(observer) => observer.ready(channel_id),
            None => Box::pin(std::future::ready(Ok(()))),
        }
    }

    /// Number of listeners, over all channels.
    pub fn listener_count(&self) -> usize {
        self.channels
            .read()
            .expect("hub lock poisoned")
            .values()
            .map(|c| c.listeners.len())
            .sum()
    }

    /// Channels with at least one local listener (what a gateway registers with relays).
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
        let Some(channel) = channels.get(&event.channel_id) else {
            return;
        };
        let first_time = channel
            .recent
            .lock()
            .expect("hub lock poisoned")
            .first_time(&event.post.id);
        if !first_time {
            return;
        }
        // One clock read per event, shared by every listener: where delivery latency starts.
        let at = Instant::now();
        for listener in &channel.listeners {
            // A closed queue belongs to a subscription being dropped; it unregisters itself.
            let _ = listener.queue.send(Arrival {
                event: event.clone(),
                at,
            });
        }
    }
}

/// An event as it reached this node's hub, and when: what a subscriber's delivery latency is
/// measured from.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// The event.
    pub event: Arc<MessageEvent>,
    /// When the hub took it.
    pub at: Instant,
}

impl std::ops::Deref for Arrival {
    type Target = MessageEvent;

    fn deref(&self) -> &MessageEvent {
        &self.event
    }
}

/// One listener's stream of events. Dropping it unsubscribes.
pub struct LiveSubscription {
    hub: Arc<FanoutHub>,
    channel_id: String,
    id: u64,
    receiver: mpsc::UnboundedReceiver<Arrival>,
}

impl Stream for LiveSubscription {
    type Item = Arrival;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx)
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
        let mut a = hub.subscribe("a");
        let mut b = hub.subscribe("b");
        hub.deliver(event("a", "1"));
        hub.deliver(event("a", "2"));
        hub.deliver(event("b", "3"));
        assert_eq!(a.next().await.unwrap().post.id, "1");
        assert_eq!(a.next().await.unwrap().post.id, "2");
        assert_eq!(b.next().await.unwrap().post.id, "3");
    }

    #[tokio::test]
    async fn a_post_delivered_twice_reaches_listeners_once() {
        let hub = FanoutHub::new();
        let mut a = hub.subscribe("a");
        hub.deliver(event("a", "1"));
        hub.deliver(event("a", "2"));
        hub.deliver(event("a", "1"));
        hub.deliver(event("a", "3"));
        for want in ["1", "2", "3"] {
            assert_eq!(a.next().await.unwrap().post.id, want);
        }
        // The memory is bounded: an id far enough back is forgotten.
        for i in 0..RECENT_POSTS_PER_CHANNEL {
            hub.deliver(event("a", &format!("n{i}")));
        }
        hub.deliver(event("a", "1"));
        let mut last = None;
        for _ in 0..=RECENT_POSTS_PER_CHANNEL {
            last = a.next().await;
        }
        assert_eq!(last.unwrap().post.id, "1");
    }

    #[test]
    fn dropping_a_subscription_unsubscribes() {
        let hub = FanoutHub::new();
        let sub = hub.subscribe("a");
        assert_eq!(hub.listener_count(), 1);
        drop(sub);
        assert_eq!(hub.listener_count(), 0);
        assert!(hub.channel_ids().is_empty());
    }
}
