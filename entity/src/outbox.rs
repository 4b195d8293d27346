//! Domain events written in the same transaction as the change they describe; delivered
//! (as webhooks) after commit.
use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "outbox")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// A domain event kind (`domain::changes::DomainEventKind::name`, or `nudge_due` from the
    /// nudge scheduler); `domain::webhooks::EventType::of_outbox_kind` maps each to its webhook.
    pub kind: String,
    pub subject_id: String,
    pub flow_key: String,
    pub flow_version: i32,
    pub step_key: Option<String>,
    #[sea_orm(column_type = "JsonBinary")]
    pub payload: Json,
    pub created_at: DateTimeUtc,
    pub delivered_at: Option<DateTimeUtc>,
}

impl ActiveModelBehavior for ActiveModel {}
