//! Analytics reads: set-based counts over enrollments, step progress, events and exposures,
//! one or two statements per question and never a round trip per row.
//!
//! The counting SQL is the same on both backends (aggregate FILTER clauses exist in
//! PostgreSQL and SQLite ≥ 3.30). Percentiles differ: PostgreSQL computes them in SQL with
//! `percentile_cont`; SQLite has no such function, so there the completed durations come
//! back and `domain::stats` applies the same definition. Durations are exact seconds either
//! way (to the microsecond both backends store), so the two report the same numbers.
//!
//! On SQLite, sea-orm stores timestamps as RFC 3339 text in UTC (`2026-11-02T10:00:00+00:00`,
//! with 3, 6 or 9 fraction digits when there is a fraction). In that form text order is time
//! order, so comparisons against bound timestamps work on the raw column (and its indexes).

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, QueryResult, Statement, Value};

use super::is_postgres;
use crate::domain::stats::{Percentiles, seconds_between};
use crate::domain::{EnrollmentStatus, StepStatus};

/// A statement under construction. Placeholders are numbered `$1, $2, ...`: PostgreSQL's
/// syntax, which SQLite (through sqlx) reads as the same numbered parameters.
struct Query {
    values: Vec<Value>,
}

impl Query {
    fn new() -> Query {
        Query { values: Vec::new() }
    }

    fn bind(&mut self, value: impl Into<Value>) -> String {
        self.values.push(value.into());
        format!("${}", self.values.len())
    }

    fn statement(self, db: &impl ConnectionTrait, sql: String) -> Statement {
        Statement::from_sql_and_values(db.get_database_backend(), sql, self.values)
    }
}

async fn all(db: &impl ConnectionTrait, query: Query, sql: String) -> Result<Vec<QueryResult>, DbErr> {
    let statement = query.statement(db, sql);
    db.query_all_raw(statement).await
}

/// Status names as stored, for SQL literals (constants, never user input).
fn completed() -> &'static str {
    EnrollmentStatus::Completed.name()
}

/// A read-only snapshot for one analysis. On PostgreSQL the transaction gets memory
/// enough to sort and hash millions of rows without spilling to disk, and no JIT: these
/// statements run once each, so compiling them costs more than it saves.
pub async fn begin(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    let txn = super::begin_read(db).await?;
    if is_postgres(db) {
        txn.execute_unprepared("SET LOCAL work_mem = '256MB'; SET LOCAL jit = off").await?;
    }
    Ok(txn)
}

/// Which enrollments an analysis covers: some versions of one flow, optionally one
/// experiment variant, optionally started in [since, until).
#[derive(Clone, Debug)]
pub struct Cohort<'a> {
    /// Rows of `flows`: the versions counted.
    pub flow_ids: &'a [i64],
    pub variant: Option<&'a str>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl Cohort<'_> {
    /// The WHERE condition on `enrollments en`. `flow_id IN (...)` with the start window
    /// uses the (flow_id, started_at) index.
    fn condition(&self, q: &mut Query) -> String {
        let mut parts = Vec::new();
        if self.flow_ids.is_empty() {
            parts.push("1 = 0".to_string());
        } else {
            let ids: Vec<String> = self.flow_ids.iter().map(|id| q.bind(*id)).collect();
            parts.push(format!("en.flow_id IN ({})", ids.join(", ")));
        }
        if let Some(variant) = self.variant {
            parts.push(format!("en.variant = {}", q.bind(variant)));
        }
        if let Some(since) = self.since {
            parts.push(format!("en.started_at >= {}", q.bind(since)));
        }
        if let Some(until) = self.until {
            parts.push(format!("en.started_at < {}", q.bind(until)));
        }
        parts.join(" AND ")
    }
}

/// The id and version of every version of a flow key, by version.
pub async fn versions_of(db: &impl ConnectionTrait, key: &str) -> Result<Vec<(i64, i32)>, DbErr> {
    let mut q = Query::new();
    let sql = format!("SELECT id, version FROM flows WHERE key = {} ORDER BY version", q.bind(key));
    all(db, q, sql)
        .await?
        .iter()
        .map(|r| Ok((r.try_get_by::<i64, _>("id")?, r.try_get_by::<i32, _>("version")?)))
        .collect()
}

/// One step of a funnel, counted over a cohort's step rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepTally {
    /// Enrollments with a row for the step: it applied to them.
    pub applied: i64,
    /// ... whose row has `available_at`: the step became available to them.
    pub reached: i64,
    pub completed: i64,
    pub skipped: i64,
    /// From the enrollment's start to the step's completion, over completed rows, in seconds.
    pub time_to_complete: Percentiles,
}

/// Per step key, what the cohort did: one aggregate over step_progress joined to the
/// cohort's enrollments.
pub async fn funnel_steps(db: &impl ConnectionTrait, cohort: &Cohort<'_>) -> Result<HashMap<String, StepTally>, DbErr> {
    let postgres = is_postgres(db);
    let mut q = Query::new();
    let condition = cohort.condition(&mut q);
    let done = StepStatus::Completed.name();
    let skipped = StepStatus::Skipped.name();
    // PostgreSQL: the percentiles in the same pass. EXTRACT(EPOCH ...) of a timestamptz
    // difference is exact (numeric); the cast gives the nearest double, as Rust's does.
    let percentiles = if postgres {
        format!(
            ",
               percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM sp.completed_at - en.started_at)::float8)
                 FILTER (WHERE sp.status = '{done}') AS median_seconds,
               percentile_cont(0.9) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM sp.completed_at - en.started_at)::float8)
                 FILTER (WHERE sp.status = '{done}') AS p90_seconds"
        )
    } else {
        String::new()
    };
    let sql = format!(
        "SELECT sp.step_key,
               count(*) AS applied,
               count(*) FILTER (WHERE sp.available_at IS NOT NULL) AS reached,
               count(*) FILTER (WHERE sp.status = '{done}') AS completed,
               count(*) FILTER (WHERE sp.status = '{skipped}') AS skipped{percentiles}
         FROM enrollments en
         JOIN step_progress sp ON sp.enrollment_id = en.id
         WHERE {condition}
         GROUP BY sp.step_key"
    );
    let mut steps = HashMap::new();
    for row in all(db, q, sql).await? {
        let tally = StepTally {
            applied: row.try_get_by("applied")?,
            reached: row.try_get_by("reached")?,
            completed: row.try_get_by("completed")?,
            skipped: row.try_get_by("skipped")?,
            time_to_complete: if postgres {
                Percentiles { median: row.try_get_by("median_seconds")?, p90: row.try_get_by("p90_seconds")? }
            } else {
                Percentiles::default()
            },
        };
        steps.insert(row.try_get_by::<String, _>("step_key")?, tally);
    }
    if !postgres {
        // SQLite: the completed durations themselves, then the same percentiles in Rust.
        let mut q = Query::new();
        let condition = cohort.condition(&mut q);
        let sql = format!(
            "SELECT sp.step_key, en.started_at, sp.completed_at
             FROM enrollments en
             JOIN step_progress sp ON sp.enrollment_id = en.id
             WHERE {condition} AND sp.status = '{done}' AND sp.completed_at IS NOT NULL"
        );
        let mut durations: HashMap<String, Vec<f64>> = HashMap::new();
        for row in all(db, q, sql).await? {
            let started: DateTime<Utc> = row.try_get_by("started_at")?;
            let completed: DateTime<Utc> = row.try_get_by("completed_at")?;
            durations.entry(row.try_get_by("step_key")?).or_default().push(seconds_between(started, completed));
        }
        for (step, values) in durations {
            if let Some(tally) = steps.get_mut(&step) {
                tally.time_to_complete = Percentiles::of(values);
            }
        }
    }
    Ok(steps)
}

/// Enrollment counts by status, for one (version, variant) group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusTally {
    pub enrolled: i64,
    pub in_progress: i64,
    pub completed: i64,
    pub skipped: i64,
}

impl std::ops::AddAssign<&StatusTally> for StatusTally {
    fn add_assign(&mut self, other: &StatusTally) {
        self.enrolled += other.enrolled;
        self.in_progress += other.in_progress;
        self.completed += other.completed;
        self.skipped += other.skipped;
    }
}

/// A cohort's enrollments counted by status, per (flow version row, variant): few groups,
/// which add up to any coarser breakdown.
pub async fn status_tallies(
    db: &impl ConnectionTrait,
    cohort: &Cohort<'_>,
) -> Result<Vec<((i64, Option<String>), StatusTally)>, DbErr> {
    let mut q = Query::new();
    let condition = cohort.condition(&mut q);
    let in_progress = EnrollmentStatus::InProgress.name();
    let done = completed();
    let skipped = EnrollmentStatus::Skipped.name();
    let sql = format!(
        "SELECT en.flow_id, en.variant,
               count(*) AS enrolled,
               count(*) FILTER (WHERE en.status = '{in_progress}') AS in_progress,
               count(*) FILTER (WHERE en.status = '{done}') AS completed,
               count(*) FILTER (WHERE en.status = '{skipped}') AS skipped
         FROM enrollments en
         WHERE {condition}
         GROUP BY en.flow_id, en.variant"
    );
    all(db, q, sql)
        .await?
        .iter()
        .map(|row| {
            let group = (row.try_get_by("flow_id")?, row.try_get_by("variant")?);
            let tally = StatusTally {
                enrolled: row.try_get_by("enrolled")?,
                in_progress: row.try_get_by("in_progress")?,
                completed: row.try_get_by("completed")?,
                skipped: row.try_get_by("skipped")?,
            };
            Ok((group, tally))
        })
        .collect()
}

/// Time from start to completion of a cohort's COMPLETED enrollments, in seconds: overall,
/// per version row and per variant (None: not in an experiment).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CompletionTimes {
    pub overall: Percentiles,
    pub by_flow: HashMap<i64, Percentiles>,
    pub by_variant: HashMap<Option<String>, Percentiles>,
}

pub async fn completion_times(db: &impl ConnectionTrait, cohort: &Cohort<'_>) -> Result<CompletionTimes, DbErr> {
    let mut q = Query::new();
    let condition = cohort.condition(&mut q);
    let done = completed();
    let mut times = CompletionTimes::default();
    if is_postgres(db) {
        // All three breakdowns in one pass. GROUPING() tells a rolled-up column from a
        // NULL variant (enrollments outside any experiment).
        let sql = format!(
            "SELECT GROUPING(en.flow_id) AS all_versions, GROUPING(en.variant) AS all_variants,
                   en.flow_id, en.variant,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM en.completed_at - en.started_at)::float8) AS median_seconds,
                   percentile_cont(0.9) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM en.completed_at - en.started_at)::float8) AS p90_seconds
             FROM enrollments en
             WHERE {condition} AND en.status = '{done}' AND en.completed_at IS NOT NULL
             GROUP BY GROUPING SETS ((), (en.flow_id), (en.variant))"
        );
        for row in all(db, q, sql).await? {
            let p = Percentiles { median: row.try_get_by("median_seconds")?, p90: row.try_get_by("p90_seconds")? };
            let all_versions: i32 = row.try_get_by("all_versions")?;
            let all_variants: i32 = row.try_get_by("all_variants")?;
            match (all_versions, all_variants) {
                (1, 1) => times.overall = p,
                (0, _) => {
                    times.by_flow.insert(row.try_get_by("flow_id")?, p);
                }
                _ => {
                    times.by_variant.insert(row.try_get_by("variant")?, p);
                }
            }
        }
    } else {
        let sql = format!(
            "SELECT en.flow_id, en.variant, en.started_at, en.completed_at
             FROM enrollments en
             WHERE {condition} AND en.status = '{done}' AND en.completed_at IS NOT NULL"
        );
        let mut overall = Vec::new();
        let mut by_flow: HashMap<i64, Vec<f64>> = HashMap::new();
        let mut by_variant: HashMap<Option<String>, Vec<f64>> = HashMap::new();
        for row in all(db, q, sql).await? {
            let started: DateTime<Utc> = row.try_get_by("started_at")?;
            let completed: DateTime<Utc> = row.try_get_by("completed_at")?;
            let seconds = seconds_between(started, completed);
            overall.push(seconds);
            by_flow.entry(row.try_get_by("flow_id")?).or_default().push(seconds);
            by_variant.entry(row.try_get_by("variant")?).or_default().push(seconds);
        }
        times.overall = Percentiles::of(overall);
        times.by_flow = by_flow.into_iter().map(|(k, v)| (k, Percentiles::of(v))).collect();
        times.by_variant = by_variant.into_iter().map(|(k, v)| (k, Percentiles::of(v))).collect();
    }
    Ok(times)
}

/// Exposures to one variant, and how many of the exposed completed the flow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExposureTally {
    pub exposures: i64,
    pub completions: i64,
}

/// Per variant name: exposures, and exposed subjects whose enrollment in `flow_key` is
/// COMPLETED. Exposures name the subject by its key (`subjects.external_id`), and a
/// subject has at most one enrollment per flow key, so the joins never multiply rows.
pub async fn exposure_tallies(
    db: &impl ConnectionTrait,
    experiment_id: i64,
    flow_key: &str,
) -> Result<HashMap<String, ExposureTally>, DbErr> {
    let mut q = Query::new();
    let experiment = q.bind(experiment_id);
    let flow = q.bind(flow_key);
    let done = completed();
    let sql = format!(
        "SELECT x.variant,
               count(*) AS exposures,
               count(*) FILTER (WHERE en.status = '{done}') AS completions
         FROM exposures x
         LEFT JOIN subjects s ON s.external_id = x.subject_id
         LEFT JOIN enrollments en ON en.subject_id = s.id AND en.flow_key = {flow}
         WHERE x.experiment_id = {experiment}
         GROUP BY x.variant"
    );
    all(db, q, sql)
        .await?
        .iter()
        .map(|row| {
            let tally =
                ExposureTally { exposures: row.try_get_by("exposures")?, completions: row.try_get_by("completions")? };
            Ok((row.try_get_by("variant")?, tally))
        })
        .collect()
}

/// How many of some enrollments there are, and how many of them were retained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionTally {
    pub enrollments: i64,
    pub retained: i64,
}

/// The retention cohort of a flow and, per step key, its members that completed the step.
/// The cohort: enrollments in `flow_ids` started at or before `cutoff`. Retained: the
/// enrolled subject has an event (as its subject, or, for a workspace, as its workspace)
/// that occurred at or after `started_at + days` (whole UTC days of 24 hours).
pub async fn step_retention(
    db: &impl ConnectionTrait,
    flow_ids: &[i64],
    cutoff: DateTime<Utc>,
    days: i32,
) -> Result<(RetentionTally, HashMap<String, RetentionTally>), DbErr> {
    let mut q = Query::new();
    let cohort = Cohort { flow_ids, variant: None, since: None, until: None };
    let condition = cohort.condition(&mut q);
    let cutoff = q.bind(cutoff);
    // started_at + days, comparable with events.occurred_at. PostgreSQL: interval
    // arithmetic in hours, which no session time zone bends. SQLite: shift the date part
    // and keep the time-of-day text as stored, so the result has the stored format and
    // compares exactly (julianday() arithmetic would round to the millisecond or worse).
    let horizon = if is_postgres(db) {
        format!("en.started_at + make_interval(hours => {})", q.bind(days.saturating_mul(24)))
    } else {
        format!("(date(en.started_at, '+' || {} || ' days') || substr(en.started_at, 11))", q.bind(days))
    };
    let done = StepStatus::Completed.name();
    let sql = format!(
        "WITH cohort AS (
             SELECT en.id,
                    CASE WHEN EXISTS (SELECT 1 FROM events e
                                      WHERE e.subject_id = en.subject_id AND e.occurred_at >= {horizon})
                           OR EXISTS (SELECT 1 FROM events e
                                      WHERE e.workspace_id = en.subject_id AND e.occurred_at >= {horizon})
                         THEN 1 ELSE 0 END AS retained
             FROM enrollments en
             WHERE {condition} AND en.started_at <= {cutoff}
         )
         SELECT CAST(NULL AS TEXT) AS step_key, count(*) AS enrollments, COALESCE(sum(retained), 0) AS retained
         FROM cohort
         UNION ALL
         SELECT sp.step_key, count(*), COALESCE(sum(c.retained), 0)
         FROM cohort c
         JOIN step_progress sp ON sp.enrollment_id = c.id AND sp.status = '{done}'
         GROUP BY sp.step_key"
    );
    let mut total = RetentionTally::default();
    let mut steps = HashMap::new();
    for row in all(db, q, sql).await? {
        let tally =
            RetentionTally { enrollments: row.try_get_by("enrollments")?, retained: row.try_get_by("retained")? };
        match row.try_get_by::<Option<String>, _>("step_key")? {
            Some(step) => {
                steps.insert(step, tally);
            }
            None => total = tally,
        }
    }
    Ok((total, steps))
}

/// Per UTC day: enrollments in `flow_ids` started that day, and completed that day, both
/// within [since, until).
pub async fn daily_counts(
    db: &impl ConnectionTrait,
    flow_ids: &[i64],
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<(Vec<(NaiveDate, i64)>, Vec<(NaiveDate, i64)>), DbErr> {
    let day = |column: &str| {
        if is_postgres(db) {
            format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD')")
        } else {
            format!("date({column})")
        }
    };
    let mut q = Query::new();
    let cohort = Cohort { flow_ids, variant: None, since: None, until: None };
    let condition = cohort.condition(&mut q);
    let (since, until) = (q.bind(since), q.bind(until));
    let (started_day, completed_day) = (day("en.started_at"), day("en.completed_at"));
    let sql = format!(
        "SELECT 'started' AS kind, {started_day} AS day, count(*) AS n
         FROM enrollments en
         WHERE {condition} AND en.started_at >= {since} AND en.started_at < {until}
         GROUP BY {started_day}
         UNION ALL
         SELECT 'completed', {completed_day}, count(*)
         FROM enrollments en
         WHERE {condition} AND en.completed_at >= {since} AND en.completed_at < {until}
         GROUP BY {completed_day}"
    );
    let (mut starts, mut completions) = (Vec::new(), Vec::new());
    for row in all(db, q, sql).await? {
        let text: String = row.try_get_by("day")?;
        let day = NaiveDate::parse_from_str(&text, "%Y-%m-%d")
            .map_err(|e| DbErr::Custom(format!("unexpected day `{text}` from the database: {e}")))?;
        let count: i64 = row.try_get_by("n")?;
        match row.try_get_by::<String, _>("kind")?.as_str() {
            "started" => starts.push((day, count)),
            _ => completions.push((day, count)),
        }
    }
    Ok((starts, completions))
}
