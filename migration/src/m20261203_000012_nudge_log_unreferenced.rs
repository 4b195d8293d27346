//! The nudge log stops referencing enrollments by foreign key. It is an audit trail,
//! written 500 lines a tick by the scheduler, and on PostgreSQL each line's foreign-key
//! check is a `SELECT ... FOR KEY SHARE` of its enrollment: a row lock written into a
//! random enrollment page, 500 pages dirtied and WAL-logged per tick for nothing the log
//! needs (onramp never deletes enrollments, and every reader of the log joins or looks up
//! the enrollment and skips a line whose enrollment is gone). Without it the scheduler
//! decided 10 to 27% more nudges a second in the bench (BENCHMARKS.md).
//!
//! SQLite cannot drop a constraint, so there the table is rebuilt without it: the same
//! columns, rows and indexes, so both backends keep one schema.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

const CONSTRAINT: &str = "nudge_log_enrollment_id_fkey";
const COLUMNS: &str = "id, occurrence, subject_id, enrollment_id, flow_key, flow_version, rule_key, anchor_at, \
                       number, outcome, channel, title, message, at, until, dismissed_at";

/// The log table as migration 000010 created it, with or without the foreign key.
fn log_table(name: &str, referenced: bool) -> TableCreateStatement {
    let mut table = Table::create();
    table
        .table(Alias::new(name))
        .col(big_pk_auto("id"))
        .col(string("occurrence").unique_key())
        .col(big_integer("subject_id"))
        .col(big_integer("enrollment_id"))
        .col(string("flow_key"))
        .col(integer("flow_version"))
        .col(string("rule_key"))
        .col(timestamp_with_time_zone("anchor_at"))
        .col(integer("number"))
        .col(string("outcome"))
        .col(string("channel"))
        .col(text("title"))
        .col(text("message"))
        .col(timestamp_with_time_zone("at"))
        .col(timestamp_with_time_zone_null("until"))
        .col(timestamp_with_time_zone_null("dismissed_at"));
    if referenced {
        table.foreign_key(
            ForeignKey::create()
                .from(Alias::new(name), "enrollment_id")
                .to("enrollments", "id")
                .on_delete(ForeignKeyAction::Cascade),
        );
    }
    table.to_owned()
}

/// SQLite: copies the log into a table built with or without the key, in its place.
async fn rebuild(manager: &SchemaManager<'_>, referenced: bool) -> Result<(), DbErr> {
    let db = manager.get_connection();
    manager.create_table(log_table("nudge_log_rebuilt", referenced)).await?;
    db.execute_unprepared(&format!("INSERT INTO nudge_log_rebuilt ({COLUMNS}) SELECT {COLUMNS} FROM nudge_log"))
        .await?;
    db.execute_unprepared("DROP TABLE nudge_log").await?;
    db.execute_unprepared("ALTER TABLE nudge_log_rebuilt RENAME TO nudge_log").await?;
    // The indexes went with the old table; the same ones, as migration 000010 made them.
    manager
        .create_index(
            Index::create().name("nudge_log_subject").table("nudge_log").col("subject_id").col("at").to_owned(),
        )
        .await?;
    manager
        .create_index(
            Index::create().name("nudge_log_rule").table("nudge_log").col("flow_key").col("rule_key").to_owned(),
        )
        .await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// In one transaction on SQLite too (one connection, all or nothing): otherwise each
    /// statement of the rebuild may run on another pooled connection, one still reading a
    /// snapshot with the old table in it.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            DatabaseBackend::Postgres => {
                let sql = format!("ALTER TABLE nudge_log DROP CONSTRAINT IF EXISTS {CONSTRAINT}");
                manager.get_connection().execute_unprepared(&sql).await.map(|_| ())
            }
            _ => rebuild(manager, false).await,
        }
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            DatabaseBackend::Postgres => {
                let sql = format!(
                    "ALTER TABLE nudge_log ADD CONSTRAINT {CONSTRAINT} FOREIGN KEY (enrollment_id) \
                     REFERENCES enrollments (id) ON DELETE CASCADE"
                );
                manager.get_connection().execute_unprepared(&sql).await.map(|_| ())
            }
            _ => rebuild(manager, true).await,
        }
    }
}
