//! Role assembly: each role of the binary is built by its own small builder, from the parts
//! in [`parts`], into the [`Node`] that the HTTP front (`crate::server`) serves.
//!
//! | role      | builds                                                                  |
//! |-----------|-------------------------------------------------------------------------|
//! | `serve`   | everything in one process: API, gateway, in-process bus (or Kafka with a relay and links), the embedded store or Mattermost with its ingest |
//! | `api`     | GraphQL over HTTP on Mattermost, publishing to Kafka                    |
//! | `relay`   | a Kafka consumer-group member forwarding events to gateways              |
//! | `gateway` | WebSocket subscribers fed by relay links                                 |
//! | `ingest`  | Mattermost's own posts into Kafka                                        |
//!
//! Only this module names the Kafka crate (`mmsub-relay`): the API and gateway crates are
//! handed a `Bus` and a hub.

pub mod api;
pub mod gateway;
pub mod ingest;
pub mod parts;
pub mod relay;
pub mod serve;

use std::net::SocketAddr;
use std::sync::Arc;

use mmsub_api::{AppState, MmsubSchema};
use mmsub_gateway::Gateway;
use mmsub_metrics::Metrics;
use mmsub_relay::link::RelayLinks;
use mmsub_relay::node::RelayStatus;
use tokio_util::sync::CancellationToken;

pub use crate::settings::Role;
use crate::settings::ServerConfig;

/// What a process serves, as its role built it.
#[derive(Default)]
pub struct Node {
    /// The API (roles serve and api).
    pub graphql: Option<(MmsubSchema, Arc<AppState>)>,
    /// The WebSocket gateway (roles serve and gateway).
    pub gateway: Option<Arc<Gateway>>,
    /// The gateway's links to the relays (with Kafka).
    pub links: Option<Arc<RelayLinks>>,
    /// This node's relay (roles relay, and serve with Kafka).
    pub relay: Option<Arc<RelayStatus>>,
    /// Where gateways reach this node's relay.
    pub relay_addr: Option<SocketAddr>,
    /// Work that must finish on shutdown (a relay's last commit and leaving its group).
    pub tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// What every part of this node counts (`/metrics`).
    pub metrics: Arc<Metrics>,
}

/// Builds the node of `config.role`; everything it starts stops with `shutdown`.
pub async fn build(config: &ServerConfig, shutdown: &CancellationToken) -> anyhow::Result<Node> {
    match config.role {
        Role::Serve => serve::build(config, shutdown).await,
        Role::Api => api::build(config, shutdown).await,
        Role::Relay => relay::build(config, shutdown).await,
        Role::Gateway => gateway::build(config, shutdown).await,
        Role::Ingest => ingest::build(config, shutdown).await,
    }
}
