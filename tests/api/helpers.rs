//! Starts a real server on an ephemeral loopback port with its own data directory, and drives
//! it the way clients do: reqwest for HTTP, tokio-tungstenite (an independent WebSocket
//! implementation) for both GraphQL-over-WebSocket protocols.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use mattermost_standin::{StandIn, StandInConfig};
use mmsub::{RunningServer, ServerConfig};
use mmsub_api::backend::mattermost::MattermostConfig;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A token signed like django-graphql-jwt's: expires `exp_in` seconds from now, issued
/// `issued_ago` seconds ago.
pub fn jwt(username: &str, exp_in: i64, issued_ago: i64, secret: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({ "username": username, "exp": now + exp_in, "origIat": now - issued_ago });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub const PASSWORD: &str = "Str0ng!Pass";
pub const JWT_SECRET: &str = "test-secret-shared-with-the-original";
const WAIT: Duration = Duration::from_secs(10);

pub struct TestApp {
    pub addr: SocketAddr,
    /// `/metrics`, on its own listener.
    pub metrics_addr: SocketAddr,
    pub http: reqwest::Client,
    pub config: ServerConfig,
    server: Option<RunningServer>,
    _data_dir: Arc<TempDir>,
}

/// A server on the Mattermost backend, in front of a fresh stand-in Mattermost (a real
/// Mattermost cannot run here; the stand-in follows its published API, see
/// `tests/mattermost-standin`). Timeouts and reconnects are short so fault tests stay quick.
pub async fn spawn_app_on_mattermost(
    configure: impl FnOnce(&mut ServerConfig),
) -> (TestApp, StandIn) {
    let standin = StandIn::start(StandInConfig::default()).await;
    let app = spawn_app_with(|config| {
        let c = &standin.config;
        let mut mattermost = MattermostConfig::new(
            &standin.url(),
            &c.admin_username,
            &c.admin_password,
            &c.team,
        );
        mattermost.limits.request_timeout = Duration::from_secs(3);
        config.mattermost = Some(mattermost);
        config.ingest.reconnect_min = Duration::from_millis(50);
        config.ingest.reconnect_max = Duration::from_millis(200);
        configure(config);
    })
    .await;
    (app, standin)
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a server with the test defaults, adjusted by `configure`.
pub async fn spawn_app_with(configure: impl FnOnce(&mut ServerConfig)) -> TestApp {
    let data_dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let mut config = ServerConfig::embedded(data_dir.path());
    config.jwt_secret = Some(JWT_SECRET.into());
    // Keep-alive messages only where a test asks for them.
    config.gateway.keepalive_interval = Duration::ZERO;
    // No load balancer to wait for when a test stops the server.
    config.connections.shutdown_drain = Duration::ZERO;
    config.metrics.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    configure(&mut config);
    start(config, data_dir).await
}

async fn start(config: ServerConfig, data_dir: Arc<TempDir>) -> TestApp {
    let server = mmsub::start(config.clone()).await.expect("server starts");
    TestApp {
        addr: server.local_addr,
        metrics_addr: server.metrics_addr.expect("test servers serve /metrics"),
        http: reqwest::Client::new(),
        config,
        server: Some(server),
        _data_dir: data_dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Shuts the server down the way SIGTERM does.
    pub async fn stop(&mut self) {
        self.server.take().expect("running").shutdown().await;
    }

    /// Stops the server and starts a new one on the same data directory (and port).
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        let mut config = self.config.clone();
        config.listen = self.addr;
        start(config, self._data_dir.clone()).await
    }

    /// POSTs a GraphQL request; returns the whole JSON response.
    pub async fn graphql(&self, query: &str, variables: Value, token: Option<&str>) -> Value {
        let authorization = token.map(|t| format!("JWT {t}"));
        self.graphql_with_authorization(query, variables, authorization.as_deref())
            .await
    }

    /// Runs a GraphQL operation and returns `data.<field>`.
    pub async fn data(
        &self,
        field: &str,
        query: &str,
        variables: Value,
        token: Option<&str>,
    ) -> Value {
        self.graphql(query, variables, token).await["data"][field].clone()
    }

    /// Like [`graphql`](Self::graphql) with any `Authorization` header value.
    pub async fn graphql_with_authorization(
        &self,
        query: &str,
        variables: Value,
        authorization: Option<&str>,
    ) -> Value {
        let mut request = self
            .http
            .post(self.url("/graphql/"))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(authorization) = authorization {
            request = request.header("Authorization", authorization);
        }
        let response = request.send().await.expect("HTTP request");
        assert_eq!(response.status(), 200, "GraphQL over HTTP answers 200");
        response.json().await.expect("JSON body")
    }

    pub async fn user_create(&self, username: &str, email: &str, password: &str) -> Value {
        self.data(
            "userCreate",
            "mutation($u: String!, $p: String!, $e: String!) {
               userCreate(username: $u, password: $p, email: $e) { status statusCode message metadata }
             }",
            json!({ "u": username, "p": password, "e": email }),
            None,
        )
        .await
    }

    /// Scrapes `/metrics` from its own listener.
    pub async fn metrics(&self) -> Scrape {
        let response = self
            .http
            .get(format!("http://{}/metrics", self.metrics_addr))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), 200);
        Scrape::parse(&response.text().await.expect("the exposition"))
    }

    pub async fn readyz(&self) -> Value {
        let response = self
            .http
            .get(self.url("/readyz"))
            .send()
            .await
            .expect("GET /readyz");
        response.json().await.expect("JSON body")
    }

    /// Subscriptions register when the server first polls them; waits until `count` are live.
    pub async fn wait_for_subscriptions(&self, count: u64) {
        for _ in 0..500 {
            if self.readyz().await["subscriptions"].as_u64() == Some(count) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{count} subscriptions did not become live");
    }

    /// Creates a user with the standard password and returns an access token for it.
    pub async fn signed_up(&self, username: &str) -> String {
        let created = self
            .user_create(username, &format!("{username}@example.com"), PASSWORD)
            .await;
        assert_eq!(created["statusCode"], 200, "{created}");
        self.token(username).await
    }

    pub async fn token(&self, username: &str) -> String {
        let response = self
            .graphql(
                "mutation($u: String!, $p: String!) { tokenAuth(username: $u, password: $p) { token } }",
                json!({ "u": username, "p": PASSWORD }),
                None,
            )
            .await;
        response["data"]["tokenAuth"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("token: {response}"))
            .to_owned()
    }

    pub async fn channel_create(&self, token: &str, name: &str, members: &[&str]) -> Value {
        self.data(
            "channelCreate",
            "mutation($n: String!, $m: [String]!) {
               channelCreate(channelName: $n, members: $m) { status statusCode message metadata }
             }",
            json!({ "n": name, "m": members }),
            Some(token),
        )
        .await
    }

    /// Creates a channel and returns its id.
    pub async fn channel(&self, token: &str, name: &str, members: &[&str]) -> String {
        let created = self.channel_create(token, name, members).await;
        assert_eq!(created["statusCode"], 200, "{created}");
        created["metadata"]["channel_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn send_message(&self, token: &str, channel: &str, text: &str) -> Value {
        self.data(
            "textMessageSend",
            "mutation($c: String!, $t: String!) {
               textMessageSend(channelIdentifier: $c, textMessage: $t) { status statusCode message metadata }
             }",
            json!({ "c": channel, "t": text }),
            Some(token),
        )
        .await
    }

    /// Sends a message and returns its id.
    pub async fn send(&self, token: &str, channel: &str, text: &str) -> String {
        let sent = self.send_message(token, channel, text).await;
        assert_eq!(sent["statusCode"], 200, "{sent}");
        sent["metadata"]["message_id"].as_str().unwrap().to_owned()
    }

    /// Opens a WebSocket offering `protocol` (none when `None`), with optional upgrade headers.
    pub async fn ws_with(&self, protocol: Option<&str>, authorization: Option<&str>) -> WsClient {
        let mut request = format!("ws://{}/ws/graphql/", self.addr)
            .into_client_request()
            .unwrap();
        if let Some(protocol) = protocol {
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_str(protocol).unwrap(),
            );
        }
        if let Some(auth) = authorization {
            request
                .headers_mut()
                .insert("Authorization", HeaderValue::from_str(auth).unwrap());
        }
        let (stream, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("WebSocket upgrade");
        let negotiated = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap().to_owned());
        WsClient { stream, negotiated }
    }

    pub async fn ws(&self, protocol: &str) -> WsClient {
        self.ws_with(Some(protocol), None).await
    }

    /// A graphql-transport-ws connection, initialised with `token` in the payload and acknowledged.
    pub async fn transport_ws(&self, token: &str) -> WsClient {
        let mut ws = self.ws("graphql-transport-ws").await;
        ws.send_json(json!({ "type": "connection_init", "payload": { "Authorization": format!("JWT {token}") } })).await;
        assert_eq!(ws.recv_json().await["type"], "connection_ack");
        ws
    }
}

pub const NEW_MESSAGE_SUBSCRIPTION: &str = "subscription($c: String!) {
  onNewChatMessage(channelIdentifier: $c) { channelIdentifier message { id message type createAt owner { username } } }
}";

pub struct WsClient {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub negotiated: Option<String>,
}

impl WsClient {
    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::text(text))
            .await
            .expect("WebSocket send");
    }

    /// Writes bytes straight to the socket, bypassing the client's framing.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        match self.stream.get_mut() {
            MaybeTlsStream::Plain(tcp) => tcp.write_all(bytes).await.expect("raw write"),
            _ => unreachable!("tests use plain TCP"),
        }
    }

    /// The next protocol message (text frame) as JSON; panics on close or after 10 s.
    pub async fn recv_json(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("a message within 10 s")
                .expect("connection open")
                .expect("valid frame");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).expect("JSON message"),
                Message::Close(frame) => panic!("connection closed: {frame:?}"),
                _ => {}
            }
        }
    }

    /// Like [`recv_json`](Self::recv_json) but skips legacy `ka` keep-alives.
    pub async fn recv_data(&mut self) -> Value {
        loop {
            let message = self.recv_json().await;
            if message["type"] != "ka" {
                return message;
            }
        }
    }

    /// Waits for the server's close frame and returns its code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            let next = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("close within 10 s");
            match next {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (frame.code.into(), frame.reason.to_string())
                }
                Some(Ok(Message::Close(None))) => return (1005, String::new()),
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }

    /// Asserts that nothing arrives for `wait` (used after stop/complete).
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(message) = tokio::time::timeout(wait, self.stream.next()).await {
            panic!("expected silence, got {message:?}");
        }
    }
}

/// Asserts that the string at `pointer` (a JSON pointer such as `/errors/0/message`) contains
/// `needle`, showing the whole value when it does not.
#[track_caller]
pub fn assert_text(value: &Value, pointer: &str, needle: &str) {
    let text = value.pointer(pointer).and_then(Value::as_str);
    assert!(
        text.is_some_and(|t| t.contains(needle)),
        "expected {needle:?} at {pointer} in {value}"
    );
}

/// A masked client frame, for tests that send what a well-behaved client library would not.
pub fn raw_client_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    crate::ws_frame::masked_frame(first_byte, payload, None)
}

/// `mmsub serve` as its own process (the binary this package builds), for tests that measure
/// what an attack does to a node: its resident memory, and whether it keeps answering.
pub struct ServerProcess {
    pub addr: SocketAddr,
    child: std::process::Child,
    /// Every line the server logged so far.
    log: Arc<std::sync::Mutex<Vec<String>>>,
    _data_dir: TempDir,
    pub http: reqwest::Client,
}

impl ServerProcess {
    pub async fn start(extra_args: &[&str]) -> ServerProcess {
        use std::io::{BufRead, BufReader};
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mmsub"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir.path())
            .args(["--jwt-secret", JWT_SECRET])
            .args(extra_args)
            .env("RUST_LOG", "warn,mmsub=info")
            .env("NO_COLOR", "1")
            .env_remove("MATTERMOST_SERVER_URL")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mmsub starts");
        let stdout = child.stdout.take().expect("stdout");
        let (found, addr) = tokio::sync::oneshot::channel();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line.clone());
                // "mmsub listening on http://127.0.0.1:PORT: …"
                let Some(at) = line.find("http://127.0.0.1:") else {
                    continue;
                };
                let rest = &line[at + "http://".len()..];
                let port_end = rest["127.0.0.1:".len()..]
                    .find(|c: char| !c.is_ascii_digit())
                    .map_or(rest.len(), |n| n + "127.0.0.1:".len());
                if let (Some(found), Ok(addr)) =
                    (found.take(), rest[..port_end].parse::<SocketAddr>())
                {
                    let _ = found.send(addr);
                }
            }
        });
        let addr = tokio::time::timeout(Duration::from_secs(30), addr)
            .await
            .expect("mmsub printed its address within 30 s")
            .expect("mmsub printed its address");
        ServerProcess {
            addr,
            child,
            log,
            _data_dir: data_dir,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The log lines containing `needle`, waiting up to 5 s for a first one.
    pub async fn log_lines(&self, needle: &str) -> Vec<String> {
        for _ in 0..100 {
            let found: Vec<String> = self
                .log
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains(needle))
                .cloned()
                .collect();
            if !found.is_empty() {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Vec::new()
    }

    /// Resident memory of the server process, in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS")
            * 1024
    }

    pub async fn graphql(&self, query: &str, variables: Value, token: Option<&str>) -> Value {
        let mut request = self
            .http
            .post(self.url("/graphql/"))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.header("Authorization", format!("JWT {token}"));
        }
        request
            .send()
            .await
            .expect("HTTP request")
            .json()
            .await
            .expect("JSON body")
    }

    pub async fn signed_up(&self, username: &str) -> String {
        let created = self
            .graphql(
                "mutation($u: String!, $p: String!, $e: String!) { userCreate(username: $u, password: $p, email: $e) { statusCode } }",
                json!({ "u": username, "p": PASSWORD, "e": format!("{username}@example.com") }),
                None,
            )
            .await;
        assert_eq!(
            created["data"]["userCreate"]["statusCode"], 200,
            "{created}"
        );
        let login = self
            .graphql(
                "mutation($u: String!, $p: String!) { tokenAuth(username: $u, password: $p) { token } }",
                json!({ "u": username, "p": PASSWORD }),
                None,
            )
            .await;
        login["data"]["tokenAuth"]["token"]
            .as_str()
            .expect("token")
            .to_owned()
    }

    /// Runs `attack` while a probe asks `/healthz` every 100 ms; fails if any probe takes
    /// longer than 2 s or the server's RSS grows by 150 MB or more meanwhile. Returns what the
    /// attack returned.
    pub async fn under_guard<T>(&self, attack: impl std::future::Future<Output = T>) -> T {
        let before = self.rss();
        let done = tokio_util::sync::CancellationToken::new();
        let probe = {
            let (http, url, done) = (self.http.clone(), self.url("/healthz"), done.clone());
            tokio::spawn(async move {
                let mut probes = 0;
                while !done.is_cancelled() {
                    let answered =
                        tokio::time::timeout(Duration::from_secs(2), http.get(&url).send()).await;
                    assert!(
                        matches!(answered, Ok(Ok(ref r)) if r.status() == 200),
                        "/healthz did not answer within 2 s during the attack: {answered:?}"
                    );
                    probes += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                probes
            })
        };
        let result = attack.await;
        let peak = self.rss();
        done.cancel();
        probe.await.expect("the /healthz probe held");
        let growth = peak.saturating_sub(before);
        assert!(
            growth < 150 << 20,
            "RSS grew by {} MB during the attack",
            growth >> 20
        );
        result
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One scrape of `/metrics`, parsed by an independent parser of the Prometheus text format.
pub struct Scrape(prometheus_parse::Scrape);

impl Scrape {
    pub fn parse(text: &str) -> Self {
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        Self(prometheus_parse::Scrape::parse(lines).expect("a valid exposition"))
    }

    /// The series `name{labels, …}` (each given label must match; others may be there).
    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a prometheus_parse::Value> + 'a {
        self.0
            .samples
            .iter()
            .filter(move |s| s.metric == name)
            .filter(move |s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| &s.value)
    }

    /// The numbers of the series `name{labels, …}`.
    fn numbers(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.matching(name, labels)
            .map(|value| match value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                other => panic!("{name} is not a single number: {other:?}"),
            })
            .collect()
    }

    /// The value of series `name{labels}`, or 0 when there is no such series; panics if
    /// several match.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let numbers = self.numbers(name, labels);
        assert!(numbers.len() <= 1, "{name}{labels:?} matches {numbers:?}");
        numbers.first().copied().unwrap_or(0.0)
    }

    /// The sum of every series `name{labels, …}`.
    pub fn total(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.numbers(name, labels).iter().sum()
    }

    /// Observations in histogram `name{labels}`.
    pub fn histogram_count(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.matching(name, labels)
            .map(|value| match value {
                prometheus_parse::Value::Histogram(buckets) => {
                    buckets.last().map_or(0, |b| b.count as u64)
                }
                other => panic!("{name} is not a histogram: {other:?}"),
            })
            .sum()
    }
}
