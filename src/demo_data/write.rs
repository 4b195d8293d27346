//! Bulk writing of generated subjects, one transaction per batch: `COPY ... FROM STDIN` on
//! PostgreSQL (an order of magnitude faster than INSERT for millions of rows), multi-row
//! INSERTs with bound parameters on SQLite. Subject and enrollment ids are reserved up
//! front (PostgreSQL: from their sequences, so concurrent writers never collide; SQLite:
//! after the largest id, under the write lock), so child rows name their parents without
//! reading anything back. The columns are the ones the engine's own writes fill.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use sea_orm::sqlx;
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, Statement, Value};

use super::simulate::{Generated, World};
use crate::domain::rollup::{self, Cell, Cohort};
use crate::persistence::begin_write;

/// A column value, rendered by each backend's writer.
enum Field<'a> {
    Int(i64),
    Bool(bool),
    Float(Option<f64>),
    Text(Option<&'a str>),
    Time(Option<DateTime<Utc>>),
    Json(Option<&'a serde_json::Value>),
}

fn text(s: &str) -> Field<'_> {
    Field::Text(Some(s))
}

fn time(t: DateTime<Utc>) -> Field<'static> {
    Field::Time(Some(t))
}

struct Table {
    name: &'static str,
    columns: &'static [&'static str],
}

const SUBJECTS: usize = 0;
const ENROLLMENTS: usize = 1;
const STEPS: usize = 2;
const LEDGER: usize = 3;
const EVENTS: usize = 4;
const EXPOSURES: usize = 5;
const ROLLUP: usize = 6;
const NUDGE_SCHEDULE: usize = 7;
const NUDGE_LOG: usize = 8;

/// In writing order: parents first.
const TABLES: [Table; 9] = [
    Table { name: "subjects", columns: &["id", "external_id", "attributes", "created_at", "updated_at"] },
    Table {
        name: "enrollments",
        columns: &[
            "id",
            "subject_id",
            "flow_id",
            "flow_key",
            "status",
            "started_at",
            "completed_at",
            "skipped_at",
            "last_activity_at",
            "points",
            "revision",
            "experiment_key",
            "variant",
            "elapsed_seconds",
        ],
    },
    // Every column `enrollments::save_all` writes.
    Table {
        name: "step_progress",
        columns: &[
            "enrollment_id",
            "step_key",
            "status",
            "started_at",
            "completed_at",
            "skipped_at",
            "skip_reason",
            "metadata",
            "source",
            "updated_at",
            "event_id",
            "completed_by",
            "available_at",
            "elapsed_seconds",
        ],
    },
    Table { name: "points_ledger", columns: &["subject_id", "enrollment_id", "amount", "reason", "created_at"] },
    Table { name: "events", columns: &["event_id", "subject_id", "name", "properties", "occurred_at", "received_at"] },
    Table { name: "exposures", columns: &["experiment_id", "variant", "subject_id", "exposed_at"] },
    // The batch's analytics cells, as the write path would have appended them.
    Table {
        name: "rollup_deltas",
        columns: &["flow_id", "start_day", "variant", "step_key", "measure", "bucket", "n"],
    },
    // The columns `persistence::nudges::schedule` and `log` write.
    Table {
        name: "nudge_schedule",
        columns: &["enrollment_id", "rule_key", "subject_id", "anchor_at", "number", "due_at", "waiting"],
    },
    Table {
        name: "nudge_log",
        columns: &[
            "occurrence",
            "subject_id",
            "enrollment_id",
            "flow_key",
            "flow_version",
            "rule_key",
            "anchor_at",
            "number",
            "outcome",
            "channel",
            "title",
            "message",
            "at",
            "until",
            "dismissed_at",
        ],
    },
];

trait Sink {
    fn row(&mut self, table: usize, fields: &[Field<'_>]);
}

/// Every row of a batch, table by table.
fn render(world: &World, subjects: &[Generated], subject_ids: &[i64], enrollment_ids: &[i64], sink: &mut impl Sink) {
    let flow_key = world.latest.key.as_str();
    let mut cells: BTreeMap<Cell, i64> = BTreeMap::new();
    for ((s, &subject_id), &enrollment_id) in subjects.iter().zip(subject_ids).zip(enrollment_ids) {
        let e = &s.enrollment;
        let cohort = Cohort {
            flow_id: s.flow_id,
            variant: s.assigned.as_ref().map(|a| a.variant.clone()),
            started_at: e.started_at,
        };
        for cell in rollup::cells(&cohort, e) {
            *cells.entry(cell).or_default() += 1;
        }
        sink.row(
            SUBJECTS,
            &[
                Field::Int(subject_id),
                text(&s.external_id),
                Field::Json(Some(&s.attributes)),
                time(e.started_at),
                time(e.started_at),
            ],
        );
        sink.row(
            ENROLLMENTS,
            &[
                Field::Int(enrollment_id),
                Field::Int(subject_id),
                Field::Int(s.flow_id),
                text(flow_key),
                text(e.status.name()),
                time(e.started_at),
                Field::Time(e.completed_at),
                Field::Time(e.skipped_at),
                time(e.last_activity_at),
                Field::Int(e.points),
                Field::Int(e.revision),
                Field::Text(s.assigned.as_ref().map(|a| a.experiment_key.as_str())),
                Field::Text(s.assigned.as_ref().map(|a| a.variant.as_str())),
                Field::Float(rollup::enrollment_elapsed(e)),
            ],
        );
        for (key, step) in &e.steps {
            let updated = s.updated.get(key).copied().unwrap_or(e.last_activity_at);
            sink.row(
                STEPS,
                &[
                    Field::Int(enrollment_id),
                    text(key),
                    text(step.status.name()),
                    Field::Time(step.started_at),
                    Field::Time(step.completed_at),
                    Field::Time(step.skipped_at),
                    Field::Text(step.skip_reason.as_deref()),
                    Field::Json(step.metadata.as_ref()),
                    text(step.source.name()),
                    time(updated),
                    Field::Text(step.event_id.as_deref()),
                    Field::Text(step.completed_by.as_deref()),
                    Field::Time(step.available_at),
                    Field::Float(rollup::step_elapsed(e, key)),
                ],
            );
        }
        for award in &s.ledger {
            sink.row(
                LEDGER,
                &[
                    Field::Int(subject_id),
                    Field::Int(enrollment_id),
                    Field::Int(award.amount),
                    text(&award.reason),
                    time(award.at),
                ],
            );
        }
        for event in &s.events {
            sink.row(
                EVENTS,
                &[
                    text(&event.id),
                    Field::Int(subject_id),
                    text(&event.name),
                    Field::Json(Some(&event.properties)),
                    time(event.at),
                    time(event.at),
                ],
            );
        }
        if let Some(a) = &s.assigned
            && let Some(experiment_id) = a.exposure
        {
            sink.row(
                EXPOSURES,
                &[Field::Int(experiment_id), text(&a.variant), text(&s.external_id), time(e.started_at)],
            );
        }
        let rules = &s.definition.nudges.rules;
        for (rule, row) in rules.iter().zip(&s.schedule) {
            sink.row(
                NUDGE_SCHEDULE,
                &[
                    Field::Int(enrollment_id),
                    text(&rule.key),
                    Field::Int(subject_id),
                    Field::Time(row.anchor),
                    Field::Int(row.number.into()),
                    Field::Time(row.due),
                    Field::Bool(row.waiting),
                ],
            );
        }
        let locale = crate::domain::text::subject_locale(&s.attributes);
        for logged in &s.nudge_log {
            let rule = &rules[logged.rule];
            let texts = rule.texts(locale, s.definition.default_locale());
            // The scheduler's occurrence key (`service::nudges::log_entry`).
            let occurrence = format!(
                "{enrollment_id}:{}:{}:{}{}",
                rule.key,
                logged.anchor.timestamp_micros(),
                logged.number,
                logged.suffix()
            );
            sink.row(
                NUDGE_LOG,
                &[
                    text(&occurrence),
                    Field::Int(subject_id),
                    Field::Int(enrollment_id),
                    text(flow_key),
                    Field::Int(s.flow_version.into()),
                    text(&rule.key),
                    time(logged.anchor),
                    Field::Int(logged.number.into()),
                    text(logged.outcome),
                    text(rule.channel.name()),
                    text(texts.title),
                    text(texts.message),
                    time(logged.at),
                    Field::Time(logged.until),
                    Field::Time(None),
                ],
            );
        }
    }
    for (cell, n) in &cells {
        sink.row(
            ROLLUP,
            &[
                Field::Int(cell.flow_id),
                Field::Int(cell.start_day.into()),
                text(&cell.variant),
                text(&cell.step_key),
                text(&cell.measure),
                Field::Int(cell.bucket.into()),
                Field::Int(*n),
            ],
        );
    }
}

// --- PostgreSQL: COPY in text format ---

/// One buffer of COPY text per table.
struct CopyText(Vec<Vec<u8>>);

impl Sink for CopyText {
    fn row(&mut self, table: usize, fields: &[Field<'_>]) {
        use std::io::Write;
        let out = &mut self.0[table];
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                out.push(b'\t');
            }
            match field {
                Field::Int(n) => {
                    let _ = write!(out, "{n}");
                }
                Field::Bool(b) => out.extend_from_slice(if *b { b"t" } else { b"f" }),
                // Rust prints the shortest text that reads back as the same double.
                Field::Float(Some(x)) => {
                    let _ = write!(out, "{x}");
                }
                Field::Text(Some(s)) => escape(out, s),
                Field::Time(Some(t)) => {
                    out.extend_from_slice(t.to_rfc3339_opts(SecondsFormat::AutoSi, true).as_bytes())
                }
                Field::Json(Some(v)) => escape(out, &v.to_string()),
                Field::Float(None) | Field::Text(None) | Field::Time(None) | Field::Json(None) => {
                    out.extend_from_slice(b"\\N")
                }
            }
        }
        out.push(b'\n');
    }
}

/// COPY text escaping: backslash, and the row and column delimiters.
fn escape(out: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

/// A batch's rows as COPY text, one buffer per table.
pub(super) fn copy_text(
    world: &World,
    subjects: &[Generated],
    subject_ids: &[i64],
    enrollment_ids: &[i64],
) -> Vec<Vec<u8>> {
    let mut copy = CopyText(TABLES.iter().map(|_| Vec::new()).collect());
    render(world, subjects, subject_ids, enrollment_ids, &mut copy);
    copy.0
}

/// Whether this PostgreSQL session may skip foreign-key checks (a superuser can).
pub(super) async fn can_skip_checks(pool: &sqlx::PgPool) -> anyhow::Result<bool> {
    let superuser: String = sqlx::query_scalar("SELECT current_setting('is_superuser')").fetch_one(pool).await?;
    Ok(superuser == "on")
}

/// Writes one batch of COPY text in one transaction. With `skip_checks` the foreign-key
/// triggers do not fire (as in `pg_restore --disable-triggers`): every parent row is in
/// the same transaction or already committed, by construction, and the checks cost more
/// than the rest of the load.
pub(super) async fn copy(pool: &sqlx::PgPool, data: Vec<Vec<u8>>, skip_checks: bool) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    // Bulk load: losing the last batches on a crash is fine, waiting for each flush is not.
    sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await?;
    if skip_checks {
        sqlx::query("SET LOCAL session_replication_role = replica").execute(&mut *tx).await?;
    }
    for (table, data) in TABLES.iter().zip(data) {
        if data.is_empty() {
            continue;
        }
        let statement = format!("COPY {} ({}) FROM STDIN", table.name, table.columns.join(", "));
        let mut sink = tx.copy_in_raw(&statement).await?;
        sink.send(data).await?;
        sink.finish().await?;
    }
    tx.commit().await?;
    Ok(())
}

/// `n` fresh ids from the table's sequence, reserved for the whole run: other writers
/// draw different ones.
pub(super) async fn reserve_postgres(pool: &sqlx::PgPool, table: &str, n: u64) -> anyhow::Result<Vec<i64>> {
    let sql = format!("SELECT nextval(pg_get_serial_sequence('{table}', 'id')) FROM generate_series(1, $1)");
    Ok(sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).bind(n as i64).fetch_all(pool).await?)
}

// --- SQLite: multi-row INSERTs ---

/// SQLite binds at most 32766 parameters per statement.
const SQLITE_MAX_PARAMS: usize = 32_766;

/// Bound values per table, in row order.
struct Bound(Vec<Vec<Value>>);

impl Sink for Bound {
    fn row(&mut self, table: usize, fields: &[Field<'_>]) {
        self.0[table].extend(fields.iter().map(|f| match f {
            Field::Int(n) => Value::BigInt(Some(*n)),
            Field::Bool(b) => Value::Bool(Some(*b)),
            Field::Float(x) => Value::Double(*x),
            Field::Text(s) => Value::String(s.map(str::to_string)),
            Field::Time(t) => Value::ChronoDateTimeUtc(*t),
            Field::Json(v) => Value::Json(v.map(|v| Box::new(v.clone()))),
        }));
    }
}

/// Writes one batch in one transaction.
pub(super) async fn sqlite(db: &DatabaseConnection, world: &World, subjects: &[Generated]) -> Result<(), DbErr> {
    let txn = begin_write(db).await?;
    let subject_ids = reserve_sqlite(&txn, "subjects", subjects.len()).await?;
    let enrollment_ids = reserve_sqlite(&txn, "enrollments", subjects.len()).await?;
    let mut bound = Bound(TABLES.iter().map(|_| Vec::new()).collect());
    render(world, subjects, &subject_ids, &enrollment_ids, &mut bound);
    for (table, values) in TABLES.iter().zip(bound.0) {
        let width = table.columns.len();
        let per_statement = SQLITE_MAX_PARAMS / width;
        let mut values = values.into_iter();
        loop {
            let chunk: Vec<Value> = values.by_ref().take(per_statement * width).collect();
            if chunk.is_empty() {
                break;
            }
            let rows = chunk.len() / width;
            let row = format!("({})", vec!["?"; width].join(", "));
            let sql = format!(
                "INSERT INTO {} ({}) VALUES {}",
                table.name,
                table.columns.join(", "),
                vec![row; rows].join(", ")
            );
            txn.execute_raw(Statement::from_sql_and_values(DbBackend::Sqlite, sql, chunk)).await?;
        }
    }
    txn.commit().await
}

/// `n` fresh ids after the largest one. The write lock is held since BEGIN IMMEDIATE, so
/// nobody else takes them; past the AUTOINCREMENT high-water mark too, so ids of deleted
/// rows are never reused.
async fn reserve_sqlite(txn: &DatabaseTransaction, table: &str, n: usize) -> Result<Vec<i64>, DbErr> {
    let sql = format!(
        "SELECT MAX(COALESCE((SELECT MAX(id) FROM {table}), 0), \
         COALESCE((SELECT seq FROM sqlite_sequence WHERE name = '{table}'), 0))"
    );
    let row = txn
        .query_one_raw(Statement::from_string(DbBackend::Sqlite, sql))
        .await?
        .ok_or_else(|| DbErr::Custom(format!("no largest id in {table}")))?;
    let last: i64 = row.try_get_by_index(0)?;
    Ok((1..=n as i64).map(|i| last + i).collect())
}
