//! Domain events: what changed in an enrollment, in the product's words, derived by
//! comparing the state before and after a use case. They go to the outbox in the same
//! transaction as the change.

use super::flow::FlowDefinition;
use super::progress::{Enrollment, EnrollmentStatus, StepStatus};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainEventKind {
    /// The subject was enrolled (not derived by `between`: there is no state before).
    OnboardingStarted,
    StepCompleted,
    StepSkipped,
    OnboardingCompleted,
    OnboardingSkipped,
}

impl DomainEventKind {
    pub fn name(self) -> &'static str {
        match self {
            DomainEventKind::OnboardingStarted => "onboarding_started",
            DomainEventKind::StepCompleted => "step_completed",
            DomainEventKind::StepSkipped => "step_skipped",
            DomainEventKind::OnboardingCompleted => "onboarding_completed",
            DomainEventKind::OnboardingSkipped => "onboarding_skipped",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainEvent {
    pub kind: DomainEventKind,
    /// The step, for step events.
    pub step: Option<String>,
}

/// The domain events between two states of one enrollment: step events in the order the
/// steps changed, then the enrollment's own.
pub fn between(before: &Enrollment, after: &Enrollment, changed_steps: &[String]) -> Vec<DomainEvent> {
    let mut events = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for step in changed_steps {
        if seen.contains(&step.as_str()) {
            continue;
        }
        seen.push(step);
        let (was, is) = (before.step_status(step), after.step_status(step));
        let kind = match is {
            StepStatus::Completed if was != StepStatus::Completed => DomainEventKind::StepCompleted,
            StepStatus::Skipped if was != StepStatus::Skipped => DomainEventKind::StepSkipped,
            _ => continue,
        };
        events.push(DomainEvent { kind, step: Some(step.clone()) });
    }
    let kind = match (before.status, after.status) {
        (b, EnrollmentStatus::Completed) if b != EnrollmentStatus::Completed => {
            Some(DomainEventKind::OnboardingCompleted)
        }
        (b, EnrollmentStatus::Skipped) if b != EnrollmentStatus::Skipped => Some(DomainEventKind::OnboardingSkipped),
        _ => None,
    };
    events.extend(kind.map(|kind| DomainEvent { kind, step: None }));
    events
}

/// A points award: each reason is awarded once per subject (the ledger enforces it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Award {
    /// `onboarding:<flow>:<step>`.
    pub reason: String,
    pub amount: i64,
}

/// What the completions among `events` award: a completed step's points, when it has any.
pub fn awards(flow: &FlowDefinition, events: &[DomainEvent]) -> Vec<Award> {
    events
        .iter()
        .filter_map(|event| match (event.kind, &event.step) {
            (DomainEventKind::StepCompleted, Some(step)) => Some(step),
            _ => None,
        })
        .filter_map(|step| {
            let amount = flow.step(step).map_or(0, |d| d.points);
            (amount > 0).then(|| Award { reason: format!("onboarding:{}:{step}", flow.key), amount })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::domain::{Source, StepState};

    fn with(steps: &[(&str, StepStatus)], status: EnrollmentStatus) -> Enrollment {
        let mut e = Enrollment::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
        e.status = status;
        for (k, s) in steps {
            e.steps.insert(k.to_string(), StepState::new(*s, Source::User));
        }
        e
    }

    #[test]
    fn completions_skips_and_the_enrollment_in_order() {
        let before = with(&[("a", StepStatus::InProgress)], EnrollmentStatus::InProgress);
        let after = with(&[("a", StepStatus::Completed), ("b", StepStatus::Skipped)], EnrollmentStatus::Completed);
        let events = between(&before, &after, &["b".into(), "a".into(), "b".into()]);
        let kinds: Vec<_> = events.iter().map(|e| (e.kind.name(), e.step.as_deref())).collect();
        assert_eq!(kinds, [("step_skipped", Some("b")), ("step_completed", Some("a")), ("onboarding_completed", None)]);
    }

    #[test]
    fn starting_a_step_or_no_change_is_no_event() {
        let before = with(&[], EnrollmentStatus::InProgress);
        let after = with(&[("a", StepStatus::InProgress)], EnrollmentStatus::InProgress);
        assert!(between(&before, &after, &["a".into()]).is_empty());
        assert!(between(&after, &after, &["a".into()]).is_empty());
    }

    #[test]
    fn dismissing_the_flow() {
        let before = with(&[], EnrollmentStatus::InProgress);
        let after = with(&[], EnrollmentStatus::Skipped);
        assert_eq!(
            between(&before, &after, &[]),
            [DomainEvent { kind: DomainEventKind::OnboardingSkipped, step: None }]
        );
    }
}

#[cfg(test)]
mod award_tests {
    use serde_json::json;

    use super::*;
    use crate::domain::parse_flow;

    #[test]
    fn completed_steps_with_points_award_them_under_a_stable_reason() {
        let flow = parse_flow(&json!({"key": "setup", "title": "Setup", "steps": [
            {"key": "a", "title": "A", "points": 5},
            {"key": "b", "title": "B"},
            {"key": "c", "title": "C", "required": false, "skippable": true, "points": 3}
        ]}))
        .unwrap();
        let event = |kind, step: Option<&str>| DomainEvent { kind, step: step.map(str::to_string) };
        let events = [
            event(DomainEventKind::StepCompleted, Some("a")),
            event(DomainEventKind::StepCompleted, Some("b")),
            event(DomainEventKind::StepSkipped, Some("c")),
            event(DomainEventKind::OnboardingCompleted, None),
        ];
        assert_eq!(awards(&flow, &events), [Award { reason: "onboarding:setup:a".into(), amount: 5 }]);
    }
}
