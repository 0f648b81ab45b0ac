//! Load generator for mmsub.
//!
//! `loadtest fanout` opens S WebSocket subscribers over K channels, waits until every
//! subscription is live, publishes P messages through `textMessageSend` (one sequential publisher
//! per channel, so each channel has a defined order), and prints one JSON line: deliveries, lost,
//! duplicated and out-of-order messages, and the wall time. Every loop is bounded in count and
//! time; it talks to loopback unless `--url` says otherwise.

mod fanout;

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Fanout(args) => {
            let report = fanout::run(args).await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
    }
}
