use std::collections::HashSet;
use std::sync::Arc;

use async_graphql::{Context, Subscription};
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use mmsub_relay::SendBudget;

use super::types::{MessageQueryType, OnNewChatMessage};
use super::{graphql_error, require_user, state};
use crate::backend::BackendError;

pub struct SubscriptionRoot;

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
        let actor = require_user(ctx)?;
        let app = state(ctx);
        let budget = ctx.data_opt::<Arc<SendBudget>>().ok_or_else(|| {
            async_graphql::Error::new("Subscriptions are served over WebSocket at /ws/graphql/")
        })?;
        let channel = app
            .backend
            .member_channel(actor, &channel_identifier)
            .await
            .map_err(graphql_error)?;
        // Listen before reading history, so nothing posted in between is missed.
        let live = app.hub.subscribe(&channel.id, budget.clone());
        let missed = match after_message_id {
            None => Vec::new(),
            Some(after) => {
                let limit = app.settings.max_resume_messages;
                let missed = app
                    .backend
                    .messages_after(actor, &channel.id, &after, limit.saturating_add(1))
                    .await
                    .map_err(graphql_error)?;
                if missed.len() > limit as usize {
                    return Err(graphql_error(BackendError::Invalid(format!(
                        "More than {limit} messages were posted after {after}: read them with getMessageList, then resume from the newest."
                    ))));
                }
                missed
            }
        };
        let tz = app.settings.time_zone;
        let payload = move |message: MessageQueryType| {
            Some(OnNewChatMessage {
                channel_identifier: Some(channel_identifier.clone()),
                message: Some(message),
            })
        };
        // A live event may also be in the replay (posted while history was read): skip those
        // until the first event newer than the replay; after it, none can repeat.
        let mut replayed: Option<HashSet<String>> =
            (!missed.is_empty()).then(|| missed.iter().map(|p| p.id.clone()).collect());
        let history = missed
            .into_iter()
            .map(move |p| MessageQueryType::from_post(p, tz))
            .collect::<Vec<_>>();
        let live = live.filter_map(move |event| {
            let repeat = match &replayed {
                Some(ids) if ids.contains(&event.post.id) => true,
                Some(_) => {
                    replayed = None;
                    false
                }
                None => false,
            };
            std::future::ready((!repeat).then(|| MessageQueryType::from_event(&event.post, tz)))
        });
        Ok(stream::iter(history).chain(live).map(payload).boxed())
    }
}
