//! The history tier: channel history, last messages and resume points cached in ScyllaDB, so
//! that a cluster's reads do not go to Mattermost.
//!
//! - [`config`]: the settings (`--scylla-*`).
//! - [`schema`]: the tables, Discord-style `(channel, bucket)` partitions newest first, and
//!   their versioned migration.
//! - [`store`]: the prepared statements on the `scylla` driver.
//! - [`tls`]: TLS to the nodes (`--scylla-tls-*`).
//! - [`tier`]: [`History`], the tier's shared state (connection, live epoch, fill locks).
//! - [`backend`]: [`HistoryBackend`], the [`ChatBackend`](mmsub_api::backend::ChatBackend)
//!   that reads through the store.
//! - `pages`: pages cut from newest-first rows, and deletions a fetched page reveals.
//! - [`ingest`]: [`IngestHistory`], which keeps it current from the Mattermost ingest.

#![warn(missing_docs)]

pub mod backend;
pub mod config;
pub mod error;
pub mod ingest;
mod pages;
pub mod schema;
mod statements;
pub mod store;
pub mod tier;
pub mod tls;

pub use backend::HistoryBackend;
pub use config::{HistoryConfig, Replication};
pub use ingest::IngestHistory;
pub use tier::History;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
