//! A product event, stored exactly once under the sender's idempotency key.
use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub event_id: String,
    pub subject_id: i64,
    pub name: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub properties: Json,
    pub occurred_at: DateTimeUtc,
    pub received_at: DateTimeUtc,
    /// The workspace's subject row when the event happened in a workspace.
    pub workspace_id: Option<i64>,
}

impl ActiveModelBehavior for ActiveModel {}
