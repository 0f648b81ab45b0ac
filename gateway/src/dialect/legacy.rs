//! `graphql-ws` (subscriptions-transport-ws): its client messages and its state machine.
//!
//! The legacy protocol answers most mistakes with an `error` message and keeps the connection;
//! it closes only for a refused `connection_init`, binary data and `connection_terminate`.

use serde_json::{json, Value};

use super::{Connection, Credentials, Envelope, Flow};
use crate::close;

/// A client message of `graphql-ws`, decoded once from its text.
#[derive(Debug)]
pub enum ClientMessage {
    /// `connection_init`, with what its payload says about credentials.
    ConnectionInit(Credentials),
    /// `start`: the id and the GraphQL request, checked when handled.
    Start {
        /// The operation id the client chose.
        id: Option<String>,
        /// `{query, variables, operationName}`.
        payload: Option<Value>,
    },
    /// `stop`: the client ends an operation.
    Stop {
        /// The operation to end.
        id: Option<String>,
    },
    /// `connection_terminate`.
    ConnectionTerminate,
    /// Any other `type`; the `error` answer names its id.
    Unknown {
        /// The message's id, if it had one.
        id: Option<String>,
    },
}

impl ClientMessage {
    /// `None`: the text is not a message at all (not JSON, or no string `type`).
    pub fn decode(text: &str) -> Option<Self> {
        let Envelope { kind, id, payload } = Envelope::decode(text)?;
        Some(match &*kind {
            "connection_init" => {
                ClientMessage::ConnectionInit(Credentials::of_init(payload.as_ref()))
            }
            "start" => ClientMessage::Start { id, payload },
            "stop" => ClientMessage::Stop { id },
            "connection_terminate" => ClientMessage::ConnectionTerminate,
            _ => ClientMessage::Unknown { id },
        })
    }
}

/// Handles one text message.
pub(crate) fn on_text(session: &mut impl Connection, text: &str) -> Flow {
    match ClientMessage::decode(text) {
        Some(message) => on_message(session, message),
        None => {
            session.send(
                None,
                "error",
                Some(json!({ "message": "Message must be JSON-parseable" })),
            );
            Flow::Continue
        }
    }
}

/// The legacy protocol carries JSON text only.
pub(crate) fn on_binary() -> Flow {
    Flow::Close(
        close::UNSUPPORTED_DATA,
        "Binary messages are not supported".into(),
    )
}

fn on_message(session: &mut impl Connection, message: ClientMessage) -> Flow {
    match message {
        ClientMessage::ConnectionInit(credentials) => {
            if let Err(e) = session.initialise(credentials) {
                session.send(
                    None,
                    "connection_error",
                    Some(json!({ "message": format!("Forbidden: {e}") })),
                );
                return Flow::Close(close::FORBIDDEN, format!("Forbidden: {e}"));
            }
            session.send(None, "connection_ack", None::<()>);
            session.send(None, "ka", None::<()>);
        }
        ClientMessage::Start { id, payload } => {
            let Some(id) = id.filter(|id| !id.is_empty()) else {
                session.send(
                    None,
                    "error",
                    Some(json!({ "message": "start needs an id" })),
                );
                return Flow::Continue;
            };
            if !session.acknowledged() {
                session.send(
                    Some(&id),
                    "error",
                    Some(json!({ "message": "Send connection_init before start" })),
                );
                return Flow::Continue;
            }
            let Some(request) = super::graphql_request(payload) else {
                session.send(
                    Some(&id),
                    "error",
                    Some(json!({ "message": "start payload needs a query" })),
                );
                return Flow::Continue;
            };
            // subscriptions-transport-ws semantics: a start with a live id replaces it.
            session.stop(&id);
            session.start(id, request);
        }
        ClientMessage::Stop { id } => {
            if let Some(id) = id {
                if session.stop(&id) {
                    session.send(Some(&id), "complete", None::<()>);
                }
            }
        }
        ClientMessage::ConnectionTerminate => return Flow::Close(close::NORMAL, String::new()),
        ClientMessage::Unknown { id } => session.send(
            id.as_deref(),
            "error",
            Some(json!({ "message": "Invalid message type!" })),
        ),
    }
    Flow::Continue
}
