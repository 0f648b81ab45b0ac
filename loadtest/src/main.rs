//! Load generator for mmsub. Every loop is bounded in count and time; it talks to loopback
//! unless `--url` says otherwise.
//!
//! - `loadtest fanout`: S WebSocket subscribers over K channels, P messages published through
//!   `textMessageSend` (as fast as possible, or at R per second); one JSON line with
//!   deliveries/s, lost, duplicated and out-of-order deliveries, latency percentiles in
//!   microseconds, and the server's CPU time per delivery.
//! - `loadtest floor`: the same measurement against a floor server (a child process) that only
//!   writes pre-built frames: what this machine allows right now, to compare a server with.
//! - `loadtest idle`: S idle subscribers; the server's resident memory per subscriber.
//! - `loadtest http`: goose scenarios over the HTTP GraphQL API, with goose's HTML report.
//! - `loadtest history`: goose users reading history pages and channel lists, with the
//!   Mattermost requests each read cost (with and without the ScyllaDB tier).

mod client;
mod fanout;
mod floor;
mod history;
mod http;
mod publisher;
mod ws;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "loadtest", about = "Load generator for mmsub")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure fan-out: S subscribers over K channels receiving P messages.
    Fanout(fanout::FanoutArgs),
    /// Measure a floor server that only writes pre-built frames: what this machine allows now.
    Floor(floor::FloorArgs),
    /// The floor server itself, started by `loadtest floor`.
    #[command(hide = true)]
    FloorServer(floor::FloorArgs),
    /// Measure the server's memory per idle subscriber.
    Idle(fanout::IdleArgs),
    /// Goose scenarios over HTTP GraphQL; arguments after `--` go to goose.
    Http(http::HttpArgs),
    /// Goose users reading history (`getMessageList`, `channelList`) from prepared channels.
    History(history::HistoryArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Fanout(args) => print(&fanout::fanout(args).await?),
        Command::Floor(args) => print(&floor::floor(args).await?),
        Command::FloorServer(args) => floor::serve(args).await,
        Command::Idle(args) => print(&fanout::idle(args).await?),
        Command::Http(args) => http::run(args).await,
        Command::History(args) => history::run(args).await,
    }
}

fn print(report: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(report)?);
    Ok(())
}
