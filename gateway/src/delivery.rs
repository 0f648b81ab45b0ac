//! One subscription delivery: the `next`/`data` message of one subscriber for one event.
//!
//! A delivery is `prefix` (`{"id":…,"type":…,"payload":`, built once per subscription, in the
//! subscriber's dialect) + `payload` (serialized once per group and event, shared by every
//! member) + `}`. Nothing is copied per subscriber until the bytes reach the socket.

use bytes::Bytes;

use crate::dialect::Dialect;
use crate::frames;

/// One `next`/`data` message for one subscription, as its shared parts.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The subscriber's constant start of the message (see [`Delivery::prefix_for`]).
    pub prefix: Bytes,
    /// The group's rendered payload for one event.
    pub payload: Bytes,
}

impl Delivery {
    /// What closes the message after the payload.
    pub const SUFFIX: &'static [u8] = b"}";

    /// Length of the message this delivery encodes to.
    pub fn message_len(&self) -> usize {
        self.prefix.len() + self.payload.len() + Self::SUFFIX.len()
    }

    /// The constant start of every delivery to subscription `id`, up to where its payload goes.
    pub fn prefix_for(dialect: Dialect, id: &str) -> Bytes {
        let mut prefix = Vec::with_capacity(id.len() + 40);
        prefix.extend_from_slice(b"{\"id\":");
        serde_json::to_writer(&mut prefix, id).expect("a string always serializes");
        prefix.extend_from_slice(b",\"type\":\"");
        prefix.extend_from_slice(dialect.data_type().as_bytes());
        prefix.extend_from_slice(b"\",\"payload\":");
        Bytes::from(prefix)
    }

    /// Appends this delivery to `buf` as one text frame.
    #[inline]
    pub fn push_to(&self, buf: &mut Vec<u8>) {
        frames::push_text_parts(buf, &self.prefix, &self.payload, Self::SUFFIX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spliced_delivery_is_the_message_encode_would_write() {
        let payload = br#"{"data":{"onNewChatMessage":null}}"#;
        for dialect in [Dialect::TransportWs, Dialect::Legacy] {
            let delivery = Delivery {
                prefix: Delivery::prefix_for(dialect, "sub \"1\""),
                payload: Bytes::from_static(payload),
            };
            let mut spliced = Vec::new();
            delivery.push_to(&mut spliced);
            let value: serde_json::Value = serde_json::from_slice(payload).unwrap();
            let mut encoded = Vec::new();
            frames::push_text(
                &mut encoded,
                &crate::dialect::encode(Some("sub \"1\""), dialect.data_type(), Some(value)),
            );
            assert_eq!(spliced, encoded);
        }
    }
}
