//! Product events: stored exactly once under their idempotency key, then matched against
//! the triggers of every flow the user, and the workspace it happened in, is enrolled in.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::DatabaseTransaction;
use serde_json::Value;

use super::{News, Onramp};
use crate::domain::limits::shorten;
use crate::domain::{Limits, Owner};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::persistence::begin_write;
use crate::persistence::enrollments::{self, EnrollmentRecord};
use crate::persistence::events::{self, StoredEvent};
use crate::persistence::subjects::{self, SubjectRecord};

/// The largest batch `trackEvents` takes.
pub const MAX_EVENT_BATCH: usize = 1000;
/// The longest event name (trigger event names are bounded the same way).
const MAX_NAME_LEN: usize = 255;

#[derive(Clone, Debug)]
pub struct EventInput {
    /// The idempotency key.
    pub id: String,
    /// The user who did it. At least one of subject and workspace is given.
    pub subject_id: Option<String>,
    /// The workspace it happened in: its workspace-scoped flows see it.
    pub workspace_id: Option<String>,
    pub name: String,
    pub properties: Value,
    /// When the event happened; the time it is received when absent.
    pub occurred_at: Option<DateTime<Utc>>,
}

impl EventInput {
    /// Who sent it: the user, or for an event about a workspace alone, the workspace.
    /// Lengths are checked against the configured limits by `check`, before this is used.
    fn sender(&self) -> Result<Owner, String> {
        match (&self.subject_id, &self.workspace_id) {
            (Some(subject), _) => Owner::user(subject, &Limits::unbounded()),
            (None, Some(workspace)) => Owner::workspace(workspace, &Limits::unbounded()),
            (None, None) => Err("an event needs a subjectId, a workspaceId or both".into()),
        }
    }

    fn workspace(&self) -> Option<Owner> {
        self.workspace_id.as_deref().and_then(|w| Owner::workspace(w, &Limits::unbounded()).ok())
    }

    /// Whose flows it concerns: the sender's, and its workspace's.
    fn owners(&self) -> Vec<Owner> {
        self.sender().into_iter().chain(self.workspace()).collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompletedStep {
    pub flow_key: String,
    pub version: i32,
    pub step_key: String,
    /// Set when the step is in a workspace's flow.
    pub workspace_id: Option<String>,
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
    /// and nothing of it is written. Outcomes come back in input order. An event concerns
    /// its user's flows and, with a workspaceId, that workspace's flows.
    pub async fn track_events(&self, inputs: Vec<EventInput>) -> AppResult<Vec<EventOutcome>> {
        if inputs.len() > MAX_EVENT_BATCH {
            return Err(AppError::invalid(format!(
                "a batch holds at most {MAX_EVENT_BATCH} events, not {}",
                inputs.len()
            )));
        }
        let now = self.now();
        let mut outcomes: Vec<Option<EventOutcome>> =
            inputs.iter().map(|i| check(i, &self.limits).err().map(EventOutcome::Rejected)).collect();
        let good: Vec<usize> = (0..inputs.len()).filter(|&i| outcomes[i].is_none()).collect();
        if good.is_empty() {
            let outcomes: Vec<EventOutcome> =
                outcomes.into_iter().map(|o| o.unwrap_or(EventOutcome::Duplicate)).collect();
            self.count_events(&outcomes);
            return Ok(outcomes);
        }

        // Locks are taken in a fixed order, so concurrent batches (and a batch and a
        // version migration) cannot deadlock: subject rows by key, then event ids, then
        // the owners' enrollments by owner key and flow key.
        let owners: BTreeSet<String> = good.iter().flat_map(|&i| inputs[i].owners()).map(|o| o.key()).collect();
        let txn = begin_write(&self.db).await?;
        let keys: Vec<&str> = owners.iter().map(String::as_str).collect();
        let rows: BTreeMap<String, SubjectRecord> =
            subjects::ensure_all(&txn, &keys, now).await?.into_iter().map(|s| (s.external_id.clone(), s)).collect();
        self.store(&txn, &inputs, &good, &rows, &mut outcomes, now).await?;

        // Each owner's new events, by input position.
        let mut mine: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for &i in &good {
            if matches!(outcomes[i], Some(EventOutcome::New(_))) {
                for owner in inputs[i].owners() {
                    let key = rows.get_key_value(&owner.key()).map(|(k, _)| k.as_str());
                    mine.entry(key.ok_or_else(|| AppError::internal("owner row missing"))?).or_default().push(i);
                }
            }
        }
        let concerned: Vec<&SubjectRecord> = mine.keys().map(|k| &rows[*k]).collect();
        let (records, enrolled) = self.lock_enrollments(&txn, &concerned, now).await?;
        let mut flows = Vec::with_capacity(records.len());
        for record in &records {
            flows.push(self.flows.pinned(&txn, record.flow_id).await?);
        }
        let targets = records
            .into_iter()
            .zip(&flows)
            .map(|(record, flow)| {
                let subject = concerned.iter().copied().find(|s| s.id == record.subject_id);
                Ok((subject.ok_or_else(|| AppError::internal("enrollment of no owner"))?, flow, record))
            })
            .collect::<AppResult<Vec<_>>>()?;
        let owners_of: Vec<&SubjectRecord> = targets.iter().map(|(subject, _, _)| *subject).collect();
        let advanced = self.advance_all(&txn, targets, now).await?;

        let mut changed: BTreeSet<String> = enrolled;
        for ((subject, flow), advanced) in owners_of.into_iter().zip(&flows).zip(&advanced) {
            if advanced.outcome.changed {
                changed.insert(subject.external_id.clone());
            }
            // Report each completion under the event of this batch that caused it.
            let mine = &mine[subject.external_id.as_str()];
            for step in &advanced.outcome.changed_steps {
                let Some(event_id) = advanced.state.steps.get(step).and_then(|s| s.event_id.as_ref()) else {
                    continue;
                };
                if let Some(i) = mine.iter().copied().find(|&i| &inputs[i].id == event_id)
                    && let Some(EventOutcome::New(completed)) = &mut outcomes[i]
                {
                    completed.push(CompletedStep {
                        flow_key: flow.key.clone(),
                        version: flow.version,
                        step_key: step.clone(),
                        workspace_id: match subject.owner() {
                            Owner::Workspace(id) => Some(id),
                            Owner::User(_) => None,
                        },
                    });
                }
            }
        }
        self.commit_and_announce(txn, News::Owners(changed.into_iter().collect())).await?;
        let outcomes: Vec<EventOutcome> = outcomes.into_iter().map(|o| o.unwrap_or(EventOutcome::Duplicate)).collect();
        self.count_events(&outcomes);
        Ok(outcomes)
    }

    /// Counts a batch's outcomes for /metrics, once it is committed.
    fn count_events(&self, outcomes: &[EventOutcome]) {
        for outcome in outcomes {
            let status = match outcome {
                EventOutcome::New(_) => "new",
                EventOutcome::Duplicate => "duplicate",
                EventOutcome::Rejected(_) => "rejected",
            };
            self.metrics().events.with_label_values(&[status]).inc();
        }
    }

    /// Stores the good events of a batch in one statement and sets their outcomes: NEW,
    /// or for an id stored before (or earlier in the batch) DUPLICATE when the content is
    /// the same, else CONFLICT.
    async fn store(
        &self,
        txn: &DatabaseTransaction,
        inputs: &[EventInput],
        good: &[usize],
        rows: &BTreeMap<String, SubjectRecord>,
        outcomes: &mut [Option<EventOutcome>],
        now: DateTime<Utc>,
    ) -> AppResult<()> {
        let row_id = |owner: &Owner| rows.get(&owner.key()).map(|r| r.id);
        let mut stored = Vec::with_capacity(good.len());
        for &i in good {
            let input = &inputs[i];
            let (Ok(sender), workspace) = (input.sender(), input.workspace()) else { continue };
            let event = StoredEvent {
                subject_id: row_id(&sender).ok_or_else(|| AppError::internal("sender row missing"))?,
                workspace_id: workspace.as_ref().and_then(row_id),
                name: input.name.clone(),
                properties: input.properties.clone(),
                occurred_at: input.occurred_at.map_or(now, |t| t.trunc_subsecs(6)),
            };
            stored.push((i, event));
        }
        // The first of a repeated id is the one inserted; ids sorted, as on PostgreSQL
        // each insert holds its key until commit.
        let mut first: BTreeMap<&str, usize> = BTreeMap::new();
        for (n, (i, _)) in stored.iter().enumerate() {
            first.entry(inputs[*i].id.as_str()).or_insert(n);
        }
        let batch: Vec<(&str, &StoredEvent)> = first.iter().map(|(id, &n)| (*id, &stored[n].1)).collect();
        let new_ids = events::insert_all(txn, &batch, now).await?;
        let is_new = |n: usize| {
            let id = inputs[stored[n].0].id.as_str();
            first[id] == n && new_ids.contains(id)
        };
        let taken: BTreeSet<&str> =
            (0..stored.len()).filter(|&n| !is_new(n)).map(|n| inputs[stored[n].0].id.as_str()).collect();
        let existing = if taken.is_empty() { Default::default() } else { events::find_all(txn, taken).await? };
        for (n, (i, event)) in stored.iter().enumerate() {
            let input = &inputs[*i];
            outcomes[*i] = Some(if is_new(n) {
                EventOutcome::New(Vec::new())
            } else {
                match existing.get(&input.id) {
                    Some(s) if same_event(s, event, input.occurred_at.is_some()) => EventOutcome::Duplicate,
                    _ => EventOutcome::Rejected(AppError::new(
                        ErrorCode::Conflict,
                        format!("event id `{}` was already used for different content", shorten(&input.id)),
                    )),
                }
            });
        }
        Ok(())
    }

    /// The owners' enrollments, locked, in the order to apply them (owner key, flow key),
    /// after enrolling each in the audience flows that admit it (returned: their keys,
    /// news for subscribers).
    async fn lock_enrollments(
        &self,
        txn: &DatabaseTransaction,
        owners: &[&SubjectRecord],
        now: DateTime<Utc>,
    ) -> AppResult<(Vec<EnrollmentRecord>, BTreeSet<String>)> {
        let ids: Vec<i64> = owners.iter().map(|s| s.id).collect();
        let mut records = enrollments::list_for_subjects(txn, &ids, true).await?;
        let audience = self.audience_flows(txn).await?;
        let mut enrolled = BTreeSet::new();
        for subject in owners {
            let has: Vec<&str> =
                records.iter().filter(|r| r.subject_id == subject.id).map(|r| r.flow_key.as_str()).collect();
            let added = self.enroll_in_audiences(txn, subject, &audience, &has, now).await?;
            for flow in &added {
                let record = enrollments::find(txn, subject.id, &flow.key, true)
                    .await?
                    .ok_or_else(|| AppError::internal("enrollment vanished after insert"))?;
                records.push(record);
            }
            if !added.is_empty() {
                enrolled.insert(subject.external_id.clone());
            }
        }
        let key_of = |r: &EnrollmentRecord| owners.iter().find(|s| s.id == r.subject_id).map(|s| s.external_id.clone());
        records.sort_by_cached_key(|r| (key_of(r), r.flow_key.clone()));
        Ok((records, enrolled))
    }
}

fn check(input: &EventInput, limits: &Limits) -> Result<(), AppError> {
    limits.check_id("id", &input.id).map_err(AppError::invalid)?;
    if input.id.trim().is_empty() {
        return Err(AppError::invalid("id cannot be blank"));
    }
    if let Some(subject) = &input.subject_id {
        limits.check_id("subjectId", subject).map_err(AppError::invalid)?;
    }
    if let Some(workspace) = &input.workspace_id {
        limits.check_id("workspaceId", workspace).map_err(AppError::invalid)?;
    }
    input.sender().map_err(AppError::invalid)?;
    if input.name.trim().is_empty() || input.name.chars().count() > MAX_NAME_LEN {
        return Err(AppError::invalid(format!("name must be 1 to {MAX_NAME_LEN} characters")));
    }
    if !input.properties.is_object() {
        return Err(AppError::invalid("properties must be a JSON object"));
    }
    // PostgreSQL text and jsonb cannot hold NUL: storing it would fail the whole batch.
    let texts = Value::from(vec![
        input.id.as_str(),
        input.subject_id.as_deref().unwrap_or_default(),
        input.workspace_id.as_deref().unwrap_or_default(),
        input.name.as_str(),
    ]);
    crate::domain::limits::check_json("an event", &texts, 1, usize::MAX).map_err(AppError::invalid)?;
    limits.check_event_properties(&input.properties).map_err(AppError::invalid)?;
    Ok(())
}

/// The same event sent again. A retry that leaves out occurredAt means "now", which
/// differs from the first time, so the time is compared only when it was sent.
fn same_event(stored: &StoredEvent, incoming: &StoredEvent, time_sent: bool) -> bool {
    stored.subject_id == incoming.subject_id
        && stored.workspace_id == incoming.workspace_id
        && stored.name == incoming.name
        && stored.properties == incoming.properties
        && (!time_sent || stored.occurred_at == incoming.occurred_at.trunc_subsecs(6))
}
