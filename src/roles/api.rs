//! `mmsub api`: a stateless API node. GraphQL over HTTP on Mattermost; every new message is
//! published to Kafka.

use tokio_util::sync::CancellationToken;

use super::{parts, Node};
use crate::secret::resolve_jwt_secret;
use crate::settings::ServerConfig;

/// Builds an API node.
pub async fn build(config: &ServerConfig, _shutdown: &CancellationToken) -> anyhow::Result<Node> {
    let secret = resolve_jwt_secret(config)?;
    let bus = parts::kafka_bus(parts::cluster_kafka(config)?).await?;
    let backend = parts::with_history(
        parts::mattermost(config, &secret).await?,
        parts::history(config).as_ref(),
    );
    let mut node = Node::default();
    node.graphql = Some(parts::api_state(config, &secret, backend, bus, &node));
    Ok(node)
}
