//! `mmsub relay`: a member of the relay tier's Kafka consumer group, forwarding each event to
//! the gateways that want its channel.

use tokio_util::sync::CancellationToken;

use super::{parts, Node};
use crate::settings::ServerConfig;

/// Builds a relay node.
pub async fn build(config: &ServerConfig, shutdown: &CancellationToken) -> anyhow::Result<Node> {
    let mut node = Node::default();
    parts::start_relay(config, parts::cluster_kafka(config)?, &mut node, shutdown).await?;
    Ok(node)
}
