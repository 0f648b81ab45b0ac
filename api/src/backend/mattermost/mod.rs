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

mod admin;
mod caches;
mod chat;
mod config;
pub mod ingest;
pub mod model;
pub mod proxy;
pub mod rest;
pub mod sealed;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mmsub_metrics::Metrics;

pub use admin::MattermostAdminProxy;
pub use config::MattermostConfig;
use model::{MmChannel, MmPost, MmTeam, MmUser};
pub use proxy::{MattermostSession, MattermostUserProxy};
pub use rest::{MattermostError, RestClient, RestLimits};
use sealed::{SealedRefresh, SealedSession, Sealer, REFRESH_PURPOSE};

use super::{
    Actor, BackendError, BackendResult, ByteCount, Channel, ChannelPage, ChannelPost,
    ChannelSummary, ChatBackend, CreatedUser, Login, MessagePage, Missed, NewUser, PageRequest,
    Post, User, UserPage,
};

/// Mattermost answers at most this many items per page; larger pages are read in pages of it.
const MAX_PER_PAGE: u32 = 200;

/// A post's bytes as counted against the response ceiling, before its author is known.
fn mm_post_bytes(post: &MmPost) -> u64 {
    (post.id.len() + post.channel_id.len() + post.user_id.len() * 3 + post.message.len() + 256)
        as u64
}
/// `ChatBackend` on a Mattermost server.
pub struct MattermostBackend {
    api: RestClient,
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
    /// Every call to Mattermost is counted in `metrics`.
    pub async fn connect(
        config: MattermostConfig,
        signing_secret: &[u8],
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let api = RestClient::new(&config.server_url, config.limits.clone())?.counted(metrics);
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

    /// The admin account's proxy.
    pub fn admin(&self) -> &MattermostAdminProxy {
        &self.admin
    }

    /// The team this server serves.
    pub fn team(&self) -> &MmTeam {
        &self.team
    }

    /// The REST client every proxy shares.
    pub fn rest(&self) -> &RestClient {
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
        Ok(MattermostUserProxy::new(Arc::new(
            MattermostSession::resume(self.api.clone(), sealed.token, me),
        )))
    }

    /// One page of the actor's channels by name, and whether more follow
    /// (`GET /users/{id}/teams/{team}/channels`, 1 request).
    async fn channel_page(
        &self,
        proxy: &MattermostUserProxy,
        page: PageRequest,
    ) -> BackendResult<(Vec<MmChannel>, bool)> {
        let mut channels = proxy
            .list_own_channels(&self.team.id)
            .await
            .map_err(mm_error)?;
        channels.sort_by(|a, b| a.name.cmp(&b.name));
        let start = page.offset() as usize;
        let has_next = channels.len() > start + page.size as usize;
        let channels = channels
            .into_iter()
            .skip(start)
            .take(page.size as usize)
            .collect();
        Ok((channels, has_next))
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

    fn login_for(&self, user: &MmUser, token: String) -> Login {
        Login {
            user: user.to_user(),
            credential: Some(self.seal_session(user, token)),
        }
    }
}
