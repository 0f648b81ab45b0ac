//! The TCP server for the gateways' links: each gateway registers its interest, receives its
//! `Event` frames through a bounded queue and acknowledges them.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::{disconnect, RelaySettings, State};
use crate::wire::{WireCodec, WireFrame};

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
        gateways.queues.insert(id, queue.clone());
        id
    };
    state.status.gateways.fetch_add(1, Ordering::Relaxed);
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
    loop {
        let frame = tokio::select! {
            () = shutdown.cancelled() => break,
            frame = frames.next() => frame,
        };
        match frame {
            Some(Ok(WireFrame::Watch { seq, channel })) => {
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
                state
                    .progress
                    .lock()
                    .expect("progress lock poisoned")
                    .acked(id, partition, offset);
            }
            Some(Ok(other)) => {
                tracing::warn!(
                    gateway = id,
                    ?other,
                    "a gateway sent a relay-only frame; disconnecting it"
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
    writer.abort();
    tracing::info!(gateway = id, %peer, "gateway disconnected");
}
