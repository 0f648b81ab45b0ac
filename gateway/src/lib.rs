//! The WebSocket node: holds client connections and delivers subscription results to them.
//!
//! `/ws/graphql/` upgrades with fastwebsockets, negotiates `graphql-transport-ws` or the legacy
//! `graphql-ws` from `Sec-WebSocket-Protocol` (no header at all means legacy, what the original
//! server spoke), and runs a session (`session.rs`) per connection. A subscription is admitted by the
//! shared GraphQL schema, then joins a [`groups`] entry: events come from the relay crate's
//! fan-out hub to the group, are rendered once per group, and reach each connection's
//! [`outbox`] as shared bytes.

#![warn(missing_docs)]

pub mod close;
pub mod delivery;
pub mod dialect;
pub mod frames;
pub mod groups;
pub mod outbox;
mod session;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use mmsub_api::auth::Viewer;
use mmsub_api::client::{ClientAddr, ClientSlots};
use mmsub_api::http::{error_response, HttpResponse};
use mmsub_api::throttle::RateLimit;
use mmsub_api::{AppState, MmsubSchema};
use mmsub_events::FanoutHub;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use async_graphql::Response;
use dialect::Dialect;
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use groups::admission::GroupAdmission;
use groups::plan::GroupKey;
use groups::SubscriptionGroups;
use mmsub_api::auth::JwtKeys;
use mmsub_api::backend::{Actor, BackendError, Channel};
use mmsub_api::cost::CostError;
use mmsub_api::request_id::RequestId;
use mmsub_metrics::Metrics;
use outbox::Outbox;

/// An operation's results over a socket; `None` once, when it has finished.
pub(crate) type ResultStream = BoxStream<'static, Option<Response>>;

/// The limits and timers of one WebSocket node.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Largest single frame a client may send (close 1009 beyond).
    pub max_frame_bytes: usize,
    /// Largest message a client may send, over all its fragments (close 1009 beyond).
    pub max_message_bytes: usize,
    /// Active operations per connection; more get an `error` for that operation.
    pub max_subscriptions_per_connection: usize,
    /// Subscriptions being admitted (checked, replayed, joined to a group) at once on this
    /// node; more wait their turn. An admission holds about 9 KB of execution state while
    /// it runs, so a burst of thousands of subscribes stays bounded in memory.
    pub max_concurrent_admissions: usize,
    /// Time allowed between upgrade and `connection_init` (close 4408 after).
    pub connection_init_timeout: Duration,
    /// Events queued for one connection before it counts as a slow consumer (close 1013).
    pub send_queue_limit: usize,
    /// Interval of `ping` (graphql-transport-ws) / `ka` (graphql-ws) messages; zero disables.
    pub keepalive_interval: Duration,
    /// A write the client does not take within this time ends the connection.
    pub write_timeout: Duration,
    /// Open WebSocket connections on this node (HTTP 503 for the next upgrade).
    pub max_connections: usize,
    /// Open WebSocket connections of one client address (HTTP 503 for the next upgrade).
    pub max_connections_per_client: usize,
    /// How long a connection outlives its token's `exp` when not renewed (then 4403, or
    /// `connection_error` on legacy). New operations are refused from `exp` on regardless.
    pub token_grace: Duration,
    /// The original's behaviour: a socket stays authorized by the token it opened with,
    /// whatever its `exp`. Only for deployments whose clients cannot renew.
    pub tokens_never_expire: bool,
    /// Operations one connection may start (subscribe/complete churn costs an admission each).
    pub operation_rate: RateLimit,
    /// How often each connection checks that its live subscriptions' channels still have its
    /// user as a member (one backend check per channel); zero disables. The bound on how long a
    /// removed member keeps receiving.
    pub membership_recheck: Duration,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 << 10,
            max_message_bytes: 256 << 10,
            max_subscriptions_per_connection: 100,
            max_concurrent_admissions: 128,
            connection_init_timeout: Duration::from_secs(10),
            send_queue_limit: 1024,
            keepalive_interval: Duration::from_secs(15),
            write_timeout: Duration::from_secs(10),
            max_connections: 16_000,
            max_connections_per_client: 512,
            token_grace: Duration::ZERO,
            tokens_never_expire: false,
            operation_rate: RateLimit {
                per_minute: 600,
                burst: 200,
            },
            membership_recheck: Duration::from_secs(60),
        }
    }
}

/// One WebSocket node: its connections, their subscription groups, and its limits.
pub struct Gateway {
    schema: MmsubSchema,
    /// The API's node state: documents are readied (cost, parse cache) as over HTTP.
    app: Arc<AppState>,
    groups: Arc<SubscriptionGroups>,
    settings: GatewaySettings,
    connections: AtomicUsize,
    /// Connections per client address.
    per_client: Arc<ClientSlots>,
    /// Permits for admission runs (`GatewaySettings::max_concurrent_admissions`).
    admissions: Arc<Semaphore>,
    shutdown: CancellationToken,
}

/// Decrements the open-connection count when a connection task ends, however it ends.
struct ConnectionSlot(Arc<Gateway>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gateway {
    /// A node serving `schema` over WebSocket, fed by `hub`; it closes every session with 1001
    /// when `shutdown` is cancelled.
    pub fn new(
        schema: MmsubSchema,
        app: Arc<AppState>,
        hub: Arc<FanoutHub>,
        settings: GatewaySettings,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        app.metrics.ws.close_codes(close::ALL);
        Arc::new(Self {
            groups: SubscriptionGroups::new(schema.clone(), hub, app.metrics.clone()),
            schema,
            app,
            admissions: Arc::new(Semaphore::new(settings.max_concurrent_admissions.max(1))),
            per_client: ClientSlots::new(settings.max_connections_per_client),
            settings,
            connections: AtomicUsize::new(0),
            shutdown,
        })
    }

    /// Open WebSocket connections on this node.
    pub fn open_connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Subscriptions admitted on this node (each in a group).
    pub fn subscription_count(&self) -> usize {
        self.groups.member_count()
    }

    /// Distinct payloads rendered per event on this node: each group renders once.
    pub fn group_count(&self) -> usize {
        self.groups.group_count()
    }

    /// The node's metrics.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.app.metrics
    }

    /// The node's WebSocket settings.
    pub(crate) fn settings(&self) -> &GatewaySettings {
        &self.settings
    }

    /// The keys that verify tokens.
    pub(crate) fn jwt(&self) -> &JwtKeys {
        &self.app.jwt
    }

    /// Cancelled when the node shuts down.
    pub(crate) fn shutdown_signal(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Readies an operation's request as HTTP does: text checks, parse cache, cost, viewer,
    /// and an id of its own (a message it sends carries it, as one sent over HTTP does).
    pub(crate) fn prepare(
        &self,
        request: async_graphql::Request,
        viewer: Viewer,
        client: ClientAddr,
    ) -> Result<async_graphql::Request, CostError> {
        self.app
            .prepare(request, viewer, client)
            .map(|request| request.data(RequestId::fresh()))
    }

    /// The admission of a subscriber to the group of `key` (see [`GroupAdmission`]).
    pub(crate) fn admission(
        &self,
        key: GroupKey,
        request: &async_graphql::Request,
        prefix: Bytes,
        outbox: Arc<Outbox>,
    ) -> Arc<GroupAdmission> {
        GroupAdmission::new(self.groups.clone(), key, request, prefix, outbox)
    }

    /// Runs a subscriber's admission: it waits for a permit holding only its request, so a
    /// burst of subscribes does not build thousands of executions at once.
    pub(crate) fn run_admission(&self, request: async_graphql::Request) -> ResultStream {
        let schema = self.schema.clone();
        let permits = self.admissions.clone();
        stream::once(async move { (permits.acquire_owned().await.ok(), schema, request) })
            .flat_map(|(permit, schema, request)| {
                schema
                    .execute_stream(request)
                    .map(Some)
                    .chain(stream::once(async move {
                        drop(permit);
                        None
                    }))
            })
            .boxed()
    }

    /// Runs any other operation; it may run for as long as the client wants and takes no
    /// permit.
    pub(crate) fn run_alone(&self, request: async_graphql::Request) -> ResultStream {
        self.schema
            .execute_stream(request)
            .map(Some)
            .chain(stream::once(async { None }))
            .boxed()
    }

    /// The channel, if `actor` is (still) a member of it.
    pub(crate) async fn member_channel(
        &self,
        actor: &Actor,
        channel_id: &str,
    ) -> Result<Channel, BackendError> {
        self.app.backend.member_channel(actor, channel_id).await
    }

    /// Answers an HTTP request to the WebSocket endpoint: the 101 response, or why not.
    pub fn upgrade<B>(self: &Arc<Self>, mut request: Request<B>) -> HttpResponse {
        if !fastwebsockets::upgrade::is_upgrade_request(&request) {
            return error_response(
                StatusCode::BAD_REQUEST,
                "This endpoint speaks GraphQL over WebSocket: send an Upgrade request.",
            );
        }
        if self.connections.fetch_add(1, Ordering::AcqRel) >= self.settings.max_connections {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many WebSocket connections on this node; try another or retry later.",
            );
        }
        let client = ClientAddr::stored_in(&request);
        let Some(client_slot) = self.per_client.acquire(client) else {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "Too many WebSocket connections from your address (the limit is {}).",
                    self.per_client.limit()
                ),
            );
        };
        let slot = ConnectionSlot(self.clone());
        let offered = offered_subprotocols(&request);
        let dialect = if offered.is_empty() {
            Some(Dialect::Legacy)
        } else {
            offered.iter().find_map(|p| Dialect::from_subprotocol(p))
        };
        let header_viewer = Viewer::from_authorization_header(
            &self.app.jwt,
            request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        );
        let (response, upgrade) = match fastwebsockets::upgrade::upgrade(&mut request) {
            Ok(parts) => parts,
            Err(e) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    &format!("Invalid WebSocket upgrade: {e}"),
                )
            }
        };
        let gateway = self.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _client_slot = client_slot;
            let upgraded = match upgrade.await {
                Ok(ws) => ws.into_inner().into_inner(),
                Err(e) => return tracing::debug!(error = %e, "WebSocket upgrade did not complete"),
            };
            // The session needs the TCP socket itself: groups write deliveries to it directly.
            match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => {
                    let io = parts.io.into_inner();
                    session::run(io, parts.read_buf, dialect, header_viewer, client, gateway).await;
                }
                Err(_) => tracing::error!("a WebSocket connection that is not TCP was dropped"),
            }
        });
        let mut response = response.map(|_| Full::<Bytes>::default());
        if let (Some(dialect), false) = (dialect, offered.is_empty()) {
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(dialect.subprotocol()),
            );
        }
        response
    }
}

fn offered_subprotocols<B>(request: &Request<B>) -> Vec<String> {
    request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}
