//! A stand-in ScyllaDB node for tests: it speaks the CQL native protocol v4
//! (`../shared/cql/native_protocol_v4.spec`) to the real `scylla` driver and implements a
//! general CQL subset with Cassandra's semantics: keyspaces and tables with any partition and
//! clustering keys, writes with `USING TTL` / `USING TIMESTAMP` and last-write-wins
//! reconciliation, SELECTs by partition with clustering equalities, ranges and tuple ranges,
//! `ORDER BY` either way, `LIMIT` and paging. Anything else is answered with a CQL error.
//!
//! It is one node owning every token, in datacenter `datacenter1`; it does not advertise
//! ScyllaDB's protocol extensions, so drivers treat it as a Cassandra-compatible node. Its
//! clock can be moved forward ([`Standin::advance_clock`]) so that TTLs expire on demand, it
//! can be slowed ([`Standin::set_delay`]) and stopped and started again on the same address
//! with its data kept ([`Standin::stop`], [`Standin::restart`]), as a node restarting on its
//! commit log would. It can also serve client-to-node encryption only, as a node with
//! `client_encryption_options: enabled` does ([`Standin::start_tls`]).
//!
//! Layout: [`cql`] parses statements, [`types`] holds CQL types and values, [`schema`] and
//! [`store`] the keyspaces and tables, [`data`] partitions and reconciliation, [`query`] runs
//! statements, [`server`] speaks the protocol.

pub mod cql;
pub mod data;
pub mod error;
pub mod query;
pub mod schema;
pub mod server;
pub mod store;
pub mod tls;
pub mod types;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use server::Shared;

/// A running stand-in node.
#[derive(Debug)]
pub struct Standin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tls: Option<Arc<rustls::ServerConfig>>,
    listener: Option<tokio::task::JoinHandle<()>>,
}

impl Standin {
    /// Starts a node on `addr` (port 0 picks a free port), without authentication.
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        Self::start_with(addr, None).await
    }

    /// Starts a node that asks for `PasswordAuthenticator` credentials `(user, password)`.
    pub async fn start_with(
        addr: SocketAddr,
        credentials: Option<(String, String)>,
    ) -> std::io::Result<Self> {
        Self::listen(addr, credentials, None).await
    }

    /// Starts a node that accepts TLS connections only, with `tls` (see [`tls::server_config`]).
    pub async fn start_tls(
        addr: SocketAddr,
        credentials: Option<(String, String)>,
        tls: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<Self> {
        Self::listen(addr, credentials, Some(tls)).await
    }

    async fn listen(
        addr: SocketAddr,
        credentials: Option<(String, String)>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(addr.ip(), credentials));
        let task = tokio::spawn(accept(listener, shared.clone(), tls.clone()));
        Ok(Standin {
            addr,
            shared,
            tls,
            listener: Some(task),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Moves the node's clock forward: TTLs expire as if `by` had passed, and new writes get
    /// later timestamps.
    pub fn advance_clock(&self, by: Duration) {
        let seconds = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        self.shared
            .store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .advance_clock(seconds);
    }

    /// Delays every answer by `delay` (zero: answer at once), to play a slow node.
    pub fn set_delay(&self, delay: Duration) {
        *self
            .shared
            .delay
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = delay;
    }

    /// QUERY, EXECUTE and BATCH requests answered so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Stops listening and drops every connection; the data is kept for [`Standin::restart`].
    pub fn stop(&mut self) {
        if let Some(task) = self.listener.take() {
            task.abort();
        }
        self.shared.stop.send_modify(|generation| *generation += 1);
    }

    /// Listens again on the same address, with the data it had.
    pub async fn restart(&mut self) -> std::io::Result<()> {
        self.stop();
        let listener = TcpListener::bind(self.addr).await?;
        self.listener = Some(tokio::spawn(accept(
            listener,
            self.shared.clone(),
            self.tls.clone(),
        )));
        Ok(())
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let tls = tls.map(TlsAcceptor::from);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(shared.clone(), stream, tls.clone()));
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn connection(shared: Arc<Shared>, stream: TcpStream, tls: Option<TlsAcceptor>) {
    let Some(tls) = tls else {
        return server::serve_connection(shared, stream).await;
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
        Ok(Ok(stream)) => server::serve_connection(shared, stream).await,
        Ok(Err(error)) => tracing::info!(%error, "TLS handshake refused"),
        Err(_) => tracing::info!("TLS handshake timed out"),
    }
}
