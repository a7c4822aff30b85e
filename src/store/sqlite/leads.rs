//! Inbox -> leads: the SQL behind processing, replay and the lead/funnel queries.

use rusqlite::{params, Connection, OptionalExtension};

use super::{event_from_row, EVENT_COLUMNS};
use crate::lead::Email;
use crate::store::{
    EventId, EventStatus, FunnelCount, LeadFn, LeadInput, LeadRecord, Processed, ReplayFilter,
    StoreError, StoredEvent,
};

/// The lead's columns, then whether an update of it was ever queued (`crm_known`): a row in the
/// outbox, in crm_delivered or in dead_letters (each indexed by email).
const LEAD_COLUMNS: &str = "email, state, version, stage, stage_rank, max_rank, score, source, campaign, created_at, updated_at,
    EXISTS (SELECT 1 FROM outbox o WHERE o.email = leads.email)
    OR EXISTS (SELECT 1 FROM crm_delivered d WHERE d.email = leads.email)
    OR EXISTS (SELECT 1 FROM dead_letters x WHERE x.email = leads.email)";

fn lead_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LeadRecord> {
    Ok(LeadRecord {
        email: r.get(0)?,
        state: r.get(1)?,
        version: r.get(2)?,
        stage: r.get(3)?,
        stage_rank: r.get(4)?,
        max_rank: r.get(5)?,
        score: r.get(6)?,
        source: r.get(7)?,
        campaign: r.get(8)?,
        created_at_ms: r.get(9)?,
        updated_at_ms: r.get(10)?,
        crm_known: r.get(11)?,
    })
}

pub fn pending(
    conn: &Connection,
    after: Option<EventId>,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE status = 'received' AND id > ?1 ORDER BY id LIMIT ?2"
    );
    let mut st = conn.prepare_cached(&sql)?;
    let mut rows = st.query(params![after.map(|e| e.0).unwrap_or(0), limit as i64])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(event_from_row(r)?);
    }
    Ok(out)
}

/// Applies one event's outcome inside the caller's transaction (savepoint). False: the event
/// is no longer waiting (processed already); nothing is written.
pub fn process(
    conn: &Connection,
    id: EventId,
    outcome: Processed,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let status: Option<String> = conn
        .prepare_cached("SELECT status FROM events WHERE id = ?1")?
        .query_row(params![id.0], |r| r.get(0))
        .optional()?;
    match status.as_deref() {
        None => return Err(StoreError::Corrupt(format!("{id} does not exist"))),
        Some("received") => {}
        Some(_) => return Ok(false),
    }
    match outcome {
        Processed::Unmappable(reason) => {
            set_status(conn, id, EventStatus::Unmappable, Some(&reason), now_ms)?;
        }
        Processed::Leads(leads) => {
            for step in leads {
                apply_lead(conn, &step.email, Some(&step.input), step.apply, now_ms)?;
            }
            set_status(conn, id, EventStatus::Processed, None, now_ms)?;
        }
    }
    Ok(true)
}

/// Reads a lead, lets `apply` compute its change (with the lead's input log when `input` is
/// late), writes it, queues its CRM snapshot and logs `input`.
pub fn apply_lead(
    conn: &Connection,
    email: &Email,
    input: Option<&LeadInput>,
    apply: LeadFn,
    now_ms: i64,
) -> Result<(), StoreError> {
    let prev = {
        let sql = format!("SELECT {LEAD_COLUMNS} FROM leads WHERE email = ?1");
        let mut st = conn.prepare_cached(&sql)?;
        st.query_row(params![email.as_str()], lead_from_row)
            .optional()?
    };
    let log = match input {
        Some(i) if is_late(conn, email, i)? => Some(inputs(conn, email)?),
        _ => None,
    };
    let version = prev.as_ref().map(|p| p.version + 1).unwrap_or(1);
    let change = apply(prev.as_ref(), version, log).map_err(StoreError::Rejected)?;
    if let Some(i) = input {
        let clock = change.as_ref().and_then(|c| c.input_clock_ms);
        log_input(conn, email, i, clock.unwrap_or(i.folded_at_ms))?;
    }
    let Some(change) = change else {
        return Ok(());
    };
    let mut up = conn.prepare_cached(
        "INSERT INTO leads (email, state, version, stage, stage_rank, max_rank, score,
                            source, campaign, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?10, ?6, ?7, ?8, ?9, ?9)
         ON CONFLICT (email) DO UPDATE SET
            state = excluded.state, version = excluded.version, stage = excluded.stage,
            stage_rank = excluded.stage_rank,
            max_rank = MAX(leads.max_rank, excluded.max_rank),
            score = excluded.score, updated_at = excluded.updated_at",
    )?;
    up.execute(params![
        email.as_str(),
        change.state,
        version,
        change.stage,
        change.stage_rank,
        change.score,
        change.source,
        change.campaign,
        now_ms,
        change.reached_rank
    ])?;
    if let Some(update) = &change.update {
        super::outbox::enqueue(conn, update)?;
    }
    Ok(())
}

/// Whether an input of this lead that happened after `input` (or `input`'s own event, processed
/// again) is already applied.
fn is_late(conn: &Connection, email: &Email, input: &LeadInput) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM lead_events WHERE email = ?1 AND (event_id = ?2
                OR occurred_at > ?3 OR (occurred_at = ?3 AND event_id > ?2)))",
        )?
        .query_row(
            params![email.as_str(), input.event.0, input.occurred_at_ms],
            |r| r.get(0),
        )?)
}

/// The lead's logged inputs.
fn inputs(conn: &Connection, email: &Email) -> Result<Vec<LeadInput>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT event_id, occurred_at, folded_at, items FROM lead_events WHERE email = ?1",
    )?;
    let rows = st
        .query_map(params![email.as_str()], |r| {
            Ok(LeadInput {
                event: EventId(r.get(0)?),
                occurred_at_ms: r.get::<_, Option<i64>>(1)?.unwrap_or(0),
                folded_at_ms: r.get::<_, Option<i64>>(2)?.unwrap_or(0),
                items: r.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Logs `input` for the lead, qualified at `clock_ms`.
fn log_input(
    conn: &Connection,
    email: &Email,
    input: &LeadInput,
    clock_ms: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO lead_events (email, event_id, occurred_at, folded_at, items)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (email, event_id) DO UPDATE SET occurred_at = excluded.occurred_at,
            folded_at = excluded.folded_at, items = excluded.items",
    )?
    .execute(params![
        email.as_str(),
        input.event.0,
        input.occurred_at_ms,
        clock_ms,
        input.items
    ])?;
    Ok(())
}

pub fn leads_at(
    conn: &Connection,
    stages: &[String],
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<LeadRecord>, StoreError> {
    if stages.is_empty() {
        return Ok(Vec::new());
    }
    let marks = vec!["?"; stages.len()].join(", ");
    let sql = format!(
        "SELECT {LEAD_COLUMNS} FROM leads WHERE stage IN ({marks}) AND email > ? ORDER BY email LIMIT ?"
    );
    let mut st = conn.prepare_cached(&sql)?;
    let mut args: Vec<&dyn rusqlite::ToSql> =
        stages.iter().map(|s| s as &dyn rusqlite::ToSql).collect();
    let after = after.unwrap_or("");
    let limit = limit as i64;
    args.push(&after);
    args.push(&limit);
    let rows = st
        .query_map(args.as_slice(), lead_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn set_status(
    conn: &Connection,
    id: EventId,
    status: EventStatus,
    reason: Option<&str>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE events SET status = ?2, status_reason = ?3, processed_at = ?4 WHERE id = ?1",
        )?
        .execute(params![id.0, status.as_str(), reason, now_ms])?;
    if n == 0 {
        return Err(StoreError::Corrupt(format!("{id} does not exist")));
    }
    Ok(())
}

pub fn replay(conn: &Connection, f: &ReplayFilter) -> Result<u64, StoreError> {
    let statuses = if f.include_processed {
        "('unmappable', 'processed')"
    } else {
        "('unmappable')"
    };
    let sql = format!(
        "UPDATE events SET status = 'received', status_reason = NULL, processed_at = NULL
         WHERE status IN {statuses} AND (?1 IS NULL OR source = ?1) AND (?2 IS NULL OR received_at >= ?2)"
    );
    let n = conn.execute(&sql, params![f.source, f.since_ms])?;
    Ok(n as u64)
}

pub fn recent(
    conn: &Connection,
    status: Option<EventStatus>,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE (?1 IS NULL OR status = ?1) ORDER BY id DESC LIMIT ?2"
    );
    let mut st = conn.prepare_cached(&sql)?;
    let mut rows = st.query(params![status.map(|s| s.as_str()), limit as i64])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(event_from_row(r)?);
    }
    Ok(out)
}

pub fn lead(
    conn: &Connection,
    email: &str,
) -> Result<Option<(LeadRecord, Vec<EventId>)>, StoreError> {
    let sql = format!("SELECT {LEAD_COLUMNS} FROM leads WHERE email = ?1");
    let Some(rec) = conn
        .query_row(&sql, params![email], lead_from_row)
        .optional()?
    else {
        return Ok(None);
    };
    let mut st =
        conn.prepare_cached("SELECT event_id FROM lead_events WHERE email = ?1 ORDER BY event_id")?;
    let ids = st
        .query_map(params![email], |r| r.get::<_, i64>(0))?
        .map(|r| r.map(EventId))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some((rec, ids)))
}

pub fn funnel(conn: &Connection) -> Result<Vec<FunnelCount>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT source, campaign, stage, stage_rank, max_rank, COUNT(*) FROM leads
         GROUP BY source, campaign, stage, stage_rank, max_rank
         ORDER BY source, campaign, stage_rank",
    )?;
    let rows = st
        .query_map([], |r| {
            Ok(FunnelCount {
                source: r.get(0)?,
                campaign: r.get(1)?,
                stage: r.get(2)?,
                stage_rank: r.get(3)?,
                max_rank: r.get(4)?,
                leads: r.get::<_, i64>(5)? as u64,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::crm::test_support::update;
    use crate::outbox::CrmUpdate;
    use crate::store::sqlite::outbox;
    use crate::store::{Outcome, RecordResult};

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::migrate::run(&mut c).unwrap();
        c
    }

    /// Writes a new version of `email`, queueing `update` with it when given.
    fn write(c: &Connection, email: &str, update: Option<CrmUpdate>) -> LeadRecord {
        let e = Email::parse(email).unwrap();
        let apply: LeadFn = Box::new(move |_, _, _| {
            Ok(Some(crate::store::LeadChange {
                state: "{}".into(),
                stage: "lead".into(),
                stage_rank: 1,
                reached_rank: 1,
                score: 0,
                source: None,
                campaign: None,
                update,
                input_clock_ms: None,
            }))
        });
        apply_lead(c, &e, None, apply, 0).unwrap();
        let sql = format!("SELECT {LEAD_COLUMNS} FROM leads WHERE email = ?1");
        c.query_row(&sql, params![email], lead_from_row).unwrap()
    }

    fn outcome(c: &Connection, email: &str, outcome: Outcome) {
        let fence = outbox::acquire_lease(c, "hubspot", "test", 0).unwrap();
        outbox::claim_due(c, &fence, 10, 0).unwrap();
        let r = RecordResult {
            email: Email::parse(email).unwrap(),
            version: 1,
            outcome,
        };
        outbox::record(c, &fence, &[r], 0).unwrap();
    }

    #[test]
    fn a_lead_is_known_to_the_crm_once_an_update_of_it_was_queued_whatever_became_of_it() {
        let c = db();
        assert!(!write(&c, "a@orbit-analytics.io", None).crm_known);
        let queued = update("a@orbit-analytics.io", "lead", 1);
        assert!(write(&c, "a@orbit-analytics.io", Some(queued)).crm_known);
        let delivered = Outcome::Delivered {
            stage_rank: Some(1),
            crm_ref: None,
        };
        outcome(&c, "a@orbit-analytics.io", delivered);
        assert!(write(&c, "a@orbit-analytics.io", None).crm_known);

        assert!(!write(&c, "b@orbit-analytics.io", None).crm_known);
        write(
            &c,
            "b@orbit-analytics.io",
            Some(update("b@orbit-analytics.io", "lead", 1)),
        );
        let dead = Outcome::Dead {
            crm: "hubspot".into(),
            error: "refused".into(),
        };
        outcome(&c, "b@orbit-analytics.io", dead);
        assert!(write(&c, "b@orbit-analytics.io", None).crm_known);
    }
}
