//! Outbox, dead letters and per-lead delivery state in SQLite.
//!
//! Invariants (each function keeps them inside one transaction):
//! - one outbox row per lead, holding its newest snapshot: an older version never replaces a
//!   newer one, and a version the CRM already received is never queued again;
//! - a row in flight keeps `inflight_version`; a newer snapshot arriving meanwhile replaces the
//!   payload, and the in-flight outcome then leaves the row (now pending) instead of deleting it;
//! - a dead letter is written in the same transaction that removes the outbox row, so an update is
//!   always in exactly one of outbox, dead letters, or delivered.

use rusqlite::{params, Connection, OptionalExtension};

use crate::lead::Email;
use crate::outbox::CrmUpdate;
use crate::store::outbox::{
    now_ms, Claimed, DeadLetter, LeadDelivery, OutboxDepth, Outcome, PendingUpdate, RecordResult,
    Recorded, Requeued,
};
use crate::store::{Fence, StoreError};

/// Elects `holder` for `account`: one process owns a SQLite store, so whoever asks holds the
/// lease. A new holder (a restarted process) starts a new term, which makes what the previous
/// process left in flight claimable again.
pub fn acquire_lease(
    conn: &Connection,
    account: &str,
    holder: &str,
    expires_at_ms: i64,
) -> Result<Fence, StoreError> {
    let term: i64 = conn
        .prepare_cached(
            "INSERT INTO delivery_lease (account, holder, term, expires_at) VALUES (?1, ?2, 1, ?3)
             ON CONFLICT (account) DO UPDATE SET
                term = CASE WHEN delivery_lease.holder = excluded.holder
                            THEN delivery_lease.term ELSE delivery_lease.term + 1 END,
                holder = excluded.holder, expires_at = excluded.expires_at
             RETURNING term",
        )?
        .query_row(params![account, holder, expires_at_ms], |r| r.get(0))?;
    Ok(Fence {
        account: account.to_string(),
        holder: holder.to_string(),
        term,
    })
}

/// Ends the lease if `fence` still holds it. The row stays so that terms only ever grow.
pub fn release_lease(conn: &Connection, fence: &Fence) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE delivery_lease SET expires_at = 0 WHERE account = ?1 AND holder = ?2 AND term = ?3",
    )?
    .execute(params![fence.account, fence.holder, fence.term])?;
    Ok(())
}

/// Fails with [`StoreError::Fenced`] unless `fence` is the current term of its account.
fn check_fence(conn: &Connection, fence: &Fence) -> Result<(), StoreError> {
    let current: Option<(String, i64)> = conn
        .prepare_cached("SELECT holder, term FROM delivery_lease WHERE account = ?1")?
        .query_row(params![fence.account], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match current {
        Some((holder, term)) if holder == fence.holder && term == fence.term => Ok(()),
        _ => Err(StoreError::Fenced(fence.account.clone())),
    }
}

use crate::store::outbox::{decode_update as from_json, encode_update as to_json};

/// Queues `update` for delivery, coalescing with the lead's pending update. Call it inside the
/// transaction that stored the lead state the snapshot was taken from.
///
/// - no pending row: one is inserted, due now;
/// - a pending row with an older version: its payload is replaced (attempts and backoff stay,
///   because the CRM's health did not change);
/// - a pending row with the same or a newer version, or a version the CRM already received: nothing
///   changes, so an older state is never sent after a newer one;
/// - a row in flight: the payload is replaced and sent once the in-flight send finishes.
pub fn enqueue(conn: &Connection, update: &CrmUpdate) -> Result<(), StoreError> {
    enqueue_at(conn, update, now_ms())
}

/// [`enqueue`] with an explicit clock (tests, replay).
pub fn enqueue_at(conn: &Connection, update: &CrmUpdate, now_ms: i64) -> Result<(), StoreError> {
    put(conn, update, now_ms).map(|_| ())
}

/// Returns whether the outbox now holds `update`.
fn put(conn: &Connection, update: &CrmUpdate, now_ms: i64) -> Result<bool, StoreError> {
    let email = update.email.as_str();
    let delivered: Option<i64> = conn
        .prepare_cached("SELECT version FROM crm_delivered WHERE email = ?1")?
        .query_row(params![email], |r| r.get(0))
        .optional()?;
    if delivered.is_some_and(|v| v >= update.version) {
        return Ok(false);
    }
    let payload = to_json(update)?;
    let n = conn
        .prepare_cached(
            "INSERT INTO outbox (email, version, payload, attempts, next_attempt_at, first_queued_at)
             VALUES (?1, ?2, ?3, 0, ?4, ?4)
             ON CONFLICT (email) DO UPDATE
                SET version = excluded.version, payload = excluded.payload
              WHERE excluded.version > outbox.version",
        )?
        .execute(params![email, update.version, payload, now_ms])?;
    Ok(n == 1)
}

/// Marks up to `limit` due rows in flight under `fence` and returns them, oldest due first.
pub fn claim_due(
    conn: &Connection,
    fence: &Fence,
    limit: usize,
    now_ms: i64,
) -> Result<Vec<Claimed>, StoreError> {
    check_fence(conn, fence)?;
    let mut select = conn.prepare_cached(
        "SELECT o.email, o.payload, o.attempts, o.first_queued_at, d.stage_rank, d.crm_ref
           FROM outbox o LEFT JOIN crm_delivered d ON d.email = o.email
          WHERE o.next_attempt_at <= ?1
            AND (o.inflight_version IS NULL OR o.claim_term <= ?3)
          ORDER BY o.next_attempt_at, o.email
          LIMIT ?2",
    )?;
    let rows = select
        .query_map(params![now_ms, limit as i64, fence.term], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut mark = conn.prepare_cached(
        "UPDATE outbox SET inflight_version = version, claimed_at = ?2, claim_term = ?3
          WHERE email = ?1",
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for (email, payload, attempts, first, rank, crm_ref) in rows {
        let update = from_json(&payload)?;
        mark.execute(params![email, now_ms, fence.term])?;
        out.push(Claimed {
            update,
            attempts: attempts.max(0) as u32,
            first_queued_at_ms: first,
            delivered_rank: rank.map(|r| r.max(0) as u32),
            crm_ref: crm_ref.and_then(|s| serde_json::from_str(&s).ok()),
        });
    }
    Ok(out)
}

/// Records the outcome of each update claimed under `fence` (see the module invariants).
pub fn record(
    conn: &Connection,
    fence: &Fence,
    results: &[RecordResult],
    now_ms: i64,
) -> Result<Recorded, StoreError> {
    check_fence(conn, fence)?;
    let mut counts = Recorded::default();
    for r in results {
        let email = r.email.as_str();
        let row: Option<(i64, Option<i64>, i64, i64, String)> = conn
            .prepare_cached(
                "SELECT version, inflight_version, attempts, first_queued_at, payload
                   FROM outbox WHERE email = ?1 AND claim_term = ?2",
            )?
            .query_row(params![email, fence.term], |x| {
                Ok((x.get(0)?, x.get(1)?, x.get(2)?, x.get(3)?, x.get(4)?))
            })
            .optional()?;
        if let Outcome::Delivered {
            stage_rank,
            crm_ref,
        } = &r.outcome
        {
            mark_delivered(
                conn,
                email,
                r.version,
                *stage_rank,
                crm_ref.as_ref(),
                now_ms,
            )?;
        }
        // The claim was lost (it was abandoned and claimed again): only the delivery fact above
        // is kept; the row belongs to the newer claim.
        let Some((version, inflight, attempts, first, payload)) = row else {
            continue;
        };
        if inflight != Some(r.version) {
            continue;
        }
        let newer_pending = version > r.version;
        match &r.outcome {
            Outcome::Delivered { .. } if !newer_pending => {
                conn.prepare_cached("DELETE FROM outbox WHERE email = ?1")?
                    .execute(params![email])?;
                counts.delivered += 1;
            }
            Outcome::Delivered { .. } => {
                // The newer snapshot goes next, as a fresh state.
                conn.prepare_cached(
                    "UPDATE outbox SET inflight_version = NULL, claimed_at = NULL, attempts = 0,
                            next_attempt_at = ?2, first_queued_at = ?2, last_error = NULL
                      WHERE email = ?1",
                )?
                .execute(params![email, now_ms])?;
                counts.delivered += 1;
            }
            Outcome::Retry {
                at_ms,
                error,
                charge,
            } => {
                conn.prepare_cached(
                    "UPDATE outbox SET inflight_version = NULL, claimed_at = NULL,
                            attempts = attempts + ?2, next_attempt_at = ?3, last_error = ?4
                      WHERE email = ?1",
                )?
                .execute(params![email, i64::from(*charge), at_ms, error])?;
                counts.retried += 1;
            }
            Outcome::Dead { error, .. } if newer_pending => {
                // The newer snapshot holds everything the dead one had; it gets its own chances.
                conn.prepare_cached(
                    "UPDATE outbox SET inflight_version = NULL, claimed_at = NULL, attempts = 0,
                            next_attempt_at = ?2, last_error = ?3
                      WHERE email = ?1",
                )?
                .execute(params![email, now_ms, error])?;
                counts.superseded += 1;
            }
            Outcome::Dead { crm, error } => {
                conn.prepare_cached(
                    "INSERT INTO dead_letters
                        (email, version, payload, crm, message, attempts, first_queued_at, dead_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    email,
                    version,
                    payload,
                    crm,
                    error,
                    attempts + 1,
                    first,
                    now_ms
                ])?;
                conn.prepare_cached("DELETE FROM outbox WHERE email = ?1")?
                    .execute(params![email])?;
                counts.dead += 1;
            }
        }
    }
    Ok(counts)
}

fn mark_delivered(
    conn: &Connection,
    email: &str,
    version: i64,
    stage_rank: Option<u32>,
    crm_ref: Option<&serde_json::Value>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let crm_ref = crm_ref.map(|v| v.to_string());
    // The stage rank only ever rises: a withheld stage (None) keeps the stored one.
    conn.prepare_cached(
        "INSERT INTO crm_delivered (email, version, stage_rank, crm_ref, delivered_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (email) DO UPDATE SET
            version = MAX(crm_delivered.version, excluded.version),
            stage_rank = CASE
                WHEN excluded.stage_rank IS NULL THEN crm_delivered.stage_rank
                WHEN crm_delivered.stage_rank IS NULL THEN excluded.stage_rank
                ELSE MAX(crm_delivered.stage_rank, excluded.stage_rank) END,
            crm_ref = COALESCE(excluded.crm_ref, crm_delivered.crm_ref),
            delivered_at = excluded.delivered_at",
    )?
    .execute(params![
        email,
        version,
        stage_rank.map(i64::from),
        crm_ref,
        now_ms
    ])?;
    Ok(())
}

/// Dead letters, oldest first; `ids` narrows the list.
pub fn dead_letters(conn: &Connection, ids: Option<&[i64]>) -> Result<Vec<DeadLetter>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT id, email, version, crm, message, attempts, first_queued_at, dead_at, payload
           FROM dead_letters ORDER BY id",
    )?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, String>(8)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::new();
    for (id, email, version, crm, message, attempts, first, dead_at, payload) in rows {
        if ids.is_some_and(|list| !list.contains(&id)) {
            continue;
        }
        out.push(DeadLetter {
            id,
            email: Email::parse(&email)
                .map_err(|e| StoreError::Corrupt(format!("dead letter {id}: {e}")))?,
            version,
            crm,
            message,
            attempts: attempts.max(0) as u32,
            first_queued_at_ms: first,
            dead_at_ms: dead_at,
            update: from_json(&payload)?,
        });
    }
    Ok(out)
}

/// Puts dead letters (all, or those in `ids`) back in the outbox, due now with fresh attempts.
pub fn requeue_dead_letters(
    conn: &Connection,
    ids: Option<&[i64]>,
    now_ms: i64,
) -> Result<Requeued, StoreError> {
    let letters = dead_letters(conn, ids)?;
    let mut out = Requeued {
        not_found: crate::store::outbox::not_found(ids, &letters),
        ..Requeued::default()
    };
    for l in &letters {
        let pending: Option<(i64, Option<i64>)> = conn
            .prepare_cached("SELECT version, inflight_version FROM outbox WHERE email = ?1")?
            .query_row(params![l.email.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let queued = match pending {
            // Something at least as new is already waiting.
            Some((v, _)) if v >= l.version => false,
            _ => put(conn, &l.update, now_ms)?,
        };
        if queued {
            // A replayed update starts afresh: the operator fixed something.
            conn.prepare_cached(
                "UPDATE outbox SET attempts = 0, next_attempt_at = ?2, first_queued_at = ?2,
                        last_error = NULL
                  WHERE email = ?1 AND inflight_version IS NULL",
            )?
            .execute(params![l.email.as_str(), now_ms])?;
            out.requeued += 1;
        } else {
            out.superseded += 1;
        }
        conn.prepare_cached("DELETE FROM dead_letters WHERE id = ?1")?
            .execute(params![l.id])?;
    }
    Ok(out)
}

/// Counts of pending, in-flight and dead updates, and when the next one is due.
pub fn depth(conn: &Connection) -> Result<OutboxDepth, StoreError> {
    let (pending, in_flight, next): (i64, i64, Option<i64>) = conn.query_row(
        "SELECT COALESCE(SUM(inflight_version IS NULL), 0),
                COALESCE(SUM(inflight_version IS NOT NULL), 0),
                MIN(CASE WHEN inflight_version IS NULL THEN next_attempt_at END)
           FROM outbox",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let dead: i64 = conn.query_row("SELECT COUNT(*) FROM dead_letters", [], |r| r.get(0))?;
    Ok(OutboxDepth {
        pending: pending as u64,
        in_flight: in_flight as u64,
        dead_letters: dead as u64,
        next_due_at_ms: next,
    })
}

/// One lead's delivery state.
pub fn lead_delivery(conn: &Connection, email: &str) -> Result<LeadDelivery, StoreError> {
    let delivered = conn
        .prepare_cached("SELECT version, delivered_at FROM crm_delivered WHERE email = ?1")?
        .query_row(params![email], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let pending = conn
        .prepare_cached(
            "SELECT version, attempts, next_attempt_at, inflight_version IS NOT NULL, last_error
               FROM outbox WHERE email = ?1",
        )?
        .query_row(params![email], |r| {
            Ok(PendingUpdate {
                version: r.get(0)?,
                attempts: r.get(1)?,
                next_attempt_at_ms: r.get(2)?,
                in_flight: r.get(3)?,
                last_error: r.get(4)?,
            })
        })
        .optional()?;
    let dead_letters = conn
        .prepare_cached("SELECT id FROM dead_letters WHERE email = ?1 ORDER BY id")?
        .query_map(params![email], |r| r.get(0))?
        .collect::<Result<Vec<i64>, _>>()?;
    Ok(LeadDelivery {
        delivered,
        pending,
        dead_letters,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::outbox::Change;

    fn db() -> (Connection, Fence) {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::migrate::run(&mut c).unwrap();
        let f = acquire_lease(&c, "hubspot", "me", 0).unwrap();
        (c, f)
    }

    fn update(email: &str, version: i64, rank: u32) -> CrmUpdate {
        CrmUpdate {
            email: Email::parse(email).unwrap(),
            version,
            fields: BTreeMap::new(),
            stage: format!("s{rank}"),
            stage_rank: rank,
            stage_values: BTreeMap::new(),
            fit_score: 0,
            engagement_score: 0,
            score: 0,
            reason: String::new(),
            disqualified: None,
            changes: vec![Change::Created],
            at: None,
        }
    }

    fn ok(email: &str, version: i64, rank: Option<u32>) -> RecordResult {
        RecordResult {
            email: Email::parse(email).unwrap(),
            version,
            outcome: Outcome::Delivered {
                stage_rank: rank,
                crm_ref: None,
            },
        }
    }

    #[test]
    fn a_newer_update_replaces_a_pending_one_and_an_older_never_does() {
        let (c, f) = db();
        enqueue_at(&c, &update("a@x.io", 2, 1), 0).unwrap();
        enqueue_at(&c, &update("a@x.io", 1, 9), 0).unwrap();
        let got = claim_due(&c, &f, 10, 0).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].update.version, 2);
        enqueue_at(&c, &update("a@x.io", 3, 2), 0).unwrap();
        // The next step of the same term takes it again, newest version (the previous step's
        // outcome was never recorded).
        let got = claim_due(&c, &f, 10, 0).unwrap();
        assert_eq!(got[0].update.version, 3);
    }

    #[test]
    fn a_newer_version_arriving_in_flight_survives_the_in_flight_success() {
        let (c, f) = db();
        enqueue_at(&c, &update("a@x.io", 1, 1), 0).unwrap();
        let got = claim_due(&c, &f, 10, 0).unwrap();
        enqueue_at(&c, &update("a@x.io", 2, 2), 5).unwrap();
        let n = record(&c, &f, &[ok("a@x.io", got[0].update.version, Some(1))], 10).unwrap();
        assert_eq!(n.delivered, 1);
        let next = claim_due(&c, &f, 10, 10).unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].update.version, 2);
        assert_eq!(next[0].delivered_rank, Some(1));
        record(&c, &f, &[ok("a@x.io", 2, Some(2))], 20).unwrap();
        assert_eq!(depth(&c).unwrap().pending, 0);
        // A stale version arriving later (a replayed old event) is not queued again.
        enqueue_at(&c, &update("a@x.io", 2, 0), 30).unwrap();
        enqueue_at(&c, &update("a@x.io", 1, 0), 30).unwrap();
        assert_eq!(depth(&c).unwrap().pending, 0);
    }

    #[test]
    fn a_withheld_stage_keeps_the_higher_delivered_rank() {
        let (c, f) = db();
        enqueue_at(&c, &update("a@x.io", 1, 4), 0).unwrap();
        claim_due(&c, &f, 1, 0).unwrap();
        record(&c, &f, &[ok("a@x.io", 1, Some(4))], 0).unwrap();
        enqueue_at(&c, &update("a@x.io", 2, 2), 0).unwrap();
        let got = claim_due(&c, &f, 1, 0).unwrap();
        assert_eq!(got[0].delivered_rank, Some(4));
        record(&c, &f, &[ok("a@x.io", 2, None)], 0).unwrap();
        enqueue_at(&c, &update("a@x.io", 3, 3), 0).unwrap();
        assert_eq!(claim_due(&c, &f, 1, 0).unwrap()[0].delivered_rank, Some(4));
    }

    #[test]
    fn retries_wait_and_count_and_dead_letters_can_be_requeued() {
        let (c, f) = db();
        enqueue_at(&c, &update("a@x.io", 1, 1), 0).unwrap();
        let e = Email::parse("a@x.io").unwrap();
        claim_due(&c, &f, 1, 0).unwrap();
        record(
            &c,
            &f,
            &[RecordResult {
                email: e.clone(),
                version: 1,
                outcome: Outcome::Retry {
                    at_ms: 100,
                    error: "HTTP 503".into(),
                    charge: true,
                },
            }],
            0,
        )
        .unwrap();
        assert!(claim_due(&c, &f, 1, 99).unwrap().is_empty());
        let again = claim_due(&c, &f, 1, 100).unwrap();
        assert_eq!(again[0].attempts, 1);
        record(
            &c,
            &f,
            &[RecordResult {
                email: e.clone(),
                version: 1,
                outcome: Outcome::Dead {
                    crm: "hubspot".into(),
                    error: "Property \"x\" does not exist".into(),
                },
            }],
            200,
        )
        .unwrap();
        let d = depth(&c).unwrap();
        assert_eq!((d.pending, d.in_flight, d.dead_letters), (0, 0, 1));
        let dl = dead_letters(&c, None).unwrap();
        assert_eq!(dl[0].attempts, 2);
        assert!(dl[0].message.contains("does not exist"));
        let r = requeue_dead_letters(&c, Some(&[dl[0].id, 999]), 300).unwrap();
        assert_eq!(r.requeued, 1);
        assert_eq!(r.not_found, vec![999]);
        let back = claim_due(&c, &f, 1, 300).unwrap();
        assert_eq!((back[0].attempts, back[0].update.version), (0, 1));
        assert_eq!(depth(&c).unwrap().dead_letters, 0);
    }

    #[test]
    fn a_dead_letter_older_than_what_the_crm_has_is_superseded_on_replay() {
        let (c, f) = db();
        enqueue_at(&c, &update("a@x.io", 1, 1), 0).unwrap();
        claim_due(&c, &f, 1, 0).unwrap();
        record(
            &c,
            &f,
            &[RecordResult {
                email: Email::parse("a@x.io").unwrap(),
                version: 1,
                outcome: Outcome::Dead {
                    crm: "hubspot".into(),
                    error: "bad".into(),
                },
            }],
            0,
        )
        .unwrap();
        enqueue_at(&c, &update("a@x.io", 2, 1), 0).unwrap();
        claim_due(&c, &f, 1, 0).unwrap();
        record(&c, &f, &[ok("a@x.io", 2, Some(1))], 0).unwrap();
        let r = requeue_dead_letters(&c, None, 0).unwrap();
        assert_eq!((r.requeued, r.superseded), (0, 1));
        assert_eq!(depth(&c).unwrap().pending, 0);
    }

    #[test]
    fn a_new_term_reclaims_what_the_previous_one_left_in_flight_and_fences_it_out() {
        let (c, old) = db();
        enqueue_at(&c, &update("a@x.io", 1, 1), 0).unwrap();
        claim_due(&c, &old, 1, 0).unwrap();
        let new = acquire_lease(&c, "hubspot", "restarted", 0).unwrap();
        assert_eq!(new.term, old.term + 1);
        assert_eq!(claim_due(&c, &new, 1, 0).unwrap().len(), 1);
        assert!(matches!(
            record(&c, &old, &[ok("a@x.io", 1, Some(1))], 0),
            Err(StoreError::Fenced(_))
        ));
        assert!(matches!(
            claim_due(&c, &old, 1, 0),
            Err(StoreError::Fenced(_))
        ));
        assert_eq!(
            record(&c, &new, &[ok("a@x.io", 1, Some(1))], 0)
                .unwrap()
                .delivered,
            1
        );
    }
}
