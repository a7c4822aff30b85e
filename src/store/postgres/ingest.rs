//! Group insert for webhooks: concurrent `insert_event` calls are gathered into one multi-row
//! `INSERT ... ON CONFLICT DO NOTHING` (one statement, one commit), so a burst of webhooks
//! shares round trips and WAL flushes instead of paying one transaction each (research: about
//! ten times the rows per second at 50 rows per statement). Nobody is answered before the
//! statement carrying their row has committed; a failed statement fails every caller in it
//! (each answers 503 and the provider retries).

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::postgres::PgPool;
use sqlx::Row;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::store::{EventId, Inserted, NewEvent, StoreError};

/// Most rows per statement.
const MAX_ROWS: usize = 256;
/// Statements in flight at once (each on its own pooled connection).
const IN_FLIGHT: usize = 4;
/// Calls that may wait before callers are slowed down.
const QUEUE_DEPTH: usize = 16_384;

type Reply = oneshot::Sender<Result<Inserted, StoreError>>;

/// Handle to the gathering task.
pub struct Inserter {
    tx: mpsc::Sender<(NewEvent, Reply)>,
}

impl Inserter {
    pub fn start(pool: PgPool) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(pool, rx));
        Inserter { tx }
    }

    /// Stores `event` unless its dedupe key was seen for that source; resolves once committed.
    pub async fn insert(&self, event: NewEvent) -> Result<Inserted, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((event, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

async fn run(pool: PgPool, mut rx: mpsc::Receiver<(NewEvent, Reply)>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Wait for a free slot first: while every slot is busy, more calls gather in the queue
        // and the next statement carries them all.
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_ROWS {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            let (events, replies): (Vec<NewEvent>, Vec<Reply>) = batch.into_iter().unzip();
            match insert_batch(&pool, &events).await {
                Ok(answers) => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(Ok(answer));
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    tracing::error!(error = %message, rows = events.len(), "storing webhooks failed");
                    for reply in replies {
                        let _ = reply.send(Err(StoreError::CommitFailed(message.clone())));
                    }
                }
            }
            drop(permit);
        });
    }
}

/// Inserts `events` in one statement; one answer per event, in order. Within the batch the first
/// event of a key is the new one and later ones are its duplicates, as if they came one by one.
async fn insert_batch(pool: &PgPool, events: &[NewEvent]) -> Result<Vec<Inserted>, StoreError> {
    let col = |f: fn(&NewEvent) -> String| events.iter().map(f).collect::<Vec<String>>();
    let sources = col(|e| e.source.clone());
    let keys = col(|e| e.dedupe_key.clone());
    let content_types = col(|e| e.content_type.clone());
    let received: Vec<i64> = events.iter().map(|e| e.received_at_ms).collect();
    let bodies: Vec<Vec<u8>> = events.iter().map(|e| e.body.to_vec()).collect();
    let payloads: Vec<Option<String>> = events.iter().map(|e| e.payload.clone()).collect();
    // WITH ORDINALITY keeps the callers' order, so ids follow arrival like one by one would.
    let rows = sqlx::query(
        "INSERT INTO events (source, dedupe_key, received_at, content_type, body, payload)
         SELECT s, k, r, c, b, p
           FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bytea[], $6::text[])
                WITH ORDINALITY AS u(s, k, r, c, b, p, n)
          ORDER BY n
         ON CONFLICT (source, dedupe_key) DO NOTHING
         RETURNING id, source, dedupe_key",
    )
    .bind(&sources)
    .bind(&keys)
    .bind(&received)
    .bind(&content_types)
    .bind(&bodies)
    .bind(&payloads)
    .fetch_all(pool)
    .await?;
    let mut new: HashMap<(String, String), i64> = HashMap::with_capacity(rows.len());
    for r in &rows {
        new.insert((r.try_get(1)?, r.try_get(2)?), r.try_get(0)?);
    }
    // Keys stored before this statement (or by a concurrent one): committed by now, because ON
    // CONFLICT waited for them.
    let missing: Vec<usize> = (0..events.len())
        .filter(|&i| !new.contains_key(&(sources[i].clone(), keys[i].clone())))
        .collect();
    let mut old: HashMap<(String, String), i64> = HashMap::new();
    if !missing.is_empty() {
        let ms: Vec<String> = missing.iter().map(|&i| sources[i].clone()).collect();
        let mk: Vec<String> = missing.iter().map(|&i| keys[i].clone()).collect();
        for r in sqlx::query(
            "SELECT e.id, e.source, e.dedupe_key FROM events e
               JOIN UNNEST($1::text[], $2::text[]) AS u(s, k)
                 ON e.source = u.s AND e.dedupe_key = u.k",
        )
        .bind(&ms)
        .bind(&mk)
        .fetch_all(pool)
        .await?
        {
            old.insert((r.try_get(1)?, r.try_get(2)?), r.try_get(0)?);
        }
    }
    let mut answered_new: std::collections::HashSet<(String, String)> = Default::default();
    let mut out = Vec::with_capacity(events.len());
    for i in 0..events.len() {
        let key = (sources[i].clone(), keys[i].clone());
        let answer = match (new.get(&key), old.get(&key)) {
            (Some(&id), _) if answered_new.insert(key.clone()) => Inserted::New(EventId(id)),
            (Some(&id), _) | (None, Some(&id)) => Inserted::Duplicate(EventId(id)),
            (None, None) => {
                return Err(StoreError::Corrupt(format!(
                    "event {} of source {} was neither stored nor found",
                    i, sources[i]
                )))
            }
        };
        out.push(answer);
    }
    Ok(out)
}
