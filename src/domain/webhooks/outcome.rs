//! What one attempt means for its delivery (done, try again when, give up) and for its
//! endpoint (healthy, failing since when, disabled and why).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::retry::RetrySchedule;

/// A delivery's state. Names are stored upper-case in the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// Not attempted yet (or queued again by redeliver or replay).
    Pending,
    /// Claimed by a dispatcher, which holds it until its lease runs out.
    Sending,
    /// The last attempt failed; the next one is scheduled.
    Failed,
    Succeeded,
    /// Every attempt of the schedule failed, or the endpoint is gone (410).
    Dead,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 5] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Sending,
        DeliveryStatus::Failed,
        DeliveryStatus::Succeeded,
        DeliveryStatus::Dead,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "PENDING",
            DeliveryStatus::Sending => "SENDING",
            DeliveryStatus::Failed => "FAILED",
            DeliveryStatus::Succeeded => "SUCCEEDED",
            DeliveryStatus::Dead => "DEAD",
        }
    }

    pub fn parse(name: &str) -> Option<DeliveryStatus> {
        DeliveryStatus::ALL.into_iter().find(|s| s.name() == name)
    }

    /// No dispatcher will touch it again unless an admin asks.
    pub fn is_final(self) -> bool {
        matches!(self, DeliveryStatus::Succeeded | DeliveryStatus::Dead)
    }
}

/// What an attempt got back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    /// The receiver answered (any status: redirects are not followed).
    Answered { status: u16, retry_after: Option<Duration> },
    /// No answer: refused connection, refused address, TLS failure, timeout.
    NoAnswer,
}

/// The rules a dispatcher follows, from configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryPolicy {
    pub schedule: RetrySchedule,
    /// An endpoint that has failed every attempt for this long is disabled.
    pub disable_after: Duration,
    /// The longest `Retry-After` honoured: a receiver cannot park a delivery for a year.
    pub max_retry_after: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            schedule: RetrySchedule::default(),
            disable_after: Duration::from_secs(5 * 24 * 3600),
            max_retry_after: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointChange {
    /// It answered 2xx: whatever failing streak it had is over.
    Healthy,
    /// It failed; `since` is the start of its failing streak.
    Failing { since: DateTime<Utc> },
    /// Stop sending to it until an admin enables it again.
    Disable { reason: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub status: DeliveryStatus,
    /// When the next attempt is due (for FAILED).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub endpoint: EndpointChange,
}

/// Decides after attempt number `made` (1-based) of a delivery, at `now`. `failing_since`
/// is the endpoint's streak before this attempt; `seed` draws the jitter.
pub fn decide(
    policy: &DeliveryPolicy,
    result: &AttemptResult,
    made: u32,
    failing_since: Option<DateTime<Utc>>,
    seed: u64,
    now: DateTime<Utc>,
) -> Decision {
    let retry_after = match result {
        AttemptResult::Answered { status, .. } if (200..300).contains(status) => {
            return Decision {
                status: DeliveryStatus::Succeeded,
                next_attempt_at: None,
                endpoint: EndpointChange::Healthy,
            };
        }
        AttemptResult::Answered { status: 410, .. } => {
            return Decision {
                status: DeliveryStatus::Dead,
                next_attempt_at: None,
                endpoint: EndpointChange::Disable { reason: "the endpoint answered 410 Gone".into() },
            };
        }
        // Only these two statuses carry a Retry-After that is about when to come back.
        AttemptResult::Answered { status: 429 | 503, retry_after } => *retry_after,
        _ => None,
    };
    let since = failing_since.unwrap_or(now);
    let failing_for = (now - since).to_std().unwrap_or_default();
    let endpoint = if failing_for >= policy.disable_after {
        EndpointChange::Disable {
            reason: format!("every attempt failed since {}", since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        }
    } else {
        EndpointChange::Failing { since }
    };
    let Some(delay) = policy.schedule.delay_after(made, seed) else {
        return Decision { status: DeliveryStatus::Dead, next_attempt_at: None, endpoint };
    };
    let delay = delay.max(retry_after.unwrap_or_default().min(policy.max_retry_after));
    let next = chrono::Duration::from_std(delay).map_or(now, |d| now + d);
    Decision { status: DeliveryStatus::Failed, next_attempt_at: Some(next), endpoint }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap()
    }

    fn answered(status: u16) -> AttemptResult {
        AttemptResult::Answered { status, retry_after: None }
    }

    fn policy(delays: &[u64]) -> DeliveryPolicy {
        DeliveryPolicy {
            schedule: RetrySchedule::new(delays.iter().map(|s| Duration::from_secs(*s)).collect()).unwrap(),
            ..DeliveryPolicy::default()
        }
    }

    #[test]
    fn a_2xx_succeeds_and_ends_a_failing_streak() {
        let since = now() - chrono::Duration::hours(3);
        for status in [200, 201, 204, 299] {
            let d = decide(&DeliveryPolicy::default(), &answered(status), 3, Some(since), 1, now());
            assert_eq!(d.status, DeliveryStatus::Succeeded);
            assert_eq!(d.endpoint, EndpointChange::Healthy);
            assert_eq!(d.next_attempt_at, None);
        }
    }

    #[test]
    fn failures_retry_on_the_schedule_until_it_is_spent() {
        let p = policy(&[0, 10, 60]);
        for result in [answered(500), answered(301), answered(404), AttemptResult::NoAnswer] {
            let first = decide(&p, &result, 1, None, 7, now());
            assert_eq!(first.status, DeliveryStatus::Failed, "{result:?}");
            let wait = (first.next_attempt_at.unwrap() - now()).to_std().unwrap();
            assert!((Duration::from_secs(9)..=Duration::from_secs(11)).contains(&wait), "{wait:?}");
            assert_eq!(first.endpoint, EndpointChange::Failing { since: now() }, "a streak starts now");
            assert_eq!(decide(&p, &result, 2, Some(now()), 7, now()).status, DeliveryStatus::Failed);
            let last = decide(&p, &result, 3, Some(now()), 7, now());
            assert_eq!(last.status, DeliveryStatus::Dead);
            assert_eq!(last.next_attempt_at, None);
        }
    }

    #[test]
    fn gone_disables_the_endpoint_at_once() {
        let d = decide(&DeliveryPolicy::default(), &answered(410), 1, None, 1, now());
        assert_eq!(d.status, DeliveryStatus::Dead);
        assert!(matches!(d.endpoint, EndpointChange::Disable { .. }));
    }

    #[test]
    fn retry_after_stretches_the_wait_on_429_and_503_only_and_is_capped() {
        let p = policy(&[0, 5, 5]);
        let hour = Some(Duration::from_secs(3600));
        for status in [429, 503] {
            let d = decide(&p, &AttemptResult::Answered { status, retry_after: hour }, 1, None, 1, now());
            assert_eq!(d.next_attempt_at, Some(now() + chrono::Duration::hours(1)));
            let year = Some(Duration::from_secs(365 * 24 * 3600));
            let d = decide(&p, &AttemptResult::Answered { status, retry_after: year }, 1, None, 1, now());
            assert_eq!(d.next_attempt_at, Some(now() + chrono::Duration::hours(24)), "capped");
            // A shorter Retry-After than the schedule's delay is honoured by the schedule.
            let soon = Some(Duration::from_secs(1));
            let d = decide(&p, &AttemptResult::Answered { status, retry_after: soon }, 1, None, 1, now());
            assert!(d.next_attempt_at.unwrap() >= now() + chrono::Duration::milliseconds(4500));
        }
        let d = decide(&p, &AttemptResult::Answered { status: 500, retry_after: hour }, 1, None, 1, now());
        assert!(d.next_attempt_at.unwrap() < now() + chrono::Duration::seconds(6), "500 ignores Retry-After");
    }

    #[test]
    fn an_endpoint_failing_for_the_configured_time_is_disabled() {
        let p = DeliveryPolicy { disable_after: Duration::from_secs(3600), ..DeliveryPolicy::default() };
        let recent = now() - chrono::Duration::minutes(59);
        let d = decide(&p, &answered(500), 2, Some(recent), 1, now());
        assert_eq!(d.endpoint, EndpointChange::Failing { since: recent });
        let old = now() - chrono::Duration::minutes(60);
        let d = decide(&p, &answered(500), 2, Some(old), 1, now());
        assert!(matches!(d.endpoint, EndpointChange::Disable { .. }), "{d:?}");
        assert_eq!(d.status, DeliveryStatus::Failed, "the delivery keeps its schedule for when it is enabled again");
    }

    #[test]
    fn status_names_round_trip() {
        for status in DeliveryStatus::ALL {
            assert_eq!(DeliveryStatus::parse(status.name()), Some(status));
        }
        assert_eq!(DeliveryStatus::parse("pending"), None);
    }
}
