//! The Kafka relay tier: how events cross machines in a cluster.
//!
//! API nodes publish each [`mmsub_events::MessageEvent`] through the [`kafka::KafkaBus`] to a
//! topic partitioned by channel. Relay nodes ([`node`]) form a consumer group over that topic
//! and forward each event once to every gateway that has a subscriber for its channel, over the
//! relay↔gateway protocol in [`wire`]. On the gateway side, [`link::RelayLinks`] keeps one
//! connection per relay node, tells it which channels the gateway wants, and feeds what
//! arrives into the gateway's [`mmsub_events::FanoutHub`].
//!
//! Only the binary's role assembly depends on this crate: the API and gateway crates see a
//! [`mmsub_events::Bus`] and a hub, never Kafka.

#![warn(missing_docs)]

pub mod kafka;
pub mod link;
pub mod node;
pub mod wire;
