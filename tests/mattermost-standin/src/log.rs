//! The log of requests served, by route template: the recent ones in order (for tests that
//! take them, [`crate::StandIn::take_requests`]) and a count per route since start (for load
//! runs, `GET /standin/requests`, which divide Mattermost requests by reads).

use std::collections::BTreeMap;

/// Entries kept for `take_requests` before the oldest are dropped: a stand-in run by hand
/// under load is never asked for them, and must not grow without bound. The counts stay exact.
const RECENT_LIMIT: usize = 100_000;

#[derive(Debug, Default)]
pub struct RequestLog {
    recent: Vec<String>,
    counts: BTreeMap<String, u64>,
}

impl RequestLog {
    /// Records one request, `"METHOD /template"`.
    pub fn record(&mut self, request: String) {
        if let Some(count) = self.counts.get_mut(&request) {
            *count += 1;
        } else {
            self.counts.insert(request.clone(), 1);
        }
        if self.recent.len() >= RECENT_LIMIT {
            self.recent.drain(..RECENT_LIMIT / 2);
        }
        self.recent.push(request);
    }

    /// The recent requests in order, forgotten once taken.
    pub fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.recent)
    }

    /// Requests per route since the stand-in started.
    pub fn counts(&self) -> &BTreeMap<String, u64> {
        &self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_survive_taking_and_the_recent_log_is_bounded() {
        let mut log = RequestLog::default();
        for _ in 0..RECENT_LIMIT + 10 {
            log.record("GET /users/me".into());
        }
        log.record("POST /posts".into());
        assert!(log.take().len() <= RECENT_LIMIT);
        assert!(log.take().is_empty());
        assert_eq!(log.counts()["GET /users/me"], (RECENT_LIMIT + 10) as u64);
        assert_eq!(log.counts()["POST /posts"], 1);
    }
}
