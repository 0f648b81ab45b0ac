//! Sealing: how a user's Mattermost session travels inside our JWT without the client (or
//! anyone reading logs) being able to use it directly.
//!
//! API nodes keep no session table, so the session must come with each request. It is
//! encrypted and authenticated with ChaCha20-Poly1305 under a key derived (HKDF-SHA256, its own
//! label) from the node's signing secret: every node that can check a token can open its
//! session, and a token with a tampered or foreign session is refused.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::model::MmUser;

const NONCE_BYTES: usize = 12;

/// Seals values under a key derived from the signing secret, and opens them.
#[derive(Clone)]
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer { .. }")
    }
}

impl Sealer {
    /// A sealer keyed from `secret` (its own HKDF label).
    pub fn new(secret: &[u8]) -> Self {
        let mut key = [0u8; 32];
        hkdf::Hkdf::<sha2::Sha256>::new(Some(b"mmsub"), secret)
            .expand(b"mattermost session seal v1", &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 length");
        Self {
            cipher: ChaCha20Poly1305::new(&Key::from(key)),
        }
    }

    /// Serializes and encrypts `value` into URL-safe base64.
    pub fn seal<T: Serialize>(&self, value: &T) -> String {
        let plain = serde_json::to_vec(value).expect("sealed values serialize");
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(&Nonce::from(nonce), plain.as_slice())
            .expect("ChaCha20-Poly1305 encryption cannot fail for in-memory data");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// `None` for anything this sealer did not seal, or that was changed since.
    pub fn open<T: DeserializeOwned>(&self, sealed: &str) -> Option<T> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if bytes.len() < NONCE_BYTES {
            return None;
        }
        let (nonce, body) = bytes.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().ok()?;
        let plain = self.cipher.decrypt(&Nonce::from(nonce), body).ok()?;
        serde_json::from_slice(&plain).ok()
    }
}

// ---- what is sealed ----

/// What the sealed `mmSession` claim of a JWT holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealedSession {
    /// The Mattermost session token.
    pub token: String,
    /// The user's id.
    pub id: String,
    /// The user's name.
    pub username: String,
    /// The user's email address.
    pub email: String,
    /// The user's Mattermost roles (`system_user system_admin`…).
    pub roles: String,
}

impl SealedSession {
    /// The session's user, as Mattermost describes it.
    pub fn user(&self) -> MmUser {
        MmUser {
            id: self.id.clone(),
            username: self.username.clone(),
            email: self.email.clone(),
            roles: self.roles.clone(),
            delete_at: 0,
        }
    }
}

/// What a refresh token from `userGetToken` holds (sealed too).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealedRefresh {
    /// [`REFRESH_PURPOSE`]: a sealed session cannot pass for a refresh token.
    pub purpose: String,
    /// Until when it may be redeemed (Unix seconds).
    pub expires_at: i64,
    /// The sealed session it renews.
    pub session: String,
}

/// The purpose of a sealed refresh token.
pub const REFRESH_PURPOSE: &str = "refresh";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_tampering_or_another_key() {
        let sealer = Sealer::new(b"secret");
        let sealed = sealer.seal(&("token-123", 7));
        assert!(!sealed.contains("token-123"));
        assert_eq!(
            sealer.open::<(String, i32)>(&sealed),
            Some(("token-123".into(), 7))
        );
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        assert_eq!(
            sealer.open::<(String, i32)>(&URL_SAFE_NO_PAD.encode(bytes)),
            None
        );
        assert_eq!(Sealer::new(b"other").open::<(String, i32)>(&sealed), None);
        assert_eq!(sealer.open::<(String, i32)>("garbage"), None);
    }
}
