//! Outbox, dead letters, the delivery lease and the shared quota on PostgreSQL.
//!
//! The outbox keeps the invariants listed in `sqlite/outbox.rs`. What several replicas add:
//! - the lease (River's, research/postgres.md): a holder renews while `expires_at` has not
//!   passed; anyone takes over once it has, raising the term;
//! - every claim, token and recorded result checks, in its own transaction, that its fence is
//!   still the current, unexpired term, holding the lease row `FOR SHARE` so a takeover waits
//!   for it to commit: a deliverer that lost the lease can neither spend quota nor finish work;
//! - the quota is one token bucket row per account, refilled by the database's clock.

use std::time::Duration;

use sqlx::postgres::PgPool;
use sqlx::{Postgres, Row, Transaction};

use crate::config::RateLimit;
use crate::lead::Email;
use crate::outbox::CrmUpdate;
use crate::store::lease::bucket;
use crate::store::outbox::{
    Claimed, DeadLetter, LeadDelivery, OutboxDepth, Outcome, PendingUpdate, RecordResult, Recorded,
    Requeued,
};
use crate::store::{Fence, StoreError, Token};

type Tx = Transaction<'static, Postgres>;

use crate::store::outbox::{decode_update as from_json, encode_update as to_json};

// ---- the lease and the quota

pub async fn acquire_lease(
    pool: &PgPool,
    account: &str,
    holder: &str,
    ttl: Duration,
) -> Result<Option<Fence>, StoreError> {
    let term: Option<i64> = sqlx::query_scalar(
        "INSERT INTO delivery_lease (account, holder, term, expires_at)
         VALUES ($1, $2, 1, clock_timestamp() + $3 * interval '1 millisecond')
         ON CONFLICT (account) DO UPDATE SET
            term = CASE WHEN delivery_lease.holder = excluded.holder
                         AND delivery_lease.expires_at >= clock_timestamp()
                        THEN delivery_lease.term ELSE delivery_lease.term + 1 END,
            holder = excluded.holder,
            expires_at = excluded.expires_at
          WHERE delivery_lease.holder = excluded.holder
             OR delivery_lease.expires_at < clock_timestamp()
         RETURNING term",
    )
    .bind(account)
    .bind(holder)
    .bind(ttl.as_millis() as f64)
    .fetch_optional(pool)
    .await?;
    Ok(term.map(|term| Fence {
        account: account.to_string(),
        holder: holder.to_string(),
        term,
    }))
}

/// Ends the lease now if `fence` still holds it; the row (and its term) stays.
pub async fn release_lease(pool: &PgPool, fence: &Fence) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE delivery_lease SET expires_at = clock_timestamp() - interval '1 millisecond'
          WHERE account = $1 AND holder = $2 AND term = $3",
    )
    .bind(&fence.account)
    .bind(&fence.holder)
    .bind(fence.term)
    .execute(pool)
    .await?;
    Ok(())
}

/// Fails with [`StoreError::Fenced`] unless `fence` is the current, unexpired term; holds the
/// lease row until the transaction ends, so a takeover cannot slip in before it commits.
async fn check_fence(tx: &mut Tx, fence: &Fence) -> Result<(), StoreError> {
    let held: Option<i64> = sqlx::query_scalar(
        "SELECT term FROM delivery_lease
          WHERE account = $1 AND holder = $2 AND term = $3 AND expires_at > clock_timestamp()
          FOR SHARE",
    )
    .bind(&fence.account)
    .bind(&fence.holder)
    .bind(fence.term)
    .fetch_optional(&mut **tx)
    .await?;
    match held {
        Some(_) => Ok(()),
        None => Err(StoreError::Fenced(fence.account.clone())),
    }
}

pub async fn take_token(
    pool: &PgPool,
    fence: &Fence,
    quota: &RateLimit,
) -> Result<Token, StoreError> {
    let (capacity, rate) = bucket(quota);
    let mut tx = pool.begin().await?;
    check_fence(&mut tx, fence).await?;
    sqlx::query(
        "INSERT INTO crm_quota (account, tokens, updated_at) VALUES ($1, $2, clock_timestamp())
         ON CONFLICT (account) DO NOTHING",
    )
    .bind(&fence.account)
    .bind(capacity)
    .execute(&mut *tx)
    .await?;
    let row = sqlx::query(
        "SELECT tokens, GREATEST(EXTRACT(EPOCH FROM clock_timestamp() - updated_at), 0)::float8
           FROM crm_quota WHERE account = $1 FOR UPDATE",
    )
    .bind(&fence.account)
    .fetch_one(&mut *tx)
    .await?;
    let (tokens, elapsed): (f64, f64) = (row.try_get(0)?, row.try_get(1)?);
    let available = (tokens + elapsed * rate).min(capacity);
    if available < 1.0 {
        // Nothing changes: the refill keeps counting from the stored instant.
        tx.rollback().await?;
        return Ok(Token::Wait(Duration::from_secs_f64(
            (1.0 - available) / rate,
        )));
    }
    // Advance the stored instant by exactly the time just credited, so nothing is lost to the
    // gap between this statement's clock and the previous one's.
    sqlx::query(
        "UPDATE crm_quota SET tokens = $2, updated_at = updated_at + $3 * interval '1 second'
          WHERE account = $1",
    )
    .bind(&fence.account)
    .bind(available - 1.0)
    .bind(elapsed)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Token::Granted)
}

// ---- the outbox

/// Queues `update` for delivery, coalescing with the lead's pending row (see `sqlite/outbox.rs`
/// `enqueue` for the rules). Returns whether the outbox now holds it.
pub async fn enqueue(tx: &mut Tx, update: &CrmUpdate, now_ms: i64) -> Result<bool, StoreError> {
    let email = update.email.as_str();
    let delivered: Option<i64> =
        sqlx::query_scalar("SELECT version FROM crm_delivered WHERE email = $1")
            .bind(email)
            .fetch_optional(&mut **tx)
            .await?;
    if delivered.is_some_and(|v| v >= update.version) {
        return Ok(false);
    }
    let n = sqlx::query(
        "INSERT INTO outbox (email, version, payload, attempts, next_attempt_at, first_queued_at)
         VALUES ($1, $2, $3, 0, $4, $4)
         ON CONFLICT (email) DO UPDATE
            SET version = excluded.version, payload = excluded.payload
          WHERE excluded.version > outbox.version",
    )
    .bind(email)
    .bind(update.version)
    .bind(to_json(update)?)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub async fn claim_due(
    pool: &PgPool,
    fence: &Fence,
    limit: usize,
    now_ms: i64,
) -> Result<Vec<Claimed>, StoreError> {
    let mut tx = pool.begin().await?;
    check_fence(&mut tx, fence).await?;
    // A MATERIALIZED CTE keeps the LIMIT from locking more rows than it returns (research
    // pitfall 7, Oban's optimisation-fence note).
    let rows = sqlx::query(
        "WITH due AS MATERIALIZED (
            SELECT email FROM outbox
             WHERE next_attempt_at <= $1
               AND (inflight_version IS NULL OR claim_term <= $3)
             ORDER BY next_attempt_at, email
             LIMIT $2
             FOR UPDATE SKIP LOCKED
         )
         UPDATE outbox o SET inflight_version = o.version, claimed_at = $1, claim_term = $3
           FROM due WHERE o.email = due.email
         RETURNING o.email, o.payload, o.attempts, o.first_queued_at, o.next_attempt_at,
                   (SELECT d.stage_rank FROM crm_delivered d WHERE d.email = o.email),
                   (SELECT d.crm_ref FROM crm_delivered d WHERE d.email = o.email)",
    )
    .bind(now_ms)
    .bind(limit as i64)
    .bind(fence.term)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let email: String = r.try_get(0)?;
        let next: i64 = r.try_get(4)?;
        let crm_ref: Option<String> = r.try_get(6)?;
        out.push((
            next,
            email,
            Claimed {
                update: from_json(&r.try_get::<String, _>(1)?)?,
                attempts: r.try_get::<i64, _>(2)?.max(0) as u32,
                first_queued_at_ms: r.try_get(3)?,
                delivered_rank: r.try_get::<Option<i64>, _>(5)?.map(|x| x.max(0) as u32),
                crm_ref: crm_ref.and_then(|s| serde_json::from_str(&s).ok()),
            },
        ));
    }
    // RETURNING has no order; the worker gets oldest due first, like from SQLite.
    out.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    Ok(out.into_iter().map(|(_, _, c)| c).collect())
}

pub async fn record(
    pool: &PgPool,
    fence: &Fence,
    results: &[RecordResult],
    now_ms: i64,
) -> Result<Recorded, StoreError> {
    let mut tx = pool.begin().await?;
    check_fence(&mut tx, fence).await?;
    let mut counts = Recorded::default();
    for r in results {
        let email = r.email.as_str();
        let row = sqlx::query(
            "SELECT version, inflight_version, attempts, first_queued_at, payload
               FROM outbox WHERE email = $1 AND claim_term = $2 FOR UPDATE",
        )
        .bind(email)
        .bind(fence.term)
        .fetch_optional(&mut *tx)
        .await?;
        if let Outcome::Delivered {
            stage_rank,
            crm_ref,
        } = &r.outcome
        {
            mark_delivered(
                &mut tx,
                email,
                r.version,
                *stage_rank,
                crm_ref.as_ref(),
                now_ms,
            )
            .await?;
        }
        // The claim was lost (abandoned and claimed again): only the delivery fact is kept.
        let Some(row) = row else { continue };
        let (version, inflight, attempts, first, payload): (i64, Option<i64>, i64, i64, String) = (
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
            row.try_get(4)?,
        );
        if inflight != Some(r.version) {
            continue;
        }
        let newer_pending = version > r.version;
        match &r.outcome {
            Outcome::Delivered { .. } if !newer_pending => {
                sqlx::query("DELETE FROM outbox WHERE email = $1")
                    .bind(email)
                    .execute(&mut *tx)
                    .await?;
                counts.delivered += 1;
            }
            Outcome::Delivered { .. } => {
                sqlx::query(
                    "UPDATE outbox SET inflight_version = NULL, claimed_at = NULL, attempts = 0,
                            next_attempt_at = $2, first_queued_at = $2, last_error = NULL
                      WHERE email = $1",
                )
                .bind(email)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                counts.delivered += 1;
            }
            Outcome::Retry {
                at_ms,
                error,
                charge,
            } => {
                sqlx::query(
                    "UPDATE outbox SET inflight_version = NULL, claimed_at = NULL,
                            attempts = attempts + $2, next_attempt_at = $3, last_error = $4
                      WHERE email = $1",
                )
                .bind(email)
                .bind(i64::from(*charge))
                .bind(at_ms)
                .bind(error)
                .execute(&mut *tx)
                .await?;
                counts.retried += 1;
            }
            Outcome::Dead { error, .. } if newer_pending => {
                sqlx::query(
                    "UPDATE outbox SET inflight_version = NULL, claimed_at = NULL, attempts = 0,
                            next_attempt_at = $2, last_error = $3
                      WHERE email = $1",
                )
                .bind(email)
                .bind(now_ms)
                .bind(error)
                .execute(&mut *tx)
                .await?;
                counts.superseded += 1;
            }
            Outcome::Dead { crm, error } => {
                sqlx::query(
                    "INSERT INTO dead_letters
                        (email, version, payload, crm, message, attempts, first_queued_at, dead_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(email)
                .bind(version)
                .bind(&payload)
                .bind(crm)
                .bind(error)
                .bind(attempts + 1)
                .bind(first)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM outbox WHERE email = $1")
                    .bind(email)
                    .execute(&mut *tx)
                    .await?;
                counts.dead += 1;
            }
        }
    }
    tx.commit().await?;
    Ok(counts)
}

async fn mark_delivered(
    tx: &mut Tx,
    email: &str,
    version: i64,
    stage_rank: Option<u32>,
    crm_ref: Option<&serde_json::Value>,
    now_ms: i64,
) -> Result<(), StoreError> {
    // The stage rank only ever rises: a withheld stage (NULL) keeps the stored one.
    sqlx::query(
        "INSERT INTO crm_delivered (email, version, stage_rank, crm_ref, delivered_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (email) DO UPDATE SET
            version = GREATEST(crm_delivered.version, excluded.version),
            stage_rank = CASE
                WHEN excluded.stage_rank IS NULL THEN crm_delivered.stage_rank
                WHEN crm_delivered.stage_rank IS NULL THEN excluded.stage_rank
                ELSE GREATEST(crm_delivered.stage_rank, excluded.stage_rank) END,
            crm_ref = COALESCE(excluded.crm_ref, crm_delivered.crm_ref),
            delivered_at = excluded.delivered_at",
    )
    .bind(email)
    .bind(version)
    .bind(stage_rank.map(i64::from))
    .bind(crm_ref.map(|v| v.to_string()))
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

// ---- dead letters and reports

pub async fn dead_letters(
    pool: &PgPool,
    ids: Option<&[i64]>,
) -> Result<Vec<DeadLetter>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, email, version, crm, message, attempts, first_queued_at, dead_at, payload
           FROM dead_letters WHERE ($1::bigint[] IS NULL OR id = ANY($1)) ORDER BY id",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let id: i64 = r.try_get(0)?;
            let email: String = r.try_get(1)?;
            Ok(DeadLetter {
                id,
                email: Email::parse(&email)
                    .map_err(|e| StoreError::Corrupt(format!("dead letter {id}: {e}")))?,
                version: r.try_get(2)?,
                crm: r.try_get(3)?,
                message: r.try_get(4)?,
                attempts: r.try_get::<i64, _>(5)?.max(0) as u32,
                first_queued_at_ms: r.try_get(6)?,
                dead_at_ms: r.try_get(7)?,
                update: from_json(&r.try_get::<String, _>(8)?)?,
            })
        })
        .collect()
}

pub async fn requeue_dead_letters(
    pool: &PgPool,
    ids: Option<&[i64]>,
    now_ms: i64,
) -> Result<Requeued, StoreError> {
    let mut tx = pool.begin().await?;
    let letters = {
        // Locked, so two operators replaying at once requeue each letter once.
        let rows: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM dead_letters WHERE ($1::bigint[] IS NULL OR id = ANY($1))
              ORDER BY id FOR UPDATE",
        )
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?;
        dead_letters(pool, Some(&rows)).await?
    };
    let mut out = Requeued {
        not_found: crate::store::outbox::not_found(ids, &letters),
        ..Requeued::default()
    };
    for l in &letters {
        let pending: Option<i64> =
            sqlx::query_scalar("SELECT version FROM outbox WHERE email = $1 FOR UPDATE")
                .bind(l.email.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let queued = match pending {
            Some(v) if v >= l.version => false,
            _ => enqueue(&mut tx, &l.update, now_ms).await?,
        };
        if queued {
            sqlx::query(
                "UPDATE outbox SET attempts = 0, next_attempt_at = $2, first_queued_at = $2,
                        last_error = NULL
                  WHERE email = $1 AND inflight_version IS NULL",
            )
            .bind(l.email.as_str())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            out.requeued += 1;
        } else {
            out.superseded += 1;
        }
        sqlx::query("DELETE FROM dead_letters WHERE id = $1")
            .bind(l.id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(out)
}

pub async fn depth(pool: &PgPool) -> Result<OutboxDepth, StoreError> {
    let row = sqlx::query(
        "SELECT COUNT(*) FILTER (WHERE inflight_version IS NULL),
                COUNT(*) FILTER (WHERE inflight_version IS NOT NULL),
                MIN(next_attempt_at) FILTER (WHERE inflight_version IS NULL),
                (SELECT COUNT(*) FROM dead_letters)
           FROM outbox",
    )
    .fetch_one(pool)
    .await?;
    Ok(OutboxDepth {
        pending: row.try_get::<i64, _>(0)?.max(0) as u64,
        in_flight: row.try_get::<i64, _>(1)?.max(0) as u64,
        next_due_at_ms: row.try_get(2)?,
        dead_letters: row.try_get::<i64, _>(3)?.max(0) as u64,
    })
}

pub async fn lead_delivery(pool: &PgPool, email: &str) -> Result<LeadDelivery, StoreError> {
    let delivered = sqlx::query("SELECT version, delivered_at FROM crm_delivered WHERE email = $1")
        .bind(email)
        .fetch_optional(pool)
        .await?
        .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
        .transpose()?;
    let pending = sqlx::query(
        "SELECT version, attempts, next_attempt_at, inflight_version IS NOT NULL, last_error
           FROM outbox WHERE email = $1",
    )
    .bind(email)
    .fetch_optional(pool)
    .await?
    .map(|r| {
        Ok::<_, sqlx::Error>(PendingUpdate {
            version: r.try_get(0)?,
            attempts: r.try_get::<i64, _>(1)?.max(0) as u32,
            next_attempt_at_ms: r.try_get(2)?,
            in_flight: r.try_get(3)?,
            last_error: r.try_get(4)?,
        })
    })
    .transpose()?;
    let dead_letters: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM dead_letters WHERE email = $1 ORDER BY id")
            .bind(email)
            .fetch_all(pool)
            .await?;
    Ok(LeadDelivery {
        delivered,
        pending,
        dead_letters,
    })
}
