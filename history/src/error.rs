//! The store's one error type: any failure makes the caller fall back to Mattermost.

/// A failure of the store; the caller falls back to Mattermost.
#[derive(Debug, Clone, thiserror::Error)]
#[error("ScyllaDB: {0}")]
pub struct HistoryError(pub String);

pub(crate) fn err(e: impl std::fmt::Display) -> HistoryError {
    HistoryError(e.to_string())
}

/// A result of the store.
pub type HistoryResult<T> = Result<T, HistoryError>;
