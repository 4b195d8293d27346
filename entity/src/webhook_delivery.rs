//! One event for one endpoint: its stable `webhook-id` and where its retries stand.
use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_deliveries")]
pub struct Model {
    /// A UUID (v7) as text: time-ordered, so the log pages by id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub outbox_id: i64,
    pub endpoint_id: String,
    /// The `webhook-id` header, `msg_...`.
    pub message_id: String,
    pub event_type: String,
    /// PENDING, SENDING, FAILED, SUCCEEDED or DEAD.
    pub status: String,
    /// Attempts in the current round of the retry schedule.
    pub attempts: i32,
    /// Attempts of earlier rounds (before a redelivery or replay): log numbers go on.
    pub attempts_before: i32,
    pub next_attempt_at: DateTimeUtc,
    pub lease: Option<String>,
    pub last_attempt_at: Option<DateTimeUtc>,
    pub last_status_code: Option<i32>,
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
