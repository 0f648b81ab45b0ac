use async_graphql::{Context, Object};

use super::types::{
    ChannelListType, ChannelQueryType, MessageListType, MessageQueryType, PageType, UserListType,
};
use super::{require_user, state, within_budget};
use crate::backend::{ChannelPage, MessagePage, PageRequest, UserPage};

/// The query root of the schema.
pub struct QueryRoot;

#[Object(name = "Query")]
impl QueryRoot {
    /// Users, oldest account first. `pageNumber` counts from 1.
    async fn user_list(
        &self,
        ctx: &Context<'_>,
        page: Option<PageType>,
    ) -> async_graphql::Result<Option<UserListType>> {
        let actor = require_user(ctx)?;
        let app = state(ctx);
        let request = super::page(&app.settings, page, 1)?;
        let found = within_budget(
            ctx,
            |max_bytes| {
                app.backend.list_users(
                    actor,
                    PageRequest {
                        max_bytes,
                        ..request
                    },
                )
            },
            UserPage::content_bytes,
        )
        .await?;
        Ok(Some(UserListType {
            page_count: Some(found.total.div_ceil(u64::from(request.size)) as i32),
            count: Some(found.total as i32),
            data: Some(found.users.into_iter().map(|u| Some(u.into())).collect()),
        }))
    }

    /// The caller's channels, each with its last message. `pageNumber` counts from 1.
    async fn channel_list(
        &self,
        ctx: &Context<'_>,
        page: Option<PageType>,
    ) -> async_graphql::Result<Option<ChannelListType>> {
        let actor = require_user(ctx)?;
        let app = state(ctx);
        let request = super::page(&app.settings, page, 1)?;
        let found = within_budget(
            ctx,
            |max_bytes| {
                app.backend.member_channels(
                    actor,
                    PageRequest {
                        max_bytes,
                        ..request
                    },
                )
            },
            ChannelPage::content_bytes,
        )
        .await?;
        let tz = app.settings.time_zone;
        Ok(Some(ChannelListType {
            has_next: Some(found.has_next),
            data: Some(
                found
                    .channels
                    .into_iter()
                    .map(|c| {
                        Some(ChannelQueryType {
                            channel_id: Some(c.channel.id),
                            channel_name: Some(c.channel.name),
                            last_message: c
                                .last_message
                                .map(|p| MessageQueryType::from_post(p, tz)),
                        })
                    })
                    .collect(),
            ),
        }))
    }

    /// A page of a channel's messages, oldest first within the page; `pageNumber` 0 is the newest page.
    async fn get_message_list(
        &self,
        ctx: &Context<'_>,
        channel_identifier: String,
        page: Option<PageType>,
    ) -> async_graphql::Result<Option<MessageListType>> {
        let actor = require_user(ctx)?;
        let app = state(ctx);
        let request = super::page(&app.settings, page, 0)?;
        let found = within_budget(
            ctx,
            |max_bytes| {
                let page = PageRequest {
                    max_bytes,
                    ..request
                };
                app.backend.messages(actor, &channel_identifier, page)
            },
            MessagePage::content_bytes,
        )
        .await?;
        Ok(Some(MessageListType::from_page(
            found,
            app.settings.time_zone,
        )))
    }
}
