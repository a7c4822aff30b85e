//! Inbox -> leads on PostgreSQL: the SQL behind processing, replay and the lead/funnel queries
//! (the same operations as `sqlite/leads.rs`).

use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Postgres, Row, Transaction};

use super::{event_from_row, EVENT_COLUMNS};
use crate::lead::Email;
use crate::store::{
    EventId, EventStatus, FunnelCount, LeadFn, LeadInput, LeadRecord, Processed, ReplayFilter,
    StoreError, StoredEvent,
};

/// The lead's columns, then whether an update of it was ever queued (`crm_known`; see
/// `sqlite/leads.rs`).
const LEAD_COLUMNS: &str = "email, state, version, stage, stage_rank, max_rank, score, source, campaign, created_at, updated_at,
    EXISTS (SELECT 1 FROM outbox o WHERE o.email = leads.email)
    OR EXISTS (SELECT 1 FROM crm_delivered d WHERE d.email = leads.email)
    OR EXISTS (SELECT 1 FROM dead_letters x WHERE x.email = leads.email)";

fn lead_from_row(r: &PgRow) -> Result<LeadRecord, StoreError> {
    Ok(LeadRecord {
        email: r.try_get(0)?,
        state: r.try_get(1)?,
        version: r.try_get(2)?,
        stage: r.try_get(3)?,
        stage_rank: r.try_get::<i64, _>(4)?.max(0) as u32,
        max_rank: r.try_get::<i64, _>(5)?.max(0) as u32,
        score: r.try_get(6)?,
        source: r.try_get(7)?,
        campaign: r.try_get(8)?,
        created_at_ms: r.try_get(9)?,
        updated_at_ms: r.try_get(10)?,
        crm_known: r.try_get(11)?,
    })
}

pub async fn pending(
    pool: &PgPool,
    after: Option<EventId>,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    // Rows another replica is processing right now are skipped rather than waited for.
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE status = 'received' AND id > $1
          ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED"
    );
    let rows = sqlx::query(&sql)
        .bind(after.map(|e| e.0).unwrap_or(0))
        .bind(limit as i64)
        .fetch_all(pool)
        .await?;
    rows.iter().map(event_from_row).collect()
}

/// Applies one event's outcome in its own transaction. False: the event is not waiting any more,
/// or another replica holds it right now (it will finish it); nothing is written.
pub async fn process(
    pool: &PgPool,
    id: EventId,
    outcome: Processed,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM events WHERE id = $1 FOR UPDATE SKIP LOCKED")
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await?;
    if status.as_deref() != Some("received") {
        return Ok(false);
    }
    match outcome {
        Processed::Unmappable(reason) => {
            set_status(&mut tx, id, EventStatus::Unmappable, Some(&reason), now_ms).await?;
        }
        Processed::Leads(mut leads) => {
            // Locks in one order everywhere, so two events sharing leads cannot deadlock.
            leads.sort_by(|a, b| a.email.cmp(&b.email));
            for step in leads {
                apply_lead(&mut tx, &step.email, Some(&step.input), step.apply, now_ms).await?;
            }
            set_status(&mut tx, id, EventStatus::Processed, None, now_ms).await?;
        }
    }
    tx.commit().await?;
    Ok(true)
}

/// Locks the lead for the rest of the transaction, reads it, lets `apply` compute its change,
/// writes it and queues its CRM snapshot.
///
/// The lock is a transaction-scoped advisory lock on the email's hash rather than the row's lock
/// because the row may not exist yet: two replicas creating one lead must also take turns. It
/// is released by commit, rollback or the death of the connection.
pub async fn apply_lead(
    tx: &mut Transaction<'static, Postgres>,
    email: &Email,
    input: Option<&LeadInput>,
    apply: LeadFn,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(email.as_str())
        .execute(&mut **tx)
        .await?;
    let sql = format!("SELECT {LEAD_COLUMNS} FROM leads WHERE email = $1");
    let prev = match sqlx::query(&sql)
        .bind(email.as_str())
        .fetch_optional(&mut **tx)
        .await?
    {
        Some(r) => Some(lead_from_row(&r)?),
        None => None,
    };
    let log = match input {
        Some(i) if is_late(tx, email, i).await? => Some(inputs(tx, email).await?),
        _ => None,
    };
    let version = prev.as_ref().map(|p| p.version + 1).unwrap_or(1);
    let change = apply(prev.as_ref(), version, log).map_err(StoreError::Rejected)?;
    if let Some(i) = input {
        let clock = change.as_ref().and_then(|c| c.input_clock_ms);
        log_input(tx, email, i, clock.unwrap_or(i.folded_at_ms)).await?;
    }
    let Some(change) = change else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO leads (email, state, version, stage, stage_rank, max_rank, score,
                            source, campaign, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $10, $6, $7, $8, $9, $9)
         ON CONFLICT (email) DO UPDATE SET
            state = excluded.state, version = excluded.version, stage = excluded.stage,
            stage_rank = excluded.stage_rank,
            max_rank = GREATEST(leads.max_rank, excluded.max_rank),
            score = excluded.score, updated_at = excluded.updated_at",
    )
    .bind(email.as_str())
    .bind(&change.state)
    .bind(version)
    .bind(&change.stage)
    .bind(i64::from(change.stage_rank))
    .bind(change.score)
    .bind(&change.source)
    .bind(&change.campaign)
    .bind(now_ms)
    .bind(i64::from(change.reached_rank))
    .execute(&mut **tx)
    .await?;
    if let Some(update) = &change.update {
        super::outbox::enqueue(tx, update, now_ms).await?;
    }
    Ok(())
}

/// Whether an input of this lead that happened after `input` (or `input`'s own event, processed
/// again) is already applied.
async fn is_late(
    tx: &mut Transaction<'static, Postgres>,
    email: &Email,
    input: &LeadInput,
) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM lead_events WHERE email = $1 AND (event_id = $2
            OR (occurred_at, event_id) > ($3, $2)))",
    )
    .bind(email.as_str())
    .bind(input.event.0)
    .bind(input.occurred_at_ms)
    .fetch_one(&mut **tx)
    .await?)
}

/// The lead's logged inputs.
async fn inputs(
    tx: &mut Transaction<'static, Postgres>,
    email: &Email,
) -> Result<Vec<LeadInput>, StoreError> {
    let rows = sqlx::query(
        "SELECT event_id, occurred_at, folded_at, items FROM lead_events WHERE email = $1",
    )
    .bind(email.as_str())
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(LeadInput {
                event: EventId(r.try_get(0)?),
                occurred_at_ms: r.try_get::<Option<i64>, _>(1)?.unwrap_or(0),
                folded_at_ms: r.try_get::<Option<i64>, _>(2)?.unwrap_or(0),
                items: r.try_get(3)?,
            })
        })
        .collect()
}

/// Logs `input` for the lead, qualified at `clock_ms`.
async fn log_input(
    tx: &mut Transaction<'static, Postgres>,
    email: &Email,
    input: &LeadInput,
    clock_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO lead_events (email, event_id, occurred_at, folded_at, items)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (email, event_id) DO UPDATE SET occurred_at = excluded.occurred_at,
            folded_at = excluded.folded_at, items = excluded.items",
    )
    .bind(email.as_str())
    .bind(input.event.0)
    .bind(input.occurred_at_ms)
    .bind(clock_ms)
    .bind(&input.items)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn set_status(
    tx: &mut Transaction<'static, Postgres>,
    id: EventId,
    status: EventStatus,
    reason: Option<&str>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let n = sqlx::query(
        "UPDATE events SET status = $2, status_reason = $3, processed_at = $4 WHERE id = $1",
    )
    .bind(id.0)
    .bind(status.as_str())
    .bind(reason)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(StoreError::Corrupt(format!("{id} does not exist")));
    }
    Ok(())
}

pub async fn replay(pool: &PgPool, f: &ReplayFilter) -> Result<u64, StoreError> {
    let statuses: Vec<&str> = if f.include_processed {
        vec!["unmappable", "processed"]
    } else {
        vec!["unmappable"]
    };
    let n = sqlx::query(
        "UPDATE events SET status = 'received', status_reason = NULL, processed_at = NULL
          WHERE status = ANY($1) AND ($2::text IS NULL OR source = $2)
            AND ($3::bigint IS NULL OR received_at >= $3)",
    )
    .bind(&statuses)
    .bind(&f.source)
    .bind(f.since_ms)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n)
}

pub async fn recent(
    pool: &PgPool,
    status: Option<EventStatus>,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE ($1::text IS NULL OR status = $1)
          ORDER BY id DESC LIMIT $2"
    );
    let rows = sqlx::query(&sql)
        .bind(status.map(|s| s.as_str()))
        .bind(limit as i64)
        .fetch_all(pool)
        .await?;
    rows.iter().map(event_from_row).collect()
}

pub async fn lead(
    pool: &PgPool,
    email: &str,
) -> Result<Option<(LeadRecord, Vec<EventId>)>, StoreError> {
    let sql = format!("SELECT {LEAD_COLUMNS} FROM leads WHERE email = $1");
    let Some(row) = sqlx::query(&sql).bind(email).fetch_optional(pool).await? else {
        return Ok(None);
    };
    let rec = lead_from_row(&row)?;
    let ids: Vec<i64> =
        sqlx::query_scalar("SELECT event_id FROM lead_events WHERE email = $1 ORDER BY event_id")
            .bind(email)
            .fetch_all(pool)
            .await?;
    Ok(Some((rec, ids.into_iter().map(EventId).collect())))
}

pub async fn leads_at(
    pool: &PgPool,
    stages: &[String],
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<LeadRecord>, StoreError> {
    if stages.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {LEAD_COLUMNS} FROM leads WHERE stage = ANY($1) AND email > $2
          ORDER BY email LIMIT $3"
    );
    let rows = sqlx::query(&sql)
        .bind(stages)
        .bind(after.unwrap_or(""))
        .bind(limit as i64)
        .fetch_all(pool)
        .await?;
    rows.iter().map(lead_from_row).collect()
}

pub async fn funnel(pool: &PgPool) -> Result<Vec<FunnelCount>, StoreError> {
    let rows = sqlx::query(
        "SELECT source, campaign, stage, stage_rank, max_rank, COUNT(*) FROM leads
         GROUP BY source, campaign, stage, stage_rank, max_rank
         ORDER BY source NULLS FIRST, campaign NULLS FIRST, stage_rank",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(FunnelCount {
                source: r.try_get(0)?,
                campaign: r.try_get(1)?,
                stage: r.try_get(2)?,
                stage_rank: r.try_get::<i64, _>(3)?.max(0) as u32,
                max_rank: r.try_get::<i64, _>(4)?.max(0) as u32,
                leads: r.try_get::<i64, _>(5)?.max(0) as u64,
            })
        })
        .collect()
}
