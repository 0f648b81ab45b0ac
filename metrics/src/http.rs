//! What the HTTP front and GraphQL over HTTP count.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};

use crate::histogram::Histogram;
use crate::labels::{
    ErrorKind, ErrorKindLabel, Limit, LimitLabel, Operation, OperationLabel, Route, RouteLabel,
};
use crate::ByLabel;

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
    pub(crate) fn register(registry: &mut Registry) -> Self {
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
