//! Connections: how one is opened (WAL, `synchronous=FULL`, foreign keys), and the small pool
//! of read-only connections that reads use beside the writer.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::Connection;

use super::super::BackendResult;
use super::sql::storage_error;

pub(super) fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Idle read connections, opened on demand; at most [`MAX_READERS`] reads run at once, so a
/// burst of requests queues briefly instead of opening a connection (and a thread) per request.
pub(super) struct ReaderPool {
    pub(super) path: PathBuf,
    pub(super) idle: Mutex<Vec<Connection>>,
    pub(super) permits: tokio::sync::Semaphore,
}

pub(super) const MAX_READERS: usize = 8;

impl ReaderPool {
    pub(super) fn with<T>(
        &self,
        work: impl FnOnce(&Connection) -> BackendResult<T>,
    ) -> BackendResult<T> {
        let pooled = self.idle.lock().expect("reader pool poisoned").pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => {
                let conn = open(&self.path).map_err(storage_error)?;
                conn.pragma_update(None, "query_only", true)
                    .map_err(storage_error)?;
                conn
            }
        };
        let outcome = work(&conn);
        let mut idle = self.idle.lock().expect("reader pool poisoned");
        if idle.len() < MAX_READERS {
            idle.push(conn);
        }
        outcome
    }
}
