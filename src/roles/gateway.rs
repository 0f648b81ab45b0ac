//! `mmsub gateway`: a WebSocket node holding a shard of the subscribers, fed by links to the
//! relays. Operations other than subscriptions sent over its sockets run on its own API state
//! (Mattermost, publishing to Kafka).

use mmsub_events::FanoutHub;
use tokio_util::sync::CancellationToken;

use super::{parts, Node};
use crate::secret::resolve_jwt_secret;
use crate::settings::ServerConfig;

/// Builds a WebSocket node.
pub async fn build(config: &ServerConfig, shutdown: &CancellationToken) -> anyhow::Result<Node> {
    let mut node = Node::default();
    let secret = resolve_jwt_secret(config)?;
    let hub = FanoutHub::new();
    let bus = parts::kafka_bus(parts::cluster_kafka(config)?, &node).await?;
    let backend = parts::with_history(
        parts::mattermost(config, &secret, &node).await?,
        parts::history(config, &node).as_ref(),
    );
    let api = parts::api_state(config, &secret, backend, bus, &node);
    parts::start_gateway(config, &api, hub, &mut node, shutdown);
    Ok(node)
}
