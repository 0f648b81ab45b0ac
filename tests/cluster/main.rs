//! The cluster tests: a broker, 2 API nodes, 2 relays and 3 gateways as separate processes on
//! loopback; 300 subscribers over 30 channels spread across the gateways; 3,000 messages sent
//! through both API nodes, each channel's one after another. The fault matrix: each case
//! injects one failure a third of the way in, while messages flow, and checks what mmsub
//! promises (Kafka's): every subscriber gets every message whose mutation answered success
//! exactly once and in order, and nothing that was not sent. Only a mutation that answered an
//! error may be missing, and each case says which mutations may fail and how.
//!
//! The cases: nothing; a relay `kill -9`; a relay joining; a gateway `kill -9` (its clients
//! resume on another gateway with `afterMessageId`, and it comes back); the broker frozen
//! (SIGSTOP) for 10 s, and the same followed by a relay's SIGTERM; an API node `kill -9`;
//! both relays killed, then one started again; Mattermost down for 10 s; SIGTERM (graceful
//! shutdown) to a gateway, an API node and a relay; a gateway frozen (reading nothing) for
//! 30 s; a network partition between a gateway and a relay for 10 s (through `proxy.rs`),
//! and the same with another gateway's clients resuming on that gateway as it is caught up;
//! and a rolling upgrade from nodes speaking the previous release's relay wire. `history.rs`
//! runs the cluster with the ScyllaDB history tier (ScyllaDB lost and back is there).
//!
//! The cases run one at a time (each is a whole cluster on two cores).

mod chaos;
mod clients;
mod harness;
mod history;
mod proxy;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clients::SUBSCRIPTION;
use clients::{connect, end_marker, graphql, incomplete, subscriber, texts, user, Seen};
use futures::SinkExt;
use harness::{tansu_or_skip, Cluster, Options, HEARTBEAT_TIMEOUT};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const SUBSCRIBERS: usize = 300;
const CHANNELS: usize = 30;
const MESSAGES: usize = 3_000;
const PER_CHANNEL: usize = MESSAGES / CHANNELS;
const DEADLINE: Duration = Duration::from_secs(150);
/// How long the broker stays frozen, Mattermost stays down and the partition lasts.
const OUTAGE: Duration = Duration::from_secs(10);
/// How long the slow gateway reads nothing.
const SLOW_GATEWAY: Duration = Duration::from_secs(30);
/// How late past the heartbeat timeout a link's loss may be noticed (scheduling on 2 cores).
const DETECTION_SLACK: Duration = Duration::from_millis(1500);

/// One case at a time.
static ONE_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What happens to the cluster while messages flow.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Fault {
    None,
    KillRelay,
    AddRelay,
    /// `kill -9`; started again on the same port once two thirds are sent.
    KillGateway,
    /// SIGSTOP for [`OUTAGE`], then SIGCONT.
    FreezeBroker,
    /// [`Fault::FreezeBroker`], then at once SIGTERM to the first relay: the group must give
    /// the survivor every partition (a 30-minute soak once saw no assignment for 60 s).
    FreezeBrokerThenStopRelay,
    /// `kill -9` of a broker that stores in S3 (moto's server on loopback); started again on
    /// the same port and storage after [`OUTAGE`].
    RestartBroker,
    /// `kill -9` of the first API node, for good.
    KillApi,
    /// Both relays `kill -9`; the first started again once half are sent.
    KillBothRelays,
    /// Mattermost refuses connections for [`OUTAGE`].
    MattermostDown,
    /// SIGTERM to the first gateway (it closes its sockets with 1001 after the drain); started
    /// again on the same port once two thirds are sent.
    StopGateway,
    /// SIGTERM to the first API node, for good.
    StopApi,
    /// SIGTERM to the first relay: it commits, leaves the group and exits; the survivor
    /// takes its partitions over.
    StopRelay,
    /// The first gateway stopped (SIGSTOP) for [`SLOW_GATEWAY`]: it reads nothing, from relays or
    /// clients. The relays let it go at the heartbeat timeout; when it runs again it
    /// reconnects and is sent what it missed.
    FreezeGateway,
    /// The link between the first gateway and the first relay goes silent for [`OUTAGE`]
    /// (the proxy drops everything): both ends notice within the heartbeat timeout, and
    /// the healed link brings what the gateway missed.
    PartitionLink,
    /// [`Fault::PartitionLink`], and near its end gateway 3 `kill -9`: its clients resume on
    /// the first gateway while a relay catches that gateway up, re-sending records older than
    /// their anchors (which they must not get again).
    ResumeOnHealingGateway,
    /// The second relay and the third gateway start as the previous release (relay wire
    /// version 1) beside this build's nodes; under load the relay is upgraded (SIGTERM, this
    /// build on the same port), then the gateway.
    RollingUpgrade,
}

impl Fault {
    /// Whether subscriber `i` (first on gateway `i % 3`) keeps its one connection through it.
    fn keeps_connection(self, i: usize) -> bool {
        match self {
            Fault::KillGateway | Fault::StopGateway => false,
            // Its own gateway may close it: frozen, it missed the client's pongs.
            Fault::FreezeGateway => i % 3 != 0,
            // Its gateway is upgraded, or killed: it resumes on another.
            Fault::RollingUpgrade | Fault::ResumeOnHealingGateway => i % 3 != 2,
            _ => true,
        }
    }

    /// Messages each channel's publisher sends: fewer on the broker that stores in S3, which
    /// takes some 20 a second here (every record and commit is a PUT to moto's server).
    fn per_channel(self) -> usize {
        match self {
            Fault::RestartBroker => 30,
            // Two nodes are upgraded one after the other, the relay first (its restart and
            // rejoin take seconds): twice the messages keep the gateway's upgrade well inside
            // the stream, so its clients are still receiving when it closes them. At 3,000 the
            // stream could end within a second of that close, and some clients had finished.
            Fault::RollingUpgrade => 2 * PER_CHANNEL,
            _ => PER_CHANNEL,
        }
    }

    fn options(self) -> Options {
        match self {
            Fault::PartitionLink | Fault::ResumeOnHealingGateway => Options {
                partitionable: true,
                ..Options::default()
            },
            Fault::RollingUpgrade => Options {
                wire_v1: vec!["relay1".into(), "gateway2".into()],
                ..Options::default()
            },
            _ => Options::default(),
        }
    }
}

macro_rules! case {
    ($name:ident, $fault:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            run($fault, stringify!($name)).await;
        }
    };
}

case!(
    every_subscriber_gets_every_message_once_in_order,
    Fault::None
);
case!(
    a_relay_killed_mid_stream_loses_and_duplicates_nothing,
    Fault::KillRelay
);
case!(
    a_relay_joining_mid_stream_takes_partitions_without_loss,
    Fault::AddRelay
);
case!(
    a_killed_gateways_clients_resume_on_another_gateway,
    Fault::KillGateway
);
case!(
    a_broker_frozen_for_10_s_fails_mutations_in_time_and_loses_nothing,
    Fault::FreezeBroker
);
case!(
    a_relay_stopped_as_a_frozen_broker_returns_hands_its_partitions_over,
    Fault::FreezeBrokerThenStopRelay
);
case!(
    a_broker_killed_and_restarted_on_durable_storage_loses_nothing_acknowledged,
    Fault::RestartBroker
);
case!(
    an_api_node_killed_mid_publish_loses_nothing_it_acknowledged,
    Fault::KillApi
);
case!(
    both_relays_killed_then_one_restarted_resumes_from_committed_offsets,
    Fault::KillBothRelays
);
case!(
    mattermost_down_for_10_s_fails_mutations_clearly_then_serves_again,
    Fault::MattermostDown
);
case!(
    a_gateway_stopped_by_sigterm_closes_with_1001_and_its_clients_resume,
    Fault::StopGateway
);
case!(
    an_api_node_stopped_by_sigterm_answers_every_mutation_it_accepted,
    Fault::StopApi
);
case!(
    a_relay_stopped_by_sigterm_commits_leaves_and_loses_nothing,
    Fault::StopRelay
);
case!(
    a_gateway_that_reads_nothing_for_30_s_is_let_go_then_sent_what_it_missed,
    Fault::FreezeGateway
);
case!(
    a_partitioned_relay_link_is_noticed_in_the_heartbeat_timeout_and_heals_without_loss,
    Fault::PartitionLink
);
case!(
    a_subscriber_resuming_on_a_gateway_being_caught_up_gets_nothing_twice,
    Fault::ResumeOnHealingGateway
);
case!(
    a_rolling_upgrade_from_the_previous_wire_version_loses_nothing,
    Fault::RollingUpgrade
);

/// A mutation that did not answer success.
#[derive(Debug)]
struct Failure {
    /// The message's number in its channel (`per_channel` for the end marker).
    n: usize,
    /// Which API node it went to.
    api: usize,
    /// Its channel and text.
    channel: String,
    text: String,
    sent_at: Instant,
    took: Duration,
    answer: String,
}

/// What one channel's publisher sent: which messages were acknowledged, and the failures.
#[derive(Debug)]
struct Sent {
    acked: Vec<bool>,
    failures: Vec<Failure>,
}

/// Sends one message; `Err` with what came back unless it answered success.
async fn send(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    channel: &str,
    text: &str,
) -> Result<(), String> {
    let answer = http
        .post(format!("{url}/graphql/"))
        .header("Authorization", format!("JWT {token}"))
        .timeout(Duration::from_secs(60))
        .json(&json!({
            "query": "mutation($c: String!, $t: String!) { textMessageSend(channelIdentifier: $c, textMessage: $t) { status message } }",
            "variables": { "c": channel, "t": text },
        }))
        .send()
        .await
        .map_err(|e| {
            if e.is_connect() {
                format!("refused: {e}")
            } else {
                format!("request failed: {e:?}")
            }
        })?;
    let body: Value = answer
        .json()
        .await
        .map_err(|e| format!("no JSON answer: {e}"))?;
    if body["data"]["textMessageSend"]["status"] == "OK" {
        Ok(())
    } else {
        Err(body.to_string())
    }
}

/// One channel's publisher: its messages in order, alternating between the API nodes; a
/// failed one is not sent again (a retry would post it twice), the next follows after a
/// pause. Then the end marker, until acknowledged.
async fn publish(
    http: reqwest::Client,
    apis: Vec<String>,
    token: String,
    k: usize,
    (channel, per_channel): (String, usize),
    attempts: Arc<AtomicUsize>,
    deadline: Instant,
) -> Sent {
    let mut sent = Sent {
        acked: vec![false; per_channel],
        failures: Vec::new(),
    };
    let mut n = 0;
    let mut turn = k;
    while n <= per_channel {
        assert!(
            Instant::now() < deadline,
            "{channel}: the end marker was never acknowledged: {:?}",
            sent.failures.last()
        );
        let api = turn % apis.len();
        turn += 1;
        let text = if n < per_channel {
            format!("{channel}:{n}")
        } else {
            end_marker(&channel)
        };
        let sent_at = Instant::now();
        let result = send(&http, &apis[api], &token, &channel, &text).await;
        attempts.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) if n < per_channel => sent.acked[n] = true,
            Ok(()) => break,
            Err(answer) => {
                sent.failures.push(Failure {
                    n,
                    api,
                    channel: channel.clone(),
                    text: text.clone(),
                    sent_at,
                    took: sent_at.elapsed(),
                    answer,
                });
                tokio::time::sleep(Duration::from_millis(100)).await;
                if n == per_channel {
                    continue;
                }
            }
        }
        n += 1;
    }
    sent
}

/// What one subscriber received against what its channel's publisher sent: every acknowledged
/// message, once, in order, and nothing that was not sent.
fn check(channel: &str, got: &[String], sent: &Sent) -> Result<(), String> {
    let mut last: Option<usize> = None;
    for text in got {
        let n = text
            .strip_prefix(&format!("{channel}:"))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n < sent.acked.len())
            .ok_or_else(|| format!("received {text:?}, which was not sent to {channel}"))?;
        if last.is_some_and(|l| n <= l) {
            return Err(format!(
                "{text:?} after {channel}:{}: a duplicate or out of order",
                last.unwrap()
            ));
        }
        last = Some(n);
    }
    let lost: Vec<usize> = (0..sent.acked.len())
        .filter(|n| sent.acked[*n] && !got.contains(&format!("{channel}:{n}")))
        .collect();
    if lost.is_empty() {
        Ok(())
    } else {
        Err(format!("acknowledged but never received: {lost:?}"))
    }
}

/// When the fault began and ended.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

async fn run(fault: Fault, name: &str) {
    let Some(tansu) = tansu_or_skip(name) else {
        return;
    };
    let mut options = fault.options();
    if fault == Fault::RestartBroker {
        let Some(moto) = harness::moto_or_skip(name) else {
            return;
        };
        options.durable = Some(moto);
        // Every fetch is a read from S3, slower than the default wait: tansu would answer
        // each one empty.
        options.fetch_wait_max = Some(Duration::from_millis(1000));
    }
    let _one = ONE_CLUSTER.lock().await;
    let mut cluster = Cluster::start_with(&tansu, 2, 2, 3, options).await;

    // A publisher and a reader (every subscriber reads as the same user), and the channels.
    let api = cluster.apis[0].url();
    let publisher = user(&cluster, &api, "publisher").await;
    let reader = user(&cluster, &api, "reader").await;
    let mut channels = Vec::new();
    for k in 0..CHANNELS {
        let name = format!("room-{k}");
        let data = graphql(&cluster, &api, "mutation($n: String!) { channelCreate(channelName: $n, members: [\"reader\"]) { status } }", json!({ "n": name }), Some(&publisher)).await;
        assert_eq!(data["data"]["channelCreate"]["status"], "OK", "{data}");
        channels.push(name);
    }

    // Subscribers, spread over the gateways.
    let ws_urls: Vec<String> = cluster
        .gateways
        .iter()
        .map(|g| format!("ws://127.0.0.1:{}/ws/graphql/", g.http_port))
        .collect();
    let resumed = Arc::new(AtomicUsize::new(0));
    let seen: Vec<Arc<Seen>> = (0..SUBSCRIBERS).map(|_| Arc::default()).collect();
    let reader = clients::Login::new(&cluster, reader.clone());
    let subscribers: Vec<_> = (0..SUBSCRIBERS)
        .map(|i| {
            let (urls, login, channel) = (
                ws_urls.clone(),
                reader.clone(),
                channels[i % CHANNELS].clone(),
            );
            let (resumed, seen) = (resumed.clone(), seen[i].clone());
            tokio::spawn(subscriber(urls, i % 3, login, channel, resumed, seen))
        })
        .collect();
    let deadline = Instant::now() + DEADLINE;
    while cluster.live_subscriptions().await < SUBSCRIBERS as u64 {
        assert!(
            Instant::now() < deadline,
            "subscriptions did not become live\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Messages: each channel's in order, alternating between the API nodes.
    let attempts = Arc::new(AtomicUsize::new(0));
    let api_urls: Vec<String> = cluster.apis.iter().map(harness::Node::url).collect();
    let publishers: Vec<_> = channels
        .iter()
        .enumerate()
        .map(|(k, channel)| {
            tokio::spawn(publish(
                cluster.http.clone(),
                api_urls.clone(),
                publisher.clone(),
                k,
                (channel.clone(), fault.per_channel()),
                attempts.clone(),
                deadline,
            ))
        })
        .collect();

    // The fault, a third of the way in.
    let sent_so_far = |share: usize| {
        let attempts = attempts.clone();
        async move {
            while attempts.load(Ordering::Relaxed) < CHANNELS * fault.per_channel() * share / 6 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    sent_so_far(2).await;
    let start = Instant::now();
    inject(fault, &mut cluster, sent_so_far).await;
    let window = Window {
        start,
        end: Instant::now(),
    };

    let mut sent = Vec::new();
    for p in publishers {
        sent.push(p.await.expect("publisher"));
    }
    for (i, s) in subscribers.into_iter().enumerate() {
        let channel = &channels[i % CHANNELS];
        let got = match tokio::time::timeout_at(deadline.into(), s).await {
            Ok(got) => got.expect("subscriber task"),
            Err(_) => panic!(
                "subscriber {i} of {channel} did not get its channel's end in time\n{}\n{}\n{}",
                incomplete(&seen, &channels, fault.per_channel()),
                cluster.status().await,
                cluster.logs()
            ),
        };
        if let Err(e) = check(channel, &got, &sent[i % CHANNELS]) {
            panic!("subscriber {i} of {channel}: {e}\n{}", cluster.logs());
        }
        if fault == Fault::StopGateway && i % 3 == 0 {
            let codes = seen[i].close_codes.lock().unwrap().clone();
            assert_eq!(
                codes,
                [1001],
                "subscriber {i} on the stopped gateway: closed with 1001 (going away)"
            );
        }
        if fault.keeps_connection(i) {
            let connections = seen[i].connections.load(Ordering::Relaxed);
            assert_eq!(
                connections,
                1,
                "subscriber {i} stayed connected through {fault:?}: {:?}",
                seen[i].events.lock().unwrap()
            );
        }
    }
    let failures: Vec<&Failure> = sent.iter().flat_map(|s| &s.failures).collect();
    check_failures(fault, &failures, window, |f| {
        cluster.standin.has_post(&f.channel, &f.text)
    });
    after(fault, &cluster, &resumed).await;
}

/// Injects `fault`; returns once it is over (or, for a lasting one, in place).
async fn inject<F, Fut>(fault: Fault, cluster: &mut Cluster, sent_so_far: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    match fault {
        Fault::None => {}
        Fault::KillRelay => {
            // Each relay owns some of the partitions; the survivor must take over the rest.
            for relay in &cluster.relays {
                let owned =
                    cluster.readyz(relay).await.expect("relay readyz")["partitions"].as_u64();
                assert!(
                    owned.unwrap_or(0) > 0,
                    "{} owns no partition\n{}",
                    relay.process.name,
                    cluster.logs()
                );
            }
            cluster.relays[0].process.kill();
        }
        Fault::AddRelay => cluster.start_spare_relay().await,
        Fault::KillGateway => {
            let port = cluster.gateways[0].http_port;
            cluster.gateways[0].process.kill();
            sent_so_far(4).await;
            let restarted = cluster.spawn_node("gateway", 3, port, None);
            cluster.wait_ready(&restarted).await;
            cluster.gateways[0] = restarted;
        }
        Fault::FreezeBroker => {
            cluster.broker.signal("STOP");
            tokio::time::sleep(OUTAGE).await;
            cluster.broker.signal("CONT");
        }
        Fault::FreezeBrokerThenStopRelay => {
            cluster.broker.signal("STOP");
            tokio::time::sleep(OUTAGE).await;
            cluster.broker.signal("CONT");
            stop(&cluster.relays[0].process).await;
        }
        Fault::RestartBroker => {
            cluster.broker.kill();
            tokio::time::sleep(OUTAGE).await;
            cluster.start_broker().await;
        }
        Fault::KillApi => cluster.apis[0].process.kill(),
        Fault::KillBothRelays => {
            for relay in &mut cluster.relays {
                relay.process.kill();
            }
            sent_so_far(3).await;
            let restarted = cluster.spawn_node(
                "relay",
                2,
                harness::free_port(),
                cluster.relays[0].relay_port,
            );
            cluster.wait_ready(&restarted).await;
            cluster.relays[0] = restarted;
        }
        Fault::MattermostDown => {
            cluster.standin.go_down();
            tokio::time::sleep(OUTAGE).await;
            cluster.standin.come_back().await;
        }
        Fault::StopGateway => {
            let port = cluster.gateways[0].http_port;
            stop(&cluster.gateways[0].process).await;
            sent_so_far(4).await;
            let restarted = cluster.spawn_node("gateway", 3, port, None);
            cluster.wait_ready(&restarted).await;
            cluster.gateways[0] = restarted;
        }
        Fault::StopApi => stop(&cluster.apis[0].process).await,
        Fault::StopRelay => stop(&cluster.relays[0].process).await,
        Fault::FreezeGateway => {
            let began = Instant::now();
            cluster.gateways[0].process.signal("STOP");
            // The relays let it go at the heartbeat timeout, so it holds nothing back: its
            // queue is dropped and its unacknowledged records no longer stop commits.
            tokio::time::sleep(HEARTBEAT_TIMEOUT + DETECTION_SLACK).await;
            for relay in &cluster.relays {
                let gateways =
                    cluster.readyz(relay).await.expect("relay readyz")["gateways"].as_u64();
                assert_eq!(
                    gateways,
                    Some(2),
                    "{} let the frozen gateway go within the heartbeat timeout\n{}",
                    relay.process.name,
                    cluster.logs()
                );
            }
            tokio::time::sleep(SLOW_GATEWAY.saturating_sub(began.elapsed())).await;
            cluster.gateways[0].process.signal("CONT");
        }
        Fault::PartitionLink => {
            let proxy = cluster.proxy.as_ref().expect("a partitionable cluster");
            proxy.partition();
            let began = Instant::now();
            tokio::time::sleep(OUTAGE).await;
            proxy.heal();
            // Both ends gave the silent link up within the heartbeat timeout: the gateway
            // (the proxy's client) and the relay.
            let closes = proxy.closes();
            for client in [true, false] {
                let side = if client { "gateway" } else { "relay" };
                let first = closes
                    .iter()
                    .find(|c| c.client == client && c.at >= began)
                    .unwrap_or_else(|| {
                        panic!(
                            "the {side} never gave the partitioned link up\n{}",
                            cluster.logs()
                        )
                    });
                let took = first.at - began;
                assert!(
                    took <= HEARTBEAT_TIMEOUT + DETECTION_SLACK,
                    "the {side} noticed the partition after {took:?} (heartbeat timeout {HEARTBEAT_TIMEOUT:?})"
                );
            }
        }
        Fault::ResumeOnHealingGateway => {
            let proxy = cluster.proxy.as_ref().expect("a partitionable cluster");
            proxy.partition();
            // Gateway 3's clients move to the next gateway, the first: they subscribe there
            // (channels it had no subscriber for) while its link to the first relay is down,
            // and are admitted as the healed link's catch-up runs.
            tokio::time::sleep(Duration::from_secs(1)).await;
            cluster.gateways[2].process.kill();
            tokio::time::sleep(OUTAGE - Duration::from_secs(1)).await;
            proxy.heal();
        }
        Fault::RollingUpgrade => {
            // From here on every node started is this build.
            cluster.wire_v1.clear();
            stop(&cluster.relays[1].process).await;
            let upgraded = cluster.spawn_node(
                "relay",
                1,
                harness::free_port(),
                cluster.relays[1].relay_port,
            );
            cluster.wait_ready(&upgraded).await;
            cluster.relays[1] = upgraded;
            sent_so_far(4).await;
            let port = cluster.gateways[2].http_port;
            stop(&cluster.gateways[2].process).await;
            let upgraded = cluster.spawn_node("gateway", 2, port, None);
            cluster.wait_ready(&upgraded).await;
            cluster.gateways[2] = upgraded;
        }
    }
}

/// SIGTERM, and the process must end by itself with success within its drain and timeout.
async fn stop(process: &harness::Process) {
    process.signal("TERM");
    let limit = harness::SHUTDOWN_DRAIN + Duration::from_secs(15);
    match process.wait_exit(limit).await {
        Some(status) => assert!(
            status.success(),
            "{} stopped with {status}\n{}",
            process.name,
            process.log_tail()
        ),
        None => panic!(
            "{} still runs {limit:?} after SIGTERM\n{}",
            process.name,
            process.log_tail()
        ),
    }
}

/// Which mutations may fail under `fault`, and how they must fail.
fn check_failures(
    fault: Fault,
    failures: &[&Failure],
    window: Window,
    posted: impl Fn(&Failure) -> bool,
) {
    let publish_timeout = harness::PUBLISH_TIMEOUT;
    match fault {
        Fault::None
        | Fault::KillRelay
        | Fault::AddRelay
        | Fault::KillGateway
        | Fault::KillBothRelays
        | Fault::StopGateway
        | Fault::StopRelay
        | Fault::FreezeGateway
        | Fault::PartitionLink
        | Fault::ResumeOnHealingGateway
        | Fault::RollingUpgrade => {
            assert!(
                failures.is_empty(),
                "{fault:?} failed mutations: {failures:?}"
            );
        }
        Fault::StopApi => {
            // It answered everything it accepted: afterwards its address refuses, and no
            // request it read went unanswered.
            for f in failures {
                assert_eq!(
                    f.api, 0,
                    "the other API node serves on: message {} failed: {f:?}",
                    f.n
                );
                // Refused once its listener closed, or reset in its backlog at that moment:
                // either way never read, so never posted.
                assert!(
                    f.answer.starts_with("refused") || !posted(f),
                    "a mutation the stopped API node accepted (it is in Mattermost) got no answer: {f:?}"
                );
            }
        }
        Fault::KillApi => {
            assert!(
                !failures.is_empty(),
                "mutations to the killed API node failed"
            );
            for f in failures {
                assert_eq!(
                    f.api, 0,
                    "the other API node serves on: message {} failed: {f:?}",
                    f.n
                );
            }
        }
        Fault::RestartBroker => {
            // While the broker is down mutations fail in time with the documented error. tansu's
            // S3 storage also answers ProducerFenced now and then to two API nodes writing one
            // partition at once (its conditional PUTs conflict), so such failures, with the
            // same error, happen outside the outage too; none of them was acknowledged, so none
            // is owed.
            // The two cores here also run the S3 server, which slows every request around a
            // publish (the Mattermost post too): a looser bound than the freeze's, still far
            // below a hang.
            let slack = publish_timeout + Duration::from_secs(10);
            assert!(
                failures
                    .iter()
                    .any(|f| f.sent_at + f.took >= window.start && f.sent_at <= window.end),
                "mutations sent while the broker was down failed"
            );
            for f in failures {
                assert!(
                    f.took <= slack,
                    "a mutation took {:?} to fail: {f:?}",
                    f.took
                );
                assert!(
                    f.answer.contains("live delivery is unavailable"),
                    "the error says live delivery failed: {f:?}"
                );
            }
        }
        Fault::FreezeBroker | Fault::FreezeBrokerThenStopRelay | Fault::MattermostDown => {
            assert!(
                !failures.is_empty(),
                "{fault:?}: mutations during it failed"
            );
            // A mutation sent before the fault may fail once it began; none after it healed
            // (plus the time one takes to fail).
            let slack = publish_timeout + Duration::from_secs(5);
            for f in failures {
                assert!(
                    f.sent_at + f.took >= window.start && f.sent_at <= window.end + slack,
                    "{fault:?}: a mutation failed outside the fault: {f:?}"
                );
                // No hang: a frozen broker fails a mutation at the publish timeout.
                assert!(
                    f.took <= slack,
                    "{fault:?}: a mutation took {:?} to fail: {f:?}",
                    f.took
                );
                let want = if fault != Fault::MattermostDown {
                    "live delivery is unavailable"
                } else {
                    "Mattermost"
                };
                assert!(
                    f.answer.contains(want),
                    "{fault:?}: the error says what failed ({want:?}): {f:?}"
                );
            }
        }
    }
}

/// What must hold once every subscriber has everything.
async fn after(fault: Fault, cluster: &Cluster, resumed: &AtomicUsize) {
    match fault {
        Fault::KillRelay
        | Fault::KillBothRelays
        | Fault::StopRelay
        | Fault::FreezeBrokerThenStopRelay => {
            let survivor = if fault == Fault::KillBothRelays {
                &cluster.relays[0]
            } else {
                &cluster.relays[1]
            };
            let owned =
                cluster.readyz(survivor).await.expect("relay readyz")["partitions"].as_u64();
            assert_eq!(
                owned,
                Some(u64::from(harness::PARTITIONS)),
                "{} owns every partition",
                survivor.process.name
            );
        }
        Fault::AddRelay => {
            let owned = cluster
                .readyz(&cluster.relays[2])
                .await
                .expect("relay readyz")["partitions"]
                .as_u64();
            assert!(
                owned.unwrap_or(0) > 0,
                "the new relay took partitions\n{}",
                cluster.logs()
            );
        }
        Fault::KillGateway | Fault::StopGateway => {
            // Gateway 0 held a third of the clients; each reconnected elsewhere and resumed.
            let resumed = resumed.load(Ordering::Relaxed);
            assert!(resumed >= SUBSCRIBERS / 3, "clients resumed: {resumed}");
        }
        Fault::FreezeGateway | Fault::PartitionLink => {
            // The link is back: the gateway reaches both relays again.
            let gateway = &cluster.gateways[0];
            let relays = cluster.readyz(gateway).await.expect("gateway readyz")["relays"].as_u64();
            assert_eq!(
                relays,
                Some(2),
                "{} has both relays again",
                gateway.process.name
            );
            // What it missed came from a catch-up, and the relays counted it.
            let mut catch_ups = 0.0;
            for relay in &cluster.relays {
                catch_ups += cluster
                    .metrics(relay)
                    .await
                    .iter()
                    .filter(|(n, _, _)| n == "mmsub_relay_catch_ups_total")
                    .map(|(_, _, v)| v)
                    .sum::<f64>();
            }
            assert!(
                catch_ups >= 1.0,
                "the returning gateway's catch-ups are counted"
            );
        }
        Fault::ResumeOnHealingGateway => {
            let resumed = resumed.load(Ordering::Relaxed);
            assert!(resumed >= SUBSCRIBERS / 3, "clients resumed: {resumed}");
        }
        Fault::RollingUpgrade => {
            // Gateway 2's clients resumed elsewhere when it was upgraded.
            let resumed = resumed.load(Ordering::Relaxed);
            assert!(resumed >= SUBSCRIBERS / 3, "clients resumed: {resumed}");
        }
        Fault::None => every_role_counted_the_run(cluster).await,
        Fault::FreezeBroker
        | Fault::RestartBroker
        | Fault::KillApi
        | Fault::MattermostDown
        | Fault::StopApi => {}
    }
}

/// After the calm run: every node's `/metrics` parses, and what the run did shows on each role.
async fn every_role_counted_the_run(cluster: &Cluster) {
    // Every acknowledged message (each channel's, and its end marker), once.
    let acknowledged = (CHANNELS * (PER_CHANNEL + 1)) as f64;
    let delivered = acknowledged * (SUBSCRIBERS / CHANNELS) as f64;
    let sum = |scrapes: &[harness::Samples], name: &str, label: &[(&str, &str)]| {
        scrapes
            .iter()
            .flatten()
            .filter(|(n, labels, _)| {
                n == name
                    && label
                        .iter()
                        .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, value)| value)
            .sum::<f64>()
    };
    let mut all = Vec::new();
    for role in [&cluster.apis, &cluster.relays, &cluster.gateways] {
        let mut scrapes = Vec::new();
        for node in role {
            let scrape = cluster.metrics(node).await;
            for process in ["mmsub_process_cpu_seconds_total", "mmsub_process_open_fds"] {
                assert!(
                    scrape.iter().any(|(n, _, v)| n == process && *v > 0.0),
                    "{} shows {process}",
                    node.process.name
                );
            }
            scrapes.push(scrape);
        }
        all.push(scrapes);
    }
    let (apis, relays, gateways) = (&all[0], &all[1], &all[2]);
    let sends = [("operation", "textMessageSend")];
    assert_eq!(
        sum(apis, "mmsub_graphql_requests_total", &sends),
        acknowledged
    );
    assert_eq!(
        sum(apis, "mmsub_kafka_produce_total", &[("outcome", "ok")]),
        acknowledged,
        "every acknowledged message was one acknowledged produce"
    );
    assert_eq!(
        sum(apis, "mmsub_kafka_produce_duration_seconds", &[]),
        acknowledged
    );
    let posts = [("method", "POST"), ("route", "/posts"), ("status", "2xx")];
    assert_eq!(
        sum(apis, "mmsub_mattermost_requests_total", &posts),
        acknowledged
    );
    for api in apis {
        assert!(
            sum(
                std::slice::from_ref(api),
                "mmsub_graphql_requests_total",
                &sends
            ) > 0.0,
            "both API nodes served sends"
        );
    }
    // A relay may forward a record twice (a partition moved); never less than once.
    assert!(sum(relays, "mmsub_relay_records_total", &[]) >= acknowledged);
    assert!(sum(relays, "mmsub_relay_gateway_frames_total", &[]) >= acknowledged);
    for relay in relays {
        assert_eq!(
            sum(
                std::slice::from_ref(relay),
                "mmsub_relay_gateway_links",
                &[]
            ),
            3.0,
            "each relay has the three gateways"
        );
        assert!(
            relay
                .iter()
                .any(|(n, _, _)| n == "mmsub_relay_consumer_lag"),
            "each relay reports its partitions' lag"
        );
    }
    assert!(
        sum(gateways, "mmsub_deliveries_total", &[]) >= delivered,
        "every subscriber's every message was handed to its connection"
    );
    assert!(sum(gateways, "mmsub_delivery_latency_seconds", &[]) >= delivered);
    for gateway in gateways {
        assert_eq!(
            sum(
                std::slice::from_ref(gateway),
                "mmsub_gateway_relay_links",
                &[]
            ),
            2.0,
            "each gateway has both relays"
        );
    }
    a_request_id_follows_a_message_through_every_role(cluster);
}

/// A message's request id (made by the API node that took it) is in that node's log line of
/// its produce, a relay's line forwarding the record, and a gateway's line delivering it.
fn a_request_id_follows_a_message_through_every_role(cluster: &Cluster) {
    let published = cluster.apis[0]
        .process
        .log_lines()
        .into_iter()
        .find(|l| l.contains("published") && l.contains("request_id="))
        .unwrap_or_else(|| panic!("no produce logged with its request id\n{}", cluster.logs()));
    let id = published
        .split("request_id=")
        .nth(1)
        .and_then(|rest| rest.trim_start_matches('"').split(['"', ' ']).next())
        .expect("the id")
        .to_owned();
    let logged = cluster.nodes_that_logged(&id);
    for role in ["api", "relay", "gateway"] {
        assert!(
            logged.iter().any(|node| node.starts_with(role)),
            "request {id} is in no {role}'s log: only in {logged:?}\n{published}"
        );
    }
}

/// `mmsub ingest` as its own process: a post made in Mattermost itself reaches subscribers on
/// a gateway through Kafka, and a post sent through an API node (which the ingest sees too, so
/// it travels twice) arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingest_role_brings_mattermost_posts_to_cluster_subscribers() {
    let name = "the_ingest_role_brings_mattermost_posts_to_cluster_subscribers";
    let Some(tansu) = tansu_or_skip(name) else {
        return;
    };
    let _one = ONE_CLUSTER.lock().await;
    let mut cluster = Cluster::start(&tansu, 1, 1, 1).await;
    let ingest = cluster.spawn_node("ingest", 0, harness::free_port(), None);
    cluster.wait_ready(&ingest).await;
    cluster.others.push(ingest);
    let api = cluster.apis[0].url();
    let publisher = user(&cluster, &api, "publisher").await;
    let reader = user(&cluster, &api, "reader").await;
    let data = graphql(
        &cluster,
        &api,
        "mutation { channelCreate(channelName: \"lobby\", members: [\"reader\"]) { status } }",
        json!({}),
        Some(&publisher),
    )
    .await;
    assert_eq!(data["data"]["channelCreate"]["status"], "OK", "{data}");

    let url = format!(
        "ws://127.0.0.1:{}/ws/graphql/",
        cluster.gateways[0].http_port
    );
    let mut ws = connect(&url, &reader).await.expect("connected");
    let subscribe = json!({ "id": "1", "type": "subscribe", "payload": { "query": SUBSCRIPTION, "variables": { "c": "lobby" } } });
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    while cluster.live_subscriptions().await < 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One after the other, as people post: each must arrive before the next is made (posts
    // from the two sources within the ingest's latency may swap; see the README).
    let mut got = Vec::new();
    cluster
        .standin
        .post_as("publisher", "lobby", "made in Mattermost");
    got.extend(texts(&mut ws, 1, Duration::from_secs(10)).await);
    let sent = graphql(&cluster, &api, "mutation { textMessageSend(channelIdentifier: \"lobby\", textMessage: \"sent through mmsub\") { status } }", json!({}), Some(&publisher)).await;
    assert_eq!(sent["data"]["textMessageSend"]["status"], "OK", "{sent}");
    got.extend(texts(&mut ws, 1, Duration::from_secs(10)).await);
    cluster
        .standin
        .post_as("publisher", "lobby", "made in Mattermost again");
    // Then nothing more: the ingest's copy of the mmsub post must not arrive.
    got.extend(texts(&mut ws, usize::MAX, Duration::from_secs(3)).await);
    let want = [
        "made in Mattermost",
        "sent through mmsub",
        "made in Mattermost again",
    ];
    assert_eq!(got, want, "\n{}", cluster.logs());
}
