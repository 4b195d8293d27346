//! Where a subject stands in a flow, and how commands move it: applicability, dependency
//! gating, counts, the next step, completion. Everything is derived from the flow
//! definition, the subject's attributes and the recorded step states, so a view is never
//! stale and never stored.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::condition::Facts;
use super::flow::{FlowDefinition, StepDefinition, names};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepStatus {
    Pending,
    InProgress,
    Completed,
    Skipped,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnrollmentStatus {
    InProgress,
    Completed,
    Skipped,
}

/// Who recorded a step change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    User,
    Event,
    Admin,
}

names!(StepStatus { Pending => "PENDING", InProgress => "IN_PROGRESS", Completed => "COMPLETED", Skipped => "SKIPPED" });
names!(EnrollmentStatus { InProgress => "IN_PROGRESS", Completed => "COMPLETED", Skipped => "SKIPPED" });
names!(Source { User => "USER", Event => "EVENT", Admin => "ADMIN" });

impl StepStatus {
    /// Finished steps no longer need the subject's attention.
    pub fn is_finished(self) -> bool {
        matches!(self, StepStatus::Completed | StepStatus::Skipped)
    }
}

/// The recorded state of one step. A step with no record is PENDING.
#[derive(Clone, Debug, PartialEq)]
pub struct StepState {
    pub status: StepStatus,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub skipped_at: Option<DateTime<Utc>>,
    pub skip_reason: Option<String>,
    pub metadata: Option<Value>,
    pub source: Source,
    /// The product event that completed the step, when one did.
    pub event_id: Option<String>,
    /// Who finished (completed or skipped) the step: the acting user, or the user who
    /// sent the event. In a workspace, the member; None when unknown.
    pub completed_by: Option<String>,
    /// When the step was first available (every dependency met) to the subject: the
    /// funnel's "reached". None while it never was.
    pub available_at: Option<DateTime<Utc>>,
}

impl StepState {
    pub fn new(status: StepStatus, source: Source) -> Self {
        StepState {
            status,
            started_at: None,
            completed_at: None,
            skipped_at: None,
            skip_reason: None,
            metadata: None,
            source,
            event_id: None,
            completed_by: None,
            available_at: None,
        }
    }

    /// A record for a step that applies but was not acted on yet.
    pub fn untouched() -> Self {
        StepState::new(StepStatus::Pending, Source::User)
    }

    /// Acted on: a record with more than the bookkeeping of `mark_reached`.
    pub fn is_touched(&self) -> bool {
        self.status != StepStatus::Pending || self.started_at.is_some()
    }
}

/// A subject's pass through one flow version.
#[derive(Clone, Debug, PartialEq)]
pub struct Enrollment {
    pub status: EnrollmentStatus,
    pub started_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub skipped_at: Option<DateTime<Utc>>,
    pub last_activity_at: DateTime<Utc>,
    pub points: i64,
    pub revision: i64,
    pub steps: BTreeMap<String, StepState>,
}

impl Enrollment {
    pub fn new(now: DateTime<Utc>) -> Self {
        Enrollment {
            status: EnrollmentStatus::InProgress,
            started_at: now,
            completed_at: None,
            skipped_at: None,
            last_activity_at: now,
            points: 0,
            revision: 1,
            steps: BTreeMap::new(),
        }
    }

    pub fn step_status(&self, key: &str) -> StepStatus {
        self.steps.get(key).map_or(StepStatus::Pending, |s| s.status)
    }
}

/// One applicable step as the subject sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct StepView<'a> {
    pub definition: &'a StepDefinition,
    pub state: Option<&'a StepState>,
    pub status: StepStatus,
    /// Every dependency is met.
    pub available: bool,
    /// The applicable dependencies not yet met, in dependsOn order.
    pub blocked_by: Vec<String>,
}

/// Progress through a flow, computed from scratch.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgressView<'a> {
    /// Applicable steps only, in display order.
    pub steps: Vec<StepView<'a>>,
    /// Completed required steps over required steps, 0 to 100, rounded down; 100 when
    /// no required step applies.
    pub percent_complete: i32,
    /// Completed steps among the applicable ones (required or not).
    pub completed_count: i32,
    pub total_count: i32,
    /// 1-based position of the next step ("step 2 of 5"); `total_count` when there is no
    /// next step.
    pub position: i32,
    /// Index into `steps` of the first available, unfinished step.
    pub next_step: Option<usize>,
    /// Every applicable required step is completed.
    pub required_done: bool,
}

impl<'a> ProgressView<'a> {
    pub fn next(&self) -> Option<&StepView<'a>> {
        self.next_step.map(|i| &self.steps[i])
    }
}

/// Which steps apply: a step applies when its condition holds on the subject's current
/// attributes and the answers recorded so far.
fn applicability(flow: &FlowDefinition, attributes: &Value, steps: &BTreeMap<String, StepState>) -> Vec<bool> {
    let facts = Facts { attributes, answers: steps };
    flow.steps.iter().map(|s| s.condition.as_ref().is_none_or(|c| c.evaluate(&facts))).collect()
}

/// Computes where the subject stands. A dependency is met when it is completed or
/// skipped (skipping is the subject's answer to an optional step, and must not lock
/// what comes after it forever), or when it does not apply to the subject at all.
pub fn view<'a>(
    flow: &'a FlowDefinition,
    attributes: &Value,
    steps: &'a BTreeMap<String, StepState>,
) -> ProgressView<'a> {
    let applies = applicability(flow, attributes, steps);
    let applies_by_key: BTreeMap<&str, bool> =
        flow.steps.iter().zip(&applies).map(|(s, a)| (s.key.as_str(), *a)).collect();
    let status_of = |key: &str| steps.get(key).map_or(StepStatus::Pending, |s| s.status);

    let views: Vec<StepView<'a>> = flow
        .steps
        .iter()
        .zip(&applies)
        .filter(|(_, applies)| **applies)
        .map(|(def, _)| {
            let blocked_by: Vec<String> = def
                .depends_on
                .iter()
                .filter(|d| applies_by_key.get(d.as_str()).copied().unwrap_or(false) && !status_of(d).is_finished())
                .cloned()
                .collect();
            StepView {
                definition: def,
                state: steps.get(&def.key),
                status: status_of(&def.key),
                available: blocked_by.is_empty(),
                blocked_by,
            }
        })
        .collect();

    let required: Vec<&StepView> = views.iter().filter(|v| v.definition.required).collect();
    let required_completed = required.iter().filter(|v| v.status == StepStatus::Completed).count();
    let percent_complete = if required.is_empty() { 100 } else { (required_completed * 100 / required.len()) as i32 };
    let completed_count = views.iter().filter(|v| v.status == StepStatus::Completed).count() as i32;
    let total_count = views.len() as i32;
    let next_step = views.iter().position(|v| v.available && !v.status.is_finished());
    ProgressView {
        percent_complete,
        completed_count,
        total_count,
        position: next_step.map_or(total_count, |i| i as i32 + 1),
        next_step,
        required_done: required_completed == required.len(),
        steps: views,
    }
}

/// What a subject (or an admin, or an event) asks to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Enroll, or resume a dismissed flow.
    Start,
    StartStep {
        step: String,
    },
    CompleteStep {
        step: String,
        metadata: Option<Value>,
    },
    SkipStep {
        step: String,
        reason: Option<String>,
    },
    /// Dismiss the whole flow.
    SkipFlow,
    /// Nothing asked: re-derive completion after the subject's attributes changed.
    Reconcile,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProgressError {
    #[error("the flow has no step `{}`", super::limits::shorten(.0))]
    StepNotFound(String),
    #[error("step `{0}` does not apply to this subject")]
    StepNotApplicable(String),
    #[error("step `{step}` is locked until {} {} finished", blocked_by.join(", "), if blocked_by.len() == 1 { "is" } else { "are" })]
    StepLocked { step: String, blocked_by: Vec<String> },
    #[error("step `{0}` cannot be skipped")]
    StepNotSkippable(String),
    #[error("step `{0}` is already completed and cannot be skipped")]
    StepAlreadyCompleted(String),
    #[error("the flow is already completed and cannot be skipped")]
    FlowAlreadyCompleted,
}

/// What a command did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Anything changed; the revision was bumped.
    pub changed: bool,
    /// Steps whose state changed, to be saved.
    pub changed_steps: Vec<String>,
    pub points_awarded: i64,
    /// The enrollment became COMPLETED by this command.
    pub completed: bool,
}

impl Outcome {
    /// Adds what a later change in the same use case did (a settle after a command).
    pub fn absorb(&mut self, later: Outcome) {
        self.changed |= later.changed;
        self.completed |= later.completed;
        self.points_awarded = self.points_awarded.saturating_add(later.points_awarded);
        self.changed_steps.extend(later.changed_steps);
    }
}

/// Keeps a record of every step that applies, from the moment it applies, stamped with
/// when it first became available: what analytics count as "applied" and "reached".
/// Returns the steps whose record is new or newly stamped. A step finished before it was
/// stamped (data from before stamping existed) counts as reached when it was first acted on.
pub fn mark_reached(
    flow: &FlowDefinition,
    attributes: &Value,
    enrollment: &mut Enrollment,
    now: DateTime<Utc>,
) -> Vec<String> {
    let due: Vec<(String, bool)> = view(flow, attributes, &enrollment.steps)
        .steps
        .iter()
        .filter(|s| s.state.is_none() || (s.available && s.state.is_some_and(|st| st.available_at.is_none())))
        .map(|s| (s.definition.key.clone(), s.available))
        .collect();
    for (key, available) in &due {
        let state = enrollment.steps.entry(key.clone()).or_insert_with(StepState::untouched);
        if *available {
            let first_acted = [state.started_at, state.completed_at, state.skipped_at].into_iter().flatten().min();
            state.available_at = Some(first_acted.map_or(now, |t| t.min(now)));
        }
    }
    due.into_iter().map(|(key, _)| key).collect()
}

/// Records who finished the given steps (those now completed or skipped): the user who
/// acted, which in a workspace is the member. Called with the steps a command changed.
pub fn credit(enrollment: &mut Enrollment, steps: &[String], actor: &str) {
    for key in steps {
        if let Some(state) = enrollment.steps.get_mut(key)
            && state.status.is_finished()
        {
            state.completed_by = Some(actor.to_string());
        }
    }
}

/// Applies a command to an enrollment. On success the enrollment is updated in place and
/// the revision bumped when anything changed; on error it is left untouched. Repeating a
/// command that already took effect changes nothing: no points, no new revision.
pub fn apply(
    flow: &FlowDefinition,
    attributes: &Value,
    enrollment: &mut Enrollment,
    command: Command,
    source: Source,
    now: DateTime<Utc>,
) -> Result<Outcome, ProgressError> {
    let mut outcome = Outcome::default();
    match command {
        Command::Start => {
            if enrollment.status == EnrollmentStatus::Skipped {
                resume(enrollment);
                outcome.changed = true;
            }
        }
        Command::Reconcile => {}
        Command::SkipFlow => {
            if enrollment.status == EnrollmentStatus::Completed {
                return Err(ProgressError::FlowAlreadyCompleted);
            }
            if enrollment.status == EnrollmentStatus::InProgress {
                enrollment.status = EnrollmentStatus::Skipped;
                enrollment.skipped_at = Some(now);
                outcome.changed = true;
            }
        }
        Command::StartStep { step } => {
            let def = check_step(flow, attributes, enrollment, &step, false)?;
            let state = step_entry(enrollment, def, source);
            if matches!(state.status, StepStatus::Pending | StepStatus::Skipped) {
                state.status = StepStatus::InProgress;
                state.started_at.get_or_insert(now);
                state.skipped_at = None;
                state.skip_reason = None;
                state.source = source;
                state.completed_by = None;
                touch_step(enrollment, &mut outcome, step);
            }
        }
        Command::CompleteStep { step, metadata } => {
            let def = check_step(flow, attributes, enrollment, &step, false)?;
            let points = def.points;
            let state = step_entry(enrollment, def, source);
            if state.status != StepStatus::Completed {
                state.status = StepStatus::Completed;
                state.started_at.get_or_insert(now);
                state.completed_at = Some(now);
                state.skipped_at = None;
                state.skip_reason = None;
                if metadata.is_some() {
                    state.metadata = metadata;
                }
                state.source = source;
                state.event_id = None;
                state.completed_by = None;
                // Points per step are bounded at publish; the sum still cannot wrap.
                enrollment.points = enrollment.points.saturating_add(points);
                outcome.points_awarded = points;
                touch_step(enrollment, &mut outcome, step);
            }
        }
        Command::SkipStep { step, reason } => {
            let def = check_step(flow, attributes, enrollment, &step, true)?;
            if enrollment.step_status(&step) == StepStatus::Completed {
                return Err(ProgressError::StepAlreadyCompleted(step));
            }
            let state = step_entry(enrollment, def, source);
            if state.status != StepStatus::Skipped {
                state.status = StepStatus::Skipped;
                state.skipped_at = Some(now);
                state.skip_reason = reason;
                state.source = source;
                state.completed_by = None;
                touch_step(enrollment, &mut outcome, step);
            }
        }
    }

    // Completion is derived, whatever the command: the last required step, an attribute
    // change that removed one, or a step done in a dismissed flow (which resumes it) can
    // all complete it. A dismissed flow stays dismissed until the subject comes back, so
    // a flow is never both skipped and completed. Completion happens once: completed_at
    // never moves afterwards.
    if enrollment.status == EnrollmentStatus::InProgress && view(flow, attributes, &enrollment.steps).required_done {
        enrollment.status = EnrollmentStatus::Completed;
        enrollment.completed_at = Some(now);
        outcome.completed = true;
        outcome.changed = true;
    }
    if outcome.changed {
        enrollment.revision += 1;
        enrollment.last_activity_at = now;
    }
    Ok(outcome)
}

/// The subject's attributes changed. What applies may differ, so the snapshot is new
/// (the revision moves) and completion is re-derived; it is not the subject's activity.
pub fn attributes_changed(
    flow: &FlowDefinition,
    attributes: &Value,
    enrollment: &mut Enrollment,
    now: DateTime<Utc>,
) -> Outcome {
    let last_activity_at = enrollment.last_activity_at;
    // Reconcile touches no step, so it cannot fail.
    let mut outcome = apply(flow, attributes, enrollment, Command::Reconcile, Source::Admin, now).unwrap_or_default();
    if !outcome.changed {
        enrollment.revision += 1;
        outcome.changed = true;
    }
    enrollment.last_activity_at = last_activity_at;
    outcome
}

/// Work on a step of a dismissed flow brings the subject back into it.
fn resume(enrollment: &mut Enrollment) {
    enrollment.status = EnrollmentStatus::InProgress;
    enrollment.skipped_at = None;
}

fn touch_step(enrollment: &mut Enrollment, outcome: &mut Outcome, step: String) {
    if enrollment.status == EnrollmentStatus::Skipped {
        resume(enrollment);
    }
    outcome.changed = true;
    outcome.changed_steps.push(step);
}

fn step_entry<'e>(enrollment: &'e mut Enrollment, def: &StepDefinition, source: Source) -> &'e mut StepState {
    enrollment.steps.entry(def.key.clone()).or_insert_with(|| StepState::new(StepStatus::Pending, source))
}

/// The checks every step command makes, in the order a client can act on them.
fn check_step<'f>(
    flow: &'f FlowDefinition,
    attributes: &Value,
    enrollment: &Enrollment,
    key: &str,
    skipping: bool,
) -> Result<&'f StepDefinition, ProgressError> {
    let def = flow.step(key).ok_or_else(|| ProgressError::StepNotFound(key.to_string()))?;
    let progress = view(flow, attributes, &enrollment.steps);
    let Some(step) = progress.steps.iter().find(|v| v.definition.key == key) else {
        return Err(ProgressError::StepNotApplicable(key.to_string()));
    };
    if skipping && !def.skippable && enrollment.step_status(key) != StepStatus::Skipped {
        return Err(ProgressError::StepNotSkippable(key.to_string()));
    }
    // A step already done stays done: repeating the command is not an error even if an
    // attribute change has since locked the step again.
    if !step.available && !step.status.is_finished() {
        return Err(ProgressError::StepLocked { step: key.to_string(), blocked_by: step.blocked_by.clone() });
    }
    Ok(def)
}

#[cfg(test)]
#[path = "progress_tests.rs"]
mod tests;
