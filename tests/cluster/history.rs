//! The cluster with the history tier: every node on one ScyllaDB (the stand-in) and an ingest
//! role keeping it current. History pages on both API nodes, `channelList`'s last messages and
//! a gateway's `afterMessageId` resume are answered from the store with no Mattermost post
//! request; a message is readable on the other API node as soon as its mutation answered; a
//! post deleted in Mattermost leaves history; losing ScyllaDB falls back to Mattermost with no
//! error.

use std::time::{Duration, Instant};

use futures::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::clients::{connect, graphql, texts, user, SUBSCRIPTION};
use super::harness::{self, tansu_or_skip, Cluster};
use super::ONE_CLUSTER;

const PAGE: &str = "query($n: Int!, $s: Int!) { getMessageList(channelIdentifier: \"lobby\", page: { pageNumber: $n, pageSize: $s }) { data { id message } hasNext hasPrevious } }";
const CHANNELS: &str = "query { channelList { data { channelName lastMessage { message } } } }";

fn post_reads(requests: &[String]) -> Vec<&String> {
    requests
        .iter()
        .filter(|r| r.starts_with("GET") && r.contains("/posts"))
        .collect()
}

async fn page(cluster: &Cluster, api: &str, token: &str, number: u32, size: u32) -> Value {
    let answer = graphql(
        cluster,
        api,
        PAGE,
        json!({ "n": number, "s": size }),
        Some(token),
    )
    .await;
    assert!(answer["errors"].is_null(), "{answer}");
    answer["data"]["getMessageList"].clone()
}

fn messages(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["message"].as_str().unwrap().to_owned())
        .collect()
}

/// Reads until a read of the newest page makes no post request and `check` holds.
async fn until_cached(
    cluster: &Cluster,
    api: &str,
    token: &str,
    check: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        cluster.standin.take_requests();
        let got = messages(&page(cluster, api, token, 0, 50).await);
        if post_reads(&cluster.standin.take_requests()).is_empty() && check(&got) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "never served from the store: {got:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_served_from_scylla_across_the_cluster() {
    let name = "history_is_served_from_scylla_across_the_cluster";
    let Some(tansu) = tansu_or_skip(name) else {
        return;
    };
    let _one = ONE_CLUSTER.lock().await;
    let mut cluster = Cluster::start_with_history(&tansu, 2, 1, 1).await;
    eprintln!(
        "{name}: history on scylla-standin at {}",
        cluster.scylla.as_ref().unwrap().addr()
    );
    let ingest = cluster.spawn_node("ingest", 0, harness::free_port(), None);
    cluster.wait_ready(&ingest).await;
    cluster.others.push(ingest);
    let (api0, api1) = (cluster.apis[0].url(), cluster.apis[1].url());
    let alice = user(&cluster, &api0, "alice").await;
    let bob = user(&cluster, &api0, "bob").await;
    let created = graphql(
        &cluster,
        &api0,
        "mutation { channelCreate(channelName: \"lobby\", members: [\"bob\"]) { status } }",
        json!({}),
        Some(&alice),
    )
    .await;
    assert_eq!(
        created["data"]["channelCreate"]["status"], "OK",
        "{created}"
    );

    // Read-your-writes across API nodes: each message is on the other node's newest page as
    // soon as its mutation answered.
    let mut ids = Vec::new();
    for i in 0..30 {
        let (to, other) = if i % 2 == 0 {
            (&api0, &api1)
        } else {
            (&api1, &api0)
        };
        let sent = graphql(
            &cluster,
            to,
            "mutation($t: String!) { textMessageSend(channelIdentifier: \"lobby\", textMessage: $t) { status } }",
            json!({ "t": format!("m{i}") }),
            Some(&alice),
        )
        .await;
        assert_eq!(sent["data"]["textMessageSend"]["status"], "OK", "{sent}");
        let newest = page(&cluster, other, &bob, 0, 1).await;
        assert_eq!(
            messages(&newest),
            [format!("m{i}")],
            "read on the other node"
        );
        ids.push(newest["data"][0]["id"].as_str().unwrap().to_owned());
    }

    let all: Vec<String> = (0..30).map(|i| format!("m{i}")).collect();
    until_cached(&cluster, &api0, &bob, |got| got == all).await;
    // Each node keeps its view of the ingest epoch for a second (history/src/tier.rs,
    // EPOCH_CACHE): one that looked before the ingest's first heartbeat still reads the tier
    // as cold until then. After that second every node sees the live epoch.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // bob's other channel (town-square) has never been read: the first list reads its newest
    // post through the store, which warms it.
    graphql(&cluster, &api0, CHANNELS, json!({}), Some(&bob)).await;
    cluster.standin.take_requests();
    for api in [&api0, &api1] {
        for n in 0..3 {
            let got = messages(&page(&cluster, api, &bob, n, 10).await);
            let newest = 29 - 10 * n as usize;
            let want: Vec<String> = (newest - 9..=newest).map(|i| format!("m{i}")).collect();
            assert_eq!(got, want);
        }
    }
    let channels = graphql(&cluster, &api1, CHANNELS, json!({}), Some(&bob)).await;
    let lobby = channels["data"]["channelList"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channelName"] == "lobby")
        .cloned()
        .unwrap();
    assert_eq!(lobby["lastMessage"]["message"], "m29");

    // A resume on the gateway replays from the store.
    let url = format!(
        "ws://127.0.0.1:{}/ws/graphql/",
        cluster.gateways[0].http_port
    );
    let mut ws = connect(&url, &bob).await.expect("connected");
    let subscribe = json!({ "id": "1", "type": "subscribe", "payload": {
        "query": SUBSCRIPTION, "variables": { "c": "lobby", "a": ids[24] } } });
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    let replayed = texts(&mut ws, 5, Duration::from_secs(10)).await;
    assert_eq!(replayed, ["m25", "m26", "m27", "m28", "m29"]);
    let requests = cluster.standin.take_requests();
    assert!(
        post_reads(&requests).is_empty(),
        "warm reads on API nodes and the gateway asked Mattermost for posts: {requests:?}\n{}",
        cluster.logs()
    );

    // A post deleted in Mattermost leaves history on both nodes, through the ingest.
    cluster.standin.delete_post(&ids[29]);
    let without: Vec<String> = (0..29).map(|i| format!("m{i}")).collect();
    for api in [&api0, &api1] {
        until_cached(&cluster, api, &bob, |got| got == without).await;
    }

    // ScyllaDB lost: every read still answers, from Mattermost.
    cluster.scylla.as_mut().unwrap().stop();
    for api in [&api0, &api1] {
        assert_eq!(
            messages(&page(&cluster, api, &bob, 0, 50).await),
            without,
            "{}",
            cluster.logs()
        );
    }
}
