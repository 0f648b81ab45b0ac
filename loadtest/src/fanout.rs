use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

const PASSWORD: &str = "Load!Test123";

#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// WebSocket subscribers (S).
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Channels the subscribers are spread over (K).
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Messages to publish in total (P), spread evenly over the channels.
    #[arg(long, default_value_t = 1000)]
    pub messages: usize,
    /// `graphql-transport-ws` or `graphql-ws`.
    #[arg(long, default_value = "graphql-transport-ws")]
    pub protocol: String,
    /// Give up waiting for deliveries after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
}

#[derive(Debug, Serialize)]
pub struct FanoutReport {
    pub subscribers: usize,
    pub channels: usize,
    pub messages: usize,
    pub protocol: String,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub publish_secs: f64,
    pub wall_secs: f64,
    pub deliveries_per_sec: f64,
}

struct Client {
    http: reqwest::Client,
    url: String,
}

impl Client {
    async fn graphql(
        &self,
        query: &str,
        variables: Value,
        token: Option<&str>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .post(format!("{}/graphql/", self.url))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.header("Authorization", format!("JWT {token}"));
        }
        let body: Value = request.send().await?.json().await?;
        if let Some(errors) = body.get("errors") {
            bail!("GraphQL error: {errors}");
        }
        Ok(body["data"].clone())
    }

    async fn user(&self, username: &str) -> anyhow::Result<String> {
        self.graphql(
            "mutation($u: String!, $p: String!, $e: String!) { userCreate(username: $u, password: $p, email: $e) { statusCode message } }",
            json!({ "u": username, "p": PASSWORD, "e": format!("{username}@loadtest.example") }),
            None,
        )
        .await?;
        let data = self
            .graphql("mutation($u: String!, $p: String!) { tokenAuth(username: $u, password: $p) { token } }", json!({ "u": username, "p": PASSWORD }), None)
            .await?;
        Ok(data["tokenAuth"]["token"]
            .as_str()
            .context("no token")?
            .to_owned())
    }

    async fn subscriptions(&self) -> anyhow::Result<u64> {
        let ready: Value = self
            .http
            .get(format!("{}/readyz", self.url))
            .send()
            .await?
            .json()
            .await?;
        Ok(ready["subscriptions"].as_u64().unwrap_or(0))
    }
}

/// What one subscriber saw: message sequence numbers in arrival order.
async fn subscriber(
    ws_url: String,
    protocol: String,
    token: String,
    channel: String,
    deadline: Instant,
    expected: usize,
) -> anyhow::Result<Vec<u64>> {
    let mut request = ws_url.into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(&protocol)?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    let legacy = protocol == "graphql-ws";
    ws.send(Message::text(json!({ "type": "connection_init", "payload": { "Authorization": format!("JWT {token}") } }).to_string())).await?;
    let query = "subscription($c: String!) { onNewChatMessage(channelIdentifier: $c) { message { message } } }";
    let kind = if legacy { "start" } else { "subscribe" };
    ws.send(Message::text(json!({ "id": "1", "type": kind, "payload": { "query": query, "variables": { "c": channel } } }).to_string())).await?;
    let mut seen = Vec::with_capacity(expected);
    while seen.len() < expected {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(frame)) = tokio::time::timeout(remaining, ws.next()).await else {
            break;
        };
        let Message::Text(text) = frame? else {
            continue;
        };
        let value: Value = serde_json::from_str(&text)?;
        match value["type"].as_str() {
            Some("next") | Some("data") => {
                let text = value["payload"]["data"]["onNewChatMessage"]["message"]["message"]
                    .as_str()
                    .unwrap_or_default();
                if let Some(n) = text.rsplit(':').next().and_then(|n| n.parse().ok()) {
                    seen.push(n);
                }
            }
            Some("error") | Some("connection_error") => bail!("subscription refused: {value}"),
            _ => {}
        }
    }
    let _ = ws.close(None).await;
    Ok(seen)
}

pub async fn run(args: FanoutArgs) -> anyhow::Result<FanoutReport> {
    if args.subscribers == 0 || args.channels == 0 || args.messages < args.channels {
        bail!("need at least one subscriber, one channel, and one message per channel");
    }
    let client = Arc::new(Client {
        http: reqwest::Client::new(),
        url: args.url.trim_end_matches('/').to_owned(),
    });
    let ws_url = format!("{}/ws/graphql/", client.url.replacen("http", "ws", 1));
    let run_id = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
            % 0xffffff
    );
    let publisher = client.user(&format!("lt{run_id}p")).await?;
    let reader = format!("lt{run_id}r");
    let reader_token = client.user(&reader).await?;
    let mut channels = Vec::new();
    for k in 0..args.channels {
        let name = format!("lt-{run_id}-{k}");
        client
            .graphql("mutation($n: String!, $m: [String]!) { channelCreate(channelName: $n, members: $m) { statusCode } }", json!({ "n": name, "m": [reader] }), Some(&publisher))
            .await?;
        channels.push(name);
    }
    let per_channel = args.messages / args.channels;
    let expected = (per_channel * args.subscribers) as u64;
    let baseline = client.subscriptions().await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_secs);

    let subscribers: Vec<_> = (0..args.subscribers)
        .map(|i| {
            tokio::spawn(subscriber(
                ws_url.clone(),
                args.protocol.clone(),
                reader_token.clone(),
                channels[i % args.channels].clone(),
                deadline,
                per_channel,
            ))
        })
        .collect();
    while client.subscriptions().await? < baseline + args.subscribers as u64 {
        if Instant::now() > deadline {
            bail!("subscriptions did not all become live before the timeout");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let publish_started = Instant::now();
    let publishers: Vec<_> = channels
        .iter()
        .map(|channel| {
            let (client, publisher, channel) = (client.clone(), publisher.clone(), channel.clone());
            tokio::spawn(async move {
                for n in 0..per_channel {
                    client
                        .graphql(
                            "mutation($c: String!, $t: String!) { textMessageSend(channelIdentifier: $c, textMessage: $t) { statusCode } }",
                            json!({ "c": channel, "t": format!("lt:{n}") }),
                            Some(&publisher),
                        )
                        .await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for p in publishers {
        p.await??;
    }
    let publish_secs = publish_started.elapsed().as_secs_f64();

    let (mut delivered, mut duplicates, mut out_of_order) = (0u64, 0u64, 0u64);
    for s in subscribers {
        let seen = s.await??;
        let mut unique = HashSet::new();
        for (i, n) in seen.iter().enumerate() {
            delivered += 1;
            if !unique.insert(*n) {
                duplicates += 1;
            }
            if i > 0 && *n <= seen[i - 1] {
                out_of_order += 1;
            }
        }
    }
    let wall = publish_started.elapsed().as_secs_f64();
    Ok(FanoutReport {
        subscribers: args.subscribers,
        channels: args.channels,
        messages: per_channel * args.channels,
        protocol: args.protocol,
        expected,
        delivered,
        lost: expected.saturating_sub(delivered - duplicates),
        duplicates,
        out_of_order,
        publish_secs,
        wall_secs: wall,
        deliveries_per_sec: delivered as f64 / wall,
    })
}
