//! A histogram of durations with fixed buckets, built for the delivery path: observing is three
//! relaxed atomic additions, with no lock and no allocation, and one observation may stand for
//! many events (a group's event written to `n` members at once is observed once, `n` times).
//!
//! prometheus-client's own histogram takes a lock per observation; this one is registered with
//! the same registry through [`EncodeMetric`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds for latencies on this server's paths: 100 µs to 10 s.
pub const LATENCY_BOUNDS: &[Duration] = &[
    Duration::from_micros(100),
    Duration::from_micros(250),
    Duration::from_micros(500),
    Duration::from_millis(1),
    Duration::from_micros(2_500),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_millis(2_500),
    Duration::from_secs(5),
    Duration::from_secs(10),
];

/// A duration histogram; clones share their counts.
#[derive(Debug, Clone)]
pub struct Histogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Upper bounds in nanoseconds, ascending.
    bounds: Vec<u64>,
    /// One count per bound, and the last for everything above them (`+Inf`); not cumulative.
    buckets: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new(LATENCY_BOUNDS)
    }
}

impl Histogram {
    /// A histogram over `bounds` (ascending).
    pub fn new(bounds: &[Duration]) -> Self {
        let bounds: Vec<u64> = bounds.iter().map(|b| nanos(*b)).collect();
        let buckets = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            inner: Arc::new(Inner {
                bounds,
                buckets,
                sum_nanos: AtomicU64::new(0),
                count: AtomicU64::new(0),
            }),
        }
    }

    /// One observation of `took`.
    pub fn observe(&self, took: Duration) {
        self.observe_n(took, 1);
    }

    /// `n` observations of `took` at once.
    pub fn observe_n(&self, took: Duration, n: u64) {
        if n == 0 {
            return;
        }
        let took = nanos(took);
        let inner = &*self.inner;
        let bucket = inner.bounds.partition_point(|bound| *bound < took);
        inner.buckets[bucket].fetch_add(n, Ordering::Relaxed);
        inner
            .sum_nanos
            .fetch_add(took.saturating_mul(n), Ordering::Relaxed);
        inner.count.fetch_add(n, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.inner.count.load(Ordering::Relaxed)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let inner = &*self.inner;
        let mut buckets: Vec<(f64, u64)> = inner
            .bounds
            .iter()
            .zip(&inner.buckets)
            .map(|(bound, count)| (seconds(*bound), count.load(Ordering::Relaxed)))
            .collect();
        let above = inner.buckets[inner.bounds.len()].load(Ordering::Relaxed);
        buckets.push((f64::INFINITY, above));
        // The count is the buckets' sum, read now: a scrape racing an observation must not show
        // a count the buckets do not add up to.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = seconds(inner.sum_nanos.load(Ordering::Relaxed));
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[allow(clippy::cast_precision_loss)] // nanoseconds as f64 seconds: exact to 2^53 ns (104 days)
fn seconds(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_lands_in_the_first_bucket_at_or_above_it() {
        let h = Histogram::new(&[Duration::from_millis(1), Duration::from_millis(10)]);
        h.observe(Duration::from_millis(1)); // le 0.001
        h.observe_n(Duration::from_millis(5), 3); // le 0.01
        h.observe(Duration::from_secs(1)); // +Inf
        let counts: Vec<u64> = h
            .inner
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts, vec![1, 3, 1]);
        assert_eq!(h.count(), 5);
        assert_eq!(h.inner.sum_nanos.load(Ordering::Relaxed), 1_016_000_000);
    }
}
