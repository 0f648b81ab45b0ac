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

use crate::backend::{BackendError, Post, User};

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

#[derive(InputObject, Debug, Clone, Copy, Default)]
#[graphql(name = "PageType")]
pub struct PageType {
    pub page_size: Option<i32>,
    pub page_number: Option<i32>,
}

#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "UserQueryType")]
pub struct UserQueryType {
    pub id: ID,
    pub username: String,
    pub email: String,
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

#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "UserListType")]
pub struct UserListType {
    pub data: Option<Vec<Option<UserQueryType>>>,
    pub page_count: Option<i32>,
    pub count: Option<i32>,
}

#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "MessageQueryType")]
pub struct MessageQueryType {
    pub id: Option<String>,
    pub message: Option<String>,
    pub create_at: Option<String>,
    pub owner: Option<UserQueryType>,
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

#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "MessageListType")]
pub struct MessageListType {
    pub data: Option<Vec<Option<MessageQueryType>>>,
    pub has_next: Option<bool>,
    pub has_previous: Option<bool>,
}

#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "ChannelQueryType")]
pub struct ChannelQueryType {
    pub channel_id: Option<String>,
    pub channel_name: Option<String>,
    pub last_message: Option<MessageQueryType>,
}

#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "ChannelListType")]
pub struct ChannelListType {
    pub data: Option<Vec<Option<ChannelQueryType>>>,
    pub has_next: Option<bool>,
}

#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "ResponseBase")]
pub struct ResponseBase {
    pub status: Option<String>,
    pub status_code: Option<i32>,
    pub message: Option<String>,
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

    pub fn ok(message: &str, metadata: serde_json::Value) -> Self {
        Self::new(StatusCode::OK, message, Some(metadata))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message, None)
    }
}

impl From<BackendError> for ResponseBase {
    fn from(e: BackendError) -> Self {
        Self::new(e.http_status(), e.to_string(), None)
    }
}

#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "ResponseWithToken")]
pub struct ResponseWithToken {
    pub status: Option<String>,
    pub status_code: Option<i32>,
    pub message: Option<String>,
    pub token: Option<String>,
    pub refresh_token: Option<String>,
    pub metadata: Option<GenericScalar>,
}

#[derive(Union, Debug, Clone)]
#[graphql(name = "ResponseUnion")]
pub enum ResponseUnion {
    ResponseWithToken(ResponseWithToken),
    ResponseBase(ResponseBase),
}

#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "ObtainJSONWebToken")]
pub struct ObtainJsonWebToken {
    pub payload: GenericScalar,
    pub refresh_expires_in: i64,
    pub token: String,
}

#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "Verify")]
pub struct Verify {
    pub payload: GenericScalar,
}

#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "Refresh")]
pub struct Refresh {
    pub payload: GenericScalar,
    pub refresh_expires_in: i64,
    pub token: String,
    /// Added: the replacement single-use refresh token when one was redeemed.
    pub refresh_token: Option<String>,
}

#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "OnNewChatMessage")]
pub struct OnNewChatMessage {
    pub channel_identifier: Option<String>,
    pub message: Option<MessageQueryType>,
}

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
