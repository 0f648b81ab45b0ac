//! The versioned wire format of "a message was posted".
//!
//! The event carries everything a subscriber's payload needs (post, author, channel), so a
//! WebSocket node never looks anything up while delivering. `v` lets consumers reject events
//! from a newer producer instead of misreading them during a rolling upgrade.

use serde::{Deserialize, Serialize};

/// The version this build writes and the newest it can read.
pub const EVENT_VERSION: u16 = 1;

/// One new chat message, as every role sees it: the versioned event on the bus, keyed by
/// channel, encoded as JSON ([`MessageEvent::encode`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageEvent {
    /// The event format's version ([`EVENT_VERSION`] when written here).
    pub v: u16,
    /// The channel's id: the bus key (the Kafka partition key).
    pub channel_id: String,
    /// The channel's name, for payloads that echo it.
    pub channel_name: String,
    /// The post itself.
    pub post: EventPost,
    /// The id of the request that sent it (the API node's `X-Request-Id`), so that its log
    /// lines on every role can be found together; none for a post the ingest heard. No
    /// subscriber payload carries it. Absent in events of older builds, which ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// A post as subscribers receive it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventPost {
    /// The post's id (26 characters, Mattermost's form).
    pub id: String,
    /// The message text.
    pub message: String,
    /// Milliseconds since the Unix epoch, as Mattermost stores `create_at`.
    pub create_at: i64,
    /// Mattermost's post type: empty for a plain text post, e.g. `system_join_team` otherwise.
    #[serde(default)]
    pub post_type: String,
    /// Who posted it.
    pub author: EventAuthor,
}

/// A post's author, carried in the event so that no subscriber's rendering reads the backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventAuthor {
    /// The user's id.
    pub id: String,
    /// The user's name.
    pub username: String,
    /// The user's email address.
    pub email: String,
    /// Whether the user is an administrator.
    #[serde(default)]
    pub is_staff: bool,
}

/// Why bytes did not decode into an event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not an event's JSON.
    #[error("malformed message event: {0}")]
    Malformed(serde_json::Error),
    /// Written by a newer build: refused rather than half understood.
    #[error("message event version {0} is newer than this node understands ({EVENT_VERSION})")]
    UnsupportedVersion(u16),
}

impl MessageEvent {
    /// An event of the current version.
    pub fn new(channel_id: String, channel_name: String, post: EventPost) -> Self {
        Self {
            v: EVENT_VERSION,
            channel_id,
            channel_name,
            post,
            request_id: None,
        }
    }

    /// The event, tagged with the request that sent it.
    #[must_use]
    pub fn with_request_id(mut self, request_id: Option<String>) -> Self {
        self.request_id = request_id;
        self
    }

    /// The event's JSON bytes, as they travel on the bus.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a MessageEvent always serializes")
    }

    /// Reads an event written by this or an older build.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let event: MessageEvent = serde_json::from_slice(bytes).map_err(DecodeError::Malformed)?;
        if event.v > EVENT_VERSION {
            return Err(DecodeError::UnsupportedVersion(event.v));
        }
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MessageEvent {
        MessageEvent::new(
            "c1".into(),
            "town-square".into(),
            EventPost {
                id: "p1".into(),
                message: "hi".into(),
                create_at: 1_700_000_000_123,
                post_type: String::new(),
                author: EventAuthor {
                    id: "u1".into(),
                    username: "alice".into(),
                    email: "a@example.com".into(),
                    is_staff: false,
                },
            },
        )
    }

    #[test]
    fn round_trips() {
        let event = sample();
        assert_eq!(MessageEvent::decode(&event.encode()).unwrap(), event);
    }

    #[test]
    fn rejects_events_from_a_newer_producer() {
        let mut event = sample();
        event.v = EVENT_VERSION + 1;
        let err = MessageEvent::decode(&event.encode()).unwrap_err();
        assert!(matches!(err, DecodeError::UnsupportedVersion(v) if v == EVENT_VERSION + 1));
    }

    #[test]
    fn the_request_id_travels_when_set_and_is_absent_otherwise() {
        let plain = sample().encode();
        assert!(!String::from_utf8_lossy(&plain).contains("request_id"));
        let tagged = sample().with_request_id(Some("r-1".into()));
        let decoded = MessageEvent::decode(&tagged.encode()).unwrap();
        assert_eq!(decoded.request_id.as_deref(), Some("r-1"));
    }

    #[test]
    fn ignores_fields_it_does_not_know() {
        let mut json: serde_json::Value = serde_json::from_slice(&sample().encode()).unwrap();
        json["added_later"] = serde_json::json!(true);
        let bytes = serde_json::to_vec(&json).unwrap();
        assert_eq!(MessageEvent::decode(&bytes).unwrap(), sample());
    }
}
