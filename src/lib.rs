//! mmsub: a GraphQL chat gateway in front of Mattermost.
//!
//! The binary wires the workspace crates together: `mmsub-api` (GraphQL, auth, backends),
//! `mmsub-relay` (events, bus, fan-out hub) and `mmsub-gateway` (WebSocket protocols).
//! [`server::start`] is what `mmsub serve` runs, and what the integration tests start.

pub mod config;
pub mod server;

pub use config::ServerConfig;
pub use server::{start, RunningServer};
