//! The chat backend on a Mattermost server: Mattermost is the system of record, this node
//! keeps nothing but short-lived caches.
//!
//! - **Who acts.** Account and team administration runs as the configured admin account
//!   ([`MattermostAdminProxy`]). Everything a user does runs with *that user's* Mattermost
//!   session ([`MattermostUserProxy`]): `tokenAuth` / `userGetToken` log in to Mattermost with
//!   the user's own password, and the session comes back sealed ([`sealed`]) inside the JWT as
//!   `mmSession`. Any API node can open it; no node stores it; the client cannot read it; no
//!   password copy is kept anywhere.
//! - **Bounded cost.** Every operation makes a fixed, small number of Mattermost requests
//!   (the table is in the README); author names come from one `POST /users/ids` per page,
//!   through a cache.
//! - **Live posts.** Posts made through this server are published by the API as usual; posts
//!   made in Mattermost itself arrive through the [`ingest`] task. The hub drops the second copy
//!   of any post, so each subscriber sees each post once.

pub mod api;
pub mod ingest;
pub mod model;
pub mod proxy;
pub mod sealed;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use api::{Api, ApiLimits, MattermostError};
use model::{MmChannel, MmPost, MmTeam, MmUser};
pub use proxy::{MattermostAdminProxy, MattermostUserProxy, Session};
use sealed::Sealer;

use super::{
    Actor, BackendError, BackendResult, ByteCount, Channel, ChannelPage, ChannelPost,
    ChannelSummary, ChatBackend, CreatedUser, Login, MessagePage, NewUser, PageRequest, Post, User,
    UserPage,
};

/// Where Mattermost is and how to talk to it: the original `.env` names, plus limits.
#[derive(Clone)]
pub struct MattermostConfig {
    /// `MATTERMOST_SERVER_URL`
    pub server_url: String,
    /// `MATTERMOST_ADMIN_LOGIN_ID`
    pub admin_login_id: String,
    /// `MATTERMOST_ADMIN_LOGIN_PASSWORD`
    pub admin_password: String,
    /// `MATTERMOST_TEAM_IDENTIFIER`: the team's name or id.
    pub team: String,
    pub limits: ApiLimits,
    /// How long a user's name, email and role are reused for message authors.
    pub user_cache_ttl: Duration,
    /// How long `userList`'s total count is reused.
    pub user_count_ttl: Duration,
}

impl std::fmt::Debug for MattermostConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MattermostConfig")
            .field("server_url", &self.server_url)
            .field("admin_login_id", &self.admin_login_id)
            .field("team", &self.team)
            .field("limits", &self.limits)
            .finish_non_exhaustive() // never the password
    }
}

impl MattermostConfig {
    pub fn new(server_url: &str, admin_login_id: &str, admin_password: &str, team: &str) -> Self {
        Self {
            server_url: server_url.to_owned(),
            admin_login_id: admin_login_id.to_owned(),
            admin_password: admin_password.to_owned(),
            team: team.to_owned(),
            limits: ApiLimits::default(),
            user_cache_ttl: Duration::from_secs(300),
            user_count_ttl: Duration::from_secs(10),
        }
    }
}

/// What the sealed `mmSession` claim holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SealedSession {
    /// The Mattermost session token.
    token: String,
    id: String,
    username: String,
    email: String,
    roles: String,
}

impl SealedSession {
    fn user(&self) -> MmUser {
        MmUser {
            id: self.id.clone(),
            username: self.username.clone(),
            email: self.email.clone(),
            roles: self.roles.clone(),
            delete_at: 0,
        }
    }
}

/// What a refresh token from `userGetToken` holds (sealed too).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SealedRefresh {
    purpose: String,
    expires_at: i64,
    session: String,
}

const REFRESH_PURPOSE: &str = "refresh";

/// Mattermost answers at most this many items per page; larger pages are read in pages of it.
const MAX_PER_PAGE: u32 = 200;

/// A post's bytes as counted against the response ceiling, before its author is known.
fn mm_post_bytes(post: &MmPost) -> u64 {
    (post.id.len() + post.channel_id.len() + post.user_id.len() * 3 + post.message.len() + 256)
        as u64
}
/// Above this many cached users or channels the cache starts over.
const CACHE_LIMIT: usize = 100_000;

/// `ChatBackend` on a Mattermost server.
pub struct MattermostBackend {
    api: Api,
    admin: MattermostAdminProxy,
    team: MmTeam,
    sealer: Sealer,
    config: MattermostConfig,
    /// Message authors by user id, with the time they were fetched.
    users: Mutex<HashMap<String, (Instant, User)>>,
    /// Each channel's newest post, valid while the channel's `last_post_at` is unchanged.
    last_posts: Mutex<HashMap<String, (i64, Option<Post>)>>,
    user_count: Mutex<Option<(Instant, u64)>>,
}

fn mm_error(e: MattermostError) -> BackendError {
    match e {
        MattermostError::Api {
            status_code: 401, ..
        } => BackendError::Unauthorized(
            "Your Mattermost session has ended: log in again (tokenAuth or userGetToken).".into(),
        ),
        MattermostError::Api {
            status_code: 403,
            message,
            ..
        } => BackendError::Forbidden(message),
        MattermostError::Api {
            status_code: 404,
            message,
            ..
        } => BackendError::NotFound(message),
        MattermostError::Api {
            status_code,
            message,
            ..
        } if status_code < 500 => BackendError::Invalid(message),
        other => BackendError::Unavailable(other.to_string()),
    }
}

impl MattermostBackend {
    /// Logs the admin account in and resolves the team; fails with the reason if either fails.
    pub async fn connect(config: MattermostConfig, signing_secret: &[u8]) -> anyhow::Result<Self> {
        let api = Api::new(&config.server_url, config.limits.clone())?;
        let admin = MattermostAdminProxy::login(
            api.clone(),
            &config.admin_login_id,
            &config.admin_password,
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "logging in to Mattermost at {} as MATTERMOST_ADMIN_LOGIN_ID failed: {e}",
                config.server_url
            )
        })?;
        let team = admin.team(&config.team).await.map_err(|e| {
            anyhow::anyhow!(
                "MATTERMOST_TEAM_IDENTIFIER {:?} could not be read: {e}",
                config.team
            )
        })?;
        Ok(Self {
            api,
            admin,
            team,
            sealer: Sealer::new(signing_secret),
            config,
            users: Mutex::default(),
            last_posts: Mutex::default(),
            user_count: Mutex::default(),
        })
    }

    pub fn admin(&self) -> &MattermostAdminProxy {
        &self.admin
    }

    pub fn team(&self) -> &MmTeam {
        &self.team
    }

    pub fn api(&self) -> &Api {
        &self.api
    }

    fn seal_session(&self, user: &MmUser, token: String) -> String {
        self.sealer.seal(&SealedSession {
            token,
            id: user.id.clone(),
            username: user.username.clone(),
            email: user.email.clone(),
            roles: user.roles.clone(),
        })
    }

    fn open_session(&self, credential: Option<&str>) -> BackendResult<SealedSession> {
        credential
            .and_then(|c| self.sealer.open::<SealedSession>(c))
            .ok_or_else(|| {
                BackendError::Unauthorized(
                    "This token carries no Mattermost session of this server: log in again (tokenAuth or userGetToken).".into(),
                )
            })
    }

    /// The proxy acting with the actor's own Mattermost session.
    fn as_user(&self, actor: &Actor) -> BackendResult<MattermostUserProxy> {
        let sealed = self.open_session(actor.credential.as_deref())?;
        if sealed.username != actor.username {
            return Err(BackendError::Unauthorized(
                "This token's Mattermost session belongs to another user.".into(),
            ));
        }
        let me = sealed.user();
        Ok(MattermostUserProxy::new(Arc::new(Session::resume(
            self.api.clone(),
            sealed.token,
            me,
        ))))
    }

    /// The actor's channel by id or name; "not found" whether it is missing or not theirs.
    async fn member_channel_of(
        &self,
        proxy: &MattermostUserProxy,
        identifier: &str,
    ) -> BackendResult<MmChannel> {
        if let Some(channel) = proxy
            .own_channel(&self.team.id, identifier)
            .await
            .map_err(mm_error)?
        {
            return Ok(channel);
        }
        // Not one of the user's channels: whether it exists elsewhere is not the user's to
        // learn (the same answer as for a missing channel, and no admin lookup to time).
        Err(BackendError::channel_not_found(identifier))
    }

    /// Users by id, from the cache or with one `POST /users/ids` for the rest.
    pub async fn authors(
        &self,
        proxy: &MattermostUserProxy,
        ids: impl IntoIterator<Item = &str>,
    ) -> BackendResult<HashMap<String, User>> {
        let ttl = self.config.user_cache_ttl;
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        {
            let cache = self.users.lock().expect("user cache poisoned");
            for id in ids {
                match cache.get(id) {
                    Some((at, user)) if at.elapsed() < ttl => {
                        found.insert(id.to_owned(), user.clone());
                    }
                    _ if !missing.iter().any(|m| m == id) => missing.push(id.to_owned()),
                    _ => {}
                }
            }
        }
        if !missing.is_empty() {
            let fetched = proxy.users_by_ids(&missing).await.map_err(mm_error)?;
            for user in &fetched {
                let user = self.remember_user(user);
                found.insert(user.id.clone(), user);
            }
        }
        Ok(found)
    }

    /// Puts a user into the author cache and returns it as a GraphQL user.
    fn remember_user(&self, user: &MmUser) -> User {
        let user = user.to_user();
        let mut cache = self.users.lock().expect("user cache poisoned");
        if cache.len() > CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(user.id.clone(), (Instant::now(), user.clone()));
        user
    }

    /// Mattermost posts with their authors (unknown authors keep their id as name).
    pub async fn with_authors(
        &self,
        proxy: &MattermostUserProxy,
        posts: Vec<MmPost>,
    ) -> BackendResult<Vec<Post>> {
        let authors = self
            .authors(proxy, posts.iter().map(|p| p.user_id.as_str()))
            .await?;
        Ok(posts
            .into_iter()
            .map(|p| {
                let author = authors.get(&p.user_id).cloned().unwrap_or_else(|| User {
                    id: p.user_id.clone(),
                    username: p.user_id.clone(),
                    email: String::new(),
                    is_staff: false,
                });
                p.to_post(author)
            })
            .collect())
    }

    /// Newest post of each channel: cached per channel while `last_post_at` is unchanged, the
    /// misses fetched concurrently (one request each).
    async fn last_posts(
        &self,
        proxy: &MattermostUserProxy,
        channels: &[MmChannel],
    ) -> BackendResult<Vec<Option<Post>>> {
        let mut result: Vec<Option<Option<Post>>> = {
            let cache = self.last_posts.lock().expect("post cache poisoned");
            channels
                .iter()
                .map(|c| match cache.get(&c.id) {
                    _ if c.last_post_at == 0 => Some(None),
                    Some((at, post)) if *at == c.last_post_at => Some(post.clone()),
                    _ => None,
                })
                .collect()
        };
        let misses: Vec<usize> = (0..channels.len())
            .filter(|&i| result[i].is_none())
            .collect();
        let fetched =
            futures::future::try_join_all(misses.iter().map(|&i| proxy.last_post(&channels[i].id)))
                .await
                .map_err(mm_error)?;
        let posts = self
            .with_authors(proxy, fetched.iter().flatten().cloned().collect())
            .await?;
        let mut posts = posts.into_iter();
        let mut cache = self.last_posts.lock().expect("post cache poisoned");
        if cache.len() > CACHE_LIMIT {
            cache.clear();
        }
        for (&i, raw) in misses.iter().zip(&fetched) {
            let post = raw.as_ref().and_then(|_| posts.next());
            cache.insert(
                channels[i].id.clone(),
                (channels[i].last_post_at, post.clone()),
            );
            result[i] = Some(post);
        }
        Ok(result.into_iter().map(Option::flatten).collect())
    }

    async fn user_count(&self, proxy: &MattermostUserProxy) -> BackendResult<u64> {
        if let Some((at, count)) = *self.user_count.lock().expect("count cache poisoned") {
            if at.elapsed() < self.config.user_count_ttl {
                return Ok(count);
            }
        }
        let count = proxy.user_count().await.map_err(mm_error)?;
        *self.user_count.lock().expect("count cache poisoned") = Some((Instant::now(), count));
        Ok(count)
    }

    fn login_for(&self, user: &MmUser, token: String) -> Login {
        Login {
            user: user.to_user(),
            credential: Some(self.seal_session(user, token)),
        }
    }
}

#[async_trait]
impl ChatBackend for MattermostBackend {
    /// Admin: `POST /users`, `POST /teams/{team}/members` (2 requests). Mattermost itself posts
    /// the `system_join_team` message, which reaches subscribers through the ingest.
    async fn create_user(&self, new: NewUser) -> BackendResult<CreatedUser> {
        let created = self.admin.create_user(&new).await.map_err(mm_error)?;
        self.admin
            .add_user_id_to_team(&self.team.id, &created.id)
            .await
            .map_err(mm_error)?;
        Ok(CreatedUser {
            user: created.to_user(),
            announcements: Vec::new(),
        })
    }

    /// `POST /users/login` with the user's own password (1 request).
    async fn authenticate(&self, username: &str, password: &str) -> BackendResult<Option<Login>> {
        match Session::login(&self.api, username, password).await {
            Ok((user, token)) => Ok(Some(self.login_for(&user, token))),
            Err(e) if e.is_status(401) || e.is_status(400) || e.is_status(404) => Ok(None),
            Err(e) => Err(mm_error(e)),
        }
    }

    /// `GET /users` and, at most every `user_count_ttl`, `GET /users/stats` (1–2 requests).
    async fn list_users(&self, actor: &Actor, page: PageRequest) -> BackendResult<UserPage> {
        let proxy = self.as_user(actor)?;
        let (users, total) = tokio::try_join!(
            async {
                if page.size <= MAX_PER_PAGE {
                    return proxy
                        .list_users(page.number, page.size)
                        .await
                        .map_err(mm_error);
                }
                // A page larger than Mattermost's: the pages of 200 that cover it.
                let (start, end) = (page.offset(), page.offset() + u64::from(page.size));
                let per_page = u64::from(MAX_PER_PAGE);
                let mut users = Vec::new();
                for chunk in start / per_page..end.div_ceil(per_page) {
                    let got = proxy
                        .list_users(chunk as u32, MAX_PER_PAGE)
                        .await
                        .map_err(mm_error)?;
                    let full = got.len() as u64 == per_page;
                    let first = chunk * per_page;
                    users.extend(got.into_iter().enumerate().filter_map(|(i, u)| {
                        (start..end).contains(&(first + i as u64)).then_some(u)
                    }));
                    if !full {
                        break;
                    }
                }
                Ok(users)
            },
            self.user_count(&proxy)
        )?;
        let found = UserPage {
            users: users.iter().map(MmUser::to_user).collect(),
            total,
        };
        page.allow(found.content_bytes())?;
        Ok(found)
    }

    /// As the user: `POST /users/usernames` for the members, `POST /channels` (the creator
    /// joins), then `POST /channels/{id}/members` for each member and for the admin account,
    /// so that the ingest sees the channel's posts (2 + members + 1 requests).
    async fn create_channel(
        &self,
        actor: &Actor,
        name: &str,
        members: &[String],
    ) -> BackendResult<Channel> {
        let proxy = self.as_user(actor)?;
        let wanted: Vec<String> = members.iter().map(|m| m.trim().to_lowercase()).collect();
        let found = proxy.users_by_usernames(&wanted).await.map_err(mm_error)?;
        if let Some(unknown) = wanted
            .iter()
            .find(|w| !found.iter().any(|u| &u.username == *w))
        {
            return Err(BackendError::NotFound(format!(
                "Members are not valid: unknown user {unknown}"
            )));
        }
        let existing = self.admin.channel(&self.team.id, name).await;
        if existing.is_ok() {
            return Err(BackendError::Conflict(
                "A channel with that name already exists on the same team.".into(),
            ));
        }
        let channel: MmChannel = proxy
            .session()
            .json(api::Call::post(
                "/channels",
                serde_json::json!({ "team_id": self.team.id, "name": name, "display_name": name, "type": "O" }),
            ))
            .await
            .map_err(mm_error)?;
        let mut ids: Vec<&str> = found.iter().map(|u| u.id.as_str()).collect();
        ids.push(&self.admin.me().id);
        ids.retain(|id| *id != proxy.me().id);
        ids.dedup();
        for id in ids {
            self.admin
                .add_user_id_to_channel(&channel.id, id)
                .await
                .map_err(mm_error)?;
        }
        Ok(channel.to_channel())
    }

    /// `GET /users/{id}/teams/{team}/channels`, then for each channel of the page whose newest
    /// post is not cached `GET /channels/{id}/posts?per_page=1`, and one `POST /users/ids` for
    /// unknown authors (1 request when nothing changed; at most 2 + page size).
    async fn member_channels(
        &self,
        actor: &Actor,
        page: PageRequest,
    ) -> BackendResult<ChannelPage> {
        let proxy = self.as_user(actor)?;
        let mut channels = proxy
            .list_own_channels(&self.team.id)
            .await
            .map_err(mm_error)?;
        channels.sort_by(|a, b| a.name.cmp(&b.name));
        let start = page.offset() as usize;
        let has_next = channels.len() > start + page.size as usize;
        let channels: Vec<MmChannel> = channels
            .into_iter()
            .skip(start)
            .take(page.size as usize)
            .collect();
        let last = self.last_posts(&proxy, &channels).await?;
        let found = ChannelPage {
            channels: channels
                .iter()
                .zip(last)
                .map(|(c, last_message)| ChannelSummary {
                    channel: c.to_channel(),
                    last_message,
                })
                .collect(),
            has_next,
        };
        page.allow(found.content_bytes())?;
        Ok(found)
    }

    /// `GET /users/{id}/teams/{team}/channels` (1 request).
    async fn member_channel(&self, actor: &Actor, identifier: &str) -> BackendResult<Channel> {
        let proxy = self.as_user(actor)?;
        Ok(self
            .member_channel_of(&proxy, identifier)
            .await?
            .to_channel())
    }

    /// The membership check and `POST /posts`, as the user (2 requests).
    async fn send_message(
        &self,
        actor: &Actor,
        identifier: &str,
        text: &str,
    ) -> BackendResult<ChannelPost> {
        let proxy = self.as_user(actor)?;
        let channel = self.member_channel_of(&proxy, identifier).await?;
        // The ingest sees this post on Mattermost's WebSocket, perhaps before the answer below
        // arrives; with its author already known it publishes without asking Mattermost.
        let author = self.remember_user(proxy.me());
        let post = proxy
            .send_message(&channel.id, text)
            .await
            .map_err(mm_error)?;
        Ok(ChannelPost {
            channel: channel.to_channel(),
            post: post.to_post(author),
        })
    }

    /// The membership check, `GET /posts/{after}` (it must be in the channel), then
    /// `GET /channels/{id}/posts?after=…` in pages of 200 up to `limit`, and one
    /// `POST /users/ids` (3 + limit/200 requests at most).
    async fn messages_after(
        &self,
        actor: &Actor,
        identifier: &str,
        after_id: &str,
        limit: u32,
        max_bytes: u64,
    ) -> BackendResult<Vec<Post>> {
        let proxy = self.as_user(actor)?;
        let mut count = ByteCount::new(max_bytes);
        let channel = self.member_channel_of(&proxy, identifier).await?;
        let missing =
            || BackendError::NotFound(format!("Message not found in this channel: {after_id}"));
        let anchor: MmPost = match proxy
            .session()
            .json(api::Call::get(format!("/posts/{after_id}")))
            .await
        {
            Ok(post) => post,
            Err(e) if e.is_status(404) || e.is_status(403) || e.is_status(400) => {
                return Err(missing())
            }
            Err(e) => return Err(mm_error(e)),
        };
        if anchor.channel_id != channel.id {
            return Err(missing());
        }
        let mut posts: Vec<MmPost> = Vec::new();
        let mut cursor = after_id.to_owned();
        while (posts.len() as u32) < limit {
            let want = (limit - posts.len() as u32).min(200);
            let page = proxy
                .posts_after(&channel.id, &cursor, want)
                .await
                .map_err(mm_error)?
                .oldest_first();
            let full = page.len() as u32 == want;
            count.add_all(page.iter().map(mm_post_bytes))?;
            posts.extend(page);
            match posts.last() {
                Some(last) if full => cursor = last.id.clone(),
                _ => break,
            }
        }
        self.with_authors(&proxy, posts).await
    }

    /// The membership check, `GET /channels/{id}/posts?page=…`, one `POST /users/ids`
    /// (at most 3 requests).
    async fn messages(
        &self,
        actor: &Actor,
        identifier: &str,
        page: PageRequest,
    ) -> BackendResult<MessagePage> {
        let proxy = self.as_user(actor)?;
        let channel = self.member_channel_of(&proxy, identifier).await?;
        if page.size <= MAX_PER_PAGE {
            let list = proxy
                .get_messages(&channel.id, page.number, page.size)
                .await
                .map_err(mm_error)?;
            let has_next = !list.next_post_id.is_empty();
            let has_previous = !list.prev_post_id.is_empty();
            let posts = list.oldest_first();
            ByteCount::new(page.max_bytes).add_all(posts.iter().map(mm_post_bytes))?;
            let posts = self.with_authors(&proxy, posts).await?;
            return Ok(MessagePage {
                posts,
                has_next,
                has_previous,
            });
        }
        // A page larger than Mattermost's: the pages of 200 that cover it, newest first.
        let start = page.offset();
        let end = start + u64::from(page.size);
        let mut newest_first: Vec<MmPost> = Vec::new();
        let mut count = ByteCount::new(page.max_bytes);
        let mut has_previous = false;
        let mut has_next = start > 0;
        let per_page = u64::from(MAX_PER_PAGE);
        for chunk in start / per_page..end.div_ceil(per_page) {
            let list = proxy
                .get_messages(&channel.id, chunk as u32, MAX_PER_PAGE)
                .await
                .map_err(mm_error)?;
            has_previous = !list.prev_post_id.is_empty();
            let posts = list.oldest_first();
            let full = posts.len() as u64 == per_page;
            let first = chunk * per_page;
            for (i, post) in posts.into_iter().rev().enumerate() {
                let at = first + i as u64;
                if at >= end {
                    has_previous = true;
                    break;
                }
                if at >= start {
                    count.add(mm_post_bytes(&post))?;
                    newest_first.push(post);
                }
            }
            if !full {
                break;
            }
        }
        has_next &= !newest_first.is_empty() || start > 0;
        newest_first.reverse();
        let posts = self.with_authors(&proxy, newest_first).await?;
        Ok(MessagePage {
            posts,
            has_next,
            has_previous,
        })
    }

    /// Sealed, not stored: the refresh token carries the Mattermost session and its own
    /// expiry (0 requests). It stays valid until it expires or the session is revoked.
    async fn issue_refresh_token(&self, login: &Login, ttl: Duration) -> BackendResult<String> {
        let session = login.credential.clone().ok_or_else(|| {
            BackendError::Unauthorized("No Mattermost session to refresh.".into())
        })?;
        Ok(self.sealer.seal(&SealedRefresh {
            purpose: REFRESH_PURPOSE.into(),
            expires_at: crate::clock::unix_seconds() + ttl.as_secs() as i64,
            session,
        }))
    }

    /// Opens the refresh token and checks with `GET /users/me` that its session is still
    /// alive (1 request).
    async fn redeem_refresh_token(&self, token: &str) -> BackendResult<Option<Login>> {
        let Some(refresh) = self.sealer.open::<SealedRefresh>(token) else {
            return Ok(None);
        };
        if refresh.purpose != REFRESH_PURPOSE || refresh.expires_at <= crate::clock::unix_seconds()
        {
            return Ok(None);
        }
        let Ok(sealed) = self.open_session(Some(&refresh.session)) else {
            return Ok(None);
        };
        let proxy = MattermostUserProxy::new(Arc::new(Session::resume(
            self.api.clone(),
            sealed.token.clone(),
            sealed.user(),
        )));
        match proxy
            .session()
            .json::<MmUser>(api::Call::get("/users/me"))
            .await
        {
            Ok(me) => Ok(Some(self.login_for(&me, sealed.token))),
            Err(e) if e.is_status(401) => Ok(None),
            Err(e) => Err(mm_error(e)),
        }
    }
}
