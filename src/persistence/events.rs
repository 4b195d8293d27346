//! Stored product events.

use chrono::{DateTime, Utc};
use entity::event;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter,
};
use serde_json::Value;

use crate::domain::EventFact;

#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    pub subject_id: i64,
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
        name: r.name,
        properties: r.properties,
        occurred_at: r.occurred_at,
    }))
}

/// A subject's events with any of the given names, as triggers see them.
pub async fn facts(db: &impl ConnectionTrait, subject_id: i64, names: &[&str]) -> Result<Vec<EventFact>, DbErr> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let rows = event::Entity::find()
        .filter(event::Column::SubjectId.eq(subject_id))
        .filter(event::Column::Name.is_in(names.iter().copied()))
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| EventFact { id: r.event_id, name: r.name, properties: r.properties, occurred_at: r.occurred_at })
        .collect())
}
