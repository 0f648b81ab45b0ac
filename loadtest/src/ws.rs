//! A minimal WebSocket client for measuring: handshake, masked text frames out, frames in.
//!
//! A general client validates UTF-8, allocates a message per frame and wakes a task per frame;
//! at hundreds of thousands of deliveries per second on the same two cores as the server, that
//! cost would be what gets measured. This one reads whatever arrived into one buffer and hands
//! out borrowed frame payloads, so a read syscall usually yields several frames for free.

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const READ_CHUNK: usize = 16 << 10;
const MAX_HANDSHAKE_BYTES: usize = 16 << 10;
/// Linux acknowledges each small segment as soon as the reader empties its socket, unless the
/// connection is in delayed-ACK ("pingpong") mode, which `TCP_QUICKACK` off enters and the
/// first delayed-ACK timeout (40 ms or more) leaves. A receiver that only reads would otherwise
/// send one ACK per frame, and on loopback the sender's side of that ACK is processed on this
/// process's CPU too: a third of its time. Re-armed every this many reads.
const QUICKACK_REARM_READS: u32 = 16;

pub struct RawWebSocket {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Start of unconsumed bytes in `buf`.
    start: usize,
    /// Reads so far, for re-arming delayed ACKs.
    reads: u32,
}

pub const OP_TEXT: u8 = 0x1;
pub const OP_CLOSE: u8 = 0x8;

impl RawWebSocket {
    /// Connects to `ws://host:port/path` offering `protocol`.
    pub async fn connect(url: &str, protocol: &str) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(url)?;
        let host = url.host_str().context("URL without host")?;
        let port = url.port_or_known_default().context("URL without port")?;
        let stream = TcpStream::connect((host, port)).await?;
        stream.set_nodelay(true)?;
        let mut ws = Self {
            stream,
            buf: Vec::with_capacity(READ_CHUNK),
            start: 0,
            reads: 0,
        };
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: bG9hZHRlc3Qtbm9uY2UtMDE=\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: {protocol}\r\n\r\n",
            url.path()
        );
        ws.stream.write_all(request.as_bytes()).await?;
        let end = loop {
            if let Some(at) = memchr::memmem::find(&ws.buf, b"\r\n\r\n") {
                break at + 4;
            }
            if ws.buf.len() > MAX_HANDSHAKE_BYTES || !ws.fill().await? {
                bail!("no WebSocket handshake response");
            }
        };
        if !ws.buf.starts_with(b"HTTP/1.1 101") {
            let head = String::from_utf8_lossy(&ws.buf[..end]);
            bail!(
                "upgrade refused: {}",
                head.lines().next().unwrap_or_default()
            );
        }
        ws.start = end;
        Ok(ws)
    }

    /// Sends one masked text frame.
    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        let payload = text.as_bytes();
        let mask = [0x6d, 0x6d, 0x73, 0x62];
        let mut frame = Vec::with_capacity(payload.len() + 14);
        push_text_header(&mut frame, payload.len(), true);
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    /// The next complete frame (opcode, payload), reading more when needed; `None` at EOF.
    pub async fn next_frame(&mut self) -> anyhow::Result<Option<(u8, &[u8])>> {
        loop {
            if let Some((opcode, header, len)) = parse_header(&self.buf[self.start..]) {
                if self.buf.len() - self.start >= header + len {
                    let at = self.start + header;
                    self.start = at + len;
                    return Ok(Some((opcode, &self.buf[at..at + len])));
                }
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// Reads more bytes after the unconsumed ones; false at EOF. The spare capacity is read
    /// into as it is (`read_buf`), not zeroed first: a read usually brings one small frame.
    async fn fill(&mut self) -> anyhow::Result<bool> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(READ_CHUNK);
        let read = self.stream.read_buf(&mut self.buf).await?;
        if self.reads.is_multiple_of(QUICKACK_REARM_READS) {
            // Delayed ACKs: see `QUICKACK_REARM_READS`. A failure only costs ACKs.
            let _ = socket2::SockRef::from(&self.stream).set_tcp_quickack(false);
        }
        self.reads = self.reads.wrapping_add(1);
        Ok(read > 0)
    }

    pub async fn close(mut self) {
        // Close frame with code 1000, masked with a zero key.
        let _ = self
            .stream
            .write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8])
            .await;
    }
}

/// Appends the header of a final text frame of `len` payload bytes: a client's is `masked` (the
/// mask key follows it), a server's is not.
pub fn push_text_header(frame: &mut Vec<u8>, len: usize, masked: bool) {
    let mask_bit = if masked { 0x80 } else { 0 };
    frame.push(0x80 | OP_TEXT);
    match len {
        0..=125 => frame.push(mask_bit | len as u8),
        126..=0xffff => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// (opcode, header length, payload length) of an unmasked server frame, if the header is whole.
fn parse_header(bytes: &[u8]) -> Option<(u8, usize, usize)> {
    let (&first, rest) = bytes.split_first()?;
    let (&second, rest) = rest.split_first()?;
    let opcode = first & 0x0f;
    match second & 0x7f {
        126 => Some((
            opcode,
            4,
            u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize,
        )),
        127 => Some((
            opcode,
            10,
            u64::from_be_bytes(rest.get(..8)?.try_into().ok()?) as usize,
        )),
        len => Some((opcode, 2, len as usize)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_length_form() {
        assert_eq!(parse_header(&[0x81, 5]), Some((1, 2, 5)));
        assert_eq!(parse_header(&[0x81, 126, 1, 0]), Some((1, 4, 256)));
        assert_eq!(
            parse_header(&[0x88, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
            Some((8, 10, 65536))
        );
        assert_eq!(parse_header(&[0x81]), None);
        assert_eq!(parse_header(&[0x81, 126, 1]), None);
    }
}
