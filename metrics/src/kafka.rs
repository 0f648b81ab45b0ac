//! What the Kafka tier counts: the producer, the relays, and a gateway's links to them.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::histogram::Histogram;
use crate::labels::{OutcomeLabel, PartitionLabel, QueryOutcome};
use crate::ByLabel;

/// `mmsub_kafka_produce_*`: each event published to the topic, acknowledged or not.
#[derive(Debug)]
pub struct KafkaMetrics {
    produced: ByLabel<Counter>,
    latency: Histogram,
}

impl KafkaMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
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

/// `mmsub_relay_*` (a relay) and `mmsub_gateway_relay_links` (a gateway).
#[derive(Debug)]
pub struct RelayMetrics {
    records: Counter,
    frames: Counter,
    rereads: Counter,
    catch_ups: Counter,
    gateway_links: Gauge,
    queued: Gauge,
    lag: Family<PartitionLabel, Gauge>,
    relay_links: Gauge,
}

impl RelayMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let records = counter(
            registry,
            "relay_records",
            "Records the relay consumed from its partitions and forwarded (to every gateway watching the channel, possibly none).",
        );
        let frames = counter(
            registry,
            "relay_gateway_frames",
            "Event frames queued to gateways: one per record and gateway watching its channel.",
        );
        let rereads = counter(
            registry,
            "relay_rereads",
            "Times a partition was read again from a missing offset (a record arrived before its predecessor).",
        );
        let catch_ups = counter(
            registry,
            "relay_catch_ups",
            "Catch-ups started: a partition read again, by a consumer of its own, for a gateway that missed part of it.",
        );
        let gateway_links = gauge(
            registry,
            "relay_gateway_links",
            "Gateways connected to this relay.",
        );
        let queued = gauge(
            registry,
            "relay_gateway_queue_frames",
            "Frames waiting in the gateways' queues of this relay, all links together (sampled every commit interval).",
        );
        let lag = Family::<PartitionLabel, Gauge>::default();
        registry.register(
            "relay_consumer_lag",
            "Records of each owned partition past the group's committed offset (librdkafka's statistics, every 5 s).",
            lag.clone(),
        );
        let relay_links = gauge(
            registry,
            "gateway_relay_links",
            "Relays this gateway is connected to.",
        );
        Self {
            records,
            frames,
            rereads,
            catch_ups,
            gateway_links,
            queued,
            lag,
            relay_links,
        }
    }

    /// A record was forwarded, as `frames` frames (one per gateway watching its channel).
    pub fn forwarded(&self, frames: u64) {
        self.records.inc();
        self.frames.inc_by(frames);
    }

    /// A partition is read again from a missing offset.
    pub fn reread(&self) {
        self.rereads.inc();
    }

    /// A catch-up started.
    pub fn catch_up(&self) {
        self.catch_ups.inc();
    }

    /// A gateway connected (`1`) or went (`-1`).
    pub fn gateway_links(&self, by: i64) {
        self.gateway_links.inc_by(by);
    }

    /// Frames waiting in the gateways' queues now.
    pub fn queued(&self, frames: u64) {
        self.queued.set(i64::try_from(frames).unwrap_or(i64::MAX));
    }

    /// The partitions owned now and their lag; the others' series go.
    pub fn lag(&self, partitions: &[(i32, i64)]) {
        self.lag.clear();
        for (partition, lag) in partitions {
            self.lag
                .get_or_create(&PartitionLabel {
                    partition: *partition,
                })
                .set(*lag);
        }
    }

    /// This gateway's links to relays connected now.
    pub fn relay_links(&self, connected: usize) {
        self.relay_links
            .set(i64::try_from(connected).unwrap_or(i64::MAX));
    }
}
