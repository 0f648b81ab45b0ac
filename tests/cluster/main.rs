//! The cluster test: a broker, 2 API nodes, 2 relays and 3 gateways as separate processes on
//! loopback; 300 subscribers over 30 channels spread across the gateways; 3,000 messages sent
//! through both API nodes. Every subscriber must get every message of its channel exactly once
//! and in order: with everything running, with a relay killed (`kill -9`) mid-stream, with a
//! relay joining mid-stream, and with a gateway restarted mid-stream (its clients reconnect to
//! another gateway and resume).
//!
//! `history.rs` runs the cluster with the ScyllaDB history tier.
//!
//! The variants run one at a time (each is a whole cluster on two cores).

mod harness;
mod history;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use harness::{tansu_or_skip, Cluster};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

const SUBSCRIBERS: usize = 300;
const CHANNELS: usize = 30;
const MESSAGES: usize = 3_000;
const PER_CHANNEL: usize = MESSAGES / CHANNELS;
const PASSWORD: &str = "Str0ng!Pass";
const DEADLINE: Duration = Duration::from_secs(120);

const SUBSCRIPTION: &str = "subscription($c: String!, $a: String) {
  onNewChatMessage(channelIdentifier: $c, afterMessageId: $a) { message { id message } }
}";

/// One variant at a time.
static ONE_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What happens to the cluster while messages flow.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    KillRelay,
    AddRelay,
    RestartGateway,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_gets_every_message_once_in_order() {
    run(
        Fault::None,
        "every_subscriber_gets_every_message_once_in_order",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_stream_loses_and_duplicates_nothing() {
    run(
        Fault::KillRelay,
        "a_relay_killed_mid_stream_loses_and_duplicates_nothing",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_joining_mid_stream_takes_partitions_without_loss() {
    run(
        Fault::AddRelay,
        "a_relay_joining_mid_stream_takes_partitions_without_loss",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_gateways_clients_resume_on_another_gateway() {
    run(
        Fault::RestartGateway,
        "a_restarted_gateways_clients_resume_on_another_gateway",
    )
    .await;
}

async fn run(fault: Fault, name: &str) {
    let Some(tansu) = tansu_or_skip(name) else {
        return;
    };
    let _one = ONE_CLUSTER.lock().await;
    let mut cluster = Cluster::start(&tansu, 2, 2, 3).await;

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
    let subscribers: Vec<_> = (0..SUBSCRIBERS)
        .map(|i| {
            let (urls, token, channel) = (
                ws_urls.clone(),
                reader.clone(),
                channels[i % CHANNELS].clone(),
            );
            let (resumed, seen) = (resumed.clone(), seen[i].clone());
            tokio::spawn(subscriber(urls, i % 3, token, channel, resumed, seen))
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

    // Messages: each channel's in order, alternating between the two API nodes.
    let sent = Arc::new(AtomicUsize::new(0));
    let api_urls: Vec<String> = cluster.apis.iter().map(harness::Node::url).collect();
    let publishers: Vec<_> = channels
        .iter()
        .enumerate()
        .map(|(k, channel)| {
            let (http, urls, token, channel, sent) =
                (cluster.http.clone(), api_urls.clone(), publisher.clone(), channel.clone(), sent.clone());
            tokio::spawn(async move {
                for n in 0..PER_CHANNEL {
                    let url = &urls[(n + k) % urls.len()];
                    let body: Value = http
                        .post(format!("{url}/graphql/"))
                        .header("Authorization", format!("JWT {token}"))
                        .json(&json!({
                            "query": "mutation($c: String!, $t: String!) { textMessageSend(channelIdentifier: $c, textMessage: $t) { status } }",
                            "variables": { "c": channel, "t": format!("{channel}:{n}") },
                        }))
                        .send()
                        .await
                        .expect("the API node answers")
                        .json()
                        .await
                        .expect("a JSON answer");
                    assert_eq!(body["data"]["textMessageSend"]["status"], "OK", "{body}");
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // The fault, a third of the way in.
    while sent.load(Ordering::Relaxed) < MESSAGES / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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
        Fault::RestartGateway => {
            let port = cluster.gateways[0].http_port;
            cluster.gateways[0].process.kill();
            while sent.load(Ordering::Relaxed) < 2 * MESSAGES / 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let restarted = cluster.spawn_node("gateway", 3, port, None);
            cluster.wait_ready(&restarted).await;
            cluster.gateways[0] = restarted;
        }
    }
    for p in publishers {
        p.await.expect("publisher");
    }

    for (i, s) in subscribers.into_iter().enumerate() {
        let channel = &channels[i % CHANNELS];
        let got = match tokio::time::timeout_at(deadline.into(), s).await {
            Ok(got) => got.expect("subscriber task"),
            Err(_) => panic!(
                "subscriber {i} of {channel} did not get every message in time\n{}\n{}\n{}",
                incomplete(&seen, &channels),
                cluster.status().await,
                cluster.logs()
            ),
        };
        let want: Vec<String> = (0..PER_CHANNEL).map(|n| format!("{channel}:{n}")).collect();
        assert_eq!(
            got,
            want,
            "subscriber {i} of {channel}: every message once, in order\n{}",
            cluster.logs()
        );
    }
    if fault == Fault::KillRelay {
        let owned = cluster
            .readyz(&cluster.relays[1])
            .await
            .expect("relay readyz")["partitions"]
            .as_u64();
        assert_eq!(
            owned,
            Some(u64::from(harness::PARTITIONS)),
            "the surviving relay owns every partition"
        );
    }
    if fault == Fault::AddRelay {
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
    if fault == Fault::RestartGateway {
        // Gateway 0 held a third of the clients; each reconnected elsewhere and resumed.
        assert!(
            resumed.load(Ordering::Relaxed) >= SUBSCRIBERS / 3,
            "clients resumed: {}",
            resumed.load(Ordering::Relaxed)
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

/// The texts of up to `count` messages that arrive within `wait`.
async fn texts(ws: &mut Socket, count: usize, wait: Duration) -> Vec<String> {
    let mut got = Vec::new();
    let until = Instant::now() + wait;
    while got.len() < count {
        let Ok(Some(Ok(frame))) = tokio::time::timeout_at(until.into(), ws.next()).await else {
            break;
        };
        if let Message::Text(text) = frame {
            let message: Value = serde_json::from_str(&text).unwrap();
            if message["type"] == "next" {
                let m = &message["payload"]["data"]["onNewChatMessage"]["message"]["message"];
                got.push(m.as_str().unwrap().to_owned());
            }
        }
    }
    got
}

async fn graphql(
    cluster: &Cluster,
    url: &str,
    query: &str,
    variables: Value,
    token: Option<&str>,
) -> Value {
    let mut request = cluster
        .http
        .post(format!("{url}/graphql/"))
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        request = request.header("Authorization", format!("JWT {token}"));
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// Registers `username` and returns a token.
async fn user(cluster: &Cluster, api: &str, username: &str) -> String {
    let created = graphql(cluster, api, "mutation($u: String!, $p: String!, $e: String!) { userCreate(username: $u, password: $p, email: $e) { status } }", json!({ "u": username, "p": PASSWORD, "e": format!("{username}@example.com") }), None).await;
    assert_eq!(created["data"]["userCreate"]["status"], "OK", "{created}");
    let token = graphql(
        cluster,
        api,
        "mutation($u: String!, $p: String!) { tokenAuth(username: $u, password: $p) { token } }",
        json!({ "u": username, "p": PASSWORD }),
        None,
    )
    .await;
    token["data"]["tokenAuth"]["token"]
        .as_str()
        .expect("a token")
        .to_owned()
}

/// What one subscriber has received so far and how often it connected: on a timeout, which
/// messages are missing where tells a lost event (every subscriber of a channel misses it) from
/// a stalled connection.
#[derive(Default)]
struct Seen {
    texts: std::sync::Mutex<Vec<String>>,
    connections: AtomicUsize,
    /// Anything but a message: failed connects, closes, frames of other types.
    events: std::sync::Mutex<Vec<String>>,
}

impl Seen {
    fn event(&self, what: String) {
        self.events.lock().unwrap().push(what);
    }
}

/// The subscribers that are still waiting: how many messages each has, the first it lacks,
/// and its connections.
fn incomplete(seen: &[Arc<Seen>], channels: &[String]) -> String {
    let mut lines = Vec::new();
    for (i, s) in seen.iter().enumerate() {
        let channel = &channels[i % CHANNELS];
        let texts = s.texts.lock().unwrap();
        if texts.len() >= PER_CHANNEL {
            continue;
        }
        let missing: Vec<usize> = (0..PER_CHANNEL)
            .filter(|n| !texts.contains(&format!("{channel}:{n}")))
            .take(5)
            .collect();
        let events = s.events.lock().unwrap();
        lines.push(format!(
            "subscriber {i} ({channel}, first gateway {}): {} of {PER_CHANNEL}, lacks {missing:?}…, connections {}, events {:?}",
            i % 3,
            texts.len(),
            s.connections.load(Ordering::Relaxed),
            &events[events.len().saturating_sub(5)..]
        ));
    }
    format!(
        "--- {} subscribers incomplete\n{}",
        lines.len(),
        lines.join("\n")
    )
}

/// One client: subscribes on gateway `first`; when its connection drops it reconnects to the
/// next gateway and resumes after the last message it got. Returns the message texts in the
/// order received, once it has all of its channel's.
async fn subscriber(
    urls: Vec<String>,
    first: usize,
    token: String,
    channel: String,
    resumed: Arc<AtomicUsize>,
    seen: Arc<Seen>,
) -> Vec<String> {
    let mut last_id: Option<String> = None;
    let mut gateway = first;
    loop {
        let url = &urls[gateway % urls.len()];
        match connect(url, &token).await {
            Err(e) => seen.event(format!("connecting to {url}: {e}")),
            Ok(mut ws) => {
                seen.connections.fetch_add(1, Ordering::Relaxed);
                if last_id.is_some() {
                    resumed.fetch_add(1, Ordering::Relaxed);
                }
                let subscribe = json!({ "id": "1", "type": "subscribe", "payload": { "query": SUBSCRIPTION, "variables": { "c": channel, "a": last_id } } });
                if let Err(e) = ws.send(Message::text(subscribe.to_string())).await {
                    seen.event(format!("subscribing on {url}: {e}"));
                }
                loop {
                    let text = match ws.next().await {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(other)) => {
                            seen.event(format!("{url} sent {other:?}"));
                            continue;
                        }
                        Some(Err(e)) => {
                            seen.event(format!("reading from {url}: {e}"));
                            break;
                        }
                        None => {
                            seen.event(format!("{url} ended the stream"));
                            break;
                        }
                    };
                    let message: Value = serde_json::from_str(&text).expect("JSON");
                    match message["type"].as_str() {
                        Some("next") => {
                            let m = &message["payload"]["data"]["onNewChatMessage"]["message"];
                            let mut texts = seen.texts.lock().unwrap();
                            texts.push(m["message"].as_str().expect("text").to_owned());
                            last_id = Some(m["id"].as_str().expect("id").to_owned());
                            if texts.len() >= PER_CHANNEL {
                                return texts.clone();
                            }
                        }
                        Some("ping") => {
                            let _ = ws.send(Message::text(r#"{"type":"pong"}"#)).await;
                        }
                        Some("error") => panic!("subscription refused: {message}"),
                        Some("complete") => {
                            panic!("the server completed the subscription: {message}")
                        }
                        _ => seen.event(format!("{url} sent {message}")),
                    }
                }
            }
        }
        gateway += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, token: &str) -> anyhow::Result<Socket> {
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    ws.send(Message::text(json!({ "type": "connection_init", "payload": { "Authorization": format!("JWT {token}") } }).to_string())).await?;
    match ws.next().await {
        Some(Ok(Message::Text(text))) if text.contains("connection_ack") => Ok(ws),
        other => anyhow::bail!("no connection_ack: {other:?}"),
    }
}
