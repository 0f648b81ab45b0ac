//! WebSocket framing: the reader that turns client frames into whole messages within the size
//! limits, and the encoder for the frames we send.
//!
//! fastwebsockets performs the upgrade; frames are parsed here (RFC 6455 §5.2) because a
//! connection's reader must cost little while it waits: its buffer starts empty and grows only
//! to the frames that arrive (fastwebsockets' reader holds 8 KiB per connection from the
//! start), and parsing here also enforces what its reader let through (client frames must be
//! masked). The session reads in its own task, between its other work (see [`FrameReader`]):
//! no second task and no channel per connection. Outgoing frames are
//! encoded into the session's buffer so that everything ready is written with one syscall.

use bytes::{Buf, Bytes, BytesMut};
use tokio::net::TcpStream;

use crate::close;

/// One whole client message, or what ends the connection.
#[derive(Debug)]
pub enum Inbound {
    /// A text message, all its fragments joined, valid UTF-8.
    Text(String),
    /// A binary message (neither dialect carries any).
    Binary,
    /// A ping, whose payload the pong echoes.
    Ping(Bytes),
    /// The peer closed, with its code if it gave one.
    Close(Option<u16>),
    /// The peer broke the framing rules or a limit: close with this code.
    Violation {
        /// The close code to send.
        code: u16,
        /// The close reason to send.
        reason: &'static str,
    },
}

/// The size limits a [`FrameReader`] enforces.
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    /// Largest single frame (close 1009 beyond).
    pub max_frame_bytes: usize,
    /// Largest message over all its fragments (close 1009 beyond).
    pub max_message_bytes: usize,
}

/// Frame opcodes (RFC 6455 §5.2), for both the frames we read and the ones we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum OpCode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

struct Frame {
    fin: bool,
    opcode: OpCode,
    payload: BytesMut,
}

/// Smallest read: enough for the usual client message in one syscall.
const MIN_READ: usize = 512;

/// (header length, payload length, fin, opcode) once the whole header is buffered.
fn parse_header(
    buf: &[u8],
    max_frame_bytes: usize,
) -> Result<Option<(usize, usize, bool, OpCode)>, Inbound> {
    let [first, second, ..] = *buf else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return Err(protocol_error("reserved bits set without an extension"));
    }
    let opcode = match first & 0x0f {
        0x0 => OpCode::Continuation,
        0x1 => OpCode::Text,
        0x2 => OpCode::Binary,
        0x8 => OpCode::Close,
        0x9 => OpCode::Ping,
        0xA => OpCode::Pong,
        _ => return Err(protocol_error("unknown opcode")),
    };
    let fin = first & 0x80 != 0;
    if second & 0x80 == 0 {
        return Err(protocol_error("client frames must be masked"));
    }
    let (extended, len) = match second & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (2, u64::from(u16::from_be_bytes([b[0], b[1]]))),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (8, u64::from_be_bytes(b.try_into().expect("8 bytes"))),
            None => return Ok(None),
        },
        len => (0, u64::from(len)),
    };
    let control = matches!(opcode, OpCode::Close | OpCode::Ping | OpCode::Pong);
    if control && (!fin || len > 125) {
        return Err(protocol_error(
            "control frames must be whole and at most 125 bytes",
        ));
    }
    if len > max_frame_bytes as u64 {
        return Err(Inbound::Violation {
            code: close::MESSAGE_TOO_BIG,
            reason: "Frame too big",
        });
    }
    let header = 2 + extended + 4;
    if buf.len() < header {
        return Ok(None);
    }
    Ok(Some((header, len as usize, fin, opcode)))
}

/// A connection's incoming bytes, and the message being reassembled from its fragments.
///
/// Reading is kept apart from parsing so that the session can wait for bytes in the same
/// `select!` as everything else, with no reader task and no channel per connection:
/// [`FrameReader::read`] is cancel-safe (one read appends whatever it returned, or nothing),
/// and [`FrameReader::next_message`] parses the whole frames that are buffered.
#[derive(Debug)]
pub struct FrameReader {
    buf: BytesMut,
    partial: Option<(OpCode, BytesMut)>,
    limits: FrameLimits,
}

impl FrameReader {
    /// A reader with an empty buffer.
    pub fn new(limits: FrameLimits) -> Self {
        Self {
            buf: BytesMut::new(),
            partial: None,
            limits,
        }
    }

    /// Takes bytes that were read from the connection before this reader existed (sent by
    /// the client right behind its upgrade request).
    pub fn preload(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Reads more bytes from the peer: `Ok(0)` once it has closed the stream. Cancel-safe.
    /// Takes the socket by shared reference: deliveries are written to it from other tasks.
    pub async fn read(&mut self, stream: &TcpStream) -> std::io::Result<usize> {
        let missing = match parse_header(&self.buf, self.limits.max_frame_bytes) {
            Ok(Some((header, len, _, _))) => (header + len).saturating_sub(self.buf.len()),
            _ => 0,
        };
        self.buf.reserve(missing.max(MIN_READ));
        loop {
            stream.readable().await?;
            match stream.try_read_buf(&mut self.buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                read => return read,
            }
        }
    }

    /// The next whole message among the bytes read so far; `None` until one is complete.
    /// A [`Inbound::Violation`] or [`Inbound::Close`] is the last message worth asking for.
    pub fn next_message(&mut self) -> Option<Inbound> {
        loop {
            let frame = match self.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    // A large message grew the buffer; an idle connection should not keep it.
                    if self.buf.is_empty() && self.buf.capacity() > 4 * MIN_READ {
                        self.buf = BytesMut::new();
                    }
                    return None;
                }
                Err(violation) => return Some(violation),
            };
            let message = match frame.opcode {
                OpCode::Close => Some(close_frame(&frame.payload)),
                OpCode::Ping => Some(Inbound::Ping(frame.payload.freeze())),
                OpCode::Pong => None,
                OpCode::Text | OpCode::Binary if self.partial.is_some() => Some(protocol_error(
                    "a new message started inside a fragmented one",
                )),
                OpCode::Text | OpCode::Binary if frame.fin => {
                    Some(complete(frame.opcode, frame.payload))
                }
                OpCode::Text | OpCode::Binary => {
                    self.partial = Some((frame.opcode, frame.payload));
                    None
                }
                OpCode::Continuation => self.continuation(frame),
            };
            if message.is_some() {
                return message;
            }
        }
    }

    fn continuation(&mut self, frame: Frame) -> Option<Inbound> {
        let Some((_, buffer)) = self.partial.as_mut() else {
            return Some(protocol_error(
                "a continuation frame without a message to continue",
            ));
        };
        if buffer.len() + frame.payload.len() > self.limits.max_message_bytes {
            return Some(Inbound::Violation {
                code: close::MESSAGE_TOO_BIG,
                reason: "Message too big",
            });
        }
        buffer.extend_from_slice(&frame.payload);
        if !frame.fin {
            return None;
        }
        let (opcode, buffer) = self.partial.take().expect("checked above");
        Some(complete(opcode, buffer))
    }

    /// Takes one whole frame off the buffer, unmasked; `Ok(None)` if it has not all arrived.
    fn next_frame(&mut self) -> Result<Option<Frame>, Inbound> {
        let Some((header, len, fin, opcode)) =
            parse_header(&self.buf, self.limits.max_frame_bytes)?
        else {
            return Ok(None);
        };
        if self.buf.len() < header + len {
            return Ok(None);
        }
        let mask: [u8; 4] = self.buf[header - 4..header].try_into().expect("4 bytes");
        self.buf.advance(header);
        let mut payload = self.buf.split_to(len);
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i & 3];
        }
        Ok(Some(Frame {
            fin,
            opcode,
            payload,
        }))
    }
}

/// A client's close frame: no payload, or a code a peer may send (RFC 6455 7.4) and a UTF-8
/// reason. Anything else is answered as a protocol violation, not echoed.
fn close_frame(payload: &[u8]) -> Inbound {
    match payload {
        [] => Inbound::Close(None),
        [_] => protocol_error("A close frame's payload cannot be one byte"),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !sendable_close_code(code) {
                return protocol_error("Invalid close code");
            }
            if std::str::from_utf8(reason).is_err() {
                return Inbound::Violation {
                    code: close::INVALID_PAYLOAD,
                    reason: "Close reason is not valid UTF-8",
                };
            }
            Inbound::Close(Some(code))
        }
    }
}

/// Codes a peer may put in a close frame: the defined ones below 1015 except those reserved
/// for "no code" (1005), "abnormal" (1006) and TLS (1015), and the 3000–4999 ranges for
/// libraries and applications.
pub fn sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

fn protocol_error(reason: &'static str) -> Inbound {
    Inbound::Violation {
        code: close::PROTOCOL_ERROR,
        reason,
    }
}

fn complete(opcode: OpCode, payload: BytesMut) -> Inbound {
    if opcode == OpCode::Binary {
        return Inbound::Binary;
    }
    match String::from_utf8(payload.to_vec()) {
        Ok(text) => Inbound::Text(text),
        Err(_) => Inbound::Violation {
            code: close::INVALID_PAYLOAD,
            reason: "Text message is not valid UTF-8",
        },
    }
}

/// Appends one unmasked, final frame (server to client) to `buf`.
fn push_frame(buf: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    push_header(buf, opcode, payload.len());
    buf.extend_from_slice(payload);
}

/// Longest header of a frame we send: no mask, a 64-bit length.
pub const MAX_HEADER_BYTES: usize = 10;

/// Writes the header of a final, unmasked frame into `header`; returns its length.
fn encode_header(header: &mut [u8; MAX_HEADER_BYTES], opcode: OpCode, len: usize) -> usize {
    header[0] = 0x80 | opcode as u8;
    if len < 126 {
        header[1] = len as u8;
        2
    } else if u16::try_from(len).is_ok() {
        header[1] = 126;
        header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

fn push_header(buf: &mut Vec<u8>, opcode: OpCode, len: usize) {
    let mut header = [0; MAX_HEADER_BYTES];
    let used = encode_header(&mut header, opcode, len);
    buf.extend_from_slice(&header[..used]);
}

/// The header of a text frame of `len` bytes, for writing a message without copying its parts.
pub fn text_header(header: &mut [u8; MAX_HEADER_BYTES], len: usize) -> &[u8] {
    let used = encode_header(header, OpCode::Text, len);
    &header[..used]
}

/// Appends one text frame carrying `payload`.
pub fn push_text(buf: &mut Vec<u8>, payload: &[u8]) {
    push_frame(buf, OpCode::Text, payload);
}

/// Appends one text frame whose message is `prefix`, `payload` and `suffix` in turn: the
/// parts are spliced, not re-encoded (a subscription delivery: its prefix, the shared payload,
/// its suffix).
#[inline]
pub fn push_text_parts(buf: &mut Vec<u8>, prefix: &[u8], payload: &[u8], suffix: &[u8]) {
    let len = prefix.len() + payload.len() + suffix.len();
    push_header(buf, OpCode::Text, len);
    buf.reserve(len);
    buf.extend_from_slice(prefix);
    buf.extend_from_slice(payload);
    buf.extend_from_slice(suffix);
}

/// Appends the pong that answers a ping with `payload`.
pub fn push_pong(buf: &mut Vec<u8>, payload: &[u8]) {
    push_frame(buf, OpCode::Pong, payload);
}

/// Appends a close frame with `code` and `reason` (cut to the 123 bytes a close frame holds).
pub fn push_close(buf: &mut Vec<u8>, code: u16, reason: &str) {
    // A close reason may hold at most 123 bytes; cut on a character boundary.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    push_frame(buf, OpCode::Close, &payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked, as RFC 6455 requires of clients.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            len @ 0..=125 => frame.push(0x80 | len as u8),
            len => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        frame
    }

    #[tokio::test]
    async fn messages_come_whole_however_the_bytes_arrive() {
        let long = "x".repeat(300);
        let mut bytes = client_frame(false, 0x1, b"{\"type\":");
        bytes.extend(client_frame(true, 0x9, b"hi"));
        bytes.extend(client_frame(true, 0x0, b"\"ping\"}"));
        bytes.extend(client_frame(true, 0x1, long.as_bytes()));
        bytes.extend(client_frame(true, 0x8, &1000u16.to_be_bytes()));
        // One byte per write, and then everything at once, over a real loopback connection.
        for chunk in [1, bytes.len()] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut client = TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            client.set_nodelay(true).unwrap();
            let (server, _) = listener.accept().await.unwrap();
            let sent = bytes.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                for piece in sent.chunks(chunk) {
                    client.write_all(piece).await.unwrap();
                    tokio::task::yield_now().await;
                }
                client
            });
            let mut reader = FrameReader::new(FrameLimits {
                max_frame_bytes: 1024,
                max_message_bytes: 1024,
            });
            let mut messages = Vec::new();
            while !matches!(messages.last(), Some(Inbound::Close(_))) {
                assert!(reader.read(&server).await.unwrap() > 0);
                messages.extend(std::iter::from_fn(|| reader.next_message()));
            }
            let got: Vec<String> = messages.iter().map(|m| format!("{m:?}")).collect();
            assert_eq!(
                got,
                [
                    "Ping(b\"hi\")".to_owned(),
                    format!("{:?}", Inbound::Text("{\"type\":\"ping\"}".into())),
                    format!("{:?}", Inbound::Text(long.clone())),
                    "Close(Some(1000))".to_owned(),
                ],
                "written {chunk} byte(s) at a time"
            );
        }
    }

    #[test]
    fn a_fragmented_message_over_the_limit_is_refused() {
        let mut reader = FrameReader::new(FrameLimits {
            max_frame_bytes: 100,
            max_message_bytes: 150,
        });
        reader.buf.extend(client_frame(false, 0x1, &[b'a'; 100]));
        reader.buf.extend(client_frame(true, 0x0, &[b'a'; 100]));
        assert!(matches!(
            reader.next_message(),
            Some(Inbound::Violation {
                code: close::MESSAGE_TOO_BIG,
                ..
            })
        ));
    }

    #[test]
    fn encodes_each_length_form() {
        for (len, header) in [(5usize, 2usize), (200, 4), (70_000, 10)] {
            let mut buf = Vec::new();
            push_text(&mut buf, &vec![b'a'; len]);
            assert_eq!(buf.len(), header + len);
            assert_eq!(buf[0], 0x81);
        }
    }

    #[test]
    fn close_reasons_are_cut_to_fit() {
        let mut buf = Vec::new();
        push_close(&mut buf, 4400, &"é".repeat(100));
        assert_eq!(buf[1] as usize, buf.len() - 2);
        assert!(buf.len() - 2 <= 125);
    }
}
