//! [`ChatBackend`] on Mattermost: each contract operation as the Mattermost requests it makes
//! (their count is in each method's doc and in the README's table).

use std::time::Duration;

use async_trait::async_trait;

use super::{
    mm_error, mm_post_bytes, rest, Actor, Arc, BackendError, BackendResult, ByteCount, Channel,
    ChannelPage, ChannelPost, ChannelSummary, ChatBackend, CreatedUser, Login, MattermostBackend,
    MattermostSession, MattermostUserProxy, MessagePage, Missed, MmChannel, MmPost, MmUser,
    NewUser, PageRequest, SealedRefresh, UserPage, MAX_PER_PAGE, REFRESH_PURPOSE,
};

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
        match MattermostSession::login(&self.api, username, password).await {
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
            .json(rest::Call::post(
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
        let (channels, has_next) = self.channel_page(&proxy, page).await?;
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

    /// `GET /users/{id}/teams/{team}/channels` (1 request): no last messages.
    async fn member_channels_without_last(
        &self,
        actor: &Actor,
        page: PageRequest,
    ) -> BackendResult<ChannelPage> {
        let proxy = self.as_user(actor)?;
        let (channels, has_next) = self.channel_page(&proxy, page).await?;
        Ok(ChannelPage {
            channels: channels
                .iter()
                .map(|c| ChannelSummary {
                    channel: c.to_channel(),
                    last_message: None,
                })
                .collect(),
            has_next,
        })
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
    ) -> BackendResult<Missed> {
        let proxy = self.as_user(actor)?;
        let mut count = ByteCount::new(max_bytes);
        let channel = self.member_channel_of(&proxy, identifier).await?;
        let missing =
            || BackendError::NotFound(format!("Message not found in this channel: {after_id}"));
        let anchor: MmPost = match proxy
            .session()
            .json(rest::Call::get(format!("/posts/{after_id}")))
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
        Ok(Missed {
            anchor_at: anchor.create_at,
            posts: self.with_authors(&proxy, posts).await?,
        })
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
        let proxy = MattermostUserProxy::new(Arc::new(MattermostSession::resume(
            self.api.clone(),
            sealed.token.clone(),
            sealed.user(),
        )));
        match proxy
            .session()
            .json::<MmUser>(rest::Call::get("/users/me"))
            .await
        {
            Ok(me) => Ok(Some(self.login_for(&me, sealed.token))),
            Err(e) if e.is_status(401) => Ok(None),
            Err(e) => Err(mm_error(e)),
        }
    }
}
