//! The analytics rollup's writes: the net cell changes of each enrollment save, appended
//! in the writer's transaction; the compactor that folds them into the counts; and the
//! rebuild from the rows, for a database that had data before the rollup existed (and for
//! demo-data, which loads rows in bulk). What a row counts for is `domain::rollup`'s
//! business; readers are in `analytics`.

use std::collections::BTreeMap;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, Value};

use super::{begin_write, enrollments, is_postgres};
use crate::domain::rollup::{self, Cell};

/// Rows per multi-row statement: 7 parameters each stays far below both backends' limits.
const CHUNK: usize = 1000;
const COLUMNS: &str = "flow_id, start_day, variant, step_key, measure, bucket, n";

fn insert_cells(backend: DbBackend, table: &str, cells: &[(Cell, i64)], upsert: bool) -> Option<Statement> {
    if cells.is_empty() {
        return None;
    }
    let mut values: Vec<Value> = Vec::with_capacity(cells.len() * 7);
    let mut rows = Vec::with_capacity(cells.len());
    for (cell, n) in cells {
        let base = values.len();
        rows.push(format!(
            "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
            base + 1,
            base + 2,
            base + 3,
            base + 4,
            base + 5,
            base + 6,
            base + 7
        ));
        values.extend([
            cell.flow_id.into(),
            cell.start_day.into(),
            cell.variant.clone().into(),
            cell.step_key.clone().into(),
            cell.measure.clone().into(),
            cell.bucket.into(),
            (*n).into(),
        ]);
    }
    let conflict = if upsert {
        " ON CONFLICT (flow_id, start_day, variant, step_key, measure, bucket) \
         DO UPDATE SET n = rollup_counts.n + excluded.n"
    } else {
        ""
    };
    let sql = format!("INSERT INTO {table} ({COLUMNS}) VALUES {}{conflict}", rows.join(", "));
    Some(Statement::from_sql_and_values(backend, sql, values))
}

/// Appends a save's net changes. Insert only: concurrent writers never wait on a cell.
pub async fn record(db: &impl ConnectionTrait, changes: &[(Cell, i64)]) -> Result<(), DbErr> {
    for statement in deltas(db.get_database_backend(), changes) {
        db.execute_raw(statement).await?;
    }
    Ok(())
}

/// The statements `record` runs, for a caller that sends them with others.
pub fn deltas(backend: DbBackend, changes: &[(Cell, i64)]) -> Vec<Statement> {
    changes.chunks(CHUNK).filter_map(|chunk| insert_cells(backend, "rollup_deltas", chunk, false)).collect()
}

/// Adds cells to the counts.
async fn add_counts(db: &impl ConnectionTrait, cells: &[(Cell, i64)]) -> Result<(), DbErr> {
    for chunk in cells.chunks(CHUNK) {
        if let Some(statement) = insert_cells(db.get_database_backend(), "rollup_counts", chunk, true) {
            db.execute_raw(statement).await?;
        }
    }
    Ok(())
}

/// Folds up to `limit` deltas into the counts, in one transaction; returns how many. The
/// DELETE ... RETURNING takes exactly the rows it folds, so deltas committed meanwhile
/// wait for the next round, and two compactors (two instances) never fold a row twice.
pub async fn compact(db: &DatabaseConnection, limit: u64) -> Result<u64, DbErr> {
    let txn = begin_write(db).await?;
    // An id range, so the plan is a primary-key range scan whatever the statistics say
    // (`id IN (SELECT ... LIMIT n)` was planned as a nested loop over a never-analyzed
    // table: minutes for 50,000 rows).
    let offset = limit.saturating_sub(1);
    let sql = format!(
        "DELETE FROM rollup_deltas WHERE id <= COALESCE(
             (SELECT id FROM rollup_deltas ORDER BY id LIMIT 1 OFFSET {offset}),
             (SELECT MAX(id) FROM rollup_deltas))
         RETURNING {COLUMNS}"
    );
    let rows = txn.query_all_raw(Statement::from_string(txn.get_database_backend(), sql)).await?;
    let mut net: BTreeMap<Cell, i64> = BTreeMap::new();
    for row in &rows {
        let cell = Cell {
            flow_id: row.try_get_by("flow_id")?,
            start_day: row.try_get_by("start_day")?,
            variant: row.try_get_by("variant")?,
            step_key: row.try_get_by("step_key")?,
            measure: row.try_get_by("measure")?,
            bucket: row.try_get_by("bucket")?,
        };
        *net.entry(cell).or_default() += row.try_get_by::<i64, _>("n")?;
    }
    // Sorted cells: two compactors lock counts in the same order and cannot deadlock.
    let net: Vec<(Cell, i64)> = net.into_iter().filter(|(_, n)| *n != 0).collect();
    add_counts(&txn, &net).await?;
    txn.commit().await?;
    Ok(rows.len() as u64)
}

/// Folds every delta there is. On PostgreSQL the deltas table is then vacuumed: it churns
/// by design (every row is deleted seconds after it is written), and readers scan it, so
/// its dead rows are cleared now rather than whenever autovacuum's thresholds say (or
/// never, where autovacuum is off). SKIP_LOCKED: another instance's vacuum is as good.
pub async fn compact_all(db: &DatabaseConnection) -> Result<(), DbErr> {
    let mut folded = 0;
    loop {
        let n = compact(db, 50_000).await?;
        if n == 0 {
            break;
        }
        folded += n;
    }
    if folded > 0 && is_postgres(db) {
        db.execute_unprepared("VACUUM (ANALYZE, SKIP_LOCKED) rollup_deltas").await?;
    }
    Ok(())
}

/// Builds the rollup once when it was never built from the rows: a database that had
/// enrollments before the rollup's migration. Instances starting at the same moment may
/// each rebuild; a rebuild replaces everything under its lock, so the later one only
/// repeats the work.
pub async fn ensure_built(db: &DatabaseConnection) -> Result<(), DbErr> {
    if built(db).await? {
        return Ok(());
    }
    rebuild(db).await
}

async fn built(db: &impl ConnectionTrait) -> Result<bool, DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), "SELECT built FROM rollup_state WHERE id = 1"))
        .await?;
    Ok(match row {
        Some(row) => row.try_get_by::<bool, _>("built")?,
        None => false,
    })
}

/// Recomputes the counts from the rows, in one transaction that holds writers off
/// (PostgreSQL: a SHARE lock on the rows' tables; SQLite: the write lock). Also fills
/// `elapsed_seconds` where it is missing, with the same function the write path uses.
pub async fn rebuild(db: &DatabaseConnection) -> Result<(), DbErr> {
    let txn = begin_write(db).await?;
    if is_postgres(db) {
        txn.execute_unprepared("LOCK TABLE enrollments, step_progress, rollup_deltas IN SHARE MODE").await?;
    }
    txn.execute_unprepared("DELETE FROM rollup_deltas").await?;
    txn.execute_unprepared("DELETE FROM rollup_counts").await?;
    let mut totals: BTreeMap<Cell, i64> = BTreeMap::new();
    let mut after = 0;
    loop {
        let batch = enrollments::batch_after(&txn, after, 5_000).await?;
        let Some(last) = batch.last() else { break };
        after = last.id;
        for record in &batch {
            for cell in rollup::cells(&record.cohort(), &record.state) {
                *totals.entry(cell).or_default() += 1;
            }
        }
        enrollments::fill_elapsed(&txn, &batch).await?;
    }
    let totals: Vec<(Cell, i64)> = totals.into_iter().collect();
    add_counts(&txn, &totals).await?;
    txn.execute_unprepared("UPDATE rollup_state SET built = TRUE WHERE id = 1").await?;
    txn.commit().await?;
    Ok(())
}

/// Keeps folding deltas in the background, every `period`. A failed round is logged and
/// retried; the counts stay exact meanwhile (readers add the deltas).
pub fn spawn_compactor(db: DatabaseConnection, period: std::time::Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(error) = compact_all(&db).await {
                tracing::warn!(%error, "compacting the analytics rollup failed; retrying next round");
            }
        }
    })
}
