//! The tier's shared state: the store once connected, the live ingest epoch, the channels
//! whose writes failed, and one fill lock per channel.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use mmsub_api::backend::Post;
use mmsub_metrics::Metrics;

use crate::config::HistoryConfig;
use crate::error::HistoryError;
use crate::store::{Coverage, HistoryStore, RECONNECT_EVERY};

/// The ingest's heartbeat period; a heartbeat older than three of them makes every channel cold.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// How long the current epoch is reused before it is read again.
const EPOCH_CACHE: Duration = Duration::from_secs(1);

/// The store, once connected: nodes start while ScyllaDB is unreachable and use it once it
/// answers.
#[derive(Debug, Default)]
pub struct History {
    store: RwLock<Option<Arc<HistoryStore>>>,
    epoch: Mutex<Option<(Instant, Option<String>)>>,
    /// Channels whose writes failed: their coverage is cleared before the store is used for them.
    dirty: Mutex<HashSet<String>>,
    fills: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The node's metrics: the store's queries, and where reads were served from.
    metrics: Arc<Metrics>,
}

impl History {
    /// Starts connecting in the background, retrying until ScyllaDB answers.
    /// Its queries and reads are counted in `metrics`.
    pub fn start(config: HistoryConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        let history = Arc::new(History {
            metrics,
            ..History::default()
        });
        let connecting = history.clone();
        tokio::spawn(async move {
            loop {
                match HistoryStore::connect(&config).await {
                    Ok(store) => {
                        let store = store.counted(connecting.metrics.clone());
                        tracing::info!(nodes = ?config.nodes, keyspace = %config.keyspace, "history store connected");
                        *connecting
                            .store
                            .write()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Some(Arc::new(store));
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "history store unreachable; reads go to Mattermost meanwhile");
                        tokio::time::sleep(RECONNECT_EVERY).await;
                    }
                }
            }
        });
        history
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The store, if connected.
    pub fn store(&self) -> Option<Arc<HistoryStore>> {
        self.store
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The ingest epoch that is live now, if any (cached for a second).
    pub(crate) async fn live_epoch(
        &self,
        store: &HistoryStore,
    ) -> Result<Option<String>, HistoryError> {
        if let Some((at, epoch)) = self
            .epoch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
        {
            if at.elapsed() < EPOCH_CACHE {
                return Ok(epoch);
            }
        }
        let stale = i64::try_from((HEARTBEAT_EVERY * 3).as_millis()).unwrap_or(i64::MAX);
        let epoch = store
            .epoch()
            .await?
            .filter(|e| !e.id.is_empty() && crate::now_ms() - e.heartbeat_at < stale)
            .map(|e| e.id);
        *self
            .epoch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((Instant::now(), epoch.clone()));
        Ok(epoch)
    }

    /// The channel's coverage, if it is warm now: its epoch is live and no write was missed.
    pub(crate) async fn warm(
        &self,
        store: &HistoryStore,
        channel_id: &str,
    ) -> Result<Option<Coverage>, HistoryError> {
        let dirty = self
            .dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(channel_id);
        if dirty {
            store.clear_coverage(channel_id).await?;
            self.dirty
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(channel_id);
            return Ok(None);
        }
        let Some(epoch) = self.live_epoch(store).await? else {
            return Ok(None);
        };
        Ok(store
            .coverage(channel_id)
            .await?
            .filter(|c| c.epoch == epoch))
    }

    pub(crate) fn fill_lock(&self, channel_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut fills = self
            .fills
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if fills.len() > 10_000 {
            fills.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        fills.entry(channel_id.to_string()).or_default().clone()
    }

    pub(crate) fn mark_dirty(&self, channel_id: &str) {
        self.dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(channel_id.to_string());
    }

    /// Writes a post, marking its channel when the write fails.
    pub(crate) async fn remember(&self, post: &Post) {
        let Some(store) = self.store() else {
            self.mark_dirty(&post.channel_id);
            return;
        };
        if let Err(e) = timed(store.config(), store.write_post(post)).await {
            tracing::warn!(error = %e, channel = %post.channel_id, "a post could not be cached; the channel goes cold");
            self.mark_dirty(&post.channel_id);
        }
    }
}

/// A store call bounded by the request timeout.
pub(crate) async fn timed<T>(
    config: &HistoryConfig,
    call: impl std::future::Future<Output = Result<T, HistoryError>>,
) -> Result<T, HistoryError> {
    tokio::time::timeout(config.request_timeout, call)
        .await
        .unwrap_or_else(|_| {
            Err(HistoryError(format!(
                "no answer within {:?}",
                config.request_timeout
            )))
        })
}
