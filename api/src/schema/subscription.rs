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

use std::sync::{Arc, Mutex};

use async_graphql::{Context, Subscription};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use mmsub_events::MessageEvent;

use super::types::{MessageQueryType, OnNewChatMessage};
use super::{graphql_error, require_user, state};
use crate::backend::BackendError;

pub struct SubscriptionRoot;

/// Joins the channel's group; resolves once the channel's new events will reach it.
type JoinChannel = Box<dyn FnOnce(&str) -> BoxFuture<'static, Result<(), String>> + Send>;

/// Request data of a subscriber's admission run: where to report the channel to join and the
/// messages replayed, so the gateway can skip live events the replay already sent.
pub struct Admission {
    join: Mutex<Option<JoinChannel>>,
    replayed: Mutex<Vec<String>>,
}

impl Admission {
    /// `join` is called once, with the channel id, after the subscriber was found to be a
    /// member; its future is awaited before history is read, so nothing posted in between is
    /// missed (in a cluster it resolves once the relays forward the channel to this node).
    pub fn new(
        join: impl FnOnce(&str) -> BoxFuture<'static, Result<(), String>> + Send + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            join: Mutex::new(Some(Box::new(join))),
            replayed: Mutex::new(Vec::new()),
        })
    }

    /// Ids of the messages the admission run replayed.
    pub fn take_replayed(&self) -> Vec<String> {
        std::mem::take(&mut self.replayed.lock().expect("admission lock poisoned"))
    }

    async fn join(&self, channel_id: &str) -> Result<(), String> {
        let join = self.join.lock().expect("admission lock poisoned").take();
        match join {
            Some(join) => join(channel_id).await,
            None => Ok(()),
        }
    }
}

/// Request data of a group's delivery run: the live events of the group's channel. Only the
/// gateway creates one, after every member passed admission.
pub struct GroupFeed(Mutex<Option<BoxStream<'static, Arc<MessageEvent>>>>);

impl GroupFeed {
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
        let admission = ctx.data_opt::<Arc<Admission>>().ok_or_else(|| {
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
        if missed.len() > limit as usize {
            return Err(graphql_error(BackendError::Invalid(format!(
                "More than {limit} messages were posted after {after}: read them with getMessageList, then resume from the newest."
            ))));
        }
        *admission.replayed.lock().expect("admission lock poisoned") =
            missed.iter().map(|p| p.id.clone()).collect();
        let history = missed
            .into_iter()
            .map(move |p| payload(MessageQueryType::from_post(p, tz)))
            .collect::<Vec<_>>();
        Ok(stream::iter(history).boxed())
    }
}
