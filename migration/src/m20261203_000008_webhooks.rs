//! Webhooks: endpoints (where events go, with their signing secrets), deliveries (one per
//! outbox row and endpoint, carrying the stable `webhook-id` and the retry state) and the
//! log of attempts.
//!
//! The outbox's `delivered_at` now means "fanned out into deliveries": the dispatcher sets
//! it in the transaction that inserts them.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("webhook_endpoints")
                    // A UUID (v7) as text, the same on both backends.
                    .col(string("id").primary_key())
                    .col(text("url"))
                    // `["*"]` or event type names.
                    .col(json_binary("event_types"))
                    .col(text_null("description"))
                    .col(boolean("enabled"))
                    .col(text_null("disabled_reason"))
                    .col(string("secret"))
                    // The secret a rotation replaced, signing alongside until it expires.
                    .col(string_null("previous_secret"))
                    .col(timestamp_with_time_zone_null("previous_secret_expires_at"))
                    // Start of the current run of failed attempts; NULL while healthy.
                    .col(timestamp_with_time_zone_null("failing_since"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("webhook_deliveries")
                    .col(string("id").primary_key())
                    .col(big_integer("outbox_id"))
                    .col(string("endpoint_id"))
                    // The `webhook-id` header: the same on every attempt and redelivery.
                    .col(string("message_id"))
                    .col(string("event_type"))
                    // PENDING, SENDING, FAILED, SUCCEEDED or DEAD.
                    .col(string("status"))
                    .col(integer("attempts").default(0))
                    // When it is due; while SENDING, when the claim's lease runs out.
                    .col(timestamp_with_time_zone("next_attempt_at"))
                    // Set by each claim, so only the claim's holder records its outcome.
                    .col(string_null("lease"))
                    .col(timestamp_with_time_zone_null("last_attempt_at"))
                    .col(integer_null("last_status_code"))
                    .col(text_null("last_error"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("webhook_deliveries", "outbox_id")
                            .to("outbox", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from("webhook_deliveries", "endpoint_id")
                            .to("webhook_endpoints", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // One logical delivery per event and endpoint: a repeated fan-out inserts nothing.
        manager
            .create_index(
                Index::create()
                    .name("webhook_deliveries_outbox_endpoint")
                    .table("webhook_deliveries")
                    .col("outbox_id")
                    .col("endpoint_id")
                    .unique()
                    .to_owned(),
            )
            .await?;
        // The delivery log of an endpoint, newest first (ids are time-ordered UUIDs).
        manager
            .create_index(
                Index::create()
                    .name("webhook_deliveries_endpoint_id")
                    .table("webhook_deliveries")
                    .col("endpoint_id")
                    .col("id")
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        // Claiming reads only unfinished deliveries by due time: a partial index stays as
        // small as the backlog, however long the history kept for the log.
        db.execute_unprepared(
            "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) \
             WHERE status IN ('PENDING', 'SENDING', 'FAILED')",
        )
        .await?;
        // Pruning finds old finished deliveries.
        db.execute_unprepared(
            "CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (updated_at) \
             WHERE status IN ('SUCCEEDED', 'DEAD')",
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table("webhook_attempts")
                    .col(big_pk_auto("id"))
                    .col(string("delivery_id"))
                    .col(integer("number"))
                    .col(timestamp_with_time_zone("attempted_at"))
                    // NULL when there was no answer (see `error`).
                    .col(integer_null("status_code"))
                    .col(big_integer("latency_ms"))
                    .col(text_null("error"))
                    // At most 1 KiB of what the receiver answered.
                    .col(text_null("response_body"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("webhook_attempts", "delivery_id")
                            .to("webhook_deliveries", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("webhook_attempts_delivery")
                    .table("webhook_attempts")
                    .col("delivery_id")
                    .col("id")
                    .to_owned(),
            )
            .await?;
        // Replay finds an endpoint's events since a time; pruning finds old fanned-out rows.
        manager
            .create_index(Index::create().name("outbox_created").table("outbox").col("created_at").to_owned())
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name("outbox_created").table("outbox").to_owned()).await?;
        for table in ["webhook_attempts", "webhook_deliveries", "webhook_endpoints"] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
