//! The Kafka bus: every event is produced to one topic, keyed by channel id, so a channel's
//! events share a partition and the partition's order is the channel's order.
//!
//! The producer is idempotent with `acks=all`, and [`KafkaBus::publish`] resolves only when the
//! broker acknowledged the record: an API node answers a mutation after that, so no
//! acknowledged message is ever lost. The topic is created at start-up when missing, with the
//! configured partition count, instead of relying on broker auto-creation.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use mmsub_events::bus::{Bus, BusError};
use mmsub_events::event::MessageEvent;
use mmsub_metrics::labels::QueryOutcome;
use mmsub_metrics::Metrics;

/// Where the Kafka cluster is and how the topic looks; each has a flag in the `mmsub` binary.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `bootstrap.servers`: `host:port[,host:port…]`.
    pub brokers: String,
    /// The topic events are published to, partitioned by channel.
    pub topic: String,
    /// Partitions of a topic this node creates (an existing topic keeps its own).
    pub partitions: i32,
    /// Replicas of each partition of a topic this node creates.
    pub replication_factor: i32,
    /// The relays' consumer group.
    pub group_id: String,
    /// How long a publish may wait for the broker's acknowledgement before it fails.
    pub publish_timeout: Duration,
    /// `linger.ms`: how long the producer gathers records into one request.
    pub linger: Duration,
    /// `fetch.wait.max.ms`: how long the broker may hold a relay's fetch when there is nothing.
    pub fetch_wait_max: Duration,
    /// `session.timeout.ms`: how soon a silent relay's partitions move to the others.
    pub session_timeout: Duration,
    /// `auto.offset.reset` for a consumer group without committed offsets: `earliest` never
    /// skips a message; on a new group over a topic with history it forwards that history.
    pub offset_reset: String,
    /// librdkafka's `debug` contexts (`cgrp,fetch,…`), logged at debug level under the
    /// `librdkafka` target; empty for none.
    pub debug: String,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic: "mmsub.messages".into(),
            partitions: 12,
            replication_factor: 1,
            group_id: "mmsub-relay".into(),
            publish_timeout: Duration::from_secs(10),
            linger: Duration::from_millis(5),
            fetch_wait_max: Duration::from_millis(10),
            session_timeout: Duration::from_secs(6),
            offset_reset: "earliest".into(),
            debug: String::new(),
        }
    }
}

impl KafkaSettings {
    /// Settings every client of this cluster shares.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "mmsub")
            .set("broker.address.family", "v4");
        if !self.debug.is_empty() {
            config.set("debug", &self.debug);
        }
        config
    }

    /// Creates the topic unless it exists.
    pub async fn ensure_topic(&self) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
        let topic = NewTopic::new(
            &self.topic,
            self.partitions,
            TopicReplication::Fixed(self.replication_factor),
        );
        let options =
            AdminOptions::new().operation_timeout(Some(Timeout::After(self.publish_timeout)));
        for result in admin.create_topics([&topic], &options).await? {
            match result {
                Ok(_) => {
                    tracing::info!(topic = %self.topic, partitions = self.partitions, "created the Kafka topic");
                }
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => anyhow::bail!("creating Kafka topic {name} failed: {code}"),
            }
        }
        Ok(())
    }
}

/// The record header that carries the event's request id (`MessageEvent::request_id`).
pub const REQUEST_ID_HEADER: &str = "request-id";

/// Publishes to the topic; see the module documentation.
///
/// An idempotent producer can fail for good: after a broker outage librdkafka may raise a
/// *fatal* error (the broker fenced its producer id, or a sequence gap it cannot repair), and
/// from then on every record fails at once. The bus then replaces the producer with a new one
/// (a new producer id), so an API node serves again when the broker does, with no restart. The
/// records the old producer held failed, and their mutations answered an error.
pub struct KafkaBus {
    producer: RwLock<Arc<FutureProducer>>,
    config: ClientConfig,
    topic: String,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl KafkaBus {
    /// Connects the producer and makes sure the topic exists; each produce is counted in
    /// `metrics`.
    pub async fn connect(settings: &KafkaSettings, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        settings.ensure_topic().await?;
        let mut config = settings.client_config();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", settings.linger.as_millis().to_string())
            .set(
                "message.timeout.ms",
                settings.publish_timeout.as_millis().to_string(),
            );
        let producer = config.create()?;
        Ok(Self {
            producer: RwLock::new(Arc::new(producer)),
            config,
            topic: settings.topic.clone(),
            timeout: settings.publish_timeout,
            metrics,
        })
    }

    fn producer(&self) -> Arc<FutureProducer> {
        self.producer
            .read()
            .expect("producer lock poisoned")
            .clone()
    }

    /// Replaces `failed` if `error` says its producer id is no longer usable (a fatal error,
    /// or the broker fenced it: tansu answers `ProducerFenced` to every later record after
    /// requests timed out during an outage) and no other publish replaced it already.
    fn renew_if_fenced(&self, failed: &Arc<FutureProducer>, error: &KafkaError) {
        let (code, reason) = match (failed.client().fatal_error(), error.rdkafka_error_code()) {
            (Some(fatal), _) => fatal,
            (
                None,
                Some(
                    code @ (RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
                    | RDKafkaErrorCode::UnknownProducerId
                    | RDKafkaErrorCode::OutOfOrderSequenceNumber
                    | RDKafkaErrorCode::InvalidProducerIdMapping),
                ),
            ) => (code, error.to_string()),
            _ => return,
        };
        let mut slot = self.producer.write().expect("producer lock poisoned");
        if !Arc::ptr_eq(&slot, failed) {
            return;
        }
        match self.config.create::<FutureProducer>() {
            Ok(renewed) => {
                tracing::warn!(?code, %reason, "the Kafka producer failed for good: replaced it with a new one");
                let old = std::mem::replace(&mut *slot, Arc::new(renewed));
                // Destroying a librdkafka client joins its threads: not on the runtime.
                tokio::task::spawn_blocking(move || drop(old));
            }
            Err(e) => {
                tracing::error!(?code, %reason, error = %e, "the Kafka producer failed for good and a new one could not be made; the next failed publish tries again");
            }
        }
    }
}

impl Bus for KafkaBus {
    fn publish(&self, event: MessageEvent) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            let payload = event.encode();
            let mut record = FutureRecord::to(&self.topic)
                .key(event.channel_id.as_bytes())
                .payload(&payload);
            if let Some(id) = &event.request_id {
                // For the relay's logs, which forward the payload without reading it.
                record = record.headers(OwnedHeaders::new().insert(Header {
                    key: REQUEST_ID_HEADER,
                    value: Some(id.as_bytes()),
                }));
            }
            let producer = self.producer();
            let started = Instant::now();
            let sent = producer.send(record, Timeout::After(self.timeout)).await;
            let outcome = match sent {
                Ok(_) => QueryOutcome::Ok,
                Err(_) => QueryOutcome::Error,
            };
            self.metrics.kafka.produced(outcome, started.elapsed());
            match sent {
                Ok(delivery) => {
                    tracing::debug!(channel = %event.channel_name, post = %event.post.id, request_id = event.request_id.as_deref(), partition = delivery.partition, offset = delivery.offset, "published");
                    Ok(())
                }
                Err((e, _)) => {
                    self.renew_if_fenced(&producer, &e);
                    Err(BusError::Unavailable(format!(
                        "Kafka did not acknowledge the message: {e}"
                    )))
                }
            }
        })
    }
}
