//! The history tier end to end: real mmsub servers in front of the stand-in Mattermost, with
//! history in the stand-in ScyllaDB node (`tests/scylla-standin`, driven by the real `scylla`
//! driver). The Mattermost stand-in counts requests by route, so "no post requests when warm"
//! is checked on what Mattermost was actually asked.
//!
//! Which ScyllaDB ran is printed: the stand-in, or a real cluster when
//! `MMSUB_TEST_SCYLLA_NODES` is set.

use std::time::Duration;

use mattermost_standin::{StandIn, StandInConfig};
use mmsub_api::backend::mattermost::MattermostConfig;
use mmsub_history::HistoryConfig;
use scylla_standin::Standin;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, TestApp, WsClient};

/// The ScyllaDB the tests use: a real one when `MMSUB_TEST_SCYLLA_NODES` is set, else a
/// stand-in node of their own.
struct Scylla {
    standin: Option<Standin>,
    nodes: Vec<String>,
}

impl Scylla {
    async fn start() -> Self {
        if let Ok(nodes) = std::env::var("MMSUB_TEST_SCYLLA_NODES") {
            eprintln!("history tests: real ScyllaDB at {nodes}");
            return Scylla {
                standin: None,
                nodes: nodes.split(',').map(str::to_string).collect(),
            };
        }
        let standin = Standin::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        eprintln!("history tests: scylla-standin at {}", standin.addr());
        Scylla {
            nodes: vec![standin.addr().to_string()],
            standin: Some(standin),
        }
    }

    fn config(&self, keyspace: &str) -> HistoryConfig {
        let mut config = HistoryConfig::development(self.nodes.clone());
        config.keyspace = keyspace.to_string();
        config.request_timeout = Duration::from_millis(500);
        config
    }
}

/// A `serve` node on `mattermost` with history in `scylla`.
async fn node(mattermost: &StandIn, history: HistoryConfig) -> TestApp {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    spawn_app_with(|config| {
        let c = &mattermost.config;
        let mut mm = MattermostConfig::new(
            &mattermost.url(),
            &c.admin_username,
            &c.admin_password,
            &c.team,
        );
        mm.limits.request_timeout = Duration::from_secs(3);
        config.mattermost = Some(mm);
        config.ingest.reconnect_min = Duration::from_millis(50);
        config.ingest.reconnect_max = Duration::from_millis(200);
        config.history = Some(history);
    })
    .await
}

fn unique_keyspace(name: &str) -> String {
    format!("{name}_{}", std::process::id())
}

const PAGE: &str = "query($c: String!, $n: Int, $s: Int) { getMessageList(channelIdentifier: $c, page: {pageNumber: $n, pageSize: $s}) {
    hasNext hasPrevious data { id message type createAt owner { username email } } } }";

const CHANNELS: &str = "{ channelList(page: {pageSize: 10}) { hasNext data { channelId channelName
    lastMessage { id message createAt owner { username } } } } }";

async fn page(app: &TestApp, token: &str, channel: &str, number: u32, size: u32) -> Value {
    let answer = app
        .graphql(
            PAGE,
            json!({ "c": channel, "n": number, "s": size }),
            Some(token),
        )
        .await;
    assert!(answer["errors"].is_null(), "{answer}");
    answer["data"]["getMessageList"].clone()
}

/// Mattermost requests for posts (`GET /channels/{id}/posts`, `GET /posts/{id}`), which the
/// tier exists to take off Mattermost.
fn post_reads(requests: &[String]) -> Vec<&String> {
    requests
        .iter()
        .filter(|r| r.starts_with("GET") && r.contains("/posts"))
        .collect()
}

/// Reads the channel until a read makes no post request: the store is connected, the
/// ingest's epoch is live, and the first read filled the cache.
async fn until_warm(app: &TestApp, mattermost: &StandIn, token: &str, channel: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        mattermost.take_requests();
        page(app, token, channel, 0, 50).await;
        if post_reads(&mattermost.take_requests()).is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the channel never became warm"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_warm_channel_is_read_and_resumed_with_no_mattermost_post_requests() {
    let mattermost = StandIn::start(StandInConfig::default()).await;
    let scylla = Scylla::start().await;
    let app = node(&mattermost, scylla.config(&unique_keyspace("warm"))).await;
    let alice = app.signed_up("alice").await;
    app.signed_up("bob").await;
    let channel = app.channel(&alice, "room", &["bob"]).await;
    let mut sent = Vec::new();
    for i in 0..7 {
        sent.push(app.send(&alice, &channel, &format!("m{i}")).await);
    }
    // What Mattermost itself answers, read before the tier is warm.
    let cold_channels = app.graphql(CHANNELS, json!({}), Some(&alice)).await;
    let cold: Vec<Value> =
        futures::future::join_all((0..4).map(|n| page(&app, &alice, &channel, n, 2))).await;
    until_warm(&app, &mattermost, &alice, &channel).await;
    until_warm(&app, &mattermost, &alice, "town-square").await;

    // channelList's last messages come from the store once every listed channel is warm.
    mattermost.take_requests();
    let before = app.metrics().await;
    let warm_channels = app.graphql(CHANNELS, json!({}), Some(&alice)).await;
    assert_eq!(warm_channels, cold_channels);
    assert_eq!(
        mattermost.take_requests(),
        ["GET /users/{user_id}/teams/{team_id}/channels"],
        "one membership request, no post request"
    );

    let warm: Vec<Value> =
        futures::future::join_all((0..4).map(|n| page(&app, &alice, &channel, n, 2))).await;
    assert_eq!(
        warm, cold,
        "the cache answers exactly what Mattermost answered"
    );
    let after = app.metrics().await;
    let moved = |name: &str, read: &str| {
        after.value(name, &[("read", read)]) - before.value(name, &[("read", read)])
    };
    assert_eq!(
        moved("mmsub_history_cache_hits_total", "last_message"),
        2.0,
        "room and town-square"
    );
    assert_eq!(moved("mmsub_history_cache_hits_total", "page"), 4.0);
    for read in ["page", "last_message"] {
        assert_eq!(
            moved("mmsub_history_cache_misses_total", read),
            0.0,
            "{read}"
        );
        assert_eq!(moved("mmsub_history_fallbacks_total", read), 0.0, "{read}");
    }
    let statements = after.value("mmsub_history_queries_total", &[("outcome", "ok")]);
    assert!(
        statements > before.value("mmsub_history_queries_total", &[("outcome", "ok")]),
        "the warm reads were statements on the store"
    );
    assert_eq!(
        after.histogram_count("mmsub_history_query_duration_seconds", &[]) as f64,
        statements + after.value("mmsub_history_queries_total", &[("outcome", "error")]),
        "each statement timed"
    );
    let newest = page(&app, &alice, &channel, 0, 50).await;
    let texts: Vec<&str> = newest["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["message"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["m0", "m1", "m2", "m3", "m4", "m5", "m6"]);
    assert_eq!(
        (newest["hasNext"].as_bool(), newest["hasPrevious"].as_bool()),
        (Some(false), Some(false))
    );

    // A resume replays from the store too.
    let mut ws = app.transport_ws(&alice).await;
    ws.send_json(json!({ "id": "r", "type": "subscribe", "payload": {
        "query": "subscription($c: String!, $a: String) { onNewChatMessage(channelIdentifier: $c, afterMessageId: $a) { message { id message } } }",
        "variables": { "c": channel, "a": sent[3] } } }))
        .await;
    let replayed = replay(&mut ws, 3).await;
    assert_eq!(replayed, ["m4", "m5", "m6"]);
    let requests = mattermost.take_requests();
    assert!(
        post_reads(&requests).is_empty(),
        "warm reads asked Mattermost for posts: {requests:?}"
    );

    // A new message is in the cache as soon as it is sent.
    app.send(&alice, &channel, "m7").await;
    mattermost.take_requests();
    let after = page(&app, &alice, &channel, 0, 1).await;
    assert_eq!(after["data"][0]["message"], "m7");
    assert!(post_reads(&mattermost.take_requests()).is_empty());

    // Membership is still Mattermost's: a stranger gets the contract's 404-style error.
    let eve = app.signed_up("eve").await;
    let refused = app
        .graphql(PAGE, json!({ "c": channel, "n": 0, "s": 5 }), Some(&eve))
        .await;
    assert!(
        !refused["errors"].is_null() || refused["data"]["getMessageList"].is_null(),
        "{refused}"
    );
    drop(scylla);
}

#[tokio::test]
async fn an_older_page_read_cold_warms_it_and_every_newer_page() {
    let mattermost = StandIn::start(StandInConfig::default()).await;
    let scylla = Scylla::start().await;
    let app = node(&mattermost, scylla.config(&unique_keyspace("older"))).await;
    let alice = app.signed_up("alice").await;
    let channel = app.channel(&alice, "room", &[]).await;
    for i in 0..30 {
        app.send(&alice, &channel, &format!("m{i}")).await;
    }
    // The ingest's epoch is live (another channel warms), and `room` has never been read.
    until_warm(&app, &mattermost, &alice, "town-square").await;
    let expected = |n: u32| -> Vec<String> {
        let newest = 29 - 5 * n as usize;
        (newest.saturating_sub(4)..=newest)
            .map(|i| format!("m{i}"))
            .collect()
    };

    mattermost.take_requests();
    let third = page(&app, &alice, &channel, 3, 5).await;
    assert_eq!(texts(&third), expected(3));
    assert_eq!(
        (third["hasNext"].as_bool(), third["hasPrevious"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(
        post_reads(&mattermost.take_requests()).len(),
        1,
        "one fetch reads the page with every newer post"
    );
    for n in 0..=3 {
        assert_eq!(
            texts(&page(&app, &alice, &channel, n, 5).await),
            expected(n)
        );
    }
    let requests = mattermost.take_requests();
    assert!(
        post_reads(&requests).is_empty(),
        "the window reaches the older page with no gap: {requests:?}"
    );

    let oldest = page(&app, &alice, &channel, 5, 5).await;
    assert_eq!(texts(&oldest), expected(5));
    assert_eq!(oldest["hasPrevious"].as_bool(), Some(false));
    assert_eq!(post_reads(&mattermost.take_requests()).len(), 1);
    let fourth = page(&app, &alice, &channel, 4, 5).await;
    assert_eq!(texts(&fourth), expected(4));
    let beyond = page(&app, &alice, &channel, 6, 5).await;
    assert!(texts(&beyond).is_empty());
    assert_eq!(beyond["hasPrevious"].as_bool(), Some(false));
    let requests = mattermost.take_requests();
    assert!(
        post_reads(&requests).is_empty(),
        "the window reaches the channel's first post: {requests:?}"
    );
}

async fn replay(ws: &mut WsClient, count: usize) -> Vec<String> {
    let mut texts = Vec::new();
    while texts.len() < count {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.recv_json())
            .await
            .expect("a replayed message");
        if frame["type"] == "next" {
            texts.push(
                frame["payload"]["data"]["onNewChatMessage"]["message"]["message"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
    }
    texts
}

#[tokio::test]
async fn a_message_is_readable_on_another_node_as_soon_as_its_mutation_answered() {
    let mattermost = StandIn::start(StandInConfig::default()).await;
    let scylla = Scylla::start().await;
    let keyspace = unique_keyspace("ryw");
    let one = node(&mattermost, scylla.config(&keyspace)).await;
    let two = node(&mattermost, scylla.config(&keyspace)).await;
    let alice = one.signed_up("alice").await;
    let channel = one.channel(&alice, "room", &[]).await;
    one.send(&alice, &channel, "first").await;
    until_warm(&two, &mattermost, &alice, &channel).await;
    for i in 0..5 {
        let text = format!("next {i}");
        one.send(&alice, &channel, &text).await;
        let newest = page(&two, &alice, &channel, 0, 1).await;
        assert_eq!(
            newest["data"][0]["message"],
            text.as_str(),
            "node two reads node one's write at once"
        );
    }
}

#[tokio::test]
async fn losing_scylla_falls_back_to_mattermost_and_recovers() {
    let mattermost = StandIn::start(StandInConfig::default()).await;
    let mut scylla = Scylla::start().await;
    let Some(standin) = scylla.standin.as_mut() else {
        eprintln!("history tests: a real ScyllaDB cannot be stopped from here; this case runs on the stand-in");
        return;
    };
    let history = {
        let mut c = HistoryConfig::development(vec![standin.addr().to_string()]);
        c.keyspace = unique_keyspace("faults");
        c.request_timeout = Duration::from_millis(300);
        c
    };
    let app = node(&mattermost, history).await;
    let alice = app.signed_up("alice").await;
    let channel = app.channel(&alice, "room", &[]).await;
    app.send(&alice, &channel, "before").await;
    until_warm(&app, &mattermost, &alice, &channel).await;

    let standin = scylla.standin.as_mut().unwrap();
    standin.stop();
    // Sent while the cache is down: Mattermost has it, the cache does not.
    app.send(&alice, &channel, "during").await;
    let fallbacks = [("read", "page")];
    let before = app.metrics().await;
    let during = page(&app, &alice, &channel, 0, 10).await;
    assert_eq!(
        texts(&during),
        ["before", "during"],
        "answered from Mattermost, no error"
    );
    let after = app.metrics().await;
    assert_eq!(
        after.value("mmsub_history_fallbacks_total", &fallbacks)
            - before.value("mmsub_history_fallbacks_total", &fallbacks),
        1.0,
        "one read, one fallback"
    );
    assert!(
        after.value("mmsub_history_queries_total", &[("outcome", "error")])
            > before.value("mmsub_history_queries_total", &[("outcome", "error")]),
        "the failed statements are counted"
    );

    standin.restart().await.unwrap();
    // After recovery nothing is missing (the missed write made the channel cold), and once the
    // channel is warm again the cache answers.
    until_page(&app, &alice, &channel, |t| t == ["before", "during"]).await;
    until_warm(&app, &mattermost, &alice, &channel).await;
    assert_eq!(
        texts(&page(&app, &alice, &channel, 0, 10).await),
        ["before", "during"]
    );
}

#[tokio::test]
async fn fifty_concurrent_readers_of_a_cold_channel_make_one_mattermost_fetch() {
    let mattermost = StandIn::start(StandInConfig::default()).await;
    let scylla = Scylla::start().await;
    let app = node(&mattermost, scylla.config(&unique_keyspace("coalesce"))).await;
    let alice = app.signed_up("alice").await;
    // Warm one channel first, so the store is connected and the ingest's epoch is live.
    let first = app.channel(&alice, "first", &[]).await;
    app.send(&alice, &first, "hello").await;
    until_warm(&app, &mattermost, &alice, &first).await;

    let cold = app.channel(&alice, "cold", &[]).await;
    for i in 0..3 {
        app.send(&alice, &cold, &format!("c{i}")).await;
    }
    mattermost.take_requests();
    let pages = futures::future::join_all((0..50).map(|_| page(&app, &alice, &cold, 0, 10))).await;
    assert!(
        pages.windows(2).all(|w| w[0] == w[1]),
        "every reader got the same page"
    );
    assert_eq!(pages[0]["data"].as_array().unwrap().len(), 3);
    let requests = mattermost.take_requests();
    let fetches = requests
        .iter()
        .filter(|r| r.as_str() == "GET /channels/{channel_id}/posts")
        .count();
    assert_eq!(
        fetches, 1,
        "one fetch for 50 concurrent misses: {requests:?}"
    );
}

fn texts(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["message"].as_str().unwrap().to_string())
        .collect()
}

/// Reads until `check` holds for the newest page (the ingest applies events at its pace).
async fn until_page(
    app: &TestApp,
    token: &str,
    channel: &str,
    check: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let got = texts(&page(app, token, channel, 0, 50).await);
        if check(&got) {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page never changed: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn last_message(app: &TestApp, token: &str, channel: &str) -> Value {
    let list = app.graphql(CHANNELS, json!({}), Some(token)).await;
    list["data"]["channelList"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channelId"] == channel)
        .map(|c| c["lastMessage"]["message"].clone())
        .unwrap()
}

/// A node, alice, and her warm channel `room` with posts p0..p3.
struct Room {
    mattermost: StandIn,
    scylla: Scylla,
    app: TestApp,
    alice: String,
    channel: String,
    ids: Vec<String>,
}

async fn warm_room(keyspace: &str) -> Room {
    let mattermost = StandIn::start(StandInConfig::default()).await;
    let scylla = Scylla::start().await;
    let app = node(&mattermost, scylla.config(&unique_keyspace(keyspace))).await;
    let alice = app.signed_up("alice").await;
    let channel = app.channel(&alice, "room", &[]).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(app.send(&alice, &channel, &format!("p{i}")).await);
    }
    until_warm(&app, &mattermost, &alice, &channel).await;
    Room {
        mattermost,
        scylla,
        app,
        alice,
        channel,
        ids,
    }
}

#[tokio::test]
async fn edits_and_deletions_made_in_mattermost_reach_the_cache() {
    let Room {
        mattermost,
        scylla: _scylla,
        app,
        alice,
        channel,
        ids,
    } = warm_room("edits").await;
    until_warm(&app, &mattermost, &alice, "town-square").await;

    mattermost.edit_post(&ids[1], "p1 edited");
    mattermost.edit_post(&ids[3], "p3 edited");
    until_page(&app, &alice, &channel, |t| {
        t == ["p0", "p1 edited", "p2", "p3 edited"]
    })
    .await;
    assert_eq!(
        last_message(&app, &alice, &channel).await,
        "p3 edited",
        "an edit of the newest post"
    );

    mattermost.delete_post(&ids[3]);
    until_page(&app, &alice, &channel, |t| t == ["p0", "p1 edited", "p2"]).await;
    assert_eq!(
        last_message(&app, &alice, &channel).await,
        "p2",
        "the previous post after a delete"
    );
    mattermost.delete_post(&ids[0]);
    until_page(&app, &alice, &channel, |t| t == ["p1 edited", "p2"]).await;

    // A page far past the end answers as Mattermost does, without reading the store to it.
    let deep = page(&app, &alice, &channel, 1_000_000, 200).await;
    assert_eq!(deep["data"], json!([]), "{deep}");

    mattermost.take_requests();
    page(&app, &alice, &channel, 0, 50).await;
    last_message(&app, &alice, &channel).await;
    let requests = mattermost.take_requests();
    assert!(post_reads(&requests).is_empty(), "still warm: {requests:?}");
}

#[tokio::test]
async fn with_the_ingest_away_reads_fall_back_and_nothing_deleted_meanwhile_is_served_after() {
    let Room {
        mattermost,
        scylla: _scylla,
        app,
        alice,
        channel,
        ids,
    } = warm_room("away").await;

    // The ingest's socket drops; the deletion happens while it is away, so its event is lost.
    mattermost.drop_websockets();
    mattermost.delete_post(&ids[1]);
    mattermost.delete_post(&ids[3]);
    until_page(&app, &alice, &channel, |t| t == ["p0", "p2"]).await;
    // Once the ingest is back and the channel warm again, the deleted posts stay gone.
    until_warm(&app, &mattermost, &alice, &channel).await;
    assert_eq!(
        texts(&page(&app, &alice, &channel, 0, 50).await),
        ["p0", "p2"]
    );
    assert_eq!(last_message(&app, &alice, &channel).await, "p2");
}
