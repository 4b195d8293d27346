//! The one write path every use case shares: change an enrollment (a command, an
//! attribute change, or nothing), let stored events complete what they trigger, save the
//! result and its domain events to the outbox. Runs inside the caller's transaction, on
//! locked enrollments: one at a time, or a batch of them with one statement per table.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseTransaction};
use serde_json::{Value, json};

use super::Onramp;
use crate::domain::changes::{Award, DomainEvent, DomainEventKind};
use crate::domain::{Enrollment, EventFact, Outcome, ProgressError, changes, nudges, progress, triggers};
use crate::error::AppResult;
use crate::persistence::enrollments::{self, Assignment, EnrollmentRecord, Save};
use crate::persistence::flows::FlowRecord;
use crate::persistence::nudges as nudge_store;
use crate::persistence::outbox::{self, OutboxEntry};
use crate::persistence::subjects::SubjectRecord;
use crate::persistence::writes::Writes;
use crate::persistence::{events, points};

pub(super) struct Advanced {
    pub state: Enrollment,
    pub outcome: Outcome,
}

/// An enrollment advanced in memory: the new state and what to write for it.
struct Planned<'a> {
    subject: &'a SubjectRecord,
    flow: &'a FlowRecord,
    before: EnrollmentRecord,
    state: Enrollment,
    outcome: Outcome,
    /// The steps whose rows are written.
    saved: Vec<String>,
    domain_events: Vec<DomainEvent>,
    awards: Vec<Award>,
}

impl Onramp {
    /// Enrolls the subject in this version of the flow, unless another transaction just
    /// did (the caller reads the enrollment back either way). The enrollment it makes goes
    /// to the outbox as `onboarding_started` in the same transaction, whichever use case
    /// made it: starting the flow, its audience, an event.
    pub(super) async fn enroll(
        &self,
        txn: &DatabaseTransaction,
        subject: &SubjectRecord,
        flow: &FlowRecord,
        assignment: Option<&Assignment>,
        now: DateTime<Utc>,
    ) -> AppResult<()> {
        let state = Enrollment::new(now);
        if !enrollments::insert(txn, subject.id, flow.id, &flow.key, &state, assignment).await? {
            return Ok(());
        }
        let mut payload = json!({ "revision": state.revision });
        if let Some(a) = assignment {
            payload["experiment"] = json!({ "key": a.experiment_key, "variant": a.variant });
        }
        let entry = OutboxEntry {
            kind: DomainEventKind::OnboardingStarted.name(),
            subject_id: subject.external_id.clone(),
            flow_key: flow.key.clone(),
            flow_version: flow.version,
            step_key: None,
            payload,
        };
        let mut writes = Writes::new(txn.get_database_backend());
        outbox::append(&mut writes, vec![entry], now);
        writes.run(txn).await?;
        Ok(())
    }

    /// Changes an enrollment, then lets the owner's stored events complete what they
    /// trigger, and saves.
    pub(super) async fn advance(
        &self,
        txn: &DatabaseTransaction,
        subject: &SubjectRecord,
        flow: &FlowRecord,
        record: EnrollmentRecord,
        change: impl FnOnce(&mut Enrollment) -> Result<Outcome, ProgressError>,
        now: DateTime<Utc>,
    ) -> AppResult<Advanced> {
        let mut state = record.state.clone();
        let outcome = change(&mut state)?;
        let names = flow.definition.pending_trigger_events(&state);
        let facts = events::facts(txn, subject, &names).await?;
        let planned = plan(subject, flow, record, state, outcome, &facts, now);
        let mut advanced = write(txn, vec![planned], now).await?;
        Ok(advanced.remove(0))
    }

    /// `advance` for a command: the owner's stored events are settled before the change
    /// too, so the command sees the steps they unlock (an enrollment made by this use case
    /// has not seen its events yet). No more reads than `advance`: the events read before
    /// serve after as well, as a change only completes steps and never needs events of
    /// more names.
    pub(super) async fn advance_settled(
        &self,
        txn: &DatabaseTransaction,
        subject: &SubjectRecord,
        flow: &FlowRecord,
        record: EnrollmentRecord,
        change: impl FnOnce(&mut Enrollment) -> Result<Outcome, ProgressError>,
        now: DateTime<Utc>,
    ) -> AppResult<Advanced> {
        let mut state = record.state.clone();
        let names = flow.definition.pending_trigger_events(&state);
        let facts = events::facts(txn, subject, &names).await?;
        let outcome = triggers::settle_then(&flow.definition, &subject.attributes, &mut state, &facts, now, change)?;
        let planned = plan(subject, flow, record, state, outcome, &facts, now);
        let mut advanced = write(txn, vec![planned], now).await?;
        Ok(advanced.remove(0))
    }

    /// `advance` with no change of its own, for many enrollments (of one or many owners)
    /// at once: their events are read in one query and their writes are one statement
    /// per table. Results come back in the order given.
    pub(super) async fn advance_all(
        &self,
        txn: &DatabaseTransaction,
        targets: Vec<(&SubjectRecord, &FlowRecord, EnrollmentRecord)>,
        now: DateTime<Utc>,
    ) -> AppResult<Vec<Advanced>> {
        // One owner's stored events serve every flow it is enrolled in: settling matches an
        // event only to a step not completed yet, whose name is among those asked for.
        let names: BTreeSet<&str> = targets
            .iter()
            .flat_map(|(_, flow, record)| flow.definition.pending_trigger_events(&record.state))
            .collect();
        let mut owners: Vec<SubjectRecord> = Vec::new();
        for (subject, _, _) in &targets {
            if !owners.iter().any(|o| o.id == subject.id) {
                owners.push((*subject).clone());
            }
        }
        let names: Vec<&str> = names.into_iter().collect();
        let facts: HashMap<i64, Vec<EventFact>> = events::facts_of_all(txn, &owners, &names).await?;
        let planned = targets
            .into_iter()
            .map(|(subject, flow, record)| {
                let state = record.state.clone();
                let facts = facts.get(&subject.id).map_or(&[][..], Vec::as_slice);
                plan(subject, flow, record, state, Outcome::default(), facts, now)
            })
            .collect();
        write(txn, planned, now).await
    }
}

/// Settles `state` (already changed by the use case) with the owner's stored events and
/// works out what is written: pure, so a batch is decided before any write.
fn plan<'a>(
    subject: &'a SubjectRecord,
    flow: &'a FlowRecord,
    before: EnrollmentRecord,
    mut state: Enrollment,
    mut outcome: Outcome,
    facts: &[EventFact],
    now: DateTime<Utc>,
) -> Planned<'a> {
    if !facts.is_empty() {
        outcome.absorb(triggers::settle(&flow.definition, &subject.attributes, &mut state, facts, now));
    }
    // Bookkeeping for analytics: rows for steps that now apply, stamped when reached.
    // It is saved, but is no change a subscriber sees (no new revision).
    let reached = progress::mark_reached(&flow.definition, &subject.attributes, &mut state, now);
    if !outcome.changed {
        return Planned {
            subject,
            flow,
            before,
            state,
            outcome,
            saved: reached,
            domain_events: Vec::new(),
            awards: Vec::new(),
        };
    }
    let domain_events = changes::between(&before.state, &state, &outcome.changed_steps);
    let awards = changes::awards(&flow.definition, &domain_events);
    let mut saved = outcome.changed_steps.clone();
    saved.extend(reached);
    Planned { subject, flow, before, state, outcome, saved, domain_events, awards }
}

/// Writes planned enrollments, one statement per table for all of them, in the order
/// one enrollment needs: ledger, enrollment and steps, outbox.
async fn write(
    txn: &DatabaseTransaction,
    mut planned: Vec<Planned<'_>>,
    now: DateTime<Utc>,
) -> AppResult<Vec<Advanced>> {
    // Every award goes through the ledger, once per subject and reason. An enrollment's
    // total is its points as loaded (under its lock) plus the entries this write actually
    // inserted, never the domain's own count: an award the subject already had for the
    // reason is not paid twice, so ledger and total cannot disagree.
    let awards: Vec<points::Award> = planned
        .iter()
        .flat_map(|p| {
            p.awards.iter().map(|a| points::Award {
                subject_id: p.subject.id,
                enrollment_id: p.before.id,
                amount: a.amount,
                reason: a.reason.clone(),
            })
        })
        .collect();
    let awarded = points::award_all(txn, &awards, now).await?;
    for p in planned.iter_mut().filter(|p| p.outcome.changed) {
        p.state.points = p.before.state.points.saturating_add(awarded.get(&p.before.id).copied().unwrap_or(0));
    }
    let saves: Vec<Save<'_>> = planned
        .iter()
        .filter(|p| p.outcome.changed || !p.saved.is_empty())
        .map(|p| Save { before: &p.before, after: &p.state, changed_steps: &p.saved })
        .collect();
    // The rest answers nothing the write needs: one round trip (see `Writes`).
    let mut writes = Writes::new(txn.get_database_backend());
    enrollments::save_all(&mut writes, &saves);
    // Nudges: each rule's next due time, decided with the change (see `domain::nudges`).
    let schedule: Vec<nudge_store::ScheduleRow> = planned.iter().flat_map(nudge_schedule).collect();
    nudge_store::schedule(&mut writes, &schedule, now);
    let entries = planned.iter_mut().flat_map(outbox_entries).collect();
    outbox::append(&mut writes, entries, now);
    writes.run(txn).await?;
    Ok(planned.into_iter().map(|p| Advanced { state: p.state, outcome: p.outcome }).collect())
}

/// The nudge schedule rows of one enrollment as planned: none when its flow has no rules.
fn nudge_schedule(p: &Planned<'_>) -> Vec<nudge_store::ScheduleRow> {
    nudges::schedule_for(&p.flow.definition, &p.subject.attributes, &p.state)
        .into_iter()
        .map(|(rule, due)| nudge_store::ScheduleRow {
            enrollment_id: p.before.id,
            rule_key: rule.to_string(),
            subject_id: p.subject.id,
            anchor_at: due.map(|d| d.anchor),
            number: due.map_or(1, |d| d.number as i32),
            due_at: due.map(|d| d.at),
            waiting: false,
        })
        .collect()
}

/// The outbox entries of one enrollment's domain events, with its points as saved.
fn outbox_entries(p: &mut Planned<'_>) -> Vec<OutboxEntry> {
    let (state, flow) = (&p.state, p.flow);
    std::mem::take(&mut p.domain_events)
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
                    // Who did it, so a webhook for a workspace's step names the member.
                    "completedBy": s.completed_by,
                    "revision": state.revision,
                }),
                None => json!({ "points": state.points, "revision": state.revision }),
            };
            OutboxEntry {
                kind: event.kind.name(),
                subject_id: p.subject.external_id.clone(),
                flow_key: flow.key.clone(),
                flow_version: flow.version,
                step_key: event.step,
                payload: strip_nulls(payload),
            }
        })
        .collect()
}

fn strip_nulls(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.retain(|_, v| !v.is_null());
    }
    v
}
