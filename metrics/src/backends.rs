//! What the chat backends behind the API count: Mattermost's REST calls and the ScyllaDB
//! history tier.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};

use crate::histogram::Histogram;
use crate::labels::{
    HistoryRead, HistoryReadLabel, MattermostLabel, MattermostRouteLabel, MattermostStatus,
    OutcomeLabel, QueryOutcome,
};
use crate::ByLabel;

/// `mmsub_mattermost_*`: every call to Mattermost's REST API, by route template.
#[derive(Debug)]
pub struct MattermostMetrics {
    requests: Family<MattermostLabel, Counter>,
    latency: Family<MattermostRouteLabel, Histogram>,
}

impl MattermostMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
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
    pub(crate) fn register(registry: &mut Registry) -> Self {
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
