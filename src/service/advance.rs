//! The one write path every use case shares: change an enrollment (a command, an
//! attribute change, or nothing), let stored events complete what they trigger, save the
//! result and its domain events to the outbox. Runs inside the caller's transaction, on a
//! locked enrollment.

use chrono::{DateTime, Utc};
use sea_orm::DatabaseTransaction;
use serde_json::{Value, json};

use super::Onramp;
use crate::domain::{Enrollment, Outcome, ProgressError, changes, progress, triggers};
use crate::error::AppResult;
use crate::persistence::enrollments::{self, EnrollmentRecord};
use crate::persistence::flows::FlowRecord;
use crate::persistence::outbox::{self, OutboxEntry};
use crate::persistence::subjects::SubjectRecord;
use crate::persistence::{events, points};

pub(super) struct Advanced {
    pub state: Enrollment,
    pub outcome: Outcome,
}

impl Onramp {
    pub(super) async fn advance(
        &self,
        txn: &DatabaseTransaction,
        subject: &SubjectRecord,
        flow: &FlowRecord,
        record: EnrollmentRecord,
        change: impl FnOnce(&mut Enrollment) -> Result<Outcome, ProgressError>,
        now: DateTime<Utc>,
    ) -> AppResult<Advanced> {
        let before = &record.state;
        let mut state = before.clone();
        let mut outcome = change(&mut state)?;

        let names = flow.definition.pending_trigger_events(&state);
        if !names.is_empty() {
            let facts = events::facts(txn, subject, &names).await?;
            outcome.absorb(triggers::settle(&flow.definition, &subject.attributes, &mut state, &facts, now));
        }
        // Bookkeeping for analytics: rows for steps that now apply, stamped when reached.
        // It is saved, but is no change a subscriber sees (no new revision).
        let reached = progress::mark_reached(&flow.definition, &subject.attributes, &mut state, now);
        if !outcome.changed {
            if !reached.is_empty() {
                enrollments::save(txn, &record, &state, &reached).await?;
            }
            return Ok(Advanced { state, outcome });
        }
        let domain_events = changes::between(before, &state, &outcome.changed_steps);
        // Every award goes through the ledger, once per subject and reason; the total on
        // the enrollment is read back from it, so the two cannot disagree.
        let awards = changes::awards(&flow.definition, &domain_events);
        for award in &awards {
            points::award(txn, subject.id, record.id, award.amount, &award.reason, now).await?;
        }
        if !awards.is_empty() || state.points != before.points {
            state.points = points::enrollment_total(txn, record.id).await?;
        }
        let mut saved = outcome.changed_steps.clone();
        saved.extend(reached);
        enrollments::save(txn, &record, &state, &saved).await?;
        let entries = domain_events
            .into_iter()
            .map(|event| {
                let step = event.step.as_deref().and_then(|k| state.steps.get(k).map(|s| (k, s)));
                let payload = match step {
                    Some((key, s)) => json!({
                        "points": flow.definition.step(key).map_or(0, |d| d.points),
                        "source": s.source.name(),
                        "eventId": s.event_id,
                        "metadata": s.metadata,
                        "skipReason": s.skip_reason,
                        "revision": state.revision,
                    }),
                    None => json!({ "points": state.points, "revision": state.revision }),
                };
                OutboxEntry {
                    kind: event.kind.name(),
                    subject_id: subject.external_id.clone(),
                    flow_key: flow.key.clone(),
                    flow_version: flow.version,
                    step_key: event.step,
                    payload: strip_nulls(payload),
                }
            })
            .collect();
        outbox::append(txn, entries, now).await?;
        Ok(Advanced { state, outcome })
    }
}

fn strip_nulls(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.retain(|_, v| !v.is_null());
    }
    v
}
