//! Command line and environment, and their conversion into a checked [`ServerConfig`]. Every
//! flag has an env variable; the original server's `.env` names (`DJANGO_SECRET_KEY`,
//! `MATTERMOST_*`) are read as they were. A `.env` file in the working directory is loaded
//! first, as Django's settings did.
//!
//! One file, longer than most: each flag is declared next to the others of its role, and the
//! conversion below reads them all; splitting them would scatter one table.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::roles::Role;
use crate::settings::{BusConfig, ConnectionSettings, MetricsSettings, ServerConfig};
use anyhow::bail;
use chrono_tz::Tz;
use clap::{Args, Parser, Subcommand};
use mmsub_api::backend::mattermost::ingest::IngestSettings;
use mmsub_api::backend::mattermost::{MattermostConfig, RestLimits};
use mmsub_api::client::TrustedProxies;
use mmsub_api::throttle::RateLimit;
use mmsub_api::ApiSettings;
use mmsub_gateway::GatewaySettings;
use mmsub_history::config::parse_consistency;
use mmsub_history::tls::{Tls, TlsFiles};
use mmsub_history::{HistoryConfig, Replication};
use mmsub_relay::kafka::KafkaSettings;
use mmsub_relay::link::LinkSettings;
use mmsub_relay::node::RelaySettings;
use mmsub_relay::wire::{Heartbeat, WIRE_V1, WIRE_VERSION};

#[derive(Debug, Parser)]
#[command(
    name = "mmsub",
    version,
    about = "GraphQL chat gateway in front of Mattermost",
    args_conflicts_with_subcommands = true
)]
/// The command line: a role and its flags (no role: `serve`).
pub struct Cli {
    /// The role to run.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The flags of `serve` when no role is named.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The roles `mmsub` runs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every role (API, relay, WebSocket gateway, and the Mattermost ingest when
    /// Mattermost is configured) in one process: the default. In-process bus unless `--bus kafka`.
    Serve(ServeArgs),
    /// A stateless API node: GraphQL over HTTP; publishes each new message to Kafka.
    Api(ServeArgs),
    /// A relay: Kafka consumer-group member forwarding events to the gateways that want them.
    Relay(ServeArgs),
    /// A WebSocket node holding a shard of the client connections, fed by the relays.
    Gateway(ServeArgs),
    /// Only the Mattermost ingest: posts made in Mattermost become Kafka events.
    Ingest(ServeArgs),
}

impl Cli {
    /// The role named on the command line (none: `serve`) and its arguments.
    pub fn into_role(self) -> (Role, ServeArgs) {
        match self.command {
            None => (Role::Serve, self.serve),
            Some(Command::Serve(args)) => (Role::Serve, args),
            Some(Command::Api(args)) => (Role::Api, args),
            Some(Command::Relay(args)) => (Role::Relay, args),
            Some(Command::Gateway(args)) => (Role::Gateway, args),
            Some(Command::Ingest(args)) => (Role::Ingest, args),
        }
    }
}

/// How events travel between the roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BusKind {
    /// Within one process (`mmsub serve` only).
    InProcess,
    /// A Kafka topic partitioned by channel, and the relay tier.
    Kafka,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text for a person at a terminal.
    Human,
    /// One JSON object per line for log shippers: `timestamp`, `level`, `target`, and the
    /// event's fields (`message` among them) at the top level.
    Json,
}

/// The flags of every role; each has an environment variable.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Log lines as `human` text or `json` objects, one per line. `RUST_LOG` filters both.
    #[arg(long, env = "MMSUB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Address to listen on for HTTP and WebSocket.
    #[arg(long, env = "MMSUB_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Directory of the embedded store (SQLite) and generated secrets.
    #[arg(long, env = "MMSUB_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// IANA time zone of `createAt` values (Django's `TIME_ZONE`).
    #[arg(long, env = "MMSUB_TIME_ZONE", default_value = "UTC")]
    pub time_zone: String,
    /// JWT signing secret. Falls back to `DJANGO_SECRET_KEY`, then to a secret generated in the data dir.
    #[arg(long, env = "MMSUB_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// The original server's secret: accepted so its tokens stay valid.
    #[arg(long, env = "DJANGO_SECRET_KEY", hide_env_values = true)]
    pub django_secret_key: Option<String>,
    /// Team every user joins (name); the embedded store creates it.
    #[arg(long, env = "MATTERMOST_TEAM_IDENTIFIER", default_value = "main")]
    pub team: String,
    /// Mattermost server URL. Unset: the embedded store is the chat backend.
    #[arg(long, env = "MATTERMOST_SERVER_URL")]
    pub mattermost_server_url: Option<String>,
    /// Mattermost login id of the admin account mmsub administers accounts with.
    #[arg(long, env = "MATTERMOST_ADMIN_LOGIN_ID")]
    pub mattermost_admin_login_id: Option<String>,
    /// That account's password.
    #[arg(long, env = "MATTERMOST_ADMIN_LOGIN_PASSWORD", hide_env_values = true)]
    pub mattermost_admin_login_password: Option<String>,
    /// Milliseconds one Mattermost request may take.
    #[arg(long, env = "MMSUB_MATTERMOST_TIMEOUT_MS", default_value_t = millis(RestLimits::default().request_timeout))]
    pub mattermost_timeout_ms: u64,
    /// Longest wait for Mattermost's rate limit to reset before a call fails, in milliseconds.
    #[arg(
        long,
        env = "MMSUB_MATTERMOST_MAX_RATE_LIMIT_WAIT_MS",
        default_value_t = millis(RestLimits::default().max_rate_limit_wait)
    )]
    pub mattermost_max_rate_limit_wait_ms: u64,
    /// Seconds a Mattermost user's name and email are reused for message authors.
    #[arg(long, env = "MMSUB_MATTERMOST_USER_CACHE_SECS", default_value_t = 300)]
    pub mattermost_user_cache_secs: u64,
    /// Longest pause between reconnects of the Mattermost WebSocket, in milliseconds.
    #[arg(
        long,
        env = "MMSUB_INGEST_RECONNECT_MAX_MS",
        default_value_t = millis(IngestSettings::default().reconnect_max)
    )]
    pub ingest_reconnect_max_ms: u64,

    /// Largest HTTP request body, in bytes (413 beyond).
    #[arg(long, env = "MMSUB_MAX_BODY_BYTES", default_value_t = ApiSettings::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Deepest GraphQL selection accepted (GraphiQL's introspection query needs 15).
    #[arg(long, env = "MMSUB_MAX_QUERY_DEPTH", default_value_t = ApiSettings::default().max_query_depth)]
    pub max_query_depth: usize,
    /// Highest GraphQL query complexity accepted.
    #[arg(long, env = "MMSUB_MAX_QUERY_COMPLEXITY", default_value_t = ApiSettings::default().max_query_complexity)]
    pub max_query_complexity: usize,
    /// Largest pageSize.
    #[arg(long, env = "MMSUB_MAX_PAGE_SIZE", default_value_t = ApiSettings::default().max_page_size)]
    pub max_page_size: u32,
    /// Longest textMessage, in characters.
    #[arg(long, env = "MMSUB_MAX_MESSAGE_CHARS", default_value_t = ApiSettings::default().max_message_chars)]
    pub max_message_chars: usize,
    /// Most missed messages a subscription resumed with `afterMessageId` replays.
    #[arg(long, env = "MMSUB_MAX_RESUME_MESSAGES", default_value_t = ApiSettings::default().max_resume_messages)]
    pub max_resume_messages: u32,
    /// Most bytes of missed messages a subscription resumed with `afterMessageId` replays.
    #[arg(long, env = "MMSUB_MAX_RESUME_BYTES", default_value_t = ApiSettings::default().max_resume_bytes)]
    pub max_resume_bytes: u64,
    /// Most bytes of content one GraphQL answer carries (a clear error beyond, never built).
    #[arg(long, env = "MMSUB_MAX_RESPONSE_BYTES", default_value_t = ApiSettings::default().max_response_bytes)]
    pub max_response_bytes: u64,
    /// Most members `channelCreate` takes at once.
    #[arg(long, env = "MMSUB_MAX_CHANNEL_MEMBERS", default_value_t = ApiSettings::default().max_channel_members)]
    pub max_channel_members: usize,
    /// Login attempts per username (`N/min`, `N/min:BURST` or `off`).
    #[arg(long, env = "MMSUB_LOGIN_RATE_PER_USER", default_value_t = ApiSettings::default().login_rate_per_user)]
    pub login_rate_per_user: RateLimit,
    /// Login attempts per client address.
    #[arg(long, env = "MMSUB_LOGIN_RATE_PER_CLIENT", default_value_t = ApiSettings::default().login_rate_per_client)]
    pub login_rate_per_client: RateLimit,
    /// Logins of one client address checked at once (its share of the hashing pool).
    #[arg(
        long,
        env = "MMSUB_MAX_CONCURRENT_LOGINS_PER_CLIENT",
        default_value_t = ApiSettings::default().max_concurrent_logins_per_client
    )]
    pub max_concurrent_logins_per_client: usize,
    /// Logins and sign-ups (`tokenAuth`, `userGetToken`, `userCreate`) one request may run.
    #[arg(
        long,
        env = "MMSUB_MAX_PASSWORD_CHECKS_PER_REQUEST",
        default_value_t = ApiSettings::default().max_password_checks_per_request
    )]
    pub max_password_checks_per_request: u64,
    /// Sign-ups (`userCreate`) per client address.
    #[arg(long, env = "MMSUB_SIGNUP_RATE_PER_CLIENT", default_value_t = ApiSettings::default().signup_rate_per_client)]
    pub signup_rate_per_client: RateLimit,
    /// Messages (`textMessageSend`) per user.
    #[arg(long, env = "MMSUB_SEND_RATE_PER_USER", default_value_t = ApiSettings::default().send_rate_per_user)]
    pub send_rate_per_user: RateLimit,
    /// Operations (subscribe/start) one WebSocket connection may begin.
    #[arg(long, env = "MMSUB_WS_OPERATION_RATE", default_value_t = GatewaySettings::default().operation_rate)]
    pub ws_operation_rate: RateLimit,
    /// Largest WebSocket frame a client may send, in bytes (close 1009 beyond).
    #[arg(long, env = "MMSUB_WS_MAX_FRAME_BYTES", default_value_t = GatewaySettings::default().max_frame_bytes)]
    pub ws_max_frame_bytes: usize,
    /// Largest WebSocket message a client may send, over all fragments (close 1009 beyond).
    #[arg(long, env = "MMSUB_WS_MAX_MESSAGE_BYTES", default_value_t = GatewaySettings::default().max_message_bytes)]
    pub ws_max_message_bytes: usize,
    /// Active subscriptions per WebSocket connection.
    #[arg(
        long,
        env = "MMSUB_MAX_SUBSCRIPTIONS_PER_CONNECTION",
        default_value_t = GatewaySettings::default().max_subscriptions_per_connection
    )]
    pub max_subscriptions_per_connection: usize,
    /// Subscriptions admitted (checked, replayed) at once per gateway; more wait their turn.
    #[arg(
        long,
        env = "MMSUB_MAX_CONCURRENT_ADMISSIONS",
        default_value_t = GatewaySettings::default().max_concurrent_admissions
    )]
    pub max_concurrent_admissions: usize,
    /// Milliseconds a client has to send `connection_init` (close 4408 after).
    #[arg(
        long,
        env = "MMSUB_CONNECTION_INIT_TIMEOUT_MS",
        default_value_t = millis(GatewaySettings::default().connection_init_timeout)
    )]
    pub connection_init_timeout_ms: u64,
    /// Messages queued for one connection before it is closed as a slow consumer (close 1013).
    #[arg(long, env = "MMSUB_SEND_QUEUE_LIMIT", default_value_t = GatewaySettings::default().send_queue_limit)]
    pub send_queue_limit: usize,
    /// Milliseconds between keep-alive messages (ping / ka); 0 disables.
    #[arg(long, env = "MMSUB_KEEPALIVE_MS", default_value_t = millis(GatewaySettings::default().keepalive_interval))]
    pub keepalive_ms: u64,
    /// Milliseconds a WebSocket write may wait for the client before the connection is dropped.
    #[arg(long, env = "MMSUB_WS_WRITE_TIMEOUT_MS", default_value_t = millis(GatewaySettings::default().write_timeout))]
    pub ws_write_timeout_ms: u64,
    /// Open WebSocket connections per node (503 beyond). A process here may hold 20,000 files.
    #[arg(long, env = "MMSUB_MAX_CONNECTIONS", default_value_t = GatewaySettings::default().max_connections)]
    pub max_connections: usize,
    /// WebSocket connections per client address (503 beyond).
    #[arg(
        long,
        env = "MMSUB_MAX_WS_CONNECTIONS_PER_CLIENT",
        default_value_t = GatewaySettings::default().max_connections_per_client
    )]
    pub max_ws_connections_per_client: usize,
    /// Lifetime of the access tokens this node issues, and the longest it accepts (plus 60 s).
    /// django-graphql-jwt's `JWT_EXPIRATION_DELTA`; every node of a cluster needs the same.
    #[arg(long, env = "MMSUB_ACCESS_TOKEN_TTL_SECS", default_value_t = ApiSettings::default().access_token_ttl.as_secs())]
    pub access_token_ttl_secs: u64,
    /// Seconds a WebSocket connection outlives its token's expiry unrenewed (then 4403).
    #[arg(long, env = "MMSUB_WS_TOKEN_GRACE_SECS", default_value_t = 0)]
    pub ws_token_grace_secs: u64,
    /// Keep sockets open and authorized past their token's expiry, as the original did.
    #[arg(long, env = "MMSUB_WS_TOKENS_NEVER_EXPIRE", default_value_t = false)]
    pub ws_tokens_never_expire: bool,
    /// Seconds between checks that a live subscription's user is still in its channel (0: never).
    #[arg(long, env = "MMSUB_MEMBERSHIP_RECHECK_SECS", default_value_t = GatewaySettings::default().membership_recheck.as_secs())]
    pub membership_recheck_secs: u64,
    /// HTTP connections per client address (503 beyond).
    #[arg(
        long,
        env = "MMSUB_MAX_HTTP_CONNECTIONS_PER_CLIENT",
        default_value_t = ConnectionSettings::default().max_http_per_client
    )]
    pub max_http_connections_per_client: usize,
    /// HTTP and WebSocket connections on the node together (503 beyond); 0: the open-file
    /// limit less 512.
    #[arg(long, env = "MMSUB_MAX_OPEN_CONNECTIONS", default_value_t = 0)]
    pub max_open_connections: usize,
    /// On SIGTERM, how long an API or WebSocket node goes on serving, unready, before it
    /// closes connections (WebSockets with 1001), so load balancers stop sending it clients.
    #[arg(long, env = "MMSUB_SHUTDOWN_DRAIN_MS", default_value_t = millis(ConnectionSettings::default().shutdown_drain))]
    pub shutdown_drain_ms: u64,
    /// On SIGTERM, after the drain: the most in-flight requests, WebSocket closes and a
    /// relay's last commit may take before the process exits anyway.
    #[arg(long, env = "MMSUB_SHUTDOWN_TIMEOUT_MS", default_value_t = millis(ConnectionSettings::default().shutdown_timeout))]
    pub shutdown_timeout_ms: u64,
    /// Proxies (addresses or CIDR blocks, comma-separated) whose X-Forwarded-For names the
    /// client. Default: none, the TCP peer is the client.
    #[arg(long, env = "MMSUB_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// Milliseconds to receive a whole request body once its headers arrived (408 after).
    #[arg(long, env = "MMSUB_BODY_READ_TIMEOUT_MS", default_value_t = millis(ApiSettings::default().body_read_timeout))]
    pub body_read_timeout_ms: u64,
    /// Web origins allowed to call the API from a browser page (comma-separated; `*` for any).
    /// Same-origin pages such as GraphiQL need none.
    #[arg(long, env = "MMSUB_CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,
    /// Where `/metrics` (Prometheus text) is served, on its own listener so that an Ingress in
    /// front of the main port never exposes it. Unset: not served (unless on the main port).
    #[arg(long, env = "MMSUB_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve `/metrics` on the main port too (`--listen`): only where nothing in front of that
    /// port routes it to the public.
    #[arg(long, env = "MMSUB_METRICS_ON_MAIN_PORT", default_value_t = false)]
    pub metrics_on_main_port: bool,
    /// Connections the metrics listener serves at once (Prometheus keeps one per target);
    /// more are closed unanswered.
    #[arg(long, env = "MMSUB_METRICS_MAX_CONNECTIONS", default_value_t = MetricsSettings::default().max_connections)]
    pub metrics_max_connections: usize,
    /// Milliseconds a scraper has to send its request headers to the metrics listener.
    #[arg(long, env = "MMSUB_METRICS_HEADER_TIMEOUT_MS", default_value_t = millis(MetricsSettings::default().header_read_timeout))]
    pub metrics_header_timeout_ms: u64,
    /// The bus and the relay tier.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The history tier (ScyllaDB).
    #[command(flatten)]
    pub history: HistoryArgs,
}

/// The history tier: ScyllaDB in front of Mattermost for history, last messages and resumes.
#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// ScyllaDB contact points, `host:port[,host:port…]`. Unset: no history tier (reads go to
    /// the chat backend). Needs Mattermost: the embedded store keeps its own history.
    #[arg(long, env = "MMSUB_SCYLLA_NODES")]
    pub scylla_nodes: Option<String>,
    /// The keyspace, created at start-up if missing.
    #[arg(long, env = "MMSUB_SCYLLA_KEYSPACE", default_value = "mmsub")]
    pub scylla_keyspace: String,
    /// Replication of a keyspace this node creates: `simple:N` (development) or
    /// `DC:N[,DC:N…]` (`NetworkTopologyStrategy`, production).
    #[arg(long, env = "MMSUB_SCYLLA_REPLICATION", default_value = "simple:1")]
    pub scylla_replication: String,
    /// The datacenter whose nodes are asked first (and only: no failover to others).
    #[arg(long, env = "MMSUB_SCYLLA_LOCAL_DATACENTER")]
    pub scylla_local_datacenter: Option<String>,
    /// Consistency of reads (`LOCAL_ONE`, `LOCAL_QUORUM`, `QUORUM`, …).
    #[arg(
        long,
        env = "MMSUB_SCYLLA_READ_CONSISTENCY",
        default_value = "LOCAL_QUORUM"
    )]
    pub scylla_read_consistency: String,
    /// Consistency of writes.
    #[arg(
        long,
        env = "MMSUB_SCYLLA_WRITE_CONSISTENCY",
        default_value = "LOCAL_QUORUM"
    )]
    pub scylla_write_consistency: String,
    /// Milliseconds one ScyllaDB request may take before the read falls back to Mattermost.
    #[arg(long, env = "MMSUB_SCYLLA_TIMEOUT_MS", default_value_t = 2000)]
    pub scylla_timeout_ms: u64,
    /// Days of history kept (the tables' TTL).
    #[arg(long, env = "MMSUB_SCYLLA_RETENTION_DAYS", default_value_t = 30)]
    pub scylla_retention_days: u64,
    /// Hours of posts in one partition of a channel.
    #[arg(long, env = "MMSUB_SCYLLA_BUCKET_HOURS", default_value_t = 24)]
    pub scylla_bucket_hours: u64,
    /// `PasswordAuthenticator` user name.
    #[arg(long, env = "MMSUB_SCYLLA_USERNAME")]
    pub scylla_username: Option<String>,
    /// Its password.
    #[arg(long, env = "MMSUB_SCYLLA_PASSWORD", hide_env_values = true)]
    pub scylla_password: Option<String>,
    /// PEM file of the authorities that sign the nodes' certificates. Set: every connection to
    /// ScyllaDB is TLS, verified against it (the nodes' `client_encryption_options`).
    #[arg(long, env = "MMSUB_SCYLLA_TLS_CA")]
    pub scylla_tls_ca: Option<PathBuf>,
    /// The name the nodes' certificates carry; unset, each must carry its node's IP address.
    #[arg(long, env = "MMSUB_SCYLLA_TLS_SERVER_NAME", requires = "scylla_tls_ca")]
    pub scylla_tls_server_name: Option<String>,
    /// PEM client certificate chain, for nodes with `require_client_auth`.
    #[arg(long, env = "MMSUB_SCYLLA_TLS_CERT", requires_all = ["scylla_tls_ca", "scylla_tls_key"])]
    pub scylla_tls_cert: Option<PathBuf>,
    /// PEM private key of `--scylla-tls-cert`.
    #[arg(long, env = "MMSUB_SCYLLA_TLS_KEY", requires = "scylla_tls_cert")]
    pub scylla_tls_key: Option<PathBuf>,
}

impl HistoryArgs {
    /// The history tier's settings, if `--scylla-nodes` is set.
    pub fn config(&self) -> anyhow::Result<Option<HistoryConfig>> {
        let Some(nodes) = self
            .scylla_nodes
            .as_deref()
            .filter(|n| !n.trim().is_empty())
        else {
            return Ok(None);
        };
        let nodes: Vec<String> = nodes
            .split(',')
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        let mut config = HistoryConfig::development(nodes);
        config.keyspace.clone_from(&self.scylla_keyspace);
        config.replication =
            Replication::parse(&self.scylla_replication).map_err(anyhow::Error::msg)?;
        config.local_datacenter = self
            .scylla_local_datacenter
            .clone()
            .filter(|d| !d.is_empty());
        config.read_consistency =
            parse_consistency(&self.scylla_read_consistency).map_err(anyhow::Error::msg)?;
        config.write_consistency =
            parse_consistency(&self.scylla_write_consistency).map_err(anyhow::Error::msg)?;
        config.request_timeout = Duration::from_millis(self.scylla_timeout_ms.max(1));
        config.retention = Duration::from_secs(self.scylla_retention_days.max(1) * 24 * 3600);
        config.bucket_width = Duration::from_secs(self.scylla_bucket_hours.max(1) * 3600);
        config.credentials = match (&self.scylla_username, &self.scylla_password) {
            (Some(user), Some(password)) if !user.is_empty() => {
                Some((user.clone(), password.clone()))
            }
            (None, None) => None,
            _ => bail!("--scylla-username and --scylla-password go together"),
        };
        if let Some(ca) = self
            .scylla_tls_ca
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
        {
            let files = TlsFiles {
                ca,
                server_name: self
                    .scylla_tls_server_name
                    .clone()
                    .filter(|n| !n.is_empty()),
                client: self
                    .scylla_tls_cert
                    .clone()
                    .zip(self.scylla_tls_key.clone()),
            };
            config.tls = Some(Tls::load(files).map_err(anyhow::Error::msg)?);
        }
        config.validate().map_err(anyhow::Error::msg)?;
        Ok(Some(config))
    }
}

/// The bus and the relay tier (`--bus kafka`).
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// `in-process` (one process) or `kafka` (a cluster of roles).
    #[arg(long, env = "MMSUB_BUS", value_enum, default_value_t = BusKind::InProcess)]
    pub bus: BusKind,
    /// Kafka bootstrap servers, `host:port[,host:port…]`.
    #[arg(long, env = "MMSUB_KAFKA_BROKERS", default_value_t = KafkaSettings::default().brokers)]
    pub kafka_brokers: String,
    /// The Kafka topic events are published to.
    #[arg(long, env = "MMSUB_KAFKA_TOPIC", default_value_t = KafkaSettings::default().topic)]
    pub kafka_topic: String,
    /// Partitions of the topic when this node creates it.
    #[arg(long, env = "MMSUB_KAFKA_PARTITIONS", default_value_t = KafkaSettings::default().partitions)]
    pub kafka_partitions: i32,
    /// Replicas of each partition when this node creates the topic.
    #[arg(long, env = "MMSUB_KAFKA_REPLICATION_FACTOR", default_value_t = KafkaSettings::default().replication_factor)]
    pub kafka_replication_factor: i32,
    /// The relays' consumer group.
    #[arg(long, env = "MMSUB_KAFKA_GROUP", default_value_t = KafkaSettings::default().group_id)]
    pub kafka_group: String,
    /// Where a consumer group without committed offsets starts: `earliest` or `latest`.
    #[arg(long, env = "MMSUB_KAFKA_OFFSET_RESET", default_value_t = KafkaSettings::default().offset_reset)]
    pub kafka_offset_reset: String,
    /// How soon a silent relay's partitions move to the others.
    #[arg(long, env = "MMSUB_KAFKA_SESSION_TIMEOUT_MS", default_value_t = millis(KafkaSettings::default().session_timeout))]
    pub kafka_session_timeout_ms: u64,
    /// How long a mutation waits for the broker's acknowledgement.
    #[arg(long, env = "MMSUB_KAFKA_PUBLISH_TIMEOUT_MS", default_value_t = millis(KafkaSettings::default().publish_timeout))]
    pub kafka_publish_timeout_ms: u64,
    /// `linger.ms` of the API nodes' producer: how long records gather into one request.
    #[arg(long, env = "MMSUB_KAFKA_LINGER_MS", default_value_t = millis(KafkaSettings::default().linger))]
    pub kafka_linger_ms: u64,
    /// `fetch.wait.max.ms` of the relays: how long the broker may hold an empty fetch.
    #[arg(long, env = "MMSUB_KAFKA_FETCH_WAIT_MAX_MS", default_value_t = millis(KafkaSettings::default().fetch_wait_max))]
    pub kafka_fetch_wait_max_ms: u64,
    /// librdkafka's `debug` contexts for diagnosis (`cgrp,fetch`, `all`), logged under the
    /// `librdkafka` target at debug level (`RUST_LOG=librdkafka=debug`).
    #[arg(long, env = "MMSUB_KAFKA_DEBUG", default_value = "")]
    pub kafka_debug: String,
    /// Where a relay listens for gateways.
    #[arg(long, env = "MMSUB_RELAY_LISTEN", default_value_t = RelaySettings::default().listen)]
    pub relay_listen: SocketAddr,
    /// A relay joins the consumer group this long after it listens (gateways connect first).
    #[arg(long, env = "MMSUB_RELAY_JOIN_DELAY_MS", default_value_t = millis(RelaySettings::default().join_delay))]
    pub relay_join_delay_ms: u64,
    /// Frames queued for one gateway before the relay waits.
    #[arg(long, env = "MMSUB_RELAY_GATEWAY_QUEUE", default_value_t = RelaySettings::default().gateway_queue)]
    pub relay_gateway_queue: usize,
    /// Catch-ups (a returning gateway's partitions read again, each by a Kafka consumer of
    /// its own) a relay runs at once; more wait for a place.
    #[arg(long, env = "MMSUB_RELAY_MAX_CATCH_UPS", default_value_t = RelaySettings::default().max_catch_ups)]
    pub relay_max_catch_ups: usize,
    /// The relays a gateway connects to: `host:port`, comma-separated; a name resolving to
    /// several addresses is several relays.
    #[arg(
        long,
        env = "MMSUB_RELAYS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7400"
    )]
    pub relays: Vec<String>,
    /// How often relay names are resolved again.
    #[arg(long, env = "MMSUB_RELAY_RESOLVE_INTERVAL_MS", default_value_t = millis(LinkSettings::default().resolve_interval))]
    pub relay_resolve_interval_ms: u64,
    /// A gateway whose relay queue stays full this long is disconnected (it gets what it
    /// missed again when it reconnects).
    #[arg(long, env = "MMSUB_RELAY_FORWARD_TIMEOUT_MS", default_value_t = millis(RelaySettings::default().forward_timeout))]
    pub relay_forward_timeout_ms: u64,
    /// Relays and gateways ping each other this often on a relay link.
    #[arg(long, env = "MMSUB_RELAY_HEARTBEAT_MS", default_value_t = millis(Heartbeat::default().interval))]
    pub relay_heartbeat_ms: u64,
    /// A relay link silent this long is closed and connected again: the time to detect a
    /// partition or a frozen peer.
    #[arg(long, env = "MMSUB_RELAY_HEARTBEAT_TIMEOUT_MS", default_value_t = millis(Heartbeat::default().timeout))]
    pub relay_heartbeat_timeout_ms: u64,
    /// The newest relay-gateway wire version this node speaks. 1 makes it behave as a node of
    /// the previous release (no hello, heartbeat or replay), for rolling-upgrade tests.
    #[arg(long, env = "MMSUB_RELAY_WIRE_VERSION", default_value_t = WIRE_VERSION)]
    pub relay_wire_version: u16,
}

fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl ServeArgs {
    /// The configuration of `mmsub serve`.
    pub fn into_config(self) -> anyhow::Result<ServerConfig> {
        self.into_role_config(Role::Serve)
    }

    /// The configuration of `role`, checked: an impossible combination is refused with the reason.
    pub fn into_role_config(self, role: Role) -> anyhow::Result<ServerConfig> {
        let mattermost = self.mattermost_config()?;
        let history = self.history.config()?;
        if history.is_some() && mattermost.is_none() {
            bail!("--scylla-nodes (MMSUB_SCYLLA_NODES) puts ScyllaDB in front of Mattermost: set MATTERMOST_SERVER_URL too (the embedded store keeps its own history)");
        }
        let cluster = &self.cluster;
        let bus = match cluster.bus {
            BusKind::InProcess if role != Role::Serve => bail!(
                "mmsub {} is one role of a cluster and needs the shared bus: set --bus kafka \
                 (MMSUB_BUS=kafka) and MMSUB_KAFKA_BROKERS; `mmsub serve` runs every role in one process",
                role.name()
            ),
            BusKind::InProcess => BusConfig::InProcess,
            BusKind::Kafka => {
                if cluster.kafka_partitions < 1 || cluster.kafka_replication_factor < 1 {
                    bail!("--kafka-partitions and --kafka-replication-factor must be at least 1");
                }
                if !matches!(cluster.kafka_offset_reset.as_str(), "earliest" | "latest") {
                    bail!("--kafka-offset-reset is earliest or latest (got {:?})", cluster.kafka_offset_reset);
                }
                BusConfig::Kafka(KafkaSettings {
                    brokers: cluster.kafka_brokers.clone(),
                    topic: cluster.kafka_topic.clone(),
                    partitions: cluster.kafka_partitions,
                    replication_factor: cluster.kafka_replication_factor,
                    group_id: cluster.kafka_group.clone(),
                    offset_reset: cluster.kafka_offset_reset.clone(),
                    session_timeout: Duration::from_millis(cluster.kafka_session_timeout_ms),
                    publish_timeout: Duration::from_millis(cluster.kafka_publish_timeout_ms.max(1)),
                    linger: Duration::from_millis(cluster.kafka_linger_ms),
                    fetch_wait_max: Duration::from_millis(cluster.kafka_fetch_wait_max_ms.max(1)),
                    debug: cluster.kafka_debug.clone(),
                })
            }
        };
        if role == Role::Ingest && mattermost.is_none() {
            bail!("mmsub ingest reads Mattermost: set MATTERMOST_SERVER_URL, MATTERMOST_ADMIN_LOGIN_ID and MATTERMOST_ADMIN_LOGIN_PASSWORD");
        }
        if !(WIRE_V1..=WIRE_VERSION).contains(&cluster.relay_wire_version) {
            bail!(
                "--relay-wire-version is {WIRE_V1} to {WIRE_VERSION} (got {})",
                cluster.relay_wire_version
            );
        }
        let heartbeat = Heartbeat {
            interval: Duration::from_millis(cluster.relay_heartbeat_ms.max(10)),
            timeout: Duration::from_millis(cluster.relay_heartbeat_timeout_ms),
        };
        if heartbeat.timeout < heartbeat.interval * 2 {
            bail!(
                "--relay-heartbeat-timeout-ms ({} ms) must be at least twice --relay-heartbeat-ms ({} ms), or one late ping closes a healthy link",
                cluster.relay_heartbeat_timeout_ms,
                heartbeat.interval.as_millis()
            );
        }
        if cluster.relay_max_catch_ups == 0 {
            bail!("--relay-max-catch-ups must be at least 1, or a returning gateway is never sent what it missed");
        }
        let relay = RelaySettings {
            listen: cluster.relay_listen,
            max_catch_ups: cluster.relay_max_catch_ups,
            join_delay: Duration::from_millis(cluster.relay_join_delay_ms),
            gateway_queue: cluster.relay_gateway_queue.max(1),
            forward_timeout: Duration::from_millis(cluster.relay_forward_timeout_ms.max(1)),
            heartbeat,
            wire_version: cluster.relay_wire_version,
            ..RelaySettings::default()
        };
        let links = LinkSettings {
            relays: cluster.relays.clone(),
            resolve_interval: Duration::from_millis(cluster.relay_resolve_interval_ms.max(100)),
            heartbeat,
            wire_version: cluster.relay_wire_version,
            ..LinkSettings::default()
        };
        if cluster.relays.is_empty()
            && role.serves_websockets()
            && matches!(bus, BusConfig::Kafka(_))
        {
            bail!("a gateway needs at least one relay: set --relays (MMSUB_RELAYS)");
        }
        let time_zone: Tz = self.time_zone.parse().map_err(|_| {
            anyhow::anyhow!(
                "unknown time zone {:?}: use an IANA name such as UTC or Europe/Berlin",
                self.time_zone
            )
        })?;
        for (name, value) in [
            ("--max-body-bytes", self.max_body_bytes),
            ("--ws-max-frame-bytes", self.ws_max_frame_bytes),
            ("--ws-max-message-bytes", self.ws_max_message_bytes),
            ("--send-queue-limit", self.send_queue_limit),
            (
                "--max-subscriptions-per-connection",
                self.max_subscriptions_per_connection,
            ),
            (
                "--max-concurrent-admissions",
                self.max_concurrent_admissions,
            ),
            ("--max-page-size", self.max_page_size as usize),
            (
                "--max-ws-connections-per-client",
                self.max_ws_connections_per_client,
            ),
            (
                "--max-http-connections-per-client",
                self.max_http_connections_per_client,
            ),
            (
                "--max-response-bytes",
                self.max_response_bytes.min(usize::MAX as u64) as usize,
            ),
            (
                "--max-resume-bytes",
                self.max_resume_bytes.min(usize::MAX as u64) as usize,
            ),
            (
                "--access-token-ttl-secs",
                self.access_token_ttl_secs.min(usize::MAX as u64) as usize,
            ),
        ] {
            if value == 0 {
                bail!("{name} must be at least 1");
            }
        }
        // Longer than the refresh window means a token outlives the right to renew it (and a
        // huge value would wrap `exp` into the past).
        let refresh_window = ApiSettings::default().refresh_window.as_secs();
        if self.access_token_ttl_secs > refresh_window {
            bail!("--access-token-ttl-secs must be at most {refresh_window} (the 7-day refresh window)");
        }
        let api = ApiSettings {
            time_zone,
            max_page_size: self.max_page_size,
            max_message_chars: self.max_message_chars,
            max_resume_messages: self.max_resume_messages,
            max_resume_bytes: self.max_resume_bytes,
            max_response_bytes: self.max_response_bytes,
            max_channel_members: self.max_channel_members,
            login_rate_per_user: self.login_rate_per_user,
            login_rate_per_client: self.login_rate_per_client,
            max_concurrent_logins_per_client: self.max_concurrent_logins_per_client,
            signup_rate_per_client: self.signup_rate_per_client,
            max_password_checks_per_request: self.max_password_checks_per_request.max(1),
            send_rate_per_user: self.send_rate_per_user,
            access_token_ttl: Duration::from_secs(self.access_token_ttl_secs),
            max_query_depth: self.max_query_depth,
            max_query_complexity: self.max_query_complexity,
            max_body_bytes: self.max_body_bytes,
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms.max(1)),
            cors_allowed_origins: self
                .cors_allowed_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
            ..ApiSettings::default()
        };
        let gateway = GatewaySettings {
            max_frame_bytes: self.ws_max_frame_bytes,
            max_message_bytes: self.ws_max_message_bytes.max(self.ws_max_frame_bytes),
            max_subscriptions_per_connection: self.max_subscriptions_per_connection,
            max_concurrent_admissions: self.max_concurrent_admissions,
            connection_init_timeout: Duration::from_millis(self.connection_init_timeout_ms),
            send_queue_limit: self.send_queue_limit,
            keepalive_interval: Duration::from_millis(self.keepalive_ms),
            write_timeout: Duration::from_millis(self.ws_write_timeout_ms),
            max_connections: self.max_connections,
            max_connections_per_client: self.max_ws_connections_per_client,
            token_grace: Duration::from_secs(self.ws_token_grace_secs),
            tokens_never_expire: self.ws_tokens_never_expire,
            operation_rate: self.ws_operation_rate,
            membership_recheck: Duration::from_secs(self.membership_recheck_secs),
        };
        let defaults = ConnectionSettings::default();
        let connections = ConnectionSettings {
            trusted_proxies: TrustedProxies::parse(&self.trusted_proxies)
                .map_err(anyhow::Error::msg)?,
            max_http_per_client: self.max_http_connections_per_client,
            max_open_connections: match self.max_open_connections {
                0 => defaults.max_open_connections,
                n => n,
            },
            shutdown_drain: Duration::from_millis(self.shutdown_drain_ms),
            shutdown_timeout: Duration::from_millis(self.shutdown_timeout_ms),
        };
        if self.metrics_max_connections == 0 || self.metrics_header_timeout_ms == 0 {
            bail!("--metrics-max-connections and --metrics-header-timeout-ms must be at least 1");
        }
        if self.metrics_listen == Some(self.listen) && self.listen.port() != 0 {
            bail!("--metrics-listen is the address of --listen: to serve /metrics on the main port, set --metrics-on-main-port instead");
        }
        Ok(ServerConfig {
            listen: self.listen,
            metrics: MetricsSettings {
                listen: self.metrics_listen,
                on_main_port: self.metrics_on_main_port,
                max_connections: self.metrics_max_connections,
                header_read_timeout: Duration::from_millis(self.metrics_header_timeout_ms),
            },
            data_dir: self.data_dir,
            team: self.team,
            jwt_secret: self
                .jwt_secret
                .or(self.django_secret_key)
                .filter(|s| !s.is_empty()),
            mattermost,
            ingest: IngestSettings {
                reconnect_max: Duration::from_millis(self.ingest_reconnect_max_ms.max(1)),
                ..IngestSettings::default()
            },
            api,
            gateway,
            role,
            bus,
            relay,
            links,
            connections,
            history,
        })
    }

    /// The Mattermost backend if `MATTERMOST_SERVER_URL` is set; then the admin login is required.
    fn mattermost_config(&self) -> anyhow::Result<Option<MattermostConfig>> {
        let Some(url) = self
            .mattermost_server_url
            .as_deref()
            .filter(|u| !u.is_empty())
        else {
            return Ok(None);
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("MATTERMOST_SERVER_URL must start with http:// or https:// (got {url:?})");
        }
        let (Some(login), Some(password)) = (
            self.mattermost_admin_login_id
                .as_deref()
                .filter(|v| !v.is_empty()),
            self.mattermost_admin_login_password
                .as_deref()
                .filter(|v| !v.is_empty()),
        ) else {
            bail!(
                "MATTERMOST_SERVER_URL is set, so MATTERMOST_ADMIN_LOGIN_ID and \
                 MATTERMOST_ADMIN_LOGIN_PASSWORD are needed too"
            );
        };
        if self.mattermost_timeout_ms == 0 {
            bail!("--mattermost-timeout-ms must be at least 1");
        }
        let mut config = MattermostConfig::new(url, login, password, &self.team);
        config.limits.request_timeout = Duration::from_millis(self.mattermost_timeout_ms);
        config.limits.max_rate_limit_wait =
            Duration::from_millis(self.mattermost_max_rate_limit_wait_ms);
        config.user_cache_ttl = Duration::from_secs(self.mattermost_user_cache_secs);
        Ok(Some(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<ServerConfig> {
        let cli = Cli::try_parse_from(std::iter::once("mmsub").chain(args.iter().copied()))?;
        let (role, args) = cli.into_role();
        args.into_role_config(role)
    }

    #[test]
    fn flags_reach_the_settings_with_or_without_the_serve_subcommand() {
        for prefix in [&[][..], &["serve"][..]] {
            let args: Vec<&str> = prefix
                .iter()
                .copied()
                .chain([
                    "--listen",
                    "127.0.0.1:9",
                    "--time-zone",
                    "Asia/Tehran",
                    "--send-queue-limit",
                    "7",
                    "--keepalive-ms",
                    "0",
                ])
                .collect();
            let config = parse(&args).unwrap();
            assert_eq!(config.listen.port(), 9);
            assert_eq!(config.api.time_zone, Tz::Asia__Tehran);
            assert_eq!(config.gateway.send_queue_limit, 7);
            assert!(config.gateway.keepalive_interval.is_zero());
        }
    }

    #[test]
    fn the_original_secret_is_the_fallback_signing_secret() {
        let config = parse(&["--django-secret-key", "from-django"]).unwrap();
        assert_eq!(config.jwt_secret.as_deref(), Some("from-django"));
        let config = parse(&["--django-secret-key", "from-django", "--jwt-secret", "own"]).unwrap();
        assert_eq!(config.jwt_secret.as_deref(), Some("own"));
    }

    #[test]
    fn impossible_settings_are_refused_with_the_reason() {
        let refused = |args: &[&str], reason: &str| {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(reason), "{args:?}: {err}");
        };
        refused(&["--time-zone", "Mars/Base"], "unknown time zone");
        for ttl in ["0", "604801", "18446744073709551615"] {
            refused(
                &["--access-token-ttl-secs", ttl],
                "--access-token-ttl-secs must be at",
            );
        }
        refused(
            &["--relay-max-catch-ups", "0"],
            "--relay-max-catch-ups must be at least 1",
        );
        let config = parse(&["--access-token-ttl-secs", "90"]).unwrap();
        assert_eq!(config.api.access_token_ttl.as_secs(), 90);
        refused(
            &["--send-queue-limit", "0"],
            "--send-queue-limit must be at least 1",
        );
        refused(
            &["--mattermost-server-url", "https://chat.example.com"],
            "MATTERMOST_ADMIN_LOGIN_ID",
        );
        refused(&["--mattermost-server-url", "chat.example.com"], "http://");
        refused(
            &[
                "--listen",
                "127.0.0.1:9000",
                "--metrics-listen",
                "127.0.0.1:9000",
            ],
            "--metrics-on-main-port",
        );
        refused(
            &["--metrics-max-connections", "0"],
            "--metrics-max-connections and --metrics-header-timeout-ms must be at least 1",
        );
    }

    /// A Mattermost backend's required settings.
    const MATTERMOST: [&str; 6] = [
        "--mattermost-server-url",
        "https://chat.example.com",
        "--mattermost-admin-login-id",
        "admin",
        "--mattermost-admin-login-password",
        "secret-pass",
    ];

    #[test]
    fn the_original_env_names_select_mattermost() {
        let args: Vec<&str> = MATTERMOST
            .iter()
            .copied()
            .chain(["--team", "crew"])
            .collect();
        let config = parse(&args).unwrap();
        let mm = config.mattermost.expect("Mattermost backend");
        assert_eq!(mm.team, "crew");
        assert!(!format!("{mm:?}").contains("secret-pass"));
        assert!(parse(&[]).unwrap().mattermost.is_none());
    }

    #[test]
    fn scylla_flags_reach_the_history_settings_and_bad_tls_files_stop_start_up() {
        let with = |extra: &[&str]| {
            let args: Vec<&str> = MATTERMOST.iter().chain(extra).copied().collect();
            parse(&args)
        };
        let config = with(&[
            "--scylla-nodes",
            "10.0.0.1:9042, 10.0.0.2:9042",
            "--scylla-replication",
            "dc1:3",
            "--scylla-read-consistency",
            "local_quorum",
            "--scylla-username",
            "mmsub",
            "--scylla-password",
            "pw",
        ])
        .unwrap();
        let history = config.history.expect("the tier is on");
        assert_eq!(history.nodes, ["10.0.0.1:9042", "10.0.0.2:9042"]);
        assert_eq!(
            history.replication,
            Replication::NetworkTopology(vec![("dc1".into(), 3)])
        );
        assert!(history.tls.is_none());
        let err = with(&[
            "--scylla-nodes",
            "n:9042",
            "--scylla-tls-ca",
            "/nonexistent/ca.pem",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        let err = with(&["--scylla-nodes", "n:9042", "--scylla-tls-server-name", "db"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--scylla-tls-ca"), "{err}");
    }
}
