//! The event path between the nodes that accept messages and the nodes that hold subscribers.
//!
//! An API node turns every new chat message into a [`MessageEvent`] and hands it to a [`Bus`].
//! Whatever transport the bus uses (in-process today, Kafka partitions keyed by channel in a
//! cluster), events end at a [`FanoutHub`] on each WebSocket node, which pushes them to the
//! local subscribers of that channel. Keeping these three pieces in one crate keeps the
//! contract between producers and consumers in one place.

pub mod bus;
pub mod event;
pub mod hub;
pub mod kafka;
pub mod link;
pub mod node;
pub mod wire;

pub use bus::{Bus, BusError, EventSink, InProcessBus};
pub use event::{EventAuthor, EventPost, MessageEvent, EVENT_VERSION};
pub use hub::{FanoutHub, InterestObserver, LiveSubscription};
