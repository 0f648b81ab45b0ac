//! Pages cut from a channel's newest posts, and what a page fetched from Mattermost says about
//! the stored ones: the read path's arithmetic, apart from its I/O in `backend.rs`.

use std::collections::HashSet;

use mmsub_api::backend::{BackendError, ByteCount, MessagePage, PageRequest, Post};

use crate::error::HistoryError;
use crate::store::HistoryStore;

/// The newest rows a page needs: those before it, its own, and one more for `hasPrevious`;
/// `None` past [`MAX_CACHED_ROWS`].
pub(crate) fn rows_needed(page: PageRequest) -> Option<usize> {
    let offset = usize::try_from(page.offset()).unwrap_or(usize::MAX);
    let need = offset.saturating_add(page.size as usize).saturating_add(1);
    (need <= MAX_CACHED_ROWS).then_some(need)
}

/// A page cut from a channel's newest posts: `newest_first` holds every post from the newest
/// down to at least the page's oldest, and `older` says whether posts older than the page
/// exist.
pub(crate) fn page_of(
    newest_first: Vec<Post>,
    page: PageRequest,
    older: bool,
) -> Result<MessagePage, BackendError> {
    let offset = usize::try_from(page.offset()).unwrap_or(usize::MAX);
    let size = page.size as usize;
    let has_previous = older;
    let has_next = offset > 0 && !newest_first.is_empty();
    let mut posts: Vec<Post> = newest_first.into_iter().skip(offset).take(size).collect();
    posts.reverse();
    ByteCount::new(page.max_bytes).add_all(posts.iter().map(Post::content_bytes))?;
    Ok(MessagePage {
        posts,
        has_next,
        has_previous,
    })
}

/// The stored posts of a channel read just before a fetch from Mattermost: each was stored
/// after Mattermost had committed it, so the fetch must show it unless it was deleted. Posts
/// stored after this read may be ones Mattermost committed after answering, and are kept.
#[derive(Debug, Default)]
pub(crate) struct Known {
    ids: HashSet<String>,
    /// When the read was cut short by its limit: the oldest post it holds. Posts older than it
    /// were stored long before the fetch (a post in flight is among the newest).
    floor: Option<(i64, String)>,
}

impl Known {
    /// Reads the newest posts stored for `channel_id`: as many as `fetch` covers and a margin.
    pub(crate) async fn read(
        store: &HistoryStore,
        channel_id: &str,
        fetch: PageRequest,
    ) -> Result<Self, HistoryError> {
        let limit = usize::try_from(fetch.offset() + u64::from(fetch.size))
            .unwrap_or(usize::MAX)
            .saturating_add(KNOWN_MARGIN);
        let floor = store.retention_floor(crate::now_ms());
        let stored = store.newest(channel_id, None, floor, limit).await?;
        let floor = (stored.len() >= limit)
            .then(|| stored.last().map(|p| (p.create_at, p.id.clone())))
            .flatten();
        Ok(Known {
            ids: stored.into_iter().map(|p| p.id).collect(),
            floor,
        })
    }

    /// Whether `post` was stored before the fetch.
    fn settled(&self, post: &Post) -> bool {
        self.ids.contains(&post.id)
            || self
                .floor
                .as_ref()
                .is_some_and(|(at, id)| (post.create_at, post.id.as_str()) < (*at, id.as_str()))
    }
}

/// Stored posts beyond a fetch's own that [`Known::read`] takes in.
const KNOWN_MARGIN: usize = 64;

/// Posts can be stored that Mattermost no longer has: deleted while no ingest heard it. A page
/// Mattermost answered is the truth for what it covers, so stored posts it lacks are deleted if
/// they were stored before the fetch ([`Known`]): those between its oldest and newest post, and,
/// on the newest page, those newer than its newest.
pub(crate) async fn forget_deleted(
    store: &HistoryStore,
    channel_id: &str,
    page: PageRequest,
    found: &MessagePage,
    known: &Known,
) -> Result<(), HistoryError> {
    let kept: HashSet<&str> = found.posts.iter().map(|p| p.id.as_str()).collect();
    let oldest = found.posts.first().map(|p| (p.create_at, p.id.clone()));
    let newest = found.posts.last().map(|p| (p.create_at, p.id.clone()));
    let floor = match (&oldest, found.has_previous) {
        (Some((at, _)), _) => *at,
        // An empty newest page with nothing older: the channel has no posts at all.
        (None, false) if page.number == 0 => i64::MIN,
        (None, _) => return Ok(()),
    };
    let floor = floor.max(store.retention_floor(crate::now_ms()));
    let limit = page.size as usize + KNOWN_MARGIN;
    let mut before: Option<(i64, String)> = None;
    loop {
        let stored = store
            .newest(
                channel_id,
                before.as_ref().map(|(at, id)| (*at, id.as_str())),
                floor,
                limit,
            )
            .await?;
        for post in &stored {
            if kept.contains(post.id.as_str()) || !known.settled(post) {
                continue;
            }
            let position = (post.create_at, post.id.clone());
            let inside = oldest.as_ref().is_some_and(|o| &position >= o)
                && newest.as_ref().is_some_and(|n| &position <= n);
            let above = page.number == 0 && newest.as_ref().is_none_or(|n| &position > n);
            if inside || above {
                store
                    .delete_post(channel_id, &post.id, post.create_at, crate::now_ms())
                    .await?;
            }
        }
        match stored.last() {
            Some(last) if stored.len() == limit => before = Some((last.create_at, last.id.clone())),
            _ => return Ok(()),
        }
    }
}

/// The most rows a cached page may read (its offset plus its size): deeper pages go to
/// Mattermost, so no request makes the node hold a channel's whole history.
pub(crate) const MAX_CACHED_ROWS: usize = 2_001;

/// Cold channels of one `channelList` page read through the store at once.
pub(crate) const COLD_READS_AT_ONCE: usize = 8;
