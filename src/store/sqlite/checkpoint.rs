//! WAL checkpoints off the commit path. Left to itself SQLite checkpoints inside the commit that
//! crosses `wal_autocheckpoint` pages: that commit then copies the WAL into the database and
//! fsyncs both files while every webhook waiting for the group commit waits too (the ingest
//! benchmark's latency tail). A thread with its own connection runs PASSIVE checkpoints instead,
//! which never block the writer; the writer keeps a much higher automatic threshold as a safety
//! net should this thread fall behind.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// How often the WAL is copied back into the database.
const EVERY: Duration = Duration::from_millis(250);
/// The writer's own automatic checkpoint, in pages (64 MiB at 4 KiB pages): only if we lag.
pub const WRITER_AUTOCHECKPOINT_PAGES: u32 = 16_384;

pub struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Checkpointer {
    /// Starts the thread on a connection of its own to the database at `path`.
    pub fn start(path: &Path) -> std::io::Result<Self> {
        let conn = Connection::open(path).map_err(std::io::Error::other)?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("leadgate-store-checkpoint".into())
            .spawn(move || run(conn, &flag))?;
        Ok(Checkpointer {
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stops the thread (the writer then does the final, truncating checkpoint).
    pub fn stop(&self) {
        let (lock, cvar) = &*self.stop;
        if let Ok(mut stopped) = lock.lock() {
            *stopped = true;
        }
        cvar.notify_all();
        let handle = self.thread.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(conn: Connection, stop: &(Mutex<bool>, Condvar)) {
    let (lock, cvar) = stop;
    let Ok(mut stopped) = lock.lock() else { return };
    loop {
        stopped = match cvar.wait_timeout(stopped, EVERY) {
            Ok((guard, _)) => guard,
            Err(_) => return,
        };
        if *stopped {
            return;
        }
        // PASSIVE copies what no reader still needs and returns; it never waits on the writer.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "WAL checkpoint failed; the writer's own threshold still applies");
        }
    }
}
