//! The points ledger.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::points_entry;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, TryInsertResult,
};

#[derive(Clone, Debug, PartialEq)]
pub struct PointsEntry {
    pub amount: i64,
    pub reason: String,
    pub awarded_at: DateTime<Utc>,
}

/// Points for a subject, earned in one of its enrollments.
pub struct Award {
    pub subject_id: i64,
    pub enrollment_id: i64,
    pub amount: i64,
    pub reason: String,
}

/// Awards points, in one statement, except those a subject already has for the reason,
/// and returns what was awarded per enrollment: the entries actually inserted, read back
/// with RETURNING, so a caller holding the enrollment's lock can add them to its total
/// without summing the ledger again.
pub async fn award_all(
    db: &impl ConnectionTrait,
    awards: &[Award],
    now: DateTime<Utc>,
) -> Result<HashMap<i64, i64>, DbErr> {
    let mut awarded = HashMap::new();
    if awards.is_empty() {
        return Ok(awarded);
    }
    let rows = awards.iter().map(|a| points_entry::ActiveModel {
        id: NotSet,
        subject_id: Set(a.subject_id),
        enrollment_id: Set(a.enrollment_id),
        amount: Set(a.amount),
        reason: Set(a.reason.clone()),
        created_at: Set(now),
    });
    for rows in super::writes::row_chunks(rows) {
        let inserted = points_entry::Entity::insert_many(rows)
            .on_conflict_do_nothing_on([points_entry::Column::SubjectId, points_entry::Column::Reason])
            .exec_with_returning_many(db)
            .await?;
        if let TryInsertResult::Inserted(entries) = inserted {
            for entry in entries {
                let total: &mut i64 = awarded.entry(entry.enrollment_id).or_default();
                *total = total.saturating_add(entry.amount);
            }
        }
    }
    Ok(awarded)
}

/// A subject's entries, oldest first.
pub async fn entries(db: &impl ConnectionTrait, subject_id: i64) -> Result<Vec<PointsEntry>, DbErr> {
    let rows = points_entry::Entity::find()
        .filter(points_entry::Column::SubjectId.eq(subject_id))
        .order_by_asc(points_entry::Column::Id)
        .all(db)
        .await?;
    Ok(rows.into_iter().map(|r| PointsEntry { amount: r.amount, reason: r.reason, awarded_at: r.created_at }).collect())
}
