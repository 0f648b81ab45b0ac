//! [`IngestHistory`]: what the Mattermost ingest hears, into the store.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use mmsub_api::backend::mattermost::ingest::Observer;
use mmsub_api::backend::{ChannelPost, Post};

use crate::tier::{timed, History, HEARTBEAT_EVERY};

/// How often the heartbeat looks for the store before it is connected.
const STORE_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// The history tier's view of the ingest: an epoch per connection, a heartbeat while it
/// lasts, and every post, edit and deletion written to the store.
pub struct IngestHistory {
    history: Arc<History>,
    heartbeat: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl IngestHistory {
    /// Observes for `history`.
    pub fn new(history: Arc<History>) -> Self {
        IngestHistory {
            history,
            heartbeat: Mutex::new(None),
        }
    }

    fn stop_heartbeat(&self) {
        if let Some(task) = self
            .heartbeat
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl Drop for IngestHistory {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}

#[async_trait]
impl Observer for IngestHistory {
    async fn connected(&self) {
        self.stop_heartbeat();
        let epoch = format!("{:032x}", rand::random::<u128>());
        let history = self.history.clone();
        // The heartbeat announces the epoch as soon as the store answers, then keeps it alive.
        let task = tokio::spawn(async move {
            loop {
                let Some(store) = history.store() else {
                    // Not connected yet: announce the epoch as soon as it is, not a beat later.
                    tokio::time::sleep(STORE_POLL).await;
                    continue;
                };
                if let Err(e) = timed(store.config(), store.set_epoch(&epoch)).await {
                    tracing::warn!(error = %e, "the ingest's heartbeat could not be written");
                }
                tokio::time::sleep(HEARTBEAT_EVERY).await;
            }
        });
        *self
            .heartbeat
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
    }

    async fn disconnected(&self) {
        self.stop_heartbeat();
        if let Some(store) = self.history.store() {
            if let Err(e) = timed(store.config(), store.set_epoch("")).await {
                tracing::warn!(error = %e, "the ingest's end could not be recorded; channels go cold when its heartbeat is stale");
            }
        }
    }

    async fn posted(&self, post: &ChannelPost) {
        self.history.remember(&post.post).await;
    }

    async fn edited(&self, post: &Post, edited_at: i64) {
        let Some(store) = self.history.store() else {
            self.history.mark_dirty(&post.channel_id);
            return;
        };
        if let Err(e) = timed(store.config(), store.edit_post(post, edited_at)).await {
            tracing::warn!(error = %e, "an edit could not be cached; the channel goes cold");
            self.history.mark_dirty(&post.channel_id);
        }
    }

    async fn deleted(&self, channel_id: &str, post_id: &str, create_at: i64, deleted_at: i64) {
        let Some(store) = self.history.store() else {
            self.history.mark_dirty(channel_id);
            return;
        };
        if let Err(e) = timed(
            store.config(),
            store.delete_post(channel_id, post_id, create_at, deleted_at),
        )
        .await
        {
            tracing::warn!(error = %e, "a deletion could not be cached; the channel goes cold");
            self.history.mark_dirty(channel_id);
        }
    }
}
