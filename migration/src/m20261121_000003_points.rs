//! The points ledger: every award once, with its reason.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("points_ledger")
                    .col(big_pk_auto("id"))
                    .col(big_integer("subject_id"))
                    .col(big_integer("enrollment_id"))
                    .col(big_integer("amount"))
                    // onboarding:<flow>:<step>
                    .col(string("reason"))
                    .col(timestamp_with_time_zone("created_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("points_ledger", "subject_id")
                            .to("subjects", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from("points_ledger", "enrollment_id")
                            .to("enrollments", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // Exactly once per subject and reason, whoever races to award it.
        manager
            .create_index(
                Index::create()
                    .name("points_ledger_subject_reason")
                    .table("points_ledger")
                    .col("subject_id")
                    .col("reason")
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name("points_ledger_enrollment").table("points_ledger").col("enrollment_id").to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table("points_ledger").to_owned()).await
    }
}
