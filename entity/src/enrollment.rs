//! A subject's pass through one flow, pinned to the flow version it started on.
use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "enrollments")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub subject_id: i64,
    /// The pinned flow version (a row of `flows`).
    pub flow_id: i64,
    /// Denormalised from the flow so (subject, flow key) can be unique.
    pub flow_key: String,
    /// IN_PROGRESS, COMPLETED or SKIPPED.
    pub status: String,
    pub started_at: DateTimeUtc,
    pub completed_at: Option<DateTimeUtc>,
    pub skipped_at: Option<DateTimeUtc>,
    pub last_activity_at: DateTimeUtc,
    pub points: i64,
    /// Bumped on every change, so clients can order snapshots.
    pub revision: i64,
    /// The experiment that assigned the version, and the variant: sticky once set.
    pub experiment_key: Option<String>,
    pub variant: Option<String>,
    /// Seconds from start to completion; set on completed enrollments only (analytics
    /// percentiles read it through an index).
    pub elapsed_seconds: Option<f64>,
}

impl ActiveModelBehavior for ActiveModel {}
