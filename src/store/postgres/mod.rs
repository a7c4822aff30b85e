//! The shared store: PostgreSQL, for several leadgate replicas on one database.
//!
//! Everything is coordinated by the database, in short transactions (research/postgres.md):
//! - ingest: `INSERT ... ON CONFLICT DO NOTHING` on `(source, dedupe_key)`, concurrent webhooks
//!   gathered into one statement ([`ingest`]), committed with `synchronous_commit = on` before
//!   the 2xx; the same event sent to two replicas at once is stored once (the second insert
//!   waits for the first and then sees the conflict);
//! - processing: one transaction per event takes the event row `FOR UPDATE SKIP LOCKED` (a
//!   replica that finds it taken moves on) and a transaction-scoped advisory lock per lead, so
//!   one lead's updates are serialised across replicas; a replica that dies mid-step leaves an
//!   aborted transaction behind and nothing else;
//! - delivery: the lease and quota bucket in [`outbox`], fenced by the lease's term.
//!
//! Gathering inserts plays the part of SQLite's writer thread, without serialising everything
//! else: processing and delivery run their own transactions on the pool.

mod ingest;
mod leads;
mod migrate;
mod outbox;
#[doc(hidden)]
pub mod testdb;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::Row;

use super::{
    Claimed, DeadLetter, EventId, EventStatus, Fence, FunnelCount, Inserted, LeadDelivery,
    LeadRecord, NewEvent, OutboxDepth, Processed, RecordResult, Recorded, ReplayFilter, Requeued,
    Store, StoreError, StoredEvent, Token,
};
use crate::outbox::CrmUpdate;

/// Connections per replica: enough for the HTTP workers' concurrent inserts to share commits.
const POOL_SIZE: u32 = 16;
/// How long a caller waits for a connection before the store counts as unavailable (a webhook
/// then gets `503 store_unavailable` rather than hanging).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct PgStore {
    pool: PgPool,
    inserter: ingest::Inserter,
    /// `postgres://host:port/database`, for messages: never the user or password.
    name: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("at", &self.name).finish()
    }
}

/// `postgres://host:port/database` from a URL, without credentials; the input itself when it
/// does not parse (then it is not echoed either: callers report the parse error only).
pub fn display_name(url: &str) -> String {
    match PgConnectOptions::from_str(url) {
        Ok(o) => format!(
            "postgres://{}:{}/{}",
            o.get_host(),
            o.get_port(),
            o.get_database().unwrap_or("")
        ),
        Err(_) => "postgres://<unparsable URL>".into(),
    }
}

/// Checks that `url` is a connection URL PostgreSQL clients accept (`sslmode`, `application_name`,
/// ... as libpq users expect). The reason never quotes the URL.
pub fn check_url(url: &str) -> Result<(), String> {
    PgConnectOptions::from_str(url).map(|_| ()).map_err(|e| {
        format!(
            "not a PostgreSQL connection URL: {}",
            redact(&e.to_string(), url)
        )
    })
}

impl PgStore {
    /// Connects, checks the server answers, and brings the schema up to date (safe when several
    /// replicas start at once). Fails naming the host, never the password.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let name = display_name(url);
        let open_err = |reason: String| StoreError::Open {
            path: name.clone(),
            reason,
        };
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| {
                open_err(format!(
                    "not a PostgreSQL URL: {}",
                    redact(&e.to_string(), url)
                ))
            })?
            .application_name("leadgate")
            // A 2xx means committed and flushed, whatever the server's default says.
            .options([
                ("synchronous_commit", "on"),
                // A transaction left open by a stalled replica must not hold lead locks forever.
                ("idle_in_transaction_session_timeout", "60000"),
            ]);
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .min_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| open_err(redact(&e.to_string(), url)))?;
        migrate::run(&pool).await.map_err(open_err)?;
        Ok(PgStore {
            inserter: ingest::Inserter::start(pool.clone()),
            pool,
            name,
        })
    }

    /// Runs the migrations only (`leadgate migrate`); returns how many ran.
    pub async fn migrate(url: &str) -> Result<(Self, usize), StoreError> {
        let store = Self::open(url).await?;
        // `open` ran them; a second run under the lock reports 0 unless someone raced us.
        let ran = migrate::run(&store.pool)
            .await
            .map_err(|reason| StoreError::Open {
                path: store.name.clone(),
                reason,
            })?;
        Ok((store, ran))
    }

    /// Where this store lives (`postgres://host:port/database`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The connection pool (tests and benchmarks read tables directly).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Removes the URL's password from an error message, should a driver ever quote the URL.
fn redact(message: &str, url: &str) -> String {
    match PgConnectOptions::from_str(url) {
        Ok(_) => {
            let password = url
                .split_once("://")
                .and_then(|(_, rest)| rest.split_once('@'))
                .and_then(|(userinfo, _)| userinfo.split_once(':'))
                .map(|(_, p)| p)
                .filter(|p| !p.is_empty());
            match password {
                Some(p) => message.replace(p, "<redacted>"),
                None => message.to_string(),
            }
        }
        Err(_) => message.replace(url, "<the URL>"),
    }
}

pub(crate) const EVENT_COLUMNS: &str =
    "id, source, dedupe_key, received_at, content_type, body, payload, status, status_reason";

pub(crate) fn event_from_row(r: &PgRow) -> Result<StoredEvent, StoreError> {
    let status: String = r.try_get(7)?;
    Ok(StoredEvent {
        id: EventId(r.try_get(0)?),
        source: r.try_get(1)?,
        dedupe_key: r.try_get(2)?,
        received_at_ms: r.try_get(3)?,
        content_type: r.try_get(4)?,
        body: bytes::Bytes::from(r.try_get::<Vec<u8>, _>(5)?),
        payload: r.try_get(6)?,
        status: EventStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown event status {status:?}")))?,
        status_reason: r.try_get(8)?,
    })
}

#[async_trait]
impl Store for PgStore {
    async fn insert_event(&self, e: NewEvent) -> Result<Inserted, StoreError> {
        self.inserter.insert(e).await
    }

    async fn event(&self, id: EventId) -> Result<Option<StoredEvent>, StoreError> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1");
        match sqlx::query(&sql)
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?
        {
            Some(r) => Ok(Some(event_from_row(&r)?)),
            None => Ok(None),
        }
    }

    async fn count_events(&self, status: EventStatus) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE status = $1")
            .bind(status.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        let now = super::outbox::now_ms().to_string();
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('ready_check', $1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.pool.close().await;
        Ok(())
    }

    async fn pending_events(
        &self,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        leads::pending(&self.pool, after, limit).await
    }

    async fn process_event(&self, id: EventId, outcome: Processed) -> Result<bool, StoreError> {
        leads::process(&self.pool, id, outcome, super::outbox::now_ms()).await
    }

    async fn replay_events(&self, filter: ReplayFilter) -> Result<u64, StoreError> {
        leads::replay(&self.pool, &filter).await
    }

    async fn recent_events(
        &self,
        status: Option<EventStatus>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        leads::recent(&self.pool, status, limit).await
    }

    async fn lead(&self, email: &str) -> Result<Option<(LeadRecord, Vec<EventId>)>, StoreError> {
        leads::lead(&self.pool, email).await
    }

    async fn update_lead(
        &self,
        email: crate::lead::Email,
        apply: crate::store::LeadFn,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        leads::apply_lead(&mut tx, &email, None, apply, super::outbox::now_ms()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn leads_at(
        &self,
        stages: Vec<String>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<LeadRecord>, StoreError> {
        leads::leads_at(&self.pool, &stages, after.as_deref(), limit).await
    }

    async fn funnel(&self) -> Result<Vec<FunnelCount>, StoreError> {
        leads::funnel(&self.pool).await
    }

    async fn acquire_lease(
        &self,
        account: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Fence>, StoreError> {
        outbox::acquire_lease(&self.pool, account, holder, ttl).await
    }

    async fn release_lease(&self, fence: &Fence) -> Result<(), StoreError> {
        outbox::release_lease(&self.pool, fence).await
    }

    async fn take_token(
        &self,
        fence: &Fence,
        quota: &crate::config::RateLimit,
    ) -> Result<Token, StoreError> {
        outbox::take_token(&self.pool, fence, quota).await
    }

    async fn enqueue_update(&self, update: CrmUpdate) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        outbox::enqueue(&mut tx, &update, super::outbox::now_ms()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim_due(
        &self,
        fence: &Fence,
        limit: usize,
        now_ms: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        outbox::claim_due(&self.pool, fence, limit, now_ms).await
    }

    async fn record_results(
        &self,
        fence: &Fence,
        results: Vec<RecordResult>,
        now_ms: i64,
    ) -> Result<Recorded, StoreError> {
        outbox::record(&self.pool, fence, &results, now_ms).await
    }

    async fn dead_letters(&self, ids: Option<Vec<i64>>) -> Result<Vec<DeadLetter>, StoreError> {
        outbox::dead_letters(&self.pool, ids.as_deref()).await
    }

    async fn requeue_dead_letters(&self, ids: Option<Vec<i64>>) -> Result<Requeued, StoreError> {
        outbox::requeue_dead_letters(&self.pool, ids.as_deref(), super::outbox::now_ms()).await
    }

    async fn outbox_depth(&self) -> Result<OutboxDepth, StoreError> {
        outbox::depth(&self.pool).await
    }

    async fn lead_delivery(&self, email: &str) -> Result<LeadDelivery, StoreError> {
        outbox::lead_delivery(&self.pool, email).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_host_never_the_password() {
        let url = "postgres://leadgate:s3cret-pw@db.internal:6432/leads?sslmode=require";
        assert_eq!(display_name(url), "postgres://db.internal:6432/leads");
        assert_eq!(
            redact("failed for postgres://leadgate:s3cret-pw@db.internal", url),
            "failed for postgres://leadgate:<redacted>@db.internal"
        );
    }
}
