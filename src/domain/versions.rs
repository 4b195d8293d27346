//! Moving an enrollment from one version of a flow to another by step key, keeping what
//! was done. Steps the new version no longer has are reported; their records are kept, so
//! moving back restores them, and the points they earned stay earned.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::flow::FlowDefinition;
use super::progress::{Command, Enrollment, Outcome, Source, StepStatus, apply};

/// What moving one enrollment did (or, on a copy, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Migration {
    /// It became COMPLETED under the new version.
    pub became_complete: bool,
    /// Completed steps the new version does not have.
    pub dropped_completed: Vec<String>,
    pub outcome: Outcome,
}

/// Re-derives the enrollment under `to`. The snapshot changes (another version, maybe
/// other steps), so the revision always moves; completion follows the usual rule.
pub fn migrate(to: &FlowDefinition, attributes: &Value, enrollment: &mut Enrollment, now: DateTime<Utc>) -> Migration {
    let dropped_completed: Vec<String> = enrollment
        .steps
        .iter()
        .filter(|(key, state)| state.status == StepStatus::Completed && to.step(key).is_none())
        .map(|(key, _)| key.clone())
        .collect();
    let last_activity_at = enrollment.last_activity_at;
    // Reconcile touches no step, so it cannot fail.
    let mut outcome = apply(to, attributes, enrollment, Command::Reconcile, Source::Admin, now).unwrap_or_default();
    if !outcome.changed {
        enrollment.revision += 1;
        outcome.changed = true;
    }
    // A migration is not the subject's activity (inactivity nudges read this).
    enrollment.last_activity_at = last_activity_at;
    Migration { became_complete: outcome.completed, dropped_completed, outcome }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;
    use crate::domain::{EnrollmentStatus, parse_flow};

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 4, 9, minute, 0).unwrap()
    }

    fn flow(steps: Value) -> FlowDefinition {
        parse_flow(&json!({"key": "f", "title": "F", "steps": steps})).unwrap()
    }

    #[test]
    fn steps_are_kept_by_key_and_dropped_completed_ones_reported() {
        let v1 = flow(json!([{"key": "a", "title": "A"}, {"key": "old", "title": "Old"}, {"key": "c", "title": "C"}]));
        let v2 = flow(json!([{"key": "a", "title": "A"}, {"key": "c", "title": "C"}, {"key": "new", "title": "New"}]));
        let mut e = Enrollment::new(at(0));
        for step in ["a", "old"] {
            apply(
                &v1,
                &json!({}),
                &mut e,
                Command::CompleteStep { step: step.into(), metadata: None },
                Source::User,
                at(1),
            )
            .unwrap();
        }
        let revision = e.revision;
        let m = migrate(&v2, &json!({}), &mut e, at(2));
        assert_eq!(m.dropped_completed, ["old"]);
        assert!(!m.became_complete);
        assert_eq!(e.revision, revision + 1);
        assert_eq!(e.last_activity_at, at(1));
        assert_eq!(e.step_status("a"), StepStatus::Completed);
        assert!(e.steps.contains_key("old"), "the record stays, so moving back restores it");
    }

    #[test]
    fn an_enrollment_can_become_complete_under_the_new_version() {
        let v1 = flow(json!([{"key": "a", "title": "A"}, {"key": "b", "title": "B"}]));
        let v2 = flow(json!([{"key": "a", "title": "A"}, {"key": "b", "title": "B", "required": false}]));
        let mut e = Enrollment::new(at(0));
        apply(&v1, &json!({}), &mut e, Command::CompleteStep { step: "a".into(), metadata: None }, Source::User, at(1))
            .unwrap();
        let m = migrate(&v2, &json!({}), &mut e, at(2));
        assert!(m.became_complete);
        assert_eq!(e.status, EnrollmentStatus::Completed);
        assert_eq!(e.completed_at, Some(at(2)));
        assert_eq!(e.revision, 3, "one revision for the move, not two");
    }
}
