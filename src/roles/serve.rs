//! `mmsub serve`: every role in one process. The embedded store, or Mattermost with its
//! ingest; the in-process bus, or Kafka with this node's own relay and links.

use mmsub_api::backend::mattermost::ingest::CatchUp;
use mmsub_api::backend::ChatBackend;
use mmsub_events::FanoutHub;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use super::{parts, Node};
use crate::secret::resolve_jwt_secret;
use crate::settings::ServerConfig;

/// Builds the whole contract in one node.
pub async fn build(config: &ServerConfig, shutdown: &CancellationToken) -> anyhow::Result<Node> {
    let mut node = Node::default();
    let kafka = parts::kafka(config);
    if let Some(kafka) = kafka {
        parts::start_relay(config, kafka, &mut node, shutdown).await?;
    }
    let secret = resolve_jwt_secret(config)?;
    let hub = FanoutHub::new();
    let bus = parts::bus(kafka, &hub, &node).await?;
    let backend: Arc<dyn ChatBackend> = if config.mattermost.is_some() {
        let backend = parts::mattermost(config, &secret, &node).await?;
        // Alone, the hub shows which channels have subscribers; in a cluster the subscribers
        // are on other nodes, so catch up every channel that changed.
        let catch_up = if kafka.is_none() {
            let watched_hub = hub.clone();
            CatchUp::Watched(Arc::new(move || watched_hub.channel_ids()))
        } else {
            CatchUp::ChangedChannels
        };
        let history = parts::history(config, &node);
        parts::start_ingest(
            config,
            backend.clone(),
            bus.clone(),
            catch_up,
            history.as_ref(),
            shutdown,
        );
        parts::with_history(backend, history.as_ref())
    } else {
        parts::embedded(config)?
    };
    let api = parts::api_state(config, &secret, backend, bus, &node);
    parts::start_gateway(config, &api, hub, &mut node, shutdown);
    node.graphql = Some(api);
    Ok(node)
}
