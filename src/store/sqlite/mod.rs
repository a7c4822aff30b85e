//! The embedded store: SQLite in WAL mode with `synchronous = FULL`, so a commit is on disk when
//! it returns. All writes go through one group-commit thread ([`writer`]); reads use a small pool
//! of read-only connections on the blocking pool, which WAL lets run beside the writer.

mod checkpoint;
mod leads;
mod migrate;
pub mod outbox;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use self::checkpoint::{Checkpointer, WRITER_AUTOCHECKPOINT_PAGES};
use self::writer::Writer;
use super::{
    Claimed, DeadLetter, EventId, EventStatus, Fence, FunnelCount, Inserted, LeadDelivery,
    LeadRecord, NewEvent, OutboxDepth, Processed, RecordResult, Recorded, ReplayFilter, Requeued,
    Store, StoreError, StoredEvent, Token,
};
use crate::outbox::CrmUpdate;

/// Read connections kept open between reads.
const IDLE_READERS: usize = 4;

pub struct SqliteStore {
    path: PathBuf,
    writer: Writer,
    checkpointer: Checkpointer,
    readers: Arc<Mutex<Vec<Connection>>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

fn open_err(path: &Path, reason: impl ToString) -> StoreError {
    StoreError::Open {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(path, e))?;
        }
        let mut conn = Connection::open(path).map_err(|e| open_err(path, e))?;
        // WAL lets readers run beside the writer; FULL syncs the WAL on every commit, which is
        // what makes a 2xx mean "on disk". Group commit keeps that affordable.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA busy_timeout = 5000;
             PRAGMA foreign_keys = ON;",
        )
        .map_err(|e| open_err(path, e))?;
        // Checkpoints run on their own thread (see `checkpoint`); this is only the safety net.
        conn.pragma_update(None, "wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES)
            .map_err(|e| open_err(path, e))?;
        migrate::run(&mut conn).map_err(|e| open_err(path, e))?;
        let writer = Writer::start(conn).map_err(|e| open_err(path, e))?;
        let checkpointer = Checkpointer::start(path).map_err(|e| open_err(path, e))?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            writer,
            checkpointer,
            readers: Arc::new(Mutex::new(Vec::new())),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a read connection off the async threads.
    pub async fn read<F, R>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let path = self.path.clone();
        let pool = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || {
            let conn = match pool.lock().ok().and_then(|mut p| p.pop()) {
                Some(c) => c,
                None => open_reader(&path)?,
            };
            let out = f(&conn);
            if let Ok(mut p) = pool.lock() {
                if p.len() < IDLE_READERS {
                    p.push(conn);
                }
            }
            out
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("read task failed: {e}")))?
    }

    /// Runs `f` in the next group commit; resolves once it is on disk.
    pub async fn write<F, R>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        self.writer.write(f).await
    }
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

pub(crate) const EVENT_COLUMNS: &str =
    "id, source, dedupe_key, received_at, content_type, body, payload, status, status_reason";

/// Turns a row read with [`EVENT_COLUMNS`] into a [`StoredEvent`].
pub(crate) fn event_from_row(r: &rusqlite::Row<'_>) -> Result<StoredEvent, StoreError> {
    let status: String = r.get(7)?;
    Ok(StoredEvent {
        id: EventId(r.get(0)?),
        source: r.get(1)?,
        dedupe_key: r.get(2)?,
        received_at_ms: r.get(3)?,
        content_type: r.get(4)?,
        body: bytes::Bytes::from(r.get::<_, Vec<u8>>(5)?),
        payload: r.get(6)?,
        status: EventStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown event status {status:?}")))?,
        status_reason: r.get(8)?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_event(&self, e: NewEvent) -> Result<Inserted, StoreError> {
        self.write(move |c| {
            let mut ins = c.prepare_cached(
                "INSERT INTO events (source, dedupe_key, received_at, content_type, body, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (source, dedupe_key) DO NOTHING",
            )?;
            let n = ins.execute(params![
                e.source,
                e.dedupe_key,
                e.received_at_ms,
                e.content_type,
                &e.body[..],
                e.payload
            ])?;
            if n == 1 {
                return Ok(Inserted::New(EventId(c.last_insert_rowid())));
            }
            let mut find =
                c.prepare_cached("SELECT id FROM events WHERE source = ?1 AND dedupe_key = ?2")?;
            let id: i64 = find.query_row(params![e.source, e.dedupe_key], |r| r.get(0))?;
            Ok(Inserted::Duplicate(EventId(id)))
        })
        .await
    }

    async fn event(&self, id: EventId) -> Result<Option<StoredEvent>, StoreError> {
        self.read(move |c| {
            let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1");
            let mut st = c.prepare_cached(&sql)?;
            let mut rows = st.query(params![id.0])?;
            match rows.next()? {
                Some(r) => Ok(Some(event_from_row(r)?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn count_events(&self, status: EventStatus) -> Result<u64, StoreError> {
        self.read(move |c| {
            let n: i64 = c.query_row(
                "SELECT COUNT(*) FROM events WHERE status = ?1",
                params![status.as_str()],
                |r| r.get(0),
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        let now = chrono::Utc::now().timestamp_millis().to_string();
        self.write(move |c| {
            c.execute(
                "INSERT INTO meta (key, value) VALUES ('ready_check', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![now],
            )?;
            Ok(())
        })
        .await
    }

    async fn close(&self) -> Result<(), StoreError> {
        // Blocks for at most one PASSIVE checkpoint, once, at shutdown.
        self.checkpointer.stop();
        self.writer.close().await;
        if let Ok(mut p) = self.readers.lock() {
            p.clear();
        }
        Ok(())
    }

    async fn pending_events(
        &self,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(move |c| leads::pending(c, after, limit)).await
    }

    async fn process_event(&self, id: EventId, outcome: Processed) -> Result<bool, StoreError> {
        let now = chrono::Utc::now().timestamp_millis();
        self.write(move |c| leads::process(c, id, outcome, now))
            .await
    }

    async fn replay_events(&self, filter: ReplayFilter) -> Result<u64, StoreError> {
        self.write(move |c| leads::replay(c, &filter)).await
    }

    async fn recent_events(
        &self,
        status: Option<EventStatus>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(move |c| leads::recent(c, status, limit)).await
    }

    async fn lead(&self, email: &str) -> Result<Option<(LeadRecord, Vec<EventId>)>, StoreError> {
        let email = email.to_string();
        self.read(move |c| leads::lead(c, &email)).await
    }

    async fn update_lead(
        &self,
        email: crate::lead::Email,
        apply: crate::store::LeadFn,
    ) -> Result<(), StoreError> {
        let now = chrono::Utc::now().timestamp_millis();
        self.write(move |c| leads::apply_lead(c, &email, None, apply, now))
            .await
    }

    async fn leads_at(
        &self,
        stages: Vec<String>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<LeadRecord>, StoreError> {
        self.read(move |c| leads::leads_at(c, &stages, after.as_deref(), limit))
            .await
    }

    async fn funnel(&self) -> Result<Vec<FunnelCount>, StoreError> {
        self.read(leads::funnel).await
    }

    // ---- outbox and dead letters
    async fn enqueue_update(&self, update: CrmUpdate) -> Result<(), StoreError> {
        self.write(move |c| outbox::enqueue(c, &update)).await
    }

    async fn acquire_lease(
        &self,
        account: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<Fence>, StoreError> {
        let (account, holder) = (account.to_string(), holder.to_string());
        let expires = super::outbox::now_ms() + ttl.as_millis() as i64;
        self.write(move |c| outbox::acquire_lease(c, &account, &holder, expires).map(Some))
            .await
    }

    async fn release_lease(&self, fence: &Fence) -> Result<(), StoreError> {
        let fence = fence.clone();
        self.write(move |c| outbox::release_lease(c, &fence)).await
    }

    async fn take_token(
        &self,
        _fence: &Fence,
        _quota: &crate::config::RateLimit,
    ) -> Result<Token, StoreError> {
        // One process: its local limiter is the whole quota.
        Ok(Token::Granted)
    }

    async fn claim_due(
        &self,
        fence: &Fence,
        limit: usize,
        now_ms: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        let fence = fence.clone();
        self.write(move |c| outbox::claim_due(c, &fence, limit, now_ms))
            .await
    }

    async fn record_results(
        &self,
        fence: &Fence,
        results: Vec<RecordResult>,
        now_ms: i64,
    ) -> Result<Recorded, StoreError> {
        let fence = fence.clone();
        self.write(move |c| outbox::record(c, &fence, &results, now_ms))
            .await
    }

    async fn dead_letters(&self, ids: Option<Vec<i64>>) -> Result<Vec<DeadLetter>, StoreError> {
        self.read(move |c| outbox::dead_letters(c, ids.as_deref()))
            .await
    }

    async fn requeue_dead_letters(&self, ids: Option<Vec<i64>>) -> Result<Requeued, StoreError> {
        let now = super::outbox::now_ms();
        self.write(move |c| outbox::requeue_dead_letters(c, ids.as_deref(), now))
            .await
    }

    async fn outbox_depth(&self) -> Result<OutboxDepth, StoreError> {
        self.read(outbox::depth).await
    }

    async fn lead_delivery(&self, email: &str) -> Result<LeadDelivery, StoreError> {
        let email = email.to_string();
        self.read(move |c| outbox::lead_delivery(c, &email)).await
    }
}

/// Reads a `meta` value (used by tests and admin tooling).
pub fn meta(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
            r.get(0)
        })
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::contract::event;

    #[tokio::test]
    async fn a_repeated_dedupe_key_is_reported_as_a_duplicate_of_the_first_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db/leadgate.db")).unwrap();
        let first = store.insert_event(event("a")).await.unwrap();
        let again = store.insert_event(event("a")).await.unwrap();
        let other = store.insert_event(event("b")).await.unwrap();
        assert!(matches!(first, Inserted::New(_)));
        assert_eq!(again, Inserted::Duplicate(first.id()));
        assert_ne!(other.id(), first.id());
        assert_eq!(store.count_events(EventStatus::Received).await.unwrap(), 2);
        let stored = store.event(first.id()).await.unwrap().unwrap();
        assert_eq!(&stored.body[..], br#"{"event_id":"e"}"#);
        assert_eq!(stored.status, EventStatus::Received);
    }

    #[tokio::test]
    async fn the_wal_is_checkpointed_by_its_own_thread_not_by_the_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let store = SqliteStore::open(&path).unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        // ~2 MiB of WAL: far below the writer's own threshold, so only the thread copies it back.
        for i in 0..64 {
            let mut e = event(&format!("big{i}"));
            e.body = bytes::Bytes::from(vec![b'x'; 32 * 1024]);
            store.insert_event(e).await.unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::metadata(&path).unwrap().len() < before + 2 * 1024 * 1024 {
            assert!(
                std::time::Instant::now() < deadline,
                "the database file never received the WAL's pages"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn concurrent_writes_share_commits_and_all_land_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("l.db")).unwrap());
        let mut tasks = Vec::new();
        for i in 0..300 {
            let s = Arc::clone(&store);
            // Every key twice: exactly one of each pair is new.
            tasks.push(tokio::spawn(async move {
                s.insert_event(event(&format!("k{}", i / 2))).await
            }));
        }
        let mut new = 0;
        for t in tasks {
            if let Inserted::New(_) = t.await.unwrap().unwrap() {
                new += 1;
            }
        }
        assert_eq!(new, 150);
        assert_eq!(
            store.count_events(EventStatus::Received).await.unwrap(),
            150
        );
    }

    #[tokio::test]
    async fn a_failing_write_does_not_undo_the_others_in_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("l.db")).unwrap());
        let bad = {
            let s = Arc::clone(&store);
            tokio::spawn(async move {
                s.write(|c| {
                    c.execute("INSERT INTO meta (key, value) VALUES ('x', '1')", [])?;
                    c.execute("INSERT INTO nowhere VALUES (1)", [])?;
                    Ok(())
                })
                .await
            })
        };
        let good = store.insert_event(event("g")).await;
        assert!(bad.await.unwrap().is_err());
        assert!(good.is_ok());
        let x = store.read(|c| meta(c, "x")).await.unwrap();
        assert_eq!(x, None, "the failed job's own write was rolled back");
    }

    #[tokio::test]
    async fn data_survives_close_and_reopen_and_writes_after_close_fail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let store = SqliteStore::open(&path).unwrap();
        let id = store.insert_event(event("a")).await.unwrap().id();
        store.check_writable().await.unwrap();
        store.close().await.unwrap();
        assert!(matches!(
            store.insert_event(event("b")).await,
            Err(StoreError::Closed)
        ));
        let again = SqliteStore::open(&path).unwrap();
        assert!(again.event(id).await.unwrap().is_some());
    }
}
