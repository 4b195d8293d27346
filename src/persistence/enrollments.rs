//! Enrollments and their step progress, mapped to and from `domain::Enrollment`.

use std::collections::{BTreeMap, HashMap};

use entity::{enrollment, step_progress, subject};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, FromQueryResult, JoinType, Order, QueryFilter,
    QueryOrder, QueryResult, QuerySelect, QueryTrait, TryInsertResult,
    sea_query::{Expr, ExprTrait, LockType, OnConflict, Query, SelectStatement},
};

use super::subjects::SubjectRecord;
use super::writes::{Writes, row_chunks};
use super::{columns, is_postgres, parse_name, rollup as rollup_store};
use crate::domain::rollup::{self, Cell, Cohort};
use crate::domain::{Enrollment, EnrollmentStatus, Source, StepState, StepStatus};

#[derive(Clone, Debug)]
pub struct EnrollmentRecord {
    pub id: i64,
    pub subject_id: i64,
    pub flow_id: i64,
    pub flow_key: String,
    /// The variant an experiment assigned, when one did.
    pub variant: Option<String>,
    pub state: Enrollment,
}

impl EnrollmentRecord {
    /// The analytics cohort the enrollment counts in.
    pub fn cohort(&self) -> Cohort {
        Cohort { flow_id: self.flow_id, variant: self.variant.clone(), started_at: self.state.started_at }
    }
}

/// An experiment's choice of version for a subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub experiment_id: i64,
    pub experiment_key: String,
    pub variant: String,
    /// Serving the flow now is the subject's first exposure to a running experiment (a
    /// declared winner, or a subject exposed before, records none), so reads stay reads.
    pub first_exposure: bool,
}

/// A subject's enrollment in a flow, with its steps. With `for_update` the row is locked
/// until the transaction ends (PostgreSQL; SQLite already holds the write lock), so
/// concurrent writers to one enrollment run one after the other and lose nothing.
pub async fn find(
    db: &impl ConnectionTrait,
    subject_id: i64,
    flow_key: &str,
    for_update: bool,
) -> Result<Option<EnrollmentRecord>, DbErr> {
    let mut query = Query::select();
    query
        .columns(ENROLLMENT_COLUMNS.map(|c| (enrollment::Entity, c)))
        .from(enrollment::Entity)
        .and_where(Expr::col((enrollment::Entity, enrollment::Column::SubjectId)).eq(subject_id))
        .and_where(Expr::col((enrollment::Entity, enrollment::Column::FlowKey)).eq(flow_key));
    read(db, query, false, for_update).await.map(|found| found.and_then(|(_, enrollment)| enrollment))
}

/// Where an owner stands in a flow: its subject and, if enrolled, the enrollment with its
/// steps; `None` for an owner never seen. One statement, so one snapshot without a
/// transaction: this is all a status read of an enrolled owner asks of the database.
pub async fn standing(
    db: &impl ConnectionTrait,
    external_id: &str,
    flow_key: &str,
) -> Result<Option<(SubjectRecord, Option<EnrollmentRecord>)>, DbErr> {
    let query = with_subject(external_id, flow_key, JoinType::LeftJoin);
    match read(db, query, true, false).await? {
        Some((Some(subject), enrollment)) => Ok(Some((subject, enrollment))),
        Some((None, _)) => Err(DbErr::Custom("a joined row without its subject".into())),
        None => Ok(None),
    }
}

/// The subject and its enrollment in a flow, with steps, the enrollment locked as `find`
/// locks it: what a write to an existing enrollment reads. `None` when either is missing;
/// the caller then creates them.
pub async fn lock_standing(
    db: &impl ConnectionTrait,
    external_id: &str,
    flow_key: &str,
) -> Result<Option<(SubjectRecord, EnrollmentRecord)>, DbErr> {
    let query = with_subject(external_id, flow_key, JoinType::InnerJoin);
    Ok(match read(db, query, true, true).await? {
        Some((Some(subject), Some(enrollment))) => Some((subject, enrollment)),
        _ => None,
    })
}

/// Runs a read of `SUBJECT_COLUMNS` (when `subject`) then `ENROLLMENT_COLUMNS`, and
/// gathers the enrollment's steps with it.
///
/// Unlocked, the steps are joined into the same statement: one round trip, one snapshot.
/// Locked, they are read after the lock is granted, in a statement of their own. Joined
/// to a `FOR UPDATE`, they would come from the snapshot taken *before* waiting for the
/// lock (PostgreSQL re-reads only the locked row after the wait), so a writer queued
/// behind another would see its steps as they were and overwrite the other's changes.
async fn read(
    db: &impl ConnectionTrait,
    mut query: SelectStatement,
    subject: bool,
    for_update: bool,
) -> Result<Option<(Option<SubjectRecord>, Option<EnrollmentRecord>)>, DbErr> {
    if for_update {
        if is_postgres(db) {
            query.lock_with_tables(LockType::Update, [enrollment::Entity]);
        }
        let rows = db.query_all(&query).await?;
        return match gather(&rows, subject, false)? {
            Some((subject, Some(mut enrollment))) => {
                for step in steps_of(db, vec![enrollment.id]).await? {
                    enrollment.state.steps.insert(step.key, step.state);
                }
                Ok(Some((subject, Some(enrollment))))
            }
            other => Ok(other),
        };
    }
    query.columns(STEP_COLUMNS.map(|c| (step_progress::Entity, c))).join(
        JoinType::LeftJoin,
        step_progress::Entity,
        Expr::col((step_progress::Entity, step_progress::Column::EnrollmentId))
            .equals((enrollment::Entity, enrollment::Column::Id)),
    );
    gather(&db.query_all(&query).await?, subject, true)
}

/// subject ⋈ its enrollment in `flow_key`, joined as `join` says.
fn with_subject(external_id: &str, flow_key: &str, join: JoinType) -> SelectStatement {
    let mut query = Query::select();
    query
        .columns(SUBJECT_COLUMNS.map(|c| (subject::Entity, c)))
        .columns(ENROLLMENT_COLUMNS.map(|c| (enrollment::Entity, c)))
        .from(subject::Entity)
        .join(
            join,
            enrollment::Entity,
            Condition::all()
                .add(
                    Expr::col((enrollment::Entity, enrollment::Column::SubjectId))
                        .equals((subject::Entity, subject::Column::Id)),
                )
                .add(Expr::col((enrollment::Entity, enrollment::Column::FlowKey)).eq(flow_key)),
        )
        .and_where(Expr::col((subject::Entity, subject::Column::ExternalId)).eq(external_id));
    query
}

/// The subject columns the joined reads select first.
const SUBJECT_COLUMNS: [subject::Column; 3] =
    [subject::Column::Id, subject::Column::ExternalId, subject::Column::Attributes];

/// The enrollment columns the reads select, in the order `enrollment_from` decodes them.
const ENROLLMENT_COLUMNS: [enrollment::Column; 12] = [
    enrollment::Column::Id,
    enrollment::Column::SubjectId,
    enrollment::Column::FlowId,
    enrollment::Column::FlowKey,
    enrollment::Column::Variant,
    enrollment::Column::Status,
    enrollment::Column::StartedAt,
    enrollment::Column::CompletedAt,
    enrollment::Column::SkippedAt,
    enrollment::Column::LastActivityAt,
    enrollment::Column::Points,
    enrollment::Column::Revision,
];

/// Folds the rows of a read (`SUBJECT_COLUMNS` when `subject`, `ENROLLMENT_COLUMNS`, then,
/// with `steps`, one step's `STEP_COLUMNS`) into the subject and its enrollment with all its
/// steps. `None` when there are no rows; a left join's missing side is all NULL, so it
/// decodes as `None`.
#[allow(clippy::type_complexity)]
fn gather(
    rows: &[QueryResult],
    subject: bool,
    steps: bool,
) -> Result<Option<(Option<SubjectRecord>, Option<EnrollmentRecord>)>, DbErr> {
    let Some(first) = rows.first() else { return Ok(None) };
    let (subject, enrollment_at) = if subject {
        let record = SubjectRecord {
            id: columns::get(first, 0)?,
            external_id: columns::get(first, 1)?,
            attributes: columns::get(first, 2)?,
        };
        (Some(record), SUBJECT_COLUMNS.len())
    } else {
        (None, 0)
    };
    let Some(mut enrollment) = enrollment_from(first, enrollment_at)? else { return Ok(Some((subject, None))) };
    let step_at = enrollment_at + ENROLLMENT_COLUMNS.len();
    for row in rows.iter().filter(|_| steps) {
        if columns::get::<Option<i64>>(row, step_at)?.is_some() {
            let step = StepRow::decode(row, step_at)?;
            enrollment.state.steps.insert(step.key, step.state);
        }
    }
    Ok(Some((subject, Some(enrollment))))
}

/// The enrollment whose `ENROLLMENT_COLUMNS` start at `at`, with no steps yet.
fn enrollment_from(row: &QueryResult, at: usize) -> Result<Option<EnrollmentRecord>, DbErr> {
    let Some(id) = columns::get::<Option<i64>>(row, at)? else { return Ok(None) };
    let status: String = columns::get(row, at + 5)?;
    Ok(Some(EnrollmentRecord {
        id,
        subject_id: columns::get(row, at + 1)?,
        flow_id: columns::get(row, at + 2)?,
        flow_key: columns::get(row, at + 3)?,
        variant: columns::get(row, at + 4)?,
        state: Enrollment {
            status: parse_name(&status, EnrollmentStatus::parse, "enrollment status")?,
            started_at: columns::get(row, at + 6)?,
            completed_at: columns::get(row, at + 7)?,
            skipped_at: columns::get(row, at + 8)?,
            last_activity_at: columns::get(row, at + 9)?,
            points: columns::get(row, at + 10)?,
            revision: columns::get(row, at + 11)?,
            steps: BTreeMap::new(),
        },
    }))
}

/// Every enrollment of a subject, with steps, in two queries; `for_update` as in `find`.
pub async fn list_for_subject(
    db: &impl ConnectionTrait,
    subject_id: i64,
    for_update: bool,
) -> Result<Vec<EnrollmentRecord>, DbErr> {
    let mut query = enrollment::Entity::find()
        .filter(enrollment::Column::SubjectId.eq(subject_id))
        .order_by_asc(enrollment::Column::FlowKey);
    if for_update && is_postgres(db) {
        query = query.lock_exclusive();
    }
    with_steps(db, query.all(db).await?).await
}

/// Every enrollment of several subjects, with steps, in two queries. With `for_update`
/// they are locked by owner key (bytewise, as `BTreeMap` and version migrations order
/// owners) and then by flow key, the order every multi-owner writer follows, so two of
/// them cannot deadlock.
pub async fn list_for_subjects(
    db: &impl ConnectionTrait,
    subject_ids: &[i64],
    for_update: bool,
) -> Result<Vec<EnrollmentRecord>, DbErr> {
    if subject_ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut query = enrollment::Entity::find()
        .join(
            JoinType::InnerJoin,
            enrollment::Entity::belongs_to(subject::Entity)
                .from(enrollment::Column::SubjectId)
                .to(subject::Column::Id)
                .into(),
        )
        .filter(enrollment::Column::SubjectId.is_in(subject_ids.iter().copied()));
    if for_update && is_postgres(db) {
        query = query
            .order_by(Expr::cust(r#""subjects"."external_id" COLLATE "C""#), Order::Asc)
            .order_by_asc(enrollment::Column::FlowKey);
        QueryTrait::query(&mut query).lock_with_tables(LockType::Update, [enrollment::Entity]);
    } else {
        query = query.order_by_asc(subject::Column::ExternalId).order_by_asc(enrollment::Column::FlowKey);
    }
    with_steps(db, query.all(db).await?).await
}

/// Records for enrollment rows, with all their steps loaded in one query.
async fn with_steps(db: &impl ConnectionTrait, rows: Vec<enrollment::Model>) -> Result<Vec<EnrollmentRecord>, DbErr> {
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut steps: HashMap<i64, BTreeMap<String, StepState>> = HashMap::new();
    if !ids.is_empty() {
        for step in steps_of(db, ids).await? {
            steps.entry(step.enrollment_id).or_default().insert(step.key, step.state);
        }
    }
    rows.into_iter()
        .map(|row| {
            let s = steps.remove(&row.id).unwrap_or_default();
            record(row, s)
        })
        .collect()
}

/// One step row, as the domain reads it.
struct StepRow {
    enrollment_id: i64,
    key: String,
    state: StepState,
}

/// The columns `StepRow` reads, in its order.
const STEP_COLUMNS: [step_progress::Column; 12] = [
    step_progress::Column::EnrollmentId,
    step_progress::Column::StepKey,
    step_progress::Column::Status,
    step_progress::Column::StartedAt,
    step_progress::Column::CompletedAt,
    step_progress::Column::SkippedAt,
    step_progress::Column::SkipReason,
    step_progress::Column::Metadata,
    step_progress::Column::Source,
    step_progress::Column::EventId,
    step_progress::Column::CompletedBy,
    step_progress::Column::AvailableAt,
];

impl StepRow {
    /// The row's `STEP_COLUMNS`, selected from position `at` on.
    fn decode(row: &QueryResult, at: usize) -> Result<Self, DbErr> {
        let status: String = columns::get(row, at + 2)?;
        let source: String = columns::get(row, at + 8)?;
        Ok(StepRow {
            enrollment_id: columns::get(row, at)?,
            key: columns::get(row, at + 1)?,
            state: StepState {
                status: parse_name(&status, StepStatus::parse, "step status")?,
                started_at: columns::get(row, at + 3)?,
                completed_at: columns::get(row, at + 4)?,
                skipped_at: columns::get(row, at + 5)?,
                skip_reason: columns::get(row, at + 6)?,
                metadata: columns::get(row, at + 7)?,
                source: parse_name(&source, Source::parse, "step source")?,
                event_id: columns::get(row, at + 9)?,
                completed_by: columns::get(row, at + 10)?,
                available_at: columns::get(row, at + 11)?,
            },
        })
    }
}

impl FromQueryResult for StepRow {
    fn from_query_result(row: &QueryResult, _prefix: &str) -> Result<Self, DbErr> {
        StepRow::decode(row, 0)
    }
}

/// The step rows of some enrollments, decoded by position (see `columns`): an event batch
/// loads thousands of them.
async fn steps_of(db: &impl ConnectionTrait, enrollment_ids: Vec<i64>) -> Result<Vec<StepRow>, DbErr> {
    step_progress::Entity::find()
        .select_only()
        .columns(STEP_COLUMNS)
        .filter(step_progress::Column::EnrollmentId.is_in(enrollment_ids))
        .into_model::<StepRow>()
        .all(db)
        .await
}

/// Inserts a new enrollment unless the subject already has one for the flow key (another
/// transaction may have won the race); whether it did. The caller reads it back either way.
pub async fn insert(
    db: &impl ConnectionTrait,
    subject_id: i64,
    flow_id: i64,
    flow_key: &str,
    state: &Enrollment,
    assignment: Option<&Assignment>,
) -> Result<bool, DbErr> {
    let row = enrollment::ActiveModel {
        id: NotSet,
        subject_id: Set(subject_id),
        flow_id: Set(flow_id),
        flow_key: Set(flow_key.to_string()),
        status: Set(state.status.name().into()),
        started_at: Set(state.started_at),
        completed_at: Set(state.completed_at),
        skipped_at: Set(state.skipped_at),
        last_activity_at: Set(state.last_activity_at),
        points: Set(state.points),
        revision: Set(state.revision),
        experiment_key: Set(assignment.map(|a| a.experiment_key.clone())),
        variant: Set(assignment.map(|a| a.variant.clone())),
        elapsed_seconds: Set(rollup::enrollment_elapsed(state)),
    };
    let inserted = enrollment::Entity::insert(row)
        .on_conflict_do_nothing_on([enrollment::Column::SubjectId, enrollment::Column::FlowKey])
        .exec_without_returning(db)
        .await?;
    let created = matches!(inserted, TryInsertResult::Inserted(n) if n > 0);
    if created {
        let cohort = Cohort { flow_id, variant: assignment.map(|a| a.variant.clone()), started_at: state.started_at };
        rollup_store::record(db, &rollup::changes(None, Some((&cohort, state)))).await?;
    }
    Ok(created)
}

/// One enrollment's write: the record as it was loaded, the state to store, and the steps
/// whose rows to upsert.
pub struct Save<'a> {
    pub before: &'a EnrollmentRecord,
    pub after: &'a Enrollment,
    pub changed_steps: &'a [String],
}

/// Queues the writes of any number of enrollments (a batch of events advances hundreds at
/// once): their analytics deltas, netted; the enrollment rows; the steps that changed.
/// Every enrollment was loaded under its lock, so each row exists: the enrollment
/// "insert" always takes the conflict path and updates only the state columns. Each
/// enrollment is saved once and each of its steps once, so no row is written twice (as
/// `Writes` requires).
pub fn save_all(writes: &mut Writes, saves: &[Save<'_>]) {
    if saves.is_empty() {
        return;
    }
    // The batch's analytics changes, netted per cell: one insert for all of them.
    let mut net: BTreeMap<Cell, i64> = BTreeMap::new();
    for (cell, n) in saves.iter().flat_map(rollup_changes) {
        *net.entry(cell).or_default() += n;
    }
    let net: Vec<(Cell, i64)> = net.into_iter().filter(|(_, n)| *n != 0).collect();
    for statement in rollup_store::deltas(writes.backend(), &net) {
        writes.push_statement(statement);
    }
    let rows = saves.iter().map(|s| enrollment::ActiveModel {
        id: Set(s.before.id),
        subject_id: Set(s.before.subject_id),
        flow_id: Set(s.before.flow_id),
        flow_key: Set(s.before.flow_key.clone()),
        status: Set(s.after.status.name().into()),
        started_at: Set(s.after.started_at),
        completed_at: Set(s.after.completed_at),
        skipped_at: Set(s.after.skipped_at),
        last_activity_at: Set(s.after.last_activity_at),
        points: Set(s.after.points),
        revision: Set(s.after.revision),
        experiment_key: NotSet,
        variant: NotSet,
        elapsed_seconds: Set(rollup::enrollment_elapsed(s.after)),
    });
    for rows in row_chunks(rows) {
        writes.push(
            &enrollment::Entity::insert_many(rows)
                .on_conflict(
                    OnConflict::column(enrollment::Column::Id)
                        .update_columns([
                            enrollment::Column::Status,
                            enrollment::Column::CompletedAt,
                            enrollment::Column::SkippedAt,
                            enrollment::Column::LastActivityAt,
                            enrollment::Column::Points,
                            enrollment::Column::Revision,
                            enrollment::Column::ElapsedSeconds,
                        ])
                        .to_owned(),
                )
                .into_query(),
        );
    }
    for steps in row_chunks(saves.iter().flat_map(step_rows)) {
        writes.push(
            &step_progress::Entity::insert_many(steps)
                .on_conflict(
                    OnConflict::columns([step_progress::Column::EnrollmentId, step_progress::Column::StepKey])
                        .update_columns([
                            step_progress::Column::Status,
                            step_progress::Column::StartedAt,
                            step_progress::Column::CompletedAt,
                            step_progress::Column::SkippedAt,
                            step_progress::Column::SkipReason,
                            step_progress::Column::Metadata,
                            step_progress::Column::Source,
                            step_progress::Column::UpdatedAt,
                            step_progress::Column::EventId,
                            step_progress::Column::CompletedBy,
                            step_progress::Column::AvailableAt,
                            step_progress::Column::ElapsedSeconds,
                        ])
                        .to_owned(),
                )
                .into_query(),
        );
    }
}

/// The step rows one save upserts. One row per step: PostgreSQL refuses an upsert that
/// touches a row twice.
fn step_rows(save: &Save<'_>) -> Vec<step_progress::ActiveModel> {
    let mut keys: Vec<&String> = save.changed_steps.iter().collect();
    keys.sort_unstable();
    keys.dedup();
    let (id, state) = (save.before.id, save.after);
    keys.into_iter()
        .filter_map(|key| state.steps.get(key).map(|s| (key, s)))
        .map(|(key, s)| step_progress::ActiveModel {
            id: NotSet,
            enrollment_id: Set(id),
            step_key: Set(key.clone()),
            status: Set(s.status.name().into()),
            started_at: Set(s.started_at),
            completed_at: Set(s.completed_at),
            skipped_at: Set(s.skipped_at),
            skip_reason: Set(s.skip_reason.clone()),
            metadata: Set(s.metadata.clone()),
            source: Set(s.source.name().into()),
            updated_at: Set(state.last_activity_at),
            event_id: Set(s.event_id.clone()),
            completed_by: Set(s.completed_by.clone()),
            available_at: Set(s.available_at),
            elapsed_seconds: Set(rollup::step_elapsed(state, key)),
        })
        .collect()
}

/// What a save changes in the analytics rollup: its enrollment row and the step rows it
/// writes, from as loaded to as stored.
fn rollup_changes(save: &Save<'_>) -> Vec<(Cell, i64)> {
    rollup::save_changes(&save.before.cohort(), &save.before.state, save.after, save.changed_steps)
}

fn record(row: enrollment::Model, steps: BTreeMap<String, StepState>) -> Result<EnrollmentRecord, DbErr> {
    Ok(EnrollmentRecord {
        id: row.id,
        subject_id: row.subject_id,
        flow_id: row.flow_id,
        flow_key: row.flow_key,
        variant: row.variant,
        state: Enrollment {
            status: parse_name(&row.status, EnrollmentStatus::parse, "enrollment status")?,
            started_at: row.started_at,
            completed_at: row.completed_at,
            skipped_at: row.skipped_at,
            last_activity_at: row.last_activity_at,
            points: row.points,
            revision: row.revision,
            steps,
        },
    })
}

/// The next batch of enrollments pinned to a flow version, by id.
pub async fn ids_on_flow(db: &impl ConnectionTrait, flow_id: i64, after: i64, limit: u64) -> Result<Vec<i64>, DbErr> {
    enrollment::Entity::find()
        .select_only()
        .column(enrollment::Column::Id)
        .filter(enrollment::Column::FlowId.eq(flow_id))
        .filter(enrollment::Column::Id.gt(after))
        .order_by_asc(enrollment::Column::Id)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await
}

/// Enrollments by id, with steps; `for_update` as in `find`.
pub async fn by_ids(
    db: &impl ConnectionTrait,
    ids: Vec<i64>,
    for_update: bool,
) -> Result<Vec<EnrollmentRecord>, DbErr> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut query =
        enrollment::Entity::find().filter(enrollment::Column::Id.is_in(ids)).order_by_asc(enrollment::Column::Id);
    if for_update && is_postgres(db) {
        query = query.lock_exclusive();
    }
    with_steps(db, query.all(db).await?).await
}

/// Pins an enrollment to another version of its flow; its analytics cells move along.
pub async fn set_flow(db: &impl ConnectionTrait, record: &mut EnrollmentRecord, flow_id: i64) -> Result<(), DbErr> {
    enrollment::Entity::update_many()
        .col_expr(enrollment::Column::FlowId, flow_id.into())
        .filter(enrollment::Column::Id.eq(record.id))
        .exec(db)
        .await?;
    let from = record.cohort();
    record.flow_id = flow_id;
    let to = record.cohort();
    rollup_store::record(db, &rollup::changes(Some((&from, &record.state)), Some((&to, &record.state)))).await
}

/// The next enrollments after id `after`, by id, with steps: for walking every row.
pub async fn batch_after(db: &impl ConnectionTrait, after: i64, limit: u64) -> Result<Vec<EnrollmentRecord>, DbErr> {
    let rows = enrollment::Entity::find()
        .filter(enrollment::Column::Id.gt(after))
        .order_by_asc(enrollment::Column::Id)
        .limit(limit)
        .all(db)
        .await?;
    with_steps(db, rows).await
}

/// Sets `elapsed_seconds` on the completed rows of these enrollments that lack it (rows
/// written before the column existed), computed as the write path computes it.
pub async fn fill_elapsed(db: &impl ConnectionTrait, records: &[EnrollmentRecord]) -> Result<(), DbErr> {
    let ids: Vec<i64> = records.iter().map(|r| r.id).collect();
    let missing: Vec<i64> = enrollment::Entity::find()
        .select_only()
        .column(enrollment::Column::Id)
        .filter(enrollment::Column::Id.is_in(ids.clone()))
        .filter(enrollment::Column::CompletedAt.is_not_null())
        .filter(enrollment::Column::ElapsedSeconds.is_null())
        .into_tuple()
        .all(db)
        .await?;
    for record in records.iter().filter(|r| missing.contains(&r.id)) {
        if let Some(seconds) = rollup::enrollment_elapsed(&record.state) {
            enrollment::Entity::update_many()
                .col_expr(enrollment::Column::ElapsedSeconds, seconds.into())
                .filter(enrollment::Column::Id.eq(record.id))
                .exec(db)
                .await?;
        }
    }
    let missing: Vec<(i64, i64, String)> = step_progress::Entity::find()
        .select_only()
        .column(step_progress::Column::Id)
        .column(step_progress::Column::EnrollmentId)
        .column(step_progress::Column::StepKey)
        .filter(step_progress::Column::EnrollmentId.is_in(ids))
        .filter(step_progress::Column::CompletedAt.is_not_null())
        .filter(step_progress::Column::ElapsedSeconds.is_null())
        .into_tuple()
        .all(db)
        .await?;
    for (row, enrollment_id, key) in missing {
        let seconds = records.iter().find(|r| r.id == enrollment_id).and_then(|r| rollup::step_elapsed(&r.state, &key));
        if let Some(seconds) = seconds {
            step_progress::Entity::update_many()
                .col_expr(step_progress::Column::ElapsedSeconds, seconds.into())
                .filter(step_progress::Column::Id.eq(row))
                .exec(db)
                .await?;
        }
    }
    Ok(())
}
