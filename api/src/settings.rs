//! Behaviour and limits of the API node. Every limit here has a flag and an env variable in
//! the `mmsub` binary; the defaults are the ones documented in the README.

use std::time::Duration;

use chrono_tz::Tz;

use crate::throttle::RateLimit;

/// The API node's settings; each has a flag in the `mmsub` binary (README, Limits).
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Zone in which `createAt` is rendered (Django's `TIME_ZONE`).
    pub time_zone: Tz,
    /// Largest `pageSize` a query accepts.
    pub max_page_size: u32,
    /// Longest `textMessage`, in characters (Mattermost's own limit is 16383).
    pub max_message_chars: usize,
    /// Most missed messages a resuming subscription replays (`afterMessageId`).
    pub max_resume_messages: u32,
    /// Most bytes of missed messages a resuming subscription replays.
    pub max_resume_bytes: u64,
    /// Most bytes of content (messages, users, channels) one GraphQL answer carries; the
    /// serialized answer is refused past it too.
    pub max_response_bytes: u64,
    /// Most members one `channelCreate` adds (each is a request on Mattermost).
    pub max_channel_members: usize,
    /// Deepest selection a document may nest.
    pub max_query_depth: usize,
    /// Most fields a document may execute, as `cost.rs` counts them.
    pub max_query_complexity: usize,
    /// Largest accepted HTTP request body.
    pub max_body_bytes: usize,
    /// Time to receive a whole request body, once its headers arrived (408 after).
    pub body_read_timeout: Duration,
    /// Web origins (`https://app.example.com`) whose pages may call the API from a browser;
    /// `*` for any. Same-origin pages (GraphiQL) need no entry.
    pub cors_allowed_origins: Vec<String>,
    /// Login attempts (`tokenAuth`, `userGetToken`, each alias counting) per username.
    pub login_rate_per_user: RateLimit,
    /// Login attempts per client address.
    pub login_rate_per_client: RateLimit,
    /// Logins of one client address being checked at once (its share of the hashing pool).
    pub max_concurrent_logins_per_client: usize,
    /// `tokenAuth`, `userGetToken` and `userCreate` fields one request may run (each hashes).
    pub max_password_checks_per_request: u64,
    /// `userCreate` per client address.
    pub signup_rate_per_client: RateLimit,
    /// `textMessageSend` per user.
    pub send_rate_per_user: RateLimit,
    /// Lifetime of an access token.
    pub access_token_ttl: Duration,
    /// How long after `origIat` a token may still be refreshed.
    pub refresh_window: Duration,
    /// Lifetime of the single-use refresh tokens `userGetToken` hands out.
    pub refresh_token_ttl: Duration,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            time_zone: Tz::UTC,
            max_page_size: 10_000,
            max_message_chars: 16383,
            max_resume_messages: 1000,
            max_resume_bytes: 4 << 20,
            max_response_bytes: 32 << 20,
            max_channel_members: 256,
            max_query_depth: 16,
            max_query_complexity: 50_000,
            max_body_bytes: 1 << 20,
            body_read_timeout: Duration::from_secs(10),
            cors_allowed_origins: Vec::new(),
            login_rate_per_user: RateLimit {
                per_minute: 10,
                burst: 10,
            },
            login_rate_per_client: RateLimit {
                per_minute: 60,
                burst: 60,
            },
            max_concurrent_logins_per_client: 4,
            max_password_checks_per_request: 2,
            signup_rate_per_client: RateLimit {
                per_minute: 10,
                burst: 30,
            },
            send_rate_per_user: RateLimit {
                per_minute: 600,
                burst: 100,
            },
            access_token_ttl: Duration::from_secs(30 * 60),
            refresh_window: Duration::from_secs(7 * 24 * 3600),
            refresh_token_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}
