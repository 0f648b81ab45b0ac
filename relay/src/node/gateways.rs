//! The TCP server for the gateways' links: each gateway registers its interest, receives its
//! `Event` frames through a bounded queue and acknowledges them.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::{disconnect, GatewayLink, RelaySettings, State};
use crate::wire::{WireCodec, WireFrame, WIRE_V1};

pub(super) async fn accept(
    listener: TcpListener,
    state: Arc<State>,
    settings: RelaySettings,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a gateway failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_gateway(
            stream,
            peer,
            state.clone(),
            settings.clone(),
            shutdown.clone(),
        ));
    }
}

/// One gateway connection: a writer draining its queue, and this reader of its interest/acks.
async fn serve_gateway(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    settings: RelaySettings,
    shutdown: CancellationToken,
) {
    let (queue, mut outgoing) = mpsc::channel::<WireFrame>(settings.gateway_queue);
    let id = {
        let mut gateways = state.gateways.lock().expect("gateways lock poisoned");
        gateways.next_id += 1;
        let id = gateways.next_id;
        gateways.links.insert(id, GatewayLink::new(queue.clone()));
        id
    };
    state.status.gateways.fetch_add(1, Ordering::Relaxed);
    state.metrics.relay.gateway_links(1);
    tracing::info!(gateway = id, %peer, "gateway connected");
    let (mut sink, mut frames) = Framed::new(stream, WireCodec::default()).split();
    let writer = tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if sink.feed(frame).await.is_err() {
                return;
            }
            // Everything already queued goes out in the same write.
            while let Ok(frame) = outgoing.try_recv() {
                if sink.feed(frame).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    // Version 1 until the gateway's `Hello`: no pings, and no silence limit (a version 1
    // gateway sends nothing while it has nothing to acknowledge).
    let mut version = WIRE_V1;
    let mut ping = tokio::time::interval(settings.heartbeat.interval);
    let mut heard = Instant::now();
    // Set by the probe watch a version 2 gateway sends before its `Hello`: the link is held
    // (no live events) until the hello's replay is planned, so the hello must come in time.
    let mut hello_due: Option<Instant> = None;
    loop {
        let silence = async {
            if version >= 2 {
                tokio::time::sleep_until(heard + settings.heartbeat.timeout).await;
            } else if let Some(due) = hello_due {
                tokio::time::sleep_until(due).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let frame = tokio::select! {
            () = shutdown.cancelled() => break,
            () = silence => {
                let timeout_ms = settings.heartbeat.timeout.as_millis() as u64;
                if version >= 2 {
                    tracing::warn!(gateway = id, %peer, timeout_ms, "a gateway was silent past the heartbeat timeout; disconnecting it");
                } else {
                    tracing::warn!(gateway = id, %peer, timeout_ms, "a gateway announced a hello and sent none within the heartbeat timeout; disconnecting it");
                }
                break;
            }
            _ = ping.tick(), if version >= 2 => {
                // A full queue means frames are flowing already; the gateway hears those.
                let _ = queue.try_send(WireFrame::Ping);
                continue;
            }
            frame = frames.next() => frame,
        };
        heard = Instant::now();
        match frame {
            Some(Ok(WireFrame::Watch { seq, channel })) => {
                if channel.is_empty() && settings.wire_version >= 2 && version < 2 {
                    // The probe: a `Hello` follows once this is answered.
                    state.with_link(id, GatewayLink::hold);
                    hello_due.get_or_insert(heard + settings.heartbeat.timeout);
                }
                state
                    .gateways
                    .lock()
                    .expect("gateways lock poisoned")
                    .watching
                    .entry(channel)
                    .or_default()
                    .insert(id);
                // Queued behind every event forwarded so far; the map is updated first, so
                // every event consumed after this is forwarded to the gateway.
                if queue.send(WireFrame::Watching { seq }).await.is_err() {
                    break;
                }
            }
            Some(Ok(WireFrame::Unwatch { channel })) => {
                let mut gateways = state.gateways.lock().expect("gateways lock poisoned");
                if let Some(ids) = gateways.watching.get_mut(&channel) {
                    ids.remove(&id);
                    if ids.is_empty() {
                        gateways.watching.remove(&channel);
                    }
                }
            }
            Some(Ok(WireFrame::Ack { partition, offset })) => {
                state.with_link(id, |link| link.has(partition, offset));
                state
                    .progress
                    .lock()
                    .expect("progress lock poisoned")
                    .acked(id, partition, offset);
            }
            Some(Ok(WireFrame::Hello {
                version: theirs,
                delivered,
            })) if settings.wire_version >= 2 => {
                version = theirs.clamp(WIRE_V1, settings.wire_version);
                hello_due = None;
                state.with_link(id, |link| {
                    for (partition, offset) in delivered {
                        link.has(partition, offset);
                    }
                });
                tracing::info!(gateway = id, %peer, version, "gateway said hello");
                let hello = WireFrame::Hello {
                    version,
                    delivered: Vec::new(),
                };
                if queue.send(hello).await.is_err() {
                    break;
                }
                // Its watches came before the hello: the replay sends what it lacks of them.
                // The consume loop sets the link's version when it plans that replay.
                if state.replay_requests.send((id, version)).await.is_err() {
                    break;
                }
            }
            Some(Ok(WireFrame::Ping)) if version >= 2 => {}
            Some(Ok(other)) => {
                tracing::warn!(
                    gateway = id,
                    ?other,
                    version,
                    "a gateway sent a frame this link does not carry; disconnecting it"
                );
                break;
            }
            Some(Err(e)) => {
                tracing::warn!(gateway = id, error = %e, "gateway connection failed");
                break;
            }
            None => break,
        }
    }
    disconnect(&state, id);
    state.status.gateways.fetch_sub(1, Ordering::Relaxed);
    state.metrics.relay.gateway_links(-1);
    writer.abort();
    tracing::info!(gateway = id, %peer, "gateway disconnected");
}
