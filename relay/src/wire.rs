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

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// The largest frame either side accepts (an event is a chat message of at most 16 KiB text
/// plus names; 1 MiB leaves room without letting a broken peer allocate without bound).
pub const MAX_FRAME_BYTES: usize = 1 << 20;

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
        for body in [&b""[..], b"Z", b"A\x00", b"W\x00\x00"] {
            let mut buffer = BytesMut::new();
            buffer.put_u32(body.len() as u32);
            buffer.put_slice(body);
            assert!(codec.decode(&mut buffer).is_err(), "{body:?}");
        }
    }
}
