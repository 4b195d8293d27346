//! Per-caller rate limiting: a token bucket per verified subject, or per peer address for
//! callers without a valid token, shared by HTTP requests and websocket messages so one
//! caller cannot stall everyone else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

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
    /// Refusals being held back (see `hold`).
    held: Semaphore,
    /// Counts refusals, for /metrics.
    refused: Option<prometheus::IntCounter>,
}

/// Refusals held back at once; past this a refusal is answered at once. A held refusal
/// is a sleeping future and a connection, a few KiB.
const MAX_HELD: usize = 4096;
/// The longest a refusal is held back.
const MAX_HOLD: Duration = Duration::from_secs(1);

impl RateLimiter {
    /// `per_second` of 0 (or less) turns limiting off.
    pub fn new(per_second: f64, burst: f64) -> RateLimiter {
        RateLimiter {
            per_second,
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
            held: Semaphore::new(MAX_HELD),
            refused: None,
        }
    }

    /// The same limiter, counting its refusals on `refused`.
    pub fn counting(mut self, refused: prometheus::IntCounter) -> RateLimiter {
        self.refused = Some(refused);
        self
    }

    /// Holds a refused caller back until the time its Retry-After names (at most a
    /// second) before it is answered. A client that floods in a loop, waiting for each
    /// answer, then sends a request per second per connection instead of thousands: its
    /// refusals stop costing the server (and the callers it shares the cores with) work.
    /// A client that retried sooner would be refused anyway. Bounded: past `MAX_HELD`
    /// refusals at once, the rest are answered at once.
    pub async fn hold(&self, wait: Duration) {
        if let Ok(_permit) = self.held.try_acquire() {
            let hold = Duration::from_secs(retry_after_seconds(wait)).min(MAX_HOLD);
            tokio::time::sleep(hold).await;
        }
    }

    /// Takes one token from the caller's bucket, or says how long until one is there.
    pub fn take(&self, caller: &Caller) -> Result<(), Duration> {
        self.counted(self.take_at(caller, 1.0, Instant::now()))
    }

    /// Charges a message of `bytes` (see `cost_of`): it goes ahead when the caller has a
    /// token, and its whole cost is taken, which may leave the bucket in debt (at most
    /// one burst deep). Debt rather than refusal, so a document larger than the burst
    /// still runs, once, and the caller then waits until it is repaid.
    pub fn take_for(&self, caller: &Caller, bytes: usize) -> Result<(), Duration> {
        self.counted(self.take_at(caller, cost_of(bytes), Instant::now()))
    }

    fn counted(&self, taken: Result<(), Duration>) -> Result<(), Duration> {
        if taken.is_err()
            && let Some(refused) = &self.refused
        {
            refused.inc();
        }
        taken
    }

    /// Charges the size of a request body once it has been read, after `take` let the
    /// request in (a body's length is known only then when it is chunked).
    pub fn charge_body(&self, caller: &Caller, bytes: usize) {
        let extra = cost_of(bytes) - 1.0;
        if extra > 0.0 {
            // Never refused: the request was let in; the debt delays the next one.
            self.debit_at(caller, extra, Instant::now());
        }
    }

    fn take_at(&self, caller: &Caller, cost: f64, now: Instant) -> Result<(), Duration> {
        let burst = self.burst;
        self.with_bucket(caller, now, |bucket| {
            if bucket.tokens >= 1.0 {
                bucket.tokens = (bucket.tokens - cost).max(-burst);
                Ok(())
            } else {
                Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_second))
            }
        })
        .unwrap_or(Ok(()))
    }

    fn debit_at(&self, caller: &Caller, cost: f64, now: Instant) {
        let burst = self.burst;
        self.with_bucket(caller, now, |bucket| bucket.tokens = (bucket.tokens - cost).max(-burst));
    }

    /// Runs `f` on the caller's bucket, refilled up to `now`; None when the caller is
    /// not limited.
    fn with_bucket<R>(&self, caller: &Caller, now: Instant, f: impl FnOnce(&mut Bucket) -> R) -> Option<R> {
        if !(self.per_second > 0.0 && self.per_second.is_finite()) || *caller == Caller::Trusted {
            return None;
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
        Some(f(bucket))
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

/// What a request or websocket message costs in tokens: one, plus one per whole KiB of
/// its body. Parsing and validating a document takes time in proportion to its length
/// (thousands of aliased fields take tens of milliseconds to refuse), so a caller's
/// share of the CPU is bounded by bytes as well as by requests. The operations clients
/// generate are a few hundred bytes to a few KiB: one to a few tokens.
pub fn cost_of(bytes: usize) -> f64 {
    1.0 + (bytes / 1024) as f64
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
            assert_eq!(limiter.take_at(&alice, 1.0, start), Ok(()));
        }
        let wait = limiter.take_at(&alice, 1.0, start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(retry_after_seconds(wait), 1);
        // Others are unaffected.
        assert_eq!(limiter.take_at(&subject("bob"), 1.0, start), Ok(()));
        // Half a second later one token is back, and only one.
        let later = start + Duration::from_millis(500);
        assert_eq!(limiter.take_at(&alice, 1.0, later), Ok(()));
        assert!(limiter.take_at(&alice, 1.0, later).is_err());
    }

    #[test]
    fn large_documents_cost_by_size_and_leave_debt() {
        assert_eq!(cost_of(0), 1.0);
        assert_eq!(cost_of(1023), 1.0);
        assert_eq!(cost_of(60 * 1024), 61.0);
        let limiter = RateLimiter::new(10.0, 20.0);
        let start = Instant::now();
        let alice = subject("alice");
        // A document larger than the burst still runs once, leaving the bucket in debt
        // (bounded at one burst), and the caller waits until it is repaid.
        assert_eq!(limiter.take_at(&alice, cost_of(100 * 1024), start), Ok(()));
        let wait = limiter.take_at(&alice, 1.0, start).unwrap_err();
        assert_eq!(wait, Duration::from_secs_f64(2.1));
        assert!(limiter.take_at(&alice, 1.0, start + Duration::from_secs(2)).is_err());
        assert_eq!(limiter.take_at(&alice, 1.0, start + Duration::from_millis(2200)), Ok(()));
        // A body charged once read is taken even from an empty bucket.
        let bob = subject("bob");
        assert_eq!(limiter.take_at(&bob, 20.0, start), Ok(()));
        limiter.debit_at(&bob, 5.0, start);
        assert_eq!(limiter.take_at(&bob, 1.0, start).unwrap_err(), Duration::from_millis(600));
    }

    #[test]
    fn trusted_callers_are_never_limited() {
        let limiter = RateLimiter::new(1.0, 1.0);
        let now = Instant::now();
        for _ in 0..100 {
            assert_eq!(limiter.take_at(&Caller::Trusted, 1.0, now), Ok(()));
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
            assert_eq!(limiter.take_at(&subject("alice"), 1.0, now), Ok(()));
        }
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn the_map_stays_bounded() {
        let limiter = RateLimiter::new(1.0, 2.0);
        let start = Instant::now();
        for i in 0..MAX_CALLERS {
            assert_eq!(limiter.take_at(&subject(&i.to_string()), 1.0, start), Ok(()));
        }
        assert_eq!(limiter.tracked(), MAX_CALLERS);
        // Once they have refilled, a new caller prunes them.
        let later = start + Duration::from_secs(5);
        assert_eq!(limiter.take_at(&subject("late"), 1.0, later), Ok(()));
        assert_eq!(limiter.tracked(), 1, "idle callers are forgotten");
        // When every tracked caller is busy, the map starts over instead of growing.
        for i in 0..MAX_CALLERS - 1 {
            assert_eq!(limiter.take_at(&subject(&i.to_string()), 1.0, later), Ok(()));
        }
        assert_eq!(limiter.tracked(), MAX_CALLERS);
        assert_eq!(limiter.take_at(&subject("one more"), 1.0, later), Ok(()));
        assert_eq!(limiter.tracked(), 1);
    }
}
