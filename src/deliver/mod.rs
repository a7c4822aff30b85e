//! Delivery: the worker that takes pending CRM updates from the outbox and sends them through the
//! configured connector, under one rate limiter per CRM account.
//!
//! Only the replica holding the account's delivery lease ([`lease`]) delivers; the others stand
//! by. One [`Worker::step`] claims up to a batch of due updates under the lease's fence, withholds
//! any stage that would lower the one the CRM already has, sends, and records each record's
//! outcome (delivered, retry later, dead letter). Tests drive `step` directly; [`Worker::run`]
//! loops it until cancelled, finishing the current batch first. A new lease term (a restart, or
//! another replica taking over) claims again whatever the previous term left in flight, and since
//! every send is an upsert of the lead's newest state, sending it again cannot create a duplicate.

pub mod crm;
mod halt;
pub mod lease;
pub mod limiter;
pub mod retry;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use self::crm::{BuildError, Connector, Item};
use self::halt::Halt;
use self::lease::Leadership;
use self::limiter::{Limiter, Pause, PauseReason, SharedQuota};
use self::retry::{Failure, RetryPolicy};
use crate::config::CrmConfig;
use crate::store::outbox::now_ms;
use crate::store::{Outcome, RecordResult, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// Nothing due; `next_due_in` is when the earliest pending update becomes due, if any.
    Idle { next_due_in: Option<Duration> },
    /// Delivery is paused (rate limit, daily allowance, credentials); nothing was claimed.
    Paused(Pause),
    /// Another replica holds the delivery lease; this one only stands by.
    Standby,
    /// A batch was sent.
    Sent(StepReport),
}

/// Counts for one sent batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepReport {
    pub records: usize,
    pub delivered: u64,
    pub retried: u64,
    pub dead: u64,
    pub superseded: u64,
    /// Records sent without their stage because it would have lowered the CRM's.
    pub stages_withheld: usize,
}

/// The delivery worker.
pub struct Worker {
    store: Arc<dyn Store>,
    connector: Arc<dyn Connector>,
    limiter: Arc<Limiter>,
    policy: RetryPolicy,
    batch_size: usize,
    poll_interval: Duration,
    wake: Arc<Notify>,
    leadership: Arc<Leadership>,
    /// Delivery stopped by a 410 Gone until an operator replays dead letters.
    halt: Halt,
}

impl Worker {
    /// Builds the configured connector with a fresh limiter. `data_dir` is where `dry-run`
    /// records its requests.
    pub fn new(
        config: &CrmConfig,
        store: Arc<dyn Store>,
        data_dir: &Path,
    ) -> Result<Worker, DeliverError> {
        let limiter = Arc::new(Limiter::new(&config.rate_limit));
        let connector = crm::build(config, Arc::clone(&limiter), data_dir)?;
        Ok(Self::with_connector(config, store, connector, limiter))
    }

    /// A worker around a given connector and its limiter (tests, benchmarks).
    pub fn with_connector(
        config: &CrmConfig,
        store: Arc<dyn Store>,
        connector: Arc<dyn Connector>,
        limiter: Arc<Limiter>,
    ) -> Worker {
        // One CRM per deployment, so the connector's name is the account's key.
        let leadership = Arc::new(Leadership::new(
            Arc::clone(&store),
            connector.name(),
            config.lease_ttl,
        ));
        limiter.share(SharedQuota {
            store: Arc::clone(&store),
            leadership: Arc::clone(&leadership),
            quota: config.rate_limit,
        });
        Worker {
            store,
            batch_size: config.batch_size.min(connector.batch_size()).max(1),
            connector,
            limiter,
            policy: RetryPolicy::new(config.retry),
            poll_interval: config.poll_interval,
            wake: Arc::new(Notify::new()),
            leadership,
            halt: Halt::default(),
        }
    }

    /// This replica's hold on the delivery lease.
    pub fn leadership(&self) -> &Arc<Leadership> {
        &self.leadership
    }

    /// Notify this after enqueueing to have the worker look at once instead of at its next poll.
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    pub fn connector(&self) -> &Arc<dyn Connector> {
        &self.connector
    }

    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }

    /// Claims, sends and records one batch.
    pub async fn step(&self) -> Result<StepOutcome, DeliverError> {
        if let Some(p) = self.limiter.paused() {
            if !self.halt.resumed(&*self.store, &self.limiter).await? {
                return Ok(StepOutcome::Paused(p));
            }
        }
        let Some(fence) = self.leadership.fence().await? else {
            return Ok(StepOutcome::Standby);
        };
        let claimed = match self
            .store
            .claim_due(&fence, self.batch_size, now_ms())
            .await
        {
            Err(StoreError::Fenced(_)) => return Ok(StepOutcome::Standby),
            other => other?,
        };
        if claimed.is_empty() {
            let depth = self.store.outbox_depth().await?;
            let next_due_in = depth
                .next_due_at_ms
                .map(|at| Duration::from_millis((at - now_ms()).max(0) as u64));
            return Ok(StepOutcome::Idle { next_due_in });
        }

        // The outbox keys rows by email, so a claim never holds a lead twice; checked anyway,
        // because HubSpot refuses a batch that names an email twice.
        let mut seen = HashSet::new();
        let mut items = Vec::with_capacity(claimed.len());
        let mut meta = Vec::with_capacity(claimed.len());
        let mut report = StepReport {
            records: claimed.len(),
            ..StepReport::default()
        };
        let mut late: Vec<RecordResult> = Vec::new();
        for c in claimed {
            if !seen.insert(c.update.email.clone()) {
                late.push(RecordResult {
                    email: c.update.email.clone(),
                    version: c.update.version,
                    outcome: Outcome::Retry {
                        at_ms: now_ms(),
                        error: "held back: the same lead was already in this batch".into(),
                        charge: false,
                    },
                });
                continue;
            }
            let send_stage = c.delivered_rank.is_none_or(|r| c.update.stage_rank >= r);
            if !send_stage {
                report.stages_withheld += 1;
            }
            meta.push((c.attempts, c.first_queued_at_ms, send_stage));
            items.push(Item {
                update: c.update,
                send_stage,
                crm_ref: c.crm_ref,
            });
        }

        let started = Instant::now();
        let mut results = self.connector.send(&items).await;
        if results.len() != items.len() {
            tracing::error!(
                crm = self.connector.name(),
                expected = items.len(),
                got = results.len(),
                "connector returned the wrong number of results"
            );
            results.resize_with(items.len(), || {
                Err(Failure::Transient("no result from the connector".into()))
            });
        }
        let now = now_ms();
        // A stop that only an operator lifts has no end to wait for: its records are due again
        // as soon as it is lifted.
        let pause = self
            .limiter
            .paused()
            .filter(|p| p.reason != PauseReason::EndpointGone)
            .map(|p| p.until);
        let crm = self.connector.name();
        let mut records = late;
        for ((item, (attempts, first, send_stage)), result) in items.iter().zip(meta).zip(results) {
            let outcome = match result {
                Ok(d) => Outcome::Delivered {
                    stage_rank: send_stage.then_some(item.update.stage_rank),
                    crm_ref: d.crm_ref,
                },
                Err(f) => self.policy.decide(crm, &f, attempts, first, now, pause),
            };
            let label = match &outcome {
                Outcome::Delivered { .. } => "delivered",
                Outcome::Retry { charge: true, .. } => "retry",
                Outcome::Retry { charge: false, .. } => "paused",
                Outcome::Dead { .. } => "dead_letter",
            };
            metrics::counter!("leadgate_crm_records_total", "crm" => crm, "outcome" => label)
                .increment(1);
            if let Outcome::Delivered { .. } = &outcome {
                // From the first time this lead's pending state was queued to the CRM's answer.
                let queued_for = (now - first).max(0) as f64 / 1000.0;
                metrics::histogram!("leadgate_delivery_latency_seconds", "crm" => crm)
                    .record(queued_for);
            }
            records.push(RecordResult {
                email: item.update.email.clone(),
                version: item.update.version,
                outcome,
            });
        }
        let recorded = match self.store.record_results(&fence, records, now).await {
            Err(StoreError::Fenced(account)) => {
                // Another replica took over while this batch was out: what the CRM accepted is
                // sent again by the new term (an upsert, so no duplicate); nothing is recorded.
                tracing::warn!(crm = %account, term = fence.term, "lost the delivery lease during a batch; its results were not recorded");
                return Ok(StepOutcome::Standby);
            }
            other => other?,
        };
        self.halt.note(&*self.store, &self.limiter).await?;
        report.delivered = recorded.delivered;
        report.retried = recorded.retried;
        report.dead = recorded.dead;
        report.superseded = recorded.superseded;
        if report.delivered > 0 {
            // Records went through, so the credentials work (again).
            self.limiter.credentials_accepted(crm);
        }
        metrics::histogram!("leadgate_crm_batch_seconds", "crm" => crm)
            .record(started.elapsed().as_secs_f64());
        if report.dead > 0 {
            tracing::warn!(
                crm,
                dead = report.dead,
                "updates moved to dead letters; see `leadgate replay --dead-letters`"
            );
        }
        tracing::info!(
            crm,
            records = report.records,
            delivered = report.delivered,
            retried = report.retried,
            dead = report.dead,
            stages_withheld = report.stages_withheld,
            duration_ms = started.elapsed().as_millis() as u64,
            "delivery batch done"
        );
        Ok(StepOutcome::Sent(report))
    }

    /// Steps until `cancel` fires; a batch in progress is finished and recorded first.
    pub async fn run(self, cancel: CancellationToken) {
        let elector = tokio::spawn(Arc::clone(&self.leadership).run(cancel.clone()));
        tracing::info!(
            crm = self.connector.name(),
            batch_size = self.batch_size,
            "delivery worker started"
        );
        loop {
            if cancel.is_cancelled() {
                break;
            }
            let wait = match self.step().await {
                Ok(StepOutcome::Sent(_)) => continue,
                Ok(StepOutcome::Idle { next_due_in }) => {
                    next_due_in.map_or(self.poll_interval, |d| d.min(self.poll_interval))
                }
                // Capped: a stop that only an operator lifts is looked at every poll.
                Ok(StepOutcome::Paused(p)) => p
                    .until
                    .saturating_duration_since(Instant::now())
                    .min(self.poll_interval),
                Ok(StepOutcome::Standby) => {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = self.leadership.gained(self.poll_interval.max(Duration::from_secs(1))) => {}
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "delivery step failed; retrying after the poll interval");
                    self.poll_interval
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
            }
        }
        // The elector gives the lease up once cancelled, so another replica takes over at once.
        let _ = elector.await;
        tracing::info!(crm = self.connector.name(), "delivery worker stopped");
    }
}
