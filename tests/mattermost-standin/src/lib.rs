//! A stand-in Mattermost server for tests, on an ephemeral loopback port.
//!
//! A real Mattermost cannot run on the test machines, so this serves the part of REST API v4
//! that mmsub uses, the way Mattermost's published `OpenAPI` files (`../shared/mattermost-api/`)
//! describe it: the same paths ([`ROUTES`]), status codes, JSON field names ([`shapes`]), error
//! bodies (`{"id","message","detailed_error","request_id","status_code"}`), the `Token` header
//! on login, `per_page` capped at 200, `PostList` cursors, `429` with `X-Ratelimit-*` headers,
//! and the WebSocket (`/api/v4/websocket`: authentication challenge, `hello`, `posted` with
//! `data.post` as a JSON string). A test in mmsub checks routes and fields against the spec
//! files so this cannot drift into what is convenient.
//!
//! Faults on demand: rate limiting, slow answers, expired sessions, dropped `WebSockets`, and
//! going down. Every request is logged by route (`log.rs`) so tests can count Mattermost requests
//! per GraphQL operation; `GET /standin/requests` gives the counts to load runs.
//!
//! One file, just over 500 lines: the router, the WebSocket and the fault switches are the
//! stand-in's whole surface, read together; its data is in `store.rs`, its routes' behaviour
//! in `routes.rs`, its JSON in `shapes.rs`.

mod log;
mod records;
mod routes;
mod shapes;
mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::broadcast;

pub use shapes::shapes;
use store::{Event, Store};

/// Every REST route served, as `(method, path template)` exactly as in the spec files.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v4/users/login"),
    ("POST", "/api/v4/users/logout"),
    ("POST", "/api/v4/users"),
    ("GET", "/api/v4/users"),
    ("GET", "/api/v4/users/stats"),
    ("POST", "/api/v4/users/ids"),
    ("POST", "/api/v4/users/usernames"),
    ("GET", "/api/v4/users/{user_id}"),
    ("DELETE", "/api/v4/users/{user_id}"),
    ("PUT", "/api/v4/users/{user_id}/active"),
    ("GET", "/api/v4/users/username/{username}"),
    ("GET", "/api/v4/users/{user_id}/teams"),
    ("GET", "/api/v4/users/{user_id}/teams/{team_id}/channels"),
    ("GET", "/api/v4/teams"),
    ("POST", "/api/v4/teams"),
    ("GET", "/api/v4/teams/{team_id}"),
    ("DELETE", "/api/v4/teams/{team_id}"),
    ("GET", "/api/v4/teams/name/{name}"),
    ("POST", "/api/v4/teams/{team_id}/members"),
    ("GET", "/api/v4/teams/{team_id}/channels"),
    (
        "GET",
        "/api/v4/teams/{team_id}/channels/name/{channel_name}",
    ),
    ("POST", "/api/v4/channels"),
    ("GET", "/api/v4/channels/{channel_id}"),
    ("DELETE", "/api/v4/channels/{channel_id}"),
    ("POST", "/api/v4/channels/{channel_id}/members"),
    ("GET", "/api/v4/channels/{channel_id}/members/{user_id}"),
    ("DELETE", "/api/v4/channels/{channel_id}/members/{user_id}"),
    ("GET", "/api/v4/channels/{channel_id}/posts"),
    ("POST", "/api/v4/posts"),
    ("GET", "/api/v4/posts/{post_id}"),
];

/// Mattermost caps `per_page` at this.
pub const MAX_PER_PAGE: usize = 200;

/// Who exists when the stand-in starts.
#[derive(Debug, Clone)]
pub struct StandInConfig {
    pub admin_username: String,
    pub admin_password: String,
    pub team: String,
}

impl Default for StandInConfig {
    fn default() -> Self {
        Self {
            admin_username: "admin".into(),
            admin_password: "Admin-Passw0rd!".into(),
            team: "main".into(),
        }
    }
}

#[derive(Default)]
struct Faults {
    /// The next this-many API requests answer 429.
    rate_limited: u32,
    rate_limit_reset_secs: u64,
    /// Every API answer waits this long first.
    delay: Duration,
}

struct Shared {
    store: Mutex<Store>,
    faults: Mutex<Faults>,
    requests: Mutex<log::RequestLog>,
    events: broadcast::Sender<Event>,
    drop_sockets: broadcast::Sender<()>,
}

/// A running stand-in. Dropping it stops the server.
pub struct StandIn {
    pub addr: SocketAddr,
    pub config: StandInConfig,
    shared: Arc<Shared>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

impl StandIn {
    /// Starts on an ephemeral loopback port.
    pub async fn start(config: StandInConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        Self::start_on(config, listener)
    }

    /// Starts on a listener the caller bound (the `mattermost-standin` binary's `--listen`).
    pub fn start_on(config: StandInConfig, listener: tokio::net::TcpListener) -> Self {
        let (events, _) = broadcast::channel(4096);
        let (drop_sockets, _) = broadcast::channel(4);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(&config)),
            faults: Mutex::default(),
            requests: Mutex::default(),
            events,
            drop_sockets,
        });
        let addr = listener.local_addr().expect("local addr");
        let server = tokio::spawn(serve(listener, shared.clone()));
        Self {
            addr,
            config,
            shared,
            server: Some(server),
        }
    }

    /// `MATTERMOST_SERVER_URL` for this stand-in.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops answering: connections are refused from now on, open `WebSockets` drop.
    pub fn go_down(&mut self) {
        self.drop_websockets();
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }

    /// Answers again, on the same port, with the same data.
    pub async fn come_back(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("rebind the same port");
        self.server = Some(tokio::spawn(serve(listener, self.shared.clone())));
    }

    /// The next `count` API requests answer 429 with `X-Ratelimit-Reset: reset_secs`.
    pub fn rate_limit(&self, count: u32, reset_secs: u64) {
        let mut f = self.shared.faults.lock().unwrap();
        f.rate_limited = count;
        f.rate_limit_reset_secs = reset_secs;
    }

    /// Every API answer is delayed by `delay` (zero: none).
    pub fn slow_down(&self, delay: Duration) {
        self.shared.faults.lock().unwrap().delay = delay;
    }

    /// Revokes every session, as an expiry or a logout everywhere does.
    pub fn expire_sessions(&self) {
        self.shared.store.lock().unwrap().sessions.clear();
    }

    /// Closes every open WebSocket.
    pub fn drop_websockets(&self) {
        let _ = self.shared.drop_sockets.send(());
    }

    /// Number of open `WebSockets` that passed authentication.
    pub fn websocket_count(&self) -> usize {
        self.shared.events.receiver_count()
    }

    /// The requests served so far, as `"METHOD /template"`, and forgets them.
    pub fn take_requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap().take()
    }

    /// Posts as `username` directly in Mattermost (not through mmsub); returns the post id.
    pub fn post_as(&self, username: &str, channel: &str, message: &str) -> String {
        let mut store = self.shared.store.lock().unwrap();
        let (user, channel) = user_and_channel(&store, username, channel);
        let (post, event) = store.create_post(&channel, &user, message, "");
        let _ = self.shared.events.send(event);
        post
    }

    /// Edits a post's text directly in Mattermost; its `post_edited` event goes out.
    pub fn edit_post(&self, post_id: &str, text: &str) {
        let event = self
            .shared
            .store
            .lock()
            .unwrap()
            .change_post(post_id, Some(text));
        let _ = self.shared.events.send(event);
    }

    /// Deletes a post directly in Mattermost; its `post_deleted` event goes out.
    pub fn delete_post(&self, post_id: &str) {
        let event = self.shared.store.lock().unwrap().change_post(post_id, None);
        let _ = self.shared.events.send(event);
    }

    /// Removes a user from a channel directly in Mattermost (not through mmsub).
    pub fn remove_member(&self, channel: &str, username: &str) {
        let mut store = self.shared.store.lock().unwrap();
        let (user, channel) = user_and_channel(&store, username, channel);
        store
            .channel_members
            .retain(|(c, u)| !(*c == channel && *u == user));
    }

    /// Creates a user directly in Mattermost, in the configured team.
    pub fn create_user(&self, username: &str, password: &str) -> String {
        let mut store = self.shared.store.lock().unwrap();
        let id = store
            .create_user(
                username,
                &format!("{username}@example.com"),
                password,
                "system_user",
            )
            .expect("new user");
        let team = store.teams[0].id.clone();
        let events = store.join_team(&team, &id);
        drop(store);
        for e in events {
            let _ = self.shared.events.send(e);
        }
        id
    }

    /// The posts of `channel` (a test's view of Mattermost's data).
    pub fn post_count(&self, channel: &str) -> usize {
        self.channel_posts(channel, |posts| posts.len())
    }

    /// Whether `channel` has a post with exactly this message.
    pub fn has_post(&self, channel: &str, message: &str) -> bool {
        self.channel_posts(channel, |posts| posts.iter().any(|p| p.message == message))
    }

    /// `read` over the posts of `channel` (by name or id; none if there is no such channel).
    fn channel_posts<T>(&self, channel: &str, read: impl FnOnce(&[&store::PostRec]) -> T) -> T {
        let store = self.shared.store.lock().unwrap();
        let id = store
            .channels
            .iter()
            .find(|c| c.name == channel || c.id == channel)
            .map(|c| c.id.clone());
        let posts: Vec<&store::PostRec> = store
            .posts
            .iter()
            .filter(|p| Some(&p.channel_id) == id.as_ref())
            .collect();
        read(&posts)
    }
}

/// Accepts and serves connections until aborted. Each connection runs in this task's
/// `JoinSet`, so that aborting it ([`StandIn::go_down`]) closes every open connection too, as
/// a Mattermost that went down does: a kept-alive connection must not go on answering.
async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let app = Router::new()
        .route("/api/v4/websocket", get(websocket))
        .route("/standin/requests", get(request_counts))
        .fallback(any(rest))
        .with_state(shared);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of descriptors, say: try again shortly rather than spin.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                connections.spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .with_upgrades()
                        .await;
                });
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

/// `GET /standin/requests`: requests per route since start, `{"total": N, "routes": {…}}`.
/// Not part of Mattermost's API: load runs read it to count Mattermost requests per read.
async fn request_counts(State(shared): State<Arc<Shared>>) -> Response {
    let log = shared.requests.lock().unwrap();
    let total: u64 = log.counts().values().sum();
    axum::Json(json!({ "total": total, "routes": log.counts() })).into_response()
}

/// Mattermost's error body.
fn app_error(status: StatusCode, id: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "id": id,
            "message": message,
            "detailed_error": "",
            "request_id": store::new_id(),
            "status_code": status.as_u16(),
        })),
    )
        .into_response()
}

/// Matches a concrete path against the route templates; returns the template and parameters.
fn route(method: &Method, path: &str) -> Option<(&'static str, HashMap<&'static str, String>)> {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    // Literal routes win over templated ones (`/users/stats` before `/users/{user_id}`).
    let mut candidates: Vec<_> = ROUTES
        .iter()
        .filter(|(m, _)| *m == method.as_str())
        .filter_map(|(_, template)| {
            let t: Vec<&'static str> = template.split('/').collect();
            if t.len() != parts.len() {
                return None;
            }
            let mut params = HashMap::new();
            let mut literals = 0;
            for (seg, part) in t.iter().zip(&parts) {
                if seg.starts_with('{') {
                    params.insert(
                        seg.trim_matches(|c| c == '{' || c == '}'),
                        (*part).to_owned(),
                    );
                } else if seg == part {
                    literals += 1;
                } else {
                    return None;
                }
            }
            Some((literals, *template, params))
        })
        .collect();
    candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
    candidates.into_iter().next().map(|(_, t, p)| (t, p))
}

async fn rest(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query: HashMap<String, String> = request
        .uri()
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let Some((template, params)) = route(&method, &path) else {
        return app_error(
            StatusCode::NOT_FOUND,
            "api.context.404.app_error",
            "Sorry, we could not find the page.",
        );
    };
    shared.requests.lock().unwrap().record(format!(
        "{method} {}",
        template.trim_start_matches("/api/v4")
    ));
    let (delay, limited) = {
        let mut f = shared.faults.lock().unwrap();
        let limited = (f.rate_limited > 0).then(|| {
            f.rate_limited -= 1;
            f.rate_limit_reset_secs
        });
        (f.delay, limited)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(reset) = limited {
        let mut response = app_error(
            StatusCode::TOO_MANY_REQUESTS,
            "api.context.rate_limit.app_error",
            "Too many requests. Please try again later.",
        );
        let h = response.headers_mut();
        h.insert("X-Ratelimit-Limit", 10.into());
        h.insert("X-Ratelimit-Remaining", 0.into());
        h.insert("X-Ratelimit-Reset", reset.into());
        return response;
    }
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => {
                return app_error(
                    StatusCode::BAD_REQUEST,
                    "api.context.invalid_body_param.app_error",
                    "Invalid or missing body in request.",
                )
            }
        }
    };
    let mut store = shared.store.lock().unwrap();
    let caller = bearer(&headers).and_then(|t| store.sessions.get(&t).cloned());
    let outcome = routes::handle(
        &mut store,
        store::Req {
            method: method.as_str(),
            template,
            params: &params,
            query: &query,
            body: &body,
            caller: caller.as_deref(),
        },
    );
    drop(store);
    match outcome {
        Ok(answer) => {
            for event in answer.events {
                let _ = shared.events.send(event);
            }
            let mut response = (answer.status, axum::Json(answer.body)).into_response();
            if let Some(token) = answer.token {
                response
                    .headers_mut()
                    .insert("Token", token.parse().expect("token is a header value"));
            }
            response
        }
        Err(e) => app_error(e.status, e.id, &e.message),
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("Authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

async fn websocket(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let header_user =
        bearer(&headers).and_then(|t| shared.store.lock().unwrap().sessions.get(&t).cloned());
    upgrade.on_upgrade(move |socket| websocket_session(shared, socket, header_user))
}

/// Mattermost's WebSocket: authenticate (header, or `authentication_challenge`), `hello`, then
/// the events of the channels the user is a member of.
async fn websocket_session(shared: Arc<Shared>, socket: WebSocket, mut user: Option<String>) {
    let (mut tx, mut rx) = socket.split();
    let mut dropped = shared.drop_sockets.subscribe();
    while user.is_none() {
        let Some(Ok(Message::Text(text))) = rx.next().await else {
            return;
        };
        let Ok(message) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if message["action"] != "authentication_challenge" {
            continue;
        }
        let token = message["data"]["token"].as_str().unwrap_or_default();
        user = shared.store.lock().unwrap().sessions.get(token).cloned();
        let seq = message["seq"].clone();
        let reply = if user.is_some() {
            json!({ "status": "OK", "seq_reply": seq })
        } else {
            json!({ "status": "FAIL", "seq_reply": seq, "error": { "id": "api.web_socket_router.not_authenticated.app_error", "message": "The token is invalid." } })
        };
        if tx
            .send(Message::Text(reply.to_string().into()))
            .await
            .is_err()
        {
            return;
        }
    }
    let user = user.expect("authenticated above");
    let mut events = shared.events.subscribe();
    let mut seq: u64 = 0;
    let hello = json!({
        "event": "hello",
        "data": { "server_version": "9.11.0.standin" },
        "broadcast": { "omit_users": null, "user_id": user, "channel_id": "", "team_id": "" },
        "seq": seq,
    });
    if tx
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            _ = dropped.recv() => return,
            incoming = rx.next() => match incoming {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                _ => {}
            },
            event = events.recv() => {
                // Mattermost drops a client that falls too far behind.
                let Ok(event) = event else { return };
                let visible = shared.store.lock().unwrap().is_member(&event.channel_id, &user);
                if !visible {
                    continue;
                }
                seq += 1;
                let mut frame = event.body.clone();
                frame["seq"] = json!(seq);
                if tx.send(Message::Text(frame.to_string().into())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The ids of a user known by name and a channel known by name or id (test helpers panic on
/// unknown ones).
fn user_and_channel(store: &store::Store, username: &str, channel: &str) -> (String, String) {
    let user = store.user_by_name(username).expect("known user").id.clone();
    let channel = store
        .channels
        .iter()
        .find(|c| c.name == channel || c.id == channel)
        .expect("known channel")
        .id
        .clone();
    (user, channel)
}
