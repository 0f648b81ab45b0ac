//! JSON Web Tokens exactly as django-graphql-jwt wrote them, so tokens issued by the original
//! server (signed with the same `DJANGO_SECRET_KEY`) keep working here and vice versa.
//!
//! Payload `{"username", "exp", "origIat"}`, HS256. Access tokens live `access_token_ttl`;
//! a token may be exchanged for a fresh one until `origIat + refresh_window`. On the
//! Mattermost backend a token also carries `mmSession`: the user's Mattermost session,
//! encrypted by the backend (`backend::mattermost::sealed`), so that any API node can act as
//! the user while the client cannot read it.

use std::time::Duration;

use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::backend::Actor;
use crate::clock::unix_seconds;

/// The claims this server reads. Other claims in a token are kept in [`Verified::payload`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user the token is for.
    pub username: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// When the first token of this login was issued; refreshes keep it (Unix seconds).
    #[serde(rename = "origIat")]
    pub orig_iat: i64,
    /// The backend's credential for the user ([`crate::backend::Actor::credential`]).
    #[serde(rename = "mmSession", default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl Claims {
    /// The user these claims act for, with the backend's credential.
    pub fn actor(&self) -> Actor {
        Actor {
            username: self.username.clone(),
            credential: self.credential.clone(),
        }
    }
}

/// Why a token was not accepted; the messages are django-graphql-jwt's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// `exp` has passed.
    #[error("Signature has expired")]
    Expired,
    /// Not a token signed with this server's secret, or malformed.
    #[error("Error decoding signature")]
    Invalid,
    /// The refresh window from `origIat` has passed.
    #[error("Refresh has expired")]
    RefreshExpired,
    /// `nbf` in the future.
    #[error("Token is not valid yet")]
    NotYetValid,
    /// An `exp` further ahead than this server's access lifetime, or an `origIat` in the
    /// future: not a token this server (or the original) would have issued.
    #[error("Token lifetime is longer than this server issues")]
    TooLong,
}

/// Clock difference between nodes that a token's times may show.
pub const CLOCK_SKEW_SECS: i64 = 60;

/// The shortest signing secret accepted at start: HS256 needs 256 bits to be as strong as
/// its hash. Django's generated `SECRET_KEY` values have 50 characters.
pub const MIN_SECRET_BYTES: usize = 32;

/// A token that passed every check.
#[derive(Debug, Clone)]
pub struct Verified {
    /// What this server reads from it.
    pub claims: Claims,
    /// The whole payload as signed, for `verifyToken` / `tokenAuth` answers.
    pub payload: Value,
}

/// A freshly signed access token.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The signed token.
    pub token: String,
    /// Its payload, for the answer's `payload` field.
    pub payload: Value,
    /// Unix time until which this token can be refreshed (`origIat + refresh window`).
    pub refresh_expires_in: i64,
}

/// The signing secret as keys, and the lifetimes of what they sign. Never printed.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// How tokens are checked, with and without their expiry (refresh); built once, since
    /// every request checks a token.
    checked: Validation,
    checked_but_expiry: Validation,
    access_ttl: Duration,
    refresh_window: Duration,
}

/// HS256 with no leeway: `exp` required, `nbf` honoured, and `exp` checked when asked.
fn validation(check_expiry: bool) -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.validate_exp = check_expiry;
    validation.validate_nbf = true;
    validation.required_spec_claims = ["exp".to_owned()].into_iter().collect();
    validation
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys { .. }") // never print the secret
    }
}

impl JwtKeys {
    /// Keys over `secret`: access tokens live `access_ttl`, and refresh within `refresh_window`
    /// of their `origIat`.
    pub fn new(secret: &[u8], access_ttl: Duration, refresh_window: Duration) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            checked: validation(true),
            checked_but_expiry: validation(false),
            access_ttl,
            refresh_window,
        }
    }

    /// Signs a new access token for the actor; `orig_iat` is carried over on refresh.
    pub fn issue(&self, actor: &Actor, orig_iat: Option<i64>) -> IssuedToken {
        let now = unix_seconds();
        let claims = Claims {
            username: actor.username.clone(),
            exp: now + self.access_ttl.as_secs() as i64,
            orig_iat: orig_iat.unwrap_or(now),
            credential: actor.credential.clone(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail");
        IssuedToken {
            token,
            payload: serde_json::to_value(&claims).expect("claims serialize"),
            refresh_expires_in: claims.orig_iat + self.refresh_window.as_secs() as i64,
        }
    }

    /// Checks signature and expiry.
    pub fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        self.decode(token, true)
    }

    /// Exchanges a token, expired or not, for a new one while its refresh window is open.
    pub fn refresh(&self, token: &str) -> Result<IssuedToken, TokenError> {
        let verified = self.decode(token, false)?;
        let deadline = verified.claims.orig_iat + self.refresh_window.as_secs() as i64;
        if unix_seconds() >= deadline {
            return Err(TokenError::RefreshExpired);
        }
        Ok(self.issue(&verified.claims.actor(), Some(verified.claims.orig_iat)))
    }

    fn decode(&self, token: &str, check_expiry: bool) -> Result<Verified, TokenError> {
        // Larger than any token this server issues is refused before it is decoded.
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Invalid);
        }
        let validation = if check_expiry {
            &self.checked
        } else {
            &self.checked_but_expiry
        };
        let data = jsonwebtoken::decode::<Value>(token, &self.decoding, validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                _ => TokenError::Invalid,
            },
        )?;
        let claims = Claims::deserialize(&data.claims).map_err(|_| TokenError::Invalid)?;
        let now = unix_seconds();
        let longest = self.access_ttl.as_secs() as i64 + CLOCK_SKEW_SECS;
        if claims.exp > now.saturating_add(longest) || claims.orig_iat > now + CLOCK_SKEW_SECS {
            return Err(TokenError::TooLong);
        }
        Ok(Verified {
            claims,
            payload: data.claims,
        })
    }
}

/// Longest token accepted (this server's are about 200 bytes; 1,200 with a sealed session).
pub const MAX_TOKEN_BYTES: usize = 8 << 10;

/// Extracts the token from `JWT <token>` or `Bearer <token>` (scheme case-insensitive).
pub fn token_from_authorization(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("jwt") || scheme.eq_ignore_ascii_case("bearer"))
        .then_some(token)
        .filter(|t| !t.is_empty())
}

/// Who is making a request, as far as its token says.
#[derive(Debug, Clone)]
pub enum Viewer {
    /// No token was presented.
    Anonymous,
    /// A valid token's user, and when that token expires (Unix seconds).
    User {
        /// Who the token names.
        actor: Actor,
        /// The token's `exp`.
        expires_at: i64,
    },
    /// A token was presented but not accepted.
    Rejected(TokenError),
}

impl Viewer {
    /// The viewer a bare token (or none) makes.
    pub fn from_token(keys: &JwtKeys, token: Option<&str>) -> Self {
        match token {
            None => Viewer::Anonymous,
            Some(token) => match keys.verify(token) {
                Ok(v) => Viewer::User {
                    actor: v.claims.actor(),
                    expires_at: v.claims.exp,
                },
                Err(e) => Viewer::Rejected(e),
            },
        }
    }

    /// The viewer an `Authorization: JWT <token>` (or `Bearer`) header makes.
    pub fn from_authorization_header(keys: &JwtKeys, header: Option<&str>) -> Self {
        match header {
            None => Viewer::Anonymous,
            Some(h) => match token_from_authorization(h) {
                Some(token) => Viewer::from_token(keys, Some(token)),
                None => Viewer::Rejected(TokenError::Invalid),
            },
        }
    }

    /// The user, when the token was accepted.
    pub fn actor(&self) -> Option<&Actor> {
        match self {
            Viewer::User { actor, .. } => Some(actor),
            _ => None,
        }
    }

    /// When the viewer's token expires; `None` without a valid token.
    pub fn expires_at(&self) -> Option<i64> {
        match self {
            Viewer::User { expires_at, .. } => Some(*expires_at),
            _ => None,
        }
    }

    /// The viewer as its token stands at `now`: a user whose token has expired since it was
    /// checked is refused as HTTP would refuse the same token now.
    pub fn at(&self, now: i64) -> Viewer {
        match self {
            Viewer::User { expires_at, .. } if *expires_at <= now => {
                Viewer::Rejected(TokenError::Expired)
            }
            other => other.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(access: u64) -> JwtKeys {
        JwtKeys::new(
            b"secret",
            Duration::from_secs(access),
            Duration::from_secs(3600),
        )
    }

    #[test]
    fn issues_the_django_graphql_jwt_payload() {
        let issued = keys(1800).issue(&Actor::named("alice"), None);
        let v = keys(1800).verify(&issued.token).unwrap();
        assert_eq!(v.claims.username, "alice");
        assert_eq!(v.claims.exp - v.claims.orig_iat, 1800);
        let fields: Vec<_> = issued
            .payload
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(fields.len(), 3);
        assert!(issued.payload.get("origIat").is_some());
    }

    #[test]
    fn rejects_wrong_secret_and_garbage() {
        let issued = keys(60).issue(&Actor::named("alice"), None);
        let other = JwtKeys::new(b"other", Duration::from_secs(60), Duration::from_secs(60));
        assert_eq!(
            other.verify(&issued.token).unwrap_err(),
            TokenError::Invalid
        );
        assert_eq!(
            keys(60).verify("not.a.jwt").unwrap_err(),
            TokenError::Invalid
        );
    }

    #[test]
    fn expired_tokens_fail_verify_but_refresh_within_the_window() {
        let k = keys(60);
        let now = unix_seconds();
        let claims = Claims {
            username: "bob".into(),
            exp: now - 10,
            orig_iat: now - 70,
            credential: None,
        };
        let token = jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert_eq!(k.verify(&token).unwrap_err(), TokenError::Expired);
        let refreshed = k.refresh(&token).unwrap();
        assert_eq!(
            k.verify(&refreshed.token).unwrap().claims.orig_iat,
            now - 70
        );

        let old = Claims {
            username: "bob".into(),
            exp: now - 10,
            orig_iat: now - 7200,
            credential: None,
        };
        let token = jsonwebtoken::encode(
            &Header::default(),
            &old,
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert_eq!(k.refresh(&token).unwrap_err(), TokenError::RefreshExpired);
    }

    fn signed(claims: Value) -> String {
        jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap()
    }

    #[test]
    fn times_no_issued_token_has_are_refused() {
        let k = keys(60);
        let now = unix_seconds();
        let ok = signed(serde_json::json!({ "username": "a", "exp": now + 30, "origIat": now }));
        assert!(k.verify(&ok).is_ok());
        let early = signed(
            serde_json::json!({ "username": "a", "exp": now + 30, "origIat": now, "nbf": now + 20 }),
        );
        assert_eq!(k.verify(&early).unwrap_err(), TokenError::NotYetValid);
        let forever = signed(
            serde_json::json!({ "username": "a", "exp": now + 86_400 * 365, "origIat": now }),
        );
        assert_eq!(k.verify(&forever).unwrap_err(), TokenError::TooLong);
        assert_eq!(k.refresh(&forever).unwrap_err(), TokenError::TooLong);
        let future =
            signed(serde_json::json!({ "username": "a", "exp": now + 30, "origIat": now + 3600 }));
        assert_eq!(k.verify(&future).unwrap_err(), TokenError::TooLong);
        assert_eq!(
            k.verify(&"a".repeat(MAX_TOKEN_BYTES + 1)).unwrap_err(),
            TokenError::Invalid
        );
    }

    #[test]
    fn authorization_schemes() {
        assert_eq!(token_from_authorization("JWT abc"), Some("abc"));
        assert_eq!(token_from_authorization("Bearer abc"), Some("abc"));
        assert_eq!(token_from_authorization("jwt  abc "), Some("abc"));
        assert_eq!(token_from_authorization("Basic abc"), None);
        assert_eq!(token_from_authorization("abc"), None);
    }
}
