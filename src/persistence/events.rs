//! Stored product events.

use chrono::{DateTime, Utc};
use entity::event;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter,
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

/// Stores an event under its idempotency key. Returns false, writing nothing, when the
/// key is taken (by this transaction, an earlier one, or a concurrent one that commits).
pub async fn insert(
    db: &impl ConnectionTrait,
    event_id: &str,
    event: &StoredEvent,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let row = event::ActiveModel {
        id: NotSet,
        event_id: Set(event_id.to_string()),
        subject_id: Set(event.subject_id),
        name: Set(event.name.clone()),
        properties: Set(event.properties.clone()),
        occurred_at: Set(event.occurred_at),
        received_at: Set(now),
        workspace_id: Set(event.workspace_id),
    };
    let inserted = event::Entity::insert(row)
        .on_conflict_do_nothing_on([event::Column::EventId])
        .exec_without_returning(db)
        .await?;
    Ok(matches!(inserted, sea_orm::TryInsertResult::Inserted(n) if n > 0))
}

pub async fn find(db: &impl ConnectionTrait, event_id: &str) -> Result<Option<StoredEvent>, DbErr> {
    let row = event::Entity::find().filter(event::Column::EventId.eq(event_id)).one(db).await?;
    Ok(row.map(|r| StoredEvent {
        subject_id: r.subject_id,
        workspace_id: r.workspace_id,
        name: r.name,
        properties: r.properties,
        occurred_at: r.occurred_at,
    }))
}

/// The events with any of the given names that a subject's triggers see: a user's own
/// events, or every event that happened in a workspace, whoever sent it. Each names the
/// user who sent it, for `completedBy`.
pub async fn facts(
    db: &impl ConnectionTrait,
    subject: &SubjectRecord,
    names: &[&str],
) -> Result<Vec<EventFact>, DbErr> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let whose = match subject.owner() {
        Owner::User(_) => event::Column::SubjectId.eq(subject.id),
        Owner::Workspace(_) => event::Column::WorkspaceId.eq(subject.id),
    };
    let rows =
        event::Entity::find().filter(whose).filter(event::Column::Name.is_in(names.iter().copied())).all(db).await?;
    // Senders by row id; a workspace "sending" an event about itself names no user.
    let mut senders: Vec<i64> = rows.iter().map(|r| r.subject_id).collect();
    senders.sort_unstable();
    senders.dedup();
    let senders = if senders == [subject.id] { vec![subject.clone()] } else { subjects::by_ids(db, senders).await? };
    Ok(rows
        .into_iter()
        .map(|r| {
            let actor = senders.iter().find(|s| s.id == r.subject_id).and_then(|s| match s.owner() {
                Owner::User(id) => Some(id),
                Owner::Workspace(_) => None,
            });
            EventFact { id: r.event_id, name: r.name, properties: r.properties, occurred_at: r.occurred_at, actor }
        })
        .collect())
}
