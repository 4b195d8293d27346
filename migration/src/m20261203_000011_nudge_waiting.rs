//! Marks a schedule row whose occurrence came due and waits (for the end of quiet hours,
//! or for the subject's fatigue budget). Progress must not quietly replace such a row: the
//! scheduler has to see the occurrence no longer hold and log it cancelled by progress, so
//! the nudge log can say why a nudge that was on its way never arrived.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::boolean;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter().table("nudge_schedule").add_column(boolean("waiting").default(false)).to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table("nudge_schedule").drop_column("waiting").to_owned()).await
    }
}
