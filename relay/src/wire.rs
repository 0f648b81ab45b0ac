//! The relay ↔ gateway protocol: length-delimited binary frames over one TCP connection.
//!
//! A gateway opens a connection to every relay and tells it which channels it has subscribers
//! for; the relay forwards each event of those channels, in partition order, and the gateway
//! acknowledges what it has handed to its subscribers. Kept tiny and binary on purpose: it is
//! the hop every event takes once per gateway, and it needs nothing JSON gives.
//!
//! Every frame is `u32 length (big endian)` + `u8 kind` + body:
//!
//! | kind | direction | body |
//! | --- | --- | --- |
//! | `W` watch | gateway → relay | `u64 seq`, channel id (UTF-8) |
//! | `U` unwatch | gateway → relay | channel id |
//! | `A` ack | gateway → relay | `i32 partition`, `i64 offset`: everything up to it is delivered |
//! | `K` watching | relay → gateway | `u64 seq`: every watch up to it is in effect |
//! | `E` event | relay → gateway | `i32 partition`, `i64 offset`, the encoded [`MessageEvent`](crate::MessageEvent) |
//! | `H` hello | both (v2) | `u16 version`, then `n × (i32 partition, i64 offset)`: what the gateway delivered |
//! | `P` ping | both (v2) | empty: the sender is alive |
//! | `S` sent | relay → gateway (v2) | `i32 partition`, `i64 offset`: every event up to it that the gateway watches was sent |
//!
//! **Versions.** Version 1 is the first five frames. Version 2 adds the last three, which make
//! a link's loss detectable and repairable:
//! - A gateway first sends a probe watch of the empty channel (which no event has; an `Unwatch`
//!   follows it), then its watches. Once the relay answered anything, the gateway sends `Hello`
//!   with its version and, per partition, the newest offset it delivered. A version 2 relay
//!   takes the probe as the announcement of a `Hello`: it sends that link no live event until
//!   it has planned the hello's replay, and the replay starts no later than the first event it
//!   withheld (a live event sent first would move the gateway's mark past the replay, and the
//!   gateway would drop the replay as repeats). A probe with no `Hello` within the heartbeat
//!   timeout closes the link. A version 1 relay
//!   does not know `Hello` and closes the link; after two such closes the gateway speaks
//!   version 1 to it (and tries version 2 again after that link ends), so both directions of a
//!   rolling upgrade work. A link closed before the relay answered anything (a relay down
//!   behind a proxy that accepted the connection) does not count towards that.
//! - A version 2 relay answers `Hello` with its own version; the link speaks the lower one. A
//!   gateway that sends `W` without a `Hello` is version 1, and gets only version 1 frames.
//! - On a version 2 link each side sends `Ping` every heartbeat interval and closes a link that
//!   was silent for the heartbeat timeout: a partition that drops packets silently is detected
//!   within that timeout, and a frozen peer too.
//! - The relay sends `Sent` marks, so a gateway knows how far it has every event of a
//!   partition, not only of the channels that had events. When a gateway's link comes back, or
//!   a partition moves to a relay, the relay reads the partition again from Kafka past the
//!   gateway's mark and sends that gateway what it missed, in order, before anything newer.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// The largest frame either side accepts (an event is a chat message of at most 16 KiB text
/// plus names; 1 MiB leaves room without letting a broken peer allocate without bound).
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// The version this build speaks (and the newest it understands).
pub const WIRE_VERSION: u16 = 2;

/// The first version: watch, unwatch, ack, watching and event frames, with no hello.
pub const WIRE_V1: u16 = 1;

/// The most partitions a `Hello` may list (a topic has far fewer; bounds what a peer sends).
pub const MAX_HELLO_PARTITIONS: usize = 65_536;

/// How a link's liveness is checked (version 2 links only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Each side sends a `Ping` this often.
    pub interval: std::time::Duration,
    /// A link that received nothing for this long is closed: the detection time of a silent
    /// partition or a frozen peer.
    pub timeout: std::time::Duration,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            interval: std::time::Duration::from_secs(1),
            timeout: std::time::Duration::from_secs(3),
        }
    }
}

/// One frame of the relay ↔ gateway protocol (see the table above).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireFrame {
    /// `W`: the gateway wants the channel's events.
    Watch {
        /// Numbers the watch, so that [`WireFrame::Watching`] can confirm it.
        seq: u64,
        /// The channel's id.
        channel: String,
    },
    /// `U`: the gateway no longer wants the channel.
    Unwatch {
        /// The channel's id.
        channel: String,
    },
    /// `A`: every event of the partition up to `offset` reached its subscribers.
    Ack {
        /// The Kafka partition.
        partition: i32,
        /// The newest delivered offset.
        offset: i64,
    },
    /// `K`: every watch numbered up to `seq` is in effect.
    Watching {
        /// The newest watch in effect.
        seq: u64,
    },
    /// `E`: one event, in partition order.
    Event {
        /// The Kafka partition it came from.
        partition: i32,
        /// Its offset there, which the gateway acknowledges.
        offset: i64,
        /// The encoded event.
        payload: Bytes,
    },
    /// `H`: the sender's version; from a gateway, also what it delivered per partition.
    Hello {
        /// The newest version the sender speaks.
        version: u16,
        /// `(partition, newest offset delivered)`; empty from a relay.
        delivered: Vec<(i32, i64)>,
    },
    /// `P`: the sender is alive.
    Ping,
    /// `S`: every event of the partition up to `offset` that the gateway watches was sent.
    Sent {
        /// The Kafka partition.
        partition: i32,
        /// The newest offset covered.
        offset: i64,
    },
}

impl WireFrame {
    /// The first version that has this frame: a link never carries a frame newer than it speaks.
    pub fn version(&self) -> u16 {
        match self {
            WireFrame::Hello { .. } | WireFrame::Ping | WireFrame::Sent { .. } => 2,
            _ => WIRE_V1,
        }
    }
}

/// Why a relay connection ended.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The TCP connection failed.
    #[error("relay connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something the protocol does not allow.
    #[error("relay protocol violation: {0}")]
    Malformed(&'static str),
}

/// Frames over [`LengthDelimitedCodec`], for `tokio_util::codec::Framed`.
pub struct WireCodec {
    inner: LengthDelimitedCodec,
}

impl Default for WireCodec {
    fn default() -> Self {
        Self {
            inner: LengthDelimitedCodec::builder()
                .max_frame_length(MAX_FRAME_BYTES)
                .new_codec(),
        }
    }
}

impl Decoder for WireCodec {
    type Item = WireFrame;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<WireFrame>, WireError> {
        let Some(mut body) = self.inner.decode(src)? else {
            return Ok(None);
        };
        if body.is_empty() {
            return Err(WireError::Malformed("empty frame"));
        }
        let kind = body.get_u8();
        let need = |body: &BytesMut, n: usize| {
            if body.len() < n {
                Err(WireError::Malformed("frame too short"))
            } else {
                Ok(())
            }
        };
        let text = |body: BytesMut| {
            String::from_utf8(body.to_vec())
                .map_err(|_| WireError::Malformed("channel id is not UTF-8"))
        };
        let frame = match kind {
            b'W' => {
                need(&body, 8)?;
                let seq = body.get_u64();
                WireFrame::Watch {
                    seq,
                    channel: text(body)?,
                }
            }
            b'U' => WireFrame::Unwatch {
                channel: text(body)?,
            },
            b'A' => {
                need(&body, 12)?;
                WireFrame::Ack {
                    partition: body.get_i32(),
                    offset: body.get_i64(),
                }
            }
            b'K' => {
                need(&body, 8)?;
                WireFrame::Watching {
                    seq: body.get_u64(),
                }
            }
            b'E' => {
                need(&body, 12)?;
                let partition = body.get_i32();
                let offset = body.get_i64();
                WireFrame::Event {
                    partition,
                    offset,
                    payload: body.freeze(),
                }
            }
            b'H' => {
                need(&body, 2)?;
                let version = body.get_u16();
                if body.len() % 12 != 0 {
                    return Err(WireError::Malformed("hello has a partial offset"));
                }
                if body.len() / 12 > MAX_HELLO_PARTITIONS {
                    return Err(WireError::Malformed("hello lists too many partitions"));
                }
                let mut delivered = Vec::with_capacity(body.len() / 12);
                while body.has_remaining() {
                    delivered.push((body.get_i32(), body.get_i64()));
                }
                WireFrame::Hello { version, delivered }
            }
            b'P' => WireFrame::Ping,
            b'S' => {
                need(&body, 12)?;
                WireFrame::Sent {
                    partition: body.get_i32(),
                    offset: body.get_i64(),
                }
            }
            _ => return Err(WireError::Malformed("unknown frame kind")),
        };
        Ok(Some(frame))
    }
}

impl Encoder<WireFrame> for WireCodec {
    type Error = WireError;

    fn encode(&mut self, frame: WireFrame, dst: &mut BytesMut) -> Result<(), WireError> {
        let mut body = BytesMut::new();
        match frame {
            WireFrame::Watch { seq, channel } => {
                body.put_u8(b'W');
                body.put_u64(seq);
                body.put_slice(channel.as_bytes());
            }
            WireFrame::Unwatch { channel } => {
                body.put_u8(b'U');
                body.put_slice(channel.as_bytes());
            }
            WireFrame::Ack { partition, offset } => {
                body.put_u8(b'A');
                body.put_i32(partition);
                body.put_i64(offset);
            }
            WireFrame::Watching { seq } => {
                body.put_u8(b'K');
                body.put_u64(seq);
            }
            WireFrame::Event {
                partition,
                offset,
                payload,
            } => {
                body.reserve(13 + payload.len());
                body.put_u8(b'E');
                body.put_i32(partition);
                body.put_i64(offset);
                body.put_slice(&payload);
            }
            WireFrame::Hello { version, delivered } => {
                body.put_u8(b'H');
                body.put_u16(version);
                for (partition, offset) in delivered {
                    body.put_i32(partition);
                    body.put_i64(offset);
                }
            }
            WireFrame::Ping => body.put_u8(b'P'),
            WireFrame::Sent { partition, offset } => {
                body.put_u8(b'S');
                body.put_i32(partition);
                body.put_i64(offset);
            }
        }
        self.inner.encode(body.freeze(), dst)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_round_trips() {
        let frames = [
            WireFrame::Watch {
                seq: 7,
                channel: "c1".into(),
            },
            WireFrame::Unwatch {
                channel: "c1".into(),
            },
            WireFrame::Ack {
                partition: 3,
                offset: 1 << 40,
            },
            WireFrame::Watching { seq: 7 },
            WireFrame::Event {
                partition: 0,
                offset: 5,
                payload: Bytes::from_static(b"{\"v\":1}"),
            },
            WireFrame::Hello {
                version: WIRE_VERSION,
                delivered: vec![(0, 41), (7, -1)],
            },
            WireFrame::Hello {
                version: 9,
                delivered: vec![],
            },
            WireFrame::Ping,
            WireFrame::Sent {
                partition: 2,
                offset: 99,
            },
        ];
        let mut codec = WireCodec::default();
        let mut buffer = BytesMut::new();
        for frame in frames.clone() {
            codec.encode(frame, &mut buffer).unwrap();
        }
        for frame in frames {
            assert_eq!(codec.decode(&mut buffer).unwrap(), Some(frame));
        }
        assert_eq!(codec.decode(&mut buffer).unwrap(), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut codec = WireCodec::default();
        for body in [
            &b""[..],
            b"Z",
            b"A\x00",
            b"W\x00\x00",
            b"H\x00",
            b"H\x00\x02\x00",
            b"S\x00",
        ] {
            let mut buffer = BytesMut::new();
            buffer.put_u32(body.len() as u32);
            buffer.put_slice(body);
            assert!(codec.decode(&mut buffer).is_err(), "{body:?}");
        }
    }
}
