//! Lift of a nudge rule: completion within a window after the nudge, for subjects nudged
//! against subjects held out, with the experiments' statistics.

use chrono::{DateTime, Duration, Utc};

use crate::domain::stats::{self, Interval, Proportion, ZTest};

/// One enrollment whose occurrence of a rule came due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unit {
    /// In the rule's holdout (by the hash), whatever the scheduler then did.
    pub held_out: bool,
    /// When the scheduler first decided about it.
    pub at: DateTime<Utc>,
    /// When the enrollment completed, if it has.
    pub completed_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RuleResult {
    /// Completions within the window out of enrollments nudged.
    pub sent: Proportion,
    /// The same for enrollments held out (the control).
    pub held_out: Proportion,
    pub sent_interval: Option<Interval>,
    pub held_out_interval: Option<Interval>,
    /// Sent against held out; None when undefined (an empty group, no variance).
    pub test: Option<ZTest>,
    /// Sent rate minus held-out rate.
    pub lift: Option<f64>,
    pub warning: Option<String>,
}

/// Completion within `window` of the nudge, sent against held out.
pub fn rule_result(units: &[Unit], window: Duration) -> RuleResult {
    let count = |held_out: bool| {
        let group = units.iter().filter(|u| u.held_out == held_out);
        Proportion {
            trials: group.clone().count() as i64,
            successes: group.filter(|u| u.completed_at.is_some_and(|c| c >= u.at && c <= u.at + window)).count() as i64,
        }
    };
    let (sent, held_out) = (count(false), count(true));
    let lift = stats::lift(held_out, sent).absolute;
    RuleResult {
        sent,
        held_out,
        sent_interval: stats::wilson_interval(sent, stats::Z_95),
        held_out_interval: stats::wilson_interval(held_out, stats::Z_95),
        test: stats::two_proportion_z_test(held_out, sent),
        lift,
        warning: stats::small_sample_warning(&[("sent", sent), ("held out", held_out)]),
    }
}
