//! Partitions read again for a gateway that missed part of them, beside the live stream.
//!
//! A gateway misses events when its link drops (a partition, a heartbeat timeout, a slow
//! gateway disconnected) or when a partition moves to this relay from one that committed past
//! what the gateway had: the relay settles a gone gateway's records so that one lost node
//! cannot hold every commit back. Kafka still has those records, so nothing is lost: when the
//! gateway says how far it has each partition (its `Hello`, and its acknowledgements), the
//! relay reads the partition again from the first offset the gateway lacks, with a consumer of
//! its own that is not in the group, and sends the records of the channels that gateway watches
//! to that gateway only.
//!
//! Why a consumer of its own: the group's consumer sent back to an old offset holds every
//! other gateway's live events of that partition until the read catches up. A gateway frozen
//! for 30 s, read again that way, raised the other gateways' p99 by 3–4× in the second it came
//! back (`scripts/slow-gateway.sh`). Now only the gateway being caught up waits.
//!
//! The hand-over keeps each partition in offset order for that gateway: while it is caught up
//! on a partition, the consume loop sends it nothing live of that partition
//! ([`GatewayLink::catching_up`](super::GatewayLink)); the catch-up sends every record below
//! the consume loop's position, and the moment its next offset reaches that position (checked
//! under the gateways lock, which the consume loop holds while it picks a record's targets)
//! the partition is handed back and the next live record goes to the gateway as usual.
//!
//! Records read again are not counted as forwarded: commits are unchanged, and a relay that
//! dies mid-catch-up leaves the gateway's marks where they were, so the next owner reads again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::rereads::{read_again_from, MAX_REREADS};
use super::{disconnect, queue_or_let_go, RelaySettings, State};
use crate::kafka::KafkaSettings;
use crate::wire::WireFrame;

/// A catch-up that has read nothing for this long says so in the log (the broker may be down;
/// it keeps waiting, since giving up would lose what the gateway lacks).
const QUIET: Duration = Duration::from_secs(5);

/// What to do with a record the catch-up read, given where it is and where the live stream is.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Send it (if the gateway watches its channel); then the catch-up is at `offset + 1`.
    Send,
    /// Read already (a seek back brings records again): dropped.
    Repeat,
    /// Its predecessor has not arrived (the broker showed a later offset first, or the
    /// predecessor left the topic's retention): read again from `from`.
    ReadAgain { from: i64 },
    /// The live stream is here: the partition goes back to the consume loop.
    HandOver,
}

/// One partition being caught up for one gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cursor {
    /// The next offset the gateway lacks.
    pub(super) next: i64,
    /// Times the partition was read again from `next`.
    rereads: u32,
    /// The catch-up task that owns it: one of a partition revoked and assigned again while it
    /// was running must leave the new one alone.
    task: u64,
}

impl Cursor {
    pub(super) fn new(from: i64, task: u64) -> Self {
        Self {
            next: from,
            rereads: 0,
            task,
        }
    }

    /// The catch-up read `offset`; the consume loop forwards `live` next.
    pub(super) fn step(&mut self, offset: i64, live: i64) -> Step {
        if offset < self.next {
            return Step::Repeat;
        }
        if offset > self.next && self.next < live {
            if self.rereads < MAX_REREADS {
                self.rereads += 1;
                return Step::ReadAgain { from: self.next };
            }
            tracing::error!(
                from = self.next,
                to = offset,
                "records a gateway lacks are missing from the partition (past its retention?); going on without them"
            );
        }
        self.rereads = 0;
        if offset >= live {
            return Step::HandOver;
        }
        self.next = offset + 1;
        Step::Send
    }

    /// Whether the catch-up reached the live stream (nothing is left below `live`).
    pub(super) fn caught_up(&self, live: i64) -> bool {
        self.next >= live
    }
}

/// Reads `partitions` (each from its first lacking offset) for gateway `id` until each is
/// handed back to the consume loop, the gateway goes, or the relay stops.
pub(super) async fn catch_up(
    kafka: KafkaSettings,
    settings: RelaySettings,
    state: Arc<State>,
    plan: Plan,
    shutdown: CancellationToken,
) {
    let Plan {
        gateway: id,
        task,
        partitions,
    } = plan;
    let me = Me {
        state: &state,
        id,
        task,
    };
    state.metrics.relay.catch_up();
    // A place among the catch-ups running at once. Meanwhile the gateway gets nothing of
    // these partitions (they are marked caught up), and nothing of it is lost: Kafka keeps
    // the records, and the cursor starts where the gateway is.
    let places = &state.catch_ups;
    let _place = match places.try_acquire() {
        Ok(place) => place,
        Err(_) => {
            tracing::info!(
                gateway = id,
                max = settings.max_catch_ups,
                "as many catch-ups as allowed are running; this one waits for a place"
            );
            tokio::select! {
                () = shutdown.cancelled() => return,
                place = places.acquire() => match place {
                    Ok(place) => place,
                    Err(_) => return, // closed: never, the state owns it
                },
            }
        }
    };
    if !me.still_catching_up() {
        return; // the gateway went, or the partitions moved, while it waited
    }
    if let Err(e) = run(&kafka, &settings, &me, &partitions, &shutdown).await {
        // Without its catch-up the gateway would wait forever on those partitions: it goes,
        // and reconnects with a `Hello` that starts another.
        tracing::warn!(gateway = id, error = %e, "a catch-up failed; disconnecting the gateway");
        disconnect(&state, id);
    }
}

/// A catch-up task: which gateway it serves, and its own id (see [`Cursor::task`]).
struct Me<'a> {
    state: &'a State,
    id: u64,
    task: u64,
}

async fn run(
    kafka: &KafkaSettings,
    settings: &RelaySettings,
    me: &Me<'_>,
    partitions: &[(i32, i64)],
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let (state, id, task) = (me.state, me.id, me.task);
    // Not a member of the group: it never subscribes or commits, so the group id only names it.
    let consumer: StreamConsumer = kafka
        .client_config()
        .set("group.id", format!("{}.catch-up", kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "fetch.wait.max.ms",
            kafka.fetch_wait_max.as_millis().to_string(),
        )
        .create()?;
    let mut list = TopicPartitionList::new();
    for (partition, from) in partitions {
        list.add_partition_offset(&kafka.topic, *partition, Offset::Offset(*from))?;
    }
    consumer.assign(&list)?;
    tracing::info!(gateway = id, ?partitions, "catching a gateway up");
    let began = Instant::now();
    let mut heard = Instant::now();
    let mut tick = tokio::time::interval(QUIET);
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {
                if !me.still_catching_up() {
                    break;
                }
                if heard.elapsed() >= QUIET {
                    tracing::warn!(gateway = id, quiet = ?heard.elapsed(), "a catch-up has read nothing; still waiting for the broker");
                }
                continue;
            }
            message = consumer.recv() => message,
        };
        heard = Instant::now();
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(gateway = id, error = %e, "catch-up consumer error");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (partition, offset) = (message.partition(), message.offset());
        let channel = message.key().and_then(|k| std::str::from_utf8(k).ok());
        // Gateways first, then progress, as in the consume loop.
        let decision = {
            let mut gateways = state.gateways.lock().expect("gateways lock poisoned");
            let watches = channel
                .and_then(|c| gateways.watching.get(c))
                .is_some_and(|ids| ids.contains(&id));
            let Some(link) = gateways.links.get_mut(&id) else {
                return Ok(()); // the gateway went: its next link starts another
            };
            let live = state
                .progress
                .lock()
                .expect("progress lock poisoned")
                .expected(partition);
            let cursor = link
                .catching_up
                .get_mut(&partition)
                .filter(|c| c.task == task);
            match (cursor, live) {
                (Some(cursor), Some(live)) => match cursor.step(offset, live) {
                    Step::Send if watches => Some((Step::Send, link.queue.clone())),
                    Step::Send => {
                        if cursor.caught_up(live) {
                            link.catching_up.remove(&partition);
                        }
                        None
                    }
                    Step::HandOver => {
                        link.catching_up.remove(&partition);
                        None
                    }
                    step => Some((step, link.queue.clone())),
                },
                // The partition was revoked: its next owner catches the gateway up.
                (Some(_), None) => {
                    link.catching_up.remove(&partition);
                    None
                }
                // Handed over already, or another task's now.
                (None, _) => None,
            }
        };
        match decision {
            Some((Step::Send, queue)) => {
                let frame = WireFrame::Event {
                    partition,
                    offset,
                    payload: bytes::Bytes::copy_from_slice(message.payload().unwrap_or_default()),
                };
                drop(message);
                tracing::debug!(gateway = id, partition, offset, "catching up");
                if !queue_or_let_go(state, settings, id, &queue, frame).await {
                    return Ok(());
                }
                // Handed back only if the live stream is still right behind this record: if
                // it moved on during the send, what it skipped for this gateway is read next.
                me.hand_over_if_caught_up(partition);
            }
            Some((Step::ReadAgain { from }, _)) => {
                drop(message);
                state.metrics.relay.reread();
                read_again_from(&consumer, &kafka.topic, partition, from).await;
            }
            Some((Step::Repeat | Step::HandOver, _)) | None => {}
        }
        if !me.still_catching_up() {
            break;
        }
    }
    tracing::info!(gateway = id, took = ?began.elapsed(), "a gateway is caught up");
    Ok(())
}

impl Me<'_> {
    /// Gives `partition` back if the catch-up sent everything below the live stream's position
    /// (or the partition was revoked).
    fn hand_over_if_caught_up(&self, partition: i32) {
        let mut gateways = self.state.gateways.lock().expect("gateways lock poisoned");
        let Some(link) = gateways.links.get_mut(&self.id) else {
            return;
        };
        let live = self
            .state
            .progress
            .lock()
            .expect("progress lock poisoned")
            .expected(partition);
        if let Some(cursor) = link.catching_up.get(&partition) {
            if cursor.task == self.task && live.is_none_or(|live| cursor.caught_up(live)) {
                link.catching_up.remove(&partition);
            }
        }
    }

    /// Whether the gateway is still connected and owed part of a partition by this task; a
    /// partition whose live position it reached, or that was revoked, is handed back first.
    fn still_catching_up(&self) -> bool {
        let mut gateways = self.state.gateways.lock().expect("gateways lock poisoned");
        let Some(link) = gateways.links.get_mut(&self.id) else {
            return false;
        };
        let progress = self.state.progress.lock().expect("progress lock poisoned");
        link.catching_up.retain(|partition, cursor| {
            cursor.task != self.task
                || progress
                    .expected(*partition)
                    .is_some_and(|live| !cursor.caught_up(live))
        });
        link.catching_up.values().any(|c| c.task == self.task)
    }
}

/// One catch-up to run: a gateway, and the first offset it lacks of each partition.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Plan {
    pub(super) gateway: u64,
    task: u64,
    pub(super) partitions: Vec<(i32, i64)>,
}

/// Numbers catch-up tasks.
static TASKS: AtomicU64 = AtomicU64::new(1);

/// Plans catch-ups for version 2 gateways behind on partitions this relay forwards: `gateway`
/// after its `Hello` (every partition), or every gateway for the `assigned` partitions. Each
/// partition planned stops taking live events until its catch-up hands it back.
pub(super) fn plan(
    state: &State,
    gateway: Option<u64>,
    assigned: Option<&std::collections::HashSet<i32>>,
) -> Vec<Plan> {
    let positions = state
        .progress
        .lock()
        .expect("progress lock poisoned")
        .positions();
    let mut gateways = state.gateways.lock().expect("gateways lock poisoned");
    let mut plans = Vec::new();
    for (id, link) in &mut gateways.links {
        if link.version < 2 || gateway.is_some_and(|g| g != *id) {
            continue;
        }
        let mut lacking: HashMap<i32, i64> = HashMap::new();
        for (partition, next) in &positions {
            if assigned.is_some_and(|a| !a.contains(partition))
                || link.catching_up.contains_key(partition)
            {
                continue;
            }
            let Some(delivered) = link.delivered.get(partition) else {
                continue;
            };
            let from = delivered.saturating_add(1).max(0);
            if from < *next {
                tracing::info!(
                    gateway = id,
                    partition,
                    from,
                    until = next,
                    "a gateway lacks part of a partition: reading it again for that gateway"
                );
                lacking.insert(*partition, from);
            }
        }
        if !lacking.is_empty() {
            let task = TASKS.fetch_add(1, Ordering::Relaxed);
            for (partition, from) in &lacking {
                link.catching_up
                    .insert(*partition, Cursor::new(*from, task));
            }
            let mut partitions: Vec<(i32, i64)> = lacking.into_iter().collect();
            partitions.sort_unstable();
            plans.push(Plan {
                gateway: *id,
                task,
                partitions,
            });
        }
    }
    plans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_behind_gets_exactly_what_it_lacks_then_the_live_stream() {
        // The gateway lacks 6..; the consume loop is at 10.
        let mut cursor = Cursor::new(6, 1);
        for offset in 6..9 {
            assert_eq!(cursor.step(offset, 10), Step::Send);
            assert!(!cursor.caught_up(10));
        }
        // The live stream moved on meanwhile: the catch-up follows it.
        assert_eq!(cursor.step(9, 12), Step::Send);
        assert_eq!(cursor.step(10, 12), Step::Send);
        assert_eq!(cursor.step(11, 12), Step::Send);
        assert!(cursor.caught_up(12));
        // A record the live stream has: handed over, not sent twice.
        let mut cursor = Cursor::new(11, 1);
        assert_eq!(cursor.step(11, 11), Step::HandOver);
    }

    #[test]
    fn a_record_read_before_its_predecessor_reads_the_partition_again() {
        let mut cursor = Cursor::new(4, 1);
        assert_eq!(cursor.step(4, 20), Step::Send);
        assert_eq!(cursor.step(6, 20), Step::ReadAgain { from: 5 });
        // After the seek: what came before is a repeat, then the gap fills.
        assert_eq!(cursor.step(4, 20), Step::Repeat);
        assert_eq!(cursor.step(5, 20), Step::Send);
        assert_eq!(cursor.step(6, 20), Step::Send);
    }

    #[test]
    fn records_gone_from_the_topic_are_given_up_after_a_few_reads() {
        let mut cursor = Cursor::new(0, 1);
        for _ in 0..MAX_REREADS {
            assert_eq!(cursor.step(30, 50), Step::ReadAgain { from: 0 });
        }
        // The earliest record left is 30: the catch-up goes on from there.
        assert_eq!(cursor.step(30, 50), Step::Send);
        assert_eq!(cursor.next, 31);
        // Everything the gateway lacked is gone, up to the live stream: handed over.
        let mut cursor = Cursor::new(0, 1);
        for _ in 0..MAX_REREADS {
            cursor.step(60, 50);
        }
        assert_eq!(cursor.step(60, 50), Step::HandOver);
    }
}
