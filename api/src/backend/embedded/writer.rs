//! One writer thread with group commit.
//!
//! SQLite allows one writer at a time, and a durable commit costs an fsync. Instead of one
//! transaction per request, the writer takes every job waiting in its queue, runs each in its own
//! savepoint inside one transaction, commits once, and only then answers the jobs. Under load
//! many requests share one fsync; a failing job rolls back only its own savepoint.

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::backend::{BackendError, BackendResult};

/// Most jobs folded into one commit.
const MAX_BATCH: usize = 512;
/// Jobs that may wait for the writer before callers wait to enqueue.
const QUEUE_DEPTH: usize = 8192;

type Reply = Box<dyn FnOnce(Result<(), BackendError>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> Reply + Send>;

#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    pub fn spawn(conn: Connection) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel(QUEUE_DEPTH);
        std::thread::Builder::new()
            .name("mmsub-sqlite-writer".into())
            .spawn(move || run(conn, queue))?;
        Ok(Self { jobs })
    }

    /// Runs `work` in the next group commit; resolves after that commit is durable.
    pub async fn run<T, F>(&self, work: F) -> BackendResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> BackendResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let outcome = in_savepoint(conn, work);
            Box::new(move |committed| {
                let _ = tx.send(committed.and(outcome));
            })
        });
        self.jobs.send(job).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

fn stopped() -> BackendError {
    BackendError::Unavailable("The message store has stopped.".into())
}

fn in_savepoint<T>(
    conn: &Connection,
    work: impl FnOnce(&Connection) -> BackendResult<T>,
) -> BackendResult<T> {
    conn.execute_batch("SAVEPOINT job")
        .map_err(super::storage_error)?;
    let outcome = work(conn);
    let end = if outcome.is_ok() {
        "RELEASE job"
    } else {
        "ROLLBACK TO job; RELEASE job"
    };
    conn.execute_batch(end).map_err(super::storage_error)?;
    outcome
}

fn run(conn: Connection, mut queue: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let committed = commit_batch(&conn, &mut batch);
        if let Err(e) = &committed.0 {
            tracing::error!(error = %e, jobs = committed.1.len(), "group commit failed");
        }
        for reply in committed.1 {
            reply(committed.0.clone());
        }
    }
}

fn commit_batch(conn: &Connection, batch: &mut Vec<Job>) -> (Result<(), BackendError>, Vec<Reply>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let replies = batch.drain(..).map(|job| job(conn)).collect::<Vec<_>>();
        return (Err(super::storage_error(e)), replies);
    }
    let replies: Vec<Reply> = batch.drain(..).map(|job| job(conn)).collect();
    let result = conn.execute_batch("COMMIT").map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        super::storage_error(e)
    });
    (result, replies)
}
