//! `mmsub api`: a stateless API node. GraphQL over HTTP on Mattermost; every new message is
//! published to Kafka.

use tokio_util::sync::CancellationToken;

use super::{parts, Node};
use crate::secret::resolve_jwt_secret;
use crate::settings::ServerConfig;

/// Builds an API node.
pub async fn build(config: &ServerConfig, _shutdown: &CancellationToken) -> anyhow::Result<Node> {
    let mut node = Node::default();
    let secret = resolve_jwt_secret(config)?;
    let bus = parts::kafka_bus(parts::cluster_kafka(config)?, &node).await?;
    let backend = parts::with_history(
        parts::mattermost(config, &secret, &node).await?,
        parts::history(config, &node).as_ref(),
    );
    node.graphql = Some(parts::api_state(config, &secret, backend, bus, &node));
    Ok(node)
}
