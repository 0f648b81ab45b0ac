//! The parts the role builders share: the bus, the chat backend, the API's state, the ingest,
//! the relay and the gateway.

use std::sync::Arc;

use mmsub_api::auth::JwtKeys;
use mmsub_api::backend::embedded::EmbeddedStore;
use mmsub_api::backend::mattermost::{ingest, MattermostBackend};
use mmsub_api::backend::ChatBackend;
use mmsub_api::{build_schema, AppState, MmsubSchema};
use mmsub_events::{Bus, FanoutHub, InProcessBus};
use mmsub_gateway::Gateway;
use mmsub_history::{History, HistoryBackend, IngestHistory};
use mmsub_relay::kafka::{KafkaBus, KafkaSettings};
use mmsub_relay::link::RelayLinks;
use tokio_util::sync::CancellationToken;

use super::Node;
use crate::settings::{BusConfig, ServerConfig};

/// The Kafka settings, when the bus is Kafka.
pub fn kafka(config: &ServerConfig) -> Option<&KafkaSettings> {
    match &config.bus {
        BusConfig::Kafka(kafka) => Some(kafka),
        BusConfig::InProcess => None,
    }
}

/// The cluster roles' Kafka settings (`config` already refused them without Kafka).
pub fn cluster_kafka(config: &ServerConfig) -> anyhow::Result<&KafkaSettings> {
    kafka(config).ok_or_else(|| anyhow::anyhow!("mmsub {} needs the Kafka bus", config.role.name()))
}

/// The bus new messages are published to: the hub itself in one process, or Kafka.
pub async fn bus(
    kafka: Option<&KafkaSettings>,
    hub: &Arc<FanoutHub>,
    node: &Node,
) -> anyhow::Result<Arc<dyn Bus>> {
    match kafka {
        None => Ok(Arc::new(InProcessBus::new(hub.clone()))),
        Some(kafka) => kafka_bus(kafka, node).await,
    }
}

/// The Kafka bus of a cluster role.
pub async fn kafka_bus(kafka: &KafkaSettings, node: &Node) -> anyhow::Result<Arc<dyn Bus>> {
    tracing::info!(brokers = %kafka.brokers, topic = %kafka.topic, "connecting to Kafka");
    Ok(Arc::new(
        KafkaBus::connect(kafka, node.metrics.clone()).await?,
    ))
}

/// The Mattermost backend that cluster roles require.
pub async fn mattermost(
    config: &ServerConfig,
    secret: &[u8],
    node: &Node,
) -> anyhow::Result<Arc<MattermostBackend>> {
    let Some(mattermost) = &config.mattermost else {
        anyhow::bail!(
            "mmsub {} is one role of a cluster, whose system of record is Mattermost: set \
             MATTERMOST_SERVER_URL (the embedded store belongs to a single `mmsub serve`)",
            config.role.name()
        )
    };
    tracing::info!(server = %mattermost.server_url, "logging in to Mattermost");
    let backend = Arc::new(
        MattermostBackend::connect(mattermost.clone(), secret, node.metrics.clone()).await?,
    );
    tracing::info!(server = %mattermost.server_url, team = %mattermost.team, "chat backend: Mattermost");
    Ok(backend)
}

/// The embedded store (`serve` without Mattermost).
pub fn embedded(config: &ServerConfig) -> anyhow::Result<Arc<dyn ChatBackend>> {
    Ok(Arc::new(EmbeddedStore::open(
        &config.data_dir,
        &config.team,
    )?))
}

/// Runs the Mattermost ingest: posts made in Mattermost become events on `bus`, and, with
/// the history tier, keep its cache current.
pub fn start_ingest(
    config: &ServerConfig,
    backend: Arc<MattermostBackend>,
    bus: Arc<dyn Bus>,
    catch_up: ingest::CatchUp,
    history: Option<&Arc<History>>,
    shutdown: &CancellationToken,
) {
    let observer =
        history.map(|h| Arc::new(IngestHistory::new(h.clone())) as Arc<dyn ingest::Observer>);
    tokio::spawn(ingest::run(
        backend,
        bus,
        catch_up,
        config.ingest.clone(),
        observer,
        shutdown.clone(),
    ));
}

/// The history tier, when configured: it connects in the background, and reads fall back to
/// Mattermost until it answers.
pub fn history(config: &ServerConfig, node: &Node) -> Option<Arc<History>> {
    config.history.clone().map(|history| {
        tracing::info!(nodes = ?history.nodes, keyspace = %history.keyspace, "history tier: ScyllaDB");
        History::start(history, node.metrics.clone())
    })
}

/// The Mattermost backend, behind the history tier when there is one.
pub fn with_history(
    backend: Arc<MattermostBackend>,
    history: Option<&Arc<History>>,
) -> Arc<dyn ChatBackend> {
    match history {
        Some(history) => Arc::new(HistoryBackend::new(backend, history.clone())),
        None => backend,
    }
}

/// The API's node state and the schema over it.
pub fn api_state(
    config: &ServerConfig,
    secret: &[u8],
    backend: Arc<dyn ChatBackend>,
    bus: Arc<dyn Bus>,
    node: &Node,
) -> (MmsubSchema, Arc<AppState>) {
    let jwt = JwtKeys::new(
        secret,
        config.api.access_token_ttl,
        config.api.refresh_window,
    );
    let state = Arc::new(AppState::new(
        backend,
        bus,
        jwt,
        config.api.clone(),
        node.metrics.clone(),
    ));
    (build_schema(state.clone()), state)
}

/// Starts this node's relay into `node`.
pub async fn start_relay(
    config: &ServerConfig,
    kafka: &KafkaSettings,
    node: &mut Node,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let relay = mmsub_relay::node::RelayNode::start(
        kafka.clone(),
        config.relay.clone(),
        node.metrics.clone(),
        shutdown.clone(),
    )
    .await?;
    tracing::info!(addr = %relay.local_addr, "relay listening for gateways");
    node.relay_addr = Some(relay.local_addr);
    node.relay = Some(relay.status);
    node.tasks.push(relay.task);
    Ok(())
}

/// The WebSocket gateway over `hub`, fed by relay links when the bus is Kafka.
pub fn start_gateway(
    config: &ServerConfig,
    (schema, state): &(MmsubSchema, Arc<AppState>),
    hub: Arc<FanoutHub>,
    node: &mut Node,
    shutdown: &CancellationToken,
) {
    if kafka(config).is_some() {
        node.links = Some(RelayLinks::start(
            hub.clone(),
            config.links.clone(),
            node.metrics.clone(),
            shutdown.clone(),
        ));
    }
    node.gateway = Some(Gateway::new(
        schema.clone(),
        state.clone(),
        hub,
        config.gateway.clone(),
        shutdown.clone(),
    ));
}
