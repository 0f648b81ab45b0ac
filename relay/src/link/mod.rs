//! A gateway's links to the relay tier: one connection to every relay, each told which
//! channels have subscribers here, each forwarding those channels' events into the local hub.
//!
//! - **Finding relays.** Each configured entry is `host:port`; a name that resolves to many
//!   addresses (a headless service's DNS name) means one link per address. Entries are
//!   resolved again every `resolve_interval`, so relays that come and go are followed.
//! - **Interest.** The hub reports a channel's first and last local listener
//!   ([`InterestObserver`]); every link sends `Watch`/`Unwatch`, and a link that (re)connects
//!   first sends everything watched. A subscription waits in [`RelayLinks::ready`] until every
//!   connected relay confirmed its channel, so "from now on" means from now on.
//! - **Exactly once, in order.** A channel's events come from one partition, forwarded in
//!   offset order. When a partition moves, the new relay resumes from the last committed offset
//!   and re-sends some events; the gateway keeps the newest offset delivered per partition and
//!   drops anything at or below it. It acknowledges what it delivered, in batches, so relays
//!   can commit.
//! - **Nothing missed.** A version 2 link ([`wire`](crate::wire)) says `Hello` with the newest
//!   offset delivered per partition, takes the relay's `Sent` marks (so "delivered" covers
//!   partitions whose records were not for this gateway too), and reports its offsets to every
//!   relay each heartbeat. A relay that finds this gateway behind on a partition it forwards
//!   reads it again from Kafka for this gateway, before anything newer.
//! - **Liveness.** On a version 2 link both sides ping each heartbeat interval; a link silent
//!   for the heartbeat timeout is closed and connected again, so a partition that drops
//!   packets is noticed within that time.

mod connection;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::wire::{Heartbeat, WireFrame, WIRE_VERSION};
use mmsub_events::bus::EventSink;
use mmsub_events::event::MessageEvent;
use mmsub_events::hub::{FanoutHub, InterestObserver};
use mmsub_metrics::Metrics;

/// How a gateway finds and talks to relays; each has a flag in the `mmsub` binary.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// `host:port` entries; a name may resolve to many relays.
    pub relays: Vec<String>,
    /// How often relay names are resolved again (a new relay joins the links).
    pub resolve_interval: Duration,
    /// First wait before reconnecting to a relay that went away.
    pub reconnect_min: Duration,
    /// Longest wait between reconnect attempts (the wait doubles up to it).
    pub reconnect_max: Duration,
    /// How long a new subscription waits for the relays to confirm its channel.
    pub ready_timeout: Duration,
    /// How often delivered offsets are acknowledged.
    pub ack_interval: Duration,
    /// Liveness of version 2 links.
    pub heartbeat: Heartbeat,
    /// The newest wire version this gateway speaks: [`WIRE_VERSION`], or 1 to behave as a
    /// gateway of the previous release during a rolling upgrade.
    pub wire_version: u16,
}

impl Default for LinkSettings {
    fn default() -> Self {
        Self {
            relays: vec!["127.0.0.1:7400".into()],
            resolve_interval: Duration::from_secs(10),
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(1),
            ready_timeout: Duration::from_secs(10),
            ack_interval: Duration::from_millis(20),
            heartbeat: Heartbeat::default(),
            wire_version: WIRE_VERSION,
        }
    }
}

/// The gateway's side of the relay tier; see the module documentation.
pub struct RelayLinks {
    /// `mmsub_gateway_relay_links` follows `connected`.
    metrics: Arc<Metrics>,
    hub: Arc<FanoutHub>,
    state: Arc<Mutex<Interest>>,
    /// Newest offset delivered, per partition.
    delivered: Mutex<HashMap<i32, i64>>,
    /// Links connected now (their count is part of the gateway's readiness).
    connected: watch::Sender<usize>,
    /// Relays of the first discovery round that have not made their first connect attempt
    /// yet (1 until the first round resolved). A subscription waits for 0: otherwise a
    /// gateway that just started could admit one before its link to some relay attached, and
    /// that relay's events in between would never reach it (it has no offsets for that relay's
    /// partitions yet, so no catch-up could cover them).
    first_attempts: watch::Sender<usize>,
    ready_timeout: Duration,
}

#[derive(Default)]
struct Interest {
    next_seq: u64,
    /// channel → the seq of its `Watch`.
    watched: HashMap<String, u64>,
    next_link: u64,
    links: HashMap<u64, Link>,
}

struct Link {
    frames: mpsc::UnboundedSender<WireFrame>,
    confirmed: watch::Receiver<u64>,
}

impl RelayLinks {
    /// Installs itself as `hub`'s interest observer and starts following `settings.relays`.
    pub fn start(
        hub: Arc<FanoutHub>,
        settings: LinkSettings,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let links = Arc::new(Self {
            metrics,
            hub: hub.clone(),
            state: Arc::new(Mutex::new(Interest::default())),
            delivered: Mutex::new(HashMap::new()),
            connected: watch::Sender::new(0),
            first_attempts: watch::Sender::new(1),
            ready_timeout: settings.ready_timeout,
        });
        hub.set_observer(links.clone());
        tokio::spawn(discover(links.clone(), settings, shutdown));
        links
    }

    /// Relays connected now.
    pub fn connected(&self) -> usize {
        *self.connected.borrow()
    }

    /// Registers a connected link: it gets every watched channel, oldest watch first, so its
    /// confirmations stay cumulative.
    fn attach(
        &self,
        frames: mpsc::UnboundedSender<WireFrame>,
        confirmed: watch::Receiver<u64>,
    ) -> u64 {
        let mut state = self.state.lock().expect("links lock poisoned");
        let mut watched: Vec<(&String, &u64)> = state.watched.iter().collect();
        watched.sort_by_key(|(_, seq)| **seq);
        for (channel, seq) in watched {
            let _ = frames.send(WireFrame::Watch {
                seq: *seq,
                channel: channel.clone(),
            });
        }
        state.next_link += 1;
        let id = state.next_link;
        state.links.insert(id, Link { frames, confirmed });
        self.connected.send_modify(|n| *n += 1);
        self.metrics.relay.relay_links(self.connected());
        id
    }

    fn detach(&self, id: u64) {
        if self
            .state
            .lock()
            .expect("links lock poisoned")
            .links
            .remove(&id)
            .is_some()
        {
            self.connected.send_modify(|n| *n -= 1);
            self.metrics.relay.relay_links(self.connected());
        }
    }

    /// The newest offset delivered, per partition (what a `Hello` and the heartbeat report).
    fn delivered(&self) -> Vec<(i32, i64)> {
        let delivered = self.delivered.lock().expect("offsets lock poisoned");
        delivered.iter().map(|(p, o)| (*p, *o)).collect()
    }

    /// A relay's `Sent` mark: every event of `partition` up to `offset` this gateway watches
    /// reached it. Returns whether that moved the partition on.
    fn mark(&self, partition: i32, offset: i64) -> bool {
        let mut delivered = self.delivered.lock().expect("offsets lock poisoned");
        let newest = delivered.entry(partition).or_insert(-1);
        let moved = offset > *newest;
        *newest = (*newest).max(offset);
        moved
    }

    /// An event from a relay: delivered unless this partition already got to `offset`.
    fn deliver(&self, partition: i32, offset: i64, payload: &[u8]) {
        {
            let mut delivered = self.delivered.lock().expect("offsets lock poisoned");
            let newest = delivered.entry(partition).or_insert(-1);
            if offset <= *newest {
                tracing::debug!(
                    partition,
                    offset,
                    newest = *newest,
                    "a repeated event was dropped"
                );
                return;
            }
            *newest = offset;
        }
        match MessageEvent::decode(payload) {
            Ok(event) => {
                tracing::debug!(partition, offset, post = %event.post.id, "received");
                self.hub.deliver(Arc::new(event));
            }
            Err(e) => tracing::warn!(partition, offset, error = %e, "an event was skipped"),
        }
    }
}

impl InterestObserver for RelayLinks {
    fn watch(&self, channel_id: &str) {
        let mut state = self.state.lock().expect("links lock poisoned");
        state.next_seq += 1;
        let seq = state.next_seq;
        state.watched.insert(channel_id.to_owned(), seq);
        for link in state.links.values() {
            let _ = link.frames.send(WireFrame::Watch {
                seq,
                channel: channel_id.to_owned(),
            });
        }
    }

    fn unwatch(&self, channel_id: &str) {
        let mut state = self.state.lock().expect("links lock poisoned");
        state.watched.remove(channel_id);
        for link in state.links.values() {
            let _ = link.frames.send(WireFrame::Unwatch {
                channel: channel_id.to_owned(),
            });
        }
    }

    fn ready(&self, channel_id: &str) -> BoxFuture<'static, Result<(), String>> {
        let mut first_attempts = self.first_attempts.subscribe();
        let links = self.state.clone();
        let channel_id = channel_id.to_owned();
        let timeout = self.ready_timeout;
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let started = tokio::time::timeout_at(deadline, first_attempts.wait_for(|n| *n == 0))
                .await
                .is_ok();
            if !started {
                return Err(
                    "The relays did not confirm the subscription in time; try again.".into(),
                );
            }
            let (seq, confirmations) = {
                let state = links.lock().expect("links lock poisoned");
                let seq = state.watched.get(&channel_id).copied().unwrap_or(0);
                let confirmations: Vec<_> =
                    state.links.values().map(|l| l.confirmed.clone()).collect();
                (seq, confirmations)
            };
            if confirmations.is_empty() {
                return Err("No relay is reachable from this gateway; try again shortly.".into());
            }
            let all =
                futures::future::join_all(confirmations.into_iter().map(|mut c| async move {
                    // A link that drops meanwhile re-sends everything when it reconnects.
                    let _ = c.wait_for(|confirmed| *confirmed >= seq).await;
                }));
            tokio::time::timeout_at(deadline, all)
                .await
                .map(|_| ())
                .map_err(|_| {
                    "The relays did not confirm the subscription in time; try again.".to_owned()
                })
        })
    }
}

/// Resolves the relay entries now and every `resolve_interval`; one link task per address.
async fn discover(links: Arc<RelayLinks>, settings: LinkSettings, shutdown: CancellationToken) {
    let mut running: HashMap<SocketAddr, CancellationToken> = HashMap::new();
    let mut first_round = true;
    loop {
        let mut found = HashSet::new();
        for entry in &settings.relays {
            match tokio::net::lookup_host(entry.as_str()).await {
                Ok(addrs) => found.extend(addrs),
                Err(e) => tracing::warn!(relay = %entry, error = %e, "resolving a relay failed"),
            }
        }
        running.retain(|addr, stop| {
            let keep = found.contains(addr);
            if !keep {
                tracing::info!(relay = %addr, "relay no longer listed");
                stop.cancel();
            }
            keep
        });
        if first_round {
            links.first_attempts.send_replace(found.len());
        }
        for addr in found {
            running.entry(addr).or_insert_with(|| {
                let stop = shutdown.child_token();
                tokio::spawn(connection::follow(
                    links.clone(),
                    addr,
                    settings.clone(),
                    stop.clone(),
                    first_round,
                ));
                stop
            });
        }
        first_round = false;
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(settings.resolve_interval) => {}
        }
    }
}
