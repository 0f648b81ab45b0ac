//! The CQL native protocol v4 server (`native_protocol_v4.spec`): frames in and out with
//! `cassandra-protocol`, one task per connection answering its requests in order, schema
//! events pushed to connections that sent `REGISTER`.
//!
//! Layout: this file holds the connection loop and framing, `session` answers requests,
//! `request` decodes statement bodies, `results` builds result bodies.

mod request;
mod results;
mod session;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cassandra_protocol::compression::Compression;
use cassandra_protocol::frame::events::ServerEvent;
use cassandra_protocol::frame::message_event::BodyResEvent;
use cassandra_protocol::frame::{Direction, Envelope, Flags, Opcode, Serialize, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{broadcast, watch};

use crate::cql::Parsed;
use crate::error::CqlError;
use crate::store::{SchemaChanged, Store};
use results::schema_change;

/// The largest frame accepted (the spec allows 256 MB; nothing the suite sends comes close).
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// The frame header's length (spec section 2).
const HEADER_BYTES: usize = 9;

/// A prepared statement, as EXECUTE finds it by id.
#[derive(Debug, Clone)]
struct PreparedStatement {
    parsed: Parsed,
    keyspace: Option<String>,
}

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    /// The node's data.
    pub store: Mutex<Store>,
    prepared: Mutex<HashMap<Vec<u8>, PreparedStatement>>,
    /// Added before each answer, to play a slow node.
    pub delay: Mutex<Duration>,
    /// `user`, `password` when `PasswordAuthenticator` is on.
    pub credentials: Option<(String, String)>,
    /// QUERY, EXECUTE and BATCH requests answered.
    pub requests: AtomicU64,
    events: broadcast::Sender<SchemaChanged>,
    /// Bumped to drop every connection (the node stops).
    pub stop: watch::Sender<u64>,
}

impl Shared {
    /// A node answering as `rpc_address`.
    pub fn new(rpc_address: std::net::IpAddr, credentials: Option<(String, String)>) -> Self {
        Shared {
            store: Mutex::new(Store::new(rpc_address)),
            prepared: Mutex::new(HashMap::new()),
            delay: Mutex::new(Duration::ZERO),
            credentials,
            requests: AtomicU64::new(0),
            events: broadcast::channel(64).0,
            stop: watch::channel(0).0,
        }
    }
}

/// Per-connection state.
struct Session {
    shared: Arc<Shared>,
    keyspace: Option<String>,
    started: bool,
    authenticated: bool,
    registered: bool,
}

/// Serves one connection (plain TCP or TLS) until the client leaves, the node stops, or the
/// client breaks the protocol.
pub async fn serve_connection<S>(shared: Arc<Shared>, mut stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut stop = shared.stop.subscribe();
    let mut events = shared.events.subscribe();
    let mut session = Session {
        authenticated: shared.credentials.is_none(),
        shared,
        keyspace: None,
        started: false,
        registered: false,
    };
    let mut buffer: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0_u8; 64 * 1024];
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            event = events.recv() => {
                if let (true, Ok(change)) = (session.registered, event) {
                    let body = BodyResEvent { event: ServerEvent::SchemaChange(schema_change(&change)) };
                    if write(&mut stream, -1, Opcode::Event, body.serialize_to_vec(Version::V4)).await.is_err() {
                        return;
                    }
                }
            }
            read = stream.read(&mut chunk) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buffer.extend_from_slice(&chunk[..n]);
                loop {
                    match next_frame(&mut buffer) {
                        Ok(None) => break,
                        Ok(Some(envelope)) => {
                            let delay = *session.shared.delay.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            let stream_id = envelope.stream_id;
                            let (opcode, body) = session.answer(&envelope);
                            if write(&mut stream, stream_id, opcode, body).await.is_err() {
                                return;
                            }
                        }
                        Err((stream_id, error)) => {
                            let body = error.body().serialize_to_vec(Version::V4);
                            let _ = write(&mut stream, stream_id, Opcode::Error, body).await;
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// The next whole frame of the buffer; an error (with its stream id) closes the connection.
fn next_frame(buffer: &mut Vec<u8>) -> Result<Option<Envelope>, (i16, CqlError)> {
    if buffer.len() < HEADER_BYTES {
        return Ok(None);
    }
    let stream_id = i16::from_be_bytes([buffer[2], buffer[3]]);
    if buffer[0] != 0x04 {
        return Err((
            stream_id,
            CqlError::Protocol(format!(
                "Invalid or unsupported protocol version ({}); supported versions are (4/v4)",
                buffer[0] & 0x7f
            )),
        ));
    }
    let length = u32::from_be_bytes([buffer[5], buffer[6], buffer[7], buffer[8]]);
    let length = usize::try_from(length).unwrap_or(usize::MAX);
    if length > MAX_FRAME_BYTES {
        return Err((
            stream_id,
            CqlError::Protocol(format!(
                "frame of {length} bytes is larger than the limit of {MAX_FRAME_BYTES}"
            )),
        ));
    }
    if buffer.len() < HEADER_BYTES + length {
        return Ok(None);
    }
    match Envelope::from_buffer(buffer, Compression::None) {
        Ok(parsed) => {
            buffer.drain(..parsed.envelope_len);
            Ok(Some(parsed.envelope))
        }
        Err(e) => Err((
            stream_id,
            CqlError::Protocol(format!("malformed frame: {e}")),
        )),
    }
}

async fn write<S: AsyncWrite + Unpin>(
    stream: &mut S,
    stream_id: i16,
    opcode: Opcode,
    body: Vec<u8>,
) -> std::io::Result<()> {
    let envelope = Envelope::new(
        Version::V4,
        Direction::Response,
        Flags::empty(),
        opcode,
        stream_id,
        body,
        None,
        Vec::new(),
    );
    let bytes = envelope
        .encode_with(Compression::None)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    stream.write_all(&bytes).await
}
