//! `mmsub ingest`: posts made in Mattermost itself (not through mmsub) become Kafka events, so
//! subscribers see them too. It catches up every channel that changed, because the
//! subscribers are on other nodes.

use mmsub_api::backend::mattermost::ingest::CatchUp;
use tokio_util::sync::CancellationToken;

use super::{parts, Node};
use crate::secret::resolve_jwt_secret;
use crate::settings::ServerConfig;

/// Builds an ingest node.
pub async fn build(config: &ServerConfig, shutdown: &CancellationToken) -> anyhow::Result<Node> {
    let node = Node::default();
    let secret = resolve_jwt_secret(config)?;
    let bus = parts::kafka_bus(parts::cluster_kafka(config)?, &node).await?;
    let backend = parts::mattermost(config, &secret, &node).await?;
    let history = parts::history(config, &node);
    parts::start_ingest(
        config,
        backend,
        bus,
        CatchUp::ChangedChannels,
        history.as_ref(),
        shutdown,
    );
    Ok(node)
}
