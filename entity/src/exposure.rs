//! The first time a subject was served a flow under an experiment: once per subject.
use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "exposures")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub experiment_id: i64,
    pub variant: String,
    pub subject_id: String,
    pub exposed_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
