//! The background half of the data flow: stored event -> map -> qualify -> outbox.
//!
//! The pipeline takes events the inbox holds in `received` state, maps each with its source's
//! mapping and qualifies every lead it touches against the rules. One event's outcome — the new
//! lead states, their CRM snapshots and the event's status — is written in one transaction, and
//! the qualification runs inside it, so updates to one lead are serialised while the mapping of
//! different events runs ahead. An event that cannot be mapped is kept as `unmappable` with the
//! reason; `leadgate replay` puts it back after the mapping is fixed.

mod engine;
pub mod fold;

use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use self::engine::{reload, report_versions, watch, Engine, EngineError, SharedEngine};
use crate::config::{CrmConfig, PipelineSettings};
use crate::lead::{Email, Engagement, LeadPatch, Mapped};
use crate::outbox::CrmUpdate;
use crate::qualify::{qualify, Decision, LeadState, Rules};
use crate::store::{
    LeadChange, LeadFn, LeadInput, LeadRecord, LeadStep, Processed, Store, StoreError, StoredEvent,
};

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Step {
    pub processed: usize,
    pub unmappable: usize,
    pub failed: usize,
    /// Taken by another worker (another replica) first; nothing written here.
    pub skipped: usize,
}

impl Step {
    pub fn is_idle(&self) -> bool {
        self.processed + self.unmappable + self.failed + self.skipped == 0
    }
}

/// A stage transition, reported after its transaction committed (metrics).
#[derive(Debug, Clone)]
struct Transition {
    source: String,
    from: Option<String>,
    to: String,
}

pub struct Pipeline {
    store: Arc<dyn Store>,
    engine: SharedEngine,
    crm: Arc<CrmConfig>,
    settings: PipelineSettings,
    wake: Arc<Notify>,
    /// Woken after a step queued CRM updates, so delivery starts without waiting for its poll.
    delivery_wake: Arc<Notify>,
}

impl Pipeline {
    pub fn new(
        store: Arc<dyn Store>,
        engine: SharedEngine,
        crm: Arc<CrmConfig>,
        settings: PipelineSettings,
        wake: Arc<Notify>,
        delivery_wake: Arc<Notify>,
    ) -> Self {
        Pipeline {
            store,
            engine,
            crm,
            settings,
            wake,
            delivery_wake,
        }
    }

    /// Processes one batch of waiting events; `Step::is_idle` when there were none.
    pub async fn step(&self) -> Result<Step, StoreError> {
        self.step_at(Utc::now()).await
    }

    /// [`step`](Self::step) with an explicit clock (tests).
    pub async fn step_at(&self, now: DateTime<Utc>) -> Result<Step, StoreError> {
        let events = self
            .store
            .pending_events(None, self.settings.batch_size)
            .await?;
        if events.is_empty() {
            return Ok(Step::default());
        }
        // One engine for the whole batch: a reload never mixes mappings or rules within an event.
        let engine = self.engine.load_full();
        let planned: Vec<Planned> = events
            .into_iter()
            .map(|ev| {
                // Per event, so only transitions whose transaction committed are counted.
                let transitions = Arc::new(Mutex::new(Vec::new()));
                let (outcome, kind, at) = self.plan(&engine, &ev, now, &transitions);
                Planned {
                    ev,
                    outcome,
                    kind,
                    at,
                    transitions,
                }
            })
            .collect();
        // Events that share a lead run one after another in provider-time order; the others run
        // side by side and, submitted together, share commits.
        let work = in_lead_order(planned).into_iter().map(|chain| {
            let store = Arc::clone(&self.store);
            async move {
                let mut done = Vec::with_capacity(chain.len());
                for p in chain {
                    let r = store.process_event(p.ev.id, p.outcome).await;
                    done.push((p.ev, p.kind, p.transitions, r));
                }
                done
            }
        });
        let results = futures_util::future::join_all(work)
            .await
            .into_iter()
            .flatten();
        let mut step = Step::default();
        for (ev, kind, transitions, r) in results {
            match r {
                Ok(false) => step.skipped += 1,
                Ok(true) => {
                    report(&transitions);
                    match kind {
                        Outcome::Mapped => step.processed += 1,
                        Outcome::Unmappable => step.unmappable += 1,
                    }
                    metrics::counter!("leadgate_events_processed_total", "source" => ev.source.clone(), "outcome" => kind.as_str())
                        .increment(1);
                }
                Err(StoreError::Rejected(reason)) => {
                    // The rules refused the input (a bug, never data): keep it visible, not looping.
                    tracing::warn!(event_id = %ev.id, reason = %reason, "qualification refused the event");
                    self.store
                        .process_event(
                            ev.id,
                            Processed::Unmappable(format!("qualification: {reason}")),
                        )
                        .await?;
                    step.unmappable += 1;
                }
                Err(e) => {
                    tracing::error!(event_id = %ev.id, error = %e, "processing failed; will retry");
                    step.failed += 1;
                }
            }
        }
        if step.processed > 0 {
            self.delivery_wake.notify_one();
        }
        Ok(step)
    }

    /// Re-checks every lead at a stage some recycle rule moves leads out of ("no activity for
    /// 120 days" becomes true without a new event); returns how many moved.
    pub async fn sweep_at(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let engine = self.engine.load_full();
        let stages = engine.rules.recycle_sources();
        let mut moved = 0;
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .leads_at(stages.clone(), after.clone(), SWEEP_PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.email.clone());
            let work = page.into_iter().filter_map(|rec| {
                // Stored emails were parsed before they were stored.
                let email = Email::parse(&rec.email).ok()?;
                let transitions = Arc::new(Mutex::new(Vec::new()));
                let work = LeadWork {
                    engine: Arc::clone(&engine),
                    crm: Arc::clone(&self.crm),
                    source: rec.source.clone().unwrap_or_default(),
                    patches: Vec::new(),
                    engagements: Vec::new(),
                    now,
                    transitions: Arc::clone(&transitions),
                    sweep: true,
                    input: None,
                };
                let update = self.store.update_lead(email, work.into_fn());
                Some(async move { (update.await, transitions) })
            });
            let mut failed = None;
            for (r, transitions) in futures_util::future::join_all(work).await {
                match r {
                    Ok(_) => {
                        moved += transitions.lock().map(|t| t.len()).unwrap_or(0);
                        report(&transitions);
                    }
                    Err(e) => failed = Some(e),
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
        if moved > 0 {
            tracing::info!(moved, "recycle rules moved leads");
            self.delivery_wake.notify_one();
        }
        Ok(moved)
    }

    /// Maps one event and prepares its lead updates (run later inside the store's transaction);
    /// also returns the provider's time for the event (its earliest output's, else receipt).
    fn plan(
        &self,
        engine: &Arc<Engine>,
        ev: &StoredEvent,
        now: DateTime<Utc>,
        transitions: &Arc<Mutex<Vec<Transition>>>,
    ) -> (Processed, Outcome, DateTime<Utc>) {
        let received = crate::mapping::event_received_at(ev);
        let mapped = match engine.mappings.map_event(ev) {
            Ok(m) => m,
            Err(u) => {
                tracing::info!(event_id = %ev.id, reason = %u, "event is unmappable");
                return (
                    Processed::Unmappable(u.to_string()),
                    Outcome::Unmappable,
                    received,
                );
            }
        };
        let at = fold::occurred_at(&mapped.leads, &mapped.engagements, received);
        let leads = by_lead(mapped)
            .into_iter()
            .map(|(email, (patches, engagements))| {
                let input = LeadInput {
                    event: ev.id,
                    occurred_at_ms: fold::occurred_at(&patches, &engagements, received)
                        .timestamp_millis(),
                    folded_at_ms: now.timestamp_millis(),
                    // Unencodable inputs (never seen) are logged without items: not rebuildable.
                    items: fold::Items::encode(&patches, &engagements).ok(),
                };
                let work = LeadWork {
                    engine: Arc::clone(engine),
                    crm: Arc::clone(&self.crm),
                    source: ev.source.clone(),
                    patches,
                    engagements,
                    now,
                    transitions: Arc::clone(transitions),
                    sweep: false,
                    input: Some(input.clone()),
                };
                LeadStep {
                    email,
                    input,
                    apply: work.into_fn(),
                }
            })
            .collect();
        (Processed::Leads(leads), Outcome::Mapped, at)
    }

    /// Runs until cancelled: a step whenever an event arrives, or every poll interval.
    pub async fn run(self, cancel: CancellationToken) {
        let mut next_sweep = self
            .settings
            .sweep_interval
            .map(|every| tokio::time::Instant::now() + every);
        loop {
            if let (Some(at), Some(every)) = (next_sweep, self.settings.sweep_interval) {
                if tokio::time::Instant::now() >= at {
                    if let Err(e) = self.sweep_at(Utc::now()).await {
                        tracing::error!(error = %e, "recycle sweep failed");
                    }
                    next_sweep = Some(tokio::time::Instant::now() + every);
                }
            }
            let idle = match self.step().await {
                Ok(step) => step.is_idle() || step.failed > 0,
                Err(e) => {
                    tracing::error!(error = %e, "pipeline step failed");
                    true
                }
            };
            if cancel.is_cancelled() {
                break;
            }
            if idle {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(self.settings.poll_interval) => {}
                }
            }
        }
    }
}

/// One event of a batch, mapped and ready for the store.
struct Planned {
    ev: StoredEvent,
    outcome: Processed,
    kind: Outcome,
    /// The provider's time for the event.
    at: DateTime<Utc>,
    transitions: Arc<Mutex<Vec<Transition>>>,
}

/// Splits a batch into chains: events that touch a common lead (directly or through other
/// events) form one chain, ordered by provider time then id, so one lead's events are applied in
/// the order they happened even when they were stored in another order (a slow replica's commit,
/// a provider's late retry within the batch). Chains are independent of each other.
fn in_lead_order(mut batch: Vec<Planned>) -> Vec<Vec<Planned>> {
    batch.sort_by_key(|p| (p.at, p.ev.id));
    // Union-find over batch positions, joined through shared leads.
    let mut parent: Vec<usize> = (0..batch.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut first_with: std::collections::HashMap<Email, usize> = Default::default();
    for (i, p) in batch.iter().enumerate() {
        if let Processed::Leads(leads) = &p.outcome {
            for LeadStep { email, .. } in leads {
                match first_with.get(email) {
                    Some(&j) => {
                        let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                        parent[a.max(b)] = a.min(b);
                    }
                    None => {
                        first_with.insert(email.clone(), i);
                    }
                }
            }
        }
    }
    let mut chains: BTreeMap<usize, Vec<Planned>> = BTreeMap::new();
    for (i, p) in batch.into_iter().enumerate() {
        let r = root(&mut parent, i);
        chains.entry(r).or_default().push(p);
    }
    chains.into_values().collect()
}

/// Leads re-checked per read during a sweep.
const SWEEP_PAGE: usize = 200;

/// Counts committed stage transitions by source and the stage entered (`from`: the stage left,
/// `new` for a new lead).
fn report(transitions: &Mutex<Vec<Transition>>) {
    if let Ok(list) = transitions.lock() {
        for t in list.iter() {
            metrics::counter!(
                "leadgate_stage_transitions_total",
                "source" => t.source.clone(),
                "stage" => t.to.clone(),
                "from" => t.from.clone().unwrap_or_else(|| "new".into())
            )
            .increment(1);
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Mapped,
    Unmappable,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Mapped => "processed",
            Outcome::Unmappable => "unmappable",
        }
    }
}

/// One event's outputs, per lead.
pub type PerLead = BTreeMap<Email, (Vec<LeadPatch>, Vec<Engagement>)>;

/// Splits one event's outputs by lead (SendGrid and Mandrill batches touch many).
pub fn by_lead(m: Mapped) -> PerLead {
    let mut out: PerLead = BTreeMap::new();
    for p in m.leads {
        out.entry(p.email.clone()).or_default().0.push(p);
    }
    for e in m.engagements {
        out.entry(e.email.clone()).or_default().1.push(e);
    }
    out
}

/// First-touch campaign: the mapped `campaign`, else `utm_campaign`.
fn campaign_of(patches: &[LeadPatch]) -> Option<String> {
    ["campaign", "utm_campaign"].iter().find_map(|f| {
        patches.iter().find_map(|p| {
            p.fields
                .iter()
                .find(|(k, _)| k.as_str() == *f)
                .and_then(|(_, v)| v.as_str().map(str::to_string))
        })
    })
}

/// Why a decision sends nothing to the CRM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Withheld {
    /// Disqualified before the CRM heard of the lead (the reason follows): spam, competitors,
    /// students and bounced addresses stay out of sales' CRM on this and every later event.
    Disqualified(String),
    /// None of the lead's changes is one the settings queue (`[crm] queue_on`).
    NotQueued,
}

impl std::fmt::Display for Withheld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Withheld::Disqualified(why) => write!(
                f,
                "disqualified ({why}) before the CRM heard of the lead, so it stays out of the CRM"
            ),
            Withheld::NotQueued => f.write_str("no change that [crm] queue_on sends"),
        }
    }
}

/// The CRM snapshot a decision queues, or why there is none: only for the changes the settings
/// name, and never for a disqualified lead the CRM does not know (`crm_known`: an update of it
/// was queued before, see [`LeadRecord::crm_known`]). A lead the CRM knows hears that it was
/// disqualified, so sales stops working it.
pub fn crm_update_for(
    d: &Decision,
    rules: &Rules,
    crm: &CrmConfig,
    version: i64,
    crm_known: bool,
) -> Result<CrmUpdate, Withheld> {
    let update = d.crm_update(rules, crm.target, version);
    if d.stage_rank == rules.disqualified_rank() && !crm_known {
        return Err(Withheld::Disqualified(
            update.disqualified.clone().unwrap_or_default(),
        ));
    }
    if !crm.queues(&update.changes) {
        return Err(Withheld::NotQueued);
    }
    Ok(update)
}

/// Everything one lead's update needs, moved into the store's transaction.
struct LeadWork {
    engine: Arc<Engine>,
    crm: Arc<CrmConfig>,
    /// The event's source (first-touch attribution for a new lead, metric label).
    source: String,
    patches: Vec<LeadPatch>,
    engagements: Vec<Engagement>,
    now: DateTime<Utc>,
    transitions: Arc<Mutex<Vec<Transition>>>,
    /// A periodic re-check with no new event: write only if the stage moved.
    sweep: bool,
    /// This event's input to the lead (None for a sweep).
    input: Option<LeadInput>,
}

impl LeadWork {
    fn into_fn(self) -> LeadFn {
        Box::new(
            move |prev: Option<&LeadRecord>, version: i64, log: Option<Vec<LeadInput>>| {
                self.apply(prev, version, log)
            },
        )
    }

    fn apply(
        self,
        prev: Option<&LeadRecord>,
        version: i64,
        log: Option<Vec<LeadInput>>,
    ) -> Result<Option<LeadChange>, String> {
        let prev_state: Option<LeadState> = match prev {
            Some(r) => Some(
                serde_json::from_str(&r.state)
                    .map_err(|e| format!("stored lead state does not parse: {e}"))?,
            ),
            None if self.sweep => return Ok(None),
            None => None,
        };
        let rules = &self.engine.rules;
        // A late input: rebuild the lead in provider-time order (see `fold`).
        let rebuilt = match (&log, &self.input) {
            (Some(_), Some(input)) => {
                let log = log.unwrap_or_default();
                let r = fold::rebuild(rules, prev_state.as_ref(), log, input, self.now)?;
                let outcome = if r.is_some() { "rebuilt" } else { "merged" };
                metrics::counter!("leadgate_leads_rebuilt_total", "outcome" => outcome)
                    .increment(1);
                r
            }
            _ => None,
        };
        let (d, input_clock_ms) = match rebuilt {
            Some(r) => (r.decision, Some(r.input_clock_ms)),
            None => (
                qualify(
                    rules,
                    prev_state.as_ref(),
                    &self.patches,
                    &self.engagements,
                    self.now,
                )
                .map_err(|e| e.to_string())?,
                None,
            ),
        };
        if self.sweep && !d.stage_changed {
            return Ok(None);
        }
        let disqualified = d.stage_rank == rules.disqualified_rank();
        let crm_known = prev.is_some_and(|r| r.crm_known);
        let update = crm_update_for(&d, rules, &self.crm, version, crm_known).ok();
        let prev_reached = prev.map(|r| r.max_rank).unwrap_or(0);
        let reached_rank = if disqualified {
            prev_reached
        } else {
            d.stage_rank.max(prev_reached)
        };
        if d.stage_changed {
            if let Ok(mut t) = self.transitions.lock() {
                t.push(Transition {
                    source: self.source.clone(),
                    from: d.previous_stage.clone(),
                    to: d.stage.clone(),
                });
            }
        }
        let state = serde_json::to_string(&d.state)
            .map_err(|e| format!("lead state does not serialise: {e}"))?;
        Ok(Some(LeadChange {
            state,
            stage: d.stage.clone(),
            stage_rank: d.stage_rank,
            reached_rank,
            score: d.score,
            campaign: campaign_of(&self.patches),
            source: Some(self.source),
            update,
            input_clock_ms,
        }))
    }
}

/// Runs steps until nothing is waiting (tests, `replay`); stops early if a step fails.
pub async fn drain(p: &Pipeline) -> Result<Step, StoreError> {
    let mut total = Step::default();
    loop {
        let s = p.step().await?;
        total.processed += s.processed;
        total.unmappable += s.unmappable;
        total.failed += s.failed;
        total.skipped += s.skipped;
        if s.is_idle() || s.failed > 0 {
            return Ok(total);
        }
    }
}
