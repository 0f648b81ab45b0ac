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

mod backends;
pub mod histogram;
mod http;
mod kafka;
pub mod labels;
pub mod process;
mod ws;

use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::sync::Arc;

pub use backends::{HistoryMetrics, MattermostMetrics};
pub use histogram::Histogram;
pub use http::HttpMetrics;
pub use kafka::{KafkaMetrics, RelayMetrics};
pub use ws::WsMetrics;

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
    /// The relay tier: records forwarded, gaps read again, gateway links, lag; and, on a
    /// gateway, its links to the relays.
    pub relay: RelayMetrics,
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
        let relay = RelayMetrics::register(&mut registry);
        registry.register_collector(Box::new(process::ProcessCollector));
        Self {
            registry,
            http,
            ws,
            mattermost,
            history,
            kafka,
            relay,
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
pub(crate) struct ByLabel<M> {
    handles: Vec<M>,
}

impl<M: Clone> ByLabel<M> {
    pub(crate) fn new<L: Copy, S>(family: &Family<S, M>, all: &[L], label: impl Fn(L) -> S) -> Self
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

    pub(crate) fn get(&self, index: usize) -> &M {
        &self.handles[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::{Limit, Operation};
    use std::time::Duration;

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
