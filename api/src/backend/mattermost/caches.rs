//! The backend's short-lived caches, each bounded ([`CACHE_LIMIT`]): message authors by user
//! id (for `user_cache_ttl`), each channel's newest post (while its `last_post_at` holds), and
//! `userList`'s total count (for `user_count_ttl`).

use std::collections::HashMap;
use std::time::Instant;

use super::model::{MmChannel, MmPost, MmUser};
use super::{mm_error, MattermostBackend, MattermostUserProxy};
use crate::backend::{BackendResult, Post, User};

/// Above this many cached users or channels the cache starts over.
const CACHE_LIMIT: usize = 100_000;

impl MattermostBackend {
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
    pub(super) fn remember_user(&self, user: &MmUser) -> User {
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
    pub(super) async fn last_posts(
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

    pub(super) async fn user_count(&self, proxy: &MattermostUserProxy) -> BackendResult<u64> {
        if let Some((at, count)) = *self.user_count.lock().expect("count cache poisoned") {
            if at.elapsed() < self.config.user_count_ttl {
                return Ok(count);
            }
        }
        let count = proxy.user_count().await.map_err(mm_error)?;
        *self.user_count.lock().expect("count cache poisoned") = Some((Instant::now(), count));
        Ok(count)
    }
}
