//! A stop only an operator lifts. A Standard Webhooks receiver answering `410 Gone` says the
//! endpoint no longer exists: the connector dead-letters that lead and closes the limiter's gate
//! for good ([`PauseReason::EndpointGone`]). Delivery resumes once an operator puts dead letters
//! back in the outbox (`leadgate replay --dead-letters`, or the admin API; from any process that
//! shares the store), which the worker sees as the dead-letter count falling below what it was
//! when delivery stopped. A restart also resumes; if the endpoint is still gone, the next lead
//! gets the 410 and delivery stops again.

use std::sync::Mutex;

use super::limiter::{Limiter, PauseReason};
use crate::store::{Store, StoreError};

#[derive(Debug, Default)]
pub struct Halt {
    /// Dead letters when delivery stopped (None: not stopped, or not looked yet).
    dead_letters_at_stop: Mutex<Option<u64>>,
}

impl Halt {
    fn stopped(limiter: &Limiter) -> bool {
        limiter
            .paused()
            .is_some_and(|p| p.reason == PauseReason::EndpointGone)
    }

    /// After a batch was recorded: if it stopped delivery, remember the dead-letter count.
    pub async fn note(&self, store: &dyn Store, limiter: &Limiter) -> Result<(), StoreError> {
        let unmarked = self.dead_letters_at_stop.lock().is_ok_and(|m| m.is_none());
        if Self::stopped(limiter) && unmarked {
            let dead = store.outbox_depth().await?.dead_letters;
            if let Ok(mut m) = self.dead_letters_at_stop.lock() {
                *m = Some(dead);
            }
        }
        Ok(())
    }

    /// While delivery is stopped: whether an operator replayed dead letters since, in which case
    /// the gate is opened and delivery goes on.
    pub async fn resumed(&self, store: &dyn Store, limiter: &Limiter) -> Result<bool, StoreError> {
        if !Self::stopped(limiter) {
            return Ok(false);
        }
        let dead = store.outbox_depth().await?.dead_letters;
        let Ok(mut mark) = self.dead_letters_at_stop.lock() else {
            return Ok(false);
        };
        match *mark {
            None => {
                *mark = Some(dead);
                Ok(false)
            }
            Some(at_stop) if dead < at_stop => {
                *mark = None;
                limiter.resume();
                tracing::info!(
                    crm = "webhook",
                    "dead letters were replayed: delivery to the webhook receiver resumes"
                );
                Ok(true)
            }
            Some(_) => Ok(false),
        }
    }
}
