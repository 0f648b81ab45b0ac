//! What an mmsub node counts, for Prometheus.
//!
//! One [`Metrics`] per node (not a process-wide global: tests run several nodes in one process
//! and check exact increments), created by the role assembly and handed to each part. Every
//! name has the `mmsub_` prefix and base units; counters end in `_total`. Labels are the closed
//! sets of [`labels`], so no client can grow a scrape.
//!
//! Why `prometheus-client`: it is the Prometheus project's own Rust client, label sets are
//! typed (an enum label cannot carry a user's string), it needs no global recorder, and it
//! encodes the Prometheus text format. The one metric it lacks is a histogram without a lock,
//! which the delivery path needs: [`histogram::Histogram`].
//!
//! The hot paths only touch handles made at start-up: a counter or gauge is one atomic add,
//! a histogram observation three; no lock, no lookup, no allocation.

pub mod histogram;
pub mod labels;
pub mod process;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

pub use histogram::Histogram;
use labels::{
    CloseLabel, ErrorKind, ErrorKindLabel, HistoryRead, HistoryReadLabel, Limit, LimitLabel,
    MattermostLabel, MattermostRouteLabel, MattermostStatus, Operation, OperationLabel,
    OutcomeLabel, Protocol, ProtocolLabel, QueryOutcome, Route, RouteLabel,
};

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A node's registry and the handles its parts count with.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// HTTP and GraphQL over HTTP (API nodes, `serve`).
    pub http: HttpMetrics,
    /// WebSocket connections, subscriptions and deliveries (gateways, `serve`).
    pub ws: WsMetrics,
    /// Calls to Mattermost's REST API.
    pub mattermost: MattermostMetrics,
    /// The history tier (ScyllaDB).
    pub history: HistoryMetrics,
    /// The Kafka producer (API nodes, the ingest, `serve` on Kafka).
    pub kafka: KafkaMetrics,
}

impl Default for Metrics {
    /// Every metric registered, each series of a closed label set created at 0.
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mmsub");
        let http = HttpMetrics::register(&mut registry);
        let ws = WsMetrics::register(&mut registry);
        let mattermost = MattermostMetrics::register(&mut registry);
        let history = HistoryMetrics::register(&mut registry);
        let kafka = KafkaMetrics::register(&mut registry);
        registry.register_collector(Box::new(process::ProcessCollector));
        Self {
            registry,
            http,
            ws,
            mattermost,
            history,
            kafka,
        }
    }
}

impl Metrics {
    /// A node's metrics, shared by its parts.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The exposition, in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// One counter per value of a closed label set, made at start-up and indexed by the value.
#[derive(Debug)]
struct ByLabel<M> {
    handles: Vec<M>,
}

impl<M: Clone> ByLabel<M> {
    fn new<L: Copy, S>(family: &Family<S, M>, all: &[L], label: impl Fn(L) -> S) -> Self
    where
        S: Clone + std::hash::Hash + Eq,
        M: Default,
    {
        Self {
            handles: all
                .iter()
                .map(|value| family.get_or_create(&label(*value)).clone())
                .collect(),
        }
    }

    fn get(&self, index: usize) -> &M {
        &self.handles[index]
    }
}

/// `mmsub_http_*`, `mmsub_graphql_*`, `mmsub_throttled_total`.
#[derive(Debug)]
pub struct HttpMetrics {
    requests: ByLabel<Counter>,
    graphql: ByLabel<Counter>,
    graphql_latency: ByLabel<Histogram>,
    errors: ByLabel<Counter>,
    throttled: ByLabel<Counter>,
}

impl HttpMetrics {
    fn register(registry: &mut Registry) -> Self {
        let requests = Family::<RouteLabel, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests, by route template.",
            requests.clone(),
        );
        let graphql = Family::<OperationLabel, Counter>::default();
        registry.register(
            "graphql_requests",
            "GraphQL requests over HTTP, by the contract's root field they execute.",
            graphql.clone(),
        );
        let latency = Family::<OperationLabel, Histogram>::default();
        registry.register_with_unit(
            "graphql_request_duration",
            "Time from the request's body read to its answer serialized, by root field.",
            Unit::Seconds,
            latency.clone(),
        );
        let errors = Family::<ErrorKindLabel, Counter>::default();
        registry.register(
            "graphql_errors",
            "GraphQL requests over HTTP that failed, by kind.",
            errors.clone(),
        );
        let throttled = Family::<LimitLabel, Counter>::default();
        registry.register(
            "throttled",
            "Requests refused by a throttle (logins, sign-ups, messages), by throttle.",
            throttled.clone(),
        );
        let operation = |operation| OperationLabel { operation };
        Self {
            requests: ByLabel::new(&requests, Route::ALL, |route| RouteLabel { route }),
            graphql: ByLabel::new(&graphql, Operation::ALL, operation),
            graphql_latency: ByLabel::new(&latency, Operation::ALL, operation),
            errors: ByLabel::new(&errors, ErrorKind::ALL, |kind| ErrorKindLabel { kind }),
            throttled: ByLabel::new(&throttled, Limit::ALL, |limit| LimitLabel { limit }),
        }
    }

    /// An HTTP request reached `route`.
    pub fn request(&self, route: Route) {
        self.requests.get(route as usize).inc();
    }

    /// A GraphQL request executed `operation` in `took`.
    pub fn graphql(&self, operation: Operation, took: Duration) {
        self.graphql.get(operation as usize).inc();
        self.graphql_latency.get(operation as usize).observe(took);
    }

    /// A GraphQL request failed.
    pub fn error(&self, kind: ErrorKind) {
        self.errors.get(kind as usize).inc();
    }

    /// A throttle refused a request.
    pub fn throttled(&self, limit: Limit) {
        self.throttled.get(limit as usize).inc();
    }
}

/// `mmsub_ws_*`, `mmsub_subscription_groups`, `mmsub_deliveries_total`,
/// `mmsub_delivery_latency_seconds`.
#[derive(Debug)]
pub struct WsMetrics {
    connections: ByLabel<Gauge>,
    subscriptions: ByLabel<Gauge>,
    groups: Gauge,
    deliveries: Counter,
    latency: Histogram,
    closes: Family<CloseLabel, Counter>,
}

impl WsMetrics {
    fn register(registry: &mut Registry) -> Self {
        let connections = Family::<ProtocolLabel, Gauge>::default();
        registry.register(
            "ws_connections",
            "Open WebSocket connections, by subprotocol.",
            connections.clone(),
        );
        let subscriptions = Family::<ProtocolLabel, Gauge>::default();
        registry.register(
            "ws_subscriptions",
            "Operations running on WebSocket connections (subscriptions; a query or mutation sent over the socket while it runs), by subprotocol.",
            subscriptions.clone(),
        );
        let groups = Gauge::default();
        registry.register(
            "subscription_groups",
            "Subscription groups running: payloads rendered once per event each.",
            groups.clone(),
        );
        let deliveries = Counter::default();
        registry.register(
            "deliveries",
            "Subscription events handed to subscribers' connections: written to the socket, or queued within the connection's send budget.",
            deliveries.clone(),
        );
        let latency = Histogram::default();
        registry.register_with_unit(
            "delivery_latency",
            "Time from an event's arrival at this node's hub to its frame written to a subscriber's socket (or queued behind what that connection has not taken yet).",
            Unit::Seconds,
            latency.clone(),
        );
        let closes = Family::<CloseLabel, Counter>::default();
        registry.register(
            "ws_closes",
            "WebSocket connections this server closed, by close code.",
            closes.clone(),
        );
        let protocol = |protocol| ProtocolLabel { protocol };
        Self {
            connections: ByLabel::new(&connections, Protocol::ALL, protocol),
            subscriptions: ByLabel::new(&subscriptions, Protocol::ALL, protocol),
            groups,
            deliveries,
            latency,
            closes,
        }
    }

    /// A connection opened (`1`) or closed (`-1`).
    pub fn connections(&self, protocol: Protocol, by: i64) {
        self.connections.get(protocol as usize).inc_by(by);
    }

    /// A subscription started (`1`) or ended (`-1`).
    pub fn subscriptions(&self, protocol: Protocol, by: i64) {
        self.subscriptions.get(protocol as usize).inc_by(by);
    }

    /// A group started (`1`) or stopped (`-1`).
    pub fn groups(&self, by: i64) {
        self.groups.inc_by(by);
    }

    /// `n` subscribers' connections took an event that arrived `took` ago.
    pub fn delivered(&self, n: u64, took: Duration) {
        if n > 0 {
            self.deliveries.inc_by(n);
            self.latency.observe_n(took, n);
        }
    }

    /// This server closed a connection with `code`, one of the codes it sends (a closed set,
    /// so the label stays bounded; never a code a client chose).
    pub fn closed(&self, code: u16) {
        self.closes
            .get_or_create(&CloseLabel {
                code: code.to_string(),
            })
            .inc();
    }

    /// Creates the series of `codes` at 0, so that a scrape shows them before the first close.
    pub fn close_codes(&self, codes: &[u16]) {
        for code in codes {
            drop(self.closes.get_or_create(&CloseLabel {
                code: code.to_string(),
            }));
        }
    }
}

/// `mmsub_mattermost_*`: every call to Mattermost's REST API, by route template.
#[derive(Debug)]
pub struct MattermostMetrics {
    requests: Family<MattermostLabel, Counter>,
    latency: Family<MattermostRouteLabel, Histogram>,
}

impl MattermostMetrics {
    fn register(registry: &mut Registry) -> Self {
        let requests = Family::<MattermostLabel, Counter>::default();
        registry.register(
            "mattermost_requests",
            "Calls to Mattermost's REST API, by method, route template and how they ended.",
            requests.clone(),
        );
        let latency = Family::<MattermostRouteLabel, Histogram>::default();
        registry.register_with_unit(
            "mattermost_request_duration",
            "Time of a call to Mattermost, sent to answered (or failed), by route template.",
            Unit::Seconds,
            latency.clone(),
        );
        Self { requests, latency }
    }

    /// A call of `method` to `route` (a template, see [`MattermostLabel`]) ended as `status`
    /// after `took`. Not a hot path: one lookup per call to another server.
    pub fn answered(
        &self,
        method: &'static str,
        route: &str,
        status: MattermostStatus,
        took: Duration,
    ) {
        self.requests
            .get_or_create(&MattermostLabel {
                method,
                route: route.to_owned(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&MattermostRouteLabel {
                route: route.to_owned(),
            })
            .observe(took);
    }
}

/// `mmsub_kafka_produce_*`: each event published to the topic, acknowledged or not.
#[derive(Debug)]
pub struct KafkaMetrics {
    produced: ByLabel<Counter>,
    latency: Histogram,
}

impl KafkaMetrics {
    fn register(registry: &mut Registry) -> Self {
        let produced = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "kafka_produce",
            "Events produced to the topic, by outcome: ok once the broker acknowledged it (acks=all), error when it did not within the publish timeout.",
            produced.clone(),
        );
        let latency = Histogram::default();
        registry.register_with_unit(
            "kafka_produce_duration",
            "Time from producing an event to the broker's acknowledgement (or the failure).",
            Unit::Seconds,
            latency.clone(),
        );
        Self {
            produced: ByLabel::new(&produced, QueryOutcome::ALL, |outcome| OutcomeLabel {
                outcome,
            }),
            latency,
        }
    }

    /// A produce ended as `outcome` after `took`.
    pub fn produced(&self, outcome: QueryOutcome, took: Duration) {
        self.produced.get(outcome as usize).inc();
        self.latency.observe(took);
    }
}

/// `mmsub_history_*`: the ScyllaDB tier's queries, and where its reads were served from.
#[derive(Debug)]
pub struct HistoryMetrics {
    queries: ByLabel<Counter>,
    latency: Histogram,
    hits: ByLabel<Counter>,
    misses: ByLabel<Counter>,
    fallbacks: ByLabel<Counter>,
}

impl HistoryMetrics {
    fn register(registry: &mut Registry) -> Self {
        let queries = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "history_queries",
            "Statements executed on ScyllaDB, by outcome (an error includes a timeout).",
            queries.clone(),
        );
        let latency = Histogram::default();
        registry.register_with_unit(
            "history_query_duration",
            "Time of a statement on ScyllaDB.",
            Unit::Seconds,
            latency.clone(),
        );
        let read = |read| HistoryReadLabel { read };
        let family = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<HistoryReadLabel, Counter>::default();
            registry.register(name, help, family.clone());
            ByLabel::new(&family, HistoryRead::ALL, read)
        };
        let hits = family(
            registry,
            "history_cache_hits",
            "Reads served from ScyllaDB (a warm channel), by read.",
        );
        let misses = family(
            registry,
            "history_cache_misses",
            "Reads of a cold channel, served by Mattermost (and filling ScyllaDB), by read.",
        );
        let fallbacks = family(
            registry,
            "history_fallbacks",
            "Reads served by Mattermost because ScyllaDB failed, timed out or is not connected, by read.",
        );
        Self {
            queries: ByLabel::new(&queries, QueryOutcome::ALL, |outcome| OutcomeLabel {
                outcome,
            }),
            latency,
            hits,
            misses,
            fallbacks,
        }
    }

    /// A statement ended as `outcome` after `took`.
    pub fn query(&self, outcome: QueryOutcome, took: Duration) {
        self.queries.get(outcome as usize).inc();
        self.latency.observe(took);
    }

    /// `n` reads were served from the store.
    pub fn hits(&self, read: HistoryRead, n: u64) {
        self.hits.get(read as usize).inc_by(n);
    }

    /// `n` reads were of cold channels.
    pub fn misses(&self, read: HistoryRead, n: u64) {
        self.misses.get(read as usize).inc_by(n);
    }

    /// A read fell back to Mattermost.
    pub fn fallback(&self, read: HistoryRead) {
        self.fallbacks.get(read as usize).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_series_with_the_prefix_and_units() {
        let metrics = Metrics::new();
        metrics.http.throttled(Limit::LoginPerUser);
        metrics
            .http
            .graphql(Operation::TextMessageSend, Duration::from_millis(3));
        metrics.ws.delivered(5, Duration::from_millis(2));
        metrics.ws.closed(1013);
        let text = metrics.encode();
        for line in [
            "mmsub_throttled_total{limit=\"login_per_user\"} 1",
            "mmsub_throttled_total{limit=\"send_per_user\"} 0",
            "mmsub_graphql_requests_total{operation=\"textMessageSend\"} 1",
            "mmsub_graphql_request_duration_seconds_count{operation=\"textMessageSend\"} 1",
            "mmsub_deliveries_total 5",
            "mmsub_delivery_latency_seconds_bucket{le=\"0.0025\"} 5",
            "mmsub_delivery_latency_seconds_count 5",
            "mmsub_ws_closes_total{code=\"1013\"} 1",
            "mmsub_ws_connections{protocol=\"graphql-transport-ws\"} 0",
            "# TYPE mmsub_process_cpu_seconds_total counter",
            "# TYPE mmsub_process_resident_memory_bytes gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
    }

    #[test]
    fn root_fields_outside_the_contract_are_other() {
        assert_eq!(
            Operation::of_field("textMessageSend"),
            Operation::TextMessageSend
        );
        assert_eq!(Operation::of_field("__schema"), Operation::Other);
        assert_eq!(Operation::of_field("other"), Operation::Other);
    }
}
