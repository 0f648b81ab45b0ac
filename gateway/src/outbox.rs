//! A connection's outgoing deliveries, and the limit that makes a slow consumer visible.
//!
//! Subscription groups hand a [`Delivery`] (two shared byte strings, no copy) to each member's
//! connection outbox. When nothing else waits for that connection, the outbox writes the frame
//! to the socket at once, from the group's task, with one non-blocking vectored write; the
//! connection's own task is not woken. Otherwise the delivery queues, and the session writes
//! everything queued with one syscall. The [`SendBudget`] counts deliveries queued but not yet
//! taken: past its limit the outbox refuses more and trips the overflow signal, and the session
//! closes with a documented code. A subscriber therefore receives every event of its channel,
//! in order, or is told it was disconnected: never a silent gap, never unbounded memory.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use bytes::Bytes;
use futures::task::AtomicWaker;
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::delivery::Delivery;
use crate::frames;

/// How many deliveries a connection may have queued before it counts as a slow consumer.
#[derive(Debug)]
pub struct SendBudget {
    pending: AtomicUsize,
    limit: usize,
    /// Set once the limit was passed: checked on every delivery, so a plain flag rather than
    /// the token (whose check takes a lock).
    overflowed: AtomicBool,
    overflow: CancellationToken,
}

impl SendBudget {
    /// A budget of `limit` queued deliveries.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            pending: AtomicUsize::new(0),
            limit: limit.max(1),
            overflowed: AtomicBool::new(false),
            overflow: CancellationToken::new(),
        })
    }

    /// Claims room for one more delivery; on overflow trips the signal and returns false.
    pub fn try_reserve(&self) -> bool {
        if self.has_overflowed() {
            return false;
        }
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.overflowed.store(true, Ordering::Release);
            self.overflow.cancel();
            return false;
        }
        true
    }

    /// Gives back the room of one delivery that was written.
    pub fn release(&self) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
    }

    /// Whether the connection went over its budget (it is closing as a slow consumer).
    pub fn has_overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Acquire)
    }

    /// Completes when the connection has fallen too far behind.
    pub fn overflowed(&self) -> WaitForCancellationFuture<'_> {
        self.overflow.cancelled()
    }

    /// The number of deliveries that may wait.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// The sending side, shared by every group the connection's subscriptions belong to, and the
/// one place that decides who writes to the connection's socket.
///
/// A delivery that finds nothing else waiting is written to the socket right away, by the group
/// task that rendered it, with one non-blocking write: no queue, no wakeup of the connection's
/// task, no context switch. Otherwise (the session has bytes of its own to write, earlier
/// deliveries wait, or the socket's buffer is full) it joins the queue, counted against the
/// [`SendBudget`], and the session writes it. A write that the socket took only in part leaves
/// the rest of the frame first in line. So bytes leave in the order they were accepted, and
/// the only deliveries that wait are the ones the client is not reading fast enough.
///
/// The queue is a `VecDeque` behind the lock, not a channel: an idle connection's outbox
/// allocates nothing (a Tokio channel allocates a 32-slot block up front, 2 KiB per
/// connection), and the connection task is woken through one `AtomicWaker`.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    waker: AtomicWaker,
    budget: Arc<SendBudget>,
    /// Where deliveries may be written directly; `None` leaves every write to the session.
    socket: Option<Arc<TcpStream>>,
}

#[derive(Debug, Default)]
struct State {
    /// The tail of a frame a direct write began but the socket did not take whole.
    unfinished: Option<Vec<u8>>,
    queue: VecDeque<Delivery>,
    /// The session is writing, or has bytes to write: deliveries queue behind them.
    session_writes: bool,
    /// The connection is gone: deliveries are refused.
    closed: bool,
}

/// The connection's side: takes what waits, in order, and gives its budget back. Dropping it
/// closes the outbox.
#[derive(Debug)]
pub struct OutboxReceiver {
    outbox: Arc<Outbox>,
}

/// An outbox whose deliveries all wait for the session (no direct writes).
pub fn outbox(limit: usize) -> (Arc<Outbox>, OutboxReceiver) {
    new_outbox(limit, None)
}

/// An outbox that writes deliveries to `socket` directly while nothing else waits.
pub fn outbox_on(limit: usize, socket: Arc<TcpStream>) -> (Arc<Outbox>, OutboxReceiver) {
    new_outbox(limit, Some(socket))
}

fn new_outbox(limit: usize, socket: Option<Arc<TcpStream>>) -> (Arc<Outbox>, OutboxReceiver) {
    let outbox = Arc::new(Outbox {
        state: Mutex::new(State::default()),
        waker: AtomicWaker::new(),
        budget: SendBudget::new(limit),
        socket,
    });
    (outbox.clone(), OutboxReceiver { outbox })
}

/// How a direct write went.
enum Direct {
    Written,
    /// The socket took the first part; here is the rest.
    Partly(Vec<u8>),
    /// The socket took nothing (its buffer is full, or it failed: the session will see why).
    Refused,
}

fn write_direct(socket: &TcpStream, prefix: &[u8], payload: &[u8]) -> Direct {
    let mut header = [0u8; frames::MAX_HEADER_BYTES];
    let message_len = prefix.len() + payload.len() + Delivery::SUFFIX.len();
    let header = frames::text_header(&mut header, message_len);
    let frame_len = header.len() + message_len;
    let parts = [header, prefix, payload, Delivery::SUFFIX];
    match socket.try_write_vectored(&parts.map(IoSlice::new)) {
        Ok(written) if written == frame_len => Direct::Written,
        Ok(0) | Err(_) => Direct::Refused,
        Ok(written) => Direct::Partly(parts.concat().split_off(written)),
    }
}

impl Outbox {
    /// Sends or queues the delivery of `payload` behind `prefix`; false once the connection is
    /// a slow consumer or gone. The bytes are shared, not copied, if the delivery has to wait.
    pub fn push(&self, prefix: &Bytes, payload: &Bytes) -> bool {
        if self.budget.has_overflowed() {
            return false;
        }
        let mut state = self.state.lock().expect("outbox lock poisoned");
        // Checked under the lock the receiver closes under: nothing is queued after the drain.
        if state.closed {
            return false;
        }
        let direct = match (&self.socket, state.session_writes) {
            // The lock is held across the write: nobody else writes to the socket meanwhile.
            (Some(socket), false) => write_direct(socket, prefix, payload),
            _ => Direct::Refused,
        };
        match direct {
            Direct::Written => return true,
            // The session finishes the frame (see `take`).
            Direct::Partly(rest) => state.unfinished = Some(rest),
            Direct::Refused => {
                if !self.budget.try_reserve() {
                    // On overflow the connection is closing with "slow consumer".
                    return false;
                }
                state.queue.push_back(Delivery {
                    prefix: prefix.clone(),
                    payload: payload.clone(),
                });
            }
        }
        state.session_writes = true;
        drop(state);
        self.waker.wake();
        true
    }

    /// Claims room for a delivery that will be pushed (or released) later.
    pub fn reserve(&self) -> bool {
        self.budget.try_reserve()
    }

    /// Gives back room claimed with [`Outbox::reserve`] for a delivery that will not be sent.
    pub fn unreserve(&self) {
        self.budget.release();
    }

    /// The connection's send budget.
    pub fn budget(&self) -> &Arc<SendBudget> {
        &self.budget
    }
}

impl OutboxReceiver {
    /// The sending side, for the groups this connection's subscriptions join.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Completes once deliveries wait for the session (see [`OutboxReceiver::take`]).
    pub async fn waiting(&self) {
        std::future::poll_fn(|cx| {
            if self.has_waiting() {
                return Poll::Ready(());
            }
            self.outbox.waker.register(cx.waker());
            // A push between the first look and the registration must not be missed.
            if self.has_waiting() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }

    fn has_waiting(&self) -> bool {
        let state = self.outbox.state.lock().expect("outbox lock poisoned");
        state.unfinished.is_some() || !state.queue.is_empty()
    }

    /// The session is about to write bytes of its own: from now on deliveries queue behind
    /// them, and what waits already is moved into `out` first.
    pub fn claim(&mut self, out: &mut Vec<u8>) {
        self.take_into(out, usize::MAX, true);
    }

    /// The session's last write is next (a close frame): the tail of an unfinished frame goes
    /// into `out`, queued deliveries are dropped, and no delivery is accepted from now on.
    pub fn close(&mut self, out: &mut Vec<u8>) {
        let queued = {
            let mut state = self.outbox.state.lock().expect("outbox lock poisoned");
            if let Some(rest) = state.unfinished.take() {
                out.extend_from_slice(&rest);
            }
            state.session_writes = true;
            state.closed = true;
            std::mem::take(&mut state.queue)
        };
        for _ in queued {
            self.outbox.budget.release();
        }
    }

    /// Moves what waits into `out` (the tail of an unfinished frame, then at most `max`
    /// deliveries); if `out` is still empty, hands the socket back to direct writes.
    pub fn take(&mut self, out: &mut Vec<u8>, max: usize) {
        self.take_into(out, max, false);
    }

    /// After the session's write: hands the socket back to direct writes, unless deliveries
    /// wait (then [`OutboxReceiver::waiting`] is ready, and the session takes them next).
    pub fn release(&mut self) {
        let mut state = self.outbox.state.lock().expect("outbox lock poisoned");
        if state.queue.is_empty() && state.unfinished.is_none() {
            state.session_writes = false;
        }
    }

    fn take_into(&mut self, out: &mut Vec<u8>, max: usize, claim: bool) {
        let mut state = self.outbox.state.lock().expect("outbox lock poisoned");
        if let Some(rest) = state.unfinished.take() {
            out.extend_from_slice(&rest);
        }
        let mut taken = 0;
        while taken < max {
            let Some(delivery) = state.queue.pop_front() else {
                break;
            };
            delivery.push_to(out);
            taken += 1;
        }
        state.session_writes = claim || !out.is_empty() || !state.queue.is_empty();
        drop(state);
        for _ in 0..taken {
            self.outbox.budget.release();
        }
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        // What waits will never be written: gives its room back, refuses what comes.
        self.close(&mut Vec::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    const PREFIX: Bytes = Bytes::from_static(b"p");

    fn payload(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    /// The payload bytes of each whole delivery frame in `bytes` (header, `p`, payload, `}`).
    fn payloads(mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut found = Vec::new();
        while !bytes.is_empty() {
            let (header, len) = match bytes[1] {
                126 => (4, u16::from_be_bytes([bytes[2], bytes[3]]) as usize),
                len => (2, len as usize),
            };
            assert_eq!(bytes[0], 0x81, "a text frame starts here");
            let message = &bytes[header..header + len];
            assert_eq!((message[0], message[len - 1]), (b'p', b'}'));
            found.push(message[1..len - 1].to_vec());
            bytes = &bytes[header + len..];
        }
        found
    }

    /// A connected pair on loopback: (the server's socket, the client's).
    async fn socket_pair() -> (Arc<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (Arc::new(accepted.unwrap().0), client.unwrap())
    }

    /// Reads from `client` until `len` bytes have arrived.
    async fn read_exactly(client: &mut TcpStream, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        client.read_exact(&mut bytes).await.unwrap();
        bytes
    }

    #[tokio::test]
    async fn a_full_budget_trips_overflow_instead_of_queueing() {
        let (outbox, mut receiver) = outbox(2);
        assert!(outbox.push(&PREFIX, &payload(0)));
        assert!(outbox.push(&PREFIX, &payload(1)));
        assert!(!outbox.push(&PREFIX, &payload(2)));
        assert!(outbox.budget().has_overflowed());
        // What was queued before the overflow is still delivered, in order.
        receiver.waiting().await;
        let mut out = Vec::new();
        receiver.take(&mut out, 1);
        receiver.take(&mut out, 10);
        assert_eq!(payloads(&out), [[0], [1]]);
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_for_a_push_and_a_closed_outbox_refuses() {
        let (outbox, receiver) = outbox(4);
        let waiting = tokio::spawn(async move {
            receiver.waiting().await;
            receiver
        });
        tokio::task::yield_now().await;
        assert!(outbox.push(&PREFIX, &payload(7)));
        let mut receiver = waiting.await.unwrap();
        let mut out = Vec::new();
        receiver.take(&mut out, 10);
        assert_eq!(payloads(&out), [[7]]);
        drop(receiver);
        assert!(!outbox.push(&PREFIX, &payload(8)));
        assert!(!outbox.budget().has_overflowed());
    }

    #[test]
    fn taking_a_delivery_gives_its_room_back() {
        let (outbox, mut receiver) = outbox(1);
        for n in 0..3 {
            assert!(outbox.push(&PREFIX, &payload(n)));
            let mut out = Vec::new();
            receiver.take(&mut out, 10);
            assert_eq!(payloads(&out), [[n]]);
        }
        assert!(!outbox.budget().has_overflowed());
    }

    #[tokio::test]
    async fn deliveries_go_straight_to_the_socket_unless_the_session_has_claimed_it() {
        let (socket, mut client) = socket_pair().await;
        let (outbox, mut receiver) = outbox_on(4, socket);
        let frame_len = 2 + 3;
        // Nothing waits: written at once, nothing queued for the session.
        assert!(outbox.push(&PREFIX, &payload(1)));
        assert_eq!(payloads(&read_exactly(&mut client, frame_len).await), [[1]]);
        let mut out = Vec::new();
        receiver.take(&mut out, 10);
        assert!(out.is_empty());
        // The session claims the socket for a message of its own: deliveries queue behind it.
        receiver.claim(&mut out);
        out.extend_from_slice(&[0x81, 3, b'p', 0, b'}']);
        assert!(outbox.push(&PREFIX, &payload(2)));
        receiver.take(&mut out, 10);
        assert_eq!(payloads(&out), [[0], [2]]);
        // Written and released: direct again.
        receiver.release();
        assert!(outbox.push(&PREFIX, &payload(3)));
        assert_eq!(payloads(&read_exactly(&mut client, frame_len).await), [[3]]);
    }

    #[tokio::test]
    async fn a_full_socket_keeps_frames_whole_and_in_order() {
        let (socket, mut client) = socket_pair().await;
        socket2::SockRef::from(&*socket)
            .set_send_buffer_size(4096)
            .unwrap();
        let (outbox, mut receiver) = outbox_on(10_000, socket.clone());
        // Large deliveries, unread, until the socket takes one only in part and the next waits.
        let big = |n: u8| Bytes::from(vec![n; 1000]);
        let mut sent = 0u8;
        while outbox.budget().pending.load(Ordering::Acquire) == 0 {
            assert!(outbox.push(&PREFIX, &big(sent)));
            sent += 1;
            assert!(sent < 200, "the socket never filled");
        }
        let cut = outbox
            .state
            .lock()
            .unwrap()
            .unfinished
            .as_ref()
            .map(Vec::len);
        assert!(
            cut.is_some_and(|tail| tail > 0 && tail < 1006),
            "cut: {cut:?}"
        );
        // The session writes the tail of the cut frame, then the queue; the client reads.
        let frame_len = 4 + 1002;
        let reading =
            tokio::spawn(async move { read_exactly(&mut client, frame_len * sent as usize).await });
        receiver.waiting().await;
        let mut out = Vec::new();
        receiver.take(&mut out, 10_000);
        let mut rest = &out[..];
        while !rest.is_empty() {
            socket.writable().await.unwrap();
            match socket.try_write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
            }
        }
        let expected: Vec<Vec<u8>> = (0..sent).map(|n| vec![n; 1000]).collect();
        assert_eq!(payloads(&reading.await.unwrap()), expected);
    }
}
