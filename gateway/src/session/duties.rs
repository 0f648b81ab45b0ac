//! The session's one timer: the `connection_init` deadline, the token's expiry and the
//! membership re-checks, each at its own instant. An idle connection holds one timer entry,
//! not three.

use std::time::Duration;

use mmsub_api::clock::unix_seconds;

/// What the session's one timer serves, each at its own instant.
pub(super) struct Duties {
    /// Until `connection_init` arrives.
    pub(super) init_at: Option<tokio::time::Instant>,
    /// The token's `exp` (Unix seconds) that `token_at` was computed for.
    token_exp: Option<i64>,
    /// `exp` plus the grace, as an instant.
    token_at: Option<tokio::time::Instant>,
    /// The next membership re-check (none when disabled).
    recheck_at: Option<tokio::time::Instant>,
    recheck_period: Duration,
}

/// The duty whose time has come.
pub(super) enum Due {
    InitTimeout,
    TokenExpired,
    Recheck,
    /// The timer fired for a duty that has since moved (a renewed token).
    Nothing,
}

impl Duties {
    pub(super) fn new(now: tokio::time::Instant, settings: &crate::GatewaySettings) -> Self {
        let period = settings.membership_recheck;
        // Spread over the period, so that a node's connections do not all check at once.
        let recheck_at = (!period.is_zero()).then(|| now + period.mul_f64(rand::random::<f64>()));
        Self {
            init_at: Some(now + settings.connection_init_timeout),
            token_exp: None,
            token_at: None,
            recheck_at,
            recheck_period: period,
        }
    }

    pub(super) fn next(&self) -> Option<tokio::time::Instant> {
        [self.init_at, self.token_at, self.recheck_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Follows the token's expiry: `exp` is `None` when nothing expires.
    pub(super) fn track_token(&mut self, exp: Option<i64>, grace: Duration) {
        if exp == self.token_exp {
            return;
        }
        self.token_exp = exp;
        self.token_at = exp.map(|exp| {
            let left = Duration::from_secs(exp.saturating_sub(unix_seconds()).max(0) as u64);
            tokio::time::Instant::now() + left + grace
        });
    }

    pub(super) fn due(&mut self, now: tokio::time::Instant) -> Due {
        let passed = |at: Option<tokio::time::Instant>| at.is_some_and(|at| at <= now);
        if passed(self.init_at) {
            Due::InitTimeout
        } else if passed(self.token_at) {
            Due::TokenExpired
        } else if passed(self.recheck_at) {
            self.recheck_at = Some(now + self.recheck_period);
            Due::Recheck
        } else {
            Due::Nothing
        }
    }
}
