//! `mmsub relay`: a member of the relays' Kafka consumer group that forwards each event of its
//! partitions once to every gateway with a subscriber of that channel.
//!
//! Gateways connect to every relay ([`wire`](crate::wire)) and register channel interest. For
//! each consumed record the relay looks up the gateways watching its channel (the record key)
//! and queues one `Event` frame per gateway, never one per subscriber. A gateway's queue is
//! bounded: when it is full the consumer waits (backpressure up to Kafka), and a gateway that
//! takes nothing for `forward_timeout` is disconnected, so one stuck node cannot stall the rest.
//!
//! Offsets are committed only for records every addressed gateway acknowledged (or that went
//! to a gateway which has since disconnected), so a relay that crashes re-delivers instead of
//! losing; gateways drop what they already delivered. When partitions move (a relay joined,
//! left or died), the relay commits what is done for the revoked partitions and forgets them.
//!
//! A relay joins the group `join_delay` after it starts listening, so the gateways have
//! connected and registered their interest before it forwards anything.
//!
//! Each partition is forwarded without gaps: a record whose predecessor has not arrived (a
//! broker that showed offset n+1 before n was written) makes the relay read the partition again
//! from n, a few times (`MAX_REREADS`) before it goes on without.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::kafka::KafkaSettings;
use crate::wire::{Frame, FrameCodec};

/// A partition's offsets are consecutive (the topic is neither compacted nor transactional), so
/// a record whose predecessor has not arrived means the fetch raced the write of that
/// predecessor (tansu's memory storage can show offset n+1 before n). The relay reads the
/// partition again from the missing offset, up to this many times, before it goes on without.
const MAX_REREADS: u32 = 5;
/// Pause before reading again, so the missing record has been written.
const REREAD_DELAY: Duration = Duration::from_millis(20);

/// What to do with a consumed record, given the offset its partition expects next.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Forward,
    /// Forwarded already in this assignment (read again after a seek back).
    AlreadyForwarded,
    /// Its predecessor is missing: seek back to `from` (attempt `attempt` of [`MAX_REREADS`]).
    ReadAgain {
        from: i64,
        attempt: u32,
    },
}

/// Per partition: the missing offset being read again, and how often it was.
#[derive(Default)]
struct Rereads(HashMap<i32, (i64, u32)>);

impl Rereads {
    fn next(&mut self, partition: i32, offset: i64, expected: Option<i64>) -> Next {
        match expected {
            Some(expected) if offset < expected => Next::AlreadyForwarded,
            Some(expected) if offset > expected => {
                let (at, attempts) = self.0.entry(partition).or_insert((expected, 0));
                if *at != expected {
                    *at = expected;
                    *attempts = 0;
                }
                if *attempts < MAX_REREADS {
                    *attempts += 1;
                    return Next::ReadAgain {
                        from: expected,
                        attempt: *attempts,
                    };
                }
                tracing::error!(
                    partition,
                    offset,
                    expected,
                    "records are missing from the partition after reading it again; going on without them"
                );
                self.0.remove(&partition);
                Next::Forward
            }
            _ => {
                self.0.remove(&partition);
                Next::Forward
            }
        }
    }
}

/// The relay's own limits; each has a flag in the `mmsub` binary.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Where gateways connect.
    pub listen: SocketAddr,
    /// Time between listening and joining the consumer group.
    pub join_delay: Duration,
    /// Frames queued for one gateway before the consumer waits.
    pub gateway_queue: usize,
    /// A gateway whose queue stays full this long is disconnected.
    pub forward_timeout: Duration,
    /// How often acknowledged offsets are committed.
    pub commit_interval: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7400".parse().expect("a socket address"),
            join_delay: Duration::from_secs(2),
            gateway_queue: 65_536,
            forward_timeout: Duration::from_secs(10),
            commit_interval: Duration::from_millis(200),
        }
    }
}

/// A started relay.
pub struct RunningRelay {
    pub local_addr: SocketAddr,
    pub status: Arc<RelayStatus>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// What a relay's `/readyz` shows.
#[derive(Default)]
pub struct RelayStatus {
    partitions: AtomicUsize,
    gateways: AtomicUsize,
}

impl RelayStatus {
    /// Partitions of the topic this relay owns now.
    pub fn partitions(&self) -> usize {
        self.partitions.load(Ordering::Relaxed)
    }

    /// Gateways connected now.
    pub fn gateways(&self) -> usize {
        self.gateways.load(Ordering::Relaxed)
    }
}

/// Binds the gateway listener, then (after `join_delay`) consumes and forwards until
/// `shutdown`.
pub async fn start(
    kafka: KafkaSettings,
    settings: RelaySettings,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningRelay> {
    kafka.ensure_topic().await?;
    let listener = TcpListener::bind(settings.listen).await?;
    let local_addr = listener.local_addr()?;
    let state = Arc::new(State::default());
    let status = state.status.clone();
    tokio::spawn(accept(
        listener,
        state.clone(),
        settings.clone(),
        shutdown.clone(),
    ));
    let task = tokio::spawn(consume(kafka, settings, state, shutdown));
    Ok(RunningRelay {
        local_addr,
        status,
        task,
    })
}

/// What the relay knows: connected gateways, their interest, and what they still owe an ack for.
#[derive(Default)]
struct State {
    gateways: Mutex<Gateways>,
    progress: Mutex<Progress>,
    status: Arc<RelayStatus>,
}

#[derive(Default)]
struct Gateways {
    next_id: u64,
    queues: HashMap<u64, mpsc::Sender<Frame>>,
    watching: HashMap<String, HashSet<u64>>,
}

impl Gateways {
    fn targets(&self, channel: &str) -> Vec<(u64, mpsc::Sender<Frame>)> {
        self.watching
            .get(channel)
            .into_iter()
            .flatten()
            .filter_map(|id| self.queues.get(id).map(|q| (*id, q.clone())))
            .collect()
    }
}

/// Per partition: forwarded offsets not yet acknowledged by every addressed gateway.
#[derive(Default)]
struct Progress {
    partitions: HashMap<i32, PartitionProgress>,
    /// Per gateway and partition, the offsets it was sent and has not acknowledged, in order.
    owed: HashMap<u64, HashMap<i32, VecDeque<i64>>>,
}

#[derive(Default)]
struct PartitionProgress {
    /// offset → gateways that still owe an ack.
    pending: BTreeMap<i64, usize>,
    /// One past the newest forwarded offset.
    next: Option<i64>,
    /// The offset committed last.
    committed: Option<i64>,
}

impl PartitionProgress {
    /// Where a successor should resume: the oldest unacknowledged offset, or past the newest.
    fn committable(&self) -> Option<i64> {
        self.pending.keys().next().copied().or(self.next)
    }
}

impl Progress {
    /// Newly assigned partitions resume at these committed offsets.
    fn resume(&mut self, offsets: &[(i32, i64)]) {
        for (partition, offset) in offsets {
            self.partitions.entry(*partition).or_default().next = Some(*offset);
        }
    }

    /// The offset this assignment forwards next on `partition`, if known.
    fn expected(&self, partition: i32) -> Option<i64> {
        self.partitions.get(&partition).and_then(|p| p.next)
    }

    fn forwarded(&mut self, partition: i32, offset: i64, gateways: &[u64]) {
        let progress = self.partitions.entry(partition).or_insert_with(|| {
            tracing::info!(partition, offset, "forwarding a partition from this offset");
            PartitionProgress::default()
        });
        progress.next = Some(offset + 1);
        if gateways.is_empty() {
            return;
        }
        progress.pending.insert(offset, gateways.len());
        for id in gateways {
            self.owed
                .entry(*id)
                .or_default()
                .entry(partition)
                .or_default()
                .push_back(offset);
        }
    }

    fn settle(&mut self, partition: i32, offset: i64) {
        if let Some(progress) = self.partitions.get_mut(&partition) {
            if let Some(remaining) = progress.pending.get_mut(&offset) {
                *remaining -= 1;
                if *remaining == 0 {
                    progress.pending.remove(&offset);
                }
            }
        }
    }

    /// Gateway `id` delivered everything of `partition` up to `offset`.
    fn acked(&mut self, id: u64, partition: i32, offset: i64) {
        let mut settled = Vec::new();
        if let Some(owed) = self.owed.get_mut(&id).and_then(|p| p.get_mut(&partition)) {
            while owed.front().is_some_and(|o| *o <= offset) {
                settled.extend(owed.pop_front());
            }
        }
        for offset in settled {
            self.settle(partition, offset);
        }
    }

    /// Gateway `id` is gone: nothing it was sent holds commits back any more.
    fn gone(&mut self, id: u64) {
        for (partition, offsets) in self.owed.remove(&id).unwrap_or_default() {
            for offset in offsets {
                self.settle(partition, offset);
            }
        }
    }

    /// Partitions whose committable offset moved since the last commit; with `revoking`, those
    /// partitions whatever was committed before (an asynchronous commit may have failed, and
    /// this is the last chance to tell a successor where to resume).
    fn take_commits(&mut self, revoking: Option<&HashSet<i32>>) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        for (partition, progress) in &mut self.partitions {
            if revoking.is_some_and(|revoking| !revoking.contains(partition)) {
                continue;
            }
            if let Some(offset) = progress.committable() {
                if revoking.is_some() || progress.committed != Some(offset) {
                    progress.committed = Some(offset);
                    out.push((*partition, offset));
                }
            }
        }
        out
    }

    fn forget(&mut self, partitions: &HashSet<i32>) {
        self.partitions.retain(|p, _| !partitions.contains(p));
        for owed in self.owed.values_mut() {
            owed.retain(|p, _| !partitions.contains(p));
        }
    }
}

/// Commits the done offsets of partitions being revoked, before they move.
struct RelayContext {
    state: Arc<State>,
    topic: String,
}

impl ClientContext for RelayContext {}

impl ConsumerContext for RelayContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let revoked: HashSet<i32> = list.elements().iter().map(|e| e.partition()).collect();
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
            let assigned: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
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

async fn consume(
    kafka: KafkaSettings,
    settings: RelaySettings,
    state: Arc<State>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        _ = tokio::time::sleep(settings.join_delay) => {}
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
            .set("partition.assignment.strategy", "range")
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
                    _ = shutdown.cancelled() => true,
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
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            message = consumer.recv() => message,
        };
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
            Next::AlreadyForwarded => continue,
            Next::ReadAgain { from, attempt } => {
                tracing::warn!(
                    partition,
                    offset,
                    expected = from,
                    attempt,
                    "a record arrived before the one preceding it: reading the partition again from the missing offset"
                );
                drop(message);
                tokio::time::sleep(REREAD_DELAY).await;
                if let Err(e) = consumer.seek(
                    &kafka.topic,
                    partition,
                    Offset::Offset(from),
                    Duration::from_secs(1),
                ) {
                    tracing::warn!(partition, error = %e, "seeking back failed");
                }
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
            let gateways = state.gateways.lock().expect("gateways lock poisoned");
            let targets = gateways.targets(channel);
            let ids: Vec<u64> = targets.iter().map(|(id, _)| *id).collect();
            tracing::debug!(partition, offset, channel, gateways = ?ids, "forwarding");
            state
                .progress
                .lock()
                .expect("progress lock poisoned")
                .forwarded(partition, offset, &ids);
            targets
        };
        for (id, queue) in targets {
            let frame = Frame::Event {
                partition,
                offset,
                payload: payload.clone(),
            };
            if queue
                .send_timeout(frame, settings.forward_timeout)
                .await
                .is_err()
            {
                tracing::warn!(
                    gateway = id,
                    "a gateway took nothing for too long: disconnecting it"
                );
                disconnect(&state, id);
            }
        }
    }
    let _ = committer.await;
    Ok(())
}

/// Forgets gateway `id`: its interest and what it owed.
fn disconnect(state: &State, id: u64) {
    let mut gateways = state.gateways.lock().expect("gateways lock poisoned");
    gateways.queues.remove(&id);
    gateways.watching.retain(|_, ids| {
        ids.remove(&id);
        !ids.is_empty()
    });
    state
        .progress
        .lock()
        .expect("progress lock poisoned")
        .gone(id);
}

async fn accept(
    listener: TcpListener,
    state: Arc<State>,
    settings: RelaySettings,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a gateway failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_gateway(
            stream,
            peer,
            state.clone(),
            settings.clone(),
            shutdown.clone(),
        ));
    }
}

/// One gateway connection: a writer draining its queue, and this reader of its interest/acks.
async fn serve_gateway(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    settings: RelaySettings,
    shutdown: CancellationToken,
) {
    let (queue, mut outgoing) = mpsc::channel::<Frame>(settings.gateway_queue);
    let id = {
        let mut gateways = state.gateways.lock().expect("gateways lock poisoned");
        gateways.next_id += 1;
        let id = gateways.next_id;
        gateways.queues.insert(id, queue.clone());
        id
    };
    state.status.gateways.fetch_add(1, Ordering::Relaxed);
    tracing::info!(gateway = id, %peer, "gateway connected");
    let (mut sink, mut frames) = Framed::new(stream, FrameCodec::default()).split();
    let writer = tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if sink.feed(frame).await.is_err() {
                return;
            }
            // Everything already queued goes out in the same write.
            while let Ok(frame) = outgoing.try_recv() {
                if sink.feed(frame).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    loop {
        let frame = tokio::select! {
            _ = shutdown.cancelled() => break,
            frame = frames.next() => frame,
        };
        match frame {
            Some(Ok(Frame::Watch { seq, channel })) => {
                state
                    .gateways
                    .lock()
                    .expect("gateways lock poisoned")
                    .watching
                    .entry(channel)
                    .or_default()
                    .insert(id);
                // Queued behind every event forwarded so far; the map is updated first, so
                // every event consumed after this is forwarded to the gateway.
                if queue.send(Frame::Watching { seq }).await.is_err() {
                    break;
                }
            }
            Some(Ok(Frame::Unwatch { channel })) => {
                let mut gateways = state.gateways.lock().expect("gateways lock poisoned");
                if let Some(ids) = gateways.watching.get_mut(&channel) {
                    ids.remove(&id);
                    if ids.is_empty() {
                        gateways.watching.remove(&channel);
                    }
                }
            }
            Some(Ok(Frame::Ack { partition, offset })) => {
                state
                    .progress
                    .lock()
                    .expect("progress lock poisoned")
                    .acked(id, partition, offset);
            }
            Some(Ok(other)) => {
                tracing::warn!(
                    gateway = id,
                    ?other,
                    "a gateway sent a relay-only frame; disconnecting it"
                );
                break;
            }
            Some(Err(e)) => {
                tracing::warn!(gateway = id, error = %e, "gateway connection failed");
                break;
            }
            None => break,
        }
    }
    disconnect(&state, id);
    state.status.gateways.fetch_sub(1, Ordering::Relaxed);
    writer.abort();
    tracing::info!(gateway = id, %peer, "gateway disconnected");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_stop_at_the_oldest_unacknowledged_record() {
        let mut progress = Progress::default();
        progress.forwarded(0, 10, &[1, 2]);
        progress.forwarded(0, 11, &[]);
        progress.forwarded(0, 12, &[1]);
        assert_eq!(progress.take_commits(None), vec![(0, 10)]);
        progress.acked(1, 0, 12);
        assert_eq!(progress.take_commits(None), vec![]); // gateway 2 still owes offset 10
        progress.gone(2);
        assert_eq!(progress.take_commits(None), vec![(0, 13)]);
        progress.forget(&HashSet::from([0]));
        assert!(progress.take_commits(None).is_empty());
    }

    #[test]
    fn a_missing_record_is_read_again_a_few_times_and_a_repeat_is_not_forwarded() {
        let mut rereads = Rereads::default();
        assert_eq!(rereads.next(0, 7, Some(7)), Next::Forward);
        assert_eq!(rereads.next(0, 5, Some(8)), Next::AlreadyForwarded);
        for attempt in 1..=MAX_REREADS {
            assert_eq!(
                rereads.next(0, 9, Some(8)),
                Next::ReadAgain { from: 8, attempt }
            );
        }
        // Still missing after every attempt: go on without it.
        assert_eq!(rereads.next(0, 9, Some(8)), Next::Forward);
        // A later gap gets its own attempts; the first record of an assignment has no
        // expectation unless the committed offset was known.
        assert_eq!(
            rereads.next(0, 12, Some(10)),
            Next::ReadAgain {
                from: 10,
                attempt: 1
            }
        );
        assert_eq!(rereads.next(1, 40, None), Next::Forward);
    }

    #[test]
    fn revoking_commits_again_what_an_earlier_commit_may_have_lost() {
        let mut progress = Progress::default();
        progress.forwarded(0, 10, &[1]);
        progress.forwarded(1, 20, &[1]);
        assert_eq!(progress.take_commits(None).len(), 2);
        // Nothing moved, but the asynchronous commit above may have failed.
        assert_eq!(
            progress.take_commits(Some(&HashSet::from([0]))),
            vec![(0, 10)]
        );
    }
}
