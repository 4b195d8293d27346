//! What product backends call: events that complete steps.

use super::scalars::Json;
use async_graphql::{Context, Enum, ID, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{onramp, principal};
use crate::auth::Role;
use crate::service::{self, EventOutcome};

/// A product event. Sending the same id again is safe: it is stored once.
#[derive(InputObject, Clone, Debug)]
pub struct EventInput {
    /// The idempotency key, up to 256 bytes (the id limit): a retry sends the same id.
    pub id: String,
    /// The user who did it. At least one of subjectId and workspaceId is required.
    pub subject_id: Option<ID>,
    /// The workspace it happened in: it then also completes that workspace's
    /// workspace-scoped steps, crediting subjectId as completedBy.
    pub workspace_id: Option<ID>,
    /// Matched against step triggers, e.g. `user.email_verified`.
    pub name: String,
    /// A JSON object; trigger conditions read it, and it becomes the completed step's metadata.
    pub properties: Option<Json>,
    /// When it happened; defaults to when it is received.
    pub occurred_at: Option<DateTime<Utc>>,
}

/// What happened to one event of a batch.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum EventStatus {
    /// Stored now, and applied.
    New,
    /// Stored before with the same content; no effect.
    Duplicate,
    /// Not stored; see `error`.
    Rejected,
}

/// Why an event was rejected.
#[derive(SimpleObject, Clone, Debug)]
pub struct EventError {
    /// VALIDATION_FAILED or CONFLICT (the id was used for different content).
    pub code: String,
    /// What is wrong, in words.
    pub message: String,
}

/// A step an event completed.
#[derive(SimpleObject, Clone, Debug)]
pub struct CompletedStep {
    /// The flow's key.
    pub flow_key: String,
    /// The flow version of the enrollment.
    pub version: i32,
    /// The step's key.
    pub step_key: String,
    /// Set when the step is in a workspace's shared progress.
    pub workspace_id: Option<ID>,
}

/// The outcome of one event, in input order.
#[derive(SimpleObject, Clone, Debug)]
pub struct EventResult {
    /// The event's id, as sent.
    pub id: String,
    /// NEW, DUPLICATE or REJECTED.
    pub status: EventStatus,
    /// Why it was rejected; null otherwise.
    pub error: Option<EventError>,
    /// The steps this event completed, in every flow of the subject and of its workspace;
    /// empty for duplicates.
    pub completed: Vec<CompletedStep>,
}

#[derive(Default)]
pub struct EventMutation;

#[Object]
impl EventMutation {
    /// Stores a batch of events (at most 1000) and completes the steps they trigger, in
    /// one transaction. Each event gets a result, in input order: good events are applied
    /// even when others in the batch are rejected. Service and admin only.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn track_events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The events, 1 to 1000.")] events: Vec<EventInput>,
    ) -> Result<Vec<EventResult>> {
        track(ctx, events).await
    }

    /// One event; see trackEvents.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn track_event(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The event.")] event: EventInput,
    ) -> Result<EventResult> {
        let mut results = track(ctx, vec![event]).await?;
        Ok(results.remove(0))
    }
}

async fn track(ctx: &Context<'_>, events: Vec<EventInput>) -> Result<Vec<EventResult>> {
    principal(ctx)?.require(&[Role::Service, Role::Admin])?;
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    let inputs = events
        .into_iter()
        .map(|e| service::EventInput {
            id: e.id,
            subject_id: e.subject_id.map(|id| id.0),
            workspace_id: e.workspace_id.map(|id| id.0),
            name: e.name,
            properties: e.properties.map_or(Value::Object(Default::default()), |p| match p.0 {
                Value::Null => Value::Object(Default::default()),
                v => v,
            }),
            occurred_at: e.occurred_at,
        })
        .collect();
    let outcomes = onramp(ctx).track_events(inputs).await?;
    Ok(ids
        .into_iter()
        .zip(outcomes)
        .map(|(id, outcome)| match outcome {
            EventOutcome::New(completed) => EventResult {
                id,
                status: EventStatus::New,
                error: None,
                completed: completed
                    .into_iter()
                    .map(|c| CompletedStep {
                        flow_key: c.flow_key,
                        version: c.version,
                        step_key: c.step_key,
                        workspace_id: c.workspace_id.map(ID),
                    })
                    .collect(),
            },
            EventOutcome::Duplicate => {
                EventResult { id, status: EventStatus::Duplicate, error: None, completed: vec![] }
            }
            EventOutcome::Rejected(e) => EventResult {
                id,
                status: EventStatus::Rejected,
                error: Some(EventError { code: e.code.as_str().to_string(), message: e.message }),
                completed: vec![],
            },
        })
        .collect())
}
