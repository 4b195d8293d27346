//! Analytics reads: set-based counts over the analytics rollup, enrollments, step
//! progress, events and exposures; a few statements per question, never one per row.
//!
//! Funnels and flow stats read the rollup (`domain::rollup`, kept exact in the write
//! transaction) for whole days of enrollment start, and the rows for partial days; the
//! other reports count rows directly. The counting SQL is the same on both backends
//! (aggregate FILTER clauses exist in PostgreSQL and SQLite >= 3.30). Percentiles are
//! computed in Rust by `percentile_cont`'s definition from exact durations
//! (`elapsed_seconds`, to the microsecond stored), so both backends report the same numbers.
//!
//! On SQLite, sea-orm stores timestamps as RFC 3339 text in UTC (`2026-11-02T10:00:00+00:00`,
//! with 3, 6 or 9 fraction digits when there is a fraction). In that form text order is time
//! order, so comparisons against bound timestamps work on the raw column (and its indexes).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, QueryResult, Statement, Value};

use super::is_postgres;
use crate::domain::rollup::{self, day_number, day_start};
use crate::domain::stats::{Percentiles, Ranks};
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

/// Time from start to completion of a cohort's COMPLETED enrollments, in seconds: overall,
/// per version row and per variant (None: not in an experiment).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CompletionTimes {
    pub overall: Percentiles,
    pub by_flow: HashMap<i64, Percentiles>,
    pub by_variant: HashMap<Option<String>, Percentiles>,
}

// How cohort questions are answered. The rollup (see `domain::rollup`) counts whole UTC
// days of enrollment start; a window that starts or ends inside a day has its partial
// days counted from the rows, which the (flow_id, started_at) index keeps to one day's
// enrollments each. Percentiles combine both: bucket counts locate the rank wanted, then
// the one bucket's exact values are read (`elapsed_seconds`, indexed) and merged with the
// partial days' values. Every number is therefore exact, at the snapshot of the read.

/// A start window [since, until), each bound optional.
type Window = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);
/// Enrollments of one flow version row and one variant (None: outside any experiment).
type Group = (i64, Option<String>);

/// A cohort's start window, split into the whole days the rollup answers and up to two
/// partial days read from the rows.
struct Split {
    /// [first, end) in day numbers; None for no whole day.
    days: Option<(Option<i32>, Option<i32>)>,
    edges: Vec<Window>,
}

fn split(since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> Split {
    let first = since.map(|s| {
        let day = day_number(s);
        if day_start(day) == s { day } else { day + 1 }
    });
    let end = until.map(day_number);
    if let (Some(f), Some(e)) = (first, end)
        && f >= e
    {
        return Split { days: None, edges: vec![(since, until)] };
    }
    let mut edges = Vec::new();
    if let (Some(s), Some(f)) = (since, first)
        && day_start(f) != s
    {
        edges.push((Some(s), Some(day_start(f))));
    }
    if let (Some(u), Some(e)) = (until, end)
        && day_start(e) != u
    {
        edges.push((Some(day_start(e)), Some(u)));
    }
    Split { days: Some((first, end)), edges }
}

/// Some of a cohort's enrollments, for the rollup: flow version rows, a variant (None: any;
/// Some(None): outside any experiment) and whole start days [first, end).
#[derive(Clone, Debug)]
struct Slice {
    flow_ids: Vec<i64>,
    variant: Option<Option<String>>,
    first: Option<i32>,
    end: Option<i32>,
}

impl Slice {
    fn new(cohort: &Cohort<'_>, (first, end): (Option<i32>, Option<i32>)) -> Slice {
        Slice { flow_ids: cohort.flow_ids.to_vec(), variant: cohort.variant.map(|v| Some(v.to_string())), first, end }
    }

    fn flows(&self, q: &mut Query, column: &str) -> String {
        if self.flow_ids.is_empty() {
            return "1 = 0".into();
        }
        let ids: Vec<String> = self.flow_ids.iter().map(|id| q.bind(*id)).collect();
        format!("{column} IN ({})", ids.join(", "))
    }

    /// The condition on rollup cells (`rollup_counts` or `rollup_deltas`, unqualified).
    fn cells(&self, q: &mut Query) -> String {
        let mut parts = vec![self.flows(q, "flow_id")];
        if let Some(variant) = &self.variant {
            parts.push(format!("variant = {}", q.bind(variant.clone().unwrap_or_default())));
        }
        if let Some(first) = self.first {
            parts.push(format!("start_day >= {}", q.bind(first)));
        }
        if let Some(end) = self.end {
            parts.push(format!("start_day < {}", q.bind(end)));
        }
        parts.join(" AND ")
    }

    /// The same enrollments, as a condition on `enrollments en`.
    fn enrollments(&self, q: &mut Query) -> String {
        let mut parts = vec![self.flows(q, "en.flow_id")];
        match &self.variant {
            Some(Some(variant)) => parts.push(format!("en.variant = {}", q.bind(variant.clone()))),
            Some(None) => parts.push("en.variant IS NULL".into()),
            None => {}
        }
        if let Some(first) = self.first {
            parts.push(format!("en.started_at >= {}", q.bind(day_start(first))));
        }
        if let Some(end) = self.end {
            parts.push(format!("en.started_at < {}", q.bind(day_start(end))));
        }
        parts.join(" AND ")
    }
}

/// One summed cell of the rollup.
struct CellCount {
    flow_id: i64,
    /// None: outside any experiment.
    variant: Option<String>,
    step_key: String,
    measure: String,
    bucket: i32,
    n: i64,
}

/// The slice's cells, summed over its days: the counts plus the deltas not folded yet, in
/// one statement (one snapshot). `steps`: step rows' cells, else the enrollments'.
async fn rollup_cells(db: &impl ConnectionTrait, slice: &Slice, steps: bool) -> Result<Vec<CellCount>, DbErr> {
    let mut q = Query::new();
    let condition = slice.cells(&mut q);
    let level = if steps { "step_key <> ''" } else { "step_key = ''" };
    let sql = format!(
        "SELECT flow_id, variant, step_key, measure, bucket, CAST(SUM(n) AS BIGINT) AS n FROM (
             SELECT flow_id, variant, step_key, measure, bucket, n FROM rollup_counts WHERE {condition} AND {level}
             UNION ALL
             SELECT flow_id, variant, step_key, measure, bucket, n FROM rollup_deltas WHERE {condition} AND {level}
         ) cells
         GROUP BY flow_id, variant, step_key, measure, bucket"
    );
    all(db, q, sql)
        .await?
        .iter()
        .map(|row| {
            let variant: String = row.try_get_by("variant")?;
            Ok(CellCount {
                flow_id: row.try_get_by("flow_id")?,
                variant: (!variant.is_empty()).then_some(variant),
                step_key: row.try_get_by("step_key")?,
                measure: row.try_get_by("measure")?,
                bucket: row.try_get_by("bucket")?,
                n: row.try_get_by("n")?,
            })
        })
        .collect()
}

/// Completion times of one group: histogram counts from the rollup (whole days), plus the
/// values read from the rows (partial days).
#[derive(Clone, Debug, Default)]
struct Sample {
    counts: BTreeMap<i32, i64>,
    values: Vec<f64>,
}

/// Where a sample's rollup values live: a step's rows, or the enrollments themselves.
#[derive(Clone, Copy)]
enum Level<'a> {
    Step(&'a str),
    Enrollment,
}

/// The values of one histogram bucket within a slice, ascending; with `rank`, only the one
/// at that rank among them.
async fn bucket_values(
    db: &impl ConnectionTrait,
    slice: &Slice,
    level: Level<'_>,
    bucket: i32,
    rank: Option<i64>,
) -> Result<Vec<f64>, DbErr> {
    let mut q = Query::new();
    let condition = slice.enrollments(&mut q);
    let (from, column, step) = match level {
        Level::Step(key) => (
            "step_progress sp JOIN enrollments en ON en.id = sp.enrollment_id",
            "sp.elapsed_seconds",
            format!(" AND sp.step_key = {}", q.bind(key)),
        ),
        Level::Enrollment => ("enrollments en", "en.elapsed_seconds", String::new()),
    };
    let (lower, upper) = rollup::bucket_bounds(bucket);
    let mut range = format!("{column} IS NOT NULL");
    if let Some(lower) = lower {
        range.push_str(&format!(" AND {column} >= {}", q.bind(lower)));
    }
    if let Some(upper) = upper {
        range.push_str(&format!(" AND {column} < {}", q.bind(upper)));
    }
    let page = match rank {
        Some(rank) => format!(" LIMIT 1 OFFSET {}", q.bind(rank)),
        None => String::new(),
    };
    let sql = format!("SELECT {column} AS s FROM {from} WHERE {range}{step} AND {condition} ORDER BY {column}{page}");
    all(db, q, sql).await?.iter().map(|row| row.try_get_by("s")).collect()
}

fn out_of_step() -> DbErr {
    DbErr::Custom("the analytics rollup is out of step with the rows; rebuild it".into())
}

/// The value at 0-based `rank` of a sample, ascending.
async fn value_at(
    db: &impl ConnectionTrait,
    sample: &Sample,
    slice: Option<&Slice>,
    level: Level<'_>,
    mut rank: i64,
) -> Result<f64, DbErr> {
    let mut direct: BTreeMap<i32, Vec<f64>> = BTreeMap::new();
    for &v in &sample.values {
        direct.entry(rollup::bucket_of(v)).or_default().push(v);
    }
    let buckets: BTreeSet<i32> = sample.counts.keys().chain(direct.keys()).copied().collect();
    for bucket in buckets {
        let counted = sample.counts.get(&bucket).copied().unwrap_or(0);
        let read = direct.remove(&bucket).unwrap_or_default();
        let here = counted + read.len() as i64;
        if rank >= here {
            rank -= here;
            continue;
        }
        let slice = match slice {
            Some(slice) if counted > 0 => slice,
            _ => {
                let mut read = read;
                read.sort_by(f64::total_cmp);
                return Ok(read[rank as usize]);
            }
        };
        if read.is_empty() {
            // The usual case: only the one value is read.
            return bucket_values(db, slice, level, bucket, Some(rank)).await?.first().copied().ok_or_else(out_of_step);
        }
        let mut values = bucket_values(db, slice, level, bucket, None).await?;
        if values.len() as i64 != counted {
            return Err(out_of_step());
        }
        values.extend(read);
        values.sort_by(f64::total_cmp);
        return Ok(values[rank as usize]);
    }
    Err(out_of_step())
}

/// Median and p90 of a sample, by `percentile_cont`'s definition.
async fn percentiles(
    db: &impl ConnectionTrait,
    sample: &Sample,
    slice: Option<&Slice>,
    level: Level<'_>,
) -> Result<Percentiles, DbErr> {
    let n = sample.counts.values().sum::<i64>() + sample.values.len() as i64;
    let mut known: HashMap<i64, f64> = HashMap::new();
    let mut at = async |fraction: f64| -> Result<Option<f64>, DbErr> {
        let Some(ranks) = Ranks::of(n, fraction) else { return Ok(None) };
        let mut pair = [0.0; 2];
        for (slot, rank) in pair.iter_mut().zip([ranks.lower, ranks.upper]) {
            *slot = match known.get(&rank) {
                Some(v) => *v,
                None => {
                    let v = value_at(db, sample, slice, level, rank).await?;
                    known.insert(rank, v);
                    v
                }
            };
        }
        Ok(Some(ranks.interpolate(pair[0], pair[1])))
    };
    let median = at(0.5).await?;
    let p90 = at(0.9).await?;
    Ok(Percentiles { median, p90 })
}

fn status_count(tally: &mut StatusTally, measure: &str, n: i64) {
    if measure == rollup::ENROLLED {
        tally.enrolled += n;
    } else if measure == rollup::status_measure(EnrollmentStatus::InProgress.name()) {
        tally.in_progress += n;
    } else if measure == rollup::status_measure(completed()) {
        tally.completed += n;
    } else if measure == rollup::status_measure(EnrollmentStatus::Skipped.name()) {
        tally.skipped += n;
    }
}

/// A cohort's enrollments counted by status, per (flow version row, variant): few groups,
/// which add up to any coarser breakdown.
pub async fn status_tallies(
    db: &impl ConnectionTrait,
    cohort: &Cohort<'_>,
) -> Result<Vec<((i64, Option<String>), StatusTally)>, DbErr> {
    let parts = split(cohort.since, cohort.until);
    let mut groups: BTreeMap<Group, StatusTally> = BTreeMap::new();
    if let Some(days) = parts.days {
        for cell in rollup_cells(db, &Slice::new(cohort, days), false).await? {
            status_count(groups.entry((cell.flow_id, cell.variant)).or_default(), &cell.measure, cell.n);
        }
    }
    for (since, until) in parts.edges {
        for (group, tally) in direct_status_tallies(db, &Cohort { since, until, ..cohort.clone() }).await? {
            *groups.entry(group).or_default() += &tally;
        }
    }
    // A group whose enrollments all moved away (a version migration) sums to zero.
    Ok(groups.into_iter().filter(|(_, t)| t.enrolled != 0).collect())
}

async fn direct_status_tallies(
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

/// Per step key, what the cohort did.
pub async fn funnel_steps(db: &impl ConnectionTrait, cohort: &Cohort<'_>) -> Result<HashMap<String, StepTally>, DbErr> {
    let parts = split(cohort.since, cohort.until);
    let slice = parts.days.map(|days| Slice::new(cohort, days));
    let mut steps: HashMap<String, (StepTally, Sample)> = HashMap::new();
    if let Some(slice) = &slice {
        let (done, skipped) =
            (rollup::status_measure(StepStatus::Completed.name()), rollup::status_measure(StepStatus::Skipped.name()));
        for cell in rollup_cells(db, slice, true).await? {
            let (tally, sample) = steps.entry(cell.step_key).or_default();
            match cell.measure.as_str() {
                rollup::APPLIED => tally.applied += cell.n,
                rollup::REACHED => tally.reached += cell.n,
                rollup::TIME => *sample.counts.entry(cell.bucket).or_default() += cell.n,
                m if m == done => tally.completed += cell.n,
                m if m == skipped => tally.skipped += cell.n,
                _ => {}
            }
        }
    }
    for (since, until) in parts.edges {
        let edge = Cohort { since, until, ..cohort.clone() };
        for (step, counts, values) in direct_steps(db, &edge).await? {
            let (tally, sample) = steps.entry(step).or_default();
            tally.applied += counts.applied;
            tally.reached += counts.reached;
            tally.completed += counts.completed;
            tally.skipped += counts.skipped;
            sample.values.extend(values);
        }
    }
    let mut out = HashMap::new();
    for (step, (mut tally, sample)) in steps {
        tally.time_to_complete = percentiles(db, &sample, slice.as_ref(), Level::Step(&step)).await?;
        if tally.applied != 0 {
            out.insert(step, tally);
        }
    }
    Ok(out)
}

/// Step counts and completion times read from the rows (a partial day).
async fn direct_steps(
    db: &impl ConnectionTrait,
    cohort: &Cohort<'_>,
) -> Result<Vec<(String, StepTally, Vec<f64>)>, DbErr> {
    let mut q = Query::new();
    let condition = cohort.condition(&mut q);
    let done = StepStatus::Completed.name();
    let skipped = StepStatus::Skipped.name();
    let sql = format!(
        "SELECT sp.step_key,
               count(*) AS applied,
               count(*) FILTER (WHERE sp.available_at IS NOT NULL) AS reached,
               count(*) FILTER (WHERE sp.status = '{done}') AS completed,
               count(*) FILTER (WHERE sp.status = '{skipped}') AS skipped
         FROM enrollments en
         JOIN step_progress sp ON sp.enrollment_id = en.id
         WHERE {condition}
         GROUP BY sp.step_key"
    );
    let mut steps: BTreeMap<String, (StepTally, Vec<f64>)> = BTreeMap::new();
    for row in all(db, q, sql).await? {
        let tally = StepTally {
            applied: row.try_get_by("applied")?,
            reached: row.try_get_by("reached")?,
            completed: row.try_get_by("completed")?,
            skipped: row.try_get_by("skipped")?,
            time_to_complete: Percentiles::default(),
        };
        steps.insert(row.try_get_by("step_key")?, (tally, Vec::new()));
    }
    let mut q = Query::new();
    let condition = cohort.condition(&mut q);
    let sql = format!(
        "SELECT sp.step_key, sp.elapsed_seconds
         FROM enrollments en
         JOIN step_progress sp ON sp.enrollment_id = en.id
         WHERE {condition} AND sp.elapsed_seconds IS NOT NULL"
    );
    for row in all(db, q, sql).await? {
        if let Some((_, values)) = steps.get_mut(&row.try_get_by::<String, _>("step_key")?) {
            values.push(row.try_get_by("elapsed_seconds")?);
        }
    }
    Ok(steps.into_iter().map(|(k, (t, v))| (k, t, v)).collect())
}

pub async fn completion_times(db: &impl ConnectionTrait, cohort: &Cohort<'_>) -> Result<CompletionTimes, DbErr> {
    let parts = split(cohort.since, cohort.until);
    // Per (version row, variant): the finest groups, which add up to every breakdown.
    let mut groups: BTreeMap<Group, Sample> = BTreeMap::new();
    if let Some(days) = parts.days {
        for cell in rollup_cells(db, &Slice::new(cohort, days), false).await? {
            if cell.measure == rollup::TIME {
                let sample = groups.entry((cell.flow_id, cell.variant)).or_default();
                *sample.counts.entry(cell.bucket).or_default() += cell.n;
            }
        }
    }
    for (since, until) in parts.edges {
        let mut q = Query::new();
        let condition = Cohort { since, until, ..cohort.clone() }.condition(&mut q);
        let sql = format!(
            "SELECT en.flow_id, en.variant, en.elapsed_seconds
             FROM enrollments en
             WHERE {condition} AND en.elapsed_seconds IS NOT NULL"
        );
        for row in all(db, q, sql).await? {
            let group = (row.try_get_by("flow_id")?, row.try_get_by("variant")?);
            groups.entry(group).or_default().values.push(row.try_get_by("elapsed_seconds")?);
        }
    }
    let merged = |keep: &dyn Fn(&Group) -> bool| {
        let mut sample = Sample::default();
        for (_, part) in groups.iter().filter(|(group, _)| keep(group)) {
            for (bucket, n) in &part.counts {
                *sample.counts.entry(*bucket).or_default() += n;
            }
            sample.values.extend(&part.values);
        }
        sample
    };
    // The rollup's values of a group live in the same whole days, narrowed to the group.
    let slice = |flow_ids: Vec<i64>, variant: Option<Option<String>>| {
        parts.days.map(|(first, end)| Slice { flow_ids, variant, first, end })
    };
    let cohort_variant = cohort.variant.map(|v| Some(v.to_string()));
    let all_of = slice(cohort.flow_ids.to_vec(), cohort_variant.clone());
    let mut times = CompletionTimes {
        overall: percentiles(db, &merged(&|_| true), all_of.as_ref(), Level::Enrollment).await?,
        ..Default::default()
    };
    let flows: BTreeSet<i64> = groups.keys().map(|(flow, _)| *flow).collect();
    for flow in flows {
        let sample = merged(&|(f, _)| *f == flow);
        let within = slice(vec![flow], cohort_variant.clone());
        times.by_flow.insert(flow, percentiles(db, &sample, within.as_ref(), Level::Enrollment).await?);
    }
    let variants: BTreeSet<Option<String>> = groups.keys().map(|(_, v)| v.clone()).collect();
    for variant in variants {
        let sample = merged(&|(_, v)| *v == variant);
        let within = slice(cohort.flow_ids.to_vec(), Some(variant.clone()));
        times.by_variant.insert(variant, percentiles(db, &sample, within.as_ref(), Level::Enrollment).await?);
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
