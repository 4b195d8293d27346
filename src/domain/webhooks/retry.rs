//! When a failed delivery is tried again: a fixed schedule, spread by jitter so that the
//! deliveries of one outage do not all come back in the same second, and stretched by
//! the receiver's `Retry-After`.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Delays before each attempt, the first included (zero: send at once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

/// Jitter moves a delay by up to this fraction either way.
const JITTER: f64 = 0.1;

impl Default for RetrySchedule {
    /// Immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: eight attempts over about
    /// 28 hours, so a receiver down for a day still gets everything.
    fn default() -> Self {
        let s = Duration::from_secs;
        RetrySchedule { delays: vec![s(0), s(5), s(300), s(1800), s(7200), s(18_000), s(36_000), s(36_000)] }
    }
}

impl RetrySchedule {
    /// A schedule of at least one attempt.
    pub fn new(delays: Vec<Duration>) -> Result<RetrySchedule, String> {
        if delays.is_empty() {
            return Err("a retry schedule has at least one attempt".into());
        }
        Ok(RetrySchedule { delays })
    }

    /// Parses seconds separated by commas (`0,5,300`), fractions allowed.
    pub fn parse(text: &str) -> Result<RetrySchedule, String> {
        let delays = text
            .split(',')
            .map(|part| {
                let seconds: f64 =
                    part.trim().parse().map_err(|_| format!("`{}` is not a number of seconds", part.trim()))?;
                Duration::try_from_secs_f64(seconds).map_err(|_| format!("`{}` is not a delay", part.trim()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        RetrySchedule::new(delays)
    }

    /// Attempts in all.
    pub fn attempts(&self) -> u32 {
        u32::try_from(self.delays.len()).unwrap_or(u32::MAX)
    }

    /// How long after the attempt numbered `made` (1-based) the next one is due, with
    /// jitter drawn from `seed`; None when the schedule is spent. The same seed and
    /// attempt always give the same delay, so tests can check it.
    pub fn delay_after(&self, made: u32, seed: u64) -> Option<Duration> {
        let base = *self.delays.get(made as usize)?;
        Some(jittered(base, seed, made))
    }
}

/// `base` moved by up to ±10 %, deterministically in (seed, attempt).
pub fn jittered(base: Duration, seed: u64, attempt: u32) -> Duration {
    if base.is_zero() {
        return base;
    }
    // A uniform draw in [0, 1) from the top 53 bits of a well-mixed hash.
    let unit =
        (splitmix64(seed ^ u64::from(attempt).wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 11) as f64 / (1u64 << 53) as f64;
    base.mul_f64(1.0 - JITTER + 2.0 * JITTER * unit)
}

/// The bounds `jittered` stays within, for tests and for documentation.
pub fn jitter_bounds(base: Duration) -> (Duration, Duration) {
    (base.mul_f64(1.0 - JITTER), base.mul_f64(1.0 + JITTER))
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A `Retry-After` header value: seconds, or an HTTP date (then counted from `now`).
/// Anything else is ignored, as is a date in the past.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    (at - now).to_std().ok()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn the_default_schedule_is_the_documented_one() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.attempts(), 8);
        assert_eq!(schedule.delay_after(0, 1), Some(Duration::ZERO), "the first attempt is immediate");
        let expected = [5, 300, 1800, 7200, 18_000, 36_000, 36_000];
        for (made, seconds) in (1..).zip(expected) {
            let (low, high) = jitter_bounds(Duration::from_secs(seconds));
            for seed in 0..200 {
                let delay = schedule.delay_after(made, seed).unwrap();
                assert!(low <= delay && delay <= high, "attempt {made}, seed {seed}: {delay:?}");
            }
        }
        assert_eq!(schedule.delay_after(8, 1), None, "eight attempts, then no more");
    }

    #[test]
    fn jitter_is_deterministic_and_spreads() {
        let base = Duration::from_secs(300);
        assert_eq!(jittered(base, 42, 3), jittered(base, 42, 3));
        let draws: std::collections::BTreeSet<Duration> = (0..100).map(|seed| jittered(base, seed, 3)).collect();
        assert!(draws.len() > 90, "seeds give different delays");
        let (low, high) = jitter_bounds(base);
        assert!(draws.iter().any(|d| *d < base.mul_f64(0.95)) && draws.iter().any(|d| *d > base.mul_f64(1.05)));
        assert!(draws.iter().all(|d| low <= *d && *d <= high));
    }

    #[test]
    fn schedules_parse_from_seconds() {
        let schedule = RetrySchedule::parse("0, 0.1,2").unwrap();
        assert_eq!(schedule.attempts(), 3);
        assert_eq!(schedule.delays, [Duration::ZERO, Duration::from_millis(100), Duration::from_secs(2)]);
        assert!(RetrySchedule::parse("").is_err());
        assert!(RetrySchedule::parse("1,x").is_err());
        assert!(RetrySchedule::parse("-1").is_err());
    }

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let now = Utc.with_ymd_and_hms(2015, 10, 21, 7, 27, 0).unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), None, "in the past");
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
