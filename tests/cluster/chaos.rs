//! The chaos soak: the cluster under steady load for a bounded time while faults of every kind
//! in the matrix are injected one at a time from a seeded schedule. Each fault lasts longer
//! than its detection time (the heartbeat and session timeouts) and mutations are sent during
//! it; then it is healed (a killed or stopped node is started again on its ports) and the
//! cluster gets a moment before the next. At the end every publisher sends its channel's end
//! marker, every subscriber reads to it, and one JSON line is printed: the seed, messages
//! acknowledged and delivered, lost, duplicated, out of order, and every fault with its time.
//!
//! `MMSUB_CHAOS_SECS` bounds the run (default 300, five minutes); the suite's test command runs
//! a short one. `MMSUB_CHAOS_SEED` replays a schedule; `MMSUB_CHAOS_REPORT` also writes the
//! line to that file.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::clients::{end_marker, graphql, subscriber, user, Login, Seen};
use super::harness::{self, tansu_or_skip, Cluster, Options, HEARTBEAT_TIMEOUT};
use super::{send, stop, ONE_CLUSTER};

const CHANNELS: usize = 20;
const SUBSCRIBERS: usize = 120;
/// How long a fault lasts: past the heartbeat timeout and the relays' session timeout (3 s).
const HOLD: Duration = Duration::from_secs(6);
/// Time between healing one fault and injecting the next.
const CALM: Duration = Duration::from_secs(2);
/// How long, after the run, every subscriber has to read to its channel's end.
const DRAIN: Duration = Duration::from_secs(120);
/// The nodes' access-token lifetime: far shorter than the contract's 30 minutes, so that even
/// the suite's short run sees every socket closed at its token's expiry (4403) and resumed with
/// a renewed one, and a long run is not bounded by the lifetime.
const TOKEN_TTL: Duration = Duration::from_secs(90);

/// Every kind of fault in the matrix that can be healed in place.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Chaos {
    KillRelay,
    StopRelay,
    KillGateway,
    StopGateway,
    FreezeGateway,
    PartitionLink,
    FreezeBroker,
    KillApi,
    StopApi,
    MattermostDown,
}

const KINDS: [Chaos; 10] = [
    Chaos::KillRelay,
    Chaos::StopRelay,
    Chaos::KillGateway,
    Chaos::StopGateway,
    Chaos::FreezeGateway,
    Chaos::PartitionLink,
    Chaos::FreezeBroker,
    Chaos::KillApi,
    Chaos::StopApi,
    Chaos::MattermostDown,
];

/// splitmix64: a seeded schedule needs no more than this.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Every kind once, in a seeded order: a run of ten faults covers them all.
    fn round(&mut self) -> Vec<Chaos> {
        let mut kinds = KINDS.to_vec();
        for i in (1..kinds.len()).rev() {
            kinds.swap(i, self.below(i + 1));
        }
        kinds
    }
}

/// One channel's publisher: numbered messages until `stop`, alternating API nodes; a failed
/// one is not sent again. Then the end marker, until acknowledged.
async fn publish(
    http: reqwest::Client,
    apis: Vec<String>,
    login: Arc<Login>,
    channel: String,
    acked: Arc<Mutex<Vec<bool>>>,
    failed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) {
    let mut turn = 0usize;
    let mut n = 0usize;
    // Every fault heals within seconds: failing for longer than this since the last success
    // means sending never recovered.
    let mut last_success = Instant::now();
    loop {
        let ending = stop.load(Ordering::Relaxed);
        let text = if ending {
            end_marker(&channel)
        } else {
            format!("{channel}:{n}")
        };
        let api = &apis[turn % apis.len()];
        turn += 1;
        match send(&http, api, &login.token(), &channel, &text).await {
            Ok(()) if ending => return,
            Ok(()) => {
                last_success = Instant::now();
                acked.lock().unwrap().push(true);
            }
            Err(e) => {
                assert!(
                    last_success.elapsed() < DRAIN,
                    "{channel}: sending never recovered: nothing acknowledged for {DRAIN:?}, last error {e}"
                );
                failed.fetch_add(1, Ordering::Relaxed);
                if !ending {
                    acked.lock().unwrap().push(false);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if !ending {
            n += 1;
            // A steady, modest rate: the point is the faults, not the ceiling.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Injects `kind`, holds it, heals it; returns what was hit.
async fn inject(kind: Chaos, cluster: &mut Cluster, rng: &mut Rng) -> String {
    let relay = rng.below(cluster.relays.len());
    let gateway = rng.below(cluster.gateways.len());
    let api = rng.below(cluster.apis.len());
    match kind {
        Chaos::KillRelay | Chaos::StopRelay => {
            if kind == Chaos::KillRelay {
                cluster.relays[relay].process.kill();
            } else {
                stop(&cluster.relays[relay].process).await;
            }
            tokio::time::sleep(HOLD).await;
            let port = cluster.relays[relay].relay_port;
            let node = cluster.spawn_node("relay", relay, harness::free_port(), port);
            cluster.wait_ready(&node).await;
            cluster.relays[relay] = node;
            format!("relay{relay}")
        }
        Chaos::KillGateway | Chaos::StopGateway => {
            let port = cluster.gateways[gateway].http_port;
            if kind == Chaos::KillGateway {
                cluster.gateways[gateway].process.kill();
            } else {
                stop(&cluster.gateways[gateway].process).await;
            }
            tokio::time::sleep(HOLD).await;
            let node = cluster.spawn_node("gateway", gateway, port, None);
            cluster.wait_ready(&node).await;
            cluster.gateways[gateway] = node;
            format!("gateway{gateway}")
        }
        Chaos::FreezeGateway => {
            cluster.gateways[gateway].process.signal("STOP");
            tokio::time::sleep(HOLD).await;
            cluster.gateways[gateway].process.signal("CONT");
            format!("gateway{gateway}")
        }
        Chaos::PartitionLink => {
            let proxy = cluster.proxy.as_ref().expect("a partitionable cluster");
            proxy.partition();
            tokio::time::sleep(HOLD).await;
            proxy.heal();
            "gateway0-relay0".into()
        }
        Chaos::FreezeBroker => {
            cluster.broker.signal("STOP");
            tokio::time::sleep(HOLD).await;
            cluster.broker.signal("CONT");
            "broker".into()
        }
        Chaos::KillApi | Chaos::StopApi => {
            let port = cluster.apis[api].http_port;
            if kind == Chaos::KillApi {
                cluster.apis[api].process.kill();
            } else {
                stop(&cluster.apis[api].process).await;
            }
            tokio::time::sleep(HOLD).await;
            let node = cluster.spawn_node("api", api, port, None);
            cluster.wait_ready(&node).await;
            cluster.apis[api] = node;
            format!("api{api}")
        }
        Chaos::MattermostDown => {
            cluster.standin.go_down();
            tokio::time::sleep(HOLD).await;
            cluster.standin.come_back().await;
            "mattermost".into()
        }
    }
}

/// How long a subscriber may hear nothing before the monitor reports it: past every fault's
/// hold and its detection time.
const SILENT: Duration = Duration::from_secs(10);
/// A subscriber silent this long while its channel is being sent to has stalled: the soak
/// stops and fails (a connected subscriber must not fall this far behind, and past about a
/// thousand messages it could not even resume).
const STALLED: Duration = Duration::from_secs(45);

/// Watches the subscribers while messages are sent: every second, who has heard nothing for
/// [`SILENT`] (printed, with the gateways they are on, so a stall can be matched to the faults
/// and the nodes' logs). Returns the longest silence, and a description of the first stall.
async fn monitor(
    seen: Vec<Arc<Seen>>,
    began: Instant,
    stop: Arc<AtomicBool>,
) -> (Duration, Option<String>) {
    let mut longest = Duration::ZERO;
    let mut reported = Instant::now() - SILENT;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = Instant::now();
        let mut silent = [0usize; 3];
        let mut worst = (Duration::ZERO, 0);
        for (i, s) in seen.iter().enumerate() {
            let quiet = now - s.last_message.lock().unwrap().unwrap_or(began);
            longest = longest.max(quiet);
            if quiet > worst.0 {
                worst = (quiet, i);
            }
            if quiet > SILENT {
                silent[s.gateway.load(Ordering::Relaxed) % 3] += 1;
            }
        }
        let line = format!(
            "at {:?}, subscribers silent for over {SILENT:?} by gateway: {silent:?}; longest {:?} (subscriber {}, on gateway {})",
            began.elapsed(),
            worst.0,
            worst.1,
            seen[worst.1].gateway.load(Ordering::Relaxed)
        );
        if worst.0 > STALLED {
            stop.store(true, Ordering::Relaxed);
            return (longest, Some(line));
        }
        if silent.iter().sum::<usize>() > 0 && now - reported >= Duration::from_secs(5) {
            reported = now;
            eprintln!("chaos: {line}");
        }
    }
    (longest, None)
}

/// What the subscribers got against what was acknowledged.
#[derive(Default, Debug)]
struct Tally {
    /// Deliveries owed: each acknowledged message once per subscriber of its channel.
    owed: usize,
    delivered: usize,
    lost: usize,
    duplicates: usize,
    out_of_order: usize,
    /// Received but never acknowledged (a mutation that failed may still have been posted,
    /// so this is counted, not an error).
    unacknowledged: usize,
    /// Received but never sent at all.
    unsent: usize,
    /// For the first subscribers that lack something: who, and which messages.
    samples: Vec<String>,
}

impl Tally {
    fn add(&mut self, who: &str, channel: &str, got: &[String], acked: &[bool]) {
        let mut seen = vec![false; acked.len()];
        let mut last: Option<usize> = None;
        for text in got {
            let Some(n) = text
                .strip_prefix(&format!("{channel}:"))
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *n < acked.len())
            else {
                self.unsent += 1;
                continue;
            };
            if seen[n] {
                self.duplicates += 1;
                if self.samples.len() < 20 {
                    self.samples.push(format!("{who} got {text} twice"));
                }
                continue;
            }
            seen[n] = true;
            if last.is_some_and(|l| n < l) {
                self.out_of_order += 1;
            }
            last = Some(n);
            if acked[n] {
                self.delivered += 1;
            } else {
                self.unacknowledged += 1;
            }
        }
        let mut lacks = Vec::new();
        for (n, acked) in acked.iter().enumerate() {
            if *acked {
                self.owed += 1;
                if !seen[n] {
                    self.lost += 1;
                    lacks.push(n);
                }
            }
        }
        if !lacks.is_empty() && self.samples.len() < 20 {
            self.samples.push(format!(
                "{who} lacks {} of {channel}: {:?}",
                lacks.len(),
                &lacks[..lacks.len().min(12)]
            ));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak_loses_duplicates_and_reorders_nothing_acknowledged() {
    let name = "chaos_soak_loses_duplicates_and_reorders_nothing_acknowledged";
    let Some(tansu) = tansu_or_skip(name) else {
        return;
    };
    let secs: u64 = std::env::var("MMSUB_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let seed: u64 = std::env::var("MMSUB_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        });
    eprintln!("chaos soak: seed {seed}, {secs} s (MMSUB_CHAOS_SEED={seed} replays this schedule)");
    let _one = ONE_CLUSTER.lock().await;
    let options = Options {
        partitionable: true,
        // A 30-minute run puts some 100,000 records on each partition, which tansu's memory
        // storage takes about 100 ms per fetch to read (and answers empty past the wait).
        fetch_wait_max: Some(Duration::from_millis(1000)),
        access_token_ttl: Some(TOKEN_TTL),
        ..Options::default()
    };
    let mut cluster = Cluster::start_with(&tansu, 2, 2, 3, options).await;
    let api = cluster.apis[0].url();
    let publisher = user(&cluster, &api, "publisher").await;
    let reader = user(&cluster, &api, "reader").await;
    let mut channels = Vec::new();
    for k in 0..CHANNELS {
        let name = format!("chaos-{k}");
        let data = graphql(&cluster, &api, "mutation($n: String!) { channelCreate(channelName: $n, members: [\"reader\"]) { status } }", json!({ "n": name }), Some(&publisher)).await;
        assert_eq!(data["data"]["channelCreate"]["status"], "OK", "{data}");
        channels.push(name);
    }
    // Both tokens are renewed three times a lifetime; a socket keeps the token it connected
    // with, so it is closed when that one expires and connects again with the newest.
    let (publisher, reader) = (
        Login::new(&cluster, publisher),
        Login::new(&cluster, reader),
    );
    let renewers = [
        publisher.keep_renewed(TOKEN_TTL / 3),
        reader.keep_renewed(TOKEN_TTL / 3),
    ];
    let ws_urls: Vec<String> = cluster
        .gateways
        .iter()
        .map(|g| format!("ws://127.0.0.1:{}/ws/graphql/", g.http_port))
        .collect();
    let resumed = Arc::new(AtomicUsize::new(0));
    let seen: Vec<Arc<Seen>> = (0..SUBSCRIBERS).map(|_| Arc::default()).collect();
    let subscribers: Vec<_> = (0..SUBSCRIBERS)
        .map(|i| {
            tokio::spawn(subscriber(
                ws_urls.clone(),
                i % 3,
                reader.clone(),
                channels[i % CHANNELS].clone(),
                resumed.clone(),
                seen[i].clone(),
            ))
        })
        .collect();
    let live_by = Instant::now() + Duration::from_secs(60);
    while cluster.live_subscriptions().await < SUBSCRIBERS as u64 {
        assert!(
            Instant::now() < live_by,
            "subscriptions did not become live"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let stop_sending = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let api_urls: Vec<String> = cluster.apis.iter().map(harness::Node::url).collect();
    let acked: Vec<Arc<Mutex<Vec<bool>>>> = (0..CHANNELS).map(|_| Arc::default()).collect();
    let publishers: Vec<_> = channels
        .iter()
        .enumerate()
        .map(|(k, channel)| {
            tokio::spawn(publish(
                cluster.http.clone(),
                api_urls.clone(),
                publisher.clone(),
                channel.clone(),
                acked[k].clone(),
                failed.clone(),
                stop_sending.clone(),
            ))
        })
        .collect();

    // The schedule: rounds of every kind in a seeded order, until the time is up.
    let began = Instant::now();
    let until = began + Duration::from_secs(secs);
    let halt = Arc::new(AtomicBool::new(false));
    let watch = tokio::spawn(monitor(seen.clone(), began, halt.clone()));
    let mut rng = Rng(seed);
    let mut faults = Vec::new();
    tokio::time::sleep(CALM).await;
    'schedule: loop {
        for kind in rng.round() {
            if Instant::now() + HOLD + CALM > until || halt.load(Ordering::Relaxed) {
                break 'schedule;
            }
            let at = began.elapsed();
            eprintln!(
                "chaos: {kind:?} at {:?} after the start ({:?} since the epoch)",
                at,
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
            );
            let target = inject(kind, &mut cluster, &mut rng).await;
            faults.push(json!({
                "kind": format!("{kind:?}"),
                "target": target,
                "at_ms": at.as_millis() as u64,
                "healed_ms": began.elapsed().as_millis() as u64,
            }));
            tokio::time::sleep(CALM).await;
        }
    }
    halt.store(true, Ordering::Relaxed);
    let (longest_silence, stall) = watch.await.expect("the monitor");
    if let Some(stall) = stall {
        panic!(
            "chaos seed {seed}: a subscriber stalled: {stall}\nfaults: {faults:?}\n{}\n{}",
            super::clients::incomplete(&seen, &channels, 0),
            cluster.logs()
        );
    }
    stop_sending.store(true, Ordering::Relaxed);
    for p in publishers {
        p.await.expect("publisher");
    }

    let mut tally = Tally::default();
    let drained_by = Instant::now() + DRAIN;
    for (i, s) in subscribers.into_iter().enumerate() {
        let channel = &channels[i % CHANNELS];
        let got = match tokio::time::timeout_at(drained_by.into(), s).await {
            Ok(Ok(got)) => got,
            Ok(Err(e)) => panic!(
                "chaos seed {seed}: subscriber {i} of {channel} failed: {e}\nfaults: {faults:?}\n{}",
                cluster.logs()
            ),
            Err(_) => panic!(
                "chaos seed {seed}: subscriber {i} of {channel} did not get its channel's end\n{}\nfaults: {faults:?}\n{}",
                super::clients::incomplete(&seen, &channels, 0),
                cluster.logs()
            ),
        };
        let who = format!(
            "subscriber {i} (first gateway {}, connections {})",
            i % 3,
            seen[i].connections.load(Ordering::Relaxed)
        );
        let before = tally.duplicates;
        tally.add(&who, channel, &got, &acked[i % CHANNELS].lock().unwrap());
        if tally.duplicates > before && tally.samples.len() < 20 {
            tally.samples.push(format!(
                "{who}'s connections: {:?}",
                seen[i].events.lock().unwrap()
            ));
        }
    }
    for renewer in renewers {
        renewer.abort();
    }
    let expiry_closes: usize = seen
        .iter()
        .map(|s| {
            s.close_codes
                .lock()
                .unwrap()
                .iter()
                .filter(|c| **c == 4403)
                .count()
        })
        .sum();
    let acknowledged: usize = acked
        .iter()
        .map(|a| a.lock().unwrap().iter().filter(|a| **a).count())
        .sum();
    let line = json!({
        "seed": seed,
        "secs": secs,
        "heartbeat_timeout_ms": HEARTBEAT_TIMEOUT.as_millis() as u64,
        "subscribers": SUBSCRIBERS,
        "channels": CHANNELS,
        "acknowledged": acknowledged,
        "deliveries_owed": tally.owed,
        "delivered": tally.delivered,
        "lost": tally.lost,
        "duplicates": tally.duplicates,
        "out_of_order": tally.out_of_order,
        "unsent": tally.unsent,
        "failed_mutations": failed.load(Ordering::Relaxed),
        "delivered_though_failed": tally.unacknowledged,
        "resumes": resumed.load(Ordering::Relaxed),
        "token_ttl_secs": TOKEN_TTL.as_secs(),
        "token_renewals": publisher.renewals.load(Ordering::Relaxed) + reader.renewals.load(Ordering::Relaxed),
        "closed_at_token_expiry": expiry_closes,
        "resumes_refused_while_mattermost_down": seen.iter().map(|s| s.unavailable.load(Ordering::Relaxed)).sum::<usize>(),
        "longest_silence_ms": longest_silence.as_millis() as u64,
        "faults": faults,
    })
    .to_string();
    println!("{line}");
    eprintln!("{line}");
    if let Ok(path) = std::env::var("MMSUB_CHAOS_REPORT") {
        std::fs::write(path, format!("{line}\n")).expect("the chaos report is written");
    }
    assert_eq!(
        (
            tally.lost,
            tally.duplicates,
            tally.out_of_order,
            tally.unsent
        ),
        (0, 0, 0, 0),
        "chaos seed {seed}: lost, duplicates, out of order, unsent: {line}\n{}\n{}",
        tally.samples.join("\n"),
        cluster.logs()
    );
    assert_eq!(tally.delivered, tally.owed, "{line}");
    // Every node is this build: a link that fell back to the previous release's wire (which has
    // no hello and no heartbeat, so a partition of it loses what it held) took a relay that was
    // down for an old one.
    assert_eq!(
        cluster.nodes_that_logged("speaking wire version 1"),
        Vec::<String>::new(),
        "chaos seed {seed}: nodes that fell back to relay wire version 1 with no old node in the cluster"
    );
    assert!(acknowledged > 0, "messages were acknowledged: {line}");
    // Sockets outlive their token's expiry by nothing: a run longer than the lifetime has
    // subscribers closed with 4403, which resumed with a renewed token (the tally above).
    if Duration::from_secs(secs) > TOKEN_TTL {
        assert!(
            expiry_closes > 0,
            "sockets were closed at their token's expiry: {line}"
        );
    }
    // A round is every kind once, in the seed's order.
    if secs >= 150 {
        assert!(
            faults.len() >= KINDS.len(),
            "every kind of fault ran in {secs} s: {line}"
        );
    }
}
