//! Product events: stored exactly once under their idempotency key, then matched against
//! the triggers of every flow the subject is enrolled in.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;

use super::Onramp;
use crate::domain::Outcome;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::persistence::events::{self, StoredEvent};
use crate::persistence::{begin_write, enrollments, subjects};

/// The largest batch `trackEvents` takes.
pub const MAX_EVENT_BATCH: usize = 1000;
const MAX_ID_LEN: usize = 255;

#[derive(Clone, Debug)]
pub struct EventInput {
    /// The idempotency key.
    pub id: String,
    pub subject_id: String,
    pub name: String,
    pub properties: Value,
    /// When the event happened; the time it is received when absent.
    pub occurred_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompletedStep {
    pub flow_key: String,
    pub version: i32,
    pub step_key: String,
}

#[derive(Debug)]
pub enum EventOutcome {
    /// Stored now; these steps completed because of it.
    New(Vec<CompletedStep>),
    /// Stored before with the same content: no effect.
    Duplicate,
    /// Not stored: bad input, or a reused id with different content (CONFLICT).
    Rejected(AppError),
}

impl Onramp {
    /// Stores a batch of events and applies their triggers, all in one transaction: the
    /// good events of a batch are applied together, each bad one is reported with its code
    /// and nothing of it is written. Outcomes come back in input order.
    pub async fn track_events(&self, inputs: Vec<EventInput>) -> AppResult<Vec<EventOutcome>> {
        if inputs.len() > MAX_EVENT_BATCH {
            return Err(AppError::invalid(format!(
                "a batch holds at most {MAX_EVENT_BATCH} events, not {}",
                inputs.len()
            )));
        }
        let now = super::now();
        let mut outcomes: Vec<Option<EventOutcome>> =
            inputs.iter().map(|i| check(i).err().map(EventOutcome::Rejected)).collect();

        // Subjects in a fixed order, so concurrent batches lock enrollments in the same
        // order and cannot deadlock.
        let mut by_subject: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, input) in inputs.iter().enumerate().filter(|(i, _)| outcomes[*i].is_none()) {
            by_subject.entry(input.subject_id.as_str()).or_default().push(i);
        }
        if by_subject.is_empty() {
            return Ok(outcomes.into_iter().map(|o| o.unwrap_or(EventOutcome::Duplicate)).collect());
        }

        let txn = begin_write(&self.db).await?;
        let mut changed_subjects = Vec::new();
        for (subject_id, indexes) in by_subject {
            let subject = subjects::ensure(&txn, subject_id, now).await?;
            let mut new_ids: HashSet<String> = HashSet::new();
            // Ids in a fixed order too (stable, so a repeated id keeps its input order):
            // on PostgreSQL each insert holds its key until commit, and two overlapping
            // batches in different orders would otherwise deadlock.
            let mut by_id = indexes.clone();
            by_id.sort_by(|&a, &b| inputs[a].id.cmp(&inputs[b].id));
            for &i in &by_id {
                let input = &inputs[i];
                let event = StoredEvent {
                    subject_id: subject.id,
                    name: input.name.clone(),
                    properties: input.properties.clone(),
                    occurred_at: input.occurred_at.map_or(now, |t| t.trunc_subsecs(6)),
                };
                outcomes[i] = Some(if events::insert(&txn, &input.id, &event, now).await? {
                    new_ids.insert(input.id.clone());
                    EventOutcome::New(Vec::new())
                } else {
                    match events::find(&txn, &input.id).await? {
                        Some(stored) if same_event(&stored, &event, input.occurred_at.is_some()) => {
                            EventOutcome::Duplicate
                        }
                        _ => EventOutcome::Rejected(AppError::new(
                            ErrorCode::Conflict,
                            format!("event id `{}` was already used for different content", input.id),
                        )),
                    }
                });
            }
            if new_ids.is_empty() {
                continue;
            }
            // Flows whose audience admits the subject enroll it; the loop below applies
            // the events to them like to every other enrollment.
            let mut any_change = !self.auto_enroll(&txn, &subject, now).await?.is_empty();
            for record in enrollments::list_for_subject(&txn, subject.id, true).await? {
                let flow = self.flows.by_id(&txn, record.flow_id).await?;
                let advanced = self.advance(&txn, &subject, &flow, record, |_| Ok(Outcome::default()), now).await?;
                any_change |= advanced.outcome.changed;
                // Report each completion under the event of this batch that caused it.
                for key in &advanced.outcome.changed_steps {
                    let Some(event_id) = advanced.state.steps.get(key).and_then(|s| s.event_id.as_ref()) else {
                        continue;
                    };
                    if !new_ids.contains(event_id) {
                        continue;
                    }
                    if let Some(i) = indexes.iter().copied().find(|&i| &inputs[i].id == event_id)
                        && let Some(EventOutcome::New(completed)) = &mut outcomes[i]
                    {
                        completed.push(CompletedStep {
                            flow_key: flow.key.clone(),
                            version: flow.version,
                            step_key: key.clone(),
                        });
                    }
                }
            }
            if any_change {
                changed_subjects.push(subject_id.to_string());
            }
        }
        txn.commit().await?;
        self.realtime.announce(&changed_subjects).await;
        Ok(outcomes.into_iter().map(|o| o.unwrap_or(EventOutcome::Duplicate)).collect())
    }
}

fn check(input: &EventInput) -> Result<(), AppError> {
    let bounded = |what: &str, value: &str| {
        if value.trim().is_empty() || value.chars().count() > MAX_ID_LEN {
            Err(AppError::invalid(format!("{what} must be 1 to {MAX_ID_LEN} characters")))
        } else {
            Ok(())
        }
    };
    bounded("id", &input.id)?;
    bounded("subjectId", &input.subject_id)?;
    bounded("name", &input.name)?;
    if !input.properties.is_object() {
        return Err(AppError::invalid("properties must be a JSON object"));
    }
    // PostgreSQL text and jsonb cannot hold NUL: storing it would fail the whole batch.
    let texts = Value::from(vec![input.id.as_str(), input.subject_id.as_str(), input.name.as_str()]);
    super::refuse_nul(&texts, "an event")?;
    super::refuse_nul(&input.properties, "an event")?;
    Ok(())
}

/// The same event sent again. A retry that leaves out occurredAt means "now", which
/// differs from the first time, so the time is compared only when it was sent.
fn same_event(stored: &StoredEvent, incoming: &StoredEvent, time_sent: bool) -> bool {
    stored.subject_id == incoming.subject_id
        && stored.name == incoming.name
        && stored.properties == incoming.properties
        && (!time_sent || stored.occurred_at == incoming.occurred_at.trunc_subsecs(6))
}
