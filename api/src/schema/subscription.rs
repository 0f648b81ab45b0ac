use std::sync::Arc;

use async_graphql::{Context, Subscription};
use futures::{Stream, StreamExt};
use mmsub_relay::SendBudget;

use super::types::{MessageQueryType, OnNewChatMessage};
use super::{graphql_error, require_user, state};

pub struct SubscriptionRoot;

#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// Every message posted to the channel from now on, in order. Members only.
    async fn on_new_chat_message(
        &self,
        ctx: &Context<'_>,
        channel_identifier: String,
    ) -> async_graphql::Result<impl Stream<Item = Option<OnNewChatMessage>>> {
        // `Option`: the contract declares the field nullable.
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
        let tz = app.settings.time_zone;
        let live = app.hub.subscribe(&channel.id, budget.clone());
        Ok(live.map(move |event| {
            Some(OnNewChatMessage {
                channel_identifier: Some(channel_identifier.clone()),
                message: Some(MessageQueryType::from_event(&event.post, tz)),
            })
        }))
    }
}
