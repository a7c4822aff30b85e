//! Operator authentication: the admin bearer token, compared in constant time, and a limit on
//! missing or wrong tokens per client address. The admin API uses it; the console's login is
//! meant to share it, so one address has one budget of guesses whichever door it knocks on.
//!
//! The rules:
//! - a correct token never spends the budget and never waits;
//! - each missing or wrong token spends one unit of its address's budget (`[admin]
//!   wrong_token_limit`); the request that finds it empty gets 429 with `Retry-After`;
//! - while an address is refused, every request from it gets 429, a correct token included:
//!   answering a correct guess with 200 there would tell a guesser which guess was right, and the
//!   limit would not limit guessing at all. Other addresses are never affected.
//!
//! The address is the TCP peer, not `X-Forwarded-For`: on the admin listener a header is the
//! attacker's to choose. IPv6 clients are keyed by their /64, the block one subscriber gets, so
//! rotating addresses inside it buys no new budget.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::RateLimiter;
use metrics::Counter;

use crate::config::RateLimit;
use crate::ingest::verify::Secret;

/// Most client addresses tracked at once, in each of the two maps: both full measured 2.7 MiB of
/// RSS (release build), however many addresses send wrong tokens. Past it, a wrong token from an
/// address not yet tracked is refused (429) until entries expire, which costs a correct token
/// nothing. Legit clients of a private admin port are a handful; only a flood gets near it.
const MAX_TRACKED: usize = 16_384;

/// How often forgotten-worthy entries (budget full again, refusal over) are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// A client address as the limiter counts it: IPv4 as is (IPv4-mapped IPv6 included), IPv6 by
/// its /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => ClientKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    ClientKey(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }

    /// Requests without a peer address (not over TCP) share one budget.
    pub fn unknown() -> Self {
        ClientKey(IpAddr::V6(Ipv6Addr::UNSPECIFIED))
    }
}

/// Why a request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Missing or wrong token: 401.
    Unauthorized,
    /// Too many missing or wrong tokens from this address: 429, retry after this long.
    RateLimited(Duration),
}

/// The admin token and the wrong-token limiter.
pub struct TokenGuard<C: Clock = DefaultClock> {
    token: Secret,
    /// governor's keyed GCRA limiter counts the wrong tokens (one state per address in a
    /// DashMap, `retain_recent` for housekeeping). It cannot tell whether an address is out of
    /// budget without spending, so refusals are remembered in `refused` for the correct-token
    /// path to look up.
    wrong: RateLimiter<ClientKey, DashMapStateStore<ClientKey>, C, NoOpMiddleware<C::Instant>>,
    /// Addresses refused, until when.
    refused: Mutex<HashMap<ClientKey, C::Instant>>,
    last_sweep: Mutex<C::Instant>,
    clock: C,
    unauthorized: Counter,
    rate_limited: Counter,
}

impl TokenGuard<DefaultClock> {
    pub fn new(token: Secret, limit: RateLimit) -> Self {
        Self::with_clock(token, limit, DefaultClock::default())
    }
}

impl<C: Clock + Clone> TokenGuard<C> {
    pub fn with_clock(token: Secret, limit: RateLimit, clock: C) -> Self {
        // Its HELP line is in telemetry::METRIC_DOCS, with every other family's.
        let now = clock.now();
        TokenGuard {
            token,
            wrong: RateLimiter::dashmap_with_clock(limit.quota(), clock.clone()),
            refused: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(now),
            clock,
            unauthorized: metrics::counter!(
                "leadgate_admin_auth_failures_total", "outcome" => "unauthorized"
            ),
            rate_limited: metrics::counter!(
                "leadgate_admin_auth_failures_total", "outcome" => "rate_limited"
            ),
        }
    }

    /// Lets a request in, or says why not. `presented` is the bearer token as sent (None when
    /// the request carried none).
    pub fn check(&self, client: ClientKey, presented: Option<&str>) -> Result<(), Refusal> {
        let now = self.clock.now();
        if let Some(wait) = self.refused_for(client, now) {
            self.rate_limited.increment(1);
            return Err(Refusal::RateLimited(wait));
        }
        let correct = presented.is_some_and(|given| {
            crate::ingest::verify::ct_eq_secret(given.as_bytes(), self.token.bytes())
        });
        if correct {
            return Ok(());
        }
        self.housekeeping(now);
        let verdict = if self.wrong.len() >= MAX_TRACKED {
            // Full: refuse rather than grow (see MAX_TRACKED).
            Err(now + Nanos::from(SWEEP_EVERY))
        } else {
            self.wrong
                .check_key(&client)
                .map_err(|not_until| not_until.earliest_possible())
        };
        match verdict {
            Ok(()) => {
                self.unauthorized.increment(1);
                Err(Refusal::Unauthorized)
            }
            Err(until) => {
                self.remember_refusal(client, until, now);
                self.rate_limited.increment(1);
                Err(Refusal::RateLimited(wait(until, now)))
            }
        }
    }

    fn refused_for(&self, client: ClientKey, now: C::Instant) -> Option<Duration> {
        let refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        refused
            .get(&client)
            .filter(|until| **until > now)
            .map(|until| wait(*until, now))
    }

    fn remember_refusal(&self, client: ClientKey, until: C::Instant, now: C::Instant) {
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if refused.len() >= MAX_TRACKED {
            refused.retain(|_, u| *u > now);
        }
        // Still full: this address is not remembered, and its wrong tokens stay refused by the
        // limiter itself; only the correct-token lookup misses it.
        if refused.len() < MAX_TRACKED || refused.contains_key(&client) {
            refused.insert(client, until);
        }
    }

    /// Drops entries indistinguishable from fresh ones: every SWEEP_EVERY, or at once (at most
    /// once a second) when the limiter is full.
    fn housekeeping(&self, now: C::Instant) {
        let Ok(mut last) = self.last_sweep.try_lock() else {
            return; // another request is sweeping
        };
        let since = Duration::from(now.duration_since(*last));
        let full = self.wrong.len() >= MAX_TRACKED;
        if since < SWEEP_EVERY && !(full && since >= Duration::from_secs(1)) {
            return;
        }
        *last = now;
        self.wrong.retain_recent();
        self.wrong.shrink_to_fit();
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        refused.retain(|_, until| *until > now);
        refused.shrink_to_fit();
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.wrong.len()
    }
}

/// Whole seconds are what `Retry-After` carries; round up so a client that waits is never early.
fn wait<I: Reference>(until: I, now: I) -> Duration {
    let d = Duration::from(until.duration_since(now));
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::num::NonZeroU32;

    use governor::clock::FakeRelativeClock;

    use super::*;

    const TOKEN: &str = "correct-horse-battery-staple";

    fn guard(burst: u32, per_secs: u64) -> (TokenGuard<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let limit = RateLimit {
            requests: NonZeroU32::new(burst).unwrap(),
            per: Duration::from_secs(per_secs),
        };
        (
            TokenGuard::with_clock(Secret::new(TOKEN), limit, clock.clone()),
            clock,
        )
    }

    fn v4(last: u8) -> ClientKey {
        ClientKey::of(IpAddr::V4(Ipv4Addr::new(203, 0, 113, last)))
    }

    #[test]
    fn wrong_tokens_spend_the_burst_then_get_429_with_the_time_to_wait() {
        let (g, clock) = guard(3, 30); // one more every 10 s
        for _ in 0..3 {
            assert_eq!(g.check(v4(1), Some("guess")), Err(Refusal::Unauthorized));
        }
        assert_eq!(
            g.check(v4(1), None),
            Err(Refusal::RateLimited(Duration::from_secs(10)))
        );
        clock.advance(Duration::from_millis(2500));
        // 7.5 s left, rounded up.
        assert_eq!(
            g.check(v4(1), Some("guess")),
            Err(Refusal::RateLimited(Duration::from_secs(8)))
        );
        clock.advance(Duration::from_millis(7500));
        // One unit back: one more guess, then refused again.
        assert_eq!(g.check(v4(1), Some("guess")), Err(Refusal::Unauthorized));
        assert!(matches!(
            g.check(v4(1), Some("guess")),
            Err(Refusal::RateLimited(_))
        ));
    }

    #[test]
    fn a_refused_address_gets_429_even_with_the_correct_token_and_others_are_untouched() {
        let (g, _) = guard(2, 60);
        for _ in 0..3 {
            let _ = g.check(v4(1), Some("guess"));
        }
        // The guesser learns nothing while refused: a right guess looks like a wrong one.
        assert!(matches!(
            g.check(v4(1), Some(TOKEN)),
            Err(Refusal::RateLimited(_))
        ));
        // Another address: its correct token passes, and its own budget is whole.
        assert_eq!(g.check(v4(2), Some(TOKEN)), Ok(()));
        assert_eq!(g.check(v4(2), Some("typo")), Err(Refusal::Unauthorized));
        assert_eq!(g.check(v4(2), Some(TOKEN)), Ok(()));
    }

    #[test]
    fn correct_tokens_never_spend_the_budget() {
        let (g, _) = guard(1, 60);
        for _ in 0..1000 {
            assert_eq!(g.check(v4(1), Some(TOKEN)), Ok(()));
        }
        assert_eq!(g.check(v4(1), Some("typo")), Err(Refusal::Unauthorized));
        assert_eq!(g.tracked(), 1, "only the wrong token created state");
    }

    #[test]
    fn a_token_is_compared_whole() {
        let (g, _) = guard(100, 60);
        for wrong in [
            "",
            "correct-horse-battery-stapl",
            "correct-horse-battery-staplex",
            "CORRECT-HORSE-BATTERY-STAPLE",
        ] {
            assert_eq!(
                g.check(v4(1), Some(wrong)),
                Err(Refusal::Unauthorized),
                "{wrong:?}"
            );
        }
    }

    #[test]
    fn ipv6_clients_share_a_budget_per_64_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientKey::of(a), ClientKey::of(b));
        assert_ne!(ClientKey::of(a), ClientKey::of(other));
        let mapped: IpAddr = "::ffff:203.0.113.1".parse().unwrap();
        assert_eq!(ClientKey::of(mapped), v4(1));
    }

    #[test]
    fn state_is_forgotten_once_it_is_fresh_again_so_memory_stays_bounded() {
        let (g, clock) = guard(2, 2);
        for last in 0..200u8 {
            let _ = g.check(v4(last), Some("guess"));
        }
        assert_eq!(g.tracked(), 200);
        // Long after the budgets refilled, the next wrong token triggers the sweep.
        clock.advance(SWEEP_EVERY + Duration::from_secs(5));
        let _ = g.check(v4(1), Some("guess"));
        assert_eq!(g.tracked(), 1, "only the address just seen is kept");
    }

    #[test]
    fn a_flood_from_more_addresses_than_it_tracks_is_refused_without_growing() {
        let (g, clock) = guard(5, 60);
        let addr = |i: u32| ClientKey::of(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)));
        for i in 0..MAX_TRACKED as u32 {
            assert_eq!(g.check(addr(i), Some("guess")), Err(Refusal::Unauthorized));
        }
        let newcomer = addr(MAX_TRACKED as u32 + 1);
        assert!(matches!(
            g.check(newcomer, Some("guess")),
            Err(Refusal::RateLimited(_))
        ));
        assert_eq!(g.tracked(), MAX_TRACKED, "no entry added past the bound");
        // A correct token from an address that was not refused still gets in.
        assert_eq!(g.check(addr(MAX_TRACKED as u32 + 2), Some(TOKEN)), Ok(()));
        // Once the flood's budgets have refilled, the sweep makes room again.
        clock.advance(Duration::from_secs(120));
        assert_eq!(
            g.check(addr(MAX_TRACKED as u32 + 3), Some("guess")),
            Err(Refusal::Unauthorized)
        );
        assert_eq!(g.tracked(), 1);
    }
}
