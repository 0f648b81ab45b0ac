//! The two GraphQL-over-WebSocket dialects: what the client may send, what we send back.
//!
//! - `graphql-transport-ws`: the modern protocol of the `graphql-ws` npm package
//!   (connection_init/ack, subscribe/next/error/complete, ping/pong, 44xx close codes).
//! - `graphql-ws`: the legacy subscriptions-transport-ws protocol the original tester speaks
//!   (connection_init/ack/error, start/data/error/stop/complete, `ka`, connection_terminate).

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    TransportWs,
    Legacy,
}

impl Dialect {
    pub fn from_subprotocol(name: &str) -> Option<Self> {
        match name {
            "graphql-transport-ws" => Some(Dialect::TransportWs),
            "graphql-ws" => Some(Dialect::Legacy),
            _ => None,
        }
    }

    pub fn subprotocol(self) -> &'static str {
        match self {
            Dialect::TransportWs => "graphql-transport-ws",
            Dialect::Legacy => "graphql-ws",
        }
    }

    pub fn keepalive_type(self) -> &'static str {
        match self {
            Dialect::TransportWs => "ping",
            Dialect::Legacy => "ka",
        }
    }

    pub fn data_type(self) -> &'static str {
        match self {
            Dialect::TransportWs => "next",
            Dialect::Legacy => "data",
        }
    }
}

/// Any client message, before its type is interpreted.
#[derive(Debug, Deserialize)]
pub struct ClientMessage {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub payload: Option<Value>,
}

#[derive(Serialize)]
pub struct ServerMessage<'a, P: Serialize> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(rename = "type")]
    pub kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<P>,
}

pub fn encode<P: Serialize>(id: Option<&str>, kind: &str, payload: Option<P>) -> Vec<u8> {
    serde_json::to_vec(&ServerMessage { id, kind, payload })
        .expect("server messages always serialize")
}

/// Where a `connection_init` payload may carry credentials: `{"headers":{"Authorization"}}`,
/// `{"Authorization"}`, `{"authorization"}` (all `JWT <token>` or `Bearer <token>`) or
/// `{"token": "<token>"}`. `None`: the payload carries none. `Some(None)`: it carries something
/// that is not a token.
pub fn init_token(payload: Option<&Value>) -> Option<Option<String>> {
    let payload = payload?.as_object()?;
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
        return Some(
            value
                .as_str()
                .and_then(mmsub_api::auth::token_from_authorization)
                .map(str::to_owned),
        );
    }
    let token = payload.get("token")?;
    Some(token.as_str().map(|t| {
        mmsub_api::auth::token_from_authorization(t)
            .unwrap_or(t)
            .trim()
            .to_owned()
    }))
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
                init_token(Some(&payload)),
                Some(Some("t1".into())),
                "{payload}"
            );
        }
        assert_eq!(init_token(Some(&json!({}))), None);
        assert_eq!(init_token(None), None);
        assert_eq!(
            init_token(Some(&json!({"Authorization": "Basic x"}))),
            Some(None)
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
