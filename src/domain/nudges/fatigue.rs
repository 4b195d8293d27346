//! One fatigue budget per subject across every flow, quiet hours in the subject's time
//! zone, and holdouts: what the scheduler does with the nudges due for one subject.

use std::cmp::Reverse;

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::Value;

use crate::domain::experiments::hash_point;

/// At most `per_day` nudges in any 24 hours and `per_week` in any 7 days, per subject,
/// across all flows. Zero turns a cap off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    pub per_day: u32,
    pub per_week: u32,
}

impl Default for Caps {
    fn default() -> Self {
        Caps { per_day: 1, per_week: 3 }
    }
}

impl Caps {
    /// Another nudge fits, given the times of the subject's nudges sent so far.
    pub fn allow(&self, sent: &[DateTime<Utc>], now: DateTime<Utc>) -> bool {
        let within = |window: Duration| sent.iter().filter(|t| **t > now - window && **t <= now).count();
        (self.per_day == 0 || within(Duration::hours(24)) < self.per_day as usize)
            && (self.per_week == 0 || within(Duration::days(7)) < self.per_week as usize)
    }

    /// The first instant from `now` at which another nudge fits: `now` when one fits
    /// already, else when enough of the sends counted against each full cap have left its
    /// window. What a nudge the budget holds back waits for.
    pub fn free_at(&self, sent: &[DateTime<Utc>], now: DateTime<Utc>) -> DateTime<Utc> {
        let mut at = now;
        for (cap, window) in [(self.per_day, Duration::hours(24)), (self.per_week, Duration::days(7))] {
            if cap == 0 {
                continue;
            }
            let mut counted: Vec<DateTime<Utc>> =
                sent.iter().copied().filter(|t| *t > now - window && *t <= now).collect();
            if counted.len() < cap as usize {
                continue;
            }
            // Once the oldest `len - cap + 1` have left the window, one more fits.
            counted.sort_unstable();
            at = at.max(counted[counted.len() - cap as usize] + window);
        }
        at
    }
}

/// A daily window, in the subject's local time, in which no nudge goes out: from `start`
/// up to `end` (wrapping past midnight when `end` is earlier).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuietHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl QuietHours {
    /// `HH:MM-HH:MM`, such as `21:00-08:00`.
    pub fn parse(raw: &str) -> Result<QuietHours, String> {
        let bad = || format!("`{raw}` is not a quiet-hours window: use HH:MM-HH:MM, such as 21:00-08:00");
        let (start, end) = raw.split_once('-').ok_or_else(bad)?;
        let time = |s: &str| NaiveTime::parse_from_str(s.trim(), "%H:%M").map_err(|_| bad());
        let (start, end) = (time(start)?, time(end)?);
        if start == end {
            return Err(format!("`{raw}` is an empty window: leave quiet hours unset instead"));
        }
        Ok(QuietHours { start, end })
    }

    fn contains(&self, t: NaiveTime) -> bool {
        if self.start < self.end { t >= self.start && t < self.end } else { t >= self.start || t < self.end }
    }
}

/// The subject's time zone: the IANA name in its `timezone` attribute, UTC when it has
/// none or names no zone.
pub fn time_zone(attributes: &Value) -> Tz {
    attributes.get("timezone").and_then(Value::as_str).and_then(|name| name.parse().ok()).unwrap_or(Tz::UTC)
}

/// When the quiet hours around `now` end, in the subject's zone; None outside them.
pub fn quiet_until(now: DateTime<Utc>, zone: Tz, quiet: Option<QuietHours>) -> Option<DateTime<Utc>> {
    let quiet = quiet?;
    let local = now.with_timezone(&zone);
    if !quiet.contains(local.time()) {
        return None;
    }
    let mut day = local.date_naive();
    if local.time() >= quiet.end {
        day = day.succ_opt()?;
    }
    // The end falls in a gap only when clocks jump over it; the first instant after the
    // gap is then the end (an hour on, in every zone there is).
    let end = day.and_time(quiet.end);
    let resolved = zone
        .from_local_datetime(&end)
        .earliest()
        .or_else(|| zone.from_local_datetime(&(end + Duration::hours(1))).earliest())?;
    Some(resolved.with_timezone(&Utc))
}

/// The subject is held out of the rule: the experiments' hash (`hash_point`) of the
/// experiment key `nudge:<flow key>:<rule key>` and the subject, modulo 100, below the
/// percentage. Stable across instances, with no lookup.
pub fn in_holdout(flow_key: &str, rule_key: &str, subject_id: &str, percent: u8) -> bool {
    percent > 0 && hash_point(&format!("nudge:{flow_key}:{rule_key}"), subject_id) % 100 < u64::from(percent)
}

/// A nudge due for a subject, as the budget sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// The flow's nudge priority: higher wins the budget.
    pub priority: i32,
    pub due_at: DateTime<Utc>,
    pub flow_key: &'a str,
    pub rule_key: &'a str,
    pub held_out: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Send,
    /// Would have been sent; the subject is in the rule's holdout.
    HeldOut,
    /// The budget was spent on nudges that won: due again when it is back (not dropped).
    SuppressedByCap(DateTime<Utc>),
    /// Quiet hours: due again when they end.
    WaitUntil(DateTime<Utc>),
}

/// Decides every nudge due for one subject now, in one go, given the times of the
/// subject's nudges already sent. The decisions come back in the order of `due`. Quiet
/// hours hold everything back; otherwise higher priority goes first (then earlier due,
/// then flow and rule key, so the order is total), each sent while the caps allow, the
/// rest held back until the budget is back. A held-out nudge costs nothing of the budget:
/// it is never sent.
pub fn decide(
    due: &[Candidate<'_>],
    sent: &[DateTime<Utc>],
    caps: Caps,
    quiet_until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<Decision> {
    if let Some(until) = quiet_until {
        return vec![Decision::WaitUntil(until); due.len()];
    }
    let mut order: Vec<usize> = (0..due.len()).collect();
    order.sort_by_key(|&i| (Reverse(due[i].priority), due[i].due_at, due[i].flow_key, due[i].rule_key));
    let mut sent = sent.to_vec();
    let mut decisions = vec![Decision::HeldOut; due.len()];
    for i in order {
        decisions[i] = if due[i].held_out {
            Decision::HeldOut
        } else if caps.allow(&sent, now) {
            sent.push(now);
            Decision::Send
        } else {
            Decision::SuppressedByCap(caps.free_at(&sent, now))
        };
    }
    decisions
}
