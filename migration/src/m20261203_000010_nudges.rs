//! Nudges: the next due time of every (enrollment, rule), kept by the write that changes
//! the enrollment, and the log of what the scheduler did with each occurrence.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("nudge_schedule")
                    .col(big_integer("enrollment_id"))
                    .col(string("rule_key"))
                    // The enrollment's subject, so a tick groups by subject without a join.
                    .col(big_integer("subject_id"))
                    // Where the rule measures from; NULL while it does not apply.
                    .col(timestamp_with_time_zone_null("anchor_at"))
                    // The occurrence due next, from 1 for each anchor.
                    .col(integer("number"))
                    // When to look at it next; NULL: never, until a write says otherwise.
                    .col(timestamp_with_time_zone_null("due_at"))
                    .primary_key(Index::create().col("enrollment_id").col("rule_key"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("nudge_schedule", "enrollment_id")
                            .to("enrollments", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // A tick reads only what is due: a partial index as small as the rows with a due
        // time, so an idle tick is one probe however many enrollments there are.
        manager
            .get_connection()
            .execute_unprepared("CREATE INDEX nudge_schedule_due ON nudge_schedule (due_at) WHERE due_at IS NOT NULL")
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("nudge_log")
                    .col(big_pk_auto("id"))
                    // One row per occurrence and outcome kind: `<enrollment>:<rule>:<anchor
                    // micros>:<number>`, with `:quiet` for the wait in quiet hours. Unique, so
                    // each occurrence is sent once across instances and restarts.
                    .col(string("occurrence").unique_key())
                    .col(big_integer("subject_id"))
                    .col(big_integer("enrollment_id"))
                    .col(string("flow_key"))
                    .col(integer("flow_version"))
                    .col(string("rule_key"))
                    .col(timestamp_with_time_zone("anchor_at"))
                    .col(integer("number"))
                    // SENT, SUPPRESSED_BY_CAP, SUPPRESSED_BY_QUIET_HOURS, CANCELLED_BY_PROGRESS
                    // or HELD_OUT.
                    .col(string("outcome"))
                    .col(string("channel"))
                    .col(text("title"))
                    .col(text("message"))
                    .col(timestamp_with_time_zone("at"))
                    // Quiet hours: when the nudge is due again.
                    .col(timestamp_with_time_zone_null("until"))
                    .col(timestamp_with_time_zone_null("dismissed_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("nudge_log", "enrollment_id")
                            .to("enrollments", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // A subject's log and recent sends (the fatigue budget), newest first.
        manager
            .create_index(
                Index::create().name("nudge_log_subject").table("nudge_log").col("subject_id").col("at").to_owned(),
            )
            .await?;
        // Results per rule.
        manager
            .create_index(
                Index::create().name("nudge_log_rule").table("nudge_log").col("flow_key").col("rule_key").to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["nudge_log", "nudge_schedule"] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
