//! `loadtest history`: goose users reading history (`getMessageList` pages and `channelList`)
//! from channels prepared before the run, to compare a node with and without the ScyllaDB tier.
//!
//! Before goose starts, one account creates `--channels` channels and sends `--messages` to
//! each through mmsub (so the run measures reads only, and no throttle counts against it).
//! Every page the run reads is read once before it starts (with the tier, these reads fill
//! it), so the run measures the steady state. Goose users then read random pages among the newest `--pages` of random channels, and the channel list.
//! Besides goose's own report, one JSON line gives each read's p50/p99 in microseconds (goose
//! rounds to milliseconds), reads per second and, with `--mattermost-url` pointing at the
//! Mattermost stand-in, the Mattermost requests each read cost, by route.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use goose::prelude::*;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};

use crate::client::{run_id, Client};
use crate::http::{configuration, graphql, Account};

#[derive(Debug, Clone, clap::Args)]
pub struct HistoryArgs {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// Channels prepared before the run.
    #[arg(long, default_value_t = 20)]
    pub channels: usize,
    /// Messages sent to each channel before the run.
    #[arg(long, default_value_t = 200)]
    pub messages: usize,
    /// `pageSize` of each `getMessageList`.
    #[arg(long, default_value_t = 20)]
    pub page_size: usize,
    /// Pages read: each read asks for one of the newest this-many pages (`pageNumber` 0, the
    /// newest, up to this minus 1), at random.
    #[arg(long, default_value_t = 5)]
    pub pages: usize,
    /// The Mattermost stand-in behind the server: its `GET /standin/requests` counts are read
    /// before and after the run to give Mattermost requests per read.
    #[arg(long)]
    pub mattermost_url: Option<String>,
    /// Fail (exit non-zero) when reads made more than this many Mattermost post requests each
    /// on average (`GET /channels/{id}/posts`, `GET /posts/{id}`…); needs `--mattermost-url`.
    #[arg(long, requires = "mattermost_url")]
    pub max_post_requests_per_read: Option<f64>,
    /// goose options, e.g. `-- --users 20 --hatch-rate 20 --run-time 30s --report-file report.html`.
    #[arg(last = true)]
    pub goose: Vec<String>,
}

/// What the goose users read: prepared once, before the run.
struct Prepared {
    token: String,
    username: String,
    channels: Vec<String>,
    page_size: usize,
    pages: usize,
}

static PREPARED: OnceLock<Prepared> = OnceLock::new();

/// Each read's latency in microseconds, by operation.
static LATENCY: Mutex<BTreeMap<&'static str, Histogram<u64>>> = Mutex::new(BTreeMap::new());

const READS: [&str; 2] = ["getMessageList", "channelList"];

const PAGE_QUERY: &str = "query($c: String!, $n: Int!, $s: Int!) { getMessageList(channelIdentifier: $c, page: { pageNumber: $n, pageSize: $s }) { data { id message createAt owner { username } } hasNext hasPrevious } }";

const CHANNEL_LIST_QUERY: &str = "query { channelList(page: { pageSize: 20 }) { data { channelId channelName lastMessage { message createAt } } hasNext } }";

/// The run's summary line.
#[derive(Debug, Serialize)]
struct Summary {
    reads: u64,
    failed: u64,
    seconds: f64,
    reads_per_sec: f64,
    latency_us: BTreeMap<&'static str, Percentiles>,
    /// Mattermost requests per read, when the stand-in's counts were read.
    mattermost: Option<MattermostCost>,
}

#[derive(Debug, Serialize)]
struct Percentiles {
    count: u64,
    p50: u64,
    p99: u64,
}

#[derive(Debug, Serialize)]
struct MattermostCost {
    requests_per_read: f64,
    post_requests_per_read: f64,
    routes: BTreeMap<String, u64>,
}

pub async fn run(args: HistoryArgs) -> anyhow::Result<()> {
    if args.channels == 0 || args.pages == 0 || args.page_size == 0 {
        bail!("--channels, --pages and --page-size must be at least 1");
    }
    let prepared = prepare(&args).await?;
    PREPARED
        .set(prepared)
        .map_err(|_| anyhow::anyhow!("prepared twice"))?;
    let before = match &args.mattermost_url {
        Some(url) => Some(mattermost_counts(url).await?),
        None => None,
    };

    let configuration = configuration(&args.goose, &args.url)?;
    let started = Instant::now();
    let metrics = GooseAttack::initialize_with_config(configuration)?
        .register_scenario(
            scenario!("history")
                .register_transaction(transaction!(sign_in).set_on_start())
                .register_transaction(
                    transaction!(message_page)
                        .set_name("getMessageList")
                        .set_weight(4)?,
                )
                .register_transaction(
                    transaction!(channel_list)
                        .set_name("channelList")
                        .set_weight(1)?,
                ),
        )
        .execute()
        .await?;
    let seconds = started.elapsed().as_secs_f64();

    let (mut reads, mut failed) = (0_u64, 0_u64);
    for aggregate in metrics.requests.values() {
        if READS.iter().any(|name| aggregate.path == *name) {
            reads += aggregate.success_count as u64;
            failed += aggregate.fail_count as u64;
        }
    }
    let latency_us = LATENCY
        .lock()
        .map_err(|_| anyhow::anyhow!("latency poisoned"))?
        .iter()
        .map(|(name, h)| {
            let percentiles = Percentiles {
                count: h.len(),
                p50: h.value_at_quantile(0.50),
                p99: h.value_at_quantile(0.99),
            };
            (*name, percentiles)
        })
        .collect();
    let mattermost = match (&args.mattermost_url, before) {
        (Some(url), Some(before)) => {
            let after = mattermost_counts(url).await?;
            Some(cost(&before, &after, reads + failed))
        }
        _ => None,
    };
    let summary = Summary {
        reads,
        failed,
        seconds,
        reads_per_sec: reads as f64 / seconds.max(f64::EPSILON),
        latency_us,
        mattermost,
    };
    println!("{}", serde_json::to_string(&summary)?);
    if failed > 0 {
        bail!("{failed} reads failed");
    }
    if let (Some(limit), Some(cost)) = (args.max_post_requests_per_read, &summary.mattermost) {
        if cost.post_requests_per_read > limit {
            bail!(
                "{:.3} Mattermost post requests per read, over --max-post-requests-per-read {limit}",
                cost.post_requests_per_read
            );
        }
    }
    Ok(())
}

/// Creates the account, the channels and their messages through mmsub.
async fn prepare(args: &HistoryArgs) -> anyhow::Result<Prepared> {
    let client = Client::new(&args.url);
    let run = run_id();
    let username = format!("hist{run}");
    let token = client.user(&username).await.context("signing up")?;
    let channels = client
        .channels(&token, &run, args.channels, &[])
        .await
        .context("creating channels")?;
    let mut senders = tokio::task::JoinSet::new();
    for channel in channels.clone() {
        let (client, token, messages) = (Client::new(&args.url), token.clone(), args.messages);
        senders.spawn(async move {
            for n in 0..messages {
                client
                    .graphql(
                        "mutation($c: String!, $t: String!) { textMessageSend(channelIdentifier: $c, textMessage: $t) { statusCode } }",
                        json!({ "c": channel, "t": format!("history {n} of {channel}") }),
                        Some(&token),
                    )
                    .await
                    .with_context(|| format!("sending to {channel}"))?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(sent) = senders.join_next().await {
        sent??;
    }
    // One read of every page the run reads, so that it measures the steady state: with the
    // tier, these are the reads that fill it.
    for channel in &channels {
        for page in 0..args.pages {
            client
                .graphql(
                    PAGE_QUERY,
                    json!({ "c": channel, "n": page, "s": args.page_size }),
                    Some(&token),
                )
                .await
                .with_context(|| format!("warming {channel}"))?;
        }
    }
    client
        .graphql(CHANNEL_LIST_QUERY, json!({}), Some(&token))
        .await
        .context("warming the channel list")?;
    eprintln!(
        "loadtest history: {} channels of {} messages ready, {} pages each read once",
        args.channels, args.messages, args.pages
    );
    Ok(Prepared {
        token,
        username,
        channels,
        page_size: args.page_size,
        pages: args.pages,
    })
}

fn prepared() -> &'static Prepared {
    PREPARED.get().expect("prepared before goose starts")
}

async fn sign_in(user: &mut GooseUser) -> TransactionResult {
    let prepared = prepared();
    let home = &prepared.channels[user.weighted_users_index % prepared.channels.len()];
    user.set_session_data(Account {
        username: prepared.username.clone(),
        token: prepared.token.clone(),
        channel: home.clone(),
    });
    Ok(())
}

/// Runs one read and records its latency.
async fn timed(
    user: &mut GooseUser,
    name: &'static str,
    query: &str,
    variables: Value,
) -> TransactionResult {
    let started = Instant::now();
    let result = graphql(user, name, query, variables).await;
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    if let Ok(mut latency) = LATENCY.lock() {
        let histogram = latency.entry(name).or_insert_with(|| {
            Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
        });
        let _ = histogram.record(micros.clamp(1, 60_000_000));
    }
    result.map(drop)
}

async fn message_page(user: &mut GooseUser) -> TransactionResult {
    let prepared = prepared();
    let channel = &prepared.channels[rand::random_range(0..prepared.channels.len())];
    let page = rand::random_range(0..prepared.pages);
    timed(
        user,
        "getMessageList",
        PAGE_QUERY,
        json!({ "c": channel, "n": page, "s": prepared.page_size }),
    )
    .await
}

async fn channel_list(user: &mut GooseUser) -> TransactionResult {
    timed(user, "channelList", CHANNEL_LIST_QUERY, json!({})).await
}

/// The stand-in's requests per route since it started.
async fn mattermost_counts(url: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let body: Value = reqwest::Client::new()
        .get(format!("{}/standin/requests", url.trim_end_matches('/')))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .context("reading the Mattermost stand-in's request counts")?
        .json()
        .await?;
    let routes = body["routes"]
        .as_object()
        .context("no routes in /standin/requests")?;
    Ok(routes
        .iter()
        .map(|(route, count)| (route.clone(), count.as_u64().unwrap_or(0)))
        .collect())
}

fn cost(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    reads: u64,
) -> MattermostCost {
    let routes: BTreeMap<String, u64> = after
        .iter()
        .map(|(route, n)| {
            (
                route.clone(),
                n - before.get(route).copied().unwrap_or(0).min(*n),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    let per_read = |n: u64| n as f64 / reads.max(1) as f64;
    let total: u64 = routes.values().sum();
    let posts: u64 = routes
        .iter()
        .filter(|(route, _)| route.contains("/posts"))
        .map(|(_, n)| n)
        .sum();
    MattermostCost {
        requests_per_read: per_read(total),
        post_requests_per_read: per_read(posts),
        routes,
    }
}
