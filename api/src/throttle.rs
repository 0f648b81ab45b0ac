//! Token buckets for what an attacker can repeat cheaply and we pay for dearly: logins (a
//! password hash each), sign-ups, message sends.
//!
//! A bucket holds up to `burst` attempts and refills at `per_minute`; an attempt takes one or
//! is told how long until one is back. Buckets live in a map bounded in size: when it is full,
//! buckets that have refilled completely (idle keys, indistinguishable from new ones) are
//! dropped first.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::ClientSlots;

/// Distinct keys (usernames, addresses) one throttle remembers.
pub const MAX_KEYS: usize = 100_000;

/// `per_minute` attempts on average, up to `burst` at once; `per_minute == 0` turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained rate: this many per minute.
    pub per_minute: u32,
    /// Burst: this many at once before the rate applies.
    pub burst: u32,
}

impl RateLimit {
    /// No limit.
    pub const OFF: RateLimit = RateLimit {
        per_minute: 0,
        burst: 0,
    };
}

/// `off`, `N/min` (a burst of N) or `N/min:B` (a burst of B): how the flags spell it.
impl std::str::FromStr for RateLimit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("off") {
            return Ok(RateLimit::OFF);
        }
        let bad = || format!("{text:?} is not a rate: use N/min, N/min:BURST or off");
        let (rate, burst) = match text.split_once(':') {
            Some((rate, burst)) => (rate, Some(burst)),
            None => (text, None),
        };
        let per_minute: u32 = rate
            .strip_suffix("/min")
            .and_then(|n| n.trim().parse().ok())
            .filter(|n| *n > 0)
            .ok_or_else(bad)?;
        let burst = match burst {
            Some(b) => b.trim().parse().ok().filter(|b| *b > 0).ok_or_else(bad)?,
            None => per_minute,
        };
        Ok(RateLimit { per_minute, burst })
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.per_minute, self.burst) {
            (0, _) => f.write_str("off"),
            (rate, burst) if rate == burst => write!(f, "{rate}/min"),
            (rate, burst) => write!(f, "{rate}/min:{burst}"),
        }
    }
}

/// How long until the next attempt would be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds, rounded up: what `Retry-After` and `retryAfter` say.
    pub fn secs(self) -> u64 {
        self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0)
    }
}

/// One token bucket: what a single key (or a single connection) has left.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A bucket with its whole burst available.
    pub fn full(limit: RateLimit, now: Instant) -> Self {
        Bucket {
            tokens: f64::from(limit.burst.max(1)),
            at: now,
        }
    }

    /// The tokens there would be at `now`.
    fn refilled(&self, limit: RateLimit, now: Instant) -> f64 {
        let per_sec = f64::from(limit.per_minute) / 60.0;
        let burst = f64::from(limit.burst.max(1));
        (self.tokens + now.duration_since(self.at).as_secs_f64() * per_sec).min(burst)
    }

    /// Takes one attempt at `now`, or says when one will be available.
    pub fn try_take(&mut self, limit: RateLimit, now: Instant) -> Result<(), RetryAfter> {
        if limit.per_minute == 0 {
            return Ok(());
        }
        let tokens = self.refilled(limit, now);
        if tokens >= 1.0 {
            *self = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            return Ok(());
        }
        *self = Bucket { tokens, at: now };
        let per_sec = f64::from(limit.per_minute) / 60.0;
        Err(RetryAfter(Duration::from_secs_f64(
            (1.0 - tokens) / per_sec,
        )))
    }
}

/// A bucket per key, in a map bounded by [`MAX_KEYS`].
pub struct Throttle<K> {
    limit: RateLimit,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> Throttle<K> {
    /// A throttle allowing `limit` per key.
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one attempt for `key`, or says when one will be available.
    pub fn try_take(&self, key: &K) -> Result<(), RetryAfter> {
        self.try_take_at(key, Instant::now())
    }

    fn try_take_at(&self, key: &K, now: Instant) -> Result<(), RetryAfter> {
        let limit = self.limit;
        if limit.per_minute == 0 {
            return Ok(());
        }
        let burst = f64::from(limit.burst.max(1));
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            buckets.retain(|_, b| b.refilled(limit, now) < burst);
            if buckets.len() >= MAX_KEYS {
                // Every key is busy: forget them rather than grow or refuse everyone new.
                buckets.clear();
            }
        }
        buckets
            .entry(key.clone())
            .or_insert_with(|| Bucket::full(limit, now))
            .try_take(limit, now)
    }
}

/// The node's throttles, shared by HTTP and WebSocket requests.
pub struct Throttles {
    /// `tokenAuth` / `userGetToken` attempts per username.
    pub login_per_user: Throttle<String>,
    /// Login attempts per client address.
    pub login_per_client: Throttle<IpAddr>,
    /// `userCreate` per client address.
    pub signup_per_client: Throttle<IpAddr>,
    /// `textMessageSend` per user.
    pub send_per_user: Throttle<String>,
    /// Logins of one client address being checked at once: its share of the hashing pool.
    pub logins_in_flight: Arc<ClientSlots>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_refill_rate() {
        let throttle = Throttle::new(RateLimit {
            per_minute: 60,
            burst: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(throttle.try_take_at(&"alice", t0).is_ok());
        }
        let wait = throttle.try_take_at(&"alice", t0).unwrap_err();
        assert_eq!(wait.secs(), 1);
        assert!(
            throttle.try_take_at(&"bob", t0).is_ok(),
            "keys are separate"
        );
        assert!(throttle
            .try_take_at(&"alice", t0 + Duration::from_millis(1001))
            .is_ok());
        assert!(throttle
            .try_take_at(&"alice", t0 + Duration::from_millis(1002))
            .is_err());
    }

    #[test]
    fn rates_parse_as_the_flags_spell_them() {
        assert_eq!(
            "10/min".parse(),
            Ok(RateLimit {
                per_minute: 10,
                burst: 10
            })
        );
        assert_eq!(
            "600/min:100".parse(),
            Ok(RateLimit {
                per_minute: 600,
                burst: 100
            })
        );
        assert_eq!("off".parse(), Ok(RateLimit::OFF));
        for bad in ["10", "0/min", "x/min", "10/min:0", "10/s"] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad}");
        }
        assert_eq!(
            RateLimit {
                per_minute: 600,
                burst: 100
            }
            .to_string(),
            "600/min:100"
        );
    }

    #[test]
    fn off_lets_everything_through_and_the_map_stays_bounded() {
        let off = Throttle::new(RateLimit::OFF);
        for _ in 0..1000 {
            assert!(off.try_take(&1u32).is_ok());
        }
        let throttle = Throttle::new(RateLimit {
            per_minute: 1,
            burst: 1,
        });
        let now = Instant::now();
        for key in 0..(MAX_KEYS as u32 + 10) {
            let _ = throttle.try_take_at(&key, now);
        }
        assert!(throttle.buckets.lock().unwrap().len() <= MAX_KEYS);
    }
}
