//! The two GraphQL-over-WebSocket dialects: what the client may send, what we send back.
//!
//! - `graphql-transport-ws` ([`transport_ws`]): the modern protocol of the `graphql-ws` npm
//!   package (`connection_init/ack`, subscribe/next/error/complete, ping/pong, 44xx close codes).
//! - `graphql-ws` ([`legacy`]): the legacy subscriptions-transport-ws protocol the original
//!   tester speaks (`connection_init/ack/error`, start/data/error/stop/complete, `ka`,
//!   `connection_terminate`).
//!
//! Each dialect decodes a client text once into its own message enum, and its state machine
//! matches on that enum; the session (`crate::session`) owns the socket and the operations.

pub mod legacy;
pub mod transport_ws;

use std::borrow::Cow;

use mmsub_api::auth::TokenError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which protocol a connection speaks, chosen from `Sec-WebSocket-Protocol` at the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `graphql-transport-ws`.
    TransportWs,
    /// `graphql-ws` (subscriptions-transport-ws), also what a client offering none speaks.
    Legacy,
}

impl Dialect {
    /// The dialect a `Sec-WebSocket-Protocol` token names, if we speak it.
    pub fn from_subprotocol(name: &str) -> Option<Self> {
        match name {
            "graphql-transport-ws" => Some(Dialect::TransportWs),
            "graphql-ws" => Some(Dialect::Legacy),
            _ => None,
        }
    }

    /// The `Sec-WebSocket-Protocol` token of this dialect.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Dialect::TransportWs => "graphql-transport-ws",
            Dialect::Legacy => "graphql-ws",
        }
    }

    /// The message type of a keep-alive.
    pub fn keepalive_type(self) -> &'static str {
        match self {
            Dialect::TransportWs => "ping",
            Dialect::Legacy => "ka",
        }
    }

    /// The message type of a subscription result.
    pub fn data_type(self) -> &'static str {
        match self {
            Dialect::TransportWs => "next",
            Dialect::Legacy => "data",
        }
    }
}

/// The fields every client message of both dialects has, read in one JSON pass; each dialect
/// turns it into its own typed message.
#[derive(Debug, Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    payload: Option<Value>,
}

impl<'a> Envelope<'a> {
    /// `None`: the text is not a JSON object with a string `type`.
    fn decode(text: &'a str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

/// What a dialect's state machine does to its connection; the session implements it, so
/// that the dialects know nothing of sockets, groups or operations.
pub(crate) trait Connection {
    /// Whether `connection_init` has arrived.
    fn init_received(&self) -> bool;
    /// Whether the connection was acknowledged: operations may start.
    fn acknowledged(&self) -> bool;
    /// Takes `connection_init`'s credentials: acknowledged unless they are refused.
    fn initialise(&mut self, credentials: Credentials) -> Result<(), TokenError>;
    /// Whether operation `id` is running or live.
    fn has_operation(&self, id: &str) -> bool;
    /// Starts operation `id`, or answers why it cannot start.
    fn start(&mut self, id: String, request: async_graphql::Request);
    /// Ends operation `id`; false if there was none.
    fn stop(&mut self, id: &str) -> bool;
    /// Sends a message of the connection's dialect.
    fn send<P: Serialize>(&mut self, id: Option<&str>, kind: &str, payload: Option<P>);
}

/// What the connection does after a message or an event.
pub(crate) enum Flow {
    /// Goes on.
    Continue,
    /// Sends a close frame with this code and reason, then ends.
    Close(u16, String),
    /// The peer is gone or closed first: nothing more to write.
    Stop,
}

/// The GraphQL request of a `subscribe`/`start` payload; `None` if it has no query.
fn graphql_request(payload: Option<Value>) -> Option<async_graphql::Request> {
    serde_json::from_value::<async_graphql::Request>(payload?).ok()
}

/// A server message of either dialect.
#[derive(Serialize)]
pub struct ServerMessage<'a, P: Serialize> {
    /// The operation it belongs to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    /// The message type.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// The message's payload, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<P>,
}

/// The JSON text of a server message.
pub fn encode<P: Serialize>(id: Option<&str>, kind: &str, payload: Option<P>) -> Vec<u8> {
    serde_json::to_vec(&ServerMessage { id, kind, payload })
        .expect("server messages always serialize")
}

/// What a `connection_init` payload says about credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// The payload carries none: the connection keeps the upgrade's `Authorization`, if any.
    Absent,
    /// A token, taken from `JWT <token>` / `Bearer <token>` or a bare `token` field.
    Token(String),
    /// Something in a credentials field that is not a token: refused.
    NotAToken,
}

impl Credentials {
    /// Where a `connection_init` payload may carry credentials:
    /// `{"headers":{"Authorization"}}`, `{"Authorization"}`, `{"authorization"}` (all
    /// `JWT <token>` or `Bearer <token>`) or `{"token": "<token>"}`.
    pub fn of_init(payload: Option<&Value>) -> Self {
        let Some(payload) = payload.and_then(Value::as_object) else {
            return Credentials::Absent;
        };
        let header = |map: &serde_json::Map<String, Value>| {
            map.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                .map(|(_, v)| v.clone())
        };
        let from_header = payload
            .get("headers")
            .and_then(Value::as_object)
            .and_then(header)
            .or_else(|| header(payload));
        if let Some(value) = from_header {
            return match value
                .as_str()
                .and_then(mmsub_api::auth::token_from_authorization)
            {
                Some(token) => Credentials::Token(token.to_owned()),
                None => Credentials::NotAToken,
            };
        }
        match payload.get("token") {
            None => Credentials::Absent,
            Some(Value::String(t)) => Credentials::Token(
                mmsub_api::auth::token_from_authorization(t)
                    .unwrap_or(t)
                    .trim()
                    .to_owned(),
            ),
            Some(_) => Credentials::NotAToken,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_the_token_in_every_contract_form() {
        for payload in [
            json!({"headers": {"Authorization": "JWT t1"}}),
            json!({"headers": {"authorization": "Bearer t1"}}),
            json!({"Authorization": "JWT t1"}),
            json!({"authorization": "JWT t1"}),
            json!({"token": "t1"}),
            json!({"token": "JWT t1"}),
        ] {
            assert_eq!(
                Credentials::of_init(Some(&payload)),
                Credentials::Token("t1".into()),
                "{payload}"
            );
        }
        assert_eq!(Credentials::of_init(Some(&json!({}))), Credentials::Absent);
        assert_eq!(Credentials::of_init(None), Credentials::Absent);
        assert_eq!(
            Credentials::of_init(Some(&json!({"Authorization": "Basic x"}))),
            Credentials::NotAToken
        );
    }

    #[test]
    fn server_messages_leave_out_what_they_do_not_have() {
        assert_eq!(
            encode::<()>(None, "connection_ack", None),
            br#"{"type":"connection_ack"}"#
        );
        assert_eq!(
            encode(Some("1"), "next", Some(json!({"data": 1}))),
            br#"{"id":"1","type":"next","payload":{"data":1}}"#
        );
    }
}
