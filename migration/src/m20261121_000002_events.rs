//! Product events (stored exactly once, by idempotency key), the transactional outbox of
//! domain events, and the event that completed a step.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("events")
                    .col(big_pk_auto("id"))
                    // The sender's idempotency key.
                    .col(string_uniq("event_id"))
                    .col(big_integer("subject_id"))
                    .col(string("name"))
                    .col(json_binary("properties"))
                    .col(timestamp_with_time_zone("occurred_at"))
                    .col(timestamp_with_time_zone("received_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("events", "subject_id")
                            .to("subjects", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // Triggers look up a subject's events by name; retention analytics by time.
        manager
            .create_index(
                Index::create().name("events_subject_name").table("events").col("subject_id").col("name").to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("events_subject_occurred")
                    .table("events")
                    .col("subject_id")
                    .col("occurred_at")
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("outbox")
                    // The id orders domain events as they were committed per enrollment.
                    .col(big_pk_auto("id"))
                    .col(string("kind"))
                    .col(string("subject_id"))
                    .col(string("flow_key"))
                    .col(integer("flow_version"))
                    .col(string_null("step_key"))
                    .col(json_binary("payload"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("delivered_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name("outbox_pending").table("outbox").col("delivered_at").col("id").to_owned(),
            )
            .await?;

        manager
            .alter_table(Table::alter().table("step_progress").add_column(string_null("event_id")).to_owned())
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table("step_progress").drop_column("event_id").to_owned()).await?;
        manager.drop_table(Table::drop().table("outbox").to_owned()).await?;
        manager.drop_table(Table::drop().table("events").to_owned()).await?;
        Ok(())
    }
}
