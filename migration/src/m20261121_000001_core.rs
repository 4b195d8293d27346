//! The core tables: flows, subjects, enrollments and step progress.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("flows")
                    .col(big_pk_auto("id"))
                    .col(string("key"))
                    .col(integer("version"))
                    .col(string("status"))
                    .col(string("scope"))
                    .col(string("title"))
                    .col(text_null("description"))
                    .col(json_binary("definition"))
                    .col(timestamp_with_time_zone("created_at"))
                    .to_owned(),
            )
            .await?;
        // Publishing the same key again creates version n+1; the pair is the identity.
        index(manager, "flows_key_version", "flows", &["key", "version"], true).await?;

        manager
            .create_table(
                Table::create()
                    .table("subjects")
                    .col(big_pk_auto("id"))
                    .col(string_uniq("external_id"))
                    .col(json_binary("attributes"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("enrollments")
                    .col(big_pk_auto("id"))
                    .col(big_integer("subject_id"))
                    .col(big_integer("flow_id"))
                    .col(string("flow_key"))
                    .col(string("status"))
                    .col(timestamp_with_time_zone("started_at"))
                    .col(timestamp_with_time_zone_null("completed_at"))
                    .col(timestamp_with_time_zone_null("skipped_at"))
                    .col(timestamp_with_time_zone("last_activity_at"))
                    .col(big_integer("points").default(0))
                    .col(big_integer("revision").default(1))
                    .foreign_key(
                        ForeignKey::create()
                            .from("enrollments", "subject_id")
                            .to("subjects", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(ForeignKey::create().from("enrollments", "flow_id").to("flows", "id"))
                    .to_owned(),
            )
            .await?;
        // The hot path: a subject's enrollment in a flow, by key.
        index(manager, "enrollments_subject_flow_key", "enrollments", &["subject_id", "flow_key"], true).await?;
        // Analytics: funnels and stats per flow version, windowed on start time or by status.
        index(manager, "enrollments_flow_started", "enrollments", &["flow_id", "started_at"], false).await?;
        index(manager, "enrollments_flow_status", "enrollments", &["flow_id", "status"], false).await?;

        manager
            .create_table(
                Table::create()
                    .table("step_progress")
                    .col(big_pk_auto("id"))
                    .col(big_integer("enrollment_id"))
                    .col(string("step_key"))
                    .col(string("status"))
                    .col(timestamp_with_time_zone_null("started_at"))
                    .col(timestamp_with_time_zone_null("completed_at"))
                    .col(timestamp_with_time_zone_null("skipped_at"))
                    .col(text_null("skip_reason"))
                    .col(json_binary_null("metadata"))
                    .col(string("source"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("step_progress", "enrollment_id")
                            .to("enrollments", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // The hot path reads all steps of one enrollment; writes upsert one step.
        index(manager, "step_progress_enrollment_step", "step_progress", &["enrollment_id", "step_key"], true).await?;
        // Analytics: per-step status counts and completion times.
        index(manager, "step_progress_step_status", "step_progress", &["step_key", "status", "completed_at"], false)
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["step_progress", "enrollments", "subjects", "flows"] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}

async fn index(
    manager: &SchemaManager<'_>,
    name: &str,
    table: &'static str,
    columns: &[&'static str],
    unique: bool,
) -> Result<(), DbErr> {
    let mut stmt = Index::create();
    stmt.name(name).table(table);
    for column in columns {
        stmt.col(*column);
    }
    if unique {
        stmt.unique();
    }
    manager.create_index(stmt).await
}
