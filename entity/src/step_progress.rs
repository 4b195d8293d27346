//! One step's state inside an enrollment. Every step that applies has a row from the
//! moment it applies (PENDING until acted on); a step with no row is PENDING too.
use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "step_progress")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub enrollment_id: i64,
    pub step_key: String,
    /// PENDING, IN_PROGRESS, COMPLETED or SKIPPED.
    pub status: String,
    pub started_at: Option<DateTimeUtc>,
    pub completed_at: Option<DateTimeUtc>,
    pub skipped_at: Option<DateTimeUtc>,
    pub skip_reason: Option<String>,
    /// What the subject answered, e.g. `{"invited_count": 3}`.
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub metadata: Option<Json>,
    /// USER, EVENT or ADMIN.
    pub source: String,
    pub updated_at: DateTimeUtc,
    /// The product event that completed the step, when one did.
    pub event_id: Option<String>,
    /// Who completed or skipped the step: for a workspace, the member who acted.
    pub completed_by: Option<String>,
    /// When the step first became available: the funnel's "reached".
    pub available_at: Option<DateTimeUtc>,
    /// Seconds from the enrollment's start to this step's completion; set on completed
    /// steps only (analytics percentiles read it through an index).
    pub elapsed_seconds: Option<f64>,
}

impl ActiveModelBehavior for ActiveModel {}
