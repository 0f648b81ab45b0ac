//! The contract's GraphQL types, named and typed exactly as graphene rendered them
//! (nullable unless the contract says `!`).

use async_graphql::{
    InputObject, InputValueError, InputValueResult, Scalar, ScalarType, SimpleObject, Union, Value,
    ID,
};
use chrono_tz::Tz;
use http::StatusCode;
use mmsub_events::{EventAuthor, EventPost};
use serde_json::json;

use crate::backend::{BackendError, MessagePage, Post, User};

/// graphene's `GenericScalar`: any JSON value.
#[derive(Debug, Clone, PartialEq)]
pub struct GenericScalar(pub serde_json::Value);

#[Scalar(name = "GenericScalar")]
impl ScalarType for GenericScalar {
    fn parse(value: Value) -> InputValueResult<Self> {
        value
            .into_json()
            .map(GenericScalar)
            .map_err(InputValueError::custom)
    }

    fn to_value(&self) -> Value {
        Value::from_json(self.0.clone()).unwrap_or(Value::Null)
    }
}

/// A page request: size and number.
#[derive(InputObject, Debug, Clone, Copy, Default)]
#[graphql(name = "PageType")]
pub struct PageType {
    /// Items per page (default 10).
    pub page_size: Option<i32>,
    /// The page: `userList` and `channelList` count from 1, `getMessageList` from 0 (the newest).
    pub page_number: Option<i32>,
}

/// A user.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "UserQueryType")]
pub struct UserQueryType {
    /// The user's id.
    pub id: ID,
    /// The user's name.
    pub username: String,
    /// The user's email address.
    pub email: String,
    /// Whether the user is an administrator.
    pub is_staff: bool,
}

impl From<User> for UserQueryType {
    fn from(u: User) -> Self {
        Self {
            id: ID(u.id),
            username: u.username,
            email: u.email,
            is_staff: u.is_staff,
        }
    }
}

impl From<&EventAuthor> for UserQueryType {
    fn from(a: &EventAuthor) -> Self {
        Self {
            id: ID(a.id.clone()),
            username: a.username.clone(),
            email: a.email.clone(),
            is_staff: a.is_staff,
        }
    }
}

/// A page of users.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "UserListType")]
pub struct UserListType {
    /// The users.
    pub data: Option<Vec<Option<UserQueryType>>>,
    /// How many pages there are.
    pub page_count: Option<i32>,
    /// How many users there are.
    pub count: Option<i32>,
}

/// A chat message.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "MessageQueryType")]
pub struct MessageQueryType {
    /// The message's id.
    pub id: Option<String>,
    /// The text ("Welcome" for a join announcement).
    pub message: Option<String>,
    /// When it was posted: ISO-8601 in the server's time zone.
    pub create_at: Option<String>,
    /// Who posted it.
    pub owner: Option<UserQueryType>,
    /// `str` for plain text, else Mattermost's post type.
    #[graphql(name = "type")]
    pub kind: Option<String>,
}

impl MessageQueryType {
    fn new(
        id: &str,
        message: &str,
        create_at: i64,
        post_type: &str,
        owner: UserQueryType,
        tz: Tz,
    ) -> Self {
        let message = if post_type == "system_join_team" {
            "Welcome"
        } else {
            message
        };
        let kind = if post_type.is_empty() {
            "str"
        } else {
            post_type
        };
        Self {
            id: Some(id.to_owned()),
            message: Some(message.to_owned()),
            create_at: Some(iso_time(create_at, tz)),
            owner: Some(owner),
            kind: Some(kind.to_owned()),
        }
    }

    /// The message a stored post shows as, in `tz`.
    pub fn from_post(p: Post, tz: Tz) -> Self {
        Self::new(
            &p.id,
            &p.message,
            p.create_at,
            &p.post_type,
            p.author.into(),
            tz,
        )
    }

    /// The message an event's post shows as, in `tz`.
    pub fn from_event(p: &EventPost, tz: Tz) -> Self {
        Self::new(
            &p.id,
            &p.message,
            p.create_at,
            &p.post_type,
            (&p.author).into(),
            tz,
        )
    }
}

/// Milliseconds since the epoch as Python's `datetime.isoformat()` wrote them in the original:
/// offset always present, microseconds only when non-zero.
pub fn iso_time(millis: i64, tz: Tz) -> String {
    let Some(utc) = chrono::DateTime::from_timestamp_millis(millis) else {
        return millis.to_string();
    };
    let local = utc.with_timezone(&tz);
    if millis.rem_euclid(1000) == 0 {
        local.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
    } else {
        local.format("%Y-%m-%dT%H:%M:%S%.6f%:z").to_string()
    }
}

/// A page of a channel's messages.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "MessageListType")]
pub struct MessageListType {
    /// The messages, oldest first.
    pub data: Option<Vec<Option<MessageQueryType>>>,
    /// Newer messages exist.
    pub has_next: Option<bool>,
    /// Older messages exist.
    pub has_previous: Option<bool>,
}

impl MessageListType {
    /// A backend's page as the contract answers it, dates in `tz`.
    pub fn from_page(found: MessagePage, tz: Tz) -> Self {
        MessageListType {
            has_next: Some(found.has_next),
            has_previous: Some(found.has_previous),
            data: Some(
                found
                    .posts
                    .into_iter()
                    .map(|p| Some(MessageQueryType::from_post(p, tz)))
                    .collect(),
            ),
        }
    }
}

/// A channel.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "ChannelQueryType")]
pub struct ChannelQueryType {
    /// The channel's id.
    pub channel_id: Option<String>,
    /// The channel's name.
    pub channel_name: Option<String>,
    /// Its newest message.
    pub last_message: Option<MessageQueryType>,
}

/// A page of the viewer's channels.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "ChannelListType")]
pub struct ChannelListType {
    /// The channels.
    pub data: Option<Vec<Option<ChannelQueryType>>>,
    /// More pages follow.
    pub has_next: Option<bool>,
}

/// A mutation's answer.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "ResponseBase")]
pub struct ResponseBase {
    /// The status as text (`OK`, `NOT_FOUND`…).
    pub status: Option<String>,
    /// The HTTP status it stands for.
    pub status_code: Option<i32>,
    /// What happened.
    pub message: Option<String>,
    /// Details, per mutation.
    pub metadata: Option<GenericScalar>,
}

/// `"OK"`, `"NOT_FOUND"`…: the HTTP reason phrase in capitals with underscores.
pub fn status_text(status: StatusCode) -> String {
    status
        .canonical_reason()
        .unwrap_or("UNKNOWN")
        .to_uppercase()
        .replace([' ', '-'], "_")
}

impl ResponseBase {
    /// An answer with `status`.
    pub fn new(
        status: StatusCode,
        message: impl Into<String>,
        metadata: Option<serde_json::Value>,
    ) -> Self {
        Self {
            status: Some(status_text(status)),
            status_code: Some(status.as_u16().into()),
            message: Some(message.into()),
            metadata: metadata.map(GenericScalar),
        }
    }

    /// A 200 answer with `metadata`.
    pub fn ok(message: &str, metadata: serde_json::Value) -> Self {
        Self::new(StatusCode::OK, message, Some(metadata))
    }

    /// A 400 answer.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message, None)
    }
}

impl From<BackendError> for ResponseBase {
    fn from(e: BackendError) -> Self {
        Self::new(e.http_status(), e.to_string(), None)
    }
}

/// A login's answer: the status, and the tokens.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "ResponseWithToken")]
pub struct ResponseWithToken {
    /// The status as text.
    pub status: Option<String>,
    /// The HTTP status it stands for.
    pub status_code: Option<i32>,
    /// What happened.
    pub message: Option<String>,
    /// The access token.
    pub token: Option<String>,
    /// The single-use refresh token.
    pub refresh_token: Option<String>,
    /// The user: `{id, username, email}`.
    pub metadata: Option<GenericScalar>,
}

/// `userGetToken`'s answer: tokens, or the reason there are none.
#[derive(Union, Debug, Clone)]
#[graphql(name = "ResponseUnion")]
pub enum ResponseUnion {
    /// A login.
    ResponseWithToken(ResponseWithToken),
    /// A failure.
    ResponseBase(ResponseBase),
}

/// `tokenAuth`'s answer.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "ObtainJSONWebToken")]
pub struct ObtainJsonWebToken {
    /// The token's payload.
    pub payload: GenericScalar,
    /// Until when it can be refreshed (Unix seconds).
    pub refresh_expires_in: i64,
    /// The access token.
    pub token: String,
}

/// `verifyToken`'s answer.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "Verify")]
pub struct Verify {
    /// The token's payload.
    pub payload: GenericScalar,
}

/// `refreshToken`'s answer.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "Refresh")]
pub struct Refresh {
    /// The new token's payload.
    pub payload: GenericScalar,
    /// Until when it can be refreshed (Unix seconds).
    pub refresh_expires_in: i64,
    /// The new access token.
    pub token: String,
    /// Added: the replacement single-use refresh token when one was redeemed.
    pub refresh_token: Option<String>,
}

/// One event of `onNewChatMessage`.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "OnNewChatMessage")]
pub struct OnNewChatMessage {
    /// The channel as the subscriber named it.
    pub channel_identifier: Option<String>,
    /// The new message.
    pub message: Option<MessageQueryType>,
}

/// The `{id, username, email}` metadata answers carry about a user.
pub fn user_metadata(u: &User) -> serde_json::Value {
    json!({ "id": u.id, "username": u.username, "email": u.email })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_texts_follow_the_contract() {
        assert_eq!(status_text(StatusCode::OK), "OK");
        assert_eq!(status_text(StatusCode::NOT_FOUND), "NOT_FOUND");
        assert_eq!(status_text(StatusCode::BAD_REQUEST), "BAD_REQUEST");
        assert_eq!(
            status_text(StatusCode::SERVICE_UNAVAILABLE),
            "SERVICE_UNAVAILABLE"
        );
    }

    #[test]
    fn iso_times_match_python_isoformat() {
        assert_eq!(
            iso_time(1_700_000_000_123, Tz::UTC),
            "2023-11-14T22:13:20.123000+00:00"
        );
        assert_eq!(
            iso_time(1_700_000_000_000, Tz::UTC),
            "2023-11-14T22:13:20+00:00"
        );
        assert_eq!(
            iso_time(1_700_000_000_000, Tz::Asia__Tehran),
            "2023-11-15T01:43:20+03:30"
        );
    }
}
