//! The points ledger.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::points_entry;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::Expr,
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

/// Awards points, in one statement, except those a subject already has for the reason.
pub async fn award_all(db: &impl ConnectionTrait, awards: &[Award], now: DateTime<Utc>) -> Result<(), DbErr> {
    if awards.is_empty() {
        return Ok(());
    }
    let rows = awards.iter().map(|a| points_entry::ActiveModel {
        id: NotSet,
        subject_id: Set(a.subject_id),
        enrollment_id: Set(a.enrollment_id),
        amount: Set(a.amount),
        reason: Set(a.reason.clone()),
        created_at: Set(now),
    });
    points_entry::Entity::insert_many(rows)
        .on_conflict_do_nothing_on([points_entry::Column::SubjectId, points_entry::Column::Reason])
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Points earned in each of some enrollments, summed by the database; an enrollment with
/// no entries is absent.
pub async fn enrollment_totals(db: &impl ConnectionTrait, enrollment_ids: &[i64]) -> Result<HashMap<i64, i64>, DbErr> {
    if enrollment_ids.is_empty() {
        return Ok(HashMap::new());
    }
    // SUM of a bigint is numeric on PostgreSQL: cast it back.
    let totals: Vec<(i64, i64)> = points_entry::Entity::find()
        .select_only()
        .column(points_entry::Column::EnrollmentId)
        .expr(Expr::cust("CAST(SUM(amount) AS BIGINT)"))
        .filter(points_entry::Column::EnrollmentId.is_in(enrollment_ids.iter().copied()))
        .group_by(points_entry::Column::EnrollmentId)
        .into_tuple()
        .all(db)
        .await?;
    Ok(totals.into_iter().collect())
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
