//! One limiter per CRM account: a governor rate limiter every HTTP attempt (retries included) waits
//! on, and a shared gate that a 429, `Retry-After`, an exhausted daily allowance or refused
//! credentials close until a given instant. While the gate is closed nothing is sent at all.
//!
//! Governor's state lives in this process, so it only paces. The quota itself is the store's
//! token bucket ([`crate::store::Store::take_token`]), taken under the delivery lease's fence
//! after the local pacing: one bucket for the whole deployment, and a deliverer that lost its
//! lease gets no tokens. (SQLite's one process answers from its local pacing alone.)

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::lease::Leadership;
use crate::config::RateLimit;
use crate::store::{Store, StoreError, Token};

/// Why delivery is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseReason {
    /// The CRM said slow down (429, 423, 477) or its window's remaining count reached 0.
    RateLimited,
    /// The daily allowance is used up (or down to the configured reserve).
    DailyLimit,
    /// The CRM refused the credentials; retried after a while in case they are fixed.
    Auth,
    /// This replica does not hold the delivery lease (any more): it must not send.
    NotLeader,
    /// The store's shared quota cannot be reached: nothing is sent without a token.
    QuotaUnavailable,
    /// The webhook receiver answered 410 Gone: stopped until an operator resumes delivery.
    EndpointGone,
}

impl PauseReason {
    /// Every reason (metrics register each at 0).
    pub const ALL: [PauseReason; 4] = [
        PauseReason::RateLimited,
        PauseReason::DailyLimit,
        PauseReason::Auth,
        PauseReason::EndpointGone,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PauseReason::RateLimited => "rate_limited",
            PauseReason::DailyLimit => "daily_limit",
            PauseReason::Auth => "auth",
            PauseReason::NotLeader => "not_leader",
            PauseReason::QuotaUnavailable => "quota_unavailable",
            PauseReason::EndpointGone => "endpoint_gone",
        }
    }
}

/// Delivery is paused until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pause {
    pub until: Instant,
    pub reason: PauseReason,
}

/// The evenly paced quota used for `limit`: one request every `per / (requests - 1)`, no burst.
///
/// The CRMs count requests in rolling windows (HubSpot 10 s, Pipedrive 2 s). A bursting token
/// bucket admits up to burst + refill requests in one window, nearly twice the quota; evenly
/// spaced requests admit at most `requests - 1` per window, and the one left spare absorbs network
/// jitter compressing two arrivals together.
pub fn paced_quota(limit: &RateLimit) -> Quota {
    let n = limit.requests.get();
    let slots = if n > 1 { n - 1 } else { 1 };
    let period = limit.per / slots;
    Quota::with_period(period.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(NonZeroU32::MIN)
}

/// How long delivery pauses after the CRM refused the credentials before trying again (in case
/// they were fixed meanwhile).
pub const AUTH_PAUSE: Duration = Duration::from_secs(60);

/// How often the "credentials refused" line may repeat while the CRM keeps refusing them.
pub const AUTH_LOG_EVERY: Duration = Duration::from_secs(600);

/// Lets a repeating alarm through once per interval, counting what it held back.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    held: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            held: 0,
        }
    }

    /// `Some(held back since the last one)` when the alarm may be raised at `now`.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(at) if now.saturating_duration_since(at) < self.every => {
                self.held += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held))
            }
        }
    }

    /// Whether an alarm was raised (and not [`reset`](Self::reset) since).
    pub fn raised(&self) -> bool {
        self.last.is_some()
    }

    pub fn reset(&mut self) {
        self.last = None;
        self.held = 0;
    }
}

/// The deployment-wide quota: the store's bucket, taken under this replica's lease.
pub struct SharedQuota {
    pub store: Arc<dyn Store>,
    pub leadership: Arc<Leadership>,
    pub quota: RateLimit,
}

/// How long a refused attempt (no lease, store unreachable) is deferred.
const NOT_SENT_RETRY: Duration = Duration::from_secs(1);

/// A rate limiter plus a pause gate for one CRM account.
pub struct Limiter {
    rate: DefaultDirectRateLimiter,
    gate: Mutex<Option<Pause>>,
    shared: OnceLock<SharedQuota>,
    /// The operator's alarm for refused credentials (metrics alone are easy to miss).
    auth_alarm: Mutex<Throttle>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("gate", &self.gate)
            .field("shared", &self.shared.get().is_some())
            .finish()
    }
}

impl Limiter {
    pub fn new(limit: &RateLimit) -> Self {
        Self {
            rate: RateLimiter::direct(paced_quota(limit)),
            gate: Mutex::new(None),
            shared: OnceLock::new(),
            auth_alarm: Mutex::new(Throttle::new(AUTH_LOG_EVERY)),
        }
    }

    /// The CRM refused the credentials (401/403): pause delivery for [`AUTH_PAUSE`] and raise
    /// the alarm. Retrying sooner could not help and only spends the quota.
    pub fn credentials_refused(&self, crm: &str, status: u16, fix: &str) {
        self.pause_for(AUTH_PAUSE, PauseReason::Auth);
        self.alarm_credentials(crm, status, fix);
    }

    /// One ERROR line an operator tailing the logs cannot miss: the connector, the status and
    /// what to fix (variable names, never a value), at most once per [`AUTH_LOG_EVERY`] while
    /// the CRM keeps refusing, so it cannot flood the log.
    pub fn alarm_credentials(&self, crm: &str, status: u16, fix: &str) {
        let Ok(mut alarm) = self.auth_alarm.lock() else {
            return;
        };
        if let Some(held_back) = alarm.allow(Instant::now()) {
            tracing::error!(
                crm,
                status,
                repeats_not_logged = held_back,
                "{crm} refused leadgate's credentials ({status}): {fix}"
            );
        }
    }

    /// Records were delivered: if the credentials alarm was raised, say it is over (the next
    /// refusal raises it again at once).
    pub fn credentials_accepted(&self, crm: &str) {
        if let Ok(mut alarm) = self.auth_alarm.lock() {
            if alarm.raised() {
                alarm.reset();
                tracing::info!(crm, "the CRM accepts leadgate's credentials again");
            }
        }
    }

    /// Makes every attempt also take a token from the store's shared bucket (set once).
    pub fn share(&self, quota: SharedQuota) {
        let _ = self.shared.set(quota);
    }

    /// Waits for a rate-limit token; fails at once with the pause while delivery is paused, or
    /// when this replica may not send (no lease, shared quota unreachable). Call before every
    /// HTTP attempt.
    pub async fn acquire(&self) -> Result<(), Pause> {
        if let Some(p) = self.paused() {
            return Err(p);
        }
        let waited = Instant::now();
        self.rate.until_ready().await;
        if let Some(shared) = self.shared.get() {
            self.take_shared(shared).await?;
        }
        metrics::histogram!("leadgate_ratelimit_wait_seconds")
            .record(waited.elapsed().as_secs_f64());
        // A 429 may have closed the gate while this attempt waited for its token.
        match self.paused() {
            Some(p) => Err(p),
            None => Ok(()),
        }
    }

    async fn take_shared(&self, shared: &SharedQuota) -> Result<(), Pause> {
        let refused = |reason| Pause {
            until: Instant::now() + NOT_SENT_RETRY,
            reason,
        };
        loop {
            let Some(fence) = shared.leadership.current() else {
                return Err(refused(PauseReason::NotLeader));
            };
            match shared.store.take_token(&fence, &shared.quota).await {
                // The round trip may have outlasted the lease (a paused process): check the local
                // trust window once more right before the request goes out.
                Ok(Token::Granted) if shared.leadership.current().is_some() => return Ok(()),
                Ok(Token::Granted) => return Err(refused(PauseReason::NotLeader)),
                Ok(Token::Wait(d)) => {
                    if let Some(p) = self.paused() {
                        return Err(p);
                    }
                    tokio::time::sleep(d.max(Duration::from_millis(1))).await;
                }
                Err(StoreError::Fenced(_)) => return Err(refused(PauseReason::NotLeader)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take a token from the shared CRM quota; not sending");
                    return Err(refused(PauseReason::QuotaUnavailable));
                }
            }
        }
    }

    /// Closes the gate until `until`; an existing longer pause is kept.
    pub fn pause(&self, until: Instant, reason: PauseReason) {
        if let Ok(mut g) = self.gate.lock() {
            match *g {
                Some(p) if p.until >= until => {}
                Some(p) if p.until > Instant::now() => *g = Some(Pause { until, reason }),
                _ => {
                    // Counted when the gate closes, not when a pause is extended.
                    metrics::counter!("leadgate_crm_pauses_total", "reason" => reason.as_str())
                        .increment(1);
                    *g = Some(Pause { until, reason });
                }
            }
        }
    }

    /// Closes the gate until [`resume`](Self::resume) (the far future, in practice).
    pub fn pause_until_resumed(&self, reason: PauseReason) {
        let decade = Duration::from_secs(10 * 365 * 86_400);
        let now = Instant::now();
        self.pause(
            now.checked_add(decade).unwrap_or(now + AUTH_LOG_EVERY),
            reason,
        );
    }

    /// Opens the gate now, whatever closed it.
    pub fn resume(&self) {
        if let Ok(mut g) = self.gate.lock() {
            *g = None;
        }
    }

    /// [`pause`](Self::pause) for `wait` from now.
    pub fn pause_for(&self, wait: Duration, reason: PauseReason) {
        self.pause(Instant::now() + wait, reason);
    }

    /// The current pause, if the gate is closed.
    pub fn paused(&self) -> Option<Pause> {
        let mut g = self.gate.lock().ok()?;
        match *g {
            Some(p) if p.until > Instant::now() => Some(p),
            Some(_) => {
                *g = None;
                None
            }
            None => None,
        }
    }
}

/// A separate limiter for an endpoint with its own lower quota (Pipedrive search). Requests to it
/// take a token here *and* from the account's [`Limiter`].
#[derive(Debug)]
pub struct SubLimiter(DefaultDirectRateLimiter);

impl SubLimiter {
    pub fn new(limit: &RateLimit) -> Self {
        SubLimiter(RateLimiter::direct(paced_quota(limit)))
    }

    pub async fn acquire(&self) {
        self.0.until_ready().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(n: u32, secs: u64) -> RateLimit {
        RateLimit {
            requests: NonZeroU32::new(n).unwrap(),
            per: Duration::from_secs(secs),
        }
    }

    #[test]
    fn the_paced_quota_never_admits_more_than_the_limit_in_a_window() {
        let q = paced_quota(&limit(100, 10));
        assert_eq!(q.burst_size().get(), 1);
        // 99 evenly spaced requests per 10 s: one spare for jitter.
        assert_eq!(q.replenish_interval(), Duration::from_secs(10) / 99);
        let one = paced_quota(&limit(1, 2));
        assert_eq!(one.replenish_interval(), Duration::from_secs(2));
    }

    #[test]
    fn the_credentials_alarm_is_raised_once_per_interval_and_counts_what_it_held_back() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(600));
        assert_eq!(t.allow(t0), Some(0));
        for s in 1..=9 {
            // The worker retries every AUTH_PAUSE: nine more refusals in ten minutes.
            assert_eq!(t.allow(t0 + Duration::from_secs(60 * s)), None);
        }
        assert_eq!(t.allow(t0 + Duration::from_secs(600)), Some(9));
        assert!(t.raised());
        t.reset();
        assert_eq!(t.allow(t0 + Duration::from_secs(601)), Some(0));
    }

    #[tokio::test]
    async fn a_pause_closes_the_gate_until_it_passes_and_is_never_shortened() {
        let l = Limiter::new(&limit(1000, 1));
        assert!(l.acquire().await.is_ok());
        l.pause_for(Duration::from_millis(80), PauseReason::RateLimited);
        l.pause_for(Duration::from_millis(10), PauseReason::Auth);
        let p = l.acquire().await.unwrap_err();
        assert_eq!(p.reason, PauseReason::RateLimited);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(l.paused().is_none());
        assert!(l.acquire().await.is_ok());
    }
}
