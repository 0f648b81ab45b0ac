//! One relay link: connecting with backoff, the version it speaks (falling back to version 1
//! for a relay of the previous release), the heartbeat, and the frames it reads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::{LinkSettings, RelayLinks};
use crate::wire::{WireCodec, WireFrame, WIRE_V1};

/// How a link ended.
enum LinkEnd {
    /// `stop` was cancelled.
    Stopped,
    /// The relay closed it (or the connection failed), having answered `Hello` or not, and
    /// having sent anything at all or not.
    Closed { hello_answered: bool, heard: bool },
    /// Nothing arrived for the heartbeat timeout.
    Silent,
}

/// Keeps one relay connected, reconnecting with backoff, until `stop`.
///
/// A relay that answered this gateway's watches and then closed the link twice in a row at its
/// `Hello`, without answering it, is taken for a version 1 relay (one not yet upgraded): the
/// next links speak version 1 to it, until one ends, and then version 2 is tried again. A link
/// closed before the relay said anything is not counted: that is a relay that is down behind
/// something that accepted the connection (a proxy, a sidecar), not an old relay.
pub(super) async fn follow(
    links: Arc<RelayLinks>,
    addr: SocketAddr,
    settings: LinkSettings,
    stop: CancellationToken,
    mut first_attempt: bool,
) {
    let mut backoff = settings.reconnect_min;
    let mut refused = 0u32;
    let first_done = |first_attempt: &mut bool| {
        if std::mem::take(first_attempt) {
            links
                .first_attempts
                .send_modify(|n| *n = n.saturating_sub(1));
        }
    };
    loop {
        let connected = tokio::select! {
            () = stop.cancelled() => return,
            connected = TcpStream::connect(addr) => connected,
        };
        match connected {
            Ok(stream) => {
                let speak = if refused >= 2 {
                    WIRE_V1
                } else {
                    settings.wire_version
                };
                tracing::info!(relay = %addr, version = speak, "connected to relay");
                let _ = stream.set_nodelay(true);
                let attached = || first_done(&mut first_attempt);
                match run_link(&links, stream, &settings, speak, &stop, attached).await {
                    Ok(LinkEnd::Stopped) => return,
                    Ok(LinkEnd::Closed {
                        hello_answered,
                        heard,
                    }) => {
                        tracing::warn!(relay = %addr, "relay link closed");
                        if hello_answered || speak < 2 && heard {
                            // A link that worked: the next attempt comes soon.
                            backoff = settings.reconnect_min;
                        }
                        refused = match (speak >= 2, hello_answered, heard) {
                            (true, false, true) => refused + 1,
                            // Said nothing at all: down, not old; the count stands.
                            (true, false, false) => refused,
                            _ => 0,
                        };
                        if refused == 2 {
                            tracing::warn!(relay = %addr, "the relay closed the link at each hello: speaking wire version 1 to it (a relay of the previous release)");
                        }
                    }
                    Ok(LinkEnd::Silent) => {
                        tracing::warn!(
                            relay = %addr,
                            timeout_ms = settings.heartbeat.timeout.as_millis() as u64,
                            "the relay link was silent past the heartbeat timeout; connecting again"
                        );
                        refused = 0;
                        backoff = settings.reconnect_min;
                    }
                    Err(e) => {
                        tracing::warn!(relay = %addr, error = %e, "relay link ended");
                        refused = 0;
                    }
                }
            }
            Err(e) => {
                first_done(&mut first_attempt);
                tracing::debug!(relay = %addr, error = %e, "relay not reachable");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(settings.reconnect_max);
    }
}

async fn run_link(
    links: &Arc<RelayLinks>,
    stream: TcpStream,
    settings: &LinkSettings,
    speak: u16,
    stop: &CancellationToken,
    attached: impl FnOnce(),
) -> anyhow::Result<LinkEnd> {
    let (mut sink, mut frames) = Framed::new(stream, WireCodec::default()).split();
    let (outgoing, mut to_send) = mpsc::unbounded_channel();
    let (confirmed_tx, confirmed) = watch::channel(0u64);
    if speak >= 2 {
        // First a watch every relay answers, of a channel no event has (channel ids are never
        // empty): the `Hello` goes out once the relay said something, so a relay that closes
        // at the `Hello` is known to be a relay, and an old one. A version 2 relay also takes
        // it as the announcement of a hello, and sends no live event until it has planned the
        // replay that hello asks for: one that came first would move this gateway's mark
        // past the replay, whose events would then be dropped as repeats.
        let _ = outgoing.send(WireFrame::Watch {
            seq: 0,
            channel: String::new(),
        });
        let _ = outgoing.send(WireFrame::Unwatch {
            channel: String::new(),
        });
    }
    // Then the watches: a version 2 relay replays what this gateway lacks of them when it
    // reads the hello that follows.
    let id = links.attach(outgoing.clone(), confirmed);
    attached();
    let mut hello_sent = speak < 2;
    let mut heard_any = false;
    let writer = tokio::spawn(async move {
        while let Some(frame) = to_send.recv().await {
            sink.feed(frame).await?;
            while let Ok(frame) = to_send.try_recv() {
                sink.feed(frame).await?;
            }
            sink.flush().await?;
        }
        Ok::<_, crate::wire::WireError>(())
    });
    // The version the link speaks once the relay answered (version 1 needs no answer).
    let mut version = (speak < 2).then_some(WIRE_V1);
    let mut unacked: HashMap<i32, i64> = HashMap::new();
    let mut ack_tick = tokio::time::interval(settings.ack_interval);
    let mut heartbeat = tokio::time::interval(settings.heartbeat.interval);
    let mut heard = tokio::time::Instant::now();
    let result = loop {
        let v2 = version.is_some_and(|v| v >= 2);
        // A version 2 hello unanswered within the timeout counts as silence too.
        let silence = async {
            if speak >= 2 {
                tokio::time::sleep_until(heard + settings.heartbeat.timeout).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let frame = tokio::select! {
            () = stop.cancelled() => break Ok(LinkEnd::Stopped),
            () = silence => break Ok(LinkEnd::Silent),
            _ = ack_tick.tick() => {
                for (partition, offset) in unacked.drain() {
                    let _ = outgoing.send(WireFrame::Ack { partition, offset });
                }
                continue;
            }
            _ = heartbeat.tick(), if v2 => {
                // The ping, and how far this gateway has every partition: a relay that is
                // assigned a partition knows where this gateway stands on it.
                let _ = outgoing.send(WireFrame::Ping);
                for (partition, offset) in links.delivered() {
                    let _ = outgoing.send(WireFrame::Ack { partition, offset });
                }
                continue;
            }
            frame = frames.next() => frame,
        };
        // Only a frame is the relay saying something: an end of stream or a reset is what a
        // proxy or a sidecar in front of a relay that is down gives too, and taking it for
        // speech would make the count below take a relay that is down for an old one.
        if let Some(Ok(_)) = frame {
            heard = tokio::time::Instant::now();
            if !std::mem::replace(&mut heard_any, true) && !hello_sent {
                hello_sent = true;
                let _ = outgoing.send(WireFrame::Hello {
                    version: speak,
                    delivered: links.delivered(),
                });
            }
        }
        match frame {
            Some(Ok(WireFrame::Event {
                partition,
                offset,
                payload,
            })) => {
                links.deliver(partition, offset, &payload);
                unacked.insert(partition, offset);
            }
            Some(Ok(WireFrame::Watching { seq })) => {
                confirmed_tx.send_modify(|c| *c = (*c).max(seq));
            }
            Some(Ok(WireFrame::Hello {
                version: theirs, ..
            })) if speak >= 2 && version.is_none() => {
                let agreed = theirs.clamp(WIRE_V1, speak);
                tracing::info!(version = agreed, "relay answered hello");
                version = Some(agreed);
            }
            Some(Ok(WireFrame::Sent { partition, offset })) if v2 => {
                if links.mark(partition, offset) {
                    unacked.insert(partition, offset);
                }
            }
            Some(Ok(WireFrame::Ping)) if v2 => {}
            Some(Ok(other)) => {
                break Err(anyhow::anyhow!(
                    "the relay sent a frame this link does not carry: {other:?}"
                ))
            }
            Some(Err(crate::wire::WireError::Io(e))) => {
                tracing::debug!(error = %e, "relay link failed");
                break Ok(LinkEnd::Closed {
                    hello_answered: version.is_some() && speak >= 2,
                    heard: heard_any,
                });
            }
            Some(Err(e)) => break Err(e.into()),
            None => {
                break Ok(LinkEnd::Closed {
                    hello_answered: version.is_some() && speak >= 2,
                    heard: heard_any,
                })
            }
        }
    };
    links.detach(id);
    writer.abort();
    result
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;
    use mmsub_events::hub::FanoutHub;
    use tokio::net::TcpListener;
    use tokio_util::codec::Framed;
    use tokio_util::sync::CancellationToken;

    use crate::link::{LinkSettings, RelayLinks};
    use crate::wire::{WireCodec, WireFrame};

    /// A relay that is down behind something that accepts connections for it (a proxy, a
    /// sidecar, a load balancer) closes every link before a word. That is no old relay: the
    /// gateway goes on speaking version 2, whose hello and heartbeat it needs to lose nothing
    /// (a version 1 link has neither, and a partition of it went unnoticed in the chaos soak).
    #[tokio::test]
    async fn a_relay_down_behind_a_proxy_is_not_taken_for_one_of_the_previous_release() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let settings = LinkSettings {
            relays: vec![listener.local_addr().unwrap().to_string()],
            reconnect_max: Duration::from_millis(100),
            ..LinkSettings::default()
        };
        let stop = CancellationToken::new();
        let _links = RelayLinks::start(
            FanoutHub::new(),
            settings,
            mmsub_metrics::Metrics::new(),
            stop.clone(),
        );
        let accept = || async {
            tokio::time::timeout(Duration::from_secs(10), listener.accept())
                .await
                .expect("the gateway connects again")
                .unwrap()
                .0
        };
        // Two closes in a row at the hello are what an old relay does.
        for _ in 0..2 {
            drop(accept().await);
        }
        let mut frames = Framed::new(accept().await, WireCodec::default());
        let first = tokio::time::timeout(Duration::from_secs(2), frames.next())
            .await
            .expect("a version 2 link speaks first (its probe); a version 1 link without watches says nothing")
            .expect("a frame")
            .expect("a well-formed frame");
        assert_eq!(
            first,
            WireFrame::Watch {
                seq: 0,
                channel: String::new()
            }
        );
        stop.cancel();
    }
}
