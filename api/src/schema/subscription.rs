//! `onNewChatMessage`, split into the two runs that make fan-out cheap.
//!
//! - **Admission**, once per subscriber: checks the token and channel membership, tells the
//!   gateway which channel to join (through [`Admission`]), then replays what was posted after
//!   `afterMessageId`, and ends.
//! - **Delivery**, once per group of subscribers that asked for the same payload: turns each
//!   live event of the channel (from [`GroupFeed`]) into the payload, which the gateway
//!   serializes once and sends to every member.
//!
//! Without either (a subscription over HTTP) the field answers with an error that says where
//! subscriptions are served.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_graphql::{Context, Subscription};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use mmsub_events::MessageEvent;

use super::types::{MessageQueryType, OnNewChatMessage};
use super::{graphql_error, require_user, state};
use crate::backend::BackendError;

/// The subscription root of the schema.
pub struct SubscriptionRoot;

/// The names the WebSocket node plans subscriptions by, defined next to the resolver that
/// gives them meaning (a test checks them against the schema's SDL).
pub mod contract {
    /// The one subscription field; its live payload is shared by subscribers who select the
    /// same fields (subscription groups).
    pub const ROOT_FIELD: &str = "onNewChatMessage";
    /// The argument naming the channel.
    pub const CHANNEL_ARGUMENT: &str = "channelIdentifier";
    /// The argument that asks for a replay first: it shapes the subscriber's own replay,
    /// never the live payload, so subscribers that differ only in it share a group.
    pub const RESUME_ARGUMENT: &str = "afterMessageId";
}

/// The WebSocket node's side of a subscriber's admission run, given as request data
/// (`Arc<dyn Admission>`). The resolver calls [`Admission::join`] once the subscriber was found
/// a member, awaits it before it reads history (so nothing posted in between is missed: in a
/// cluster it resolves once the relays forward the channel to this node), then, for a resume,
/// reports what the subscriber holds with [`Admission::resumed`], so that live events it
/// already has are skipped.
pub trait Admission: Send + Sync {
    /// Joins the subscriber to `channel_id`'s live events; `Err` says why it cannot.
    fn join(&self, channel_id: &str) -> BoxFuture<'static, Result<(), String>>;
    /// The subscriber resumed: what it holds once the admission run's replay is sent.
    fn resumed(&self, resume: Resume);
}

/// What a resuming subscriber holds once its replay is sent: its anchor (`afterMessageId`),
/// every post before the anchor, and the replay. A live event of one of those can still
/// arrive: a post is committed before it is published, so the replay may have read it, and a
/// relay catching a gateway up re-sends records older than any subscriber's anchor.
#[derive(Debug, Clone)]
pub struct Resume {
    anchor_id: String,
    anchor_at: i64,
    replayed: HashSet<String>,
}

impl Resume {
    /// The resume from the post `anchor_id`, posted at `anchor_at`, that replayed `replayed`.
    pub fn new(
        anchor_id: String,
        anchor_at: i64,
        replayed: impl IntoIterator<Item = String>,
    ) -> Self {
        Self {
            anchor_id,
            anchor_at,
            replayed: replayed.into_iter().collect(),
        }
    }

    /// Whether the subscriber already holds the post `id`, posted at `create_at`: the anchor,
    /// one posted before it, or one the replay sent. "Before" is by `create_at`, the order the
    /// replay reads in (Mattermost's `after`): a post of the anchor's millisecond that is not
    /// the anchor is not replayed, so it is not held either.
    pub fn holds(&self, id: &str, create_at: i64) -> bool {
        create_at < self.anchor_at || id == self.anchor_id || self.replayed.contains(id)
    }
}

/// Request data of a group's delivery run: the live events of the group's channel. Only the
/// gateway creates one, after every member passed admission.
pub struct GroupFeed(Mutex<Option<BoxStream<'static, Arc<MessageEvent>>>>);

impl GroupFeed {
    /// A feed of `events`, taken once by the delivery run.
    pub fn new(events: impl futures::Stream<Item = Arc<MessageEvent>> + Send + 'static) -> Self {
        Self(Mutex::new(Some(events.boxed())))
    }

    fn take(&self) -> Option<BoxStream<'static, Arc<MessageEvent>>> {
        self.0.lock().expect("feed lock poisoned").take()
    }
}

#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// Every message posted to the channel from now on, in order. Members only.
    /// With `afterMessageId` (added), first the messages posted after that one, so a client
    /// that lost its connection resumes without a gap.
    async fn on_new_chat_message(
        &self,
        ctx: &Context<'_>,
        channel_identifier: String,
        after_message_id: Option<String>,
        // `Option` items: the contract declares the field nullable.
    ) -> async_graphql::Result<BoxStream<'static, Option<OnNewChatMessage>>> {
        let app = state(ctx);
        let tz = app.settings.time_zone;
        let echoed = channel_identifier.clone();
        let payload = move |message: MessageQueryType| {
            Some(OnNewChatMessage {
                channel_identifier: Some(echoed.clone()),
                message: Some(message),
            })
        };
        if let Some(feed) = ctx.data_opt::<GroupFeed>() {
            let events = feed
                .take()
                .ok_or_else(|| async_graphql::Error::new("a group feed is used once"))?;
            return Ok(events
                .map(move |event| payload(MessageQueryType::from_event(&event.post, tz)))
                .boxed());
        }
        let actor = require_user(ctx)?;
        let admission = ctx.data_opt::<Arc<dyn Admission>>().ok_or_else(|| {
            async_graphql::Error::new("Subscriptions are served over WebSocket at /ws/graphql/")
        })?;
        let channel = app
            .backend
            .member_channel(actor, &channel_identifier)
            .await
            .map_err(graphql_error)?;
        admission
            .join(&channel.id)
            .await
            .map_err(|reason| graphql_error(BackendError::Unavailable(reason)))?;
        let Some(after) = after_message_id else {
            return Ok(stream::empty().boxed());
        };
        let limit = app.settings.max_resume_messages;
        let max_bytes = app.settings.max_resume_bytes;
        let missed = app
            .backend
            .messages_after(actor, &channel.id, &after, limit.saturating_add(1), max_bytes)
            .await
            .map_err(|e| match e {
                BackendError::TooLarge(_) => graphql_error(BackendError::Invalid(format!(
                    "The messages posted after {after} are more than {max_bytes} bytes (MMSUB_MAX_RESUME_BYTES): read them with getMessageList, then resume from the newest."
                ))),
                e => graphql_error(e),
            })?;
        if missed.posts.len() > limit as usize {
            return Err(graphql_error(BackendError::Invalid(format!(
                "More than {limit} messages were posted after {after}: read them with getMessageList, then resume from the newest."
            ))));
        }
        admission.resumed(Resume::new(
            after,
            missed.anchor_at,
            missed.posts.iter().map(|p| p.id.clone()),
        ));
        let history = missed
            .posts
            .into_iter()
            .map(move |p| payload(MessageQueryType::from_post(p, tz)))
            .collect::<Vec<_>>();
        Ok(stream::iter(history).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::Resume;

    #[test]
    fn a_resume_holds_its_anchor_what_came_before_and_its_replay_only() {
        let resume = Resume::new("anchor".into(), 1_000, ["r1".to_owned(), "r2".to_owned()]);
        // The anchor, older posts (a catch-up re-sends them), and the replay: held.
        assert!(resume.holds("anchor", 1_000));
        assert!(resume.holds("older", 999));
        assert!(resume.holds("r1", 1_001));
        assert!(resume.holds("r2", 1_002));
        // Posted after the anchor and not replayed: new to the subscriber.
        assert!(!resume.holds("new", 1_003));
        // The anchor's millisecond but not the anchor: the replay (posts after it) skips
        // such a post, so the subscriber may not have it; it is sent.
        assert!(!resume.holds("same-ms", 1_000));
    }
}
