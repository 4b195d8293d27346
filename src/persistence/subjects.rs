//! Subjects and their attributes. A subject is a user or a workspace: `external_id` is
//! the owner's key (see `domain::owner`).

use chrono::{DateTime, Utc};
use entity::subject;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter,
};
use serde_json::{Value, json};

use crate::domain::Owner;

#[derive(Clone, Debug, PartialEq)]
pub struct SubjectRecord {
    pub id: i64,
    pub external_id: String,
    pub attributes: Value,
}

impl SubjectRecord {
    /// The user or workspace this row stores.
    pub fn owner(&self) -> Owner {
        Owner::from_key(&self.external_id)
    }
}

impl From<subject::Model> for SubjectRecord {
    fn from(row: subject::Model) -> Self {
        SubjectRecord { id: row.id, external_id: row.external_id, attributes: row.attributes }
    }
}

pub async fn find(db: &impl ConnectionTrait, external_id: &str) -> Result<Option<SubjectRecord>, DbErr> {
    let row = subject::Entity::find().filter(subject::Column::ExternalId.eq(external_id)).one(db).await?;
    Ok(row.map(Into::into))
}

/// The subject, created with no attributes on first sight. Concurrent first sights are
/// safe: the insert does nothing when another transaction got there first.
pub async fn ensure(db: &impl ConnectionTrait, external_id: &str, now: DateTime<Utc>) -> Result<SubjectRecord, DbErr> {
    ensure_all(db, &[external_id], now)
        .await?
        .pop()
        .ok_or_else(|| DbErr::RecordNotFound(format!("subject {external_id}")))
}

/// `ensure` for several subjects: one query when all exist. `external_ids` are sorted, so
/// on PostgreSQL concurrent first sights of the same keys wait for each other in one order.
pub async fn ensure_all(
    db: &impl ConnectionTrait,
    external_ids: &[&str],
    now: DateTime<Utc>,
) -> Result<Vec<SubjectRecord>, DbErr> {
    let mut found = find_all(db, external_ids.iter().copied()).await?;
    let missing: Vec<&str> =
        external_ids.iter().copied().filter(|id| !found.iter().any(|s| s.external_id == *id)).collect();
    if missing.is_empty() {
        return Ok(found);
    }
    let rows = missing.iter().map(|id| subject::ActiveModel {
        id: NotSet,
        external_id: Set(id.to_string()),
        attributes: Set(json!({})),
        created_at: Set(now),
        updated_at: Set(now),
    });
    subject::Entity::insert_many(rows)
        .on_conflict_do_nothing_on([subject::Column::ExternalId])
        .exec_without_returning(db)
        .await?;
    let created = find_all(db, missing.iter().copied()).await?;
    if created.len() != missing.len() {
        return Err(DbErr::RecordNotFound(format!("subjects {missing:?}")));
    }
    found.extend(created);
    Ok(found)
}

async fn find_all(
    db: &impl ConnectionTrait,
    external_ids: impl IntoIterator<Item = &str>,
) -> Result<Vec<SubjectRecord>, DbErr> {
    let rows = subject::Entity::find().filter(subject::Column::ExternalId.is_in(external_ids)).all(db).await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

pub async fn set_attributes(
    db: &impl ConnectionTrait,
    id: i64,
    attributes: Value,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    subject::Entity::update_many()
        .col_expr(subject::Column::Attributes, attributes.into())
        .col_expr(subject::Column::UpdatedAt, now.into())
        .filter(subject::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

pub async fn by_ids(db: &impl ConnectionTrait, ids: Vec<i64>) -> Result<Vec<SubjectRecord>, DbErr> {
    let rows = subject::Entity::find().filter(subject::Column::Id.is_in(ids)).all(db).await?;
    Ok(rows.into_iter().map(Into::into).collect())
}
