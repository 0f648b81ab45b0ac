//! The stateless API node: the GraphQL contract, authentication, and the chat backends.
//!
//! Requests enter through [`http`] (GraphQL over HTTP) or through the gateway crate's
//! WebSocket protocols; both execute against the one [`schema`]. Resolvers talk to a
//! [`backend::ChatBackend`] (the embedded SQLite store, or Mattermost) and publish every new
//! message on the relay bus.

#![warn(missing_docs)]

pub mod auth;
pub mod backend;
pub mod client;
pub mod clock;
pub mod cost;
pub mod http;
pub mod ids;
pub mod parsed_queries;
pub mod request_id;
pub mod schema;
pub mod settings;
pub mod throttle;
pub mod validation;

pub use schema::{
    build_schema, subscription_contract, Admission, AppState, GroupFeed, MmsubSchema, Resume,
};
pub use settings::ApiSettings;
