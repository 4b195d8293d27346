//! Stored product events.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use entity::event;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryTrait,
    sea_query::OnConflict,
};
use serde_json::Value;

use super::subjects::{self, SubjectRecord};
use crate::domain::{EventFact, Owner};

#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    /// The user who sent it; for an event about a workspace alone, the workspace.
    pub subject_id: i64,
    /// The workspace's subject row, when the event happened in one.
    pub workspace_id: Option<i64>,
    pub name: String,
    pub properties: Value,
    pub occurred_at: DateTime<Utc>,
}

/// Stores events under their idempotency keys in one statement, and returns the keys it
/// stored: a key already taken (earlier, or by a concurrent transaction that commits) is
/// skipped. Keys must be distinct; on PostgreSQL each insert holds its key until commit,
/// so callers pass them in a fixed order (sorted) to keep concurrent batches deadlock-free.
pub async fn insert_all(
    db: &impl ConnectionTrait,
    events: &[(&str, &StoredEvent)],
    now: DateTime<Utc>,
) -> Result<HashSet<String>, DbErr> {
    if events.is_empty() {
        return Ok(HashSet::new());
    }
    let rows = events.iter().map(|(event_id, event)| event::ActiveModel {
        id: NotSet,
        event_id: Set(event_id.to_string()),
        subject_id: Set(event.subject_id),
        name: Set(event.name.clone()),
        properties: Set(event.properties.clone()),
        occurred_at: Set(event.occurred_at),
        received_at: Set(now),
        workspace_id: Set(event.workspace_id),
    });
    let mut insert = event::Entity::insert_many(rows)
        .on_conflict(OnConflict::column(event::Column::EventId).do_nothing().to_owned())
        .into_query();
    insert.returning_col(event::Column::EventId);
    db.query_all(&insert).await?.into_iter().map(|row| row.try_get::<String>("", "event_id")).collect()
}

/// Stored events by idempotency key; keys not stored are absent.
pub async fn find_all(
    db: &impl ConnectionTrait,
    event_ids: impl IntoIterator<Item = &str>,
) -> Result<HashMap<String, StoredEvent>, DbErr> {
    let rows = event::Entity::find().filter(event::Column::EventId.is_in(event_ids)).all(db).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let stored = StoredEvent {
                subject_id: r.subject_id,
                workspace_id: r.workspace_id,
                name: r.name,
                properties: r.properties,
                occurred_at: r.occurred_at,
            };
            (r.event_id, stored)
        })
        .collect())
}

/// The events with any of the given names that a subject's triggers see: a user's own
/// events, or every event that happened in a workspace, whoever sent it. Each names the
/// user who sent it, for `completedBy`.
pub async fn facts(
    db: &impl ConnectionTrait,
    subject: &SubjectRecord,
    names: &[&str],
) -> Result<Vec<EventFact>, DbErr> {
    let mut all = facts_of_all(db, std::slice::from_ref(subject), names).await?;
    Ok(all.remove(&subject.id).unwrap_or_default())
}

/// `facts` for several subjects in one query (two when a workspace's events were sent by
/// users not among them), by subject row id.
pub async fn facts_of_all(
    db: &impl ConnectionTrait,
    subjects: &[SubjectRecord],
    names: &[&str],
) -> Result<HashMap<i64, Vec<EventFact>>, DbErr> {
    if names.is_empty() || subjects.is_empty() {
        return Ok(HashMap::new());
    }
    let (users, workspaces): (Vec<&SubjectRecord>, Vec<&SubjectRecord>) =
        subjects.iter().partition(|s| matches!(s.owner(), Owner::User(_)));
    let whose = Condition::any()
        .add_option((!users.is_empty()).then(|| event::Column::SubjectId.is_in(users.iter().map(|s| s.id))))
        .add_option(
            (!workspaces.is_empty()).then(|| event::Column::WorkspaceId.is_in(workspaces.iter().map(|s| s.id))),
        );
    let rows =
        event::Entity::find().filter(whose).filter(event::Column::Name.is_in(names.iter().copied())).all(db).await?;
    // Senders by row id; a workspace "sending" an event about itself names no user.
    let mut senders: HashMap<i64, Option<String>> = subjects.iter().map(|s| (s.id, actor(s))).collect();
    let mut unknown: Vec<i64> = rows.iter().map(|r| r.subject_id).filter(|id| !senders.contains_key(id)).collect();
    unknown.sort_unstable();
    unknown.dedup();
    if !unknown.is_empty() {
        senders.extend(subjects::by_ids(db, unknown).await?.iter().map(|s| (s.id, actor(s))));
    }
    let user_ids: HashSet<i64> = users.iter().map(|s| s.id).collect();
    let workspace_ids: HashSet<i64> = workspaces.iter().map(|s| s.id).collect();
    let mut facts: HashMap<i64, Vec<EventFact>> = HashMap::new();
    for r in rows {
        let fact = EventFact {
            actor: senders.get(&r.subject_id).cloned().flatten(),
            id: r.event_id,
            name: r.name,
            properties: r.properties,
            occurred_at: r.occurred_at,
        };
        // An event in a workspace is seen by its sender and by the workspace.
        if let Some(workspace) = r.workspace_id.filter(|w| workspace_ids.contains(w)) {
            facts.entry(workspace).or_default().push(fact.clone());
        }
        if user_ids.contains(&r.subject_id) {
            facts.entry(r.subject_id).or_default().push(fact);
        }
    }
    Ok(facts)
}

/// The user a subject row names, for `completedBy`.
fn actor(subject: &SubjectRecord) -> Option<String> {
    match subject.owner() {
        Owner::User(id) => Some(id),
        Owner::Workspace(_) => None,
    }
}
