//! mmsub: a GraphQL chat gateway in front of Mattermost.
//!
//! The binary assembles the workspace crates into roles: `mmsub-events` (the event contract,
//! bus and fan-out hub), `mmsub-api` (GraphQL, auth, backends), `mmsub-gateway` (WebSocket
//! protocols) and `mmsub-relay` (the Kafka tier). [`config`] turns flags into a
//! [`ServerConfig`]; [`roles`] builds each role; [`server::start`] serves it over HTTP, and is
//! what `mmsub serve` runs and what the integration tests start.

#![warn(missing_docs)]

pub mod config;
pub mod metrics_listener;
pub mod roles;
pub mod secret;
pub mod server;
pub mod settings;

pub use server::{start, RunningServer};
pub use settings::ServerConfig;
