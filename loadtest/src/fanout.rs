//! `loadtest fanout` and `loadtest idle`: real WebSocket subscribers against a real server.
//!
//! Each published message carries its channel sequence number and its send time
//! (`lt:<seq>:<nanos since the run began>`). A subscriber finds that marker in the raw frame
//! with one substring search instead of parsing the JSON, so the generator's cost per delivery
//! stays small next to the server's; it records latency in microseconds, and a bitset tells
//! duplicates from first arrivals. Ordering is defined per channel: each channel has one
//! sequential publisher.
//!
//! One file, just over 500 lines: both commands run the same subscribers and counters, and the
//! measurement (subscribe, publish, drain, report) reads best in one place.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};

use crate::client::{
    run_id, sample_process, subscriptions, wait_for_subscriptions, Client, ProcessSample,
};
use crate::publisher::Publisher;
use crate::ws::{RawWebSocket, OP_CLOSE, OP_TEXT};

/// At most this many WebSocket handshakes in flight (a burst of thousands overflows backlogs).
pub const CONNECT_CONCURRENCY: usize = 128;

#[derive(Debug, Clone, clap::Args)]
pub struct SubscriberArgs {
    /// Base URL of the server; in a cluster, the API nodes (comma-separated): publishers
    /// take turns over them.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:8000")]
    pub url: Vec<String>,
    /// In a cluster, the gateway nodes (comma-separated): subscribers take turns over them.
    /// Defaults to `--url`.
    #[arg(long, value_delimiter = ',')]
    pub ws_url: Vec<String>,
    /// WebSocket subscribers (S), one connection each.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Channels the subscribers are spread over (K).
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// `graphql-transport-ws` or `graphql-ws`.
    #[arg(long, default_value = "graphql-transport-ws")]
    pub protocol: String,
    /// The server's process id: report its CPU time and memory from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub subscribers: SubscriberArgs,
    /// Messages to publish in total (P), spread evenly over the channels.
    #[arg(long, default_value_t = 1000)]
    pub messages: usize,
    /// Messages per second over all channels (R); 0 publishes as fast as the server answers,
    /// one request in flight per channel.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
}

#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub subscribers: SubscriberArgs,
    /// Keep the subscribers open this long after measuring (to inspect the server).
    #[arg(long, default_value_t = 0)]
    pub hold_secs: u64,
}

#[derive(Debug, Serialize)]
pub struct LatencyReport {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl LatencyReport {
    fn of(h: &Histogram<u64>) -> Self {
        Self {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        }
    }
}

/// The latency of the messages sent in one second of the run: a cluster that is slow only
/// in its first seconds shows here, not in the whole run's percentiles.
#[derive(Debug, Serialize)]
pub struct SecondLatency {
    /// Seconds since the run began, when the messages were sent.
    pub second: usize,
    pub deliveries: u64,
    #[serde(flatten)]
    pub latency: LatencyReport,
}

#[derive(Debug, Serialize)]
pub struct FanoutReport {
    pub subscribers: usize,
    pub channels: usize,
    pub messages: usize,
    pub protocol: String,
    pub rate: Option<f64>,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub publish_secs: f64,
    pub wall_secs: f64,
    pub deliveries_per_sec: f64,
    /// From the mutation being sent to the frame being read, in microseconds.
    pub latency_us: LatencyReport,
    /// The same, by the second each message was sent in.
    pub latency_by_second_us: Vec<SecondLatency>,
    pub server_cpu_secs: Option<f64>,
    pub server_cpu_us_per_delivery: Option<f64>,
    pub generator_cpu_secs: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct IdleReport {
    pub subscribers: usize,
    pub channels: usize,
    pub protocol: String,
    /// Before anything: includes one-off costs (the users' password hashes, the channels).
    pub server_rss_at_start_bytes: u64,
    /// Once users and channels exist, just before the subscribers connect.
    pub server_rss_before_bytes: u64,
    pub server_rss_after_bytes: u64,
    pub server_bytes_per_subscriber: u64,
}

/// Everything a run shares: users, channels, the subscribers' connections.
struct Setup {
    /// One per API node.
    clients: Vec<Arc<Client>>,
    publisher_token: String,
    channels: Vec<String>,
    sockets: Vec<RawWebSocket>,
    /// The server's memory just before the subscribers connected (with `--server-pid`).
    before_connecting: Option<ProcessSample>,
}

async fn set_up(args: &SubscriberArgs, deadline: Instant) -> anyhow::Result<Setup> {
    if args.subscribers == 0 || args.channels == 0 {
        bail!("need at least one subscriber and one channel");
    }
    if !matches!(
        args.protocol.as_str(),
        "graphql-transport-ws" | "graphql-ws"
    ) {
        bail!("--protocol is graphql-transport-ws or graphql-ws");
    }
    if args.url.is_empty() {
        bail!("--url needs at least one server");
    }
    let clients: Vec<Arc<Client>> = args.url.iter().map(|u| Arc::new(Client::new(u))).collect();
    let gateways: Vec<Client> = if args.ws_url.is_empty() {
        &args.url
    } else {
        &args.ws_url
    }
    .iter()
    .map(|u| Client::new(u))
    .collect();
    let client = &clients[0];
    let run = run_id();
    let publisher_token = client.user(&format!("lt{run}p")).await?;
    let reader = format!("lt{run}r");
    let reader_token = client.user(&reader).await?;
    let channels = client
        .channels(&publisher_token, &run, args.channels, &[&reader])
        .await?;
    let baseline = subscriptions(&gateways).await?;
    let before_connecting = match args.server_pid {
        // Settled as the sample after connecting is: memory the setup freed (the password
        // hashes' working memory) has been returned to the system by then.
        Some(pid) => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some(sample_process(pid)?)
        }
        None => None,
    };

    let gate = Arc::new(tokio::sync::Semaphore::new(CONNECT_CONCURRENCY));
    let connecting: Vec<_> = (0..args.subscribers)
        .map(|i| {
            let (gate, ws_url, protocol, token) = (
                gate.clone(),
                gateways[i % gateways.len()].ws_url(),
                args.protocol.clone(),
                reader_token.clone(),
            );
            let channel = channels[i % args.channels].clone();
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await?;
                subscribe(&ws_url, &protocol, &token, &channel).await
            })
        })
        .collect();
    let mut sockets = Vec::with_capacity(args.subscribers);
    for (i, connecting) in connecting.into_iter().enumerate() {
        sockets.push(connecting.await??);
        if (i + 1).is_multiple_of(2000) {
            eprintln!("loadtest: {} connections open", i + 1);
        }
    }
    wait_for_subscriptions(&gateways, baseline + args.subscribers as u64, deadline).await?;
    Ok(Setup {
        clients,
        publisher_token,
        channels,
        sockets,
        before_connecting,
    })
}

/// Opens one connection and starts its one subscription.
async fn subscribe(
    ws_url: &str,
    protocol: &str,
    token: &str,
    channel: &str,
) -> anyhow::Result<RawWebSocket> {
    let mut ws = RawWebSocket::connect(ws_url, protocol).await?;
    ws.send_text(
        &json!({ "type": "connection_init", "payload": { "Authorization": format!("JWT {token}") } })
            .to_string(),
    )
    .await?;
    let query = "subscription($c: String!) { onNewChatMessage(channelIdentifier: $c) { message { message } } }";
    let kind = if protocol == "graphql-ws" {
        "start"
    } else {
        "subscribe"
    };
    ws.send_text(
        &json!({ "id": "1", "type": kind, "payload": { "query": query, "variables": { "c": channel } } })
            .to_string(),
    )
    .await?;
    Ok(ws)
}

/// What one subscriber saw.
#[derive(Default)]
struct Seen {
    received: u64,
    unique: u64,
    duplicates: u64,
    out_of_order: u64,
    /// Each delivery's latency, with the second of the run its message was sent in.
    latencies_us: Vec<(u32, u16)>,
}

/// Finds `lt:<seq>:<nanos>` in a frame without parsing it.
fn marker(frame: &[u8]) -> Option<(u64, u64)> {
    let at = memchr::memmem::find(frame, b"lt:")? + 3;
    let mut numbers = frame[at..].split(|b| !b.is_ascii_digit());
    let seq = std::str::from_utf8(numbers.next()?).ok()?.parse().ok()?;
    let nanos = std::str::from_utf8(numbers.next()?).ok()?.parse().ok()?;
    Some((seq, nanos))
}

async fn receive(
    mut ws: RawWebSocket,
    expected: usize,
    epoch: Instant,
    deadline: Instant,
    progress: Arc<AtomicU64>,
) -> anyhow::Result<Seen> {
    let mut seen = Seen {
        latencies_us: Vec::with_capacity(expected),
        ..Seen::default()
    };
    let mut bits = vec![0u64; expected.div_ceil(64)];
    let mut highest: Option<u64> = None;
    // One timer for the whole run: a timeout per frame would register a timer per frame.
    let give_up = tokio::time::sleep_until(deadline.into());
    tokio::pin!(give_up);
    while (seen.unique as usize) < expected {
        let frame = tokio::select! {
            biased;
            frame = ws.next_frame() => frame,
            () = &mut give_up => break,
        };
        let text = match frame? {
            Some((OP_TEXT, text)) => text,
            Some((OP_CLOSE, reason)) => bail!(
                "the server closed the connection: {}",
                String::from_utf8_lossy(reason.get(2..).unwrap_or_default())
            ),
            Some(_) => continue,
            None => break,
        };
        let Some((seq, sent)) = marker(text) else {
            // Not a delivery: acks, keep-alives, or a refusal worth reporting.
            let value: Value = serde_json::from_slice(text)?;
            if matches!(value["type"].as_str(), Some("error" | "connection_error")) {
                bail!("subscription refused: {value}");
            }
            continue;
        };
        let now = epoch.elapsed().as_nanos() as u64;
        seen.received += 1;
        let us = (now.saturating_sub(sent) / 1000).min(u64::from(u32::MAX)) as u32;
        let second = (sent / 1_000_000_000).min(u64::from(u16::MAX)) as u16;
        seen.latencies_us.push((us, second));
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        match bits.get_mut(word) {
            Some(w) if *w & bit == 0 => {
                *w |= bit;
                seen.unique += 1;
            }
            _ => seen.duplicates += 1,
        }
        if highest.is_some_and(|h| seq <= h) {
            seen.out_of_order += 1;
        }
        highest = highest.max(Some(seq));
        if seen.received.is_multiple_of(64) {
            progress.fetch_add(64, Ordering::Relaxed);
        }
    }
    ws.close().await;
    Ok(seen)
}

pub async fn fanout(args: FanoutArgs) -> anyhow::Result<FanoutReport> {
    let s = &args.subscribers;
    if args.messages < s.channels {
        bail!("need at least one message per channel");
    }
    let deadline = Instant::now() + Duration::from_secs(s.timeout_secs);
    let setup = set_up(s, deadline).await?;
    let run = Run {
        subscribers: s.subscribers,
        channels: s.channels,
        per_channel: args.messages / s.channels,
        protocol: s.protocol.clone(),
        rate: args.rate,
        server_pid: s.server_pid,
        deadline,
    };
    let (per_channel, rate, channels) = (run.per_channel, args.rate, s.channels);
    measure(run, setup.sockets, |epoch| async move {
        let publish_started = Instant::now();
        let publishers: Vec<_> = setup
            .channels
            .iter()
            .enumerate()
            .map(|(k, channel)| {
                let publisher = Publisher::new(
                    &setup.clients[k % setup.clients.len()].url,
                    &setup.publisher_token,
                );
                let channel = channel.clone();
                tokio::spawn(async move {
                    let mut publisher = publisher?;
                    for n in 0..per_channel {
                        if let Some(due) = due(n, k, channels, rate) {
                            tokio::time::sleep_until((publish_started + due).into()).await;
                        }
                        let sent = epoch.elapsed().as_nanos();
                        publisher.send(&channel, &format!("lt:{n}:{sent}")).await?;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        for p in publishers {
            p.await??;
        }
        Ok(())
    })
    .await
}

/// When message `n` of channel `k` is due after publishing starts, at `rate` messages per
/// second over all `channels`: at (n·K + k) / R, an even stream. `None`: as fast as possible.
pub fn due(n: usize, k: usize, channels: usize, rate: f64) -> Option<Duration> {
    (rate > 0.0).then(|| Duration::from_secs_f64(((n * channels + k) as f64 / rate).min(3600.0)))
}

/// The shape of one measured run.
pub struct Run {
    pub subscribers: usize,
    pub channels: usize,
    /// Messages each channel's publisher sends; each subscriber expects this many.
    pub per_channel: usize,
    pub protocol: String,
    pub rate: f64,
    pub server_pid: Option<u32>,
    pub deadline: Instant,
}

/// Reads every socket while `publish` runs, then reports what the subscribers saw. `publish`
/// gets the run's epoch: a message's marker carries its send time as nanoseconds since then.
pub async fn measure<F, Fut>(
    run: Run,
    sockets: Vec<RawWebSocket>,
    publish: F,
) -> anyhow::Result<FanoutReport>
where
    F: FnOnce(Instant) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let expected = (run.per_channel * run.subscribers) as u64;
    let epoch = Instant::now();
    let progress = Arc::new(AtomicU64::new(0));
    let receivers: Vec<_> = sockets
        .into_iter()
        .map(|ws| {
            tokio::spawn(receive(
                ws,
                run.per_channel,
                epoch,
                run.deadline,
                progress.clone(),
            ))
        })
        .collect();

    let server_before = run.server_pid.map(sample_process).transpose()?;
    let generator_before = sample_process(std::process::id()).ok();
    let publish_started = Instant::now();
    let reporter = tokio::spawn({
        let progress = progress.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                eprintln!(
                    "loadtest: ~{} of {expected} deliveries",
                    progress.load(Ordering::Relaxed)
                );
            }
        }
    });
    let published = publish(epoch).await;
    let publish_secs = publish_started.elapsed().as_secs_f64();
    if published.is_err() {
        reporter.abort();
    }
    published?;

    let mut total = Seen::default();
    let mut latency = Histogram::<u64>::new(3)?;
    let mut by_second: Vec<Histogram<u64>> = Vec::new();
    for r in receivers {
        let seen = r.await??;
        total.received += seen.received;
        total.unique += seen.unique;
        total.duplicates += seen.duplicates;
        total.out_of_order += seen.out_of_order;
        for (us, second) in seen.latencies_us {
            latency.record(u64::from(us))?;
            let second = usize::from(second);
            while by_second.len() <= second {
                by_second.push(Histogram::new(3)?);
            }
            by_second[second].record(u64::from(us))?;
        }
    }
    reporter.abort();
    let wall = publish_started.elapsed().as_secs_f64();
    let server_after = run.server_pid.map(sample_process).transpose()?;
    let server_cpu = server_before
        .zip(server_after)
        .map(|(a, b): (ProcessSample, ProcessSample)| b.cpu_secs - a.cpu_secs);
    let generator_cpu = generator_before
        .zip(sample_process(std::process::id()).ok())
        .map(|(a, b)| b.cpu_secs - a.cpu_secs);
    Ok(FanoutReport {
        subscribers: run.subscribers,
        channels: run.channels,
        messages: run.per_channel * run.channels,
        protocol: run.protocol,
        rate: (run.rate > 0.0).then_some(run.rate),
        expected,
        delivered: total.received,
        lost: expected - total.unique,
        duplicates: total.duplicates,
        out_of_order: total.out_of_order,
        publish_secs,
        wall_secs: wall,
        deliveries_per_sec: total.received as f64 / wall,
        latency_us: LatencyReport::of(&latency),
        latency_by_second_us: by_second
            .iter()
            .enumerate()
            .map(|(second, h)| SecondLatency {
                second,
                deliveries: h.len(),
                latency: LatencyReport::of(h),
            })
            .collect(),
        server_cpu_secs: server_cpu,
        server_cpu_us_per_delivery: server_cpu
            .filter(|_| total.received > 0)
            .map(|cpu| cpu * 1e6 / total.received as f64),
        generator_cpu_secs: generator_cpu,
    })
}

pub async fn idle(args: IdleArgs) -> anyhow::Result<IdleReport> {
    let s = &args.subscribers;
    let Some(pid) = s.server_pid else {
        bail!("idle measures the server's memory: give --server-pid");
    };
    let deadline = Instant::now() + Duration::from_secs(s.timeout_secs);
    let at_start = sample_process(pid)?;
    let setup = set_up(s, deadline).await?;
    let before = setup
        .before_connecting
        .expect("sampled: the server pid is known");
    // Let the server settle (allocator, lazily grown buffers) before reading its memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = sample_process(pid)?;
    if args.hold_secs > 0 {
        tokio::time::sleep(Duration::from_secs(args.hold_secs.min(3600))).await;
    }
    drop(setup);
    Ok(IdleReport {
        subscribers: s.subscribers,
        channels: s.channels,
        protocol: s.protocol.clone(),
        server_rss_at_start_bytes: at_start.rss_bytes,
        server_rss_before_bytes: before.rss_bytes,
        server_rss_after_bytes: after.rss_bytes,
        server_bytes_per_subscriber: after.rss_bytes.saturating_sub(before.rss_bytes)
            / s.subscribers as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_marker_in_either_protocol_frame() {
        let frame = br#"{"id":"1","type":"next","payload":{"data":{"onNewChatMessage":{"message":{"message":"lt:42:123456789"}}}}}"#;
        assert_eq!(marker(frame), Some((42, 123_456_789)));
        assert_eq!(marker(br#"{"type":"ka"}"#), None);
        assert_eq!(marker(br#"{"message":"lt:x"}"#), None);
    }
}
