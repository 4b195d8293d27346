//! The nudge schedule (next due time per enrollment and rule) and the nudge log. Raw SQL
//! with `$n` placeholders, which both backends take, so one text serves both.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr, QueryResult, Statement, Value};

use super::is_postgres;
use super::writes::{Writes, row_chunks};

/// One (enrollment, rule) as the schedule keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleRow {
    pub enrollment_id: i64,
    pub rule_key: String,
    pub subject_id: i64,
    pub anchor_at: Option<DateTime<Utc>>,
    pub number: i32,
    pub due_at: Option<DateTime<Utc>>,
    /// The occurrence came due and waits for quiet hours or the budget to end (`due_at`).
    pub waiting: bool,
}

fn statement(db: &impl ConnectionTrait, sql: impl Into<String>, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(db.get_database_backend(), sql.into(), values)
}

fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// Queues the rows a write computed from the enrollments it saves. A row whose anchor is
/// unchanged keeps its stored occurrence and due time (the scheduler may have moved them
/// on: a repeat, a wait for quiet hours or the budget). So does a row whose occurrence
/// came due (due by `now`, or waiting): the scheduler then sees it no longer hold, logs it
/// cancelled by progress, and schedules the rule from the new anchor; that is how the log
/// can say "on its way, then cancelled". The new occurrence loses nothing by the wait: a
/// waiting row waits for the end of the subject's quiet hours or budget, before which no
/// nudge could reach the subject anyway. Any other row takes the new anchor, or none.
pub fn schedule(writes: &mut Writes, rows: &[ScheduleRow], now: DateTime<Utc>) {
    for chunk in row_chunks(rows) {
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * COLUMNS + 1);
        let mut tuples = Vec::with_capacity(chunk.len());
        for row in chunk {
            tuples.push(format!("({})", placeholders(values.len() + 1, COLUMNS)));
            push_row(&mut values, row);
        }
        values.push(now.into());
        let keep = format!(
            "(nudge_schedule.anchor_at = excluded.anchor_at OR nudge_schedule.waiting OR nudge_schedule.due_at <= ${})",
            values.len()
        );
        let sql = format!(
            "INSERT INTO nudge_schedule ({SCHEDULE_COLUMNS}) VALUES {} \
             ON CONFLICT (enrollment_id, rule_key) DO UPDATE SET \
             number = CASE WHEN {keep} THEN nudge_schedule.number ELSE excluded.number END, \
             due_at = CASE WHEN {keep} THEN nudge_schedule.due_at ELSE excluded.due_at END, \
             waiting = CASE WHEN {keep} THEN nudge_schedule.waiting ELSE excluded.waiting END, \
             anchor_at = CASE WHEN {keep} THEN nudge_schedule.anchor_at ELSE excluded.anchor_at END",
            tuples.join(", ")
        );
        writes.push_statement(Statement::from_sql_and_values(writes.backend(), sql, values));
    }
}

const SCHEDULE_COLUMNS: &str = "enrollment_id, rule_key, subject_id, anchor_at, number, due_at, waiting";
const COLUMNS: usize = 7;

fn push_row(values: &mut Vec<Value>, row: &ScheduleRow) {
    values.push(row.enrollment_id.into());
    values.push(row.rule_key.clone().into());
    values.push(row.subject_id.into());
    values.push(row.anchor_at.into());
    values.push(row.number.into());
    values.push(row.due_at.into());
    values.push(row.waiting.into());
}

/// Anything due by `now`: one probe of the due index, what an idle tick costs. The
/// earliest due time is read and compared here, not `due_at <= $1 LIMIT 1` in SQL: for
/// that, PostgreSQL's generic plan of the prepared statement (used after five runs) guesses
/// a third of the table matches and scans it whole, finding nothing (176 ms at a million
/// rows, found by the bench); MIN over the partial index is one index probe whatever `now`.
pub async fn any_due(db: &impl ConnectionTrait, now: DateTime<Utc>) -> Result<bool, DbErr> {
    let sql = "SELECT MIN(due_at) AS earliest FROM nudge_schedule WHERE due_at IS NOT NULL";
    let earliest: Option<DateTime<Utc>> = match db.query_one_raw(statement(db, sql, vec![])).await? {
        Some(row) => row.try_get_by("earliest")?,
        None => None,
    };
    Ok(earliest.is_some_and(|at| at <= now))
}

fn schedule_row(row: &QueryResult) -> Result<ScheduleRow, DbErr> {
    Ok(ScheduleRow {
        enrollment_id: row.try_get_by("enrollment_id")?,
        rule_key: row.try_get_by("rule_key")?,
        subject_id: row.try_get_by("subject_id")?,
        anchor_at: row.try_get_by("anchor_at")?,
        number: row.try_get_by("number")?,
        due_at: row.try_get_by("due_at")?,
        waiting: row.try_get_by("waiting")?,
    })
}

/// Claims up to `limit` rows due by `now`, earliest first, locked until the transaction
/// ends. On PostgreSQL rows another instance holds are skipped, not waited for.
pub async fn claim(db: &impl ConnectionTrait, now: DateTime<Utc>, limit: u64) -> Result<Vec<ScheduleRow>, DbErr> {
    let lock = if is_postgres(db) { " FOR UPDATE SKIP LOCKED" } else { "" };
    let sql = format!(
        "SELECT {SCHEDULE_COLUMNS} FROM nudge_schedule \
         WHERE due_at IS NOT NULL AND due_at <= $1 ORDER BY due_at LIMIT {limit}{lock}"
    );
    db.query_all_raw(statement(db, sql, vec![now.into()])).await?.iter().map(schedule_row).collect()
}

/// Of these subjects, those this transaction may decide for: on PostgreSQL, those whose
/// transaction-scoped advisory lock it gets without waiting (another instance deciding
/// for a subject keeps it until it commits, so two never spend one budget at once); on
/// SQLite, all (one worker, and the write lock).
pub async fn lock_subjects(db: &impl ConnectionTrait, mut ids: Vec<i64>) -> Result<Vec<i64>, DbErr> {
    ids.sort_unstable();
    ids.dedup();
    if !is_postgres(db) || ids.is_empty() {
        return Ok(ids);
    }
    let sql = format!(
        "SELECT s FROM (VALUES {}) AS v(s) WHERE pg_try_advisory_xact_lock(hashtextextended('onramp.nudge:' || s, 0))",
        (1..=ids.len()).map(|i| format!("(${i}::bigint)")).collect::<Vec<_>>().join(", ")
    );
    let rows = db.query_all_raw(statement(db, sql, ids.into_iter().map(Value::from).collect())).await?;
    rows.iter().map(|r| r.try_get_by::<i64, _>("s")).collect()
}

/// The times of the nudges sent to these subjects since `since`.
pub async fn sends_since(
    db: &impl ConnectionTrait,
    subject_ids: &[i64],
    since: DateTime<Utc>,
) -> Result<HashMap<i64, Vec<DateTime<Utc>>>, DbErr> {
    let mut sent: HashMap<i64, Vec<DateTime<Utc>>> = HashMap::new();
    if subject_ids.is_empty() {
        return Ok(sent);
    }
    let sql = format!(
        "SELECT subject_id, at FROM nudge_log WHERE outcome = 'SENT' AND at > $1 AND subject_id IN ({})",
        placeholders(2, subject_ids.len())
    );
    let mut values: Vec<Value> = vec![since.into()];
    values.extend(subject_ids.iter().map(|id| Value::from(*id)));
    for row in db.query_all_raw(statement(db, sql, values)).await? {
        sent.entry(row.try_get_by("subject_id")?).or_default().push(row.try_get_by("at")?);
    }
    Ok(sent)
}

/// Moves schedule rows on (the next occurrence, the same one later, or none), as many
/// as a tick decided, in a statement per thousand. The rows exist and the tick holds
/// them locked (a row deleted meanwhile, with its enrollment, is simply not updated).
pub async fn reschedule(db: &impl ConnectionTrait, rows: &[ScheduleRow]) -> Result<(), DbErr> {
    for chunk in row_chunks(rows) {
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * COLUMNS);
        let mut tuples = Vec::with_capacity(chunk.len());
        for row in chunk {
            tuples.push(format!("({})", placeholders(values.len() + 1, COLUMNS)));
            push_row(&mut values, row);
        }
        // An update joined to the rows, not an upsert: every row exists, and the upsert's
        // per-row conflict handling cost a third of a tick's time in the bench.
        let sql = format!(
            "WITH v ({SCHEDULE_COLUMNS}) AS (VALUES {}) \
             UPDATE nudge_schedule SET anchor_at = v.anchor_at, number = v.number, due_at = v.due_at, \
             waiting = v.waiting FROM v \
             WHERE nudge_schedule.enrollment_id = v.enrollment_id AND nudge_schedule.rule_key = v.rule_key",
            tuples.join(", ")
        );
        db.execute_raw(statement(db, sql, values)).await?;
    }
    Ok(())
}

/// A line of the nudge log.
#[derive(Clone, Debug, PartialEq)]
pub struct LogEntry {
    pub id: i64,
    pub occurrence: String,
    pub subject_id: i64,
    pub enrollment_id: i64,
    pub flow_key: String,
    pub flow_version: i32,
    pub rule_key: String,
    pub anchor_at: DateTime<Utc>,
    pub number: i32,
    pub outcome: String,
    pub channel: String,
    pub title: String,
    pub message: String,
    pub at: DateTime<Utc>,
    pub until: Option<DateTime<Utc>>,
    pub dismissed_at: Option<DateTime<Utc>>,
}

const LOG_COLUMNS: &str = "id, occurrence, subject_id, enrollment_id, flow_key, flow_version, rule_key, anchor_at, \
                           number, outcome, channel, title, message, at, until, dismissed_at";

fn log_entry(row: &QueryResult) -> Result<LogEntry, DbErr> {
    Ok(LogEntry {
        id: row.try_get_by("id")?,
        occurrence: row.try_get_by("occurrence")?,
        subject_id: row.try_get_by("subject_id")?,
        enrollment_id: row.try_get_by("enrollment_id")?,
        flow_key: row.try_get_by("flow_key")?,
        flow_version: row.try_get_by("flow_version")?,
        rule_key: row.try_get_by("rule_key")?,
        anchor_at: row.try_get_by("anchor_at")?,
        number: row.try_get_by("number")?,
        outcome: row.try_get_by("outcome")?,
        channel: row.try_get_by("channel")?,
        title: row.try_get_by("title")?,
        message: row.try_get_by("message")?,
        at: row.try_get_by("at")?,
        until: row.try_get_by("until")?,
        dismissed_at: row.try_get_by("dismissed_at")?,
    })
}

/// Log lines per statement: 15 values each keeps a statement under SQLite's 32,766
/// bound values.
const LOG_ROWS_PER_STATEMENT: usize = 500;

/// Logs the entries whose occurrence is not logged yet; the id of each one inserted, by
/// occurrence. The unique occurrence is what makes a send happen once: the caller sends
/// only what this inserted.
pub async fn log(db: &impl ConnectionTrait, entries: &[LogEntry]) -> Result<HashMap<String, i64>, DbErr> {
    let mut inserted = HashMap::with_capacity(entries.len());
    for chunk in entries.chunks(LOG_ROWS_PER_STATEMENT) {
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 15);
        let mut tuples = Vec::with_capacity(chunk.len());
        for e in chunk {
            tuples.push(format!("({})", placeholders(values.len() + 1, 15)));
            values.extend([
                e.occurrence.clone().into(),
                e.subject_id.into(),
                e.enrollment_id.into(),
                e.flow_key.clone().into(),
                e.flow_version.into(),
                e.rule_key.clone().into(),
                e.anchor_at.into(),
                e.number.into(),
                e.outcome.clone().into(),
                e.channel.clone().into(),
                e.title.clone().into(),
                e.message.clone().into(),
                e.at.into(),
                e.until.into(),
                e.dismissed_at.into(),
            ]);
        }
        let sql = format!(
            "INSERT INTO nudge_log (occurrence, subject_id, enrollment_id, flow_key, flow_version, rule_key, \
             anchor_at, number, outcome, channel, title, message, at, until, dismissed_at) VALUES {} \
             ON CONFLICT (occurrence) DO NOTHING RETURNING id, occurrence",
            tuples.join(", ")
        );
        for row in db.query_all_raw(statement(db, sql, values)).await? {
            inserted.insert(row.try_get_by("occurrence")?, row.try_get_by("id")?);
        }
    }
    Ok(inserted)
}

/// In-app nudges sent to these subjects and not dismissed, newest first.
pub async fn undismissed(db: &impl ConnectionTrait, subject_ids: &[i64], limit: u64) -> Result<Vec<LogEntry>, DbErr> {
    if subject_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {LOG_COLUMNS} FROM nudge_log WHERE outcome = 'SENT' AND channel IN ('in_app', 'both') \
         AND dismissed_at IS NULL AND subject_id IN ({}) ORDER BY at DESC, id DESC LIMIT {limit}",
        placeholders(1, subject_ids.len())
    );
    let values = subject_ids.iter().map(|id| Value::from(*id)).collect();
    db.query_all_raw(statement(db, sql, values)).await?.iter().map(log_entry).collect()
}

/// One log entry by id, if it belongs to one of these subjects.
pub async fn entry(db: &impl ConnectionTrait, id: i64, subject_ids: &[i64]) -> Result<Option<LogEntry>, DbErr> {
    if subject_ids.is_empty() {
        return Ok(None);
    }
    let sql = format!(
        "SELECT {LOG_COLUMNS} FROM nudge_log WHERE id = $1 AND subject_id IN ({})",
        placeholders(2, subject_ids.len())
    );
    let mut values: Vec<Value> = vec![id.into()];
    values.extend(subject_ids.iter().map(|s| Value::from(*s)));
    db.query_one_raw(statement(db, sql, values)).await?.as_ref().map(log_entry).transpose()
}

/// Marks a sent nudge dismissed (the first dismissal's time stays).
pub async fn dismiss(db: &impl ConnectionTrait, id: i64, now: DateTime<Utc>) -> Result<(), DbErr> {
    let sql = "UPDATE nudge_log SET dismissed_at = $1 WHERE id = $2 AND dismissed_at IS NULL";
    db.execute_raw(statement(db, sql, vec![now.into(), id.into()])).await?;
    Ok(())
}

/// A subject's log, newest first, before the id `before` when given.
pub async fn log_of(
    db: &impl ConnectionTrait,
    subject_id: i64,
    before: Option<i64>,
    limit: u64,
) -> Result<Vec<LogEntry>, DbErr> {
    let sql =
        format!("SELECT {LOG_COLUMNS} FROM nudge_log WHERE subject_id = $1 AND id < $2 ORDER BY id DESC LIMIT {limit}");
    let values = vec![subject_id.into(), before.unwrap_or(i64::MAX).into()];
    db.query_all_raw(statement(db, sql, values)).await?.iter().map(log_entry).collect()
}

/// For each enrollment whose occurrence of a rule came due, the first time the scheduler
/// decided about it (whatever it decided), the subject's external id and the enrollment's
/// completion: the units of an intention-to-treat comparison.
pub async fn exposures(
    db: &impl ConnectionTrait,
    flow_key: &str,
    rule_key: &str,
) -> Result<Vec<(String, DateTime<Utc>, Option<DateTime<Utc>>)>, DbErr> {
    let sql = "SELECT l.enrollment_id, s.external_id, l.at, e.completed_at FROM nudge_log l \
               JOIN enrollments e ON e.id = l.enrollment_id JOIN subjects s ON s.id = l.subject_id \
               WHERE l.flow_key = $1 AND l.rule_key = $2 ORDER BY l.enrollment_id, l.at, l.id";
    let rows = db.query_all_raw(statement(db, sql, vec![flow_key.into(), rule_key.into()])).await?;
    let mut units = Vec::new();
    let mut last: Option<i64> = None;
    for row in rows {
        let enrollment: i64 = row.try_get_by("enrollment_id")?;
        if last == Some(enrollment) {
            continue;
        }
        last = Some(enrollment);
        units.push((row.try_get_by("external_id")?, row.try_get_by("at")?, row.try_get_by("completed_at")?));
    }
    Ok(units)
}
