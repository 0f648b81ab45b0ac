//! `graphql-transport-ws`: its client messages and its state machine.
//!
//! Protocol errors close the connection with the 44xx codes of the protocol's PROTOCOL.md
//! (`crate::close`); an operation's own errors are an `error` message for that operation.

use serde_json::Value;

use super::{Connection, Credentials, Envelope, Flow};
use crate::close;

/// A client message of `graphql-transport-ws`, decoded once from its text.
#[derive(Debug)]
pub enum ClientMessage {
    /// `connection_init`, with what its payload says about credentials.
    ConnectionInit(Credentials),
    /// `ping`, whose payload the `pong` echoes.
    Ping(Option<Value>),
    /// `pong`.
    Pong,
    /// `subscribe`: the id and the GraphQL request, checked when handled.
    Subscribe {
        /// The operation id the client chose.
        id: Option<String>,
        /// `{query, variables, operationName, extensions}`.
        payload: Option<Value>,
    },
    /// `complete`: the client ends an operation.
    Complete {
        /// The operation to end.
        id: Option<String>,
    },
    /// Any other `type`.
    Unknown(String),
}

impl ClientMessage {
    /// `None`: the text is not a message at all (not JSON, or no string `type`).
    pub fn decode(text: &str) -> Option<Self> {
        let Envelope { kind, id, payload } = Envelope::decode(text)?;
        Some(match &*kind {
            "connection_init" => {
                ClientMessage::ConnectionInit(Credentials::of_init(payload.as_ref()))
            }
            "ping" => ClientMessage::Ping(payload),
            "pong" => ClientMessage::Pong,
            "subscribe" => ClientMessage::Subscribe { id, payload },
            "complete" => ClientMessage::Complete { id },
            _ => ClientMessage::Unknown(kind.into_owned()),
        })
    }
}

/// Handles one text message.
pub(crate) fn on_text(session: &mut impl Connection, text: &str) -> Flow {
    match ClientMessage::decode(text) {
        Some(message) => on_message(session, message),
        None => Flow::Close(close::BAD_REQUEST, "Invalid message received".into()),
    }
}

/// Binary messages are not part of the protocol.
pub(crate) fn on_binary() -> Flow {
    Flow::Close(
        close::BAD_REQUEST,
        "Binary messages are not supported".into(),
    )
}

fn on_message(session: &mut impl Connection, message: ClientMessage) -> Flow {
    match message {
        ClientMessage::ConnectionInit(credentials) => {
            if session.init_received() {
                return Flow::Close(
                    close::TOO_MANY_INIT,
                    "Too many initialisation requests".into(),
                );
            }
            if let Err(e) = session.initialise(credentials) {
                return Flow::Close(close::FORBIDDEN, format!("Forbidden: {e}"));
            }
            session.send(None, "connection_ack", None::<()>);
        }
        ClientMessage::Ping(payload) => session.send(None, "pong", payload),
        ClientMessage::Pong => {}
        ClientMessage::Subscribe { id, payload } => {
            if !session.acknowledged() {
                return Flow::Close(close::UNAUTHORIZED, "Unauthorized".into());
            }
            let Some(id) = id.filter(|id| !id.is_empty()) else {
                return Flow::Close(
                    close::BAD_REQUEST,
                    "Invalid message received: subscribe needs an id".into(),
                );
            };
            let Some(request) = super::graphql_request(payload) else {
                return Flow::Close(
                    close::BAD_REQUEST,
                    "Invalid message received: subscribe payload needs a query".into(),
                );
            };
            if session.has_operation(&id) {
                return Flow::Close(
                    close::SUBSCRIBER_EXISTS,
                    format!("Subscriber for {id} already exists"),
                );
            }
            session.start(id, request);
        }
        ClientMessage::Complete { id } => {
            if let Some(id) = id {
                session.stop(&id);
            }
        }
        ClientMessage::Unknown(other) => {
            return Flow::Close(
                close::BAD_REQUEST,
                format!("Invalid message received: unknown type {other:?}"),
            )
        }
    }
    Flow::Continue
}
