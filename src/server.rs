//! The HTTP front of every role: the listener, the accept loop with its connection limits,
//! and the router over what the role built (`crate::roles`): GraphQL, the WebSocket upgrade,
//! `/healthz`, `/readyz`, and `/metrics` when configured on this port (its own listener is
//! `crate::metrics_listener`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use mmsub_api::client::{ClientAddr, ClientSlots};
use mmsub_api::http::{error_response, json_response, HttpResponse};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics_listener;
use crate::roles::{self, Node, Role};
use crate::settings::{ConnectionSettings, ServerConfig};
use mmsub_metrics::labels::Route;

/// A client must finish sending request headers within this time (slow-header clients hold sockets).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection over a limit gets less time to say what it wanted before its 503.
const REFUSED_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// After a failed accept (EMFILE), the loop waits this long, doubling up to the maximum.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A started server. Dropping it does not stop it; call [`RunningServer::shutdown`].
pub struct RunningServer {
    /// HTTP: GraphQL, WebSocket and health, as the role has them.
    pub local_addr: SocketAddr,
    /// Where gateways reach this node's relay (roles relay, and serve with `--bus kafka`).
    pub relay_addr: Option<SocketAddr>,
    /// Where `/metrics` is served on its own (`--metrics-listen`).
    pub metrics_addr: Option<SocketAddr>,
    router: Arc<Router>,
    accept_loop: JoinHandle<()>,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl RunningServer {
    /// Stops the way SIGTERM does, each step bounded:
    ///
    /// 1. `/readyz` answers 503 "stopping" and, on an API or WebSocket node, everything goes on
    ///    for the drain (`--shutdown-drain-ms`), so load balancers take the node out first;
    /// 2. the listener closes; each HTTP connection finishes the request it is serving (an
    ///    in-flight mutation answers) and then closes; every WebSocket session closes with
    ///    1001 (going away), and its clients resume on another node; a relay commits what its
    ///    gateways acknowledged and leaves the consumer group, so its partitions move at once
    ///    instead of after the session timeout;
    /// 3. it waits for all of that, at most `--shutdown-timeout-ms`.
    pub async fn shutdown(self) {
        self.stop(true).await;
    }

    /// [`RunningServer::shutdown`] without the drain: what Ctrl-C at a terminal wants.
    pub async fn shutdown_now(self) {
        self.stop(false).await;
    }

    async fn stop(self, drain: bool) {
        let limits = self.router.connections.clone();
        self.router.stopping.cancel();
        if drain && self.router.role.serves_clients() && !limits.shutdown_drain.is_zero() {
            tracing::info!(
                drain_ms = limits.shutdown_drain.as_millis() as u64,
                "stopping: unready, serving on for the drain"
            );
            tokio::time::sleep(limits.shutdown_drain).await;
        }
        self.router.shutdown.cancel();
        let _ = self.accept_loop.await;
        let router = self.router.clone();
        let finished = async move {
            for task in self.tasks {
                match task.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "a task ended with an error while stopping");
                    }
                    Err(e) => tracing::warn!(error = %e, "a task failed while stopping"),
                }
            }
            while router.http_open.load(Ordering::Acquire) > 0 || router.open_websockets() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(limits.shutdown_timeout, finished)
            .await
            .is_err()
        {
            tracing::warn!(
                timeout_ms = limits.shutdown_timeout.as_millis() as u64,
                "stopping: connections or tasks still open at the shutdown timeout; exiting anyway"
            );
        } else {
            tracing::info!("stopped: every request answered and every connection closed");
        }
    }
}

struct Router {
    role: Role,
    node: Node,
    /// `/metrics` is served on this port too (`--metrics-on-main-port`).
    metrics_on_main_port: bool,
    connections: Arc<ConnectionSettings>,
    /// Cancelled first on shutdown: `/readyz` says "stopping".
    stopping: CancellationToken,
    /// Cancelled after the drain: the listener, connections, sessions and tasks stop.
    shutdown: CancellationToken,
    /// HTTP connections open now (an upgraded one counts as a WebSocket instead).
    http_open: Arc<AtomicUsize>,
}

impl Router {
    /// WebSocket connections open on this node (none without a gateway).
    fn open_websockets(&self) -> usize {
        self.node
            .gateway
            .as_ref()
            .map_or(0, |g| g.open_connections())
    }

    async fn route(&self, request: Request<Incoming>) -> HttpResponse {
        let path = request.uri().path();
        let route = match path {
            "/graphql" | "/graphql/" => Route::Graphql,
            "/ws/graphql" | "/ws/graphql/" => Route::WebSocket,
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/metrics" if self.metrics_on_main_port => Route::Metrics,
            _ => Route::Other,
        };
        self.node.metrics.http.request(route);
        match route {
            Route::Graphql => match &self.node.graphql {
                Some((schema, state)) => mmsub_api::http::handle(schema, state, request).await,
                None => self.elsewhere("GraphQL over HTTP is served by api nodes"),
            },
            Route::WebSocket => match &self.node.gateway {
                Some(gateway) => gateway.upgrade(request),
                None => self.elsewhere("WebSocket subscriptions are served by gateway nodes"),
            },
            Route::Healthz => alive(),
            Route::Readyz => self.readiness(),
            Route::Metrics => metrics_listener::answer(&self.node.metrics, request.method()),
            Route::Other => error_response(
                StatusCode::NOT_FOUND,
                "Not found: GraphQL is at /graphql/, WebSocket at /ws/graphql/.",
            ),
        }
    }

    fn elsewhere(&self, what: &str) -> HttpResponse {
        error_response(
            StatusCode::NOT_FOUND,
            &format!(
                "Not found: this node runs the {} role; {what}.",
                self.role.name()
            ),
        )
    }

    /// Ready unless stopping, a gateway with no relay to feed it, or a relay not yet in its
    /// consumer group.
    fn readiness(&self) -> HttpResponse {
        let relays = self.node.links.as_ref().map(|l| l.connected());
        let joining = self.node.relay.as_ref().is_some_and(|r| !r.in_group());
        let (status, word) = if self.stopping.is_cancelled() {
            (StatusCode::SERVICE_UNAVAILABLE, "stopping")
        } else if relays == Some(0) {
            (StatusCode::SERVICE_UNAVAILABLE, "no relay connected")
        } else if joining {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "joining the consumer group",
            )
        } else {
            (StatusCode::OK, "ready")
        };
        let mut body = json!({ "status": word, "role": self.role.name() });
        if let Some(gateway) = &self.node.gateway {
            body["connections"] = json!(gateway.open_connections());
            body["subscriptions"] = json!(gateway.subscription_count());
            body["subscriptionGroups"] = json!(gateway.group_count());
        }
        if let Some(relays) = relays {
            body["relays"] = json!(relays);
        }
        if let Some(relay) = &self.node.relay {
            body["partitions"] = json!(relay.partitions());
            body["gateways"] = json!(relay.gateways());
        }
        json_response(status, body.to_string().into_bytes())
    }
}

/// Starts the roles of `config.role` and serves HTTP (GraphQL, WebSocket, health) in the
/// background.
pub async fn start(config: ServerConfig) -> anyhow::Result<RunningServer> {
    let shutdown = CancellationToken::new();
    let mut node = roles::build(&config, &shutdown).await?;
    let relay_addr = node.relay_addr;
    let tasks = std::mem::take(&mut node.tasks);
    let metrics_addr = match config.metrics.listen {
        Some(addr) => Some(
            metrics_listener::start(
                addr,
                &config.metrics,
                node.metrics.clone(),
                shutdown.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let router = Arc::new(Router {
        role: config.role,
        node,
        metrics_on_main_port: config.metrics.on_main_port,
        connections: Arc::new(config.connections.clone()),
        stopping: CancellationToken::new(),
        shutdown: shutdown.clone(),
        http_open: Arc::new(AtomicUsize::new(0)),
    });
    let listener = TcpListener::bind(config.listen).await?;
    let local_addr = listener.local_addr()?;
    let accept_loop = tokio::spawn(accept(listener, router.clone(), shutdown));
    Ok(RunningServer {
        local_addr,
        relay_addr,
        metrics_addr,
        router,
        accept_loop,
        tasks,
    })
}

/// Holds one place in the count of HTTP-phase connections (before any upgrade) until the
/// connection ends or hands its socket over.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn accept(listener: TcpListener, router: Arc<Router>, shutdown: CancellationToken) {
    let limits = router.connections.clone();
    let http_slots = ClientSlots::new(limits.max_http_per_client);
    let open = router.http_open.clone();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = ACCEPT_BACKOFF_MIN;
                accepted
            }
            Err(e) => {
                // Typically EMFILE: back off (longer each time) instead of spinning until
                // descriptors free up.
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let in_http = open.fetch_add(1, Ordering::AcqRel) + 1;
        let guard = OpenGuard(open.clone());
        let websockets = router.open_websockets();
        // A proxy carries many clients: it is capped by the total only.
        let slot = if limits.trusted_proxies.contains(peer.ip()) {
            Ok(None)
        } else {
            http_slots
                .acquire(ClientAddr::peer(peer))
                .map(Some)
                .ok_or(())
        };
        let refusal = if in_http + websockets > limits.max_open_connections {
            Some("This node is at its connection limit; retry later or use another node.")
        } else if slot.is_err() {
            Some("Too many connections from your address; close some and retry.")
        } else {
            None
        };
        let router = router.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let _slot = slot;
            if let Some(refusal) = refusal {
                return refuse(stream, refusal).await;
            }
            let service = service_fn(move |mut request: Request<Incoming>| {
                let router = router.clone();
                async move {
                    let client =
                        ClientAddr::of_request(&request, peer, &router.connections.trusted_proxies);
                    request.extensions_mut().insert(client);
                    let mut response = router.route(request).await;
                    if router.stopping.is_cancelled() {
                        // Draining: the client takes its next request elsewhere, instead of
                        // racing the close of an idle kept-alive connection.
                        response.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = shutdown.cancelled() => {
                    // Finish the request being served (its answer says `Connection: close`),
                    // then close; an idle connection closes now.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

/// `/healthz`: the process is alive.
fn alive() -> HttpResponse {
    json_response(StatusCode::OK, br#"{"status":"ok"}"#.to_vec())
}

/// Answers one request on a connection over a limit with 503, then closes it.
async fn refuse(stream: tokio::net::TcpStream, reason: &'static str) {
    let service = service_fn(move |request: Request<Incoming>| async move {
        // Liveness still answers: a node at its limit is busy, not dead.
        if request.uri().path() == "/healthz" {
            return Ok(alive());
        }
        let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, reason);
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
        Ok::<_, Infallible>(response)
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(REFUSED_HEADER_READ_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    let _ = connection.await;
}
