//! One arm of an experiment: a flow version and its weight.
use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "experiment_variants")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub experiment_id: i64,
    pub name: String,
    pub version: i32,
    pub weight: i32,
}

impl ActiveModelBehavior for ActiveModel {}
