//! Which replica delivers: a lease per CRM account in the store, renewed while this replica
//! delivers, taken over by another replica when it lapses (River's elector, research/postgres.md).
//!
//! Timing, for a lease of `ttl` (default 15 s): the holder renews every `ttl / 3`; a replica
//! without it asks every `ttl / 7` (at least 200 ms), so after a silent death another replica
//! delivers within about `ttl + ttl / 7`. The holder trusts its lease only until
//! `renewal attempt start + ttl - ttl / 15` by its own monotonic clock, so it stops on its own
//! before the store could have given the lease away; the store refuses its claims, quota tokens
//! and results after that anyway (the term is a fencing token).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::{Fence, Store, StoreError};

#[derive(Debug, Clone)]
struct Held {
    fence: Fence,
    /// When the last renewal attempt that succeeded started.
    renewed: Instant,
}

/// This replica's view of the delivery lease for one CRM account.
pub struct Leadership {
    store: Arc<dyn Store>,
    account: String,
    /// Unique per process start: a restarted process is a new holder with a new term.
    holder: String,
    ttl: Duration,
    held: Mutex<Option<Held>>,
    /// Woken when this replica gains the lease.
    gained: Notify,
}

impl Leadership {
    pub fn new(store: Arc<dyn Store>, account: &str, ttl: Duration) -> Self {
        let holder = format!(
            "{}-{}",
            hostname(),
            uuid::Uuid::new_v4()
                .simple()
                .to_string()
                .get(..8)
                .unwrap_or("x")
        );
        metrics::gauge!("leadgate_delivery_leader", "crm" => account.to_string()).set(0.0);
        Leadership {
            store,
            account: account.to_string(),
            holder,
            ttl,
            held: Mutex::new(None),
            gained: Notify::new(),
        }
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    fn standby_every(&self) -> Duration {
        (self.ttl / 7).max(Duration::from_millis(200))
    }

    /// The local trust window: a margin before the store's expiry covers clock-rate drift and
    /// the time the renewal took to reach the database.
    fn trust(&self) -> Duration {
        self.ttl - self.ttl / 15
    }

    /// The fence to act under, while this replica may trust its lease.
    pub fn current(&self) -> Option<Fence> {
        let held = self.held.lock().ok()?;
        held.as_ref()
            .filter(|h| h.renewed.elapsed() < self.trust())
            .map(|h| h.fence.clone())
    }

    /// The fence to act under, renewing first when the last renewal is older than the renewal
    /// interval (so a caller that steps without [`run`](Self::run), like a test, still elects).
    pub async fn fence(&self) -> Result<Option<Fence>, StoreError> {
        let fresh = self
            .held
            .lock()
            .ok()
            .and_then(|h| h.as_ref().map(|h| h.renewed.elapsed() < self.renew_every()))
            .unwrap_or(false);
        if fresh {
            return Ok(self.current());
        }
        self.tick().await
    }

    /// One election or renewal attempt.
    pub async fn tick(&self) -> Result<Option<Fence>, StoreError> {
        let started = Instant::now();
        let result = self
            .store
            .acquire_lease(&self.account, &self.holder, self.ttl)
            .await;
        let was = self.current();
        let now = match &result {
            Ok(Some(fence)) => {
                if let Ok(mut h) = self.held.lock() {
                    *h = Some(Held {
                        fence: fence.clone(),
                        renewed: started,
                    });
                }
                Some(fence.clone())
            }
            Ok(None) => {
                if let Ok(mut h) = self.held.lock() {
                    *h = None;
                }
                None
            }
            // Unknown: keep trusting the lease until its window closes.
            Err(_) => self.current(),
        };
        self.report(was.as_ref(), now.as_ref());
        result.map(|_| now)
    }

    fn report(&self, was: Option<&Fence>, now: Option<&Fence>) {
        let crm = self.account.clone();
        match (was, now) {
            (None, Some(f)) => {
                tracing::info!(crm, term = f.term, holder = %self.holder, "this replica now delivers");
                self.gained.notify_waiters();
            }
            (Some(f), None) => {
                tracing::warn!(crm, term = f.term, "this replica lost the delivery lease");
            }
            (Some(a), Some(b)) if a.term != b.term => {
                tracing::info!(
                    crm,
                    term = b.term,
                    "delivery lease taken again under a new term"
                );
            }
            _ => {}
        }
        metrics::gauge!("leadgate_delivery_leader", "crm" => crm).set(if now.is_some() {
            1.0
        } else {
            0.0
        });
    }

    /// Waits until this replica gains the lease (or `wait` passes).
    pub async fn gained(&self, wait: Duration) {
        let _ = tokio::time::timeout(wait, self.gained.notified()).await;
    }

    /// Keeps the lease renewed (or keeps asking for it) until cancelled, then gives it up so
    /// another replica takes over without waiting for it to lapse.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let wait = match self.tick().await {
                Ok(Some(_)) => self.renew_every(),
                Ok(None) => self.standby_every(),
                Err(e) => {
                    tracing::warn!(crm = %self.account, error = %e, "cannot reach the store to renew the delivery lease");
                    self.standby_every()
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        self.resign().await;
    }

    /// Gives the lease up now.
    pub async fn resign(&self) {
        let held = self.held.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = held {
            if let Err(e) = self.store.release_lease(&h.fence).await {
                tracing::warn!(crm = %self.account, error = %e, "cannot release the delivery lease; it lapses on its own");
            }
            metrics::gauge!("leadgate_delivery_leader", "crm" => self.account.clone()).set(0.0);
        }
    }
}

/// The host name for lease holders (readable in the lease table), or `leadgate`.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty() && h.len() <= 64)
        .unwrap_or_else(|| "leadgate".into())
}
