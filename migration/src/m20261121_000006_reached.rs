//! When each step first became available ("reached", for funnels). From now on every step
//! that applies has a row from enrollment on. Rows written before this migration get the
//! best time known: when the step was first acted on.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("step_progress")
                    .add_column(timestamp_with_time_zone_null("available_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE step_progress SET available_at = COALESCE(started_at, completed_at, skipped_at) \
                 WHERE status <> 'PENDING'",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table("step_progress").drop_column("available_at").to_owned()).await?;
        Ok(())
    }
}
