//! A request's id, which follows a message from its mutation through Kafka, the relay and the
//! gateway: in every role's log lines about it, in the event (`MessageEvent::request_id`) and
//! in the Kafka record's `request-id` header.
//!
//! A client (or the proxy in front) may name its request with `X-Request-Id`; the id is kept
//! only if it is a short token (at most [`MAX_LEN`] of `A-Z a-z 0-9 - _ .`), so that no client
//! can put log-breaking or unbounded text in every role's logs. Otherwise a new one is made.
//! The answer carries the id in `X-Request-Id`.

use http::HeaderValue;
use rand::Rng;

/// The header, in requests and answers.
pub const HEADER: &str = "x-request-id";
/// The longest client-chosen id kept.
pub const MAX_LEN: usize = 64;

/// A request's id (request data of each GraphQL request over HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    /// The client's id if it is a short token, else a fresh one.
    pub fn from_header(value: Option<&HeaderValue>) -> Self {
        value
            .and_then(|v| v.to_str().ok())
            .filter(|v| is_token(v))
            .map_or_else(Self::fresh, |v| Self(v.to_owned()))
    }

    /// A new id: 16 random hex digits.
    pub fn fresh() -> Self {
        Self(format!("{:016x}", rand::rng().random::<u64>()))
    }
}

fn is_token(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clients_token_is_kept_and_anything_else_replaced() {
        let kept = RequestId::from_header(Some(&HeaderValue::from_static("req-42.a_b")));
        assert_eq!(kept.0, "req-42.a_b");
        for hostile in ["", "has space", "line\nbreak", &"x".repeat(65)] {
            let Ok(value) = HeaderValue::from_str(hostile) else {
                continue;
            };
            let made = RequestId::from_header(Some(&value));
            assert_ne!(made.0, hostile);
            assert_eq!(made.0.len(), 16);
        }
        assert_ne!(RequestId::fresh(), RequestId::fresh());
    }
}
