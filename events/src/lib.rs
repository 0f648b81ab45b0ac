//! The ground floor of mmsub: the contract between the nodes that accept messages and the
//! nodes that hold subscribers.
//!
//! An API node turns every new chat message into a [`MessageEvent`] and hands it to a [`Bus`].
//! Whatever carries the bus (the [`InProcessBus`] here, Kafka partitions keyed by channel in
//! the `mmsub-relay` crate), events end at a [`FanoutHub`] on each WebSocket node, which pushes
//! them to the local subscribers of that channel. Nothing in this crate knows a transport, so
//! the API and gateway crates build without Kafka.

#![warn(missing_docs)]

pub mod bus;
pub mod event;
pub mod hub;

pub use bus::{Bus, BusError, EventSink, InProcessBus};
pub use event::{EventAuthor, EventPost, MessageEvent, EVENT_VERSION};
pub use hub::{Arrival, FanoutHub, InterestObserver, LiveSubscription};
