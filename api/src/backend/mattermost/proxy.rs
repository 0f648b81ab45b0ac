//! `MattermostUserProxy` and `MattermostAdminProxy`: every operation the original server's
//! proxy module offered, as async calls over one pooled [`RestClient`]. The admin's proxy
//! is in `admin.rs`.
//!
//! A proxy acts with one Mattermost session. Built from a login id and password it logs in
//! again once when Mattermost answers 401 (the session expired or was revoked); built from an
//! existing session (a user acting through a token) a 401 is an error the caller turns into
//! "log in again", because no password is kept. Identifiers may be ids or names, as in the
//! original: a 26-character Mattermost id is tried as an id first, anything else as a name.

use std::sync::{Arc, RwLock};

use serde_json::json;

use super::model::{MmChannel, MmPost, MmTeam, MmUser, PostList, UsersStats};
use super::rest::{Call, MattermostError, MmResult, RestClient};

/// A Mattermost session: the token, whose it is, and how to renew it if that is possible.
pub struct MattermostSession {
    api: RestClient,
    token: RwLock<String>,
    me: MmUser,
    credentials: Option<(String, String)>,
}

impl std::fmt::Debug for MattermostSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MattermostSession")
            .field("user", &self.me.username)
            .finish_non_exhaustive() // never the token or the password
    }
}

impl MattermostSession {
    /// `POST /users/login`; the token comes back in the `Token` header.
    pub async fn login(
        api: &RestClient,
        login_id: &str,
        password: &str,
    ) -> MmResult<(MmUser, String)> {
        let answer = api
            .send(
                &Call::post(
                    "/users/login",
                    json!({ "login_id": login_id, "password": password }),
                ),
                None,
            )
            .await?;
        let token = answer.token.clone().ok_or_else(|| {
            MattermostError::Protocol("login answered without a Token header".into())
        })?;
        Ok((answer.json()?, token))
    }

    /// Logs in and keeps the credentials to log in again when the session expires.
    pub async fn with_credentials(
        api: RestClient,
        login_id: &str,
        password: &str,
    ) -> MmResult<Self> {
        let (me, token) = Self::login(&api, login_id, password).await?;
        Ok(Self {
            api,
            token: RwLock::new(token),
            me,
            credentials: Some((login_id.to_owned(), password.to_owned())),
        })
    }

    /// An existing session; a 401 ends it.
    pub fn resume(api: RestClient, token: String, me: MmUser) -> Self {
        Self {
            api,
            token: RwLock::new(token),
            me,
            credentials: None,
        }
    }

    /// The session's user.
    pub fn me(&self) -> &MmUser {
        &self.me
    }

    /// The REST client the session calls through.
    pub fn rest(&self) -> &RestClient {
        &self.api
    }

    /// The current token (for the WebSocket's authentication challenge).
    pub fn token(&self) -> String {
        self.token.read().expect("session lock poisoned").clone()
    }

    /// Makes `call` with this session's token; a session with credentials logs in again once
    /// on 401.
    pub async fn call(&self, call: Call<'_>) -> MmResult<super::rest::Answer> {
        let token = self.token();
        match self.api.send(&call, Some(&token)).await {
            Err(e) if e.is_status(401) && self.credentials.is_some() => {
                let (login_id, password) = self.credentials.as_ref().expect("checked above");
                tracing::info!(user = %self.me.username, "Mattermost session expired: logging in again");
                let (_, fresh) = Self::login(&self.api, login_id, password).await?;
                self.token
                    .write()
                    .expect("session lock poisoned")
                    .clone_from(&fresh);
                self.api.send(&call, Some(&fresh)).await
            }
            other => other,
        }
    }

    /// Makes `call` and reads its JSON answer.
    pub async fn json<T: serde::de::DeserializeOwned>(&self, call: Call<'_>) -> MmResult<T> {
        self.call(call).await?.json()
    }

    /// A call whose answer is only `{"status": "OK"}`.
    pub async fn ok(&self, call: Call<'_>) -> MmResult<()> {
        self.call(call).await.map(drop)
    }
}

/// Mattermost ids are 26 characters of `[a-z0-9]`.
pub fn looks_like_id(identifier: &str) -> bool {
    identifier.len() == 26
        && identifier
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn not_found(what: &str, identifier: &str) -> MattermostError {
    MattermostError::Api {
        id: "mmsub.not_found".into(),
        message: format!("{what} not found: {identifier}"),
        status_code: 404,
    }
}

/// Tries `by_id` when the identifier looks like an id, then `by_name`.
async fn resolve<T, I, N, FI, FN>(identifier: &str, by_id: I, by_name: N) -> MmResult<T>
where
    I: FnOnce(String) -> FI,
    N: FnOnce(String) -> FN,
    FI: std::future::Future<Output = MmResult<T>>,
    FN: std::future::Future<Output = MmResult<T>>,
{
    if looks_like_id(identifier) {
        match by_id(identifier.to_owned()).await {
            Err(e) if e.is_status(404) || e.is_status(403) => {}
            other => return other,
        }
    }
    by_name(identifier.to_owned()).await
}

/// What a user can do, acting with their own session.
#[derive(Debug, Clone)]
pub struct MattermostUserProxy {
    session: Arc<MattermostSession>,
}

impl MattermostUserProxy {
    /// A proxy acting with `session`.
    pub fn new(session: Arc<MattermostSession>) -> Self {
        Self { session }
    }

    /// Logs in as the user (`login_id` is a username or an email).
    pub async fn login(api: RestClient, login_id: &str, password: &str) -> MmResult<Self> {
        Ok(Self::new(Arc::new(
            MattermostSession::with_credentials(api, login_id, password).await?,
        )))
    }

    /// The session it acts with.
    pub fn session(&self) -> &Arc<MattermostSession> {
        &self.session
    }

    /// The user it acts as.
    pub fn me(&self) -> &MmUser {
        self.session.me()
    }

    /// One page of all users (`page` from 0; Mattermost caps `per_page` at 200).
    pub async fn list_users(&self, page: u32, per_page: u32) -> MmResult<Vec<MmUser>> {
        self.session
            .json(
                Call::get("/users")
                    .query("page", page)
                    .query("per_page", per_page),
            )
            .await
    }

    /// Number of active users (`GET /users/stats`).
    pub async fn user_count(&self) -> MmResult<u64> {
        let stats: UsersStats = self.session.json(Call::get("/users/stats")).await?;
        Ok(stats.total_users_count)
    }

    /// Users by id, in one request (`POST /users/ids`).
    pub async fn users_by_ids(&self, ids: &[String]) -> MmResult<Vec<MmUser>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.session
            .json(Call::post("/users/ids", json!(ids)))
            .await
    }

    /// Users by username, in one request (`POST /users/usernames`).
    pub async fn users_by_usernames(&self, names: &[String]) -> MmResult<Vec<MmUser>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        self.session
            .json(Call::post("/users/usernames", json!(names)))
            .await
    }

    /// A user by id or username.
    pub async fn user(&self, identifier: &str) -> MmResult<MmUser> {
        resolve(
            identifier,
            |id| self.session.json(Call::get(format!("/users/{id}"))),
            |name| {
                self.session
                    .json(Call::get(format!("/users/username/{name}")))
            },
        )
        .await
    }

    /// The teams the user belongs to.
    pub async fn list_own_teams(&self) -> MmResult<Vec<MmTeam>> {
        self.session.json(Call::get("/users/me/teams")).await
    }

    /// A team by id or name.
    pub async fn team(&self, identifier: &str) -> MmResult<MmTeam> {
        resolve(
            identifier,
            |id| self.session.json(Call::get(format!("/teams/{id}"))),
            |name| self.session.json(Call::get(format!("/teams/name/{name}"))),
        )
        .await
    }

    /// Every channel of the user in the team (one request), without direct and group
    /// messages, which have no display name, as in the original.
    pub async fn list_own_channels(&self, team_id: &str) -> MmResult<Vec<MmChannel>> {
        let channels: Vec<MmChannel> = self
            .session
            .json(Call::get(format!(
                "/users/{}/teams/{team_id}/channels",
                self.me().id
            )))
            .await?;
        Ok(channels
            .into_iter()
            .filter(|c| !c.display_name.is_empty() && c.delete_at == 0)
            .collect())
    }

    /// One of the user's channels in the team by id or name; `None` if the user is not in it.
    pub async fn own_channel(
        &self,
        team_id: &str,
        identifier: &str,
    ) -> MmResult<Option<MmChannel>> {
        Ok(self
            .list_own_channels(team_id)
            .await?
            .into_iter()
            .find(|c| c.id == identifier || c.name == identifier))
    }

    /// A page (from 1) of the user's channels by name, each with its last post, and whether
    /// another page follows: the original's `list_related_channels`. Costs one request plus one
    /// per channel of the page; the backend's channel list adds a cache in front of the latter.
    pub async fn list_own_channels_page(
        &self,
        team_id: &str,
        page: u32,
        per_page: u32,
    ) -> MmResult<(Vec<(MmChannel, Option<MmPost>)>, bool)> {
        let mut channels = self.list_own_channels(team_id).await?;
        channels.sort_by(|a, b| a.name.cmp(&b.name));
        let start = (page.max(1) as usize - 1) * per_page as usize;
        let has_next = channels.len() > start + per_page as usize;
        let mut out = Vec::new();
        for channel in channels.into_iter().skip(start).take(per_page as usize) {
            let last = self.last_post(&channel.id).await?;
            out.push((channel, last));
        }
        Ok((out, has_next))
    }

    /// A channel by id, or by name within the team.
    pub async fn channel(&self, team_id: &str, identifier: &str) -> MmResult<MmChannel> {
        resolve(
            identifier,
            |id| self.session.json(Call::get(format!("/channels/{id}"))),
            |name| {
                self.session
                    .json(Call::get(format!("/teams/{team_id}/channels/name/{name}")))
            },
        )
        .await
    }

    /// Joins a channel of the team.
    pub async fn join_channel(&self, team_id: &str, identifier: &str) -> MmResult<()> {
        let channel = self.channel(team_id, identifier).await?;
        self.session
            .ok(Call::post(
                format!("/channels/{}/members", channel.id),
                json!({ "user_id": self.me().id }),
            ))
            .await
    }

    /// Leaves a channel of the team.
    pub async fn leave_channel(&self, team_id: &str, identifier: &str) -> MmResult<()> {
        let channel = self
            .own_channel(team_id, identifier)
            .await?
            .ok_or_else(|| not_found("Channel", identifier))?;
        self.session
            .ok(Call::delete(format!(
                "/channels/{}/members/{}",
                channel.id,
                self.me().id
            )))
            .await
    }

    /// Posts `message` to a channel by id (`POST /posts`).
    pub async fn send_message(&self, channel_id: &str, message: &str) -> MmResult<MmPost> {
        self.session
            .json(Call::post(
                "/posts",
                json!({ "channel_id": channel_id, "message": message }),
            ))
            .await
    }

    /// A page of a channel's posts (`page` 0 is the newest); Mattermost caps `per_page` at 200.
    /// `create_at` is milliseconds; render it in a zone with `schema::types::iso_time`.
    pub async fn get_messages(
        &self,
        channel_id: &str,
        page: u32,
        per_page: u32,
    ) -> MmResult<PostList> {
        self.session
            .json(
                Call::get(format!("/channels/{channel_id}/posts"))
                    .query("page", page)
                    .query("per_page", per_page),
            )
            .await
    }

    /// The newest post of a channel, if any.
    pub async fn last_post(&self, channel_id: &str) -> MmResult<Option<MmPost>> {
        Ok(self
            .get_messages(channel_id, 0, 1)
            .await?
            .oldest_first()
            .pop())
    }

    /// Up to `per_page` posts that came after `post_id`.
    pub async fn posts_after(
        &self,
        channel_id: &str,
        post_id: &str,
        per_page: u32,
    ) -> MmResult<PostList> {
        self.session
            .json(
                Call::get(format!("/channels/{channel_id}/posts"))
                    .query("after", post_id)
                    .query("per_page", per_page),
            )
            .await
    }

    /// Posts created or changed since `since` (milliseconds).
    pub async fn posts_since(&self, channel_id: &str, since: i64) -> MmResult<PostList> {
        self.session
            .json(Call::get(format!("/channels/{channel_id}/posts")).query("since", since))
            .await
    }
}
