//! Attempt numbers that go on across redeliveries. A redelivery or replay starts a new
//! round of the retry schedule (`attempts` counts the round, as the schedule needs);
//! `attempts_before` keeps what earlier rounds made, so the log numbers attempts 1, 2, 3…
//! for the life of a delivery instead of starting again at 1.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::integer;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter().table("webhook_deliveries").add_column(integer("attempts_before").default(0)).to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table("webhook_deliveries").drop_column("attempts_before").to_owned()).await
    }
}
