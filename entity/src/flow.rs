//! One published version of a flow. Rows are immutable once written, except `status`.
use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "flows")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub key: String,
    pub version: i32,
    /// DRAFT, ACTIVE or DEPRECATED.
    pub status: String,
    /// USER or WORKSPACE.
    pub scope: String,
    pub title: String,
    pub description: Option<String>,
    /// The flow definition as published (JSON: `{"key", "title", "steps": [...]}`).
    #[sea_orm(column_type = "JsonBinary")]
    pub definition: Json,
    pub created_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
