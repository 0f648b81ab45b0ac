//! What every scenario needs from the server under test: GraphQL over HTTP, users with tokens,
//! channels, the live-subscription count, and the server process's CPU time and memory.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

pub const PASSWORD: &str = "Load!Test123";

pub struct Client {
    pub http: reqwest::Client,
    pub url: String,
}

impl Client {
    pub fn new(url: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            url: url.trim_end_matches('/').to_owned(),
        }
    }

    pub fn ws_url(&self) -> String {
        format!("{}/ws/graphql/", self.url.replacen("http", "ws", 1))
    }

    pub async fn graphql(
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

    /// Registers `username` and returns an access token.
    pub async fn user(&self, username: &str) -> anyhow::Result<String> {
        self.graphql(
            "mutation($u: String!, $p: String!, $e: String!) { userCreate(username: $u, password: $p, email: $e) { statusCode message } }",
            json!({ "u": username, "p": PASSWORD, "e": format!("{username}@loadtest.example") }),
            None,
        )
        .await?;
        let data = self
            .graphql(
                "mutation($u: String!, $p: String!) { tokenAuth(username: $u, password: $p) { token } }",
                json!({ "u": username, "p": PASSWORD }),
                None,
            )
            .await?;
        Ok(data["tokenAuth"]["token"]
            .as_str()
            .context("no token")?
            .to_owned())
    }

    /// Creates `count` channels with `members`, named after `run_id`.
    pub async fn channels(
        &self,
        token: &str,
        run_id: &str,
        count: usize,
        members: &[&str],
    ) -> anyhow::Result<Vec<String>> {
        let mut channels = Vec::with_capacity(count);
        for k in 0..count {
            let name = format!("lt-{run_id}-{k}");
            self.graphql(
                "mutation($n: String!, $m: [String]!) { channelCreate(channelName: $n, members: $m) { statusCode } }",
                json!({ "n": name, "m": members }),
                Some(token),
            )
            .await?;
            channels.push(name);
        }
        Ok(channels)
    }

    /// Live subscriptions the server reports in `/readyz`.
    pub async fn subscriptions(&self) -> anyhow::Result<u64> {
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

/// Live subscriptions over all `gateways`.
pub async fn subscriptions(gateways: &[Client]) -> anyhow::Result<u64> {
    let mut total = 0;
    for gateway in gateways {
        total += gateway.subscriptions().await?;
    }
    Ok(total)
}

/// Waits until `gateways` report `count` live subscriptions in all, or `deadline`.
pub async fn wait_for_subscriptions(
    gateways: &[Client],
    count: u64,
    deadline: Instant,
) -> anyhow::Result<()> {
    let mut last_report = Instant::now();
    loop {
        let live = subscriptions(gateways).await?;
        if live >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {live} of {count} subscriptions became live before the timeout");
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            eprintln!("loadtest: {live}/{count} subscriptions live");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A name unique to this run, so runs against one server do not collide.
pub fn run_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    format!("{:x}{:x}", millis % 0xffffff, std::process::id() % 0xfff)
}

/// CPU time and resident memory of a process, from /proc (Linux).
#[derive(Debug, Clone, Copy)]
pub struct ProcessSample {
    pub cpu_secs: f64,
    pub rss_bytes: u64,
}

pub fn sample_process(pid: u32) -> anyhow::Result<ProcessSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("unexpected /proc stat format")?
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields.get(i).context("short /proc stat")?.parse()?)
    };
    // utime and stime are fields 14 and 15 of stat; here, after the state field, 11 and 12.
    let cpu_ticks = ticks(11)? + ticks(12)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")?;
    // Clock ticks per second: 100 on every Linux this runs on (USER_HZ).
    Ok(ProcessSample {
        cpu_secs: cpu_ticks as f64 / 100.0,
        rss_bytes: rss_kb * 1024,
    })
}
