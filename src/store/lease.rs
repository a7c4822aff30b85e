//! The delivery lease's vocabulary. One replica delivers per CRM account: it holds a lease that
//! expires unless renewed, and every term of the lease has a number that only grows. The term is
//! a fencing token: claims, quota tokens and recorded results name it, and the store refuses
//! them once a newer term exists, so a deliverer that was paused or cut off past its lease can
//! neither spend quota nor mark work done (see research/postgres.md: leader election alone does
//! not guarantee a single actor).

use std::time::Duration;

/// Who acts for one CRM account, under which term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub account: String,
    pub holder: String,
    pub term: i64,
}

/// The answer to a quota request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// One request may be sent.
    Granted,
    /// The shared bucket is empty; ask again after this long.
    Wait(Duration),
}

/// The token bucket that enforces `quota` across replicas without ever admitting more than
/// `requests` in any window of `per`: capacity 1 and a refill of `requests - 1` per window (a
/// bucket admits capacity + refill x window per window; research pitfall 8), the same pacing as
/// the local limiter. Returns (capacity, tokens per second).
pub fn bucket(quota: &crate::config::RateLimit) -> (f64, f64) {
    let n = f64::from(quota.requests.get());
    let per = quota.per.as_secs_f64().max(1e-3);
    let refill = if n > 1.0 { n - 1.0 } else { 1.0 };
    (1.0, refill / per)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    #[test]
    fn the_bucket_never_admits_more_than_the_quota_in_a_window() {
        let q = crate::config::RateLimit {
            requests: NonZeroU32::new(100).unwrap(),
            per: Duration::from_secs(10),
        };
        let (cap, rate) = bucket(&q);
        assert!(cap + rate * 10.0 <= 100.0 + 1e-9);
        assert!((rate - 9.9).abs() < 1e-9);
    }
}
