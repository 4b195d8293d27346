//! One request made for a delivery, and what came back.
use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_attempts")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub delivery_id: String,
    /// 1 for the first attempt of the delivery.
    pub number: i32,
    pub attempted_at: DateTimeUtc,
    pub status_code: Option<i32>,
    pub latency_ms: i64,
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    /// At most 1 KiB of the response body.
    #[sea_orm(column_type = "Text", nullable)]
    pub response_body: Option<String>,
}

impl ActiveModelBehavior for ActiveModel {}
