//! What a process needs to start, resolved and checked: [`ServerConfig`] and the settings of
//! its HTTP front. The flags in `config` convert into these; tests build them directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mmsub_api::backend::mattermost::ingest::IngestSettings;
use mmsub_api::backend::mattermost::MattermostConfig;
use mmsub_api::client::TrustedProxies;
use mmsub_api::ApiSettings;
use mmsub_gateway::GatewaySettings;
use mmsub_relay::kafka::KafkaSettings;
use mmsub_relay::link::LinkSettings;
use mmsub_relay::node::RelaySettings;

/// Who may hold how many connections, and whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
    /// Concurrent HTTP connections per client address (503 beyond).
    pub max_http_per_client: usize,
    /// HTTP and WebSocket connections on the node together (503 beyond); kept below the
    /// process's open-file limit, with room for probes, the store and outbound links.
    pub max_open_connections: usize,
    /// On shutdown: how long an API or WebSocket node keeps serving while its `/readyz` says
    /// "stopping", so that load balancers stop sending it clients before it closes any.
    pub shutdown_drain: Duration,
    /// On shutdown, after the drain: how long in-flight requests, WebSocket closes and a
    /// relay's last commit may take before the process exits anyway.
    pub shutdown_timeout: Duration,
}

/// File descriptors kept free of client connections: the store, Kafka and Mattermost
/// links, relay links, and the probes that must still get through.
pub const FD_HEADROOM: usize = 512;

/// The soft limit on open files of this process.
pub fn open_file_limit() -> usize {
    // `None`: unlimited.
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            trusted_proxies: TrustedProxies::default(),
            max_http_per_client: 256,
            max_open_connections: open_file_limit().saturating_sub(FD_HEADROOM).max(64),
            shutdown_drain: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// The bus, resolved.
#[derive(Debug, Clone)]
pub enum BusConfig {
    /// Within one process (`mmsub serve` only).
    InProcess,
    /// A Kafka topic partitioned by channel, and the relay tier.
    Kafka(KafkaSettings),
}

/// Everything a server needs to start, resolved and checked.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Where `/metrics` is served.
    pub metrics: MetricsSettings,
    /// Directory of the embedded store and generated secrets.
    pub data_dir: PathBuf,
    /// The team: the embedded store's one team, or Mattermost's.
    pub team: String,
    /// Explicit signing secret; `None` means "the one generated in the data dir".
    pub jwt_secret: Option<String>,
    /// `None`: the embedded store is the chat backend.
    pub mattermost: Option<MattermostConfig>,
    /// The Mattermost ingest's settings.
    pub ingest: IngestSettings,
    /// The API node's settings.
    pub api: ApiSettings,
    /// The WebSocket node's settings.
    pub gateway: GatewaySettings,
    /// Which role this process runs.
    pub role: Role,
    /// How events travel between the roles.
    pub bus: BusConfig,
    /// The relay's settings (roles relay, and serve with Kafka).
    pub relay: RelaySettings,
    /// The gateway's links to the relays.
    pub links: LinkSettings,
    /// Connection limits of the HTTP front.
    pub connections: ConnectionSettings,
    /// The history tier (ScyllaDB), when configured.
    pub history: Option<mmsub_history::HistoryConfig>,
}

impl ServerConfig {
    /// Defaults, listening on an ephemeral loopback port: what tests and embedding start from.
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics: MetricsSettings::default(),
            data_dir: data_dir.into(),
            team: "main".into(),
            jwt_secret: None,
            mattermost: None,
            ingest: IngestSettings::default(),
            api: ApiSettings::default(),
            gateway: GatewaySettings::default(),
            role: Role::Serve,
            bus: BusConfig::InProcess,
            relay: RelaySettings::default(),
            links: LinkSettings::default(),
            connections: ConnectionSettings::default(),
            history: None,
        }
    }
}

/// Where `/metrics` is served: its own listener, the main port, both or neither.
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    /// Its own listen address (`--metrics-listen`).
    pub listen: Option<SocketAddr>,
    /// Also on the main port (`--metrics-on-main-port`).
    pub on_main_port: bool,
    /// Connections the metrics listener serves at once; more are closed unanswered.
    pub max_connections: usize,
    /// A scraper sends its request headers within this time.
    pub header_read_timeout: std::time::Duration,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            listen: None,
            on_main_port: false,
            max_connections: 16,
            header_read_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// Which roles this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every role in one process (`roles::serve`).
    Serve,
    /// A stateless API node (`roles::api`).
    Api,
    /// A relay of the Kafka tier (`roles::relay`).
    Relay,
    /// A WebSocket node (`roles::gateway`).
    Gateway,
    /// The Mattermost ingest alone (`roles::ingest`).
    Ingest,
}

impl Role {
    /// The role's name on the command line and in `/readyz`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Serve => "serve",
            Role::Api => "api",
            Role::Relay => "relay",
            Role::Gateway => "gateway",
            Role::Ingest => "ingest",
        }
    }

    /// Whether the role answers GraphQL over HTTP.
    pub fn serves_graphql(self) -> bool {
        matches!(self, Role::Serve | Role::Api)
    }

    /// Whether the role holds WebSocket subscribers.
    pub fn serves_websockets(self) -> bool {
        matches!(self, Role::Serve | Role::Gateway)
    }

    /// Whether clients reach this role through a load balancer (GraphQL or WebSocket), which
    /// must stop sending it clients before it stops: the roles that drain on shutdown.
    pub fn serves_clients(self) -> bool {
        matches!(self, Role::Serve | Role::Api | Role::Gateway)
    }
}
