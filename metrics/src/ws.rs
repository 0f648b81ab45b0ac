//! What the WebSocket gateway counts: connections, subscriptions, groups, deliveries, closes.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::histogram::Histogram;
use crate::labels::{CloseLabel, Protocol, ProtocolLabel};
use crate::ByLabel;

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
    pub(crate) fn register(registry: &mut Registry) -> Self {
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
