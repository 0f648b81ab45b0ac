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

//!
//! A gateway that missed events (its link dropped, or a partition moved here from a relay
//! that committed past it) gets them again from Kafka, without holding back anyone else's:
//! see [`catch_up`].
//!
//! The parts: [`consume`] (the consume loop and the rebalance hooks), [`rereads`] (gaps read
//! again), [`catch_up`] (partitions read again for a gateway), [`progress`] (offsets owed and
//! committed) and [`gateways`] (the TCP server for the gateways' links).

mod catch_up;
mod consume;
mod gateways;
mod progress;
mod rereads;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use mmsub_metrics::Metrics;

use crate::kafka::KafkaSettings;
use crate::wire::{Heartbeat, WireFrame, WIRE_V1, WIRE_VERSION};
use progress::Progress;

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
    /// How often acknowledged offsets are committed (and `Sent` marks go to gateways).
    pub commit_interval: Duration,
    /// Liveness of version 2 links.
    pub heartbeat: Heartbeat,
    /// The newest wire version this relay speaks: [`WIRE_VERSION`], or 1 to behave as a
    /// relay of the previous release during a rolling upgrade.
    pub wire_version: u16,
    /// Catch-ups running at once, each a Kafka consumer of its own (a connection to every
    /// broker it reads from, librdkafka's threads and fetch buffers). One more waits for a
    /// place, and its gateway gets nothing of those partitions until then.
    pub max_catch_ups: usize,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7400".parse().expect("a socket address"),
            join_delay: Duration::from_secs(2),
            gateway_queue: 65_536,
            forward_timeout: Duration::from_secs(10),
            commit_interval: Duration::from_millis(200),
            heartbeat: Heartbeat::default(),
            wire_version: WIRE_VERSION,
            max_catch_ups: 16,
        }
    }
}

/// A started relay.
pub struct RelayNode {
    /// Where gateways connect.
    pub local_addr: SocketAddr,
    /// What `/readyz` shows.
    pub status: Arc<RelayStatus>,
    /// The consumer; ends with the shutdown, or with the error that stopped it.
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RelayNode {
    /// Binds the gateway listener, then (after `join_delay`) consumes and forwards until
    /// `shutdown`, counting in `metrics`.
    pub async fn start(
        kafka: KafkaSettings,
        settings: RelaySettings,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<RelayNode> {
        kafka.ensure_topic().await?;
        let listener = TcpListener::bind(settings.listen).await?;
        let local_addr = listener.local_addr()?;
        let (replay_requests, requests) = mpsc::channel(REPLAY_REQUESTS);
        let state = Arc::new(State::new(replay_requests, settings.max_catch_ups, metrics));
        let status = state.status.clone();
        tokio::spawn(gateways::accept(
            listener,
            state.clone(),
            settings.clone(),
            shutdown.clone(),
        ));
        let task = tokio::spawn(consume::consume(kafka, settings, state, requests, shutdown));
        Ok(RelayNode {
            local_addr,
            status,
            task,
        })
    }
}

/// What a relay's `/readyz` shows.
#[derive(Default)]
pub struct RelayStatus {
    partitions: AtomicUsize,
    gateways: AtomicUsize,
    /// The group gave this relay its first assignment (possibly empty, with more relays than
    /// partitions). Until then the relay forwards nothing, and a cluster started moments ago
    /// would hold every message sent to it for the join delay plus the broker's initial
    /// rebalance delay (3 s on tansu and by default on Apache Kafka).
    assigned: AtomicBool,
}

impl RelayStatus {
    /// Whether the relay is a member of the group with an assignment: ready to forward.
    pub fn in_group(&self) -> bool {
        self.assigned.load(Ordering::Relaxed)
    }

    /// Partitions of the topic this relay owns now.
    pub fn partitions(&self) -> usize {
        self.partitions.load(Ordering::Relaxed)
    }

    /// Gateways connected now.
    pub fn gateways(&self) -> usize {
        self.gateways.load(Ordering::Relaxed)
    }
}

/// Replay requests waiting for the consume loop (one per gateway `Hello`; a full queue makes
/// the next gateway's link wait).
const REPLAY_REQUESTS: usize = 1024;

/// What the relay knows: connected gateways, their interest, and what they still owe an ack for.
struct State {
    gateways: Mutex<Gateways>,
    progress: Mutex<Progress>,
    status: Arc<RelayStatus>,
    /// A gateway said how far it has each partition: the consume loop replays what it lacks.
    replay_requests: mpsc::Sender<(u64, u16)>,
    /// Partitions assigned since the consume loop last looked: gateways behind on them (the
    /// previous owner committed past them) get a replay.
    assigned: Mutex<Vec<i32>>,
    /// Places for catch-ups running at once ([`RelaySettings::max_catch_ups`]).
    catch_ups: Arc<tokio::sync::Semaphore>,
    /// The node's metrics (`mmsub_relay_*`).
    metrics: Arc<Metrics>,
}

impl State {
    /// A relay that knows no gateway and owns no partition yet.
    fn new(
        replay_requests: mpsc::Sender<(u64, u16)>,
        max_catch_ups: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            metrics,
            gateways: Mutex::default(),
            progress: Mutex::default(),
            status: Arc::default(),
            replay_requests,
            assigned: Mutex::default(),
            catch_ups: Arc::new(tokio::sync::Semaphore::new(max_catch_ups.max(1))),
        }
    }

    /// Runs `f` on gateway `id`'s link, if it is still connected.
    fn with_link(&self, id: u64, f: impl FnOnce(&mut GatewayLink)) {
        if let Some(link) = self
            .gateways
            .lock()
            .expect("gateways lock poisoned")
            .links
            .get_mut(&id)
        {
            f(link);
        }
    }
}

#[derive(Default)]
struct Gateways {
    next_id: u64,
    links: HashMap<u64, GatewayLink>,
    watching: HashMap<String, HashSet<u64>>,
}

/// One connected gateway.
struct GatewayLink {
    queue: mpsc::Sender<WireFrame>,
    /// The version the consume loop treats the link as: 1 until the gateway's `Hello` was
    /// answered and its replay planned (only then may `Sent` marks go to it).
    version: u16,
    /// Per partition, the newest offset the gateway said it has (its `Hello` and its acks).
    delivered: HashMap<i32, i64>,
    /// Per partition, the newest `Sent` mark queued to it.
    marked: HashMap<i32, i64>,
    /// The gateway sent the probe watch that precedes a version 2 `Hello`: until the consume
    /// loop has planned that hello's replay, no live event goes to it (one that did would
    /// move its per-partition mark past what the replay then sends, and it would drop those
    /// as repeats). `Some` holds, per partition, the first offset withheld.
    held: Option<HashMap<i32, i64>>,
    /// Partitions a catch-up is reading again for this gateway: until it hands one back, no
    /// live event of it goes to the gateway (the catch-up sends them, in offset order).
    catching_up: HashMap<i32, catch_up::Cursor>,
}

impl GatewayLink {
    fn new(queue: mpsc::Sender<WireFrame>) -> Self {
        Self {
            queue,
            version: WIRE_V1,
            delivered: HashMap::new(),
            marked: HashMap::new(),
            held: None,
            catching_up: HashMap::new(),
        }
    }

    fn has(&mut self, partition: i32, offset: i64) {
        let delivered = self.delivered.entry(partition).or_insert(offset);
        *delivered = (*delivered).max(offset);
    }

    /// A `Hello` is coming: withhold live events until its replay is planned.
    fn hold(&mut self) {
        self.held.get_or_insert_with(HashMap::new);
    }

    /// Whether the link takes a live event of `partition` at `offset` now; a held link
    /// remembers the first one it did not take, and one being caught up on the partition gets
    /// it from the catch-up.
    fn takes(&mut self, partition: i32, offset: i64) -> bool {
        if self.catching_up.contains_key(&partition) {
            return false;
        }
        match &mut self.held {
            None => true,
            Some(held) => {
                held.entry(partition).or_insert(offset);
                false
            }
        }
    }

    /// The hold ends as its replay is planned: what was withheld counts as not delivered, so
    /// the replay covers it.
    fn release(&mut self) {
        for (partition, first) in self.held.take().unwrap_or_default() {
            let lacks = first - 1;
            let delivered = self.delivered.entry(partition).or_insert(lacks);
            *delivered = (*delivered).min(lacks);
        }
    }
}

impl Gateways {
    /// The gateways a live event of `channel` at `partition`/`offset` goes to: those watching
    /// it, except links held for their `Hello` (which note it) and links a catch-up is reading
    /// the partition again for.
    fn targets(
        &mut self,
        channel: &str,
        partition: i32,
        offset: i64,
    ) -> Vec<(u64, mpsc::Sender<WireFrame>)> {
        let Some(watching) = self.watching.get(channel) else {
            return Vec::new();
        };
        watching
            .iter()
            .filter_map(|id| {
                let link = self.links.get_mut(id)?;
                link.takes(partition, offset)
                    .then(|| (*id, link.queue.clone()))
            })
            .collect()
    }
}

/// Queues `frame` to gateway `id`; a gateway whose queue stays full past the forward timeout
/// is disconnected, and `false` returned.
async fn queue_or_let_go(
    state: &State,
    settings: &RelaySettings,
    id: u64,
    queue: &mpsc::Sender<WireFrame>,
    frame: WireFrame,
) -> bool {
    if queue
        .send_timeout(frame, settings.forward_timeout)
        .await
        .is_err()
    {
        tracing::warn!(
            gateway = id,
            "a gateway took nothing for too long: disconnecting it"
        );
        disconnect(state, id);
        return false;
    }
    true
}

/// Forgets gateway `id`: its interest and what it owed.
fn disconnect(state: &State, id: u64) {
    let mut gateways = state.gateways.lock().expect("gateways lock poisoned");
    gateways.links.remove(&id);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with_link() -> (State, u64) {
        let (replay_requests, _) = mpsc::channel(1);
        let state = State::new(replay_requests, 1, Metrics::new());
        let (queue, _) = mpsc::channel(16);
        let mut gateways = state.gateways.lock().unwrap();
        gateways.links.insert(7, GatewayLink::new(queue));
        gateways.watching.entry("c".into()).or_default().insert(7);
        drop(gateways);
        (state, 7)
    }

    /// Forwards offsets `range` of partition 0 (channel "c") live; returns who got each.
    fn forward(state: &State, range: std::ops::Range<i64>) -> Vec<Vec<u64>> {
        range
            .map(|offset| {
                let mut gateways = state.gateways.lock().unwrap();
                let ids: Vec<u64> = gateways
                    .targets("c", 0, offset)
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect();
                state.progress.lock().unwrap().forwarded(0, offset, &ids);
                ids
            })
            .collect()
    }

    #[test]
    fn a_link_held_for_its_hello_gets_what_it_was_withheld_from_the_replay() {
        let (state, id) = state_with_link();
        assert_eq!(forward(&state, 0..5), vec![vec![id]; 5]);
        // The probe, then the hello saying it has up to 7 (it got 5..8 from a previous
        // owner of the partition): live events in between are withheld, not sent.
        state.with_link(id, GatewayLink::hold);
        assert_eq!(forward(&state, 5..12), vec![Vec::<u64>::new(); 7]);
        state.with_link(id, |link| {
            link.has(0, 7);
            link.version = 2;
            link.release();
        });
        // The catch-up starts at the first offset withheld, not past the hello's mark.
        let plans = catch_up::plan(&state, Some(id), None);
        assert_eq!(plans.len(), 1);
        assert_eq!(
            (plans[0].gateway, plans[0].partitions.clone()),
            (id, vec![(0, 5)])
        );
        // Until the catch-up hands the partition back, live events of it are the catch-up's.
        assert_eq!(forward(&state, 12..13), vec![Vec::<u64>::new()]);
        state.with_link(id, |link| {
            link.catching_up.clear();
        });
        assert_eq!(forward(&state, 13..14), vec![vec![id]]);
    }

    #[test]
    fn a_held_link_with_nothing_withheld_needs_no_replay() {
        let (state, id) = state_with_link();
        forward(&state, 0..3);
        state.with_link(id, GatewayLink::hold);
        state.with_link(id, |link| {
            link.has(0, 2);
            link.version = 2;
            link.release();
        });
        assert!(catch_up::plan(&state, Some(id), None).is_empty());
        assert_eq!(forward(&state, 3..4), vec![vec![id]]);
    }
}
