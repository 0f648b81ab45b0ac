//! Identifiers shaped like Mattermost's: 26 characters of its base32 alphabet over 128 random
//! bits, so ids from the embedded store and from Mattermost look and sort the same to clients.

use rand::RngCore;

const ALPHABET: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";

/// A new 26-character id of `[a-z0-9]`, as Mattermost's ids look.
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let bits = u128::from_be_bytes(bytes);
    // 26 characters * 5 bits = 130 bits: the top character carries the 3 highest bits.
    (0..26)
        .rev()
        .map(|i| ALPHABET[((bits >> (i * 5)) & 31) as usize] as char)
        .collect()
}

/// Random secret material, hex encoded (refresh tokens, generated JWT secrets).
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_26_chars_of_the_alphabet_and_distinct() {
        let a = new_id();
        assert_eq!(a.len(), 26);
        assert!(a.bytes().all(|b| ALPHABET.contains(&b)));
        assert_ne!(a, new_id());
    }
}
