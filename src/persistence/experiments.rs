//! Experiments, their variants and exposures.

use chrono::{DateTime, Utc};
use entity::{experiment, experiment_variant, exposure};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::parse_name;
use crate::domain::experiments::{ExperimentState, Variant};

#[derive(Clone, Debug, PartialEq)]
pub struct ExperimentRecord {
    pub id: i64,
    pub key: String,
    pub flow_key: String,
    pub state: ExperimentState,
    pub winner: Option<String>,
    /// In the order given at creation, which the hash ranges follow.
    pub variants: Vec<Variant>,
    pub created_at: DateTime<Utc>,
}

pub async fn create(
    db: &impl ConnectionTrait,
    key: &str,
    flow_key: &str,
    variants: &[Variant],
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let row = experiment::ActiveModel {
        id: NotSet,
        key: Set(key.to_string()),
        flow_key: Set(flow_key.to_string()),
        state: Set(ExperimentState::Draft.name().into()),
        winner: Set(None),
        created_at: Set(now),
        started_at: Set(None),
        stopped_at: Set(None),
    };
    let row = experiment::Entity::insert(row).exec_with_returning(db).await?;
    let rows: Vec<experiment_variant::ActiveModel> = variants
        .iter()
        .map(|v| experiment_variant::ActiveModel {
            id: NotSet,
            experiment_id: Set(row.id),
            name: Set(v.name.clone()),
            version: Set(v.version),
            weight: Set(v.weight as i32),
        })
        .collect();
    experiment_variant::Entity::insert_many(rows).exec_without_returning(db).await?;
    Ok(())
}

async fn record(db: &impl ConnectionTrait, row: experiment::Model) -> Result<ExperimentRecord, DbErr> {
    let variants = experiment_variant::Entity::find()
        .filter(experiment_variant::Column::ExperimentId.eq(row.id))
        .order_by_asc(experiment_variant::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(|v| Variant { name: v.name, version: v.version, weight: v.weight.max(0) as u32 })
        .collect();
    Ok(ExperimentRecord {
        id: row.id,
        state: parse_name(&row.state, ExperimentState::parse, "experiment state")?,
        key: row.key,
        flow_key: row.flow_key,
        winner: row.winner,
        variants,
        created_at: row.created_at,
    })
}

pub async fn find(db: &impl ConnectionTrait, key: &str) -> Result<Option<ExperimentRecord>, DbErr> {
    match experiment::Entity::find().filter(experiment::Column::Key.eq(key)).one(db).await? {
        Some(row) => record(db, row).await.map(Some),
        None => Ok(None),
    }
}

/// The experiment that decides a flow's version for new subjects: the one started most
/// recently (running, stopped or completed). A stopped one decides "no experiment": a later
/// experiment's stop is not undone by an older one's winner.
pub async fn in_effect(db: &impl ConnectionTrait, flow_key: &str) -> Result<Option<ExperimentRecord>, DbErr> {
    let row = experiment::Entity::find()
        .filter(experiment::Column::FlowKey.eq(flow_key))
        .filter(experiment::Column::StartedAt.is_not_null())
        .order_by_desc(experiment::Column::StartedAt)
        .order_by_desc(experiment::Column::Id)
        .one(db)
        .await?;
    match row {
        Some(row) => record(db, row).await.map(Some),
        None => Ok(None),
    }
}

/// The experiment running on a flow, if any.
pub async fn running(db: &impl ConnectionTrait, flow_key: &str) -> Result<Option<ExperimentRecord>, DbErr> {
    let row = experiment::Entity::find()
        .filter(experiment::Column::FlowKey.eq(flow_key))
        .filter(experiment::Column::State.eq(ExperimentState::Running.name()))
        .one(db)
        .await?;
    match row {
        Some(row) => record(db, row).await.map(Some),
        None => Ok(None),
    }
}

pub async fn set_state(
    db: &impl ConnectionTrait,
    id: i64,
    state: ExperimentState,
    winner: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let mut update = experiment::Entity::update_many()
        .col_expr(experiment::Column::State, state.name().into())
        .filter(experiment::Column::Id.eq(id));
    match state {
        ExperimentState::Running => update = update.col_expr(experiment::Column::StartedAt, now.into()),
        ExperimentState::Stopped => update = update.col_expr(experiment::Column::StoppedAt, now.into()),
        // A winner declared is the newest decision on the flow, even without a start.
        ExperimentState::Completed => {
            update = update
                .col_expr(experiment::Column::StoppedAt, now.into())
                .col_expr(experiment::Column::StartedAt, now.into())
        }
        ExperimentState::Draft => {}
    }
    if let Some(w) = winner {
        update = update.col_expr(experiment::Column::Winner, w.into());
    }
    update.exec(db).await?;
    Ok(())
}

pub async fn set_weight(db: &impl ConnectionTrait, id: i64, variant: &str, weight: u32) -> Result<(), DbErr> {
    experiment_variant::Entity::update_many()
        .col_expr(experiment_variant::Column::Weight, (weight as i32).into())
        .filter(experiment_variant::Column::ExperimentId.eq(id))
        .filter(experiment_variant::Column::Name.eq(variant))
        .exec(db)
        .await?;
    Ok(())
}

/// The variant a subject was exposed to, if it was.
pub async fn exposure(db: &impl ConnectionTrait, experiment_id: i64, subject: &str) -> Result<Option<String>, DbErr> {
    exposure::Entity::find()
        .select_only()
        .column(exposure::Column::Variant)
        .filter(exposure::Column::ExperimentId.eq(experiment_id))
        .filter(exposure::Column::SubjectId.eq(subject))
        .into_tuple()
        .one(db)
        .await
}

/// Records the first exposure; later ones change nothing.
pub async fn expose(
    db: &impl ConnectionTrait,
    experiment_id: i64,
    variant: &str,
    subject: &str,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let row = exposure::ActiveModel {
        id: NotSet,
        experiment_id: Set(experiment_id),
        variant: Set(variant.to_string()),
        subject_id: Set(subject.to_string()),
        exposed_at: Set(now),
    };
    exposure::Entity::insert(row)
        .on_conflict_do_nothing_on([exposure::Column::ExperimentId, exposure::Column::SubjectId])
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Exposures per variant.
pub async fn exposure_counts(db: &impl ConnectionTrait, experiment_id: i64) -> Result<Vec<(String, i64)>, DbErr> {
    exposure::Entity::find()
        .select_only()
        .column(exposure::Column::Variant)
        .column_as(exposure::Column::Id.count(), "count")
        .filter(exposure::Column::ExperimentId.eq(experiment_id))
        .group_by(exposure::Column::Variant)
        .into_tuple()
        .all(db)
        .await
}
