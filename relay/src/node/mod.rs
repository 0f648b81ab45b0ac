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
//! The parts: [`consume`] (the consume loop and the rebalance hooks), [`rereads`] (gaps read
//! again), [`progress`] (offsets owed and committed) and [`gateways`] (the TCP server for the
//! gateways' links).

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

use crate::kafka::KafkaSettings;
use crate::wire::WireFrame;
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
        let state = Arc::new(State::default());
        let status = state.status.clone();
        tokio::spawn(gateways::accept(
            listener,
            state.clone(),
            settings.clone(),
            shutdown.clone(),
        ));
        let task = tokio::spawn(consume::consume(kafka, settings, state, shutdown));
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
    queues: HashMap<u64, mpsc::Sender<WireFrame>>,
    watching: HashMap<String, HashSet<u64>>,
}

impl Gateways {
    fn targets(&self, channel: &str) -> Vec<(u64, mpsc::Sender<WireFrame>)> {
        self.watching
            .get(channel)
            .into_iter()
            .flatten()
            .filter_map(|id| self.queues.get(id).map(|q| (*id, q.clone())))
            .collect()
    }
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
