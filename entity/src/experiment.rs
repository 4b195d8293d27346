//! An A/B experiment between versions of one flow.
use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "experiments")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub key: String,
    pub flow_key: String,
    /// DRAFT, RUNNING, STOPPED or COMPLETED (a winner was declared).
    pub state: String,
    pub winner: Option<String>,
    pub created_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub stopped_at: Option<DateTimeUtc>,
}

impl ActiveModelBehavior for ActiveModel {}
