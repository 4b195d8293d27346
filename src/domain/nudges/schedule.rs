//! When a rule is due for an enrollment, and whether it still holds when it is sent.
//!
//! Every rule measures from an anchor in the enrollment (enrollment, last activity, the
//! moment a step became available). Progress moves the anchor, so an occurrence is
//! identified by (anchor, number): a reminder due before progress is a different
//! occurrence from one due after, and one that no longer holds is simply never sent.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{NudgeRule, NudgeTrigger};
use crate::domain::condition::Facts;
use crate::domain::flow::FlowDefinition;
use crate::domain::progress::{self, Enrollment, EnrollmentStatus};

/// One occurrence of a rule: the `number`th reminder measured from `anchor`, due `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Due {
    pub anchor: DateTime<Utc>,
    pub number: u32,
    pub at: DateTime<Utc>,
}

/// The anchor the rule measures from in this enrollment; None when it does not apply
/// (the flow is finished or dismissed, the condition fails, the trigger's state is not
/// there).
fn anchor(
    rule: &NudgeRule,
    flow: &FlowDefinition,
    attributes: &Value,
    enrollment: &Enrollment,
) -> Option<DateTime<Utc>> {
    if enrollment.status != EnrollmentStatus::InProgress {
        return None;
    }
    let facts = Facts { attributes, answers: &enrollment.steps };
    if !rule.condition.as_ref().is_none_or(|c| c.evaluate(&facts)) {
        return None;
    }
    let started = enrollment.steps.values().any(|s| s.is_touched());
    match &rule.trigger {
        NudgeTrigger::NotStarted { .. } => (!started).then_some(enrollment.started_at),
        NudgeTrigger::NoProgress { .. } => started.then_some(enrollment.last_activity_at),
        NudgeTrigger::Abandoned { .. } => Some(enrollment.last_activity_at),
        NudgeTrigger::Stuck { step, .. } => {
            let view = progress::view(flow, attributes, &enrollment.steps);
            let step = view.steps.iter().find(|s| &s.definition.key == step)?;
            if !step.available || step.status.is_finished() {
                return None;
            }
            step.state.and_then(|s| s.available_at)
        }
    }
}

/// When occurrence `number` (from 1) measured from `anchor` is due; None past the last.
fn occurrence(trigger: &NudgeTrigger, anchor: DateTime<Utc>, number: u32) -> Option<DateTime<Utc>> {
    match trigger {
        NudgeTrigger::NotStarted { after } | NudgeTrigger::Abandoned { after } | NudgeTrigger::Stuck { after, .. } => {
            (number == 1).then(|| anchor + *after)
        }
        NudgeTrigger::NoProgress { after, every, max_count } => {
            (number >= 1 && number <= *max_count).then(|| anchor + *after + *every * (number as i32 - 1))
        }
    }
}

/// The rule's first occurrence from its current anchor, what the write path stores after
/// every change; None when the rule does not apply.
pub fn next_due(rule: &NudgeRule, flow: &FlowDefinition, attributes: &Value, enrollment: &Enrollment) -> Option<Due> {
    let anchor = anchor(rule, flow, attributes, enrollment)?;
    Some(Due { anchor, number: 1, at: occurrence(&rule.trigger, anchor, 1)? })
}

/// At send time: the occurrence is still meant (same anchor: no progress since, the
/// flow still open, the condition still true).
pub fn holds(rule: &NudgeRule, flow: &FlowDefinition, attributes: &Value, enrollment: &Enrollment, due: &Due) -> bool {
    anchor(rule, flow, attributes, enrollment) == Some(due.anchor)
}

/// The occurrence after `due`, if the rule repeats.
pub fn following(rule: &NudgeRule, due: &Due) -> Option<Due> {
    let number = due.number.checked_add(1)?;
    Some(Due { anchor: due.anchor, number, at: occurrence(&rule.trigger, due.anchor, number)? })
}

/// After downtime several occurrences may be past due: only the latest one due by `now`
/// is sent, never a burst. `due` itself when it is the only one.
pub fn catch_up(rule: &NudgeRule, due: Due, now: DateTime<Utc>) -> Due {
    let mut latest = due;
    while let Some(next) = following(rule, &latest) {
        if next.at > now {
            break;
        }
        latest = next;
    }
    latest
}

/// What the write path stores for an enrollment after a change: each rule of its flow,
/// with its first occurrence from the current anchor, or None when it does not apply.
pub fn schedule_for<'f>(
    flow: &'f FlowDefinition,
    attributes: &Value,
    enrollment: &Enrollment,
) -> Vec<(&'f str, Option<Due>)> {
    flow.nudges.rules.iter().map(|r| (r.key.as_str(), next_due(r, flow, attributes, enrollment))).collect()
}
