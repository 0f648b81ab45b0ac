//! A client's WebSocket frame built by hand, for tests that send what no client library would
//! (a wrong opcode, a lying length, a frame over a limit). Masked, as RFC 6455 §5.3 requires
//! of every client frame. Shared by `tests/api/` and `tests/properties/`.

/// One frame: `first_byte` (FIN, RSV, opcode), the length `claimed_len` says (the payload's
/// own when `None`), the mask and the masked payload.
pub fn masked_frame(first_byte: u8, payload: &[u8], claimed_len: Option<u64>) -> Vec<u8> {
    let mask = [0x5a, 0x01, 0xc3, 0x7e];
    let len = claimed_len.unwrap_or(payload.len() as u64);
    let mut frame = vec![first_byte];
    if len < 126 {
        frame.push(0x80 | len as u8);
    } else if u16::try_from(len).is_ok() {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&len.to_be_bytes());
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}
