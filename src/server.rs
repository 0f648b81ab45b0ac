//! Wires the roles into one listening process: the chat backend (the embedded store, or
//! Mattermost with its ingest), the in-process bus, the fan-out hub, the API and the WebSocket
//! gateway, behind one HTTP router.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use mmsub_api::auth::JwtKeys;
use mmsub_api::backend::embedded::EmbeddedStore;
use mmsub_api::backend::mattermost::{ingest, MattermostBackend};
use mmsub_api::backend::ChatBackend;
use mmsub_api::http::{error_response, json_response, HttpResponse};
use mmsub_api::{build_schema, AppState, MmsubSchema};
use mmsub_gateway::Gateway;
use mmsub_relay::{FanoutHub, InProcessBus};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{resolve_jwt_secret, ServerConfig};

/// A client must finish sending request headers within this time (slow-header clients hold sockets).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A started server. Dropping it does not stop it; call [`RunningServer::shutdown`].
pub struct RunningServer {
    pub local_addr: SocketAddr,
    shutdown: CancellationToken,
    accept_loop: JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting, closes WebSocket sessions with 1001, and waits for the accept loop.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.accept_loop.await;
    }
}

struct Router {
    schema: MmsubSchema,
    state: Arc<AppState>,
    gateway: Arc<Gateway>,
    shutdown: CancellationToken,
}

impl Router {
    async fn route(&self, request: Request<Incoming>) -> HttpResponse {
        match request.uri().path() {
            "/graphql" | "/graphql/" => {
                mmsub_api::http::handle(&self.schema, &self.state, request).await
            }
            "/ws/graphql" | "/ws/graphql/" => self.gateway.upgrade(request),
            "/healthz" => json_response(StatusCode::OK, br#"{"status":"ok"}"#.to_vec()),
            "/readyz" => {
                let (status, word) = if self.shutdown.is_cancelled() {
                    (StatusCode::SERVICE_UNAVAILABLE, "stopping")
                } else {
                    (StatusCode::OK, "ready")
                };
                let body = json!({
                    "status": word,
                    "connections": self.gateway.open_connections(),
                    "subscriptions": self.gateway.subscription_count(),
                    "subscriptionGroups": self.gateway.group_count(),
                });
                json_response(status, body.to_string().into_bytes())
            }
            _ => error_response(
                StatusCode::NOT_FOUND,
                "Not found: GraphQL is at /graphql/, WebSocket at /ws/graphql/.",
            ),
        }
    }
}

/// Opens the store, binds the listener and starts serving in the background.
pub async fn start(config: ServerConfig) -> anyhow::Result<RunningServer> {
    let secret = resolve_jwt_secret(&config)?;
    let jwt = JwtKeys::new(
        &secret,
        config.api.access_token_ttl,
        config.api.refresh_window,
    );
    let hub = FanoutHub::new();
    let bus = Arc::new(InProcessBus::new(hub.clone()));
    let shutdown = CancellationToken::new();
    let backend: Arc<dyn ChatBackend> = match &config.mattermost {
        None => Arc::new(EmbeddedStore::open(&config.data_dir, &config.team)?),
        Some(mattermost) => {
            let backend = Arc::new(MattermostBackend::connect(mattermost.clone(), &secret).await?);
            tracing::info!(server = %mattermost.server_url, team = %mattermost.team, "chat backend: Mattermost");
            let watched_hub = hub.clone();
            tokio::spawn(ingest::run(
                backend.clone(),
                bus.clone(),
                Arc::new(move || watched_hub.channel_ids()),
                config.ingest.clone(),
                shutdown.clone(),
            ));
            backend
        }
    };
    let state = Arc::new(AppState {
        backend,
        bus,
        jwt: jwt.clone(),
        settings: config.api.clone(),
    });
    let schema = build_schema(state.clone());
    let gateway = Gateway::new(
        schema.clone(),
        hub,
        jwt,
        config.gateway.clone(),
        shutdown.clone(),
    );
    let listener = TcpListener::bind(config.listen).await?;
    let local_addr = listener.local_addr()?;
    let router = Arc::new(Router {
        schema,
        state,
        gateway,
        shutdown: shutdown.clone(),
    });
    let accept_loop = tokio::spawn(accept(listener, router, shutdown.clone()));
    Ok(RunningServer {
        local_addr,
        shutdown,
        accept_loop,
    })
}

async fn accept(listener: TcpListener, router: Arc<Router>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning until descriptors free up.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let router = router.clone();
                async move { Ok::<_, Infallible>(router.route(request).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

/// `mmsub ingest`: the Mattermost ingest alone. It publishes to a bus other nodes consume, so
/// it needs the shared (Kafka) bus of the relay tier; with the in-process bus its events would
/// reach no one, and `mmsub serve` already runs the ingest beside the gateway.
pub async fn run_ingest(config: ServerConfig) -> anyhow::Result<()> {
    if config.mattermost.is_none() {
        anyhow::bail!("mmsub ingest needs Mattermost: set MATTERMOST_SERVER_URL, MATTERMOST_ADMIN_LOGIN_ID and MATTERMOST_ADMIN_LOGIN_PASSWORD");
    }
    anyhow::bail!(
        "mmsub ingest publishes to a shared bus, and this build has only the in-process one: \
         run `mmsub serve`, which includes the ingest when Mattermost is configured"
    )
}
