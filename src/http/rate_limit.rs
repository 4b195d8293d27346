//! Per-caller rate limiting: a token bucket per verified subject, or per peer address for
//! callers without a valid token, shared by HTTP requests and websocket messages so one
//! caller cannot stall everyone else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::auth::{Auth, Principal, Role};

/// Callers tracked at once. A full bucket (an idle caller) is forgotten when the map
/// reaches this size; memory stays bounded however many addresses or subjects call.
const MAX_CALLERS: usize = 100_000;

/// Who a bucket belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Caller {
    /// A user, by its verified subject.
    Subject(String),
    /// Anonymous callers and callers whose token was refused; None when the transport
    /// did not say (then they share one bucket).
    Address(Option<IpAddr>),
    /// Service and admin callers: the operator's own backends, which send events and
    /// act for many users from one token. They are not rate limited (the query limits
    /// still bound each request), so a busy backend is never throttled as one user.
    Trusted,
}

impl Caller {
    pub fn of(auth: &Auth, peer: Option<IpAddr>) -> Caller {
        match auth {
            Auth::Verified(principal) => Caller::verified(principal),
            Auth::Anonymous | Auth::Rejected(_) => Caller::Address(peer),
        }
    }

    pub fn verified(principal: &Principal) -> Caller {
        if principal.role >= Role::Service { Caller::Trusted } else { Caller::Subject(principal.subject.clone()) }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<Caller, Bucket>>,
}

impl RateLimiter {
    /// `per_second` of 0 (or less) turns limiting off.
    pub fn new(per_second: f64, burst: f64) -> RateLimiter {
        RateLimiter { per_second, burst: burst.max(1.0), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token from the caller's bucket, or says how long until one is there.
    pub fn take(&self, caller: &Caller) -> Result<(), Duration> {
        self.take_at(caller, Instant::now())
    }

    fn take_at(&self, caller: &Caller, now: Instant) -> Result<(), Duration> {
        if !(self.per_second > 0.0 && self.per_second.is_finite()) || *caller == Caller::Trusted {
            return Ok(());
        }
        // A panic elsewhere while holding the lock leaves the buckets usable.
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= MAX_CALLERS && !buckets.contains_key(caller) {
            self.prune(&mut buckets, now);
            if buckets.len() >= MAX_CALLERS {
                // Every tracked caller is busy: start over rather than grow.
                tracing::warn!(callers = buckets.len(), "rate limiter full; forgetting every bucket");
                buckets.clear();
            }
        }
        let bucket = buckets.entry(caller.clone()).or_insert(Bucket { tokens: self.burst, at: now });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_second))
        }
    }

    /// Forgets callers whose bucket has refilled: they are as good as new.
    fn prune(&self, buckets: &mut HashMap<Caller, Bucket>, now: Instant) {
        buckets
            .retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * self.per_second < self.burst);
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.lock().map(|b| b.len()).unwrap_or(0)
    }
}

/// Whole seconds for a Retry-After header: never 0, which would invite an immediate retry.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(name: &str) -> Caller {
        Caller::Subject(name.into())
    }

    #[test]
    fn a_burst_then_the_rate() {
        let limiter = RateLimiter::new(2.0, 3.0);
        let start = Instant::now();
        let alice = subject("alice");
        for _ in 0..3 {
            assert_eq!(limiter.take_at(&alice, start), Ok(()));
        }
        let wait = limiter.take_at(&alice, start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(retry_after_seconds(wait), 1);
        // Others are unaffected.
        assert_eq!(limiter.take_at(&subject("bob"), start), Ok(()));
        // Half a second later one token is back, and only one.
        let later = start + Duration::from_millis(500);
        assert_eq!(limiter.take_at(&alice, later), Ok(()));
        assert!(limiter.take_at(&alice, later).is_err());
    }

    #[test]
    fn trusted_callers_are_never_limited() {
        let limiter = RateLimiter::new(1.0, 1.0);
        let now = Instant::now();
        for _ in 0..100 {
            assert_eq!(limiter.take_at(&Caller::Trusted, now), Ok(()));
        }
        assert_eq!(limiter.tracked(), 0);
        let principal = |role| Principal { subject: "s".into(), role, expires_at: 0, workspaces: vec![] };
        assert_eq!(Caller::verified(&principal(Role::Service)), Caller::Trusted);
        assert_eq!(Caller::verified(&principal(Role::Admin)), Caller::Trusted);
        assert_eq!(Caller::verified(&principal(Role::User)), Caller::Subject("s".into()));
    }

    #[test]
    fn zero_rate_turns_limiting_off() {
        let limiter = RateLimiter::new(0.0, 1.0);
        let now = Instant::now();
        for _ in 0..1000 {
            assert_eq!(limiter.take_at(&subject("alice"), now), Ok(()));
        }
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn the_map_stays_bounded() {
        let limiter = RateLimiter::new(1.0, 2.0);
        let start = Instant::now();
        for i in 0..MAX_CALLERS {
            assert_eq!(limiter.take_at(&subject(&i.to_string()), start), Ok(()));
        }
        assert_eq!(limiter.tracked(), MAX_CALLERS);
        // Once they have refilled, a new caller prunes them.
        let later = start + Duration::from_secs(5);
        assert_eq!(limiter.take_at(&subject("late"), later), Ok(()));
        assert_eq!(limiter.tracked(), 1, "idle callers are forgotten");
        // When every tracked caller is busy, the map starts over instead of growing.
        for i in 0..MAX_CALLERS - 1 {
            assert_eq!(limiter.take_at(&subject(&i.to_string()), later), Ok(()));
        }
        assert_eq!(limiter.tracked(), MAX_CALLERS);
        assert_eq!(limiter.take_at(&subject("one more"), later), Ok(()));
        assert_eq!(limiter.tracked(), 1);
    }
}
