//! The cluster tests' clients: GraphQL over HTTP, a `graphql-transport-ws` connection, and
//! the resuming subscriber whose record ([`Seen`]) the fault cases check.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use super::harness::Cluster;

pub const PASSWORD: &str = "Str0ng!Pass";

pub const SUBSCRIPTION: &str = "subscription($c: String!, $a: String) {
  onNewChatMessage(channelIdentifier: $c, afterMessageId: $a) { message { id message } }
}";

/// The last message of each channel's run: a subscriber that has it has everything sent
/// before it (a channel's messages are ordered), so it stops there.
pub fn end_marker(channel: &str) -> String {
    format!("{channel}:end")
}

/// The texts of up to `count` messages that arrive within `wait`.
pub async fn texts(ws: &mut Socket, count: usize, wait: Duration) -> Vec<String> {
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

pub async fn graphql(
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
pub async fn user(cluster: &Cluster, api: &str, username: &str) -> String {
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

/// A user's access token, exchanged for a new one (`refreshToken(token:)`, through whichever
/// API node answers) before it expires: publishers send with the current one, and a subscriber
/// whose socket a gateway closed at expiry (4403) connects again with it and resumes.
pub struct Login {
    http: reqwest::Client,
    apis: Vec<String>,
    token: std::sync::Mutex<String>,
    /// One renewal at a time: subscribers closed at the same expiry renew once.
    renewing: tokio::sync::Mutex<()>,
    pub renewals: AtomicUsize,
}

impl Login {
    pub fn new(cluster: &Cluster, token: String) -> Arc<Self> {
        Arc::new(Self {
            http: cluster.http.clone(),
            apis: cluster.apis.iter().map(super::harness::Node::url).collect(),
            token: std::sync::Mutex::new(token),
            renewing: tokio::sync::Mutex::new(()),
            renewals: AtomicUsize::new(0),
        })
    }

    pub fn token(&self) -> String {
        self.token.lock().unwrap().clone()
    }

    /// Replaces `stale` (unless it was replaced already), trying the API nodes in turn for up
    /// to a minute: a node may be down for a fault, and refreshing a JWT needs no Mattermost.
    pub async fn renew(&self, stale: &str) -> anyhow::Result<()> {
        let _one = self.renewing.lock().await;
        if self.token() != stale {
            return Ok(());
        }
        let query = "mutation($t: String) { refreshToken(token: $t) { token } }";
        let until = Instant::now() + Duration::from_secs(60);
        let mut attempt = 0usize;
        loop {
            let api = &self.apis[attempt % self.apis.len()];
            attempt += 1;
            let answer = self
                .http
                .post(format!("{api}/graphql/"))
                .timeout(Duration::from_secs(10))
                .json(&json!({ "query": query, "variables": { "t": stale } }))
                .send()
                .await;
            let error = match answer {
                Ok(answer) => match answer.json::<Value>().await {
                    Ok(body) => match body["data"]["refreshToken"]["token"].as_str() {
                        Some(token) => {
                            token.clone_into(&mut self.token.lock().unwrap());
                            self.renewals.fetch_add(1, Ordering::Relaxed);
                            return Ok(());
                        }
                        None => body.to_string(),
                    },
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            anyhow::ensure!(
                Instant::now() < until,
                "the token was not renewed for a minute: {error}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Renews the token every `every` until the task is aborted.
    pub fn keep_renewed(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let login = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let token = login.token();
                if let Err(e) = login.renew(&token).await {
                    eprintln!("renewing a token: {e}");
                }
            }
        })
    }
}

/// What one subscriber has received so far and how often it connected: on a timeout, which
/// messages are missing where tells a lost event (every subscriber of a channel misses it) from
/// a stalled connection.
#[derive(Default)]
pub struct Seen {
    pub texts: std::sync::Mutex<Vec<String>>,
    pub connections: AtomicUsize,
    /// Anything but a message: failed connects, closes, frames of other types.
    pub events: std::sync::Mutex<Vec<String>>,
    /// The close codes servers ended its connections with.
    pub close_codes: std::sync::Mutex<Vec<u16>>,
    /// When the last message arrived, and on which gateway (index into the URLs) the
    /// subscriber is now: the soak's monitor reports who goes silent, and where.
    pub last_message: std::sync::Mutex<Option<Instant>>,
    pub gateway: AtomicUsize,
    /// Subscriptions refused as unavailable for now (503), then tried again.
    pub unavailable: AtomicUsize,
}

impl Seen {
    /// Records `what` with the wall-clock time (UTC, as the nodes' logs show it).
    fn event(&self, what: String) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let (secs, millis) = (now.as_secs() % 86_400, now.subsec_millis());
        let stamp = format!(
            "{:02}:{:02}:{:02}.{millis:03}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        );
        self.events.lock().unwrap().push(format!("{stamp} {what}"));
    }
}

/// The subscribers that are still waiting: how many messages each has, the first it lacks,
/// and its connections.
pub fn incomplete(seen: &[Arc<Seen>], channels: &[String], per_channel: usize) -> String {
    let mut lines = Vec::new();
    for (i, s) in seen.iter().enumerate() {
        let channel = &channels[i % channels.len()];
        let texts = s.texts.lock().unwrap();
        if texts.last() == Some(&end_marker(channel)) {
            continue;
        }
        let missing: Vec<usize> = (0..per_channel)
            .filter(|n| !texts.contains(&format!("{channel}:{n}")))
            .take(5)
            .collect();
        let events = s.events.lock().unwrap();
        lines.push(format!(
            "subscriber {i} ({channel}, first gateway {}): {} of {per_channel}, lacks {missing:?}…, connections {}, events {:?}",
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
/// next gateway and resumes after the last message it got, with `login`'s current token (a
/// socket closed because its token expired, 4403, renews it first if nobody has). Returns the message texts in the
/// order received, once its channel's [`end_marker`] arrived (which is not among them).
pub async fn subscriber(
    urls: Vec<String>,
    first: usize,
    login: Arc<Login>,
    channel: String,
    resumed: Arc<AtomicUsize>,
    seen: Arc<Seen>,
) -> Vec<String> {
    let mut last_id: Option<String> = None;
    let mut gateway = first;
    loop {
        let url = &urls[gateway % urls.len()];
        seen.gateway.store(gateway % urls.len(), Ordering::Relaxed);
        let token = login.token();
        let mut expired = false;
        match connect(url, &token).await {
            Err(e) => {
                if e.to_string().contains("4403") {
                    seen.close_codes.lock().unwrap().push(4403);
                    if let Err(e) = login.renew(&token).await {
                        seen.event(format!("renewing the token: {e}"));
                    }
                }
                seen.event(format!("connecting to {url}: {e}"));
            }
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
                            if let Message::Close(Some(frame)) = &other {
                                let code: u16 = frame.code.into();
                                seen.close_codes.lock().unwrap().push(code);
                                if code == 4403 {
                                    expired = true;
                                    if let Err(e) = login.renew(&token).await {
                                        seen.event(format!("renewing the token: {e}"));
                                    }
                                }
                            }
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
                            *seen.last_message.lock().unwrap() = Some(Instant::now());
                            let mut texts = seen.texts.lock().unwrap();
                            texts.push(m["message"].as_str().expect("text").to_owned());
                            last_id = Some(m["id"].as_str().expect("id").to_owned());
                            if texts.last() == Some(&end_marker(&channel)) {
                                return texts[..texts.len() - 1].to_vec();
                            }
                        }
                        Some("ping") => {
                            let _ = ws.send(Message::text(r#"{"type":"pong"}"#)).await;
                        }
                        Some("error")
                            if message["payload"][0]["extensions"]["statusCode"] == 503 =>
                        {
                            // A resume reads the history it missed from Mattermost (this
                            // cluster has no ScyllaDB), and Mattermost is down for a fault:
                            // a clear, retriable refusal. Try again in a moment.
                            seen.event(format!("{url} could not resume now: {message}"));
                            seen.unavailable.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            break;
                        }
                        Some("error") => {
                            seen.event(format!("{url} refused the subscription: {message}"));
                            panic!(
                                "subscription refused: {message}; connections {}, last events {:?}",
                                seen.connections.load(Ordering::Relaxed),
                                seen.events.lock().unwrap()
                            )
                        }
                        Some("complete") => {
                            panic!("the server completed the subscription: {message}")
                        }
                        _ => seen.event(format!("{url} sent {message}")),
                    }
                }
            }
        }
        // A socket closed for its token's expiry was on a healthy gateway: come back to it, as
        // a client behind one address would. Anything else tries the next gateway.
        if !expired {
            gateway += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn connect(url: &str, token: &str) -> anyhow::Result<Socket> {
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
