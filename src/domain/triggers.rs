//! Product events completing steps. A step's trigger matches an event by name and by a
//! condition over the event's properties. Events are kept, so a trigger is satisfied by
//! any stored event of the subject: one that arrived before the subject enrolled, or
//! while the step was still locked, completes the step the moment it becomes available.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::condition::Facts;
use super::flow::{FlowDefinition, StepDefinition};
use super::progress::{Command, Enrollment, Outcome, Source, StepStatus, apply, view};

/// A stored product event, as triggers see it.
#[derive(Clone, Debug, PartialEq)]
pub struct EventFact {
    pub id: String,
    pub name: String,
    pub properties: Value,
    pub occurred_at: DateTime<Utc>,
    /// The user who sent it, None for an event about a workspace alone.
    pub actor: Option<String>,
}

impl StepDefinition {
    /// The trigger holds for this event.
    pub fn is_triggered_by(&self, event: &EventFact) -> bool {
        let Some(trigger) = &self.trigger else { return false };
        if trigger.event != event.name {
            return false;
        }
        let no_answers = BTreeMap::new();
        let facts = Facts { attributes: &event.properties, answers: &no_answers };
        trigger.when.as_ref().is_none_or(|c| c.evaluate(&facts))
    }
}

impl FlowDefinition {
    /// The event names any step of this flow is triggered by.
    pub fn trigger_events(&self) -> Vec<&str> {
        let mut names: Vec<&str> =
            self.steps.iter().filter_map(|s| s.trigger.as_ref()).map(|t| t.event.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The event names that could still complete a step of this enrollment: those of
    /// steps not completed yet. Events of completed steps can change nothing, and a
    /// subject's event history only grows, so settling loads only these.
    pub fn pending_trigger_events(&self, enrollment: &Enrollment) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .steps
            .iter()
            .filter(|s| enrollment.step_status(&s.key) != StepStatus::Completed)
            .filter_map(|s| s.trigger.as_ref())
            .map(|t| t.event.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// Completes every applicable, available step not yet completed whose trigger one of
/// `events` satisfies, repeating until nothing changes: completing a step can unlock the
/// next one, whose event may already be stored. The earliest matching event (by
/// occurrence, then id) completes a step; its id is recorded and its properties become
/// the step's metadata. Returns what changed, like `apply`.
pub fn settle(
    flow: &FlowDefinition,
    attributes: &Value,
    enrollment: &mut Enrollment,
    events: &[EventFact],
    now: DateTime<Utc>,
) -> Outcome {
    let mut events: Vec<&EventFact> = events.iter().collect();
    events.sort_by(|a, b| a.occurred_at.cmp(&b.occurred_at).then_with(|| a.id.cmp(&b.id)));
    let mut total = Outcome::default();
    loop {
        let progress = view(flow, attributes, &enrollment.steps);
        let next = progress.steps.iter().filter(|s| s.available && s.status != StepStatus::Completed).find_map(|s| {
            events.iter().find(|e| s.definition.is_triggered_by(e)).map(|e| (s.definition.key.clone(), *e))
        });
        let Some((step, event)) = next else { break };
        let command = Command::CompleteStep { step: step.clone(), metadata: Some(event.properties.clone()) };
        // The step is applicable and available, so completing it cannot fail.
        let Ok(outcome) = apply(flow, attributes, enrollment, command, Source::Event, now) else { break };
        if let Some(state) = enrollment.steps.get_mut(&step) {
            state.event_id = Some(event.id.clone());
            state.completed_by = event.actor.clone();
        }
        total.absorb(outcome);
    }
    total
}

/// A change to an enrollment, made after its owner's stored events have completed what they
/// trigger: a command to an enrollment just made (or one whose events have not been
/// settled yet) then sees the steps those events unlock, as the owner does. Returns what
/// the events and the change did together; nothing when the change fails.
pub fn settle_then<E>(
    flow: &FlowDefinition,
    attributes: &Value,
    enrollment: &mut Enrollment,
    events: &[EventFact],
    now: DateTime<Utc>,
    change: impl FnOnce(&mut Enrollment) -> Result<Outcome, E>,
) -> Result<Outcome, E> {
    let mut outcome = settle(flow, attributes, enrollment, events, now);
    outcome.absorb(change(enrollment)?);
    Ok(outcome)
}

/// What an owner not enrolled in a flow already has in it: the enrollment it would start
/// now, with its stored events settled. For reads (status, the first snapshot of a
/// subscription): computed each time, never written.
pub fn preview(flow: &FlowDefinition, attributes: &Value, events: &[EventFact], now: DateTime<Utc>) -> Enrollment {
    let mut enrollment = Enrollment::new(now);
    settle(flow, attributes, &mut enrollment, events, now);
    enrollment
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

    fn event(id: &str, name: &str, properties: Value, minute: u32) -> EventFact {
        EventFact { id: id.into(), name: name.into(), properties, occurred_at: at(minute), actor: Some("ada".into()) }
    }

    fn flow() -> FlowDefinition {
        parse_flow(&json!({"key": "f", "title": "F", "steps": [
            {"key": "verify", "title": "Verify", "points": 10, "trigger": {"event": "user.verified"}},
            {"key": "invite", "title": "Invite", "dependsOn": ["verify"], "points": 5,
             "trigger": {"event": "team.invited", "where": {"attr": "count", "op": "gte", "value": 2}}},
            {"key": "manual", "title": "Manual", "required": false}
        ]}))
        .unwrap()
    }

    #[test]
    fn a_matching_event_completes_its_step_with_its_id_and_properties() {
        let f = flow();
        let mut e = Enrollment::new(at(0));
        let outcome = settle(&f, &json!({}), &mut e, &[event("e1", "user.verified", json!({"via": "link"}), 1)], at(2));
        assert_eq!(outcome.changed_steps, ["verify"]);
        assert_eq!(outcome.points_awarded, 10);
        let state = &e.steps["verify"];
        assert_eq!(state.status, StepStatus::Completed);
        assert_eq!(state.source, Source::Event);
        assert_eq!(state.event_id.as_deref(), Some("e1"));
        assert_eq!(state.completed_by.as_deref(), Some("ada"), "the sender completed it");
        assert!(!f.pending_trigger_events(&e).contains(&"user.verified"), "nothing left for that event to do");
        assert!(f.pending_trigger_events(&e).contains(&"team.invited"));
        assert_eq!(state.metadata, Some(json!({"via": "link"})));
        assert_eq!(state.completed_at, Some(at(2)));
    }

    #[test]
    fn the_where_condition_reads_event_properties() {
        let f = flow();
        let mut e = Enrollment::new(at(0));
        let events = [event("e1", "user.verified", json!({}), 1), event("e2", "team.invited", json!({"count": 1}), 2)];
        settle(&f, &json!({}), &mut e, &events, at(3));
        assert_eq!(e.step_status("invite"), StepStatus::Pending, "count 1 does not satisfy count >= 2");
        let events = [events[0].clone(), events[1].clone(), event("e3", "team.invited", json!({"count": 3}), 4)];
        settle(&f, &json!({}), &mut e, &events, at(5));
        assert_eq!(e.steps["invite"].event_id.as_deref(), Some("e3"));
    }

    #[test]
    fn an_early_event_completes_its_step_once_the_prerequisite_completes() {
        let f = flow();
        let mut e = Enrollment::new(at(0));
        let early = [event("e2", "team.invited", json!({"count": 5}), 1)];
        let outcome = settle(&f, &json!({}), &mut e, &early, at(2));
        assert!(!outcome.changed, "invite is locked behind verify");
        // The prerequisite's own event arrives later: both complete, in dependency order.
        let both = [early[0].clone(), event("e1", "user.verified", json!({}), 3)];
        let outcome = settle(&f, &json!({}), &mut e, &both, at(4));
        assert_eq!(outcome.changed_steps, ["verify", "invite"]);
        assert_eq!(outcome.points_awarded, 15);
        assert!(outcome.completed);
        assert_eq!(e.status, EnrollmentStatus::Completed);
    }

    #[test]
    fn settling_again_changes_nothing() {
        let f = flow();
        let mut e = Enrollment::new(at(0));
        let events = [event("e1", "user.verified", json!({}), 1)];
        settle(&f, &json!({}), &mut e, &events, at(2));
        let before = e.clone();
        let outcome = settle(&f, &json!({}), &mut e, &events, at(3));
        assert_eq!(outcome, Outcome::default());
        assert_eq!(e, before);
    }

    #[test]
    fn the_earliest_matching_event_wins() {
        let f = flow();
        let mut e = Enrollment::new(at(0));
        let events =
            [event("late", "user.verified", json!({"n": 2}), 9), event("early", "user.verified", json!({"n": 1}), 1)];
        settle(&f, &json!({}), &mut e, &events, at(10));
        assert_eq!(e.steps["verify"].event_id.as_deref(), Some("early"));
    }

    #[test]
    fn a_skipped_step_is_completed_by_its_event() {
        let f = parse_flow(&json!({"key": "f", "title": "F", "steps": [
            {"key": "tour", "title": "Tour", "required": false, "trigger": {"event": "tour.done"}}
        ]}))
        .unwrap();
        let mut e = Enrollment::new(at(0));
        apply(&f, &json!({}), &mut e, Command::SkipStep { step: "tour".into(), reason: None }, Source::User, at(1))
            .unwrap();
        settle(&f, &json!({}), &mut e, &[event("e", "tour.done", json!({}), 2)], at(3));
        assert_eq!(e.step_status("tour"), StepStatus::Completed);
    }

    #[test]
    fn a_command_sees_the_steps_stored_events_unlock() {
        let f = flow();
        let mut e = Enrollment::new(at(0));
        let events = [event("e1", "user.verified", json!({}), 1), event("e2", "team.invited", json!({"count": 1}), 2)];
        let complete = Command::CompleteStep { step: "invite".into(), metadata: None };
        // Alone, the command finds `invite` locked behind `verify`.
        assert!(apply(&f, &json!({}), &mut e.clone(), complete.clone(), Source::User, at(3)).is_err());
        let outcome = settle_then(&f, &json!({}), &mut e, &events, at(3), |state| {
            apply(&f, &json!({}), state, complete, Source::User, at(3))
        })
        .unwrap();
        assert_eq!(outcome.changed_steps, ["verify", "invite"]);
        assert_eq!(outcome.points_awarded, 15);
        assert_eq!(e.steps["verify"].source, Source::Event);
        assert_eq!(e.steps["invite"].source, Source::User);
    }

    #[test]
    fn a_failed_command_after_settling_is_an_error() {
        let f = flow();
        let mut e = Enrollment::new(at(0));
        let skip = Command::SkipStep { step: "verify".into(), reason: None };
        let result = settle_then(&f, &json!({}), &mut e, &[], at(1), |state| {
            apply(&f, &json!({}), state, skip, Source::User, at(1))
        });
        assert!(result.is_err(), "a required step cannot be skipped");
    }

    #[test]
    fn a_preview_is_a_new_enrollment_with_its_events_settled() {
        let f = flow();
        let events = [event("e1", "user.verified", json!({}), 1)];
        let preview = preview(&f, &json!({}), &events, at(5));
        assert_eq!(preview.step_status("verify"), StepStatus::Completed);
        assert_eq!(preview.steps["verify"].event_id.as_deref(), Some("e1"));
        assert_eq!(preview.step_status("invite"), StepStatus::Pending);
        assert_eq!(preview.started_at, at(5));
        assert_eq!(super::preview(&f, &json!({}), &[], at(5)), Enrollment::new(at(5)), "no events, nothing done");
    }

    #[test]
    fn trigger_event_names_are_listed_once() {
        assert_eq!(flow().trigger_events(), ["team.invited", "user.verified"]);
    }
}
