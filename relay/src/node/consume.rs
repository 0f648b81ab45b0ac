//! The consume loop and the rebalance hooks: records become `Event` frames for the gateways
//! watching their channel; what moved partitions leave behind is committed first.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::catch_up;
use super::rereads::{read_again_from, Next, Rereads};
use super::{queue_or_let_go, RelaySettings, State};
use crate::kafka::{KafkaSettings, REQUEST_ID_HEADER};
use crate::wire::WireFrame;

/// Commits the done offsets of partitions being revoked, before they move.
struct RelayContext {
    state: Arc<State>,
    topic: String,
}

impl ClientContext for RelayContext {
    /// librdkafka's statistics (`statistics.interval.ms`): each owned partition's lag behind
    /// the high watermark from the group's committed offset.
    fn stats(&self, statistics: Statistics) {
        let lags: Vec<(i32, i64)> = statistics
            .topics
            .get(&self.topic)
            .map(|topic| {
                topic
                    .partitions
                    .values()
                    .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
                    .map(|p| (p.partition, p.consumer_lag))
                    .collect()
            })
            .unwrap_or_default();
        self.state.metrics.relay.lag(&lags);
    }
}

impl ConsumerContext for RelayContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let revoked: HashSet<i32> = list
                .elements()
                .iter()
                .map(rdkafka::topic_partition_list::TopicPartitionListElem::partition)
                .collect();
            // Their catch-ups are the next owner's.
            for link in self
                .state
                .gateways
                .lock()
                .expect("gateways lock poisoned")
                .links
                .values_mut()
            {
                link.catching_up.retain(|p, _| !revoked.contains(p));
            }
            let mut progress = self.state.progress.lock().expect("progress lock poisoned");
            let offsets = progress.take_commits(Some(&revoked));
            progress.forget(&revoked);
            drop(progress);
            self.state.status.partitions.fetch_sub(
                revoked.len().min(self.state.status.partitions()),
                Ordering::Relaxed,
            );
            if let Err(e) = commit(consumer, &self.topic, &offsets, CommitMode::Sync) {
                tracing::warn!(error = %e, "committing revoked partitions failed; a successor re-delivers");
            }
            tracing::info!(partitions = ?revoked, committed = ?offsets, "partitions revoked");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let assigned: Vec<i32> = list
                .elements()
                .iter()
                .map(rdkafka::topic_partition_list::TopicPartitionListElem::partition)
                .collect();
            self.state
                .status
                .partitions
                .fetch_add(assigned.len(), Ordering::Relaxed);
            // Where each partition resumes, so that a first record past it is noticed too.
            let resume: Vec<(i32, i64)> = consumer
                .committed_offsets((*list).clone(), Duration::from_secs(5))
                .map(|committed| {
                    committed
                        .elements()
                        .iter()
                        .filter_map(|e| match e.offset() {
                            Offset::Offset(offset) => Some((e.partition(), offset)),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            self.state
                .progress
                .lock()
                .expect("progress lock poisoned")
                .resume(&resume);
            self.state
                .assigned
                .lock()
                .expect("assigned lock poisoned")
                .extend(&assigned);
            self.state.status.assigned.store(true, Ordering::Relaxed);
            tracing::info!(partitions = ?assigned, ?resume, "partitions assigned");
        }
    }
}

fn commit<C: Consumer<X>, X: ConsumerContext>(
    consumer: &C,
    topic: &str,
    offsets: &[(i32, i64)],
    mode: CommitMode,
) -> rdkafka::error::KafkaResult<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut list = TopicPartitionList::new();
    for (partition, offset) in offsets {
        list.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    consumer.commit(&list, mode)
}

/// How often librdkafka reports the partitions' lag (`mmsub_relay_consumer_lag`).
const LAG_STATISTICS_EVERY: Duration = Duration::from_secs(5);

/// The group consumer's `socket.timeout.ms`: the session timeout (a request stuck longer than
/// the session would cost the membership anyway), but at least a second past a fetch's wait.
fn socket_timeout(kafka: &KafkaSettings) -> Duration {
    kafka
        .session_timeout
        .max(kafka.fetch_wait_max + Duration::from_secs(1))
}

pub(super) async fn consume(
    kafka: KafkaSettings,
    settings: RelaySettings,
    state: Arc<State>,
    mut replay_requests: mpsc::Receiver<(u64, u16)>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    tokio::select! {
        () = shutdown.cancelled() => return Ok(()),
        () = tokio::time::sleep(settings.join_delay) => {}
    }
    let context = RelayContext {
        state: state.clone(),
        topic: kafka.topic.clone(),
    };
    let consumer: Arc<StreamConsumer<RelayContext>> = Arc::new(
        kafka
            .client_config()
            .set("group.id", &kafka.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", &kafka.offset_reset)
            .set(
                "fetch.wait.max.ms",
                kafka.fetch_wait_max.as_millis().to_string(),
            )
            .set(
                "session.timeout.ms",
                kafka.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (kafka.session_timeout.as_millis() / 4).max(100).to_string(),
            )
            // A request to a broker that stopped answering (a frozen or lost broker) fails
            // after this, not librdkafka's 60 s: a commit sent to it queues the group's
            // heartbeats behind it, and a minute of that leaves the group without members.
            // Never below a fetch's wait, which the broker may hold that long.
            .set(
                "socket.timeout.ms",
                socket_timeout(&kafka).as_millis().to_string(),
            )
            .set("partition.assignment.strategy", "range")
            .set(
                "statistics.interval.ms",
                LAG_STATISTICS_EVERY.as_millis().to_string(),
            )
            .create_with_context(context)?,
    );
    consumer.subscribe(&[&kafka.topic])?;
    tracing::info!(topic = %kafka.topic, group = %kafka.group_id, "relay joined the consumer group");

    let committer = {
        let (consumer, state, topic) = (consumer.clone(), state.clone(), kafka.topic.clone());
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(settings.commit_interval);
            loop {
                let stopping = tokio::select! {
                    () = shutdown.cancelled() => true,
                    _ = tick.tick() => false,
                };
                let offsets = state
                    .progress
                    .lock()
                    .expect("progress lock poisoned")
                    .take_commits(None);
                let mode = if stopping {
                    CommitMode::Sync
                } else {
                    CommitMode::Async
                };
                if let Err(e) = commit(&*consumer, &topic, &offsets, mode) {
                    tracing::debug!(error = %e, "commit failed; retried with the next one");
                }
                if stopping {
                    return;
                }
            }
        })
    };

    let mut rereads = Rereads::default();
    let mut marks = tokio::time::interval(settings.commit_interval);
    // Catch-ups run beside this loop, each with a consumer of its own.
    let start = |plans: Vec<catch_up::Plan>| {
        for plan in plans {
            tokio::spawn(catch_up::catch_up(
                kafka.clone(),
                settings.clone(),
                state.clone(),
                plan,
                shutdown.child_token(),
            ));
        }
    };
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => break,
            Some((gateway, version)) = replay_requests.recv() => {
                // Marks start only now, after the catch-up is planned: a mark sent before it
                // would tell the gateway it has what the catch-up is about to send.
                // The hold ends here too, in the loop that forwards: no live event reaches
                // the gateway between its hello and the catch-up that answers it.
                state.with_link(gateway, |link| {
                    link.version = version;
                    link.release();
                });
                start(catch_up::plan(&state, Some(gateway), None));
                continue;
            }
            _ = marks.tick() => {
                start(catch_up_assigned(&state));
                send_marks(&state);
                continue;
            }
            message = consumer.recv() => message,
        };
        start(catch_up_assigned(&state));
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(error = %e, "Kafka consumer error");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (partition, offset) = (message.partition(), message.offset());
        let expected = state
            .progress
            .lock()
            .expect("progress lock poisoned")
            .expected(partition);
        match rereads.next(partition, offset, expected) {
            Next::AlreadyForwarded => {
                tracing::debug!(partition, offset, "already forwarded: dropped");
                continue;
            }
            Next::ReadAgain { from, attempt } => {
                state.metrics.relay.reread();
                tracing::warn!(
                    partition,
                    offset,
                    expected = from,
                    attempt,
                    "a record arrived before the one preceding it: reading the partition again from the missing offset"
                );
                drop(message);
                read_again_from(&*consumer, &kafka.topic, partition, from).await;
                continue;
            }
            Next::Forward => {}
        }
        let Some(channel) = message.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            tracing::warn!(
                partition,
                offset,
                "a record without a channel key was skipped"
            );
            state
                .progress
                .lock()
                .expect("progress lock poisoned")
                .forwarded(partition, offset, &[]);
            continue;
        };
        let payload = bytes::Bytes::copy_from_slice(message.payload().unwrap_or_default());
        // Both locks at once (gateways first, as in `disconnect`): a gateway that disconnects
        // is either not a target or settles what it owes.
        let targets = {
            let mut gateways = state.gateways.lock().expect("gateways lock poisoned");
            let targets = gateways.targets(channel, partition, offset);
            let ids: Vec<u64> = targets.iter().map(|(id, _)| *id).collect();
            tracing::debug!(partition, offset, channel, request_id = request_id(&message), gateways = ?ids, "forwarding");
            state
                .progress
                .lock()
                .expect("progress lock poisoned")
                .forwarded(partition, offset, &ids);
            targets
        };
        state.metrics.relay.forwarded(targets.len() as u64);
        let event = (partition, offset, payload);
        send_event(&state, &settings, targets, event).await;
    }
    let _ = committer.await;
    // The last reference: closing the consumer revokes (committing what is done) and leaves
    // the group, so the partitions move now rather than after the session timeout.
    drop(consumer);
    tracing::info!("relay committed and left the consumer group");
    Ok(())
}

/// The record's request id header (`KafkaBus` sets it), for the log line that forwards it.
fn request_id(message: &impl Message) -> Option<&str> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == REQUEST_ID_HEADER)
        .and_then(|h| std::str::from_utf8(h.value?).ok())
}

/// Queues one event to each target; a gateway whose queue stays full past the forward
/// timeout is disconnected (when it comes back it is sent what it missed).
async fn send_event(
    state: &State,
    settings: &RelaySettings,
    targets: Vec<(u64, mpsc::Sender<WireFrame>)>,
    (partition, offset, payload): (i32, i64, bytes::Bytes),
) {
    for (id, queue) in targets {
        let frame = WireFrame::Event {
            partition,
            offset,
            payload: payload.clone(),
        };
        queue_or_let_go(state, settings, id, &queue, frame).await;
    }
}

/// Partitions assigned since the last look: a previous owner may have committed past what a
/// gateway had (it settles a gone gateway's records), so those gateways are caught up on the
/// partition from their mark. Runs before any record or mark of a new assignment.
fn catch_up_assigned(state: &State) -> Vec<catch_up::Plan> {
    let assigned = std::mem::take(&mut *state.assigned.lock().expect("assigned lock poisoned"));
    if assigned.is_empty() {
        return Vec::new();
    }
    let assigned: HashSet<i32> = assigned.into_iter().collect();
    catch_up::plan(state, None, Some(&assigned))
}

/// Queues a `Sent` mark to every version 2 gateway for each partition that moved on since its
/// last mark, except where a catch-up still owes it part of the partition. The consume loop
/// calls this between records, so every event a mark covers was queued before it.
fn send_marks(state: &State) {
    let positions = state
        .progress
        .lock()
        .expect("progress lock poisoned")
        .positions();
    let mut gateways = state.gateways.lock().expect("gateways lock poisoned");
    let queued: usize = gateways
        .links
        .values()
        .map(|link| link.queue.max_capacity() - link.queue.capacity())
        .sum();
    state.metrics.relay.queued(queued as u64);
    for link in gateways.links.values_mut() {
        if link.version < 2 {
            continue;
        }
        for (partition, next) in &positions {
            let offset = next - 1;
            if link.catching_up.contains_key(partition)
                || link.marked.get(partition) >= Some(&offset)
            {
                continue;
            }
            // A full queue is a busy gateway: the next tick marks it.
            if link
                .queue
                .try_send(WireFrame::Sent {
                    partition: *partition,
                    offset,
                })
                .is_ok()
            {
                link.marked.insert(*partition, offset);
            }
        }
    }
}
