//! Group commit: one thread owns the only writing connection. Callers queue closures; the thread
//! runs every closure that is waiting in one transaction (each under its own savepoint, so one
//! failing write cannot undo the others), commits once — one fsync for the whole group — and only
//! then answers each caller. Concurrent webhooks therefore share a commit instead of each paying
//! for their own, and nobody is answered before their write is on disk.

use std::thread::JoinHandle;

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use crate::store::StoreError;

/// Most jobs folded into one transaction; bounds latency of the first job in a burst.
const MAX_GROUP: usize = 512;
/// Jobs that may wait for the writer before callers are slowed down (backpressure).
const QUEUE_DEPTH: usize = 16_384;

trait Job: Send {
    /// Runs inside the group's transaction.
    fn run(&mut self, conn: &mut rusqlite::Transaction<'_>);
    /// Answers the caller once the group's commit succeeded or failed.
    fn finish(self: Box<Self>, commit: Result<(), &rusqlite::Error>);
}

struct Typed<F, R> {
    f: Option<F>,
    result: Option<Result<R, StoreError>>,
    reply: oneshot::Sender<Result<R, StoreError>>,
}

impl<F, R> Job for Typed<F, R>
where
    F: FnOnce(&Connection) -> Result<R, StoreError> + Send,
    R: Send,
{
    fn run(&mut self, tx: &mut rusqlite::Transaction<'_>) {
        let Some(f) = self.f.take() else { return };
        let outcome = match tx.savepoint() {
            Ok(mut sp) => {
                let r = f(&sp);
                let end = if r.is_ok() {
                    sp.commit()
                } else {
                    sp.rollback()
                };
                match (r, end) {
                    (Ok(v), Ok(())) => Ok(v),
                    (Err(e), _) => Err(e),
                    (Ok(_), Err(e)) => Err(StoreError::from(e)),
                }
            }
            Err(e) => Err(StoreError::from(e)),
        };
        self.result = Some(outcome);
    }

    fn finish(self: Box<Self>, commit: Result<(), &rusqlite::Error>) {
        let answer = match (commit, self.result) {
            (Ok(()), Some(r)) => r,
            (Err(e), _) => Err(StoreError::CommitFailed(e.to_string())),
            (Ok(()), None) => Err(StoreError::Closed),
        };
        // The caller may have gone away (request cancelled); the write stands either way.
        let _ = self.reply.send(answer);
    }
}

enum Msg {
    Job(Box<dyn Job>),
    Close(oneshot::Sender<()>),
}

/// Handle to the writer thread.
pub struct Writer {
    tx: mpsc::Sender<Msg>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub fn start(conn: Connection) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let thread = std::thread::Builder::new()
            .name("leadgate-store-writer".into())
            .spawn(move || run(conn, rx))?;
        Ok(Writer {
            tx,
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    /// Runs `f` in the next group commit and returns its result once it is durable.
    pub async fn write<F, R>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(Typed {
            f: Some(f),
            result: None,
            reply,
        });
        self.tx
            .send(Msg::Job(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Commits what is queued, checkpoints the WAL and stops the thread.
    pub async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Close(done)).await.is_ok() {
            let _ = wait.await;
        }
        let handle = self.thread.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

fn run(mut conn: Connection, mut rx: mpsc::Receiver<Msg>) {
    let mut group: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_GROUP);
    let mut closing: Option<oneshot::Sender<()>> = None;
    while closing.is_none() {
        match rx.blocking_recv() {
            Some(Msg::Job(j)) => group.push(j),
            Some(Msg::Close(done)) => closing = Some(done),
            None => break,
        }
        while group.len() < MAX_GROUP && closing.is_none() {
            match rx.try_recv() {
                Ok(Msg::Job(j)) => group.push(j),
                Ok(Msg::Close(done)) => closing = Some(done),
                Err(_) => break,
            }
        }
        if !group.is_empty() {
            commit_group(&mut conn, &mut group);
        }
    }
    // Refuse anything that raced the close, then leave a tidy database behind.
    rx.close();
    while let Ok(msg) = rx.try_recv() {
        if let Msg::Job(j) = msg {
            j.finish(Err(&rusqlite::Error::InvalidQuery));
        }
    }
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
        tracing::warn!(error = %e, "WAL checkpoint on close failed");
    }
    drop(conn);
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

fn commit_group(conn: &mut Connection, group: &mut Vec<Box<dyn Job>>) {
    match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(mut tx) => {
            for job in group.iter_mut() {
                job.run(&mut tx);
            }
            let commit = tx.commit();
            if let Err(e) = &commit {
                tracing::error!(error = %e, jobs = group.len(), "group commit failed");
            }
            for job in group.drain(..) {
                job.finish(commit.as_ref().map(|_| ()));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot begin a transaction");
            for job in group.drain(..) {
                job.finish(Err(&e));
            }
        }
    }
}
