//! Durable state behind one trait: the raw inbox (events), lead state, the outbox and dead
//! letters, and the delivery lease with its shared quota. SQLite is the embedded default
//! ([`sqlite::SqliteStore`], one process); PostgreSQL ([`postgres::PgStore`]) lets several
//! replicas share one database.

#[cfg(test)]
mod contract;
pub mod lease;
pub mod outbox;
pub mod postgres;
pub mod sqlite;

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use bytes::Bytes;

pub use self::lease::{Fence, Token};
pub use self::outbox::{
    Claimed, DeadLetter, LeadDelivery, OutboxDepth, Outcome, PendingUpdate, RecordResult, Recorded,
    Requeued,
};
use crate::outbox::CrmUpdate;

/// An inbox row's id, shown to providers and admins as `evt_<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub i64);

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "evt_{}", self.0)
    }
}

impl FromStr for EventId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix("evt_")
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|n| *n > 0)
            .map(EventId)
            .ok_or_else(|| format!("{s:?} is not an event id like evt_42"))
    }
}

/// A verified, decoded delivery about to be stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub source: String,
    /// The provider's event id, or a hash of the body when the provider sends none.
    pub dedupe_key: String,
    pub received_at_ms: i64,
    pub content_type: String,
    pub body: Bytes,
    /// The decoded JSON text when the body itself is not JSON (forms, multipart).
    pub payload: Option<String>,
}

/// Whether the delivery was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    New(EventId),
    /// Seen before under the same dedupe key: nothing new was stored.
    Duplicate(EventId),
}

impl Inserted {
    pub fn id(&self) -> EventId {
        match self {
            Inserted::New(id) | Inserted::Duplicate(id) => *id,
        }
    }
}

/// Processing state of an inbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// Stored, not yet mapped.
    Received,
    /// Mapped and qualified.
    Processed,
    /// Kept with the reason it could not be mapped; `replay` retries it.
    Unmappable,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Received => "received",
            EventStatus::Processed => "processed",
            EventStatus::Unmappable => "unmappable",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "received" => Some(EventStatus::Received),
            "processed" => Some(EventStatus::Processed),
            "unmappable" => Some(EventStatus::Unmappable),
            _ => None,
        }
    }
}

/// An inbox row as stored.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: EventId,
    pub source: String,
    pub dedupe_key: String,
    pub received_at_ms: i64,
    pub content_type: String,
    pub body: Bytes,
    pub payload: Option<String>,
    pub status: EventStatus,
    pub status_reason: Option<String>,
}

/// A lead as stored: the engine's JSON state plus the columns queries use.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadRecord {
    pub email: String,
    /// The qualification engine's state, as JSON text.
    pub state: String,
    pub version: i64,
    pub stage: String,
    pub stage_rank: u32,
    pub max_rank: u32,
    pub score: i64,
    pub source: Option<String>,
    pub campaign: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// The CRM may know this lead: an update of it was queued at some time (it is pending, was
    /// delivered, or is a dead letter). A disqualified lead the CRM does not know stays out of it.
    pub crm_known: bool,
}

/// The new state of one lead, computed from its previous record inside the store's transaction.
#[derive(Debug, Clone)]
pub struct LeadChange {
    pub state: String,
    pub stage: String,
    pub stage_rank: u32,
    /// The furthest funnel stage reached (disqualification does not count as progress).
    pub reached_rank: u32,
    pub score: i64,
    /// First-touch attribution, kept only when the lead is created.
    pub source: Option<String>,
    pub campaign: Option<String>,
    /// The CRM snapshot to queue, if this change is one the CRM should hear about.
    pub update: Option<crate::outbox::CrmUpdate>,
    /// The clock the input being applied was qualified at, when it is not the step's own: a late
    /// input takes the clock of the input it precedes (see `pipeline::fold`).
    pub input_clock_ms: Option<i64>,
}

/// One event's contribution to one lead, as the lead's input log keeps it. The log lets a late
/// event (one that happened before inputs already applied) rebuild the lead in provider-time
/// order.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadInput {
    pub event: EventId,
    /// The provider's time of the input (Unix ms).
    pub occurred_at_ms: i64,
    /// The clock it was qualified at (Unix ms).
    pub folded_at_ms: i64,
    /// What the mapping produced for this lead (patches and engagements) as JSON; None for
    /// inputs logged before the log kept them (those cannot be replayed).
    pub items: Option<String>,
}

/// Computes a lead's change from its stored record (None: a new lead). It runs inside the write
/// transaction, so updates to one lead are serialised. The `i64` is the version the new state
/// gets, for the CRM snapshot. The log is given only when the input being applied is late (an
/// input of this lead that happened after it, or the same event, is already applied): then it
/// holds every logged input of the lead, to rebuild from. `Ok(None)`: nothing to write.
pub type LeadFn = Box<
    dyn FnOnce(
            Option<&LeadRecord>,
            i64,
            Option<Vec<LeadInput>>,
        ) -> Result<Option<LeadChange>, String>
        + Send,
>;

/// One lead touched by a stored event.
pub struct LeadStep {
    pub email: crate::lead::Email,
    /// This event's input for the lead (its `event` is the event being processed).
    pub input: LeadInput,
    pub apply: LeadFn,
}

/// What processing one stored event produced.
pub enum Processed {
    /// Kept with the reason; `replay` retries it after the mapping is fixed.
    Unmappable(String),
    /// Zero or more leads to update (zero: the event carried nothing to act on).
    Leads(Vec<LeadStep>),
}

/// Which stored events `replay` puts back in the queue.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    pub source: Option<String>,
    pub since_ms: Option<i64>,
    /// Also re-process events that were processed before (not only unmappable ones).
    pub include_processed: bool,
}

/// How many leads of one first-touch source and campaign sit at one stage, by the furthest stage
/// they ever reached (the admin API turns these into funnel counts and conversion rates).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FunnelCount {
    pub source: Option<String>,
    pub campaign: Option<String>,
    pub stage: String,
    pub stage_rank: u32,
    pub max_rank: u32,
    pub leads: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database error: {0}")]
    Postgres(#[from] sqlx::Error),
    /// `path` names the file or the server (host, port, database), never credentials.
    #[error("cannot open the store at {path}: {reason}")]
    Open { path: String, reason: String },
    /// The delivery lease named in the call is no longer held (another replica took over):
    /// nothing was claimed, spent or recorded.
    #[error("this replica no longer holds the delivery lease for {0}")]
    Fenced(String),
    #[error("the store is closed")]
    Closed,
    #[error("commit failed: {0}")]
    CommitFailed(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// A lead function refused the change (the event stays queued).
    #[error("{0}")]
    Rejected(String),
}

/// Durable storage. Writes are acknowledged only once committed and synced to disk.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a delivery unless its dedupe key was seen for that source.
    async fn insert_event(&self, event: NewEvent) -> Result<Inserted, StoreError>;
    /// One inbox row.
    async fn event(&self, id: EventId) -> Result<Option<StoredEvent>, StoreError>;
    /// Number of inbox rows per status.
    async fn count_events(&self, status: EventStatus) -> Result<u64, StoreError>;
    /// Proves a write reaches the disk (readiness).
    async fn check_writable(&self) -> Result<(), StoreError>;
    /// Finishes pending writes and closes; later calls fail with [`StoreError::Closed`].
    async fn close(&self) -> Result<(), StoreError>;

    // ---- pipeline: inbox -> leads

    /// The oldest events still waiting to be processed, after `after` (exclusive).
    async fn pending_events(
        &self,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// Records the outcome of one event atomically: lead states (and their CRM snapshots) and the
    /// event's status. An error from one lead's function fails the whole event (nothing written).
    /// `Ok(false)`: the event was no longer waiting (another worker or replica processed it, or is
    /// processing it right now); nothing was written.
    async fn process_event(&self, id: EventId, outcome: Processed) -> Result<bool, StoreError>;
    /// Puts matching events back to `received`; returns how many.
    async fn replay_events(&self, filter: ReplayFilter) -> Result<u64, StoreError>;
    /// Recent events, newest first, optionally by status.
    async fn recent_events(
        &self,
        status: Option<EventStatus>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// One lead, with the ids of the events that touched it.
    async fn lead(&self, email: &str) -> Result<Option<(LeadRecord, Vec<EventId>)>, StoreError>;
    /// Re-evaluates one lead without a new event (periodic recycle checks).
    async fn update_lead(&self, email: crate::lead::Email, apply: LeadFn)
        -> Result<(), StoreError>;
    /// Leads at any of `stages`, by email after `after`, at most `limit`.
    async fn leads_at(
        &self,
        stages: Vec<String>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<LeadRecord>, StoreError>;
    /// Lead counts per first-touch source, campaign, current and furthest stage.
    async fn funnel(&self) -> Result<Vec<FunnelCount>, StoreError>;

    // ---- the delivery lease and the shared quota (one deliverer per CRM account)

    /// Elects `holder` as the deliverer for `account`, or renews its lease, for `ttl`. Returns
    /// the fence to act under, or None while another holder's lease runs. A takeover starts a
    /// new, higher term; a renewal keeps the term. (SQLite serves one process: it always elects.)
    async fn acquire_lease(
        &self,
        account: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<Fence>, StoreError>;
    /// Gives the lease up (graceful shutdown) so another replica takes over at once.
    async fn release_lease(&self, fence: &Fence) -> Result<(), StoreError>;
    /// Takes one request's worth of `quota` from the account's shared bucket, only while `fence`
    /// still holds the lease ([`StoreError::Fenced`] otherwise). SQLite grants at once: its one
    /// process paces with its local limiter.
    async fn take_token(
        &self,
        fence: &Fence,
        quota: &crate::config::RateLimit,
    ) -> Result<Token, StoreError>;

    // ---- outbox and dead letters
    /// Queues one update on its own (the pipeline queues inside its lead transaction instead);
    /// coalesces like it.
    async fn enqueue_update(&self, update: CrmUpdate) -> Result<(), StoreError>;
    /// Marks up to `limit` due updates in flight under `fence` and returns them. Rows still in
    /// flight from an earlier term, or from an earlier step of this one whose outcome could not
    /// be recorded, are claimed again: only the lease holder claims, one batch at a time.
    async fn claim_due(
        &self,
        fence: &Fence,
        limit: usize,
        now_ms: i64,
    ) -> Result<Vec<Claimed>, StoreError>;
    /// Records the outcome of updates claimed under `fence` (delivered, retry later, dead
    /// letter); refused with [`StoreError::Fenced`] once the lease is lost.
    async fn record_results(
        &self,
        fence: &Fence,
        results: Vec<RecordResult>,
        now_ms: i64,
    ) -> Result<Recorded, StoreError>;
    /// Dead letters, oldest first (all, or those in `ids`).
    async fn dead_letters(&self, ids: Option<Vec<i64>>) -> Result<Vec<DeadLetter>, StoreError>;
    /// Puts dead letters back in the outbox with fresh attempts.
    async fn requeue_dead_letters(&self, ids: Option<Vec<i64>>) -> Result<Requeued, StoreError>;
    /// Pending, in-flight and dead counts.
    async fn outbox_depth(&self) -> Result<OutboxDepth, StoreError>;
    /// One lead's delivery state (delivered version, pending update, dead letters).
    async fn lead_delivery(&self, email: &str) -> Result<LeadDelivery, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip_through_their_display_form() {
        assert_eq!(EventId(42).to_string(), "evt_42");
        assert_eq!("evt_42".parse::<EventId>(), Ok(EventId(42)));
        assert!("42".parse::<EventId>().is_err());
        assert!("evt_0".parse::<EventId>().is_err());
        assert!("evt_x".parse::<EventId>().is_err());
    }
}
