//! The analytics rollup: counts per cohort cell, kept exact in the write transaction.
//!
//! A cell is (flow version row, variant, UTC start day of the enrollment, step key, measure,
//! bucket). Writers never update a cell: each write transaction appends its net changes to
//! `rollup_deltas` (insert only, so concurrent writers never wait on one another), and a
//! compactor folds deltas into `rollup_counts`. Readers sum both tables in one statement,
//! so what they see is exact at their snapshot, however far behind the compactor is.
//!
//! Percentiles need the values themselves: `elapsed_seconds` (enrollment start to the
//! completion) on completed enrollments and steps, indexed, lets a reader fetch the few
//! values of the one histogram bucket that holds the rank it wants.
//!
//! `rollup_state` says whether the counts were built from the rows: the server builds them
//! once, at start, when they were not (a database that had data before this migration).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

fn cell_columns(table: &mut TableCreateStatement) -> &mut TableCreateStatement {
    table
        .col(big_integer("flow_id"))
        // '' for enrollments outside any experiment, so the column can be part of a key.
        .col(string("variant"))
        // Days since 1970-01-01, UTC, of the enrollment's start.
        .col(integer("start_day"))
        // '' for the enrollment itself.
        .col(string("step_key"))
        .col(string("measure"))
        .col(integer("bucket"))
        .col(big_integer("n"))
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                cell_columns(Table::create().table("rollup_counts"))
                    .primary_key(
                        Index::create()
                            .col("flow_id")
                            .col("start_day")
                            .col("variant")
                            .col("step_key")
                            .col("measure")
                            .col("bucket"),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(cell_columns(Table::create().table("rollup_deltas").col(big_pk_auto("id"))).to_owned())
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_rollup_deltas_cell")
                    .table("rollup_deltas")
                    .col("flow_id")
                    .col("start_day")
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create().table("rollup_state").col(integer("id").primary_key()).col(boolean("built")).to_owned(),
            )
            .await?;
        // Empty databases need no build; one with enrollments gets built by the server.
        manager
            .get_connection()
            .execute_unprepared(
                "INSERT INTO rollup_state (id, built) \
                 SELECT 1, NOT EXISTS (SELECT 1 FROM enrollments)",
            )
            .await?;
        for table in ["enrollments", "step_progress"] {
            manager
                .alter_table(Table::alter().table(table).add_column(double_null("elapsed_seconds")).to_owned())
                .await?;
        }
        // Only completed rows have a value: partial indexes stay as small as their use. The
        // trailing columns let a percentile read check its cohort from the index alone.
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX idx_step_progress_elapsed ON step_progress (step_key, elapsed_seconds, enrollment_id) \
             WHERE elapsed_seconds IS NOT NULL",
        )
        .await?;
        db.execute_unprepared(
            "CREATE INDEX idx_enrollments_elapsed ON enrollments (flow_id, elapsed_seconds, started_at, variant) \
             WHERE elapsed_seconds IS NOT NULL",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX idx_step_progress_elapsed").await?;
        db.execute_unprepared("DROP INDEX idx_enrollments_elapsed").await?;
        for table in ["enrollments", "step_progress"] {
            manager.alter_table(Table::alter().table(table).drop_column("elapsed_seconds").to_owned()).await?;
        }
        for table in ["rollup_state", "rollup_deltas", "rollup_counts"] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
