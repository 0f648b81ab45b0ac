//! `loadtest floor`: what this machine allows right now, to compare a server with.
//!
//! Deliveries per second on a shared VM move by a third from one hour to the next, so a
//! server's figure alone says little. This command starts a second process, the *floor
//! server*, that does the least a fan-out server can do: it accepts WebSocket upgrades and, for
//! each message, writes one pre-built frame to every subscriber of the channel, one write per
//! subscriber. No GraphQL, no store, no HTTP request per message. The same subscribers, receive
//! loop and report as `loadtest fanout` measure it. Run it next to `loadtest fanout`, in the same
//! minutes: the server's deliveries/s as a fraction of the floor's carries over between hours
//! and machines, and the floor's latency is what the fan-out alone costs here.
//!
//! The floor server is this binary (`loadtest floor-server`, not listed in `--help`), so the
//! two sides share the two cores the way a server and the generator do. It listens on an
//! ephemeral loopback port, prints it, and exits when its standard input closes: it never
//! outlives the generator.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

use crate::fanout::{due, measure, FanoutReport, Run, CONNECT_CONCURRENCY};
use crate::ws::{push_text_header, RawWebSocket};

const MAX_HANDSHAKE_BYTES: usize = 16 << 10;

#[derive(Debug, Clone, clap::Args)]
pub struct FloorArgs {
    /// WebSocket subscribers (S), one connection each.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Channels the subscribers are spread over (K); one sequential writer per channel.
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Messages in total (P), spread evenly over the channels.
    #[arg(long, default_value_t = 1000)]
    pub messages: usize,
    /// Messages per second over all channels (R); 0 writes as fast as the sockets take them.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
}

/// Runs the floor server as a child process and measures it.
pub async fn floor(args: FloorArgs) -> anyhow::Result<FanoutReport> {
    if args.subscribers == 0 || args.channels == 0 || args.messages < args.channels {
        bail!("need at least one subscriber, one channel, and a message per channel");
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut child = Command::new(std::env::current_exe()?)
        .arg("floor-server")
        .args(["--subscribers", &args.subscribers.to_string()])
        .args(["--channels", &args.channels.to_string()])
        .args(["--messages", &args.messages.to_string()])
        .args(["--rate", &args.rate.to_string()])
        .args(["--timeout-secs", &args.timeout_secs.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the floor server")?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    let port: u16 = within(deadline, stdout.next_line())
        .await??
        .context("the floor server exited before listening")?
        .strip_prefix("listening ")
        .context("unexpected first line from the floor server")?
        .parse()?;

    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(CONNECT_CONCURRENCY));
    let connecting: Vec<_> = (0..args.subscribers)
        .map(|i| {
            let gate = gate.clone();
            let url = format!("ws://127.0.0.1:{port}/floor/{}", i % args.channels);
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await?;
                RawWebSocket::connect(&url, "graphql-transport-ws").await
            })
        })
        .collect();
    let mut sockets = Vec::with_capacity(args.subscribers);
    for connecting in connecting {
        sockets.push(within(deadline, connecting).await???);
    }

    let run = Run {
        subscribers: args.subscribers,
        channels: args.channels,
        per_channel: args.messages / args.channels,
        protocol: "floor".into(),
        rate: args.rate,
        server_pid: child.id(),
        deadline,
    };
    // Borrowed, not moved: the child exits when its standard input closes, and its CPU time is
    // read after the subscribers are done.
    let (stdin, stdout) = (&mut stdin, &mut stdout);
    let report = measure(run, sockets, |epoch| async move {
        // The child stamps each frame with its send time since our epoch, on the same clock.
        let epoch_nanos = monotonic_nanos().saturating_sub(epoch.elapsed().as_nanos() as u64);
        stdin
            .write_all(format!("go {epoch_nanos}\n").as_bytes())
            .await?;
        match within(deadline, stdout.next_line()).await??.as_deref() {
            Some("published") => Ok(()),
            other => bail!("the floor server stopped before publishing everything: {other:?}"),
        }
    })
    .await?;
    child.kill().await.ok();
    Ok(report)
}

/// The floor server (`loadtest floor-server`): see the module documentation.
pub async fn serve(args: FloorArgs) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let mut stdout = tokio::io::stdout();
    stdout
        .write_all(format!("listening {}\n", listener.local_addr()?.port()).as_bytes())
        .await?;
    stdout.flush().await?;

    // Standard input carries `go <epoch>`; its end, at any point, means the generator is gone.
    let (go_tx, go_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        if let Ok(Some(line)) = lines.next_line().await {
            let _ = go_tx.send(line);
            while let Ok(Some(_)) = lines.next_line().await {}
        }
        std::process::exit(0);
    });

    let mut channels: Vec<Vec<TcpStream>> = (0..args.channels).map(|_| Vec::new()).collect();
    for _ in 0..args.subscribers {
        let (mut stream, _) = within(deadline, listener.accept()).await??;
        stream.set_nodelay(true)?;
        let channel = within(deadline, upgrade(&mut stream)).await??;
        channels
            .get_mut(channel)
            .context("subscriber asked for a channel past --channels")?
            .push(stream);
    }

    let go = within(deadline, go_rx).await??;
    let epoch_nanos: u64 = go
        .strip_prefix("go ")
        .context("expected `go <epoch>`")?
        .parse()?;
    let started = Instant::now();
    let per_channel = args.messages / args.channels;
    let writers: Vec<_> = channels
        .into_iter()
        .enumerate()
        .map(|(k, mut sockets)| {
            let (channels, rate) = (args.channels, args.rate);
            tokio::spawn(async move {
                for n in 0..per_channel {
                    if let Some(due) = due(n, k, channels, rate) {
                        tokio::time::sleep_until((started + due).into()).await;
                    }
                    let sent = monotonic_nanos().saturating_sub(epoch_nanos);
                    let frame = next_frame(&format!("lt:{n}:{sent}"));
                    for socket in &mut sockets {
                        socket.write_all(&frame).await?;
                    }
                }
                anyhow::Ok(sockets)
            })
        })
        .collect();
    let mut open = Vec::new();
    for writer in writers {
        open.push(within(deadline, writer).await???);
    }
    stdout.write_all(b"published\n").await?;
    stdout.flush().await?;
    // The connections stay open until the generator closes our standard input, or the deadline.
    tokio::time::sleep_until(deadline.into()).await;
    drop(open);
    Ok(())
}

/// Reads an upgrade request for `/floor/<channel>` and accepts it. The generator's client does
/// not check `Sec-WebSocket-Accept`, so the answer leaves it out.
async fn upgrade(stream: &mut TcpStream) -> anyhow::Result<usize> {
    let mut head = Vec::with_capacity(512);
    while memchr::memmem::find(&head, b"\r\n\r\n").is_none() {
        if head.len() > MAX_HANDSHAKE_BYTES || stream.read_buf(&mut head).await? == 0 {
            bail!("incomplete upgrade request");
        }
    }
    let request = String::from_utf8_lossy(&head);
    let channel = request
        .split_whitespace()
        .nth(1)
        .and_then(|path| path.strip_prefix("/floor/"))
        .context("expected GET /floor/<channel>")?
        .parse()?;
    stream
        .write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n",
        )
        .await?;
    Ok(channel)
}

/// The frame mmsub sends a `graphql-transport-ws` subscriber of `loadtest fanout`'s selection
/// for a message with this text, byte for byte.
fn next_frame(text: &str) -> Vec<u8> {
    let payload = format!(
        r#"{{"id":"1","type":"next","payload":{{"data":{{"onNewChatMessage":{{"message":{{"message":"{text}"}}}}}}}}}}"#
    );
    let mut frame = Vec::with_capacity(payload.len() + 4);
    push_text_header(&mut frame, payload.len(), false);
    frame.extend_from_slice(payload.as_bytes());
    frame
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock `Instant` reads on Linux, shared by both
/// processes.
fn monotonic_nanos() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

async fn within<T>(
    deadline: Instant,
    work: impl std::future::Future<Output = T>,
) -> anyhow::Result<T> {
    tokio::time::timeout_at(deadline.into(), work)
        .await
        .context("the floor run passed --timeout-secs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_is_a_server_text_frame_with_the_marker() {
        let frame = next_frame("lt:7:42");
        assert_eq!(frame[0], 0x81);
        assert_eq!(frame[1] as usize, frame.len() - 2);
        let text = std::str::from_utf8(&frame[2..]).unwrap();
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(value["type"], "next");
        assert_eq!(
            value["payload"]["data"]["onNewChatMessage"]["message"]["message"],
            "lt:7:42"
        );
    }
}
