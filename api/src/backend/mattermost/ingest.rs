//! The ingest: posts made in Mattermost itself (its web app, bots, integrations) become bus
//! events, so GraphQL subscribers see them as they see posts sent through this server.
//!
//! It holds Mattermost's WebSocket (`/api/v4/websocket`) as the admin account: the
//! authentication challenge, `hello`, then `posted` events, whose `data.post` is a JSON string.
//! Mattermost only sends a user the events of channels they are in, so the backend adds the
//! admin account to every channel it creates; channels made elsewhere need the admin added.
//!
//! When the socket drops it reconnects with exponential backoff, and after each reconnect
//! catches up with `GET /channels/{id}/posts?since=…` for the channels that have subscribers,
//! from the newest post it had seen (less an overlap for clock skew). Anything published twice
//! (the overlap, or a post this server sent and then saw on the socket) is dropped by the hub
//! by post id, so each subscriber gets each post once.
//!
//! An [`Observer`] (the history tier) hears what the ingest hears: when it is connected and
//! caught up, every post, and the `post_edited` / `post_deleted` events that change history.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use mmsub_events::Bus;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::model::MmPost;
use super::MattermostBackend;
use crate::backend::{Channel, ChannelPost};

/// Reconnect and catch-up behaviour; each has a flag in the `mmsub` binary.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// First wait before reconnecting to Mattermost's WebSocket.
    pub reconnect_min: Duration,
    /// Longest wait between reconnect attempts (the wait doubles up to it).
    pub reconnect_max: Duration,
    /// Catch-up starts this long before the newest post seen (clock skew, in-flight posts).
    pub catch_up_overlap: Duration,
    /// Time allowed for the connect, the authentication reply and `hello`.
    pub handshake_timeout: Duration,
    /// A ping goes out after this long without a frame; no answer within as long again ends
    /// the connection.
    pub idle_timeout: Duration,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(30),
            catch_up_overlap: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// What hears the ingest's events besides the bus: the history tier keeps its cache with
/// them, and counts a channel's cache as complete only while the ingest is connected.
#[async_trait::async_trait]
pub trait Observer: Send + Sync {
    /// The socket is up and the catch-up after it is done: from now on every event is heard.
    async fn connected(&self);
    /// The socket is down: events may be missed until the next [`Observer::connected`].
    async fn disconnected(&self);
    /// A post was made (also each post of a catch-up).
    async fn posted(&self, post: &ChannelPost);
    /// A post's text changed at `edited_at` (ms).
    async fn edited(&self, post: &crate::backend::Post, edited_at: i64);
    /// A post was deleted at `deleted_at` (ms).
    async fn deleted(&self, channel_id: &str, post_id: &str, create_at: i64, deleted_at: i64);
}

/// Which channels to catch up after a reconnect.
#[derive(Clone)]
pub enum CatchUp {
    /// Those with subscribers on this node (`mmsub serve`: the ingest shares the hub).
    Watched(Arc<dyn Fn() -> Vec<String> + Send + Sync>),
    /// Every channel of the team the admin account is in whose newest post is newer than the
    /// catch-up point (`mmsub ingest`, which cannot see the gateways' subscribers): one
    /// channel list, then one request per channel that changed.
    ChangedChannels,
}

#[derive(Debug, Deserialize)]
struct SocketEvent {
    #[serde(default)]
    event: String,
    #[serde(default)]
    data: Value,
}

/// Runs until `shutdown`.
pub async fn run(
    backend: Arc<MattermostBackend>,
    bus: Arc<dyn Bus>,
    catch_up: CatchUp,
    settings: IngestSettings,
    observer: Option<Arc<dyn Observer>>,
    shutdown: CancellationToken,
) {
    let mut ingest = Ingest {
        backend,
        bus,
        catch_up_scope: catch_up,
        settings,
        newest_seen: None,
        observer,
    };
    let mut backoff = ingest.settings.reconnect_min;
    loop {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = ingest.connection() => outcome,
        };
        if let Some(observer) = &ingest.observer {
            observer.disconnected().await;
        }
        match outcome {
            Ok(()) => {
                tracing::warn!("Mattermost WebSocket closed; reconnecting");
                backoff = ingest.settings.reconnect_min;
            }
            Err(e) => {
                tracing::warn!(error = %e, ?backoff, "Mattermost WebSocket failed; reconnecting");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(ingest.settings.reconnect_max);
    }
}

struct Ingest {
    backend: Arc<MattermostBackend>,
    bus: Arc<dyn Bus>,
    catch_up_scope: CatchUp,
    settings: IngestSettings,
    /// `create_at` of the newest post seen (Mattermost's clock); `None` before the first hello.
    newest_seen: Option<i64>,
    observer: Option<Arc<dyn Observer>>,
}

impl Ingest {
    /// One connection: handshake, catch-up if this is a reconnect, then live events until the
    /// socket ends (`Ok`) or fails (`Err`).
    async fn connection(&mut self) -> anyhow::Result<()> {
        let url = self.backend.rest().websocket_url();
        let timeout = self.settings.handshake_timeout;
        let (mut socket, _) = tokio::time::timeout(timeout, tokio_tungstenite::connect_async(&url))
            .await
            .map_err(|_| anyhow::anyhow!("connecting took longer than {timeout:?}"))??;
        // Renews the admin session first if it expired (the proxy logs in again on 401).
        let admin = self.backend.admin();
        admin
            .session()
            .json::<Value>(super::rest::Call::get("/users/me"))
            .await?;
        let challenge = json!({
            "seq": 1,
            "action": "authentication_challenge",
            "data": { "token": admin.session().token() },
        });
        socket.send(Message::text(challenge.to_string())).await?;
        tokio::time::timeout(timeout, async {
            while let Some(frame) = socket.next().await {
                if let Message::Text(text) = frame? {
                    let value: Value = serde_json::from_str(&text).unwrap_or_default();
                    if value["status"] == "FAIL" {
                        anyhow::bail!("Mattermost refused the WebSocket authentication");
                    }
                    if value["event"] == "hello" {
                        return Ok(());
                    }
                }
            }
            anyhow::bail!("the WebSocket closed before hello")
        })
        .await
        .map_err(|_| anyhow::anyhow!("no hello within {timeout:?}"))??;
        tracing::info!("Mattermost WebSocket connected");
        match self.newest_seen {
            Some(newest) => self.catch_up(newest).await?,
            None => self.newest_seen = Some(crate::clock::unix_millis()),
        }
        if let Some(observer) = &self.observer {
            observer.connected().await;
        }
        let idle = self.settings.idle_timeout;
        let mut pinged = false;
        loop {
            let frame = match tokio::time::timeout(idle, socket.next()).await {
                Err(_) if pinged => anyhow::bail!("no answer to a ping within {idle:?}"),
                Err(_) => {
                    socket.send(Message::Ping(Vec::new().into())).await?;
                    pinged = true;
                    continue;
                }
                Ok(None) => return Ok(()),
                Ok(Some(frame)) => frame?,
            };
            pinged = false;
            let Message::Text(text) = frame else { continue };
            let Ok(event) = serde_json::from_str::<SocketEvent>(&text) else {
                continue;
            };
            match event.event.as_str() {
                "posted" => self.posted(&event.data).await,
                "post_edited" | "post_deleted" => self.changed(&event.event, &event.data).await,
                _ => {}
            }
        }
    }

    async fn posted(&mut self, data: &Value) {
        let Some(post) = data["post"]
            .as_str()
            .and_then(|p| serde_json::from_str::<MmPost>(p).ok())
        else {
            tracing::warn!("a posted event without a readable post was skipped");
            return;
        };
        let channel = Channel {
            id: post.channel_id.clone(),
            name: data["channel_name"].as_str().unwrap_or_default().to_owned(),
            display_name: data["channel_display_name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        };
        if let Err(e) = self.publish(channel, vec![post]).await {
            tracing::warn!(error = %e, "a Mattermost post could not be published");
        }
    }

    /// `post_edited` / `post_deleted`: history changes (subscribers are not told: the
    /// contract has no edit or delete event).
    async fn changed(&mut self, kind: &str, data: &Value) {
        let Some(observer) = self.observer.clone() else {
            return;
        };
        let Some(post) = data["post"]
            .as_str()
            .and_then(|p| serde_json::from_str::<MmPost>(p).ok())
        else {
            tracing::warn!(kind, "an event without a readable post was skipped");
            return;
        };
        if kind == "post_deleted" {
            let at = if post.delete_at > 0 {
                post.delete_at
            } else {
                post.update_at
            };
            observer
                .deleted(
                    &post.channel_id,
                    &post.id,
                    post.create_at,
                    at.max(post.create_at),
                )
                .await;
            return;
        }
        let admin: &super::MattermostUserProxy = self.backend.admin();
        match self.backend.with_authors(admin, vec![post.clone()]).await {
            Ok(posts) => {
                for edited in posts {
                    observer
                        .edited(&edited, post.update_at.max(post.create_at))
                        .await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "an edited post's author could not be read"),
        }
    }

    async fn publish(&mut self, channel: Channel, posts: Vec<MmPost>) -> anyhow::Result<()> {
        let admin: &super::MattermostUserProxy = self.backend.admin();
        let posts = self.backend.with_authors(admin, posts).await?;
        for post in posts {
            self.newest_seen = Some(self.newest_seen.unwrap_or(0).max(post.create_at));
            let made = ChannelPost {
                channel: channel.clone(),
                post,
            };
            if let Some(observer) = &self.observer {
                observer.posted(&made).await;
            }
            self.bus.publish(made.to_event()).await?;
        }
        Ok(())
    }

    /// After a reconnect: every post since `newest` (less the overlap) of each channel in scope.
    async fn catch_up(&mut self, newest: i64) -> anyhow::Result<()> {
        let since = newest - self.settings.catch_up_overlap.as_millis() as i64;
        let channels = match &self.catch_up_scope {
            CatchUp::Watched(watched) => watched(),
            CatchUp::ChangedChannels => self
                .backend
                .admin()
                .list_own_channels(&self.backend.team().id)
                .await?
                .into_iter()
                .filter(|c| c.last_post_at >= since)
                .map(|c| c.id)
                .collect(),
        };
        let mut caught = 0;
        for channel_id in channels {
            let admin = self.backend.admin();
            let channel = match admin.channel(&self.backend.team().id, &channel_id).await {
                Ok(c) => c,
                Err(e) if e.is_status(404) || e.is_status(403) => continue,
                Err(e) => return Err(e.into()),
            };
            let posts = admin.posts_since(&channel.id, since).await?.oldest_first();
            caught += posts.len();
            self.publish(channel.to_channel(), posts).await?;
        }
        tracing::info!(
            posts = caught,
            "caught up with Mattermost after reconnecting"
        );
        Ok(())
    }
}
