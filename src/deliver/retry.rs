//! Retry policy, kept apart from classification: connectors say *what* went wrong
//! ([`Failure`]); [`RetryPolicy::decide`] says what happens next (retry with exponential backoff
//! and full jitter, wait out a pause uncharged, or dead-letter).

use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::header::HeaderMap;

use crate::config::RetrySettings;
use crate::store::Outcome;

/// Why one record was not delivered, as far as retrying is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Not the record's fault and not sent or refused for capacity: the CRM's rate limit, daily
    /// allowance or credentials paused delivery. Retried when the pause ends, not charged.
    Paused(String),
    /// Might work later: 5xx, timeouts, connection errors, an empty 2xx. Charged, backed off.
    Transient(String),
    /// Retrying cannot fix it (validation, unknown property): dead letter with this message.
    Permanent(String),
}

impl Failure {
    pub fn message(&self) -> &str {
        match self {
            Failure::Paused(m) | Failure::Transient(m) | Failure::Permanent(m) => m,
        }
    }

    /// The kind, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Paused(_) => "paused",
            Failure::Transient(_) => "transient",
            Failure::Permanent(_) => "permanent",
        }
    }
}

/// How a status code is handled when the connector knows nothing more specific.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    Success,
    /// 429 (and HubSpot's 423/477): pause all delivery.
    RateLimited,
    /// 401/403: the credentials, not the record.
    Auth,
    /// 408, 5xx except 501.
    Transient,
    /// Other 4xx, 501.
    Permanent,
}

pub fn classify_status(status: u16) -> StatusClass {
    match status {
        200..=299 => StatusClass::Success,
        429 => StatusClass::RateLimited,
        401 | 403 => StatusClass::Auth,
        408 | 425 => StatusClass::Transient,
        501 => StatusClass::Permanent,
        500..=599 => StatusClass::Transient,
        _ => StatusClass::Permanent,
    }
}

/// A transport error (no HTTP answer): always worth retrying, the request may not have arrived.
pub fn classify_transport(crm: &str, e: &reqwest::Error) -> Failure {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "response body could not be read"
    } else {
        "request failed"
    };
    Failure::Transient(format!("{crm}: {what}"))
}

/// `Retry-After` as seconds or an HTTP date, capped at a day.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let d = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
            let ms = (at.timestamp_millis() - chrono::Utc::now().timestamp_millis()).max(0);
            Duration::from_millis(ms as u64)
        }
    };
    Some(d.min(Duration::from_secs(86_400)))
}

/// Time until the next midnight UTC: when a daily allowance without a stated reset is assumed
/// to refill (HubSpot resets in the account's time zone, Pipedrive in the server's; UTC midnight
/// plus the daily pause floor is the conservative guess).
pub fn until_next_utc_midnight() -> Duration {
    let now = chrono::Utc::now();
    let tomorrow = (now + chrono::Duration::days(1))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc());
    match tomorrow {
        Some(t) => (t - now).to_std().unwrap_or(Duration::from_secs(3600)),
        None => Duration::from_secs(3600),
    }
}

/// Turns failures into the next step for a record.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub settings: RetrySettings,
}

impl RetryPolicy {
    pub fn new(settings: RetrySettings) -> Self {
        Self { settings }
    }

    /// The cap for the `attempt`-th failure (1-based): `base * 2^(attempt-1)`, at most `max`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        self.settings
            .base_backoff
            .saturating_mul(1u32 << exp)
            .min(self.settings.max_backoff)
    }

    /// Full jitter: uniformly random in `[0, ceiling]`, so records that failed together spread out.
    pub fn backoff(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let cap = self.ceiling(attempt).as_millis() as u64;
        Duration::from_millis(rng.gen_range(0..=cap))
    }

    /// What to do with a record that failed.
    /// `attempts`: failures already charged; `pause`: the gate's current pause, if any.
    pub fn decide(
        &self,
        crm: &str,
        failure: &Failure,
        attempts: u32,
        first_queued_at_ms: i64,
        now_ms: i64,
        pause: Option<Instant>,
    ) -> Outcome {
        let age = Duration::from_millis((now_ms - first_queued_at_ms).max(0) as u64);
        let too_old = age > self.settings.max_age;
        let dead = |error: String| Outcome::Dead {
            crm: crm.to_string(),
            error,
        };
        match failure {
            Failure::Permanent(m) => dead(m.clone()),
            Failure::Transient(m) => {
                let attempt = attempts + 1;
                if attempt >= self.settings.max_attempts {
                    dead(format!("gave up after {attempt} attempts; last error: {m}"))
                } else if too_old {
                    dead(format!(
                        "gave up after {} s in the outbox; last error: {m}",
                        age.as_secs()
                    ))
                } else {
                    let wait = self.backoff(attempt, &mut rand::thread_rng());
                    Outcome::Retry {
                        at_ms: now_ms + wait.as_millis() as i64,
                        error: m.clone(),
                        charge: true,
                    }
                }
            }
            Failure::Paused(m) if too_old => dead(format!(
                "gave up after {} s in the outbox; delivery was paused: {m}",
                age.as_secs()
            )),
            Failure::Paused(m) => {
                let wait = pause
                    .map(|p| p.saturating_duration_since(Instant::now()))
                    .unwrap_or_default();
                Outcome::Retry {
                    at_ms: now_ms + wait.as_millis() as i64,
                    error: m.clone(),
                    charge: false,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn policy() -> RetryPolicy {
        RetryPolicy::new(RetrySettings {
            max_attempts: 5,
            max_age: Duration::from_secs(3600),
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        })
    }

    #[test]
    fn statuses_are_classified_like_the_crms_document_them() {
        assert_eq!(classify_status(200), StatusClass::Success);
        assert_eq!(classify_status(207), StatusClass::Success);
        assert_eq!(classify_status(429), StatusClass::RateLimited);
        assert_eq!(classify_status(401), StatusClass::Auth);
        assert_eq!(classify_status(400), StatusClass::Permanent);
        assert_eq!(classify_status(409), StatusClass::Permanent);
        assert_eq!(classify_status(500), StatusClass::Transient);
        assert_eq!(classify_status(503), StatusClass::Transient);
        assert_eq!(classify_status(524), StatusClass::Transient);
        assert_eq!(classify_status(501), StatusClass::Permanent);
        assert_eq!(classify_status(408), StatusClass::Transient);
    }

    #[test]
    fn backoff_grows_exponentially_is_capped_and_jittered_within_the_ceiling() {
        let p = policy();
        assert_eq!(p.ceiling(1), Duration::from_millis(100));
        assert_eq!(p.ceiling(2), Duration::from_millis(200));
        assert_eq!(p.ceiling(4), Duration::from_millis(800));
        assert_eq!(p.ceiling(5), Duration::from_secs(1));
        assert_eq!(p.ceiling(60), Duration::from_secs(1));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let draws: Vec<Duration> = (0..200).map(|_| p.backoff(3, &mut rng)).collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_millis(400)));
        let distinct: std::collections::BTreeSet<_> = draws.iter().collect();
        assert!(distinct.len() > 50, "full jitter spreads the delays");
    }

    #[test]
    fn transient_failures_retry_until_attempts_or_age_run_out() {
        let p = policy();
        let f = Failure::Transient("HubSpot 503".into());
        match p.decide("hubspot", &f, 0, 0, 1000, None) {
            Outcome::Retry {
                at_ms,
                charge: true,
                ..
            } => assert!((1000..=1100).contains(&at_ms)),
            o => panic!("{o:?}"),
        }
        match p.decide("hubspot", &f, 4, 0, 1000, None) {
            Outcome::Dead { error, .. } => assert!(error.contains("5 attempts"), "{error}"),
            o => panic!("{o:?}"),
        }
        match p.decide("hubspot", &f, 1, 0, 3_601_000, None) {
            Outcome::Dead { error, .. } => assert!(error.contains("3601 s"), "{error}"),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn permanent_failures_are_dead_at_once_and_pauses_are_not_charged() {
        let p = policy();
        let o = p.decide(
            "hubspot",
            &Failure::Permanent("Property \"x\" does not exist".into()),
            0,
            0,
            0,
            None,
        );
        assert_eq!(
            o,
            Outcome::Dead {
                crm: "hubspot".into(),
                error: "Property \"x\" does not exist".into()
            }
        );
        let until = Instant::now() + Duration::from_secs(2);
        match p.decide(
            "hubspot",
            &Failure::Paused("429".into()),
            9,
            0,
            0,
            Some(until),
        ) {
            Outcome::Retry { at_ms, charge, .. } => {
                assert!(!charge);
                assert!((1500..=2000).contains(&at_ms), "{at_ms}");
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = chrono::Utc::now() + chrono::Duration::seconds(30);
        h.insert("retry-after", later.to_rfc2822().parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
        assert!(until_next_utc_midnight() <= Duration::from_secs(86_400));
    }
}
