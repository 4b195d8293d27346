//! Webhook event types and payloads. An event type is the outbox kind in dotted form; the
//! payload is rendered from the outbox row alone, the same bytes on every attempt, so a
//! receiver can deduplicate on `webhook-id` and order on `data.revision`.

use std::collections::BTreeSet;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use crate::domain::Owner;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventType {
    /// The owner was enrolled in the flow: by starting it, by its audience, or by an event.
    OnboardingStarted,
    StepCompleted,
    StepSkipped,
    OnboardingCompleted,
    OnboardingSkipped,
    /// A nudge with the webhook channel came due and was sent (`domain::nudges`).
    NudgeDue,
}

/// Subscribes to every event type, present and future.
pub const ALL_EVENTS: &str = "*";

impl EventType {
    pub const ALL: [EventType; 6] = [
        EventType::OnboardingStarted,
        EventType::StepCompleted,
        EventType::StepSkipped,
        EventType::OnboardingCompleted,
        EventType::OnboardingSkipped,
        EventType::NudgeDue,
    ];

    /// The name receivers and subscriptions use.
    pub fn name(self) -> &'static str {
        match self {
            EventType::OnboardingStarted => "onboarding.started",
            EventType::StepCompleted => "step.completed",
            EventType::StepSkipped => "step.skipped",
            EventType::OnboardingCompleted => "onboarding.completed",
            EventType::OnboardingSkipped => "onboarding.skipped",
            EventType::NudgeDue => "nudge.due",
        }
    }

    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The event type of an outbox kind (`DomainEventKind::name`).
    pub fn of_outbox_kind(kind: &str) -> Option<EventType> {
        match kind {
            "onboarding_started" => Some(EventType::OnboardingStarted),
            "step_completed" => Some(EventType::StepCompleted),
            "step_skipped" => Some(EventType::StepSkipped),
            "onboarding_completed" => Some(EventType::OnboardingCompleted),
            "onboarding_skipped" => Some(EventType::OnboardingSkipped),
            "nudge_due" => Some(EventType::NudgeDue),
            _ => None,
        }
    }

    fn is_step_event(self) -> bool {
        matches!(self, EventType::StepCompleted | EventType::StepSkipped)
    }
}

/// What an endpoint receives: everything, or the listed types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subscription {
    All,
    Only(BTreeSet<EventType>),
}

impl Subscription {
    /// Parses a subscription as an admin gives it: `*` alone, or known event types.
    /// Repeats are harmless; an unknown name is an error (a typo would silently receive
    /// nothing).
    pub fn parse(names: &[String], max: usize) -> Result<Subscription, String> {
        if names.is_empty() {
            return Err(format!("eventTypes lists `{ALL_EVENTS}` or at least one event type"));
        }
        if names.len() > max {
            return Err(format!("eventTypes lists at most {max} entries"));
        }
        if names.iter().any(|n| n == ALL_EVENTS) {
            if names.iter().any(|n| n != ALL_EVENTS) {
                return Err(format!("`{ALL_EVENTS}` already subscribes to every event type: list it alone"));
            }
            return Ok(Subscription::All);
        }
        let mut types = BTreeSet::new();
        for name in names {
            let known = EventType::parse(name).ok_or_else(|| {
                let known: Vec<&str> = EventType::ALL.iter().map(|t| t.name()).collect();
                format!(
                    "unknown event type `{}`: one of {} or `{ALL_EVENTS}`",
                    crate::domain::limits::shorten(name),
                    known.join(", ")
                )
            })?;
            types.insert(known);
        }
        Ok(Subscription::Only(types))
    }

    /// As stored: `["*"]`, or the type names in a stable order.
    pub fn names(&self) -> Vec<String> {
        match self {
            Subscription::All => vec![ALL_EVENTS.to_string()],
            Subscription::Only(types) => types.iter().map(|t| t.name().to_string()).collect(),
        }
    }

    /// Reads a stored subscription; names it does not know (from a newer version) are
    /// left out rather than failing the endpoint.
    pub fn from_stored(names: &[String]) -> Subscription {
        if names.iter().any(|n| n == ALL_EVENTS) {
            return Subscription::All;
        }
        Subscription::Only(names.iter().filter_map(|n| EventType::parse(n)).collect())
    }

    pub fn includes(&self, event: EventType) -> bool {
        match self {
            Subscription::All => true,
            Subscription::Only(types) => types.contains(&event),
        }
    }
}

/// A domain event as the outbox keeps it.
#[derive(Clone, Copy, Debug)]
pub struct OutboxEvent<'a> {
    /// The outbox row's id: grows in commit order within one owner's flow.
    pub id: i64,
    pub kind: &'a str,
    /// The subject key of the owner (`domain::owner`).
    pub owner_key: &'a str,
    pub flow_key: &'a str,
    pub flow_version: i32,
    pub step_key: Option<&'a str>,
    /// What the write recorded about the change (points, source, revision, ...).
    pub details: &'a Value,
    /// When the change was made (its transaction's time).
    pub created_at: DateTime<Utc>,
}

/// The fields of a step event's `details` that describe the step.
const STEP_FIELDS: [&str; 6] = ["points", "source", "eventId", "metadata", "skipReason", "completedBy"];

/// The webhook payload of an outbox event, in the envelope Standard Webhooks suggests:
/// `{"type", "timestamp", "data"}`. `data` names the owner, the flow and version, the step
/// (for step events), the enrollment's revision after the change (it grows with every
/// change, so a receiver can order and drop stale events) and the time of the change.
/// One function for every kind, so each type's payload is documented (and schema-checked)
/// in one place.
pub fn render_payload(event: &OutboxEvent<'_>) -> Result<Value, String> {
    let event_type =
        EventType::of_outbox_kind(event.kind).ok_or_else(|| format!("unknown outbox kind `{}`", event.kind))?;
    let occurred_at = event.created_at.to_rfc3339_opts(SecondsFormat::Micros, true);
    let owner = match Owner::from_key(event.owner_key) {
        Owner::User(id) => json!({ "type": "user", "id": id }),
        Owner::Workspace(id) => json!({ "type": "workspace", "id": id }),
    };
    let mut data = Map::new();
    data.insert("owner".into(), owner);
    data.insert("flow".into(), json!({ "key": event.flow_key, "version": event.flow_version }));
    if event_type.is_step_event() {
        let key = event.step_key.ok_or_else(|| format!("outbox row {} is a step event without a step", event.id))?;
        let mut step = Map::new();
        step.insert("key".into(), Value::from(key));
        for field in STEP_FIELDS {
            if let Some(value) = event.details.get(field).filter(|v| !v.is_null()) {
                step.insert(field.into(), value.clone());
            }
        }
        data.insert("step".into(), Value::Object(step));
    } else if event_type == EventType::NudgeDue {
        // The nudge as the rule defines it, and which occurrence this is.
        let mut nudge = event.details.get("nudge").and_then(Value::as_object).cloned().unwrap_or_default();
        if let Some(step) = event.step_key {
            nudge.insert("step".into(), Value::from(step));
        }
        data.insert("nudge".into(), Value::Object(nudge));
    } else if event_type == EventType::OnboardingStarted {
        // The experiment and variant that chose the version entered, when one did.
        if let Some(experiment) = event.details.get("experiment").filter(|v| v.is_object()) {
            data.insert("experiment".into(), experiment.clone());
        }
    } else {
        data.insert("points".into(), event.details.get("points").cloned().unwrap_or(Value::from(0)));
    }
    data.insert("revision".into(), event.details.get("revision").cloned().unwrap_or(Value::Null));
    data.insert("sequence".into(), Value::from(event.id));
    data.insert("occurredAt".into(), Value::from(occurred_at.clone()));
    Ok(json!({ "type": event_type.name(), "timestamp": occurred_at, "data": data }))
}

/// The request body: the payload as compact JSON (keys sorted, so the bytes never vary).
pub fn render_body(event: &OutboxEvent<'_>) -> Result<String, String> {
    render_payload(event).map(|payload| payload.to_string())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn event<'a>(kind: &'a str, owner: &'a str, step: Option<&'a str>, details: &'a Value) -> OutboxEvent<'a> {
        OutboxEvent {
            id: 41,
            kind,
            owner_key: owner,
            flow_key: "welcome",
            flow_version: 2,
            step_key: step,
            details,
            created_at: Utc.with_ymd_and_hms(2026, 12, 1, 9, 30, 0).unwrap(),
        }
    }

    #[test]
    fn a_step_completion_names_owner_flow_step_revision_and_time() {
        let details =
            json!({"points": 5, "source": "USER", "metadata": {"n": 1}, "revision": 3, "completedBy": "alice"});
        let payload = render_payload(&event("step_completed", "alice", Some("profile"), &details)).unwrap();
        assert_eq!(
            payload,
            json!({
                "type": "step.completed",
                "timestamp": "2026-12-01T09:30:00.000000Z",
                "data": {
                    "owner": {"type": "user", "id": "alice"},
                    "flow": {"key": "welcome", "version": 2},
                    "step": {"key": "profile", "points": 5, "source": "USER", "metadata": {"n": 1}, "completedBy": "alice"},
                    "revision": 3,
                    "sequence": 41,
                    "occurredAt": "2026-12-01T09:30:00.000000Z"
                }
            })
        );
    }

    #[test]
    fn an_onboarding_event_of_a_workspace_carries_the_points_and_no_step() {
        let details = json!({"points": 15, "revision": 7});
        let payload = render_payload(&event("onboarding_completed", "workspace:acme", None, &details)).unwrap();
        assert_eq!(payload["type"], "onboarding.completed");
        assert_eq!(payload["data"]["owner"], json!({"type": "workspace", "id": "acme"}));
        assert_eq!(payload["data"]["points"], 15);
        assert_eq!(payload["data"]["revision"], 7);
        assert!(payload["data"].get("step").is_none());
    }

    #[test]
    fn an_enrollment_carries_its_experiment_only_when_one_chose_the_version() {
        let chosen = json!({"revision": 1, "experiment": {"key": "onboarding-v2", "variant": "treatment"}});
        let payload = render_payload(&event("onboarding_started", "alice", None, &chosen)).unwrap();
        assert_eq!(payload["type"], "onboarding.started");
        assert_eq!(payload["data"]["experiment"], json!({"key": "onboarding-v2", "variant": "treatment"}));
        assert_eq!(payload["data"]["revision"], 1);
        assert!(payload["data"].get("points").is_none() && payload["data"].get("step").is_none());
        let plain = render_payload(&event("onboarding_started", "alice", None, &json!({"revision": 1}))).unwrap();
        assert!(plain["data"].get("experiment").is_none(), "{plain}");
    }

    #[test]
    fn every_outbox_kind_renders_and_unknown_ones_do_not() {
        let details = json!({"revision": 1});
        for kind in [
            "onboarding_started",
            "step_completed",
            "step_skipped",
            "onboarding_completed",
            "onboarding_skipped",
            "nudge_due",
        ] {
            let step = kind.starts_with("step").then_some("a");
            let payload = render_payload(&event(kind, "bob", step, &details)).unwrap();
            assert_eq!(EventType::parse(payload["type"].as_str().unwrap()), EventType::of_outbox_kind(kind));
        }
        assert!(render_payload(&event("enrolled", "bob", None, &details)).is_err());
        assert!(
            render_payload(&event("step_completed", "bob", None, &details)).is_err(),
            "a step event needs its step"
        );
    }

    #[test]
    fn a_nudge_carries_its_rule_text_and_occurrence() {
        let details = json!({"nudge": {"id": "9", "key": "stuck", "trigger": "stuck", "occurrence": 1,
            "title": "Invite your team", "message": "It takes a minute", "channel": "webhook"}, "revision": 4});
        let payload = render_payload(&event("nudge_due", "alice", Some("invite"), &details)).unwrap();
        assert_eq!(payload["type"], "nudge.due");
        assert_eq!(payload["data"]["nudge"]["title"], "Invite your team");
        assert_eq!(payload["data"]["nudge"]["step"], "invite");
        assert_eq!(payload["data"]["revision"], 4);
        assert!(payload["data"].get("points").is_none());
    }

    #[test]
    fn the_body_is_the_same_bytes_every_time() {
        let details = json!({"z": 1, "points": 1, "revision": 2, "source": "EVENT", "eventId": "e1"});
        let e = event("step_completed", "alice", Some("a"), &details);
        assert_eq!(render_body(&e).unwrap(), render_body(&e).unwrap());
        assert!(!render_body(&e).unwrap().contains("\"z\""), "only documented fields go out");
    }

    #[test]
    fn subscriptions_parse_strictly() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(Subscription::parse(&names(&["*"]), 64), Ok(Subscription::All));
        let only =
            Subscription::parse(&names(&["step.completed", "step.completed", "onboarding.skipped"]), 64).unwrap();
        assert_eq!(only.names(), ["step.completed", "onboarding.skipped"]);
        assert!(only.includes(EventType::StepCompleted));
        assert!(!only.includes(EventType::StepSkipped));
        assert!(Subscription::All.includes(EventType::StepSkipped));
        assert!(Subscription::parse(&[], 64).is_err());
        assert!(Subscription::parse(&names(&["*", "step.completed"]), 64).is_err());
        assert!(Subscription::parse(&names(&["step.done"]), 64).unwrap_err().contains("unknown event type"));
        assert!(Subscription::parse(&names(&["step.completed"; 3]), 2).is_err());
        assert_eq!(Subscription::from_stored(&names(&["step.skipped", "future.thing"])).names(), ["step.skipped"]);
    }
}
