//! Product events: stored exactly once under their idempotency key, then matched against
//! the triggers of every flow the user, and the workspace it happened in, is enrolled in.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;

use super::Onramp;
use crate::domain::{Outcome, Owner};
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
    fn sender(&self) -> Result<Owner, String> {
        match (&self.subject_id, &self.workspace_id) {
            (Some(subject), _) => Owner::user(subject),
            (None, Some(workspace)) => Owner::workspace(workspace),
            (None, None) => Err("an event needs a subjectId, a workspaceId or both".into()),
        }
    }

    fn workspace(&self) -> Option<Owner> {
        self.workspace_id.as_deref().and_then(|w| Owner::workspace(w).ok())
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
        let now = super::now();
        let mut outcomes: Vec<Option<EventOutcome>> =
            inputs.iter().map(|i| check(i).err().map(EventOutcome::Rejected)).collect();
        let good: Vec<usize> = (0..inputs.len()).filter(|&i| outcomes[i].is_none()).collect();
        if good.is_empty() {
            return Ok(outcomes.into_iter().map(|o| o.unwrap_or(EventOutcome::Duplicate)).collect());
        }

        // Locks are taken in a fixed order, so concurrent batches (and a batch and a
        // version migration) cannot deadlock: subject rows by key, then event ids, then
        // each owner's enrollments by owner key.
        let owners: BTreeMap<String, Owner> =
            good.iter().flat_map(|&i| inputs[i].owners()).map(|o| (o.key(), o)).collect();
        let txn = begin_write(&self.db).await?;
        let mut rows = BTreeMap::new();
        for key in owners.keys() {
            rows.insert(key.clone(), subjects::ensure(&txn, key, now).await?);
        }
        let row_id = |owner: &Owner| rows.get(&owner.key()).map(|r| r.id);

        // Ids sorted (stable, so a repeated id keeps its input order): on PostgreSQL each
        // insert holds its key until commit.
        let mut by_id = good.clone();
        by_id.sort_by(|&a, &b| inputs[a].id.cmp(&inputs[b].id));
        let mut new_ids: HashSet<&str> = HashSet::new();
        for &i in &by_id {
            let input = &inputs[i];
            let (Ok(sender), workspace) = (input.sender(), input.workspace()) else { continue };
            let event = StoredEvent {
                subject_id: row_id(&sender).ok_or_else(|| AppError::internal("sender row missing"))?,
                workspace_id: workspace.as_ref().and_then(row_id),
                name: input.name.clone(),
                properties: input.properties.clone(),
                occurred_at: input.occurred_at.map_or(now, |t| t.trunc_subsecs(6)),
            };
            outcomes[i] = Some(if events::insert(&txn, &input.id, &event, now).await? {
                new_ids.insert(input.id.as_str());
                EventOutcome::New(Vec::new())
            } else {
                match events::find(&txn, &input.id).await? {
                    Some(stored) if same_event(&stored, &event, input.occurred_at.is_some()) => EventOutcome::Duplicate,
                    _ => EventOutcome::Rejected(AppError::new(
                        ErrorCode::Conflict,
                        format!("event id `{}` was already used for different content", input.id),
                    )),
                }
            });
        }

        let mut changed = Vec::new();
        for (key, owner) in &owners {
            // This owner's new events, by input position.
            let mine: Vec<usize> = good
                .iter()
                .copied()
                .filter(|&i| new_ids.contains(inputs[i].id.as_str()) && inputs[i].owners().contains(owner))
                .collect();
            if mine.is_empty() {
                continue;
            }
            let subject = &rows[key];
            // Flows whose audience admits the owner enroll it; the loop below applies the
            // events to them like to every other enrollment.
            let mut any_change = !self.auto_enroll(&txn, subject, now).await?.is_empty();
            for record in enrollments::list_for_subject(&txn, subject.id, true).await? {
                let flow = self.flows.pinned(&txn, record.flow_id).await?;
                let advanced = self.advance(&txn, subject, &flow, record, |_| Ok(Outcome::default()), now).await?;
                any_change |= advanced.outcome.changed;
                // Report each completion under the event of this batch that caused it.
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
                            workspace_id: match owner {
                                Owner::Workspace(id) => Some(id.clone()),
                                Owner::User(_) => None,
                            },
                        });
                    }
                }
            }
            if any_change {
                changed.push(key.clone());
            }
        }
        txn.commit().await?;
        self.realtime.announce(&changed).await;
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
    if let Some(subject) = &input.subject_id {
        bounded("subjectId", subject)?;
    }
    if let Some(workspace) = &input.workspace_id {
        bounded("workspaceId", workspace)?;
    }
    input.sender().map_err(AppError::invalid)?;
    bounded("name", &input.name)?;
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
    super::refuse_nul(&texts, "an event")?;
    super::refuse_nul(&input.properties, "an event")?;
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
