//! [`HistoryBackend`]: a [`ChatBackend`] that answers history from the store and everything
//! else from the backend it wraps (Mattermost).
//!
//! - **Warm or cold.** A channel's cache counts as complete back to its coverage record only
//!   while that record carries the current ingest epoch and the ingest's heartbeat is fresh:
//!   edits and deletions reach the cache through the ingest alone, so without it nothing
//!   cached can be trusted. A new epoch (the ingest reconnected, and may have missed events)
//!   makes every channel cold at once, with no per-channel write.
//! - **Reads.** Membership is checked with the wrapped backend on every read. A warm channel's
//!   pages inside its window, and resumes from a post inside it, come from the store; anything
//!   else goes to the wrapped backend, and what comes back fills the store and extends the
//!   window. Concurrent misses of one channel wait for one fill.
//! - **Writes.** A message sent through this node is written before the answer, so any node
//!   reads it next (read-your-writes). A write that fails marks the channel: its coverage is
//!   cleared before the store is trusted for it again.
//! - **Faults.** Any store error or timeout falls back to the wrapped backend and is logged;
//!   a user never sees an error because the cache is down.
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use mmsub_api::backend::{
    Actor, BackendError, BackendResult, ByteCount, Channel, ChannelPage, ChannelPost, ChatBackend,
    CreatedUser, Login, MessagePage, Missed, NewUser, PageRequest, Post, UserPage,
};
use mmsub_metrics::labels::HistoryRead;

use crate::error::HistoryError;
use crate::store::{Coverage, HistoryStore};

use crate::pages::{forget_deleted, page_of, rows_needed, Known, COLD_READS_AT_ONCE};
use crate::tier::{timed, History};

/// The chat backend with its history cached.
pub struct HistoryBackend {
    inner: Arc<dyn ChatBackend>,
    history: Arc<History>,
}

impl HistoryBackend {
    /// `inner` with history from `history`.
    pub fn new(inner: Arc<dyn ChatBackend>, history: Arc<History>) -> Self {
        HistoryBackend { inner, history }
    }

    /// A page from the store, if the channel is warm and the page inside its window.
    async fn cached_page(
        &self,
        store: &HistoryStore,
        channel_id: &str,
        page: PageRequest,
    ) -> Result<Option<MessagePage>, HistoryError> {
        let Some(coverage) = self.history.warm(store, channel_id).await? else {
            return Ok(None);
        };
        let floor = store.retention_floor(crate::now_ms());
        let beginning = coverage.beginning && coverage.from_at >= floor;
        let Some(need) = rows_needed(page) else {
            // A deep page: Mattermost skips to it by offset, the store would read every newer
            // row into memory first.
            return Ok(None);
        };
        let mut rows = store
            .newest(channel_id, None, coverage.from_at.max(floor), need)
            .await?;
        rows.retain(|p| {
            (p.create_at, p.id.as_str()) >= (coverage.from_at, coverage.from_id.as_str())
        });
        if rows.len() < need && !beginning {
            return Ok(None);
        }
        let older = rows.len() >= need;
        page_of(rows, page, older)
            .map(Some)
            .map_err(|e| HistoryError(e.to_string()))
    }

    /// After a newest page (`page.number` 0: every fill reads from the newest post) came from
    /// the wrapped backend: cache its posts and widen the window to its oldest.
    async fn fill(
        &self,
        store: &HistoryStore,
        channel_id: &str,
        epoch: &str,
        page: PageRequest,
        found: &MessagePage,
        known: &Known,
    ) -> Result<(), HistoryError> {
        debug_assert_eq!(page.number, 0, "fills read from the newest post");
        for post in &found.posts {
            store.write_post(post).await?;
        }
        forget_deleted(store, channel_id, page, found, known).await?;
        let now = crate::now_ms();
        let oldest = found.posts.first();
        let (from_at, from_id) =
            oldest.map_or((now, String::new()), |p| (p.create_at, p.id.clone()));
        let extended = Coverage {
            epoch: epoch.to_string(),
            from_at,
            from_id,
            beginning: !found.has_previous,
        };
        let current = store
            .coverage(channel_id)
            .await?
            .filter(|c| c.epoch == epoch);
        // The newest page reaches up to now: a window on its own, unless a wider one exists.
        if current.is_some_and(|c| (c.from_at, &c.from_id) <= (extended.from_at, &extended.from_id))
        {
            return Ok(());
        }
        store.set_coverage(channel_id, &extended).await
    }
}

#[async_trait]
impl ChatBackend for HistoryBackend {
    async fn create_user(&self, new: NewUser) -> BackendResult<CreatedUser> {
        self.inner.create_user(new).await
    }

    async fn authenticate(&self, username: &str, password: &str) -> BackendResult<Option<Login>> {
        self.inner.authenticate(username, password).await
    }

    async fn list_users(&self, actor: &Actor, page: PageRequest) -> BackendResult<UserPage> {
        self.inner.list_users(actor, page).await
    }

    async fn create_channel(
        &self,
        actor: &Actor,
        name: &str,
        members: &[String],
    ) -> BackendResult<Channel> {
        self.inner.create_channel(actor, name, members).await
    }

    /// The channels from the wrapped backend without their last messages; each last message
    /// from the store for a warm channel, and for a cold one read through the store (which
    /// fills it, so the next list is all warm). If the store fails, the wrapped backend's
    /// whole answer.
    async fn member_channels(
        &self,
        actor: &Actor,
        page: PageRequest,
    ) -> BackendResult<ChannelPage> {
        let counts = &self.history.metrics().history;
        let Some(store) = self.history.store() else {
            counts.fallback(HistoryRead::LastMessage);
            return self.inner.member_channels(actor, page).await;
        };
        let mut found = self.inner.member_channels_without_last(actor, page).await?;
        // Every channel of the page at once (a page is bounded): `Some(last)` for a warm
        // channel, `None` for one the store cannot answer for yet.
        let stored = timed(
            store.config(),
            futures::future::try_join_all(found.channels.iter().map(|summary| {
                let store = &store;
                async move {
                    let Some(coverage) = self.history.warm(store, &summary.channel.id).await?
                    else {
                        return Ok::<_, HistoryError>(None);
                    };
                    Ok(match store.last_post(&summary.channel.id).await? {
                        Some(last) => Some(Some(last)),
                        // No post stored: the channel has none only if the window reaches its
                        // start.
                        None if coverage.beginning => Some(None),
                        None => None,
                    })
                }
            })),
        )
        .await;
        let stored = match stored {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e, "history store failed; channel list from Mattermost");
                counts.fallback(HistoryRead::LastMessage);
                return self.inner.member_channels(actor, page).await;
            }
        };
        let warm = stored.iter().filter(|s| s.is_some()).count() as u64;
        counts.hits(HistoryRead::LastMessage, warm);
        counts.misses(HistoryRead::LastMessage, stored.len() as u64 - warm);
        let any_cold = stored.iter().any(Option::is_none);
        if any_cold
            && timed(store.config(), self.history.live_epoch(&store))
                .await
                .ok()
                .flatten()
                .is_none()
        {
            // No ingest keeps the store current: nothing can be filled, and the wrapped
            // backend answers a whole list in fewer requests than a read per channel.
            return self.inner.member_channels(actor, page).await;
        }
        // The cold ones: their newest post through the store's read path (which fills it), a
        // few at a time.
        let newest = PageRequest {
            number: 0,
            size: 1,
            max_bytes: page.max_bytes,
        };
        let cold: Vec<(usize, String)> = found
            .channels
            .iter()
            .enumerate()
            .filter(|(i, _)| stored[*i].is_none())
            .map(|(i, summary)| (i, summary.channel.id.clone()))
            .collect();
        let cold: Vec<(usize, BackendResult<MessagePage>)> = futures::stream::iter(cold)
            .map(|(i, id)| self.read_cold(actor, i, id, newest))
            .buffer_unordered(COLD_READS_AT_ONCE)
            .collect()
            .await;
        let mut lasts = stored;
        for (i, read) in cold {
            match read {
                Ok(mut newest) => lasts[i] = Some(newest.posts.pop()),
                // A channel gone between the list and the read, or Mattermost failing: the
                // wrapped backend's answer, as without the tier.
                Err(_) => return self.inner.member_channels(actor, page).await,
            }
        }
        for (summary, last) in found.channels.iter_mut().zip(lasts) {
            summary.last_message = last.flatten();
        }
        page.allow(found.content_bytes())?;
        Ok(found)
    }

    async fn member_channel(&self, actor: &Actor, identifier: &str) -> BackendResult<Channel> {
        self.inner.member_channel(actor, identifier).await
    }

    /// The wrapped backend's send, then the post into the store before the answer.
    async fn send_message(
        &self,
        actor: &Actor,
        identifier: &str,
        text: &str,
    ) -> BackendResult<ChannelPost> {
        let sent = self.inner.send_message(actor, identifier, text).await?;
        self.history.remember(&sent.post).await;
        Ok(sent)
    }

    /// From the store when the channel is warm and `after_id` inside its window.
    async fn messages_after(
        &self,
        actor: &Actor,
        identifier: &str,
        after_id: &str,
        limit: u32,
        max_bytes: u64,
    ) -> BackendResult<Missed> {
        let channel = self.inner.member_channel(actor, identifier).await?;
        let counts = &self.history.metrics().history;
        if let Some(store) = self.history.store() {
            let cached = timed(store.config(), async {
                let Some(coverage) = self.history.warm(&store, &channel.id).await? else {
                    return Ok(None);
                };
                let Some((channel_id, at)) = store.position(after_id).await? else {
                    return Ok(None);
                };
                let floor = store.retention_floor(crate::now_ms());
                if channel_id != channel.id
                    || (at, after_id) < (coverage.from_at, coverage.from_id.as_str())
                    || at < floor
                {
                    return Ok(None);
                }
                store
                    .after(&channel.id, at, after_id, limit as usize)
                    .await
                    .map(|posts| {
                        Some(Missed {
                            anchor_at: at,
                            posts,
                        })
                    })
            })
            .await;
            match cached {
                Ok(Some(missed)) => {
                    counts.hits(HistoryRead::Resume, 1);
                    ByteCount::new(max_bytes)
                        .add_all(missed.posts.iter().map(Post::content_bytes))?;
                    return Ok(missed);
                }
                Ok(None) => counts.misses(HistoryRead::Resume, 1),
                Err(e) => {
                    tracing::warn!(error = %e, channel = %channel.id, "history store failed; resuming from Mattermost");
                    counts.fallback(HistoryRead::Resume);
                }
            }
        } else {
            counts.fallback(HistoryRead::Resume);
        }
        self.inner
            .messages_after(actor, &channel.id, after_id, limit, max_bytes)
            .await
    }

    /// From the store when the page is inside a warm channel's window; otherwise from the
    /// wrapped backend, one fill per channel at a time, and the answer fills the store.
    async fn messages(
        &self,
        actor: &Actor,
        identifier: &str,
        page: PageRequest,
    ) -> BackendResult<MessagePage> {
        let channel = self.inner.member_channel(actor, identifier).await?;
        self.read_through(actor, &channel.id, page).await
    }

    async fn issue_refresh_token(&self, login: &Login, ttl: Duration) -> BackendResult<String> {
        self.inner.issue_refresh_token(login, ttl).await
    }

    async fn redeem_refresh_token(&self, token: &str) -> BackendResult<Option<Login>> {
        self.inner.redeem_refresh_token(token).await
    }
}

impl HistoryBackend {
    /// [`HistoryBackend::read_through`] of one cold channel of a list, tagged with its place.
    fn read_cold<'a>(
        &'a self,
        actor: &'a Actor,
        place: usize,
        channel_id: String,
        page: PageRequest,
    ) -> futures::future::BoxFuture<'a, (usize, BackendResult<MessagePage>)> {
        Box::pin(async move { (place, self.read_through(actor, &channel_id, page).await) })
    }

    /// A page of a channel the actor is a member of: from the store when it is inside a warm
    /// channel's window; otherwise from the wrapped backend, one fill per channel at a time,
    /// and the answer fills the store.
    async fn read_through(
        &self,
        actor: &Actor,
        channel_id: &str,
        page: PageRequest,
    ) -> BackendResult<MessagePage> {
        let counts = &self.history.metrics().history;
        let Some(store) = self.history.store() else {
            counts.fallback(HistoryRead::Page);
            return self.inner.messages(actor, channel_id, page).await;
        };
        // `Err` when the store failed: the read is then a fallback rather than a miss.
        let cached = || async {
            timed(store.config(), self.cached_page(&store, channel_id, page))
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, channel = %channel_id, "history store failed; reading Mattermost");
                })
        };
        let first = cached().await;
        if let Ok(Some(found)) = first {
            counts.hits(HistoryRead::Page, 1);
            return Ok(found);
        }
        let lock = self.history.fill_lock(channel_id);
        let _filling = lock.lock().await;
        let second = cached().await;
        if let Ok(Some(found)) = second {
            // Filled by the read that held the lock.
            counts.hits(HistoryRead::Page, 1);
            return Ok(found);
        }
        if first.is_err() || second.is_err() {
            counts.fallback(HistoryRead::Page);
        } else {
            counts.misses(HistoryRead::Page, 1);
        }
        // The epoch is read before the fetch: posts after this point reach the store through
        // the ingest under this epoch, so the fetched page and the ingest together are complete.
        let epoch = timed(store.config(), self.history.live_epoch(&store))
            .await
            .ok()
            .flatten();
        // A page deeper than a cached read may go is never served from the store, so it fills
        // nothing: reconciling it would scan every stored post newer than it.
        let (Some(epoch), Some(need)) = (epoch, rows_needed(page)) else {
            return self.inner.messages(actor, channel_id, page).await;
        };
        // An older page is read together with every newer post, as one page from the newest:
        // the window then grows from the newest post down with no gap, and the page is cut
        // from the fetch. It reads the rows a warm read of the page will need, one older
        // included.
        let fetch = match u32::try_from(need) {
            Ok(size) if page.number > 0 => PageRequest {
                number: 0,
                size,
                max_bytes: page.max_bytes,
            },
            _ => page,
        };
        // What the store holds before the fetch was committed in Mattermost before it (a post
        // is stored only after Mattermost answered its creation), so the fetch must show it
        // unless it was deleted. Without this record nothing can be reconciled: no fill.
        let known = match timed(store.config(), Known::read(&store, channel_id, fetch)).await {
            Ok(known) => Some(known),
            Err(e) => {
                tracing::warn!(error = %e, channel = %channel_id, "history store failed; reading Mattermost");
                None
            }
        };
        let found = match self.inner.messages(actor, channel_id, fetch).await {
            Ok(found) => found,
            // The newer posts do not fit the answer's budget: read the page alone, uncached.
            Err(BackendError::TooLarge(_)) if fetch.number != page.number => {
                return self.inner.messages(actor, channel_id, page).await;
            }
            Err(e) => return Err(e),
        };
        if let Some(known) = &known {
            if let Err(e) = timed(
                store.config(),
                self.fill(&store, channel_id, &epoch, fetch, &found, known),
            )
            .await
            {
                tracing::warn!(error = %e, channel = %channel_id, "history could not be cached");
            }
        }
        if fetch.number == page.number {
            return Ok(found);
        }
        let newest_first: Vec<Post> = found.posts.into_iter().rev().collect();
        let older = newest_first.len()
            > usize::try_from(page.offset() + u64::from(page.size)).unwrap_or(usize::MAX);
        page_of(newest_first, page, older)
    }
}
