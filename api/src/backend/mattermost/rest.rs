//! One HTTP exchange with Mattermost's REST API v4, with the rules every call shares: a
//! timeout, Mattermost's error body turned into a typed error, and `429 Too Many Requests`
//! waited out until `X-Ratelimit-Reset` (within a bound) before one more try.
//!
//! Nothing here logs a request body, a header value or a token.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mmsub_metrics::labels::MattermostStatus;
use mmsub_metrics::Metrics;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

/// Limits of every call to Mattermost; each has a flag in the `mmsub` binary.
#[derive(Debug, Clone)]
pub struct RestLimits {
    /// Longest a single request may take, connect to last byte.
    pub request_timeout: Duration,
    /// Longest wait for a rate limit to reset; a longer `X-Ratelimit-Reset` fails the call.
    pub max_rate_limit_wait: Duration,
    /// How many times one call waits out a 429 before giving up.
    pub max_rate_limit_retries: u32,
    /// Idle pooled connections kept per Mattermost host.
    pub pool_idle_per_host: usize,
}

impl Default for RestLimits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            max_rate_limit_wait: Duration::from_secs(10),
            max_rate_limit_retries: 3,
            pool_idle_per_host: 32,
        }
    }
}

/// Why a call to Mattermost failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MattermostError {
    /// Mattermost answered with its error body (`id`, `message`, `status_code`).
    #[error("Mattermost: {message}")]
    Api {
        /// Mattermost's error id (`app.channel.get.existing.app_error`…).
        id: String,
        /// Mattermost's message.
        message: String,
        /// The HTTP status.
        status_code: u16,
    },
    /// No answer within the request timeout.
    #[error("Mattermost did not answer within {0:?}")]
    Timeout(Duration),
    /// No connection to the server.
    #[error("Mattermost is unreachable")]
    Unreachable,
    /// Rate limited for longer than the client may wait; retry after this.
    #[error("Mattermost is rate limiting this server; retry in {0:?}")]
    RateLimited(Duration),
    /// An answer that is not what the API documents.
    #[error("Mattermost answered something this server does not understand: {0}")]
    Protocol(String),
}

impl MattermostError {
    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            MattermostError::Api { status_code, .. } => Some(*status_code),
            _ => None,
        }
    }

    /// Whether this is an error answer with `status`.
    pub fn is_status(&self, status: u16) -> bool {
        self.status() == Some(status)
    }
}

/// A Mattermost call's result.
pub type MmResult<T> = Result<T, MattermostError>;

/// Mattermost's error body (`model.AppError`).
#[derive(Debug, Deserialize)]
struct AppError {
    #[serde(default)]
    id: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    status_code: u16,
}

/// A pooled client for one Mattermost server.
#[derive(Clone)]
pub struct RestClient {
    http: reqwest::Client,
    base: String,
    limits: RestLimits,
    /// Where each exchange is counted (`mmsub_mattermost_*`), once the node gave its metrics.
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient")
            .field("base", &self.base)
            .finish()
    }
}

/// One request: method, path below `/api/v4`, query and JSON body.
pub struct Call<'a> {
    /// The HTTP method.
    pub method: Method,
    /// The path below `/api/v4`.
    pub path: String,
    /// Query parameters.
    pub query: Vec<(&'a str, String)>,
    /// The JSON body, if any.
    pub body: Option<Value>,
}

impl<'a> Call<'a> {
    /// A `GET` of `path`.
    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }
    /// A `POST` of `body` to `path`.
    pub fn post(path: impl Into<String>, body: Value) -> Self {
        Self::new(Method::POST, path).body(body)
    }
    /// A `PUT` of `body` to `path`.
    pub fn put(path: impl Into<String>, body: Value) -> Self {
        Self::new(Method::PUT, path).body(body)
    }
    /// A `DELETE` of `path`.
    pub fn delete(path: impl Into<String>) -> Self {
        Self::new(Method::DELETE, path)
    }
    /// A call with `method` and no query or body.
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            query: Vec::new(),
            body: None,
        }
    }
    /// Adds a query parameter.
    pub fn query(mut self, name: &'a str, value: impl ToString) -> Self {
        self.query.push((name, value.to_string()));
        self
    }
    /// Sets the JSON body.
    pub fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
}

/// An answer: the `Token` header (set on login) and the JSON body.
pub struct Answer {
    /// The `Token` header (a login's session token).
    pub token: Option<String>,
    /// The body.
    pub body: bytes::Bytes,
}

impl Answer {
    /// The body as `T`.
    pub fn json<T: DeserializeOwned>(&self) -> MmResult<T> {
        serde_json::from_slice(&self.body).map_err(|e| MattermostError::Protocol(e.to_string()))
    }
}

impl RestClient {
    /// `server_url` is the server's root (`https://chat.example.com`), as in the original `.env`.
    pub fn new(server_url: &str, limits: RestLimits) -> MmResult<Self> {
        let http = reqwest::Client::builder()
            .timeout(limits.request_timeout)
            .connect_timeout(limits.request_timeout)
            .pool_max_idle_per_host(limits.pool_idle_per_host)
            .user_agent(concat!("mmsub/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| MattermostError::Protocol(e.to_string()))?;
        Ok(Self {
            http,
            base: format!("{}/api/v4", server_url.trim_end_matches('/')),
            limits,
            metrics: None,
        })
    }

    /// This client, counting every exchange in `metrics`.
    #[must_use]
    pub fn counted(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The client's limits.
    pub fn limits(&self) -> &RestLimits {
        &self.limits
    }

    /// `ws://…/api/v4/websocket` (or `wss://`) of this server.
    pub fn websocket_url(&self) -> String {
        let url = format!("{}/websocket", self.base);
        match url.split_once("://") {
            Some(("https", rest)) => format!("wss://{rest}"),
            Some(("http", rest)) => format!("ws://{rest}"),
            _ => url,
        }
    }

    /// Sends the call with `token` as the bearer (none for login), waiting out rate limits.
    pub async fn send(&self, call: &Call<'_>, token: Option<&str>) -> MmResult<Answer> {
        let mut retries = 0;
        loop {
            match self.send_once(call, token).await {
                Err(MattermostError::RateLimited(wait))
                    if retries < self.limits.max_rate_limit_retries
                        && wait <= self.limits.max_rate_limit_wait =>
                {
                    retries += 1;
                    tracing::debug!(path = %call.path, ?wait, "Mattermost rate limit: waiting");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    /// One exchange, counted by route template and outcome.
    async fn send_once(&self, call: &Call<'_>, token: Option<&str>) -> MmResult<Answer> {
        let started = Instant::now();
        let answer = self.exchange(call, token).await;
        if let Some(metrics) = &self.metrics {
            let status = match &answer {
                Ok(_) => MattermostStatus::Success,
                Err(MattermostError::Api { status_code, .. }) => {
                    MattermostStatus::of_code(*status_code)
                }
                Err(MattermostError::RateLimited(_)) => MattermostStatus::RateLimited,
                Err(MattermostError::Timeout(_)) => MattermostStatus::Timeout,
                Err(MattermostError::Unreachable) => MattermostStatus::Unreachable,
                Err(MattermostError::Protocol(_)) => MattermostStatus::Unreadable,
            };
            let method = match call.method {
                Method::GET => "GET",
                Method::POST => "POST",
                Method::PUT => "PUT",
                Method::DELETE => "DELETE",
                _ => "other",
            };
            metrics.mattermost.answered(
                method,
                &route_template(&call.path),
                status,
                started.elapsed(),
            );
        }
        answer
    }

    async fn exchange(&self, call: &Call<'_>, token: Option<&str>) -> MmResult<Answer> {
        let mut request = self
            .http
            .request(call.method.clone(), format!("{}{}", self.base, call.path))
            .header("X-Requested-With", "XMLHttpRequest");
        if !call.query.is_empty() {
            request = request.query(&call.query);
        }
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e))?;
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(MattermostError::RateLimited(rate_limit_wait(&headers)));
        }
        if !status.is_success() {
            let error: AppError = serde_json::from_slice(&body).unwrap_or(AppError {
                id: String::new(),
                message: String::new(),
                status_code: status.as_u16(),
            });
            return Err(MattermostError::Api {
                id: error.id,
                message: if error.message.is_empty() {
                    status.canonical_reason().unwrap_or("error").to_owned()
                } else {
                    error.message
                },
                status_code: if error.status_code == 0 {
                    status.as_u16()
                } else {
                    error.status_code
                },
            });
        }
        let token = headers
            .get("Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Answer { token, body })
    }

    fn transport_error(&self, e: &reqwest::Error) -> MattermostError {
        if e.is_timeout() {
            MattermostError::Timeout(self.limits.request_timeout)
        } else if e.is_decode() || e.is_body() {
            MattermostError::Protocol("the answer could not be read".into())
        } else {
            // reqwest's message may name the URL, never a credential; keep it to debug logs.
            tracing::debug!(error = %e, "Mattermost request failed");
            MattermostError::Unreachable
        }
    }
}

/// The words of the paths this server calls (below `/api/v4`); every other segment of a path
/// is an id or a name.
const ROUTE_WORDS: &[&str] = &[
    "active",
    "channels",
    "ids",
    "login",
    "logout",
    "me",
    "members",
    "name",
    "posts",
    "stats",
    "teams",
    "username",
    "usernames",
    "users",
    "websocket",
];

/// The route template of `path` for metrics (`/users/:id/teams`): its words stay, every other
/// segment becomes `:id`, so no id or name becomes a label; a path deeper than any call is
/// `other`. (No braces: some parsers of the text format end a label set at the first `}`.)
pub fn route_template(path: &str) -> String {
    let mut template = String::with_capacity(path.len());
    for (depth, segment) in path.trim_start_matches('/').split('/').enumerate() {
        if depth >= 6 {
            return "other".into();
        }
        template.push('/');
        template.push_str(if ROUTE_WORDS.contains(&segment) {
            segment
        } else {
            ":id"
        });
    }
    template
}

/// How long to wait after a 429. `X-Ratelimit-Reset` is seconds until the window resets
/// (what Mattermost sends); a value that looks like a Unix time (as in the API docs' example)
/// is read as one.
fn rate_limit_wait(headers: &reqwest::header::HeaderMap) -> Duration {
    let reset = headers
        .get("X-Ratelimit-Reset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let Some(reset) = reset else {
        return Duration::from_secs(1);
    };
    if reset > 1_000_000_000 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        return Duration::from_secs(reset.saturating_sub(now).max(1));
    }
    Duration::from_secs(reset.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn reset_is_seconds_or_a_unix_time() {
        let mut h = HeaderMap::new();
        assert_eq!(rate_limit_wait(&h), Duration::from_secs(1));
        h.insert("X-Ratelimit-Reset", HeaderValue::from_static("3"));
        assert_eq!(rate_limit_wait(&h), Duration::from_secs(3));
        let soon = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 5;
        h.insert("X-Ratelimit-Reset", HeaderValue::from(soon));
        let wait = rate_limit_wait(&h);
        assert!(wait >= Duration::from_secs(4) && wait <= Duration::from_secs(5));
    }

    #[test]
    fn a_route_template_keeps_the_words_and_hides_ids_and_names() {
        assert_eq!(route_template("/users/me"), "/users/me");
        assert_eq!(
            route_template("/teams/abc123/channels/name/town-square"),
            "/teams/:id/channels/name/:id"
        );
        assert_eq!(
            route_template("/users/username/alice"),
            "/users/username/:id"
        );
        assert_eq!(route_template("/a/b/c/d/e/f/g"), "other");
    }

    #[test]
    fn websocket_url_follows_the_scheme() {
        let api = RestClient::new("https://chat.example.com/", RestLimits::default()).unwrap();
        assert_eq!(
            api.websocket_url(),
            "wss://chat.example.com/api/v4/websocket"
        );
        let api = RestClient::new("http://127.0.0.1:8065", RestLimits::default()).unwrap();
        assert_eq!(api.websocket_url(), "ws://127.0.0.1:8065/api/v4/websocket");
    }
}
