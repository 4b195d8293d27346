//! Workspace-scoped flows. A workspace is stored as a subject (key `workspace:<id>`), so
//! enrollments, the ledger and exposures need nothing new. What is new: the member who
//! completed each step, and the workspace an event happened in, so a workspace's
//! triggers see every member's events.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table("step_progress").add_column(string_null("completed_by")).to_owned())
            .await?;
        // The workspace's subject row; no foreign key, because SQLite cannot add one to an
        // existing table. Workspace subjects are never deleted on their own.
        manager
            .alter_table(Table::alter().table("events").add_column(big_integer_null("workspace_id")).to_owned())
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("events_workspace_name")
                    .table("events")
                    .col("workspace_id")
                    .col("name")
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name("events_workspace_name").table("events").to_owned()).await?;
        manager.alter_table(Table::alter().table("events").drop_column("workspace_id").to_owned()).await?;
        manager.alter_table(Table::alter().table("step_progress").drop_column("completed_by").to_owned()).await?;
        Ok(())
    }
}
