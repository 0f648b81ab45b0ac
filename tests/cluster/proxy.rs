//! A loopback TCP proxy the test controls, for a network partition between a gateway and a
//! relay. While partitioned nothing gets through, and an end that closes is not told to the
//! other: to both peers the network just goes silent, as when packets are lost (a SIGSTOP
//! freezes a process instead, and a refused connect is no partition at all). What was sent
//! meanwhile is held, as TCP retransmits it, and arrives in order when the partition heals:
//! TCP never loses bytes in the middle of a connection that goes on. New connections are
//! accepted and go silent too. Connections a peer gave up on meanwhile are closed at the heal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// When a peer closed its end: which side, and when.
#[derive(Debug, Clone, Copy)]
pub struct Closed {
    /// `true` for the end that connected to the proxy (the gateway), `false` for the target.
    pub client: bool,
    pub at: Instant,
}

pub struct Proxy {
    pub port: u16,
    partitioned: Arc<AtomicBool>,
    closes: Arc<Mutex<Vec<Closed>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards each connection to `target`.
    pub async fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let partitioned = Arc::new(AtomicBool::new(false));
        let closes = Arc::new(Mutex::new(Vec::new()));
        let (p, c) = (partitioned.clone(), closes.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (p, c) = (p.clone(), c.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let up = pipe(client_read, server_write, p.clone(), c.clone(), true);
                    let down = pipe(server_read, client_write, p, c, false);
                    // Either direction ending ends the connection (both halves dropped).
                    tokio::select! {
                        () = up => {}
                        () = down => {}
                    }
                });
            }
        });
        Self {
            port,
            partitioned,
            closes,
            task,
        }
    }

    pub fn partition(&self) {
        self.partitioned.store(true, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.partitioned.store(false, Ordering::SeqCst);
    }

    /// Every close a peer made so far.
    pub fn closes(&self) -> Vec<Closed> {
        self.closes.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One direction. While partitioned, what arrives is held (in order, up to [`HOLD_BYTES`],
/// then the proxy stops reading, as a full TCP window would), and an end of stream is kept
/// from the other side until the partition heals.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    partitioned: Arc<AtomicBool>,
    closes: Arc<Mutex<Vec<Closed>>>,
    client: bool,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut held: Vec<u8> = Vec::new();
    loop {
        if !partitioned.load(Ordering::SeqCst) && !held.is_empty() {
            let bytes = std::mem::take(&mut held);
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        if held.len() >= HOLD_BYTES {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        }
        // Wake now and then while partitioned, so a heal is noticed without new bytes.
        let read =
            tokio::time::timeout(std::time::Duration::from_millis(50), from.read(&mut buffer))
                .await;
        let n = match read {
            Err(_) => continue,
            Ok(Ok(0) | Err(_)) => {
                closes.lock().unwrap().push(Closed {
                    client,
                    at: Instant::now(),
                });
                while partitioned.load(Ordering::SeqCst) {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                let _ = to.write_all(&held).await;
                return;
            }
            Ok(Ok(n)) => n,
        };
        if partitioned.load(Ordering::SeqCst) {
            held.extend_from_slice(&buffer[..n]);
            continue;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// What one direction holds during a partition before it stops reading.
const HOLD_BYTES: usize = 4 << 20;
