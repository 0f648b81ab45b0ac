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
//! that committed past it) gets them again from Kafka: see [`replays`].
//!
//! The parts: [`consume`] (the consume loop and the rebalance hooks), [`rereads`] (gaps read
//! again), [`replays`] (partitions read again for a gateway), [`progress`] (offsets owed and
//! committed) and [`gateways`] (the TCP server for the gateways' links).

mod consume;
mod gateways;
mod progress;
mod replays;
mod rereads;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
    /// `shutdown`.
    pub async fn start(
        kafka: KafkaSettings,
        settings: RelaySettings,
        shutdown: CancellationToken,
    ) -> anyhow::Result<RelayNode> {
        kafka.ensure_topic().await?;
        let listener = TcpListener::bind(settings.listen).await?;
        let local_addr = listener.local_addr()?;
        let (replay_requests, requests) = mpsc::channel(REPLAY_REQUESTS);
        let state = Arc::new(State {
            gateways: Mutex::default(),
            progress: Mutex::default(),
            status: Arc::default(),
            replay_requests,
            assigned: Mutex::default(),
        });
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
}

impl State {
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
}

impl GatewayLink {
    fn new(queue: mpsc::Sender<WireFrame>) -> Self {
        Self {
            queue,
            version: WIRE_V1,
            delivered: HashMap::new(),
            marked: HashMap::new(),
        }
    }

    fn has(&mut self, partition: i32, offset: i64) {
        let delivered = self.delivered.entry(partition).or_insert(offset);
        *delivered = (*delivered).max(offset);
    }
}

impl Gateways {
    fn targets(&self, channel: &str) -> Vec<(u64, mpsc::Sender<WireFrame>)> {
        self.watching
            .get(channel)
            .into_iter()
            .flatten()
            .filter_map(|id| self.links.get(id).map(|l| (*id, l.queue.clone())))
            .collect()
    }

    /// Those of `ids` that watch `channel`, with their queues.
    fn watching_of(&self, channel: &str, ids: &[u64]) -> Vec<(u64, mpsc::Sender<WireFrame>)> {
        let Some(watching) = self.watching.get(channel) else {
            return Vec::new();
        };
        ids.iter()
            .filter(|id| watching.contains(id))
            .filter_map(|id| self.links.get(id).map(|l| (*id, l.queue.clone())))
            .collect()
    }
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
