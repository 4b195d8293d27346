//! Enrollments and their step progress, mapped to and from `domain::Enrollment`.

use std::collections::{BTreeMap, HashMap};

use entity::{enrollment, step_progress, subject};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, FromQueryResult, JoinType, Order, QueryFilter, QueryOrder,
    QueryResult, QuerySelect, QueryTrait, TryInsertResult,
    sea_query::{Expr, LockType, OnConflict},
};

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
    let mut query = enrollment::Entity::find()
        .filter(enrollment::Column::SubjectId.eq(subject_id))
        .filter(enrollment::Column::FlowKey.eq(flow_key));
    if for_update && is_postgres(db) {
        query = query.lock_exclusive();
    }
    let Some(row) = query.one(db).await? else {
        return Ok(None);
    };
    let steps = steps_of(db, vec![row.id]).await?.into_iter().map(|s| (s.key, s.state)).collect();
    Ok(Some(record(row, steps)?))
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

impl FromQueryResult for StepRow {
    fn from_query_result(row: &QueryResult, _prefix: &str) -> Result<Self, DbErr> {
        let status: String = columns::get(row, 2)?;
        let source: String = columns::get(row, 8)?;
        Ok(StepRow {
            enrollment_id: columns::get(row, 0)?,
            key: columns::get(row, 1)?,
            state: StepState {
                status: parse_name(&status, StepStatus::parse, "step status")?,
                started_at: columns::get(row, 3)?,
                completed_at: columns::get(row, 4)?,
                skipped_at: columns::get(row, 5)?,
                skip_reason: columns::get(row, 6)?,
                metadata: columns::get(row, 7)?,
                source: parse_name(&source, Source::parse, "step source")?,
                event_id: columns::get(row, 9)?,
                completed_by: columns::get(row, 10)?,
                available_at: columns::get(row, 11)?,
            },
        })
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
/// transaction may have won the race); the caller reads it back either way.
pub async fn insert(
    db: &impl ConnectionTrait,
    subject_id: i64,
    flow_id: i64,
    flow_key: &str,
    state: &Enrollment,
    assignment: Option<&Assignment>,
) -> Result<(), DbErr> {
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
    if matches!(inserted, TryInsertResult::Inserted(n) if n > 0) {
        let cohort = Cohort { flow_id, variant: assignment.map(|a| a.variant.clone()), started_at: state.started_at };
        rollup_store::record(db, &rollup::changes(None, Some((&cohort, state)))).await?;
    }
    Ok(())
}

/// One enrollment's write: the record as it was loaded, the state to store, and the steps
/// whose rows to upsert.
pub struct Save<'a> {
    pub before: &'a EnrollmentRecord,
    pub after: &'a Enrollment,
    pub changed_steps: &'a [String],
}

/// Writes the enrollment rows and upserts the steps that changed, for any number of
/// enrollments in two statements (a batch of events advances hundreds at once). Every
/// enrollment was loaded under its lock, so each row exists: the enrollment "insert"
/// always takes the conflict path and updates only the state columns.
pub async fn save_all(db: &impl ConnectionTrait, saves: &[Save<'_>]) -> Result<(), DbErr> {
    if saves.is_empty() {
        return Ok(());
    }
    // The batch's analytics changes, netted per cell: one insert for all of them.
    let mut net: BTreeMap<Cell, i64> = BTreeMap::new();
    for (cell, n) in saves.iter().flat_map(rollup_changes) {
        *net.entry(cell).or_default() += n;
    }
    let net: Vec<(Cell, i64)> = net.into_iter().filter(|(_, n)| *n != 0).collect();
    rollup_store::record(db, &net).await?;
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
    enrollment::Entity::insert_many(rows)
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
        .exec_without_returning(db)
        .await?;
    let steps: Vec<step_progress::ActiveModel> = saves.iter().flat_map(step_rows).collect();
    if steps.is_empty() {
        return Ok(());
    }
    step_progress::Entity::insert_many(steps)
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
        .exec_without_returning(db)
        .await?;
    Ok(())
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
