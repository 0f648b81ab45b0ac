//! End-to-end tests of the public contract against a real listening server.

mod groups;
mod helpers;
mod history;
mod hostile;
mod http_contract;
mod legacy_ws;
mod limits;
mod logs;
mod mattermost;
mod mattermost_spec;
mod metrics;
mod persistence;
mod socket_tokens;
mod throttles;
mod transport_ws;
#[path = "../support/ws_frame.rs"]
mod ws_frame;
