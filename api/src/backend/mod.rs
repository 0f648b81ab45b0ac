//! What the GraphQL layer needs from a chat system, and the two systems that provide it.
//!
//! Every operation names its actor by username (what the JWT carries), so a backend decides
//! itself how to act as that user: the embedded store checks memberships in SQLite, the
//! Mattermost backend calls Mattermost with that user's session. Errors are typed so that the
//! schema can answer with the contract's status codes.

pub mod embedded;
pub mod mattermost;

use async_trait::async_trait;
use mmsub_events::{EventAuthor, EventPost, MessageEvent};

/// A user as the backends store and the contract shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user's id.
    pub id: String,
    /// The user's name (unique).
    pub username: String,
    /// The user's email address.
    pub email: String,
    /// Whether the user is an administrator.
    pub is_staff: bool,
}

/// A channel of the team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// The channel's id.
    pub id: String,
    /// The channel's name (unique in the team).
    pub name: String,
    /// The channel's display name.
    pub display_name: String,
}

/// A chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Post {
    /// The post's id.
    pub id: String,
    /// Its channel's id.
    pub channel_id: String,
    /// The text.
    pub message: String,
    /// Milliseconds since the Unix epoch.
    pub create_at: i64,
    /// Mattermost's post type; empty for a plain text post.
    pub post_type: String,
    /// Who posted it.
    pub author: User,
}

/// What a resuming subscriber missed: the posts after its anchor (`afterMessageId`), and when
/// the anchor was posted. The subscriber holds the anchor and everything posted before it, so
/// a live event of those (a relay catching this node up re-sends older records) is skipped.
#[derive(Debug, Clone)]
pub struct Missed {
    /// The anchor's `create_at`.
    pub anchor_at: i64,
    /// The posts after the anchor, oldest first.
    pub posts: Vec<Post>,
}

/// A post together with the channel it was posted in: what gets published on the bus.
#[derive(Debug, Clone)]
pub struct ChannelPost {
    /// The channel.
    pub channel: Channel,
    /// The post.
    pub post: Post,
}

impl ChannelPost {
    /// The post as the event published on the bus.
    pub fn to_event(&self) -> MessageEvent {
        let p = &self.post;
        MessageEvent::new(
            self.channel.id.clone(),
            self.channel.name.clone(),
            EventPost {
                id: p.id.clone(),
                message: p.message.clone(),
                create_at: p.create_at,
                post_type: p.post_type.clone(),
                author: EventAuthor {
                    id: p.author.id.clone(),
                    username: p.author.username.clone(),
                    email: p.author.email.clone(),
                    is_staff: p.author.is_staff,
                },
            },
        )
    }
}

/// One page request, already validated: `number` counts from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Items per page.
    pub size: u32,
    /// The page, from 0.
    pub number: u32,
    /// Most bytes of content ([`Post::content_bytes`], [`User::content_bytes`]) the page may
    /// carry: a backend stops reading and answers [`BackendError::TooLarge`] beyond it, so an
    /// answer over the response ceiling is never held in memory whole.
    pub max_bytes: u64,
}

/// What one JSON object of a page costs beyond its strings (keys, quotes, dates, numbers).
const OBJECT_OVERHEAD_BYTES: usize = 128;

impl User {
    /// The bytes this user adds to an answer, about as serialized.
    pub fn content_bytes(&self) -> u64 {
        (self.id.len() + self.username.len() + self.email.len() + OBJECT_OVERHEAD_BYTES) as u64
    }
}

impl Post {
    /// The bytes this post adds to an answer, about as serialized (its author included).
    pub fn content_bytes(&self) -> u64 {
        (self.id.len()
            + self.channel_id.len()
            + self.message.len()
            + self.post_type.len()
            + OBJECT_OVERHEAD_BYTES) as u64
            + self.author.content_bytes()
    }
}

/// Counts the bytes a backend has read for one answer against its limit.
#[derive(Debug)]
pub struct ByteCount {
    used: u64,
    limit: u64,
}

impl ByteCount {
    /// A count against `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Self { used: 0, limit }
    }

    /// Adds `bytes`; `Err(TooLarge)` once the total passes the limit.
    pub fn add(&mut self, bytes: u64) -> BackendResult<()> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.limit {
            return Err(BackendError::too_large(self.limit));
        }
        Ok(())
    }

    /// Adds each of `bytes` in turn.
    pub fn add_all(&mut self, bytes: impl IntoIterator<Item = u64>) -> BackendResult<()> {
        bytes.into_iter().try_for_each(|b| self.add(b))
    }
}

impl PageRequest {
    /// `Ok` when an answer of `bytes` fits this page's `max_bytes`.
    pub fn allow(&self, bytes: u64) -> BackendResult<()> {
        ByteCount::new(self.max_bytes).add(bytes)
    }

    /// Items before this page.
    pub fn offset(&self) -> u64 {
        u64::from(self.size) * u64::from(self.number)
    }
}

/// A page of users, with the total.
#[derive(Debug, Clone)]
pub struct UserPage {
    /// This page's users.
    pub users: Vec<User>,
    /// All users.
    pub total: u64,
}

/// A channel with its newest post, as `channelList` shows it.
#[derive(Debug, Clone)]
pub struct ChannelSummary {
    /// The channel.
    pub channel: Channel,
    /// Its newest post, if any.
    pub last_message: Option<Post>,
}

impl ChannelSummary {
    /// The bytes this entry adds to an answer.
    pub fn content_bytes(&self) -> u64 {
        let channel = &self.channel;
        (channel.id.len() + channel.name.len() + OBJECT_OVERHEAD_BYTES) as u64
            + self.last_message.as_ref().map_or(0, Post::content_bytes)
    }
}

impl UserPage {
    /// The bytes this page adds to an answer.
    pub fn content_bytes(&self) -> u64 {
        self.users.iter().map(User::content_bytes).sum()
    }
}

impl ChannelPage {
    /// The bytes this page adds to an answer.
    pub fn content_bytes(&self) -> u64 {
        self.channels
            .iter()
            .map(ChannelSummary::content_bytes)
            .sum()
    }
}

impl MessagePage {
    /// The bytes this page adds to an answer.
    pub fn content_bytes(&self) -> u64 {
        self.posts.iter().map(Post::content_bytes).sum()
    }
}

/// A page of the actor's channels.
#[derive(Debug, Clone)]
pub struct ChannelPage {
    /// This page's channels.
    pub channels: Vec<ChannelSummary>,
    /// More pages follow.
    pub has_next: bool,
}

/// A page of a channel's history, oldest first.
#[derive(Debug, Clone)]
pub struct MessagePage {
    /// The page's posts, oldest first.
    pub posts: Vec<Post>,
    /// Newer posts exist (Mattermost's `next_post_id` is set).
    pub has_next: bool,
    /// Older posts exist (Mattermost's `prev_post_id` is set).
    pub has_previous: bool,
}

/// The result of creating a user: the user, and the posts the system made about it
/// (Mattermost's `system_join_team` in the default channel).
#[derive(Debug, Clone)]
pub struct CreatedUser {
    /// The new user.
    pub user: User,
    /// What the system posted about it.
    pub announcements: Vec<ChannelPost>,
}

/// Why a backend call failed, as the contract answers it ([`BackendError::http_status`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The input is not acceptable (400).
    #[error("{0}")]
    Invalid(String),
    /// No such user or channel, or not one the actor may see (404).
    #[error("{0}")]
    NotFound(String),
    /// The actor may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The caller's backend session is missing or expired: log in again.
    #[error("{0}")]
    Unauthorized(String),
    /// It exists already: a username, email or channel name (400).
    #[error("{0}")]
    Conflict(String),
    /// The backing system failed or is unreachable; the message is safe to show.
    #[error("{0}")]
    Unavailable(String),
    /// The answer would pass the response ceiling (`--max-response-bytes`).
    #[error("{0}")]
    TooLarge(String),
}

impl BackendError {
    /// The HTTP status the contract gives this error.
    pub fn http_status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            BackendError::Invalid(_) | BackendError::Conflict(_) => StatusCode::BAD_REQUEST,
            BackendError::Forbidden(_) => StatusCode::FORBIDDEN,
            BackendError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            BackendError::NotFound(_) => StatusCode::NOT_FOUND,
            BackendError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            BackendError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// The answer would pass the response ceiling of `limit` bytes.
    pub fn too_large(limit: u64) -> Self {
        BackendError::TooLarge(format!(
            "The answer would be larger than the limit of {limit} bytes (MMSUB_MAX_RESPONSE_BYTES): ask for smaller pages or fewer fields at once."
        ))
    }

    /// The contract's answer for a channel the actor cannot see.
    pub fn channel_not_found(identifier: &str) -> Self {
        BackendError::NotFound(format!("Channel not found: {identifier}"))
    }
}

/// A backend call's result.
pub type BackendResult<T> = Result<T, BackendError>;

/// Who a backend acts for: the username the JWT names, and the backend's own credential for
/// that user if it has one (the Mattermost backend keeps the user's session there, sealed;
/// the embedded store has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The username the token names.
    pub username: String,
    /// Opaque to everything but the backend that issued it.
    pub credential: Option<String>,
}

impl Actor {
    /// An actor with no backend credential.
    pub fn named(username: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            credential: None,
        }
    }
}

/// A successful login: the user, and the credential the backend wants carried in the token.
#[derive(Debug, Clone)]
pub struct Login {
    /// The user who logged in.
    pub user: User,
    /// What the backend wants carried in the token.
    pub credential: Option<String>,
}

impl Login {
    /// The actor this login makes.
    pub fn actor(&self) -> Actor {
        Actor {
            username: self.user.username.clone(),
            credential: self.credential.clone(),
        }
    }
}

/// A user to create, inputs validated.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// The username.
    pub username: String,
    /// The email address.
    pub email: String,
    /// The password (hashed by the backend, never stored as is).
    pub password: String,
}

/// A chat system of record: users, one team, channels, memberships and posts. The embedded
/// store and Mattermost implement it; resolvers see only this.
#[async_trait]
pub trait ChatBackend: Send + Sync + 'static {
    /// Creates the user (inputs already validated) and adds it to the team and its default channel.
    async fn create_user(&self, new: NewUser) -> BackendResult<CreatedUser>;

    /// The login if the password is right; `None` for an unknown user or a wrong password.
    async fn authenticate(&self, username: &str, password: &str) -> BackendResult<Option<Login>>;

    /// A page of the team's users (admins only on Mattermost).
    async fn list_users(&self, actor: &Actor, page: PageRequest) -> BackendResult<UserPage>;

    /// Creates an open channel in the team with the actor and every member in it.
    async fn create_channel(
        &self,
        actor: &Actor,
        name: &str,
        members: &[String],
    ) -> BackendResult<Channel>;

    /// The actor's channels, each with its last message.
    async fn member_channels(&self, actor: &Actor, page: PageRequest)
        -> BackendResult<ChannelPage>;

    /// The actor's channels like [`ChatBackend::member_channels`], where a backend may leave
    /// `last_message` out when finding it costs requests: for a cache that has them. The
    /// default includes them.
    async fn member_channels_without_last(
        &self,
        actor: &Actor,
        page: PageRequest,
    ) -> BackendResult<ChannelPage> {
        self.member_channels(actor, page).await
    }

    /// Resolves a channel by id or name, failing unless the actor is a member.
    async fn member_channel(&self, actor: &Actor, identifier: &str) -> BackendResult<Channel>;

    /// Posts `text` to the channel as the actor; the post is durable when this returns.
    async fn send_message(
        &self,
        actor: &Actor,
        identifier: &str,
        text: &str,
    ) -> BackendResult<ChannelPost>;

    /// Posts of a channel that came after `after_id`, oldest first, at most `limit`: what a
    /// resuming subscriber missed. Unknown `after_id` (or one of another channel) is `NotFound`.
    async fn messages_after(
        &self,
        actor: &Actor,
        identifier: &str,
        after_id: &str,
        limit: u32,
        max_bytes: u64,
    ) -> BackendResult<Missed>;

    /// `page.number` 0 is the newest page.
    async fn messages(
        &self,
        actor: &Actor,
        identifier: &str,
        page: PageRequest,
    ) -> BackendResult<MessagePage>;

    /// A new refresh token for the login, valid for `ttl`.
    async fn issue_refresh_token(
        &self,
        login: &Login,
        ttl: std::time::Duration,
    ) -> BackendResult<String>;

    /// Redeems a refresh token; `None` if it is unknown, used, expired or revoked.
    async fn redeem_refresh_token(&self, token: &str) -> BackendResult<Option<Login>>;
}
