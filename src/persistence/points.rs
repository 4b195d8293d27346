//! The points ledger.

use chrono::{DateTime, Utc};
use entity::points_entry;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

#[derive(Clone, Debug, PartialEq)]
pub struct PointsEntry {
    pub amount: i64,
    pub reason: String,
    pub awarded_at: DateTime<Utc>,
}

/// Awards points unless this subject already has them for this reason.
pub async fn award(
    db: &impl ConnectionTrait,
    subject_id: i64,
    enrollment_id: i64,
    amount: i64,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let row = points_entry::ActiveModel {
        id: NotSet,
        subject_id: Set(subject_id),
        enrollment_id: Set(enrollment_id),
        amount: Set(amount),
        reason: Set(reason.to_string()),
        created_at: Set(now),
    };
    points_entry::Entity::insert(row)
        .on_conflict_do_nothing_on([points_entry::Column::SubjectId, points_entry::Column::Reason])
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Points earned in one enrollment.
pub async fn enrollment_total(db: &impl ConnectionTrait, enrollment_id: i64) -> Result<i64, DbErr> {
    let amounts: Vec<i64> = points_entry::Entity::find()
        .select_only()
        .column(points_entry::Column::Amount)
        .filter(points_entry::Column::EnrollmentId.eq(enrollment_id))
        .into_tuple()
        .all(db)
        .await?;
    Ok(amounts.into_iter().sum())
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
