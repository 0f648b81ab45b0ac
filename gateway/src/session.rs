//! One WebSocket connection from upgrade to close: the protocol state machine of both
//! dialects, its subscriptions, and its outgoing frames.
//!
//! The session waits on these at once: client frames (read here, see
//! [`frames::FrameReader`]), deliveries the subscription groups could not write directly (its
//! outbox), results of operations it runs itself (admissions, replays, queries), the keep-alive
//! timer, one timer for its other duties ([`Duties`]: the connection_init deadline, the token's
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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_graphql::{Request, Response};
use futures::stream::{self, BoxStream};
use futures::{FutureExt, StreamExt};
use mmsub_api::auth::{unix_now, TokenError, Viewer};
use mmsub_api::backend::BackendError;
use mmsub_api::client::ClientAddr;
use mmsub_api::throttle::Bucket;
use mmsub_api::Admission;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_stream::StreamMap;

use crate::close;
use crate::frames::{self, FrameLimits, FrameReader, Inbound};
use crate::groups::key::{self, Plan};
use crate::groups::MemberHandle;
use crate::outbox::{self, OutboxReceiver};
use crate::protocol::{encode, init_token, ClientMessage, Dialect};
use crate::Gateway;

/// Most operation results encoded before the buffer is written out.
const MAX_BATCH: usize = 256;
/// Most group deliveries encoded before the buffer is written out.
const MAX_DELIVERY_BATCH: usize = 1024;
/// A write buffer that grew past this (a burst) is given back after the write, so that idle
/// connections stay small.
const KEEP_BUFFER_BYTES: usize = 16 << 10;

/// A subscription's results; `None` once, when it has finished.
type ResultStream = BoxStream<'static, Option<Response>>;

enum Flow {
    Continue,
    Close(u16, String),
    /// The peer is gone or closed first: nothing more to write.
    Stop,
}

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
}

enum Active {
    /// Executing here; `Some` for a subscription that will join a group once admitted.
    Running(Option<Admitting>),
    /// A group member: deliveries come through the outbox; dropping the handle leaves.
    Live {
        _member: MemberHandle,
        /// Its channel, whose membership is checked again every `membership_recheck`.
        channel_id: String,
    },
}

struct Admitting {
    admission: Arc<Admission>,
    /// The group joined and its channel, once the admission found the subscriber a member.
    member: Arc<Mutex<Option<(MemberHandle, String)>>>,
}

/// The channels of live subscriptions that a membership re-check found the user no longer in.
type Recheck = futures::future::BoxFuture<'static, Vec<String>>;

/// What the session's one timer serves, each at its own instant.
struct Duties {
    /// Until `connection_init` arrives.
    init_at: Option<tokio::time::Instant>,
    /// The token's `exp` (Unix seconds) that `token_at` was computed for.
    token_exp: Option<i64>,
    /// `exp` plus the grace, as an instant.
    token_at: Option<tokio::time::Instant>,
    /// The next membership re-check (none when disabled).
    recheck_at: Option<tokio::time::Instant>,
    recheck_period: Duration,
}

/// The duty whose time has come.
enum Due {
    InitTimeout,
    TokenExpired,
    Recheck,
    /// The timer fired for a duty that has since moved (a renewed token).
    Nothing,
}

impl Duties {
    fn new(now: tokio::time::Instant, settings: &crate::GatewaySettings) -> Self {
        let period = settings.membership_recheck;
        // Spread over the period, so that a node's connections do not all check at once.
        let recheck_at = (!period.is_zero()).then(|| now + period.mul_f64(rand::random::<f64>()));
        Self {
            init_at: Some(now + settings.connection_init_timeout),
            token_exp: None,
            token_at: None,
            recheck_at,
            recheck_period: period,
        }
    }

    fn next(&self) -> Option<tokio::time::Instant> {
        [self.init_at, self.token_at, self.recheck_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Follows the token's expiry: `exp` is `None` when nothing expires.
    fn track_token(&mut self, exp: Option<i64>, grace: Duration) {
        if exp == self.token_exp {
            return;
        }
        self.token_exp = exp;
        self.token_at = exp.map(|exp| {
            let left = Duration::from_secs(exp.saturating_sub(unix_now()).max(0) as u64);
            tokio::time::Instant::now() + left + grace
        });
    }

    fn due(&mut self, now: tokio::time::Instant) -> Due {
        let passed = |at: Option<tokio::time::Instant>| at.is_some_and(|at| at <= now);
        if passed(self.init_at) {
            Due::InitTimeout
        } else if passed(self.token_at) {
            Due::TokenExpired
        } else if passed(self.recheck_at) {
            self.recheck_at = Some(now + self.recheck_period);
            Due::Recheck
        } else {
            Due::Nothing
        }
    }
}

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
        let (_, deliveries) = outbox::outbox_on(gateway.settings.send_queue_limit, io.clone());
        let reader = FrameReader::new(FrameLimits {
            max_frame_bytes: gateway.settings.max_frame_bytes,
            max_message_bytes: gateway.settings.max_message_bytes,
        });
        let operations = Bucket::full(gateway.settings.operation_rate, Instant::now());
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
        }
    }

    async fn serve(mut self) {
        let settings = self.gateway.settings.clone();
        let budget = self.deliveries.outbox().budget().clone();
        let shutdown = self.gateway.shutdown.clone();
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
                _ = &mut shutting_down => Flow::Close(close::GOING_AWAY, "Server shutting down".into()),
                _ = &mut overflowed => Flow::Close(
                    close::SLOW_CONSUMER,
                    format!("Slow consumer: more than {} messages waiting to be sent", budget.limit()),
                ),
                read = self.reader.read(&self.io) => match read {
                    Ok(0) | Err(_) => Flow::Stop,
                    Ok(_) => self.on_readable(),
                },
                // Deliveries the groups could not write directly: written by the flush below.
                _ = self.deliveries.waiting() => Flow::Continue,
                Some((id, result)) = self.running.next(), if !self.running.is_empty() => {
                    self.on_result(&id, result);
                    self.drain_ready_results();
                    Flow::Continue
                }
                _ = keepalive.tick(), if keepalive_enabled && self.acknowledged => {
                    self.send(None, self.dialect.keepalive_type(), None::<()>);
                    Flow::Continue
                }
                _ = &mut timer, if armed.is_some() => match duties.due(tokio::time::Instant::now()) {
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
        let timeout = self.gateway.settings.write_timeout;
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
        // What was encoded is sent; queued deliveries are not (the client is too slow, or the
        // node is going away), but a frame already begun is finished before the close frame.
        self.deliveries.close(&mut self.out);
        frames::push_close(&mut self.out, code, reason);
        if self.write_out().await.is_ok() {
            let _ = socket2::SockRef::from(&*self.io).shutdown(std::net::Shutdown::Write);
        }
    }

    fn send<P: serde::Serialize>(&mut self, id: Option<&str>, kind: &str, payload: Option<P>) {
        let message = encode(id, kind, payload);
        frames::push_text(self.out(), &message);
    }

    fn on_inbound(&mut self, message: Inbound) -> Flow {
        match message {
            Inbound::Text(text) => match serde_json::from_str::<ClientMessage>(&text) {
                Ok(message) => match self.dialect {
                    Dialect::TransportWs => self.on_transport_ws(message),
                    Dialect::Legacy => self.on_legacy(message),
                },
                Err(_) => match self.dialect {
                    Dialect::TransportWs => {
                        Flow::Close(close::BAD_REQUEST, "Invalid message received".into())
                    }
                    Dialect::Legacy => {
                        self.send(
                            None,
                            "error",
                            Some(json!({ "message": "Message must be JSON-parseable" })),
                        );
                        Flow::Continue
                    }
                },
            },
            Inbound::Binary => match self.dialect {
                Dialect::TransportWs => Flow::Close(
                    close::BAD_REQUEST,
                    "Binary messages are not supported".into(),
                ),
                Dialect::Legacy => Flow::Close(
                    close::UNSUPPORTED_DATA,
                    "Binary messages are not supported".into(),
                ),
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
        !self.gateway.settings.tokens_never_expire
    }

    /// The connection's viewer as the same token would be over HTTP at this moment.
    fn viewer_now(&self) -> Viewer {
        if self.tokens_expire() {
            self.viewer.at(unix_now())
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

    /// A token issued in an operation's answer on this socket (`tokenAuth`, `refreshToken`,
    /// `userGetToken`) for the connection's own user becomes the connection's token.
    fn renew_from(&mut self, data: &async_graphql::Value) {
        let async_graphql::Value::Object(fields) = data else {
            return;
        };
        for field in fields.values() {
            let async_graphql::Value::Object(answer) = field else {
                continue;
            };
            let Some(async_graphql::Value::String(token)) = answer.get("token") else {
                continue;
            };
            let renewed = Viewer::from_token(&self.gateway.app.jwt, Some(token));
            let same_user = match (renewed.actor(), self.viewer.actor()) {
                (Some(new), Some(old)) => new.username == old.username,
                (Some(_), None) => matches!(self.viewer, Viewer::Anonymous),
                _ => false,
            };
            if same_user && renewed.expires_at() > self.viewer.expires_at() {
                self.viewer = renewed;
            }
        }
    }

    /// Checks, as the connection's user, that each channel of its live subscriptions still has
    /// it as a member. A backend that cannot answer (Mattermost down) revokes nothing.
    fn start_recheck(&mut self) {
        let Some(actor) = self.viewer.actor().cloned() else {
            return;
        };
        let mut channels: Vec<String> = self
            .active
            .values()
            .filter_map(|a| match a {
                Active::Live { channel_id, .. } => Some(channel_id.clone()),
                Active::Running(_) => None,
            })
            .collect();
        channels.sort();
        channels.dedup();
        if channels.is_empty() {
            return;
        }
        let app = self.gateway.app.clone();
        self.recheck = Some(Box::pin(async move {
            let mut lost = Vec::new();
            for channel in channels {
                match app.backend.member_channel(&actor, &channel).await {
                    Ok(_) => {}
                    Err(
                        BackendError::NotFound(_)
                        | BackendError::Forbidden(_)
                        | BackendError::Unauthorized(_),
                    ) => lost.push(channel),
                    Err(e) => {
                        tracing::debug!(error = %e, "membership re-check could not be answered")
                    }
                }
            }
            lost
        }));
    }

    /// Ends the live subscriptions of channels the user is no longer in, with an error that
    /// says so.
    fn revoke(&mut self, lost: &[String]) {
        let revoked: Vec<String> = self
            .active
            .iter()
            .filter(
                |(_, a)| matches!(a, Active::Live { channel_id, .. } if lost.contains(channel_id)),
            )
            .map(|(id, _)| id.clone())
            .collect();
        for id in revoked {
            self.stop(&id);
            let error = json!({
                "message": "You are no longer a member of this channel: the subscription has ended.",
                "extensions": { "code": "NOT_FOUND", "statusCode": 404 },
            });
            self.send_operation_error(&id, vec![error]);
        }
    }

    /// Applies a `connection_init` payload's credentials; `Err` if they are not accepted.
    fn authenticate(&mut self, payload: Option<&Value>) -> Result<(), TokenError> {
        match init_token(payload) {
            Some(Some(token)) => {
                self.viewer = Viewer::from_token(&self.gateway.app.jwt, Some(&token))
            }
            Some(None) => self.viewer = Viewer::Rejected(TokenError::Invalid),
            None => {}
        }
        match &self.viewer {
            Viewer::Rejected(e) => Err(e.clone()),
            _ => Ok(()),
        }
    }

    fn on_transport_ws(&mut self, message: ClientMessage) -> Flow {
        match message.kind.as_str() {
            "connection_init" => {
                if self.init_received {
                    return Flow::Close(
                        close::TOO_MANY_INIT,
                        "Too many initialisation requests".into(),
                    );
                }
                self.init_received = true;
                if let Err(e) = self.authenticate(message.payload.as_ref()) {
                    return Flow::Close(close::FORBIDDEN, format!("Forbidden: {e}"));
                }
                self.acknowledged = true;
                self.send(None, "connection_ack", None::<()>);
            }
            "ping" => self.send(None, "pong", message.payload),
            "pong" => {}
            "subscribe" => {
                if !self.acknowledged {
                    return Flow::Close(close::UNAUTHORIZED, "Unauthorized".into());
                }
                let Some(id) = message.id.filter(|id| !id.is_empty()) else {
                    return Flow::Close(
                        close::BAD_REQUEST,
                        "Invalid message received: subscribe needs an id".into(),
                    );
                };
                let Some(request) = parse_request(message.payload) else {
                    return Flow::Close(
                        close::BAD_REQUEST,
                        "Invalid message received: subscribe payload needs a query".into(),
                    );
                };
                if self.active.contains_key(&id) {
                    return Flow::Close(
                        close::SUBSCRIBER_EXISTS,
                        format!("Subscriber for {id} already exists"),
                    );
                }
                self.start(id, request);
            }
            "complete" => {
                if let Some(id) = message.id {
                    self.stop(&id);
                }
            }
            other => {
                return Flow::Close(
                    close::BAD_REQUEST,
                    format!("Invalid message received: unknown type {other:?}"),
                )
            }
        }
        Flow::Continue
    }

    fn on_legacy(&mut self, message: ClientMessage) -> Flow {
        match message.kind.as_str() {
            "connection_init" => {
                self.init_received = true;
                if let Err(e) = self.authenticate(message.payload.as_ref()) {
                    self.send(
                        None,
                        "connection_error",
                        Some(json!({ "message": format!("Forbidden: {e}") })),
                    );
                    return Flow::Close(close::FORBIDDEN, format!("Forbidden: {e}"));
                }
                self.acknowledged = true;
                self.send(None, "connection_ack", None::<()>);
                self.send(None, "ka", None::<()>);
            }
            "start" => {
                let Some(id) = message.id.filter(|id| !id.is_empty()) else {
                    self.send(
                        None,
                        "error",
                        Some(json!({ "message": "start needs an id" })),
                    );
                    return Flow::Continue;
                };
                if !self.acknowledged {
                    self.send(
                        Some(&id),
                        "error",
                        Some(json!({ "message": "Send connection_init before start" })),
                    );
                    return Flow::Continue;
                }
                let Some(request) = parse_request(message.payload) else {
                    self.send(
                        Some(&id),
                        "error",
                        Some(json!({ "message": "start payload needs a query" })),
                    );
                    return Flow::Continue;
                };
                // subscriptions-transport-ws semantics: a start with a live id replaces it.
                self.stop(&id);
                self.start(id, request);
            }
            "stop" => {
                if let Some(id) = message.id {
                    if self.stop(&id) {
                        self.send(Some(&id), "complete", None::<()>);
                    }
                }
            }
            "connection_terminate" => return Flow::Close(close::NORMAL, String::new()),
            _ => self.send(
                message.id.as_deref(),
                "error",
                Some(json!({ "message": "Invalid message type!" })),
            ),
        }
        Flow::Continue
    }

    fn start(&mut self, id: String, request: Request) {
        let rate = self.gateway.settings.operation_rate;
        if let Err(retry) = self.operations.try_take(rate, Instant::now()) {
            let message = format!(
                "Too many operations on this connection: retry in {} seconds.",
                retry.secs()
            );
            let error = json!({ "message": message, "extensions": { "code": "TOO_MANY_REQUESTS", "retryAfter": retry.secs() } });
            self.send_operation_error(&id, vec![error]);
            return;
        }
        let limit = self.gateway.settings.max_subscriptions_per_connection;
        if self.active.len() >= limit {
            let message =
                format!("Too many subscriptions on this connection: the limit is {limit}");
            self.send_operation_error(&id, vec![json!({ "message": message })]);
            return;
        }
        let mut request = match self
            .gateway
            .app
            .prepare(request, self.viewer_now(), self.client)
        {
            Ok(request) => request,
            Err(refused) => {
                self.send_operation_error(&id, vec![refused.to_graphql()]);
                return;
            }
        };
        let (request, admitting) = match key::plan(&mut request) {
            Plan::NotOneRootField => {
                let message = "A subscription operation must select exactly one root field.";
                self.send_operation_error(&id, vec![json!({ "message": message })]);
                return;
            }
            Plan::FragmentRoot => {
                let message = "A subscription must select onNewChatMessage as its root field itself, not through a fragment.";
                self.send_operation_error(&id, vec![json!({ "message": message })]);
                return;
            }
            Plan::Alone => (request, None),
            Plan::Shared(key) => {
                let admitting = self.admitting(&id, key, &request);
                (request.data(admitting.admission.clone()), Some(admitting))
            }
        };
        let results: ResultStream = if admitting.is_some() {
            // An admission run waits for a permit holding only its request: a burst of
            // subscribes does not build thousands of executions at once.
            let schema = self.gateway.schema.clone();
            let permits = self.gateway.admissions.clone();
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
        } else {
            // Anything else may run for as long as the client wants: it takes no permit.
            self.gateway
                .schema
                .execute_stream(request)
                .map(Some)
                .chain(stream::once(async { None }))
                .boxed()
        };
        self.running.insert(id.clone(), results);
        self.active.insert(id, Active::Running(admitting));
    }

    /// The admission of subscription `id`: once the schema admits it to a channel, it joins
    /// the group of `key` there, held until the admission run (its replay) has ended.
    fn admitting(&self, id: &str, key: String, request: &Request) -> Admitting {
        let member = Arc::new(Mutex::new(None));
        let slot = member.clone();
        let groups = self.gateway.groups.clone();
        let prefix = frames::delivery_prefix(self.dialect, id);
        let outbox = self.deliveries.outbox().clone();
        let (query, operation_name, variables) = (
            request.query.clone(),
            request.operation_name.clone(),
            request.variables.clone(),
        );
        let admission = Admission::new(move |channel_id| {
            let delivery_request = move || {
                let request = Request::new(query).variables(variables);
                match operation_name {
                    Some(name) => request.operation_name(name),
                    None => request,
                }
            };
            let handle = groups.join(key, channel_id, delivery_request, prefix, outbox);
            *slot.lock().expect("member slot poisoned") = Some((handle, channel_id.to_owned()));
            groups.ready(channel_id)
        });
        Admitting { admission, member }
    }

    /// Ends operation `id`, leaving its group if it joined one; false if there was none.
    fn stop(&mut self, id: &str) -> bool {
        self.running.remove(id);
        self.active.remove(id).is_some()
    }

    fn send_operation_error(&mut self, id: &str, errors: Vec<Value>) {
        match self.dialect {
            Dialect::TransportWs => self.send(Some(id), "error", Some(errors)),
            // subscriptions-transport-ws sends one error object.
            Dialect::Legacy => self.send(Some(id), "error", errors.into_iter().next()),
        }
    }

    fn on_result(&mut self, id: &str, result: Option<Response>) {
        match result {
            // An operation that failed before producing data (validation, permission, membership)
            // gets the protocol's `error` and ends; the connection stays open.
            Some(response)
                if response.data == async_graphql::Value::Null && !response.errors.is_empty() =>
            {
                let errors = response
                    .errors
                    .iter()
                    .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
                    .collect();
                self.send_operation_error(id, errors);
                self.stop(id);
            }
            Some(response) => {
                self.renew_from(&response.data);
                self.send(Some(id), self.dialect.data_type(), Some(&response))
            }
            // Admitted and replayed: from now on the group delivers.
            None => self.admitted(id),
        }
    }

    /// The admission run of `id` has ended: the member goes live (or the operation completes).
    fn admitted(&mut self, id: &str) {
        // Drop the finished run now rather than whenever the stream map next polls it.
        self.running.remove(id);
        match self.active.remove(id) {
            Some(Active::Running(Some(admitting))) => {
                let member = admitting
                    .member
                    .lock()
                    .expect("member slot poisoned")
                    .take();
                match member {
                    Some((member, channel_id)) => {
                        member.go_live(admitting.admission.take_replayed());
                        self.active.insert(
                            id.to_owned(),
                            Active::Live {
                                _member: member,
                                channel_id,
                            },
                        );
                    }
                    None => self.send(Some(id), "complete", None::<()>),
                }
            }
            _ => self.send(Some(id), "complete", None::<()>),
        }
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

fn parse_request(payload: Option<Value>) -> Option<async_graphql::Request> {
    serde_json::from_value::<async_graphql::Request>(payload?).ok()
}
