//! One WebSocket connection from upgrade to close: the protocol state machine of both
//! dialects, its subscriptions, and its outgoing frames.
//!
//! The session waits on these at once: client frames (read here, see
//! [`frames::FrameReader`]), deliveries the subscription groups could not write directly (its
//! outbox), results of operations it runs itself (admissions, replays, queries), the keep-alive
//! timer, one timer for its other duties ([`Duties`]: the `connection_init` deadline, the token's
//! expiry, membership re-checks), a re-check under way, and the send budget's overflow signal.
//! Whatever became
//! ready is encoded into one buffer and written with one syscall; a write that cannot finish
//! within `write_timeout` ends the connection.
//!
//! The socket has two writers: this task and, through the [`Outbox`](crate::outbox::Outbox), the groups' tasks. The
//! session's first encoded byte claims the socket (deliveries then queue behind its messages),
//! and once its buffer is written it hands the socket back.
//!
//! A subscription to `onNewChatMessage` lives in two phases: its admission run (checks and
//! replay, executed here, results encoded here) and then membership of a subscription group,
//! whose deliveries arrive pre-rendered through the outbox.

mod duties;
mod operations;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use mmsub_api::auth::{TokenError, Viewer};
use mmsub_api::client::ClientAddr;
use mmsub_api::clock::unix_seconds;
use mmsub_api::throttle::Bucket;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_stream::StreamMap;

use crate::close;
use crate::dialect::{encode, legacy, transport_ws, Connection, Credentials, Dialect, Flow};
use crate::frames::{self, FrameLimits, FrameReader, Inbound};
use crate::groups::admission::GroupAdmission;
use crate::groups::MemberHandle;
use crate::outbox::{self, OutboxReceiver};
use crate::{Gateway, ResultStream};
use duties::{Due, Duties};
use mmsub_metrics::labels::Protocol;
use mmsub_metrics::Metrics;

/// Most operation results encoded before the buffer is written out.
const MAX_BATCH: usize = 256;
/// Most group deliveries encoded before the buffer is written out.
const MAX_DELIVERY_BATCH: usize = 1024;
/// A write buffer that grew past this (a burst) is given back after the write, so that idle
/// connections stay small.
const KEEP_BUFFER_BYTES: usize = 16 << 10;

pub(crate) struct Session {
    dialect: Dialect,
    gateway: Arc<Gateway>,
    /// The connection: read by this task alone; written by this task, and by subscription
    /// groups through the outbox when nothing else waits (see [`Outbox`](crate::outbox::Outbox)).
    io: Arc<TcpStream>,
    reader: FrameReader,
    /// Bytes this task will write next. Non-empty only while this task has claimed the socket
    /// from direct writes ([`Session::out`]).
    out: Vec<u8>,
    viewer: Viewer,
    /// Where the connection comes from: login throttles and logs over the socket use it.
    client: ClientAddr,
    /// Operations this connection may still start (`--ws-operation-rate`).
    operations: Bucket,
    init_received: bool,
    acknowledged: bool,
    /// Results of the operations this session executes itself, by operation id.
    running: StreamMap<String, ResultStream>,
    /// Every operation of the connection, by id.
    active: HashMap<String, Active>,
    /// What waits in the outbox for this task to write; its `outbox()` is what groups push to.
    deliveries: OutboxReceiver,
    /// A membership re-check under way (at most one at a time).
    recheck: Option<Recheck>,
    /// This connection in the node's connection and subscription gauges.
    gauges: Gauges,
}

/// A session's share of `mmsub_ws_connections` and `mmsub_ws_subscriptions`, given back when
/// the session ends, however it ends.
struct Gauges {
    metrics: Arc<Metrics>,
    protocol: Protocol,
    subscriptions: i64,
}

impl Gauges {
    fn open(metrics: Arc<Metrics>, dialect: Dialect) -> Self {
        let protocol = match dialect {
            Dialect::TransportWs => Protocol::TransportWs,
            Dialect::Legacy => Protocol::Legacy,
        };
        metrics.ws.connections(protocol, 1);
        Self {
            metrics,
            protocol,
            subscriptions: 0,
        }
    }

    /// The connection has `now` operations.
    fn subscriptions(&mut self, now: usize) {
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        self.metrics
            .ws
            .subscriptions(self.protocol, now - self.subscriptions);
        self.subscriptions = now;
    }
}

impl Drop for Gauges {
    fn drop(&mut self) {
        self.subscriptions(0);
        self.metrics.ws.connections(self.protocol, -1);
    }
}

enum Active {
    /// Executing here; `Some` for a subscription that will join a group once admitted.
    Running(Option<Arc<GroupAdmission>>),
    /// A group member: deliveries come through the outbox; dropping the handle leaves.
    Live {
        _member: MemberHandle,
        /// Its channel, whose membership is checked again every `membership_recheck`.
        channel_id: String,
    },
}

/// The channels of live subscriptions that a membership re-check found the user no longer in.
type Recheck = futures::future::BoxFuture<'static, Vec<String>>;

/// Runs a connection whose handshake is done, until it closes. `early` holds bytes the client
/// sent right behind its upgrade request; it is copied and dropped at once, because it may be a
/// view into the HTTP connection's whole read buffer (an idle connection keeping it would cost
/// kilobytes).
pub(crate) async fn run(
    io: TcpStream,
    early: bytes::Bytes,
    dialect: Option<Dialect>,
    header_viewer: Viewer,
    client: ClientAddr,
    gateway: Arc<Gateway>,
) {
    let io = Arc::new(io);
    let Some(dialect) = dialect else {
        let session = Session::new(Dialect::TransportWs, gateway, io, header_viewer, client);
        session
            .close(
                close::SUBPROTOCOL_NOT_ACCEPTABLE,
                "Subprotocol not acceptable: use graphql-transport-ws or graphql-ws",
            )
            .await;
        return;
    };
    let mut session = Session::new(dialect, gateway, io, header_viewer, client);
    session.reader.preload(&early);
    drop(early);
    session.serve().await;
}

impl Session {
    fn new(
        dialect: Dialect,
        gateway: Arc<Gateway>,
        io: Arc<TcpStream>,
        viewer: Viewer,
        client: ClientAddr,
    ) -> Self {
        let (_, deliveries) = outbox::outbox_on(gateway.settings().send_queue_limit, io.clone());
        let gauges = Gauges::open(gateway.metrics().clone(), dialect);
        let reader = FrameReader::new(FrameLimits {
            max_frame_bytes: gateway.settings().max_frame_bytes,
            max_message_bytes: gateway.settings().max_message_bytes,
        });
        let operations = Bucket::full(gateway.settings().operation_rate, Instant::now());
        Self {
            dialect,
            gateway,
            io,
            reader,
            out: Vec::new(),
            viewer,
            client,
            operations,
            init_received: false,
            acknowledged: false,
            running: StreamMap::new(),
            active: HashMap::new(),
            deliveries,
            recheck: None,
            gauges,
        }
    }

    async fn serve(mut self) {
        let settings = self.gateway.settings().clone();
        let budget = self.deliveries.outbox().budget().clone();
        let shutdown = self.gateway.shutdown_signal().clone();
        // One timer for the connection_init deadline, the token's expiry and the membership
        // re-checks: an idle connection holds one timer entry, not three.
        let mut duties = Duties::new(tokio::time::Instant::now(), &settings);
        let mut armed = duties.next();
        let timer = tokio::time::sleep_until(armed.unwrap_or_else(tokio::time::Instant::now));
        tokio::pin!(timer);
        let keepalive_enabled = !settings.keepalive_interval.is_zero();
        let period = if keepalive_enabled {
            settings.keepalive_interval
        } else {
            Duration::from_secs(3600)
        };
        let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + period, period);

        // Created once: a fresh `cancelled()` per iteration would register and unregister a
        // waiter (a lock each) on every delivery.
        let shutting_down = shutdown.cancelled();
        let overflowed = budget.overflowed();
        tokio::pin!(shutting_down, overflowed);
        loop {
            let flow = tokio::select! {
                biased;
                () = &mut shutting_down => Flow::Close(close::GOING_AWAY, "Server shutting down".into()),
                () = &mut overflowed => Flow::Close(
                    close::SLOW_CONSUMER,
                    format!("Slow consumer: more than {} messages waiting to be sent", budget.limit()),
                ),
                read = self.reader.read(&self.io) => match read {
                    Ok(0) | Err(_) => Flow::Stop,
                    Ok(_) => self.on_readable(),
                },
                // Deliveries the groups could not write directly: written by the flush below.
                () = self.deliveries.waiting() => Flow::Continue,
                Some((id, result)) = self.running.next(), if !self.running.is_empty() => {
                    self.on_result(&id, result);
                    self.drain_ready_results();
                    Flow::Continue
                }
                _ = keepalive.tick(), if keepalive_enabled && self.acknowledged => {
                    self.send(None, self.dialect.keepalive_type(), None::<()>);
                    Flow::Continue
                }
                () = &mut timer, if armed.is_some() => match duties.due(tokio::time::Instant::now()) {
                    Due::InitTimeout => {
                        Flow::Close(close::INIT_TIMEOUT, "Connection initialisation timeout".into())
                    }
                    Due::TokenExpired => self.token_expired(),
                    Due::Recheck => {
                        if self.recheck.is_none() {
                            self.start_recheck();
                        }
                        Flow::Continue
                    }
                    Due::Nothing => Flow::Continue,
                },
                lost = async { self.recheck.as_mut().expect("guarded").await }, if self.recheck.is_some() => {
                    self.recheck = None;
                    self.revoke(&lost);
                    Flow::Continue
                }
            };
            if self.init_received {
                duties.init_at = None;
            }
            duties.track_token(self.token_expiry(), settings.token_grace);
            let next = duties.next();
            if next != armed {
                armed = next;
                if let Some(at) = next {
                    timer.as_mut().reset(at);
                }
            }
            match flow {
                Flow::Continue => {
                    if self.flush().await.is_err() {
                        return;
                    }
                }
                Flow::Close(code, reason) => return self.close(code, &reason).await,
                Flow::Stop => return,
            }
        }
    }

    /// Handles every whole message the last read completed, until one ends the connection.
    fn on_readable(&mut self) -> Flow {
        while let Some(message) = self.reader.next_message() {
            match self.on_inbound(message) {
                Flow::Continue => {}
                end => return end,
            }
        }
        Flow::Continue
    }

    /// Encodes more results that are ready right now, so they leave in the same write.
    fn drain_ready_results(&mut self) {
        for _ in 0..MAX_BATCH {
            match self.running.next().now_or_never() {
                Some(Some((id, result))) => self.on_result(&id, result),
                _ => return,
            }
        }
    }

    /// The buffer to encode the session's own messages into. The first byte claims the
    /// socket: deliveries queue behind these bytes instead of being written before them.
    fn out(&mut self) -> &mut Vec<u8> {
        if self.out.is_empty() {
            self.deliveries.claim(&mut self.out);
        }
        &mut self.out
    }

    /// Writes what the session encoded and a batch of what waits in the outbox; then the
    /// socket is free for direct deliveries again, unless more wait (the loop comes back for
    /// them after checking the overflow and shutdown signals).
    async fn flush(&mut self) -> std::io::Result<()> {
        self.deliveries.take(&mut self.out, MAX_DELIVERY_BATCH);
        if self.out.is_empty() {
            return Ok(());
        }
        self.write_out().await?;
        self.deliveries.release();
        Ok(())
    }

    /// Writes `out` within the write timeout, and empties it.
    async fn write_out(&mut self) -> std::io::Result<()> {
        let timeout = self.gateway.settings().write_timeout;
        let written = tokio::time::timeout(timeout, write_all(&self.io, &self.out)).await;
        self.out.clear();
        if self.out.capacity() > KEEP_BUFFER_BYTES {
            self.out = Vec::new();
        }
        match written {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "write timed out",
            )),
        }
    }

    async fn close(mut self, code: u16, reason: &str) {
        tracing::debug!(code, reason, "closing WebSocket connection");
        self.gateway.metrics().ws.closed(code);
        // What was encoded is sent; queued deliveries are not (the client is too slow, or the
        // node is going away), but a frame already begun is finished before the close frame.
        self.deliveries.close(&mut self.out);
        frames::push_close(&mut self.out, code, reason);
        if self.write_out().await.is_ok() {
            let _ = socket2::SockRef::from(&*self.io).shutdown(std::net::Shutdown::Write);
        }
    }

    /// Encodes a message of the connection's dialect for the next write.
    pub(crate) fn send<P: serde::Serialize>(
        &mut self,
        id: Option<&str>,
        kind: &str,
        payload: Option<P>,
    ) {
        let message = encode(id, kind, payload);
        frames::push_text(self.out(), &message);
    }

    fn on_inbound(&mut self, message: Inbound) -> Flow {
        match message {
            Inbound::Text(text) => match self.dialect {
                Dialect::TransportWs => transport_ws::on_text(self, &text),
                Dialect::Legacy => legacy::on_text(self, &text),
            },
            Inbound::Binary => match self.dialect {
                Dialect::TransportWs => transport_ws::on_binary(),
                Dialect::Legacy => legacy::on_binary(),
            },
            Inbound::Ping(payload) => {
                frames::push_pong(self.out(), &payload);
                Flow::Continue
            }
            // The frame reader let through only codes a peer may send; echo them.
            Inbound::Close(code) => Flow::Close(code.unwrap_or(close::NORMAL), String::new()),
            Inbound::Violation { code, reason } => Flow::Close(code, reason.into()),
        }
    }

    /// Whether the connection's token expires on it (`--ws-tokens-never-expire` says no).
    fn tokens_expire(&self) -> bool {
        !self.gateway.settings().tokens_never_expire
    }

    /// The connection's viewer as the same token would be over HTTP at this moment.
    fn viewer_now(&self) -> Viewer {
        if self.tokens_expire() {
            self.viewer.at(unix_seconds())
        } else {
            self.viewer.clone()
        }
    }

    /// When this connection's token stops authorizing it; `None` when nothing expires (no
    /// token, not yet acknowledged, or `--ws-tokens-never-expire`).
    fn token_expiry(&self) -> Option<i64> {
        if !self.tokens_expire() || !self.acknowledged {
            return None;
        }
        self.viewer.expires_at()
    }

    /// The token ran out unrenewed: the protocol's authorization answer.
    fn token_expired(&mut self) -> Flow {
        let reason = "Forbidden: the token expired; reconnect with a fresh one".to_owned();
        if self.dialect == Dialect::Legacy {
            self.send(None, "connection_error", Some(json!({ "message": reason })));
        }
        Flow::Close(close::FORBIDDEN, reason)
    }
}

/// What the dialects' state machines do to the connection.
impl Connection for Session {
    fn init_received(&self) -> bool {
        self.init_received
    }

    fn acknowledged(&self) -> bool {
        self.acknowledged
    }

    fn initialise(&mut self, credentials: Credentials) -> Result<(), TokenError> {
        self.init_received = true;
        match credentials {
            Credentials::Token(token) => {
                self.viewer = Viewer::from_token(self.gateway.jwt(), Some(&token));
            }
            Credentials::NotAToken => self.viewer = Viewer::Rejected(TokenError::Invalid),
            Credentials::Absent => {}
        }
        if let Viewer::Rejected(e) = &self.viewer {
            return Err(e.clone());
        }
        self.acknowledged = true;
        Ok(())
    }

    fn has_operation(&self, id: &str) -> bool {
        self.active.contains_key(id)
    }

    fn start(&mut self, id: String, request: async_graphql::Request) {
        Session::start(self, id, request);
    }

    fn stop(&mut self, id: &str) -> bool {
        Session::stop(self, id)
    }

    fn send<P: serde::Serialize>(&mut self, id: Option<&str>, kind: &str, payload: Option<P>) {
        Session::send(self, id, kind, payload);
    }
}

/// Writes all of `bytes`, waiting for room in the socket's buffer as needed.
async fn write_all(socket: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        socket.writable().await?;
        match socket.try_write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(written) => bytes = &bytes[written..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
