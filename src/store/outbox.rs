//! What the delivery worker reads from and writes to the store: claimed outbox rows, per-record
//! outcomes, dead letters. The SQL lives with each store (`sqlite/outbox.rs`).

use serde_json::Value;

use crate::lead::Email;
use crate::outbox::CrmUpdate;

/// An outbox row a worker is now sending (marked in flight until its outcome is recorded).
#[derive(Debug, Clone)]
pub struct Claimed {
    pub update: CrmUpdate,
    /// Attempts already charged to this lead's pending state.
    pub attempts: u32,
    /// When the oldest undelivered state of this lead was queued (Unix ms).
    pub first_queued_at_ms: i64,
    /// The stage rank the CRM last received for this lead, if any.
    pub delivered_rank: Option<u32>,
    /// The CRM's ids for this lead's records (e.g. Pipedrive person and lead ids).
    pub crm_ref: Option<Value>,
}

/// What happened to one claimed update.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The CRM has it. `stage_rank` is the rank sent (None when the stage was withheld because it
    /// would have lowered the CRM's); `crm_ref` replaces the stored ids when given.
    Delivered {
        stage_rank: Option<u32>,
        crm_ref: Option<Value>,
    },
    /// Try again at `at_ms`. `charge`: whether this counts as a failed attempt (a pause for the
    /// CRM's rate limit or a stop before sending does not).
    Retry {
        at_ms: i64,
        error: String,
        charge: bool,
    },
    /// Give up: the CRM refused it in a way retrying cannot fix, or it ran out of attempts/age.
    Dead { crm: String, error: String },
}

/// The outcome for the version that was claimed.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordResult {
    pub email: Email,
    pub version: i64,
    pub outcome: Outcome,
}

/// Counts from recording one batch's outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    pub delivered: u64,
    pub retried: u64,
    pub dead: u64,
    /// Outcomes for a version that a newer one replaced while in flight; the newer one is sent next.
    pub superseded: u64,
}

/// An update that gave up, with the CRM's message.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub id: i64,
    pub email: Email,
    pub version: i64,
    pub crm: String,
    pub message: String,
    pub attempts: u32,
    pub first_queued_at_ms: i64,
    pub dead_at_ms: i64,
    pub update: CrmUpdate,
}

/// What `requeue_dead_letters` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requeued {
    /// Back in the outbox.
    pub requeued: u64,
    /// Dropped from dead letters because the CRM already has, or the outbox already holds, a
    /// newer state of the same lead.
    pub superseded: u64,
    /// Ids asked for that are not dead letters.
    pub not_found: Vec<i64>,
}

/// How much delivery work is waiting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxDepth {
    pub pending: u64,
    pub in_flight: u64,
    pub dead_letters: u64,
    /// The earliest `next_attempt_at` of a pending row (Unix ms).
    pub next_due_at_ms: Option<i64>,
}

/// One lead's delivery state: what the CRM has, what is still to go, and what gave up (admin API).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeadDelivery {
    /// The version the CRM last accepted, and when (Unix ms).
    pub delivered: Option<(i64, i64)>,
    /// The update waiting in the outbox, if any.
    pub pending: Option<PendingUpdate>,
    /// Ids of this lead's dead letters, oldest first.
    pub dead_letters: Vec<i64>,
}

/// An outbox row as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpdate {
    pub version: i64,
    pub attempts: u32,
    pub next_attempt_at_ms: i64,
    /// A worker is sending it right now.
    pub in_flight: bool,
    /// The last failure's message (the CRM's, or a transport error).
    pub last_error: Option<String>,
}

/// An outbox payload as both stores keep it (JSON text).
pub(crate) fn encode_update(update: &CrmUpdate) -> Result<String, super::StoreError> {
    serde_json::to_string(update)
        .map_err(|e| super::StoreError::Corrupt(format!("cannot encode an outbox update: {e}")))
}

pub(crate) fn decode_update(text: &str) -> Result<CrmUpdate, super::StoreError> {
    serde_json::from_str(text)
        .map_err(|e| super::StoreError::Corrupt(format!("unreadable outbox payload: {e}")))
}

/// The ids asked for (if any were) that are not among the dead letters found.
pub(crate) fn not_found(ids: Option<&[i64]>, found: &[DeadLetter]) -> Vec<i64> {
    ids.unwrap_or_default()
        .iter()
        .copied()
        .filter(|id| !found.iter().any(|l| l.id == *id))
        .collect()
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
